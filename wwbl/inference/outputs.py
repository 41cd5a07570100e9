"""Writers for inference results: per-image JSON, overlay PNG and heatmaps ``.npy`` (a run's COCO
results JSON: `wwbl.inference.coco_results`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from wwbl.inference.results import DetectionResult, GroundingResult, IterativeResult

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def result_record(result: GroundingResult, image_name: str) -> dict[str, Any]:
    """JSON-able description of one image's result."""
    height, width = result.image_size
    record: dict[str, Any] = {"image": image_name, "height": height, "width": width, "phrases": result.phrases,
                              "detections": result.detections.to_dicts()}
    if isinstance(result, DetectionResult):
        record["captions"] = result.captions
        record["clusters"] = result.clusters
        record["proposals"] = [[round(v, 2) for v in box] for box in result.proposals.tolist()]
    if isinstance(result, IterativeResult):
        record["crop_captions"] = result.crop_captions
        record["confidences"] = [round(v, 5) for v in result.confidences.tolist()]
    return record


def overlay(image: Image.Image, result: GroundingResult, alpha: float = 0.45, min_side: int = 512) -> Image.Image:
    """The image with the pixel-wise maximum of its heatmaps (jet) blended in and labelled boxes drawn.

    Small images are enlarged (nearest neighbour, display only) so that at least `min_side`
    pixels are available for readable labels; boxes are scaled with them.
    """
    base = image.convert("RGB")
    scale = max(1.0, min_side / min(base.size))
    if scale > 1:
        base = base.resize((round(base.width * scale), round(base.height * scale)), Image.NEAREST)
    if len(result.heatmaps):
        heat = result.heatmaps.max(dim=0).values.clamp(0, 1).numpy()
        colours = Image.fromarray((colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)).resize(base.size)
        base = Image.blend(base, colours, alpha)
    draw = ImageDraw.Draw(base)
    font = ImageFont.load_default(size=max(10, round(min(base.size) / 40)))
    phrases = result.detections.phrases or [""] * len(result.detections)
    order = {phrase: i for i, phrase in enumerate(result.phrases)}
    for box, score, phrase in zip(result.detections.boxes.tolist(), result.detections.scores.tolist(), phrases):
        box = [v * scale for v in box]
        colour = _PALETTE[order.get(phrase, 0) % len(_PALETTE)]
        draw.rectangle(box, outline=colour, width=max(1, round(min(base.size) / 150)))
        label = f"{phrase} {score:.2f}".strip()
        x, y = box[0], max(box[1] - font.size - 4, 0)
        draw.rectangle(draw.textbbox((x, y), label, font=font), fill=colour)
        draw.text((x, y), label, fill=(0, 0, 0), font=font)
    return base


def write_image_outputs(out_dir: Path, stem: str, image: Image.Image, result: GroundingResult,
                        image_name: str) -> None:
    """``<stem>.json``, ``<stem>_overlay.png`` and ``<stem>_heatmaps.npy`` (``P×H×W`` float16) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result_record(result, image_name), indent=2))
    overlay(image, result).save(out_dir / f"{stem}_overlay.png")
    np.save(out_dir / f"{stem}_heatmaps.npy", result.heatmaps.to(torch.float16).numpy())
