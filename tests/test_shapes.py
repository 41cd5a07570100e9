"""Shapes world: generator properties, dataset writers read back by the real loaders, and short
smoke runs of the CLIP (stage a) and BLIP (stage b) trainers."""
from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from shapes_world import train_blip, train_clip
from shapes_world.captions import entity_sentences, image_captions, join_list, with_article
from shapes_world.config import budgeted_lr, load_world_config
from shapes_world.generator import COLOURS, ShapesWorld, WorldConfig, draw_shapes
from shapes_world.train_blip import BlipTrainConfig, caption_targets, scene_crops
from shapes_world.train_clip import ClipTrainConfig, PhraseTerm, caption_pair, load_weights, model_name
from shapes_world.writers import image_id, rle_counts, write_coco, write_flickr, write_samples
from wwbl.clip import FrozenCLIP
from wwbl.data.coco import CocoCaptions
from wwbl.readers.flickr30k import load_flickr30k
from wwbl.inference.captioner import BlipCaptioner, CaptionSettings

SMALL = WorldConfig(seed=3, image_size=32, min_radius=3.0, max_radius=8.0, max_objects=4)


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld()


def test_scenes_are_deterministic_by_seed_split_and_index(world):
    a, b = world.scene("train", 7), ShapesWorld().scene("train", 7)
    assert np.array_equal(a.image, b.image)
    assert [(o.phrase, o.box) for o in a.objects] == [(o.phrase, o.box) for o in b.objects]
    assert not np.array_equal(a.image, world.scene("train", 8).image)
    assert not np.array_equal(a.image, world.scene("val", 7).image)
    assert not np.array_equal(a.image, ShapesWorld(WorldConfig(seed=1)).scene("train", 7).image)


def test_boxes_and_masks_agree_with_pixels(world):
    for index in range(40):
        scene = world.scene("test", index)
        masks = np.stack([o.mask for o in scene.objects])
        assert masks.sum(axis=0).max() <= 1, "visible masks must not overlap"
        for k, obj in enumerate(scene.objects):
            ys, xs = np.nonzero(obj.mask)
            assert obj.box == (xs.min(), ys.min(), xs.max(), ys.max())
            # the visible pixels carry the object's colour (jitter 14 + noise 6 per channel)
            mean = scene.image[obj.mask].astype(float).mean(axis=0)
            assert np.abs(mean - np.array(COLOURS[obj.colour])).max() < 60, (index, obj.phrase, mean)
            # occlusion: at least min_visible of the object's own full shape stays visible
            shape_id = np.array([world.shapes.index(obj.shape)])
            full = draw_shapes(shape_id, np.array([obj.centre]), np.array([obj.radius]), 64)[0]
            assert obj.mask.sum() >= world.config.min_visible * full.sum() - 1e-6
            assert not (obj.mask & ~full).any()


def test_scenes_are_hard_shared_attributes_varied_counts_and_sizes(world):
    shared, total, counts, radii, overlapping = 0, 0, set(), [], 0
    for index in range(200):
        objects = world.scene("train", index).objects
        combos = [(o.colour, o.shape) for o in objects]
        assert len(set(combos)) == len(combos), "colour-shape combinations are unique within a scene"
        counts.add(len(objects))
        radii += [o.radius for o in objects]
        for k, (c, s) in enumerate(combos):
            total += 1
            shared += any((c == c2 or s == s2) for j, (c2, s2) in enumerate(combos) if j != k)
        full = draw_shapes(np.array([world.shapes.index(o.shape) for o in objects]),
                           np.array([o.centre for o in objects]), np.array([o.radius for o in objects]), 64)
        overlapping += bool((full.sum(axis=0) > 1).any())
    assert shared / total > 0.5, "a target must often share its colour or shape with a distractor"
    assert counts >= {2, 3, 4, 5, 6}
    assert max(radii) / min(radii) > 3
    assert overlapping > 20, "objects must sometimes touch or overlap"


def test_open_world_phrases_never_in_g_training_captions(world):
    heldout = world.heldout_combos
    assert len(heldout) == world.config.num_heldout_combos
    seen = set(world.combos_for("train"))
    assert {c for c, _ in seen} == set(world.colours) and {s for _, s in seen} == set(world.shapes)
    phrases = [f"{c} {s}" for c, s in heldout]
    for index in range(150):
        scene = world.scene("train", index)
        text = " | ".join(image_captions(scene, world.config.seed))
        assert not any(p in text for p in phrases), text
    for index in range(50):
        scene = world.scene("openworld", index)
        assert scene.annotated, "every open-world scene has a held-out object to ground"
        assert all((scene.objects[k].colour, scene.objects[k].shape) in heldout for k in scene.annotated)


