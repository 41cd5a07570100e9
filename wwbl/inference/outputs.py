"""Writers for inference results: per-image JSON, overlay PNG, heatmaps ``.npy``, and one
COCO-style results JSON for a run (``bbox`` as ``[x, y, w, h]``, ``score``, ``phrase``, ``image_id``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from wwbl.boxes import to_coco_xywh
from wwbl.inference.pictures import heatmap_png_name, overlay
from wwbl.inference.results import DetectionResult, GroundingResult, IterativeResult


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


def write_image_outputs(out_dir: Path, stem: str, image: Image.Image, result: GroundingResult,
                        image_name: str) -> None:
    """``<stem>.json``, ``<stem>_overlay.png``, ``<stem>_heatmaps.npy`` (``P×H×W`` float16) and per phrase
    ``<stem>_heatmap_<k>.png`` (that phrase alone; the JSON's ``heatmap_images`` names its phrase) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = result_record(result, image_name)
    record["heatmap_images"] = [{"phrase": phrase, "file": heatmap_png_name(stem, k)}
                                for k, phrase in enumerate(result.phrases)]
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2))
    overlay(image, result).save(out_dir / f"{stem}_overlay.png")
    for k, entry in enumerate(record["heatmap_images"]):
        overlay(image, result, only=k).save(out_dir / entry["file"])
    np.save(out_dir / f"{stem}_heatmaps.npy", result.heatmaps.to(torch.float16).numpy())


def coco_records(result: GroundingResult, image_id: int | str) -> list[dict[str, Any]]:
    """COCO detection-results entries of one image (``bbox`` = ``[x, y, w, h]``)."""
    phrases = result.detections.phrases or [""] * len(result.detections)
    boxes = to_coco_xywh(result.detections.boxes).tolist()
    return [{"image_id": image_id, "bbox": [round(v, 2) for v in box], "score": round(score, 5), "phrase": phrase}
            for box, score, phrase in zip(boxes, result.detections.scores.tolist(), phrases)]


def write_coco_results(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
