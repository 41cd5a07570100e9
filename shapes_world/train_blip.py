"""Stage (b): train a small BLIP captioner on shapes-world region crops and their phrases.

The model is transformers' ``BlipForConditionalGeneration`` built from a small ``BlipConfig``;
the text side uses a WordPiece vocabulary generated for the world (every world word, the BERT
special tokens, BLIP's ``[DEC]`` bos token and single-character pieces so that any text still
tokenises) loaded as a ``BertTokenizerFast``. Training follows BLIP's captioning recipe: the
text is ``"a picture of " + phrase``, its first token is replaced by ``[DEC]`` and the prompt
tokens are excluded from the language-modelling loss, so the inference captioner
(``wwbl.inference.captioner.BlipCaptioner``: prompt ``"a picture of "``, beam 3) is what the
model was trained for.

Crops come from the ``blip`` split (every colour-shape combination) around one object each,
loosened by a random factor per side (0.05-0.6 of the box size), so crops also show parts of
neighbours and background as proposals do; the target is that object's phrase ("a red circle").

Output (``out_dir``): ``save_pretrained`` of the model (safetensors), the ``BlipProcessor``
(image processor + tokenizer files) and ``metrics.json`` with held-out exact-match accuracy.

Command: ``python -m shapes_world.train_blip --config configs/shapes/blip.yaml``.
"""
from __future__ import annotations

import json
import logging
import os
import string
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                          BlipProcessor)

from shapes_world.captions import COUNT_WORDS, crop_caption
from shapes_world.config import budgeted_lr, stage_config_from_args, stage_parser
from shapes_world.generator import BACKGROUNDS, SPLIT_CODES, ShapesWorld, WorldConfig
from wwbl.inference.captioner import BlipCaptioner

log = logging.getLogger(__name__)

PROMPT = "a picture of "
# What the captioner must reach on held-out crops to name the objects WWbL boxes (issue floors).
FLOORS = {"exact_match": 0.85}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
EXTRA_WORDS = ("a", "an", "picture", "of", "and", "on", "other", "shape", "shapes", "background",
               "small", "medium", "large", ",", ".", ":")


@dataclass
class BlipTrainConfig:
    """Stage (b) hyper-parameters (YAML section ``train``) and the small architecture."""

    out_dir: str = "checkpoints/shapes_blip"
    image_size: int = 32
    patch_size: int = 4
    vision_width: int = 64
    vision_layers: int = 3
    vision_heads: int = 2
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_text_tokens: int = 32
    steps: int = 600
    scenes_per_batch: int = 24
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    label_smoothing: float = 0.1  # BLIP's captioning loss
    min_pad: float = 0.05
    max_pad: float = 0.6
    num_workers: int = 1
    threads: int = 2
    device: str = "cpu"  # the training steps; evaluation and saving run on the CPU
    eval_crops: int = 400
    log_every: int = 25
    seed: int = 0
    max_minutes: float = 0.0  # > 0: stop (and save) when the wall time exceeds this
    init_from: str | None = None  # a saved model directory to continue training from


def world_vocabulary(world: ShapesWorld) -> list[str]:
    """WordPiece vocabulary: specials, every world word, then single characters and ##-pieces."""
    words = list(EXTRA_WORDS) + list(world.colours) + list(world.shapes) + list(BACKGROUNDS) + list(COUNT_WORDS)
    chars = list(string.ascii_lowercase + string.digits)
    pieces = [f"##{c}" for c in chars]
    vocab: list[str] = []
    for token in (*SPECIAL_TOKENS, *words, *chars, *pieces):
        if token not in vocab:
            vocab.append(token)
    return vocab


def build_tokenizer(world: ShapesWorld) -> BertTokenizerFast:
    """A lower-casing BERT WordPiece tokenizer over the world vocabulary; ``[DEC]`` is its bos."""
    vocab = {token: index for index, token in enumerate(world_vocabulary(world))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, bos_token="[DEC]")
    tokenizer.add_special_tokens({"additional_special_tokens": ["[DEC]"]})
    return tokenizer


def build_processor(world: ShapesWorld, cfg: BlipTrainConfig) -> BlipProcessor:
    """BLIP image processor (bicubic resize to ``image_size``, CLIP mean/std) + world tokenizer."""
    image_processor = BlipImageProcessor(size={"height": cfg.image_size, "width": cfg.image_size},
                                         image_mean=list(open_clip.OPENAI_DATASET_MEAN),
                                         image_std=list(open_clip.OPENAI_DATASET_STD))
    return BlipProcessor(image_processor=image_processor, tokenizer=build_tokenizer(world))


