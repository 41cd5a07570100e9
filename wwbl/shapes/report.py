"""The shapes-world benchmark report: one command, Markdown + JSON.

    python -m wwbl.shapes.report --out docs/shapes_report

Everything runs through the real pipeline: the Flickr30k-Entities-style files the shapes writer
produced are read by ``wwbl.readers.load_flickr30k`` and scored by
``wwbl.evaluation.run_evaluation`` (the code behind ``python -m wwbl.evaluation``), on the
held-out test split (seen colour-shape combinations) and on the open-world split (held-out
combinations only). The report holds

* WSG pointing / box accuracy of a random and a centre baseline (two tiny heatmap sources
  defined here), of every training-free extractor that applies to a ViT CLIP, and of g;
* the WWbL metric of Algorithm 1 with g and with GAE as the heatmap source (WWbL Table 7), with
  the shapes BLIP as captioner;
* a loss ablation (WWbL Table 5): g retrained with equal short budgets (same seed, same steps)
  with all four losses, without L_rmap, without L_fore/L_back and with L_rmap only;
* diagnostics comparing g's boxes with GAE's (the paper's "g beats its GAE teacher" claim);
* commands, seeds, versions, machine and wall-clock times.

Intermediate runs live under ``--work`` (default ``runs/shapes_report``, wiped at the start
unless ``--resume``); the report files go to ``--out``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wwbl.errors import MissingResourceError
from wwbl.extractors.base import HeatmapExtractor
from wwbl.shapes.history import plot_history
from wwbl.shapes.report_markdown import nested_get, render_markdown

log = logging.getLogger("wwbl.shapes.report")

SPLITS = {"test": "flickr30k", "openworld": "flickr30k_openworld"}  # report split → folder under --data
HISTORY_PNG = "g_val_per_epoch.png"
SPLIT_TITLES = {"test": "held-out test (seen combinations)", "openworld": "open-world (unseen combinations)"}
# Training-free extractors that run on a ViT CLIP, with options (row label → (registry name, options)).
EXTRACTORS: dict[str, tuple[str, dict[str, Any]]] = {
    "gae": ("gae", {}),
    "gae_all_blocks": ("gae", {"start_layer": 0}),
    "gem": ("gem", {}),
    "clip_surgery": ("clip_surgery", {}),
    "clip_text_span": ("clip_text_span", {}),
    # SLIC levels: the reference's 100..600 (for >= 224 px images) scaled by the pixel ratio (64 / 224)^2
    "adapting_clip": ("adapting_clip", {"slic_levels": list(range(8, 50, 4))}),
    "crop_and_rank": ("crop_and_rank", {}),
}
NOT_APPLICABLE = {
    "vl_score": "Score-CAM on the last stage of a ModifiedResNet image tower; the shapes CLIP is a ViT",
    "gradcam": "Grad-CAM on the last stage of a ModifiedResNet image tower; the shapes CLIP is a ViT",
}
# Loss ablation (WWbL Table 5): arm → (description, LightningCLI overrides of configs/shapes/g.yaml).
ABLATION_ARMS: dict[str, tuple[str, list[str]]] = {
    "all_losses": ("L_fore + L_back + L_rmap + L_reg (paper weights 1, 1, 4, 1)", []),
    "no_rmap": ("without L_rmap", ["--model.lambda_rmap", "0"]),
    "no_fore_back": ("without L_fore and L_back", ["--model.lambda_fore", "0", "--model.lambda_back", "0"]),
    "rmap_only": ("L_rmap only", ["--model.lambda_fore", "0", "--model.lambda_back", "0", "--model.lambda_reg", "0"]),
}
CENTRE_SIGMAS = (0.08, 0.12, 0.16, 0.20, 0.25, 0.30)  # centre baseline widths tried on val (fraction of side)
SIZE_BUCKETS = ((0.0, 0.10, "small (< 10 % of the image)"), (0.10, 0.20, "medium (10–20 %)"),
                (0.20, 1.01, "large (≥ 20 %)"))


# ----------------------------------------------------------------------------- baselines


def gaussian_maps(centres_xy: Tensor, sigmas: Tensor, size: int) -> Tensor:
    """``P×size×size`` isotropic Gaussians; centres and sigmas in pixels of the square frame."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx = (grid[None, None, :] - centres_xy[:, 0, None, None]) / sigmas[:, None, None]
    dy = (grid[None, :, None] - centres_xy[:, 1, None, None]) / sigmas[:, None, None]
    return torch.exp(-0.5 * (dx * dx + dy * dy))