def test_caption_words():
    assert with_article("orange star") == "an orange star"
    assert with_article("red circle") == "a red circle"
    assert join_list(["x", "y", "z"]) == "x, y and z"
    assert join_list(["x"]) == "x"


def test_rle_counts_hand_computed():
    # column-major: [[0, 1], [1, 1]] -> 0 1 1 1 -> runs (zeros first): 1, 3
    assert rle_counts(np.array([[0, 1], [1, 1]], bool)) == [1, 3]
    # [[1, 0], [0, 0]] -> 1 0 0 0 -> leading empty zero run
    assert rle_counts(np.array([[1, 0], [0, 0]], bool)) == [0, 1, 3]


def _decode_rle(counts: list[int], h: int, w: int) -> np.ndarray:
    flat, value = [], 0
    for run in counts:
        flat += [value] * run
        value = 1 - value
    return np.array(flat, dtype=bool).reshape(w, h).T


def test_written_coco_parses_with_the_training_loader(tmp_path):
    world = ShapesWorld(SMALL)
    write_coco(world, str(tmp_path), "train", 4)
    dataset = CocoCaptions(str(tmp_path), transform=lambda image: image)
    assert len(dataset) == 4
    item = dataset[0]
    assert item["image"].size == (32, 32)
    assert item["phrase"] in image_captions(world.scene("train", 0), SMALL.seed)
    instances = json.loads((tmp_path / "annotations" / "instances_train2014.json").read_text())
    first = [a for a in instances["annotations"] if a["image_id"] == image_id("train", 0)]
    scene = world.scene("train", 0)
    for ann, obj in zip(first, scene.objects):
        assert np.array_equal(_decode_rle(ann["segmentation"]["counts"], 32, 32), obj.mask)
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w - 1, y + h - 1) == obj.box


