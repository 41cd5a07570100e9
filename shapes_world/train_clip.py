"""Stage (a): pretrain a small open_clip ViT contrastively on shapes-world captions.

The architecture is the JSON ``configs/clip/shapes-vit-64.json`` registered with open_clip; text goes
through open_clip's own tokenizer; the loss is open_clip's ``ClipLoss`` (symmetric InfoNCE) plus,
with ``hard_negatives`` (default on), an image-to-text term whose extra negatives are the same
captions with one object's colour or shape swapped to a combination absent from the image
(NegCLIP-style). Random batches of this world rarely contain such swaps, and without them CLIP
learns bags of words ("red", "circle") instead of bound phrases ("red circle").

Scenes come from the ``clip`` split (every colour-shape combination, as a web-scale CLIP would
have seen them), either generated on the fly (no scene repeats) or, with ``scene_pool``, rendered
once and cycled with fresh captions each pass. Evaluation uses the disjoint ``clip_eval`` split.

Output (``out_dir``): ``open_clip_config.json`` + ``open_clip_model.safetensors`` (open_clip's
model-directory layout, loadable with ``FrozenCLIP(checkpoint=out_dir)``) and ``metrics.json``.
Token-embedding rows of tokens that never occurred in training are zeroed before saving (they
hold only their random initialisation) and the table is stored in float16, which keeps the file
highly compressible for git.

Commands (the shipped CLIP): ``python -m shapes_world.train_clip --config configs/shapes/clip.yaml``,
then ``--config configs/shapes/clip_continue.yaml``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from shapes_world.captions import format_caption, image_caption, with_article
from shapes_world.config import budgeted_lr, stage_config_from_args, stage_parser
from shapes_world.generator import SPLIT_CODES, Scene, ShapesWorld, WorldConfig
from wwbl.clip import ClipSpec
from wwbl.metrics import argmax_points

log = logging.getLogger(__name__)


@dataclass
class ClipTrainConfig:
    """Stage (a) hyper-parameters (YAML section ``train``)."""

    model_config: str = "configs/clip/shapes-vit-64.json"
    out_dir: str = "checkpoints/shapes_clip"
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    hard_negatives: bool = True
    hard_negative_weight: float = 1.0
    phrase_weight: float = 1.0  # the PhraseTerm (0 = captions only)
    num_workers: int = 1
    threads: int = 2
    # > 0: render this many ``clip`` scenes once and cycle through them, each pass with fresh captions
    # and hard negatives. Rendering a scene costs about as much CPU as training on it, so on-the-fly
    # scenes (0) leave the training steps waiting for (and sharing cores with) the generator.
    scene_pool: int = 0
    device: str = "cpu"  # the training steps; evaluation and saving run on the CPU
    eval_scenes: int = 500
    relevancy_scenes: int = 200  # held-out scenes for the relevancy pointing floor
    log_every: int = 25
    seed: int = 0
    max_minutes: float = 0.0  # > 0: stop (and save) when the wall time exceeds this
    init_from: str | None = None  # a saved checkpoint directory to continue training from


def model_name(model_config: str) -> str:
    """Register the JSON architecture with open_clip; its name is the file stem."""
    path = Path(model_config)
    if not path.is_file():
        raise FileNotFoundError(f"open_clip model config not found: '{path}'")
    open_clip.add_model_config(path)
    return path.stem


def normalise(images_uint8: torch.Tensor, size: int, align_corners: bool = False) -> torch.Tensor:
    """B×3×H×W uint8 → CLIP-normalised float at CLIP's ``size`` (open_clip's OpenAI mean/std, as
    FrozenCLIP uses). Scenes larger than CLIP's input are resized bilinearly, as FrozenCLIP.prepare
    (``align_corners=False``) or as the training losses (``True``, the reference's resize) do."""
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=images_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=images_uint8.device).view(1, 3, 1, 1)
    x = images_uint8.float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=align_corners)
    return (x - mean) / std