class RandomBlobBaseline(HeatmapExtractor):
    """Random-point / random-box baseline: per (image, phrase) a Gaussian at a uniformly random centre
    with a random width (``sigma_range``, fraction of the side). Its argmax is a uniformly random
    point and the WSG box rule turns it into a random box around that point. Seeded, ignores the
    image and the phrase."""

    name = "random"

    def __init__(self, clip: Any, seed: int = 0, sigma_range: tuple[float, float] = (0.05, 0.35), **options: Any):
        super().__init__(clip, **options)
        self.generator = torch.Generator().manual_seed(seed)
        self.sigma_range = sigma_range

    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        count, size = len(phrases), images.shape[-1]
        centres = torch.rand(count, 2, generator=self.generator) * size
        low, high = self.sigma_range
        sigmas = (low + (high - low) * torch.rand(count, generator=self.generator)) * size
        return gaussian_maps(centres, sigmas, size).to(images.device)


class CentreGaussianBaseline(HeatmapExtractor):
    """Centre baseline: the same centred Gaussian (width ``sigma_fraction`` of the side) for every
    phrase; the point is the image centre, the box a centred square-ish box."""

    name = "centre"

    def __init__(self, clip: Any, sigma_fraction: float = 0.2, **options: Any):
        super().__init__(clip, **options)
        self.sigma_fraction = sigma_fraction

    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        count, size = len(phrases), images.shape[-1]
        centres = torch.full((count, 2), size / 2.0)
        sigmas = torch.full((count,), self.sigma_fraction * size)
        return gaussian_maps(centres, sigmas, size).to(images.device)


# ----------------------------------------------------------------------------- settings


@dataclass
class ReportSettings:
    """What the report runs on and how much of it (the CLI maps its flags onto these fields)."""

    out: str = "docs/shapes_report"
    work: str = "runs/shapes_report"
    data: str = "data/shapes"
    clip_checkpoint: str = "checkpoints/shapes_clip"
    clip_model: str = "shapes-vit"
    g_checkpoint: str = "checkpoints/shapes_g"
    blip: str = "checkpoints/shapes_blip"
    g_config: str = "configs/shapes/g.yaml"
    limit: int = 200  # WSG: first N images of each split
    wwbl_limit: int = 25  # WWbL: first N images of each split (BLIP over all proposals is the slow part)
    ablation_steps: int = 40
    ablation_limit: int = 100  # WSG images per split for each ablation run
    ablation_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # one training per arm and seed
    ablation_val_batches: int = 4
    seed: int = 0
    batch_size: int = 16
    resume: bool = False
    g_provenance: str = ""  # how the shipped g was trained (command, budget), quoted in the report
    skip: list[str] = field(default_factory=list)  # parts to leave out: wsg, wwbl, ablation

    def split_root(self, split: str) -> str:
        """Dataset root of a report split; ``val`` lives beside the held-out test split."""
        return str(Path(self.data) / SPLITS["test" if split == "val" else split])

    @property
    def has_g(self) -> bool:
        """Whether the exported g exists; without it the g rows are reported as missing."""
        return (Path(self.g_checkpoint) / "config.json").is_file()

    def check_resources(self) -> None:
        needed = {"shapes-world Flickr30k-style test split": Path(self.split_root("test")) / "test.txt",
                  "shapes-world open-world split": Path(self.split_root("openworld")) / "test.txt",
                  "shapes-world val split": Path(self.split_root("test")) / "val.txt",
                  "small shapes CLIP": Path(self.clip_checkpoint)}
        if "wwbl" not in self.skip:
            needed["shapes BLIP captioner"] = Path(self.blip)
        if "ablation" not in self.skip:
            needed["COCO-style training captions"] = Path(self.data) / "coco" / "annotations" / "captions_train2014.json"
        missing = [f"{what} ('{path}')" for what, path in needed.items() if not path.exists()]
        if missing:
            raise MissingResourceError(
                "the shapes report needs: " + "; ".join(missing) + ". Write the world with `python -m "
                "wwbl.shapes.writers --config configs/shapes/world.yaml --out data/shapes`, train the models "
                "(`python -m wwbl.shapes.train_clip`, `train_blip`, `python train.py --config configs/shapes/g.yaml` "
                "then `python -m wwbl.export`), or point the flags at them.")


