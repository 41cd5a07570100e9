"""The report's loss ablation (WWbL Table 5): g retrained per arm and seed with equal step budgets
(``train.py`` with overrides of the g config, then ``wwbl.export``), evaluated like g; mean ± std."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from shapes_world.report_runs import Evaluator, timed, fingerprint
from shapes_world.report_settings import SPLITS, ReportSettings

log = logging.getLogger("shapes_world.report")

# Loss ablation (WWbL Table 5): arm → (description, LightningCLI overrides of configs/shapes/g.yaml).
ABLATION_ARMS: dict[str, tuple[str, list[str]]] = {
    "all_losses": ("L_fore + L_back + L_rmap + L_reg (the weights of --g-config; the paper's are 1, 1, 4, 1)", []),
    "no_rmap": ("without L_rmap", ["--model.lambda_rmap", "0"]),
    "no_fore_back": ("without L_fore and L_back", ["--model.lambda_fore", "0", "--model.lambda_back", "0"]),
    "rmap_only": ("L_rmap only", ["--model.lambda_fore", "0", "--model.lambda_back", "0", "--model.lambda_reg", "0"]),
}


def train_arm(s: ReportSettings, arm: str, overrides: list[str], seed: int) -> dict[str, Any]:
    """Train g for one ablation arm and seed (``train.py`` with overrides of the g config) and export it.
    The budget is a number of steps, never a time, so every arm gets the same training."""
    inputs = fingerprint(s.clip_checkpoint, s.g_config, Path(s.data) / "coco" / "annotations")
    root = Path(s.work) / "ablation" / f"{arm}-{inputs}-steps{s.ablation_steps}-seed{seed}"
    export = root / "export"
    if s.resume and (export / "config.json").is_file() and (root / "train.json").is_file():
        return json.loads((root / "train.json").read_text(encoding="utf-8"))
    shutil.rmtree(root, ignore_errors=True)
    command = [sys.executable, "train.py", "--config", s.g_config, "--seed_everything", str(seed),
               "--trainer.max_epochs", "1", "--trainer.limit_train_batches", str(s.ablation_steps),
               "--trainer.limit_val_batches", str(s.ablation_val_batches),
               "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
               "--trainer.logger.init_args.save_dir", str(root),
               "--model.clip_checkpoint", s.clip_checkpoint,
               "--data.init_args.root", str(Path(s.data) / "coco"),
               "--data.init_args.val_root", s.split_root("test"), *overrides]
    log.info("ablation %s seed %d: %s", arm, seed, " ".join(command))
    done, seconds = timed(lambda: subprocess.run(command, capture_output=True, text=True, check=False))
    (root / "train.log").parent.mkdir(parents=True, exist_ok=True)
    (root / "train.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise RuntimeError(f"ablation training {arm} failed (exit {done.returncode}); see {root / 'train.log'}")
    checkpoint = next(iter(sorted(root.glob("**/checkpoints/last.ckpt"))), None)
    if checkpoint is None:
        raise RuntimeError(f"ablation training {arm} wrote no last.ckpt; see {root / 'train.log'}")
    steps = int(torch.load(checkpoint, map_location="cpu", weights_only=True).get("global_step", -1))
    export_cmd = [sys.executable, "-m", "wwbl.export", "--ckpt", str(checkpoint), "--out", str(export)]
    exported = subprocess.run(export_cmd, capture_output=True, text=True, check=False)
    if exported.returncode != 0:
        raise RuntimeError(f"export of ablation arm {arm} failed: {exported.stderr[-2000:]}")
    info = {"command": " ".join(command[1:]).replace(sys.executable, "python"), "train_seconds": seconds,
            "steps": steps, "seed": seed, "export": str(export), "checkpoint": str(checkpoint)}
    (root / "train.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value) of per-seed results."""
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0, "n": len(values)}


def ablation_rows(ev: Evaluator) -> dict[str, Any]:
    """Each arm trained once per seed with the same number of steps, evaluated like g; mean ± std."""
    rows: dict[str, Any] = {}
    for arm, (description, overrides) in ABLATION_ARMS.items():
        runs: list[dict[str, Any]] = []
        try:
            for seed in ev.s.ablation_seeds:
                info = train_arm(ev.s, arm, overrides, seed)
                ev.timings[f"ablation/{arm}/seed{seed}/train"] = info["train_seconds"]
                runs.append({**info, **{split: ev.wsg(split, f"ablation_{arm}_seed{seed}", checkpoint=info["export"],
                                                      limit=ev.s.ablation_limit) for split in SPLITS}})
        except (RuntimeError, ValueError, OSError) as err:
            log.error("ablation arm %s failed: %s", arm, err)
            rows[arm] = {"description": description, "overrides": overrides, "error": str(err), "runs": runs}
            continue
        summary = {split: {key: mean_std([r[split][key] for r in runs]) for key in ("pointing", "bbox_acc")}
                   for split in SPLITS}
        rows[arm] = {"description": description, "overrides": overrides, "runs": runs,
                     "steps": sorted({r["steps"] for r in runs}), **summary}
    return {"rows": rows, "steps": ev.s.ablation_steps, "seeds": ev.s.ablation_seeds, "limit": ev.s.ablation_limit,
            "batch_size_from": ev.s.g_config}
