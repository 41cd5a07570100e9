"""Writers for inference results: per-image JSON, overlay PNG and heatmaps ``.npy`` (a run's COCO
results JSON: `wwbl.inference.coco_results`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from wwbl.atomic_files import write_text_atomic
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


def output_files(stem: str, record: dict[str, Any]) -> list[str]:
    """The files besides ``<stem>.json`` that an image's outputs consist of (named by its record)."""
    return [f"{stem}_overlay.png", f"{stem}_heatmaps.npy", *(entry["file"] for entry in record["heatmap_images"])]


def write_image_outputs(out_dir: Path, stem: str, image: Image.Image, result: GroundingResult,
                        image_name: str) -> dict[str, Any]:
    """``<stem>.json``, ``<stem>_overlay.png``, ``<stem>_heatmaps.npy`` (``P×H×W`` float16) and per phrase
    ``<stem>_heatmap_<k>.png`` (that phrase alone; the JSON's ``heatmap_images`` names its phrase) in
    ``out_dir``; the record written to the JSON. The JSON comes last, atomically: where it exists,
    the image's outputs are complete (what ``infer.py --resume`` relies on)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = result_record(result, image_name)
    record["heatmap_images"] = [{"phrase": phrase, "file": heatmap_png_name(stem, k)}
                                for k, phrase in enumerate(result.phrases)]
    overlay(image, result).save(out_dir / f"{stem}_overlay.png")
    for k, entry in enumerate(record["heatmap_images"]):
        overlay(image, result, only=k).save(out_dir / entry["file"])
    np.save(out_dir / f"{stem}_heatmaps.npy", result.heatmaps.to(torch.float16).numpy())
    write_text_atomic(out_dir / f"{stem}.json", json.dumps(record, indent=2))
    return record


def complete_record(out_dir: Path, stem: str, image_name: str) -> dict[str, Any] | None:
    """The record of ``image_name``'s complete outputs under ``stem`` in ``out_dir``, or None: no
    readable ``<stem>.json``, one of another image, or a file it lists missing."""
    try:
        record = json.loads((out_dir / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("image") != image_name:
        return None
    try:
        files = output_files(stem, record)
    except (KeyError, TypeError):
        return None
    return record if all((out_dir / name).is_file() for name in files) else None