# ----------------------------------------------------------------------------- evaluation runs


def fingerprint(*paths: str | Path) -> str:
    """Short content hash of files / folders: names a run after the exact models and data it used,
    so ``--resume`` never reuses a run made with other weights."""
    digest = hashlib.sha256()
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode())
            digest.update(file.read_bytes() if file.is_file() else b"absent")
    return digest.hexdigest()[:10]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 1)


class Evaluator:
    """Runs ``wwbl.evaluation.run_evaluation`` for the report's rows, sharing one frozen CLIP."""

    def __init__(self, settings: ReportSettings) -> None:
        from wwbl.clip import FrozenCLIP

        self.s = settings
        self.clip = FrozenCLIP(settings.clip_model, pretrained=None, checkpoint=settings.clip_checkpoint)
        self.timings: dict[str, float] = {}
        self.fp_clip = fingerprint(settings.clip_checkpoint)
        self.fp_blip = fingerprint(settings.blip) if Path(settings.blip).exists() else None

    def fingerprint_of(self, task: str, checkpoint: str | None) -> str:
        """The models a run depends on: CLIP (+ g) (+ BLIP for WWbL)."""
        base = fingerprint(self.s.clip_checkpoint, checkpoint) if checkpoint else self.fp_clip
        return f"{base}-{self.fp_blip}" if task == "wwbl" else base

    def eval_settings(self, task: str, split: str, label: str, *, method: str | None = None,
                      checkpoint: str | None = None, options: dict[str, Any] | None = None,
                      limit: int | None = None, **extra: Any) -> Any:
        from wwbl.evaluation.evaluate import EvalSettings

        root = self.s.split_root(split)
        list_split = "val" if split == "val" else "test"
        run_dir = Path(self.s.work) / task / split / f"{label}-{self.fingerprint_of(task, checkpoint)}"
        return EvalSettings(task=task, dataset="flickr30k", root=root, split=list_split,
                            out=str(run_dir), method=method,
                            checkpoint=checkpoint, clip_model=self.s.clip_model, clip_pretrained=None,
                            clip_checkpoint=self.s.clip_checkpoint, extractor_options=dict(options or {}),
                            limit=limit, batch_size=self.s.batch_size, label=label, progress=False, **extra)

    def run(self, settings: Any, extractor: HeatmapExtractor | None = None) -> dict[str, Any]:
        from wwbl.evaluation.evaluate import run_evaluation

        key = f"{settings.task}/{Path(settings.out).parent.name}/{settings.label}"
        timing = Path(settings.out) / "seconds.json"
        resumed = timing.is_file()  # a finished run with these exact models: run_evaluation only rescores it
        log.info("evaluating %s%s", key, " (finished before: rescoring)" if resumed else "")
        results, seconds = _timed(lambda: run_evaluation(settings, extractor=extractor, clip=self.clip))
        if resumed:
            seconds = json.loads(timing.read_text(encoding="utf-8"))["seconds"]
        elif results["images"] == results["images_total"]:
            timing.write_text(json.dumps({"seconds": seconds}), encoding="utf-8")
        self.timings[key] = seconds
        return {**results["metrics"], "images": results["images"], "skipped": results["skipped"], "seconds": seconds,
                "resumed": resumed, "run_dir": settings.out, "command": cli_command(settings, extractor is not None)}

    def wsg(self, split: str, label: str, **kwargs: Any) -> dict[str, Any]:
        extractor = kwargs.pop("extractor", None)
        return self.run(self.eval_settings("wsg", split, label, limit=kwargs.pop("limit", self.s.limit), **kwargs),
                        extractor)


