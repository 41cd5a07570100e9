"""The dataset writers, read back by the real loaders; RLE masks by hand."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np

from shapes_world.captions import image_captions, with_article
from shapes_world.generator import ShapesWorld
from shapes_world.writers import image_id, rle_counts, write_coco, write_flickr, write_samples
from tests.helpers.shapes import SMALL
from wwbl.data.coco import CocoCaptions
from wwbl.readers.flickr30k import load_flickr30k


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


def test_samples_written(tmp_path):
    write_samples(ShapesWorld(SMALL), str(tmp_path), count=2)
    meta = json.loads((tmp_path / "scenes.json").read_text())
    assert [s["file"] for s in meta["scenes"]] == ["shapes_test_000.png", "shapes_test_001.png"]
    assert (tmp_path / "shapes_test_001.png").is_file()
