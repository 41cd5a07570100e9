"""Where the report's numbers come from: versions, machine and repository state, the world and
its evaluated subsets, and the shipped models' own records."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from shapes_world.config import load_world_config
from shapes_world.generator import ShapesWorld
from shapes_world.report_settings import SPLITS, ReportSettings
from wwbl.readers import load_dataset
from wwbl.evaluation.tasks import group_by_image


def environment() -> dict[str, Any]:
    """Versions, machine and the repository state the numbers come from."""
    packages = {}
    for name in ("torch", "torchvision", "lightning", "open_clip_torch", "transformers", "opencv-contrib-python-headless",
                 "scikit-image", "torchmetrics", "numpy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=False).stdout.strip())
    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.is_available(),
            "packages": packages, "git_commit": commit, "git_dirty": dirty}


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def world_summary(s: ReportSettings) -> dict[str, Any]:
    """Held-out combinations and item counts of the evaluated subsets (as the loaders read them)."""
    summary: dict[str, Any] = {}
    try:
        config, sizes = load_world_config("configs/shapes/world.yaml")
        world = ShapesWorld(config)
        summary["config"] = {**asdict(config), "sizes": sizes}
        summary["heldout_combos"] = sorted(f"{c} {sh}" for c, sh in world.heldout_combos)
    except (OSError, ValueError) as err:
        summary["config_error"] = str(err)
    for split in SPLITS:
        index = load_dataset("flickr30k", s.split_root(split), "test")
        units = group_by_image(index.samples)
        summary[split] = {"images_total": len(units), "items_total": len(index.samples),
                          "images_wsg": min(len(units), s.limit),
                          "items_wsg": sum(len(u.samples) for u in units[: s.limit]),
                          "images_wwbl": min(len(units), s.wwbl_limit)}
    return summary


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def model_summary(s: ReportSettings) -> dict[str, Any]:
    """The shipped models' own held-out metrics and g's export description."""
    clip = _read_json(Path(s.clip_checkpoint) / "metrics.json") or {}
    blip = _read_json(Path(s.blip) / "metrics.json") or {}
    g = _read_json(Path(s.g_checkpoint) / "config.json") or {}
    strip = ("examples",)
    arch = _read_json(Path(s.clip_checkpoint) / "open_clip_config.json") or {}
    vision = arch.get("model_cfg", arch).get("vision_cfg", {})
    return {"clip": {k: v for k, v in clip.get("metrics", {}).items() if k not in strip},
            "clip_vision": {k: vision.get(k) for k in ("image_size", "patch_size", "layers", "width")},
            "clip_train": clip.get("train", {}),
            "blip": {k: v for k, v in blip.get("metrics", {}).items() if k not in strip},
            "g": {k: g.get(k) for k in ("architecture", "kwargs", "input_size", "clip", "text_prefix")} if g else {},
            "g_training": _read_json(Path(s.g_checkpoint) / "training.json")}