def cli_command(settings: Any, in_report_source: bool) -> str:
    """The ``python -m wwbl.evaluation`` command equivalent to a run (baselines exist only here)."""
    if in_report_source:
        return f"(heatmap source defined in wwbl/shapes/report.py; evaluated by run_evaluation, out {settings.out})"
    parts = ["python -m wwbl.evaluation", settings.task, "--dataset flickr30k", f"--root {settings.root}",
             f"--split {settings.split}"]
    if settings.checkpoint:
        parts.append(f"--checkpoint {settings.checkpoint}")
    else:
        parts += [f"--method {settings.method}", f"--clip-model {settings.clip_model}", "--clip-pretrained none",
                  f"--clip-checkpoint {settings.clip_checkpoint}"]
    parts += [f"--option {k}={json.dumps(v)}" for k, v in settings.extractor_options.items()]
    if settings.task == "wwbl":
        parts += [f"--captioner {settings.captioner}", f"--match-prefix '{settings.match_prefix}'"]
    if settings.limit:
        parts.append(f"--limit {settings.limit}")
    parts.append(f"--out {settings.out}")
    return " ".join(parts)


def choose_centre_sigma(ev: Evaluator) -> tuple[float, dict[str, float]]:
    """The centre baseline's width, picked by box accuracy on the **val** split (never on test)."""
    scores = {}
    for sigma in CENTRE_SIGMAS:
        source = CentreGaussianBaseline(ev.clip, sigma_fraction=sigma, images_per_batch=ev.s.batch_size)
        result = ev.wsg("val", f"centre_sigma{sigma:.2f}", method="centre", options={"sigma_fraction": sigma},
                        extractor=source)
        scores[f"{sigma:.2f}"] = result["bbox_acc"]
    best = max(CENTRE_SIGMAS, key=lambda s: (scores[f"{s:.2f}"], -s))
    return best, scores


def teacher_label(g_config: str) -> str:
    """The EXTRACTORS row that is g's L_rmap target: GAE from the block g's config starts at."""
    from wwbl.shapes.config import read_yaml

    start = int((read_yaml(g_config).get("model") or {}).get("relevancy_start_layer", -1))
    return "gae" if start == -1 else "gae_all_blocks" if start == 0 else f"gae_from_block{start}"


def teacher_on_val(ev: Evaluator) -> dict[str, Any]:
    """GAE from the last block (g.yaml's L_rmap target, as the reference) vs. from all blocks, on
    **val**: the evidence a choice of g's relevancy target may rest on (test is not used for it)."""
    return {label: ev.wsg("val", label, method="gae", options=EXTRACTORS[label][1])
            for label in ("gae", "gae_all_blocks")}


def wsg_rows(ev: Evaluator) -> dict[str, Any]:
    """Every WSG row on both splits: baselines, training-free extractors, g."""
    sigma, sigma_scores = choose_centre_sigma(ev)
    rows: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        sources: dict[str, dict[str, Any]] = {
            "random": {"method": "random", "options": {"seed": ev.s.seed},
                       "extractor": RandomBlobBaseline(ev.clip, seed=ev.s.seed, images_per_batch=ev.s.batch_size)},
            "centre": {"method": "centre", "options": {"sigma_fraction": sigma},
                       "extractor": CentreGaussianBaseline(ev.clip, sigma_fraction=sigma,
                                                           images_per_batch=ev.s.batch_size)},
            **{label: {"method": name, "options": options} for label, (name, options) in EXTRACTORS.items()},
            "g": {"checkpoint": ev.s.g_checkpoint},
        }
        for label, kwargs in sources.items():
            if label == "g" and not ev.s.has_g:
                rows.setdefault(label, {})[split] = {"missing": f"no exported g at {ev.s.g_checkpoint}"}
                continue
            try:
                rows.setdefault(label, {})[split] = ev.wsg(split, label, **kwargs)
            except (ValueError, RuntimeError, OSError) as err:  # one failing source must not sink the report
                log.error("WSG %s on %s failed: %s", label, split, err)
                rows.setdefault(label, {})[split] = {"error": f"{type(err).__name__}: {err}"}
    return {"rows": rows, "centre_sigma": sigma, "centre_sigma_val_box_acc": sigma_scores,
            "not_applicable": NOT_APPLICABLE, "teacher_val": teacher_on_val(ev), "teacher": teacher_label(ev.s.g_config)}


