"""Why a source's box accuracy is what it is: box counts, size ratios and accuracy by GT size,
recomputed from a finished run's ``records.jsonl``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shapes_world.report_runs import Evaluator
from shapes_world.report_settings import SPLITS
from wwbl.boxes import union_box
from wwbl.readers import load_dataset
from wwbl.metrics import box_ious, points_in_boxes
from wwbl.evaluation.tasks import group_by_image

SIZE_BUCKETS = ((0.0, 0.10, "small (< 10 % of the image)"), (0.10, 0.20, "medium (10–20 %)"),
                (0.20, 1.01, "large (≥ 20 %)"))


def box_diagnostics(ev: Evaluator, split: str, label: str, run_dir: str) -> dict[str, Any]:
    """Why a source's box accuracy is what it is: box counts, size ratios, accuracy by GT size."""
    records = {}
    for line in (Path(run_dir) / "records.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records[record["key"]] = record
    units = group_by_image(load_dataset("flickr30k", ev.s.split_root(split), "test").samples)[: ev.s.limit]
    samples = [x for u in units if u.key in records for x in u.samples]
    entries = [records[str(x.image_id)]["items"][x.item_id] for x in samples]
    preds = [torch.tensor(e["boxes"], dtype=torch.float32).reshape(-1, 4) for e in entries]
    gts = [x.gt_boxes for x in samples]
    ious = box_ious(preds, gts, "union")
    hits = points_in_boxes(torch.tensor([e["point"] for e in entries]).reshape(-1, 2), gts)
    image_area = torch.tensor([x.size_hw[0] * x.size_hw[1] for x in samples], dtype=torch.float32)
    gt_area = torch.stack([_area(union_box(g)) for g in gts])
    pred_area = torch.stack([_area(union_box(p)) if len(p) else torch.tensor(0.0) for p in preds])
    has_box = torch.tensor([len(p) > 0 for p in preds])
    ratio = (pred_area / gt_area)[has_box]
    fraction = gt_area / image_area
    buckets = {}
    for low, high, name in SIZE_BUCKETS:
        chosen = (fraction >= low) & (fraction < high)
        buckets[name] = {"items": int(chosen.sum()), "bbox_acc": _mean((ious[chosen] >= 0.5).float()),
                         "pointing": _mean(hits[chosen].float())}
    return {"items": len(samples), "no_box": _mean((~has_box).float()),
            "boxes_per_item": _mean(torch.tensor([float(len(p)) for p in preds])),
            "median_area_ratio": float(ratio.median()) if len(ratio) else math.nan,
            "too_large": _mean((ratio > 2.0).float()), "too_small": _mean((ratio < 0.5).float()),
            "point_hit_box_miss": _mean((hits & (ious < 0.5)).float()), "by_size": buckets}


def _area(box: Tensor) -> Tensor:
    return (box[2] - box[0]).clamp(min=0) * (box[3] - box[1]).clamp(min=0)


def _mean(values: Tensor) -> float:
    return float(values.float().mean()) if values.numel() else math.nan


def diagnostics(ev: Evaluator, wsg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in SPLITS:
        for label in ("g", wsg["teacher"]):
            row = wsg["rows"].get(label, {}).get(split, {})
            if "run_dir" in row:
                out.setdefault(label, {})[split] = box_diagnostics(ev, split, label, row["run_dir"])
    return out