def test_written_flickr_matches_official_syntax_and_loader(tmp_path):
    world = ShapesWorld(SMALL)
    write_flickr(world, str(tmp_path), {"test": 5})
    ids = (tmp_path / "test.txt").read_text().split()
    scene = world.scene("test", 0)
    root = ET.parse(tmp_path / "flickr30k_entities" / "Annotations" / f"{ids[0]}.xml").getroot()
    boxed = {o.findtext("name"): [int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
             for o in root.iter("object") if o.find("bndbox") is not None}
    assert sorted(boxed.values()) == sorted([[v + 1 for v in o.box] for o in scene.objects])  # 1-based
    line = (tmp_path / "flickr30k_entities" / "Sentences" / f"{ids[0]}.txt").read_text().splitlines()[0]
    mentioned = re.findall(r"\[/EN#(\d+)/other ([^\]]+)\]", line)
    assert {eid for eid, _ in mentioned} == set(boxed), "the first sentence mentions every object"
    dataset = load_flickr30k(tmp_path, "test", min_area_fraction=None)
    assert not dataset.skipped
    sample = next(s for s in dataset.samples if s.image_id == ids[0])
    obj = next(o for k, o in enumerate(scene.objects) if sample.item_id.endswith(f"{k + 1:02d}"))
    assert sample.gt_boxes[0].tolist() == list(obj.box)
    assert with_article(obj.phrase) in sample.phrases


def test_open_world_sentences_only_name_heldout_objects():
    world = ShapesWorld(SMALL)
    heldout = {f"{c} {s}" for c, s in world.heldout_combos}
    for index in range(10):
        scene = world.scene("openworld", index)
        for sentence in entity_sentences(scene, image_id("openworld", index), SMALL.seed):
            for phrase in re.findall(r"/other an? ([^\]]+)\]", sentence):
                assert phrase in heldout


def test_samples_written(tmp_path):
    write_samples(ShapesWorld(SMALL), str(tmp_path), count=2)
    meta = json.loads((tmp_path / "scenes.json").read_text())
    assert [s["file"] for s in meta["scenes"]] == ["shapes_test_000.png", "shapes_test_001.png"]
    assert (tmp_path / "shapes_test_001.png").is_file()


def test_budgeted_lr_hand_computed():
    assert budgeted_lr(0, 0.0, 1.0, 10, 110, 0.0) == pytest.approx(0.1)
    assert budgeted_lr(60, 0.0, 1.0, 10, 110, 0.0) == pytest.approx(0.5)  # half way: cos(pi/2)
    assert budgeted_lr(20, 5.0, 1.0, 10, 110, 10.0) == pytest.approx(0.5)  # time runs out first
    assert budgeted_lr(200, 0.0, 1.0, 10, 110, 0.0) == pytest.approx(0.0)


def test_unknown_split_and_bad_config_are_rejected(world):
    with pytest.raises(ValueError, match="unknown split"):
        world.scene("nope", 0)
    with pytest.raises(ValueError, match="min_objects"):
        WorldConfig(min_objects=0)


def test_clip_hard_negative_swaps_one_object():
    world = ShapesWorld(SMALL)
    for index in range(20):
        scene = world.scene("clip", index)
        rng = np.random.default_rng(index)
        positive, negative = caption_pair(rng, world, scene)
        present = {o.phrase for o in scene.objects}
        drop = {"a", "an"}  # the article may change with the colour ("an orange ...")
        pos_words = [w for w in positive.split() if w not in drop]
        neg_words = [w for w in negative.split() if w not in drop]
        assert len(pos_words) == len(neg_words)
        changed = [i for i, (a, b) in enumerate(zip(pos_words, neg_words)) if a != b]
        assert len(changed) == 1, (positive, negative)  # exactly one colour or one shape word
        i = changed[0]
        pair = " ".join(neg_words[i - 1:i + 1]) if neg_words[i] in world.shapes else " ".join(neg_words[i:i + 2])
        assert pair.strip(",") not in present


def test_clip_training_smoke_and_frozen_clip_loads_it(tmp_path):
    arch = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                            "patch_size": 8},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
    (tmp_path / "shapes-test-vit.json").write_text(json.dumps(arch))
    cfg = ClipTrainConfig(model_config=str(tmp_path / "shapes-test-vit.json"), out_dir=str(tmp_path / "out"),
                          steps=2, batch_size=8, num_workers=0, eval_scenes=12, warmup_steps=1)
    metrics = train_clip.train(SMALL, cfg)
    assert metrics["train_steps"] == 2 and 0.0 <= metrics["phrase_pair_acc"] <= 1.0
    clip = FrozenCLIP("unused", checkpoint=str(tmp_path / "out"))
    assert clip.image_size == 32 and clip.embed_dim == 16
    table = clip.model.token_embedding.weight
    used = clip.tokenize(["a red circle"])[0]
    assert table[used[used > 0]].abs().sum(dim=1).gt(0).all(), "trained tokens keep their rows"
    unused = clip.tokenize(["zebra"])[0][1]
    assert table[unused].abs().sum() == 0, "never-seen tokens are zeroed"
    emb = clip.encode_text(["a red circle", "a blue star"])
    assert emb.shape == (2, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)

    fresh = open_clip.create_model(model_name(cfg.model_config))
    trained_tokens = load_weights(fresh, cfg.out_dir)
    assert set(used[used > 0].tolist()) <= trained_tokens and unused.item() not in trained_tokens
    for key, value in clip.model.state_dict().items():
        assert torch.allclose(fresh.state_dict()[key].float(), value.float()), key


def test_blip_training_smoke_and_captioner_loads_it(tmp_path):
    cfg = BlipTrainConfig(out_dir=str(tmp_path / "blip"), image_size=16, patch_size=8, vision_width=16,
                          vision_layers=1, vision_heads=1, text_width=16, text_layers=1, text_heads=1,
                          steps=2, scenes_per_batch=2, num_workers=0, eval_crops=3, warmup_steps=1)
    metrics = train_blip.train(SMALL, cfg)
    assert metrics["num_crops"] == 3 and 0.0 <= metrics["exact_match"] <= 1.0
    captioner = BlipCaptioner.from_pretrained(str(tmp_path / "blip"), allow_download=False,
                                              settings=CaptionSettings(max_length=8, num_beams=2))
    texts = captioner.caption([Image.new("RGB", (20, 12), (200, 30, 30))])
    assert len(texts) == 1 and isinstance(texts[0], str)
    targets = caption_targets(captioner.processor.tokenizer, ["an orange star"], 32)
    words = captioner.processor.tokenizer.convert_ids_to_tokens(targets["input_ids"][0])
    assert words == ["[DEC]", "a", "picture", "of", "an", "orange", "star", "[SEP]"]
    assert targets["labels"][0, :4].tolist() == [-100] * 4 and targets["labels"][0, 4] == targets["input_ids"][0, 4]