def swapped_combo(rng: np.random.Generator, world: ShapesWorld, scene: Scene, target: int) -> tuple[str, str]:
    """A combination absent from the scene that shares the colour or the shape of object ``target``."""
    present = {(o.colour, o.shape) for o in scene.objects}
    obj = scene.objects[target]
    options = [c for c in world.all_combos if c not in present and (c[0] == obj.colour or c[1] == obj.shape)]
    return options[rng.integers(len(options))]


def caption_pair(rng: np.random.Generator, world: ShapesWorld, scene: Scene) -> tuple[str, str]:
    """A caption of the scene and its hard negative: the same text with one mentioned object's
    colour or shape swapped to a combination that is not in the image."""
    count = len(scene.objects)
    order = [int(i) for i in rng.permutation(count)]
    chosen = order[: int(rng.integers(1, count + 1))]
    target = chosen[int(rng.integers(len(chosen)))]
    colour, shape = swapped_combo(rng, world, scene, target)
    positive = [scene.objects[i].phrase for i in chosen]
    negative = [f"{colour} {shape}" if i == target else scene.objects[i].phrase for i in chosen]
    state = rng.bit_generator.state  # the same template for both texts
    pos_text = format_caption(rng, positive, scene, len(chosen) == count)
    rng.bit_generator.state = state
    return pos_text, format_caption(rng, negative, scene, len(chosen) == count)


class SceneRenderer(Dataset):
    """The first ``count`` scenes of a split (rendered in DataLoader workers for ``render_pool``)."""

    def __init__(self, world: ShapesWorld, split: str, count: int) -> None:
        self.world, self.split, self.count = world, split, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Scene:
        return self.world.scene(self.split, index)


def render_pool(world: ShapesWorld, split: str, count: int, workers: int) -> list[Scene]:
    """Scenes 0..count-1 of ``split``, rendered once (in ``workers`` processes)."""
    loader = DataLoader(SceneRenderer(world, split, count), batch_size=256, num_workers=workers,
                        collate_fn=list)
    return [scene for chunk in loader for scene in chunk]


class ClipScenes(Dataset):
    """Scenes of one split with a random caption and its hard negative (deterministic per index).
    With a ``pool`` of rendered scenes, item i shows scene ``i mod len(pool)`` with item i's own
    caption draw, so every pass over the pool pairs its images with new texts."""

    def __init__(self, world: ShapesWorld, split: str, length: int, offset: int = 0,
                 pool: list[Scene] | None = None) -> None:
        self.world, self.split, self.length, self.offset, self.pool = world, split, length, offset, pool

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.pool:
            scene = self.pool[(self.offset + index) % len(self.pool)]
        else:
            scene = self.world.scene(self.split, self.offset + index)
        rng = np.random.default_rng((self.world.config.seed, 3000 + SPLIT_CODES[self.split], self.offset + index))
        if rng.random() < 0.3:  # plain captions too, with size words and the "all shapes" forms
            caption = image_caption(rng, scene)
            negative = caption_pair(rng, self.world, scene)[1]
        else:
            caption, negative = caption_pair(rng, self.world, scene)
        image = torch.from_numpy(scene.image).permute(2, 0, 1).contiguous()
        present = torch.zeros(len(self.world.all_combos), dtype=torch.float32)
        present[[self.world.all_combos.index((o.colour, o.shape)) for o in scene.objects]] = 1.0
        return {"image": image, "caption": caption, "negative": negative, "present": present}