def build_model(tokenizer: BertTokenizerFast, cfg: BlipTrainConfig) -> BlipForConditionalGeneration:
    """A small randomly initialised BLIP captioner whose special ids match the tokenizer."""
    text = dict(vocab_size=len(tokenizer), hidden_size=cfg.text_width, encoder_hidden_size=cfg.vision_width,
                intermediate_size=4 * cfg.text_width, num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.text_heads, max_position_embeddings=cfg.max_text_tokens,
                bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"), pad_token_id=tokenizer.pad_token_id,
                sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id,
                label_smoothing=cfg.label_smoothing)
    vision = dict(hidden_size=cfg.vision_width, intermediate_size=4 * cfg.vision_width,
                  num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
                  image_size=cfg.image_size, patch_size=cfg.patch_size,
                  initializer_range=0.02)  # HF's BLIP vision default (1e-10) is for loading weights
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=cfg.text_width,
                        image_text_hidden_size=cfg.text_width)
    torch.manual_seed(cfg.seed)
    return BlipForConditionalGeneration(config)


def crop_box(rng: np.random.Generator, box: tuple[int, int, int, int], size: int, min_pad: float,
             max_pad: float) -> tuple[int, int, int, int]:
    """The object box loosened on every side by a random fraction of its size, clipped; PIL
    (left, upper, right, lower) with exclusive right/lower."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    pads = rng.uniform(min_pad, max_pad, size=4) * np.array([w, h, w, h])
    left, top = max(0, int(round(x0 - pads[0]))), max(0, int(round(y0 - pads[1])))
    right, bottom = min(size, int(round(x1 + 1 + pads[2]))), min(size, int(round(y1 + 1 + pads[3])))
    return left, top, right, bottom


def scene_crops(world: ShapesWorld, split: str, index: int, min_pad: float, max_pad: float
                ) -> tuple[list[Image.Image], list[str]]:
    """One crop per object of a scene with its target caption (deterministic per index)."""
    scene = world.scene(split, index)
    rng = np.random.default_rng((world.config.seed, 4000 + SPLIT_CODES[split], index))
    image = Image.fromarray(scene.image)
    size = world.config.image_size
    crops = [image.crop(crop_box(rng, o.box, size, min_pad, max_pad)) for o in scene.objects]
    return crops, [crop_caption(o) for o in scene.objects]


class CropScenes(Dataset):
    """Item = all object crops of one scene, already through the BLIP image processor."""

    def __init__(self, world: ShapesWorld, processor: BlipProcessor, split: str, length: int,
                 cfg: BlipTrainConfig) -> None:
        self.world, self.processor, self.split, self.length, self.cfg = world, processor, split, length, cfg

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        crops, texts = scene_crops(self.world, self.split, index, self.cfg.min_pad, self.cfg.max_pad)
        pixels = self.processor.image_processor(images=crops, return_tensors="pt").pixel_values
        return {"pixel_values": pixels, "texts": texts}


def collate_crops(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"pixel_values": torch.cat([i["pixel_values"] for i in items]),
            "texts": [t for i in items for t in i["texts"]]}


def caption_targets(tokenizer: BertTokenizerFast, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """BLIP decoder inputs: ``[DEC] a picture of <text> [SEP]``; loss only on the text after the prompt."""
    encoded = tokenizer([PROMPT + t for t in texts], padding="longest", truncation=True, max_length=max_tokens,
                        return_tensors="pt")
    input_ids = encoded.input_ids.clone()
    input_ids[:, 0] = tokenizer.convert_tokens_to_ids("[DEC]")
    labels = input_ids.masked_fill(encoded.attention_mask == 0, -100)
    prompt_length = len(tokenizer(PROMPT).input_ids) - 1  # [CLS] + prompt words, without [SEP]
    labels[:, :prompt_length] = -100
    return {"input_ids": input_ids, "attention_mask": encoded.attention_mask, "labels": labels}


def lr_at(step: int, minutes: float, cfg: BlipTrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero over the steps or the time budget, whichever ends first."""
    return budgeted_lr(step, minutes, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.max_minutes)