# Quality regression of the shipped models on small fixed held-out sets. The thresholds sit below
# the values measured when the models were trained (see the checkpoints' metrics.json) with a margin.
SHIPPED_CLIP = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes_clip"
SHIPPED_BLIP = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes_blip"
CLIP_PAIR_ACC_MIN = 0.70  # measured 0.766 on these 80 scenes (0.752 on 500; chance 0.5)
BLIP_EXACT_MIN = 0.42  # measured 0.564 on these 39 crops (0.558 on 400): colours right, shapes half learned
BLIP_COLOUR_MIN = 0.90  # measured 1.000 (chance 1/6)


@pytest.fixture(scope="module")
def shipped_world() -> ShapesWorld:
    """The world the shipped models were trained on (configs/shapes/world.yaml)."""
    return ShapesWorld(load_world_config(str(Path(__file__).resolve().parents[1] / "configs/shapes/world.yaml"))[0])


def test_shipped_clip_tells_colour_shape_phrases_apart(shipped_world):
    world = shipped_world
    clip = FrozenCLIP("shapes-vit", checkpoint=str(SHIPPED_CLIP))
    scenes = [world.scene("clip_eval", i) for i in range(80)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in scenes])
    combos = list(world.all_combos)
    with torch.no_grad():
        sims = clip.encode_image(images) @ clip.encode_text([with_article(f"{c} {s}") for c, s in combos]).T
    wins, pairs = 0, 0
    for i, scene in enumerate(scenes):  # naive reference: every present p vs every absent look-alike q
        present = {(o.colour, o.shape) for o in scene.objects}
        for p in present:
            for q in combos:
                if q not in present and (q[0] == p[0] or q[1] == p[1]):
                    pairs += 1
                    wins += bool(sims[i, combos.index(p)] > sims[i, combos.index(q)])
    assert wins / pairs > CLIP_PAIR_ACC_MIN


def test_shipped_blip_captions_held_out_crops(shipped_world):
    world = shipped_world
    captioner = BlipCaptioner.from_pretrained(str(SHIPPED_BLIP), allow_download=False)
    crops, targets = [], []
    for index in range(12):
        scene_c, scene_t = scene_crops(world, "blip_eval", index, 0.05, 0.6)
        crops += scene_c
        targets += scene_t
    captions = captioner.caption(crops)
    exact = np.mean([c == t for c, t in zip(captions, targets)])
    colour = np.mean([c.split()[1:2] == t.split()[1:2] for c, t in zip(captions, targets)])
    assert exact > BLIP_EXACT_MIN and colour > BLIP_COLOUR_MIN, list(zip(targets, captions))[:8]


def test_clip_phrase_term_is_the_sigmoid_loss_over_every_world_phrase(world):
    """Naive reference: for each image and each of the world's phrases, -log σ(±(scale·cos + bias))."""
    phrases = [f"a {c} {s}" if c[0] not in "aeiou" else f"an {c} {s}" for c, s in world.all_combos]

    class FakeTokenizer:
        def __call__(self, texts):
            assert list(texts) == phrases  # every combination, with its article, in all_combos order
            return torch.arange(len(texts))[:, None]

    class FakeModel:
        def encode_text(self, tokens):
            angle = tokens[:, 0].float()
            return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1) * 3.0  # normalised inside

    term = PhraseTerm(FakeTokenizer(), world)
    image_f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    present = torch.zeros(2, len(phrases))
    present[0, 0] = present[1, 5] = 1.0
    scale = torch.tensor(10.0)
    loss = term(FakeModel(), image_f, scale, present)
    total = 0.0
    for i, (ix, iy) in enumerate(image_f.tolist()):
        for p in range(len(phrases)):
            z = 10.0 * (ix * math.cos(p) + iy * math.sin(p)) - 5.0
            total += -math.log(1 / (1 + math.exp(-z))) if present[i, p] else -math.log(1 - 1 / (1 + math.exp(-z)))
    assert loss.item() == pytest.approx(total / (2 * len(phrases)), rel=1e-5)