def wwbl_rows(ev: Evaluator) -> dict[str, Any]:
    """WWbL metric of Algorithm 1 with g and with GAE as g's teacher (WWbL Table 7 in miniature)."""
    rows: dict[str, dict[str, Any]] = {}
    teacher = EXTRACTORS[teacher_label(ev.s.g_config)]
    for split in SPLITS:
        for label, kwargs in (("g", {"checkpoint": ev.s.g_checkpoint}),
                              ("gae", {"method": teacher[0], "options": teacher[1]})):
            if label == "g" and not ev.s.has_g:
                rows.setdefault(label, {})[split] = {"missing": f"no exported g at {ev.s.g_checkpoint}"}
                continue
            settings = ev.eval_settings("wwbl", split, label, limit=ev.s.wwbl_limit, captioner=ev.s.blip,
                                        match_prefix="", **kwargs)
            try:
                rows.setdefault(label, {})[split] = ev.run(settings)
            except (ValueError, RuntimeError, OSError) as err:
                log.error("WWbL %s on %s failed: %s", label, split, err)
                rows.setdefault(label, {})[split] = {"error": f"{type(err).__name__}: {err}"}
    return {"rows": rows, "captioner": ev.s.blip, "match_prefix": ""}


# ----------------------------------------------------------------------------- loss ablation


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
    done, seconds = _timed(lambda: subprocess.run(command, capture_output=True, text=True, check=False))
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