class PhraseTerm(torch.nn.Module):
    """SigLIP-style multi-label term: every one of the world's phrases ("a red circle") against
    every image, a sigmoid loss on ``scale · cos + bias`` with label "the object is in the image".
    Captions alone teach bags of words slowly; this term asks for each bound colour-shape phrase
    directly, and an image may match several phrases at once (which a softmax cannot express)."""

    def __init__(self, tokenizer: Any, world: ShapesWorld) -> None:
        super().__init__()
        self.register_buffer("tokens", tokenizer([with_article(f"{c} {s}") for c, s in world.all_combos]))
        self.bias = torch.nn.Parameter(torch.tensor(-5.0))  # a training-loss parameter, not saved with CLIP

    def forward(self, model: torch.nn.Module, image_f: torch.Tensor, scale: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        phrase_f = F.normalize(model.encode_text(self.tokens), dim=-1)
        logits = scale * image_f @ phrase_f.T + self.bias
        return F.binary_cross_entropy_with_logits(logits, present)


def clip_loss(model: torch.nn.Module, loss_fn: open_clip.ClipLoss, tokenizer: Any, batch: dict[str, Any],
              cfg: ClipTrainConfig, phrase_term: PhraseTerm | None = None) -> tuple[torch.Tensor, set[int]]:
    """ClipLoss on (image, caption), the hard-negative image→text term and (with ``phrase_term``)
    the phrase term; also the token ids used."""
    texts = list(batch["caption"]) + (list(batch["negative"]) if cfg.hard_negatives else [])
    device = batch["image"].device
    tokens = tokenizer(texts).to(device)
    # Either of the two resizes g's training and inference feed CLIP with, half the batches each.
    align_corners = bool(torch.rand(()) < 0.5)
    image_f = F.normalize(model.encode_image(normalise(batch["image"], clip_size(model), align_corners)), dim=-1)
    text_f = F.normalize(model.encode_text(tokens), dim=-1)
    size = len(batch["caption"])
    scale = model.logit_scale.exp()
    loss = loss_fn(image_f, text_f[:size], scale)
    if cfg.hard_negatives:
        logits = scale * image_f @ text_f.T  # B × 2B: batch captions then batch negatives
        loss = loss + cfg.hard_negative_weight * F.cross_entropy(logits, torch.arange(size, device=device))
    used = set(torch.unique(tokens).tolist())
    if phrase_term is not None:
        loss = loss + cfg.phrase_weight * phrase_term(model, image_f, scale, batch["present"])
        used |= set(torch.unique(phrase_term.tokens).tolist())
    return loss, used


def lr_at(step: int, minutes: float, cfg: ClipTrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero over the steps or the time budget, whichever ends first."""
    return budgeted_lr(step, minutes, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.max_minutes)


@torch.no_grad()
def evaluate_clip(model: torch.nn.Module, tokenizer: Any, world: ShapesWorld, count: int,
                  split: str = "clip_eval", batch_size: int = 250) -> dict[str, float]:
    """Held-out retrieval and phrase discrimination.

    - ``i2t_r1`` / ``t2i_r1``: recall@1 between ``count`` images and their full captions.
    - ``phrase_pair_acc``: over every present object p and every absent combination q that shares
      p's colour or shape, how often sim(image, "a p") > sim(image, "a q").
    - ``phrase_top1``: how often the best of the world's phrases is present in the image.
    """
    model.eval()
    scenes = [world.scene(split, i) for i in range(count)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in scenes])
    image_f = torch.cat([F.normalize(model.encode_image(normalise(images[i:i + batch_size], clip_size(model))), dim=-1)
                         for i in range(0, count, batch_size)])
    captions = [image_caption(np.random.default_rng(i), s, full=True) for i, s in enumerate(scenes)]
    caption_f = torch.cat([F.normalize(model.encode_text(tokenizer(captions[i:i + batch_size])), dim=-1)
                           for i in range(0, count, batch_size)])
    sims = image_f @ caption_f.T
    target = torch.arange(count)
    combos = world.all_combos
    phrase_f = F.normalize(model.encode_text(tokenizer([with_article(f"{c} {s}") for c, s in combos])), dim=-1)
    phrase_sims = image_f @ phrase_f.T  # count × 64
    present = torch.zeros(count, len(combos), dtype=torch.bool)
    for i, scene in enumerate(scenes):
        present[i, [combos.index((o.colour, o.shape)) for o in scene.objects]] = True
    colour = torch.tensor([world.colours.index(c) for c, _ in combos])
    shape = torch.tensor([world.shapes.index(s) for _, s in combos])
    related = (colour[:, None] == colour[None, :]) | (shape[:, None] == shape[None, :])  # 64 × 64
    pairs = present[:, :, None] & ~present[:, None, :] & related[None]  # image × p × q
    wins = phrase_sims[:, :, None] > phrase_sims[:, None, :]
    return {
        "i2t_r1": float((sims.argmax(1) == target).float().mean()),
        "t2i_r1": float((sims.argmax(0) == target).float().mean()),
        "phrase_pair_acc": float(wins[pairs].float().mean()),
        "phrase_top1": float(present[torch.arange(count), phrase_sims.argmax(1)].float().mean()),
        "num_images": count,
    }


# What the stage must reach on held-out scenes to serve as g's judge and teacher (issue floors).
FLOORS = {"phrase_top1": 0.80, "phrase_pair_acc": 0.90, "relevancy_pointing_last_block": 0.60}


@torch.no_grad()
def relevancy_pointing(checkpoint_dir: str, world: ShapesWorld, count: int, split: str = "clip_eval",
                       chunk: int = 64) -> dict[str, float]:
    """Chefer pointing of the saved CLIP on held-out scenes: for every object, whether the maximum of
    the relevancy map of "a <colour> <shape>" (resized to the scene) lies inside the object's box.
    Last block (the reference's L_rmap target) and all blocks."""
    clip = ClipSpec(checkpoint=checkpoint_dir).build()
    scenes = [world.scene(split, i) for i in range(count)]
    owner = [i for i, scene in enumerate(scenes) for _ in scene.objects]
    boxes = torch.tensor([o.box for scene in scenes for o in scene.objects])  # inclusive pixel xyxy
    text = clip.encode_text([with_article(o.phrase) for scene in scenes for o in scene.objects])
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in scenes]).float() / 255
    size = world.config.image_size
    out = {}
    for name, start in (("last_block", -1), ("all_blocks", 0)):
        hits = []
        for lo in range(0, len(owner), chunk):
            index = torch.tensor(owner[lo:lo + chunk])
            maps = clip.relevancy(images[index], text[lo:lo + chunk], start_layer=start)
            maps = F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
            y, x = argmax_points(list(maps)).unbind(dim=1)  # the evaluation's point (flat tops: their centre)
            b = boxes[lo:lo + chunk]
            hits.append((x >= b[:, 0]) & (x <= b[:, 2]) & (y >= b[:, 1]) & (y <= b[:, 3]))
        out[f"relevancy_pointing_{name}"] = float(torch.cat(hits).float().mean())
    return out


def with_floors(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics plus the floors they must reach and whether each is met."""
    met = {k: metrics.get(k, -1.0) >= v for k, v in FLOORS.items()}
    return {**metrics, "floors": FLOORS, "floors_met": met, "meets_floors": all(met.values())}


def clip_size(model: torch.nn.Module) -> int:
    return int(model.visual.image_size[0])


def load_weights(model: torch.nn.Module, checkpoint_dir: str) -> set[int]:
    """Continue from a saved checkpoint; returns the token ids it had trained (non-zero rows)."""
    path = os.path.join(checkpoint_dir, "open_clip_model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no CLIP checkpoint to continue from: '{path}'")
    state = load_file(path)
    model.load_state_dict(state)
    table = state["token_embedding.weight"]
    return set(torch.nonzero(table.abs().sum(dim=1) > 0).flatten().tolist())


def save_checkpoint(model: torch.nn.Module, model_config: str, out_dir: str, used_tokens: set[int],
                    metrics: dict[str, Any], train_cfg: ClipTrainConfig, world_cfg: WorldConfig) -> None:
    """open_clip model-directory layout + metrics; unused token rows zeroed, token table in fp16."""
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    table = state["token_embedding.weight"]
    unused = torch.ones(table.shape[0], dtype=torch.bool)
    unused[sorted(used_tokens)] = False
    table[unused] = 0
    state["token_embedding.weight"] = table.half()
    save_file(state, os.path.join(out_dir, "open_clip_model.safetensors"))
    with open(model_config, encoding="utf-8") as f:
        arch = json.load(f)
    config = {"model_cfg": arch, "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                                    "std": list(open_clip.OPENAI_DATASET_STD),
                                                    "interpolation": "bilinear", "resize_mode": "shortest"}}
    _write_json(os.path.join(out_dir, "open_clip_config.json"), config)
    write_metrics(out_dir, metrics, train_cfg, world_cfg)


def write_metrics(out_dir: str, metrics: dict[str, Any], train_cfg: ClipTrainConfig, world_cfg: WorldConfig) -> None:
    _write_json(os.path.join(out_dir, "metrics.json"),
                {"metrics": metrics, "train": asdict(train_cfg), "world": asdict(world_cfg),
                 "model_name": Path(train_cfg.model_config).stem})


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def train(world_cfg: WorldConfig, cfg: ClipTrainConfig) -> dict[str, float]:
    """Train, evaluate on held-out scenes, save; returns the evaluation metrics."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    name = model_name(cfg.model_config)
    model = open_clip.create_model(name)
    if world_cfg.image_size % clip_size(model):
        raise ValueError(f"the CLIP config '{cfg.model_config}' expects {clip_size(model)} px images; the world's "
                         f"{world_cfg.image_size} px scenes must be a whole multiple of that")
    tokenizer = open_clip.get_tokenizer(name)
    used_tokens = load_weights(model, cfg.init_from) if cfg.init_from else set()
    world = ShapesWorld(world_cfg)
    pool = render_pool(world, "clip", cfg.scene_pool, max(1, cfg.threads)) if cfg.scene_pool > 0 else None
    data = DataLoader(ClipScenes(world, "clip", cfg.steps * cfg.batch_size, pool=pool), batch_size=cfg.batch_size,
                      num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                      pin_memory=cfg.device.startswith("cuda"))
    device = torch.device(cfg.device)
    model.to(device)
    phrase_term = PhraseTerm(tokenizer, world).to(device) if cfg.phrase_weight > 0 else None
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    other += list(phrase_term.parameters()) if phrase_term is not None else []
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": other, "weight_decay": 0.0}], lr=cfg.lr)
    loss_fn = open_clip.ClipLoss()
    start, done = time.time(), 0
    model.train()
    for step, batch in enumerate(data):
        minutes = (time.time() - start) / 60
        if cfg.max_minutes > 0 and minutes > cfg.max_minutes:
            log.warning("stopping at step %d: max_minutes=%s reached", step, cfg.max_minutes)
            break
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, minutes, cfg)
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss, tokens = clip_loss(model, loss_fn, tokenizer, batch, cfg, phrase_term)
        used_tokens |= tokens
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        done += 1
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % cfg.log_every == 0:
            log.info("step %d loss %.4f lr %.2e scale %.1f %.1f min", step, loss.item(), lr_at(step, minutes, cfg),
                     model.logit_scale.exp().item(), minutes)
    model.cpu()
    metrics = evaluate_clip(model, tokenizer, world, cfg.eval_scenes)
    metrics.update({"train_steps": done, "train_minutes": round((time.time() - start) / 60, 2)})
    save_checkpoint(model, cfg.model_config, cfg.out_dir, used_tokens, metrics, cfg, world_cfg)
    metrics = with_floors({**metrics, **relevancy_pointing(cfg.out_dir, world, cfg.relevancy_scenes)})
    log.info("held-out metrics: %s", metrics)
    write_metrics(cfg.out_dir, metrics, cfg, world_cfg)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("Stage (a): train the small shapes-world CLIP.", "configs/shapes/clip.yaml")
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    train(*stage_config_from_args(parser.parse_args(argv), ClipTrainConfig()))

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main()