@torch.no_grad()
def evaluate_blip(model: BlipForConditionalGeneration, processor: BlipProcessor, world: ShapesWorld,
                  count: int, cfg: BlipTrainConfig, split: str = "blip_eval") -> dict[str, float]:
    """Held-out crops captioned by the inference captioner (prompt, beam 3, min 5, max 30).

    ``exact_match``: the stripped caption equals the target phrase; ``colour_acc``/``shape_acc``:
    the target colour / shape word is the caption's colour / shape word."""
    crops: list[Image.Image] = []
    targets: list[str] = []
    index = 0
    while len(crops) < count:
        scene_c, scene_t = scene_crops(world, split, index, cfg.min_pad, cfg.max_pad)
        crops += scene_c
        targets += scene_t
        index += 1
    crops, targets = crops[:count], targets[:count]
    model.eval()
    predictions = BlipCaptioner(model, processor).caption(crops)
    colours, shapes = set(world.colours), set(world.shapes)

    def first(words: list[str], vocab: set[str]) -> str | None:
        return next((w for w in words if w in vocab), None)

    pred_words = [p.split() for p in predictions]
    target_words = [t.split() for t in targets]
    return {
        "exact_match": float(np.mean([p == t for p, t in zip(predictions, targets)])),
        "colour_acc": float(np.mean([first(p, colours) == first(t, colours) for p, t in zip(pred_words, target_words)])),
        "shape_acc": float(np.mean([first(p, shapes) == first(t, shapes) for p, t in zip(pred_words, target_words)])),
        "num_crops": len(crops),
        "examples": [{"target": t, "caption": p} for t, p in list(zip(targets, predictions))[:10]],
    }


def train(world_cfg: WorldConfig, cfg: BlipTrainConfig) -> dict[str, Any]:
    """Train, evaluate on held-out crops, save; returns the evaluation metrics."""
    torch.set_num_threads(cfg.threads)
    world = ShapesWorld(world_cfg)
    if cfg.init_from:  # continue: the saved architecture and processor win over the config's
        model = BlipForConditionalGeneration.from_pretrained(cfg.init_from, local_files_only=True)
        processor = BlipProcessor.from_pretrained(cfg.init_from, local_files_only=True)
    else:
        processor = build_processor(world, cfg)
        model = build_model(processor.tokenizer, cfg)
    data = DataLoader(CropScenes(world, processor, "blip", cfg.steps * cfg.scenes_per_batch, cfg),
                      batch_size=cfg.scenes_per_batch, num_workers=cfg.num_workers, collate_fn=collate_crops,
                      persistent_workers=cfg.num_workers > 0, pin_memory=cfg.device.startswith("cuda"))
    device = torch.device(cfg.device)
    model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, done = time.time(), 0
    model.train()
    for step, batch in enumerate(data):
        minutes = (time.time() - start) / 60
        if cfg.max_minutes > 0 and minutes > cfg.max_minutes:
            log.warning("stopping at step %d: max_minutes=%s reached", step, cfg.max_minutes)
            break
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, minutes, cfg)
        targets = caption_targets(processor.tokenizer, batch["texts"], cfg.max_text_tokens)
        targets = {k: v.to(device) for k, v in targets.items()}
        loss = model(pixel_values=batch["pixel_values"].to(device, non_blocking=True), **targets).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        done += 1
        if step % cfg.log_every == 0:
            log.info("step %d loss %.4f lr %.2e %.1f min", step, loss.item(), lr_at(step, minutes, cfg), minutes)
    model.cpu()
    metrics = evaluate_blip(model, processor, world, cfg.eval_crops, cfg)
    metrics.update({"train_steps": done, "train_minutes": round((time.time() - start) / 60, 2),
                    "floors": FLOORS, "meets_floors": all(metrics[k] >= v for k, v in FLOORS.items())})
    log.info("held-out metrics: %s", {k: v for k, v in metrics.items() if k != "examples"})
    save(model, processor, metrics, cfg, world_cfg)
    return metrics


def save(model: BlipForConditionalGeneration, processor: BlipProcessor, metrics: dict[str, Any],
         cfg: BlipTrainConfig, world_cfg: WorldConfig) -> None:
    os.makedirs(cfg.out_dir, exist_ok=True)
    model.save_pretrained(cfg.out_dir, safe_serialization=True)
    processor.save_pretrained(cfg.out_dir)
    with open(os.path.join(cfg.out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump({"metrics": metrics, "train": asdict(cfg), "world": asdict(world_cfg)}, f, indent=2)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("Stage (b): train the small shapes-world BLIP captioner.", "configs/shapes/blip.yaml")
    parser.add_argument("--scenes-per-batch", dest="scenes_per_batch", type=int)
    parser.add_argument("--eval-crops", dest="eval_crops", type=int)
    train(*stage_config_from_args(parser.parse_args(argv), BlipTrainConfig()))

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main()