def claims(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's claims this world can test, each with its measured margin and a pass/fail."""
    out: list[dict[str, Any]] = []
    rows = nested_get(report, "wsg", "rows") or {}
    teacher = nested_get(report, "wsg", "teacher")
    wwbl = nested_get(report, "wwbl", "rows") or {}

    def add(claim: str, split: str, value: float | None, needed: float) -> None:
        out.append({"claim": claim, "split": split, "margin_points": None if value is None else 100 * value,
                    "needed_points": 100 * needed, "holds": value is not None and value >= needed})

    for split in SPLITS:
        g, t = nested_get(rows, "g", split) or {}, nested_get(rows, teacher, split) or {}
        wg, wt = nested_get(wwbl, "g", split) or {}, nested_get(wwbl, "gae", split) or {}
        add("g box accuracy − teacher box accuracy ≥ 10 points", split, _diff(g, t, "bbox_acc"), 0.10)
        add("g pointing ≥ teacher pointing", split, _diff(g, t, "pointing"), 0.0)
        add("Algorithm 1 with g ≥ with GAE, pointing", split, _diff(wg, wt, "pointing"), 0.0)
        add("Algorithm 1 with g ≥ with GAE, box accuracy", split, _diff(wg, wt, "bbox_acc"), 0.0)
        gap = _diff(g, wg, "pointing")
        add("WWbL pointing within 15 points of WSG pointing (g)", split, None if gap is None else 0.15 - gap, 0.0)
    return out


def _diff(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if key not in a or key not in b:
        return None
    return float(a[key]) - float(b[key])


# ----------------------------------------------------------------------------- diagnostics


def box_diagnostics(ev: Evaluator, split: str, label: str, run_dir: str) -> dict[str, Any]:
    """Why a source's box accuracy is what it is: box counts, size ratios, accuracy by GT size."""
    from wwbl.boxes import union_box
    from wwbl.readers import load_dataset
    from wwbl.metrics import box_ious, points_in_boxes
    from wwbl.evaluation.tasks import group_by_image

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


# ----------------------------------------------------------------------------- environment


def environment() -> dict[str, Any]:
    """Versions, machine and the repository state the numbers come from."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

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
    import os

    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.is_available(),
            "packages": packages, "git_commit": commit, "git_dirty": dirty}


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


# ----------------------------------------------------------------------------- main


def build_report(s: ReportSettings) -> dict[str, Any]:
    """Run every part of the report and return its JSON."""
    s.check_resources()
    if not s.resume:
        shutil.rmtree(s.work, ignore_errors=True)
    torch.manual_seed(s.seed)
    started = time.time()
    ev = Evaluator(s)
    report: dict[str, Any] = {"settings": asdict(s), "environment": environment(),
                              "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started))}
    report["world"] = world_summary(s)
    report["models"] = model_summary(s)
    if "wsg" not in s.skip:
        report["wsg"] = wsg_rows(ev)
        report["diagnostics"] = diagnostics(ev, report["wsg"])
    if "wwbl" not in s.skip:
        report["wwbl"] = wwbl_rows(ev)
    if "ablation" not in s.skip:
        report["ablation"] = ablation_rows(ev)
    report["claims"] = claims(report)
    report["timings_seconds"] = ev.timings
    report["wall_clock_seconds"] = round(time.time() - started, 1)
    return report


def world_summary(s: ReportSettings) -> dict[str, Any]:
    """Held-out combinations and item counts of the evaluated subsets (as the loaders read them)."""
    from wwbl.readers import load_dataset
    from wwbl.evaluation.tasks import group_by_image
    from wwbl.shapes.config import load_world_config
    from wwbl.shapes.generator import ShapesWorld

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


def build_parser() -> argparse.ArgumentParser:
    defaults = ReportSettings()
    p = argparse.ArgumentParser(prog="python -m wwbl.shapes.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=defaults.out, help="report directory (README.md + report.json)")
    p.add_argument("--work", default=defaults.work, help="intermediate runs (records, ablation trainings)")
    p.add_argument("--data", default=defaults.data, help="the written shapes world (wwbl.shapes.writers --out)")
    p.add_argument("--clip-checkpoint", default=defaults.clip_checkpoint)
    p.add_argument("--clip-model", default=defaults.clip_model)
    p.add_argument("--g", dest="g_checkpoint", default=defaults.g_checkpoint, help="exported g (wwbl.export)")
    p.add_argument("--blip", default=defaults.blip, help="shapes BLIP captioner folder")
    p.add_argument("--g-config", default=defaults.g_config, help="g's training config (the ablation overrides it)")
    p.add_argument("--limit", type=int, default=defaults.limit, help="WSG: first N images of each split")
    p.add_argument("--wwbl-limit", type=int, default=defaults.wwbl_limit, help="WWbL: first N images of each split")
    p.add_argument("--ablation-steps", type=int, default=defaults.ablation_steps, help="training steps per arm")
    p.add_argument("--ablation-limit", type=int, default=defaults.ablation_limit,
                   help="WSG images per split for each ablation run")
    p.add_argument("--ablation-seeds", type=int, nargs="+", default=defaults.ablation_seeds,
                   help="one training per arm and seed (mean ± std over them)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="evaluation images per batch")
    p.add_argument("--g-provenance", default="", help="how the evaluated g was trained (quoted in the report)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs under --work")
    p.add_argument("--skip", action="append", default=[], choices=("wsg", "wwbl", "ablation"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = ReportSettings(**vars(args))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        report = build_report(settings)
    except (MissingResourceError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    report["command"] = "python -m wwbl.shapes.report " + shlex.join(argv if argv is not None else sys.argv[1:])
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    history = nested_get(report, "models", "g_training", "val_history")
    if history:
        teacher = nested_get(report, "wsg", "teacher_val", nested_get(report, "wsg", "teacher") or "gae")
        plot_history(history, out / HISTORY_PNG, nested_get(report, "models", "g_training", "epoch"), teacher)
        report["g_history_png"] = HISTORY_PNG
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "README.md").write_text(render_markdown(report), encoding="utf-8")
    log.info("report written to %s in %.0f s", out, report["wall_clock_seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
