"""The report's evaluation rows: every heatmap source through ``wwbl.evaluation.run_evaluation`` on
the report's splits, sharing one frozen CLIP; each run named after the models it used."""
from __future__ import annotations

import hashlib
import json
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shapes_world.config import read_yaml
from shapes_world.history import val_history_ties
from shapes_world.report_settings import SPLITS, ReportSettings
from wwbl.clip import ClipSpec
from wwbl.defaults import MIN_PROPOSAL_AREA, POINTING_TIES
from wwbl.evaluation.evaluate import EvalSettings, run_evaluation
from wwbl.inference.options import WWbLOptions
from wwbl.inference.proposals import ProposalGenerator

log = logging.getLogger("shapes_world.report")

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
CENTRE_SIGMAS = (0.08, 0.12, 0.16, 0.20, 0.25, 0.30)  # centre baseline widths tried on val (fraction of side)


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


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall-clock seconds (one decimal, as the report quotes them)."""
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 1)


class Evaluator:
    """Runs ``wwbl.evaluation.run_evaluation`` for the report's rows, sharing one frozen CLIP."""

    def __init__(self, settings: ReportSettings) -> None:
        self.s = settings
        self.clip = ClipSpec(settings.clip_model, None, settings.clip_checkpoint).build()
        self.timings: dict[str, float] = {}
        self.fp_clip = fingerprint(settings.clip_checkpoint)
        self.fp_blip = fingerprint(settings.blip) if Path(settings.blip).exists() else None

    def fingerprint_of(self, task: str, checkpoint: str | None) -> str:
        """The models a run depends on: CLIP (+ g) (+ BLIP for WWbL)."""
        base = fingerprint(self.s.clip_checkpoint, checkpoint) if checkpoint else self.fp_clip
        return f"{base}-{self.fp_blip}" if task == "wwbl" else base

    def eval_settings(self, task: str, split: str, label: str, *, method: str | None = None,
                      checkpoint: str | None = None, options: dict[str, Any] | None = None,
                      limit: int | None = None, **extra: Any) -> EvalSettings:
        root = self.s.split_root(split)
        list_split = "val" if split == "val" else "test"
        run_dir = Path(self.s.work) / task / split / f"{label}-{self.fingerprint_of(task, checkpoint)}"
        return EvalSettings(task=task, dataset="flickr30k", root=root, split=list_split,
                            out=str(run_dir), method=method,
                            checkpoint=checkpoint, clip_model=self.s.clip_model, clip_pretrained=None,
                            clip_checkpoint=self.s.clip_checkpoint, extractor_options=dict(options or {}),
                            limit=limit, batch_size=self.s.batch_size, label=label, progress=False, **extra)

    def run(self, settings: EvalSettings) -> dict[str, Any]:
        key = f"{settings.task}/{Path(settings.out).parent.name}/{settings.label}"
        timing = Path(settings.out) / "seconds.json"
        resumed = timing.is_file()  # a finished run with these exact models: run_evaluation only rescores it
        log.info("evaluating %s%s", key, " (finished before: rescoring)" if resumed else "")
        results, seconds = timed(lambda: run_evaluation(settings, clip=self.clip))
        if resumed:
            seconds = json.loads(timing.read_text(encoding="utf-8"))["seconds"]
        elif results["images"] == results["images_total"]:
            timing.write_text(json.dumps({"seconds": seconds}), encoding="utf-8")
        self.timings[key] = seconds
        return {**results["metrics"], "images": results["images"], "skipped": results["skipped"], "seconds": seconds,
                "resumed": resumed, "run_dir": settings.out, "command": cli_command(settings)}

    def wsg(self, split: str, label: str, **kwargs: Any) -> dict[str, Any]:
        return self.run(self.eval_settings("wsg", split, label, limit=kwargs.pop("limit", self.s.limit), **kwargs))


def cli_command(settings: EvalSettings) -> str:
    """The ``python -m wwbl.evaluation`` command equivalent to a run, quoted for a POSIX shell."""
    parts = ["python", "-m", "wwbl.evaluation", settings.task, "--dataset", "flickr30k", "--root", str(settings.root),
             "--split", settings.split]
    if settings.checkpoint:
        parts += ["--checkpoint", str(settings.checkpoint)]
    else:
        parts += ["--method", settings.method, "--clip-model", settings.clip_model, "--clip-pretrained", "none",
                  "--clip-checkpoint", str(settings.clip_checkpoint)]
    for key, value in settings.extractor_options.items():
        parts += ["--option", f"{key}={json.dumps(value)}"]
    if settings.task == "wwbl":
        parts += ["--captioner", str(settings.captioner), "--match-prefix", settings.match_prefix]
        if settings.pipeline.proposals.min_area_ratio != MIN_PROPOSAL_AREA:
            parts += ["--min-proposal-area", f"{settings.pipeline.proposals.min_area_ratio:g}"]
    if settings.pointing_ties != POINTING_TIES[0]:
        parts += ["--pointing-ties", settings.pointing_ties]
    if settings.limit:
        parts += ["--limit", str(settings.limit)]
    parts += ["--out", str(settings.out)]
    return shlex.join(parts)


def choose_centre_sigma(ev: Evaluator) -> tuple[float, dict[str, float]]:
    """The centre baseline's width, picked by box accuracy on the **val** split (never on test)."""
    scores = {}
    for sigma in CENTRE_SIGMAS:
        result = ev.wsg("val", f"centre_sigma{sigma:.2f}", method="centre", options={"sigma_fraction": sigma})
        scores[f"{sigma:.2f}"] = result["bbox_acc"]
    best = max(CENTRE_SIGMAS, key=lambda s: (scores[f"{s:.2f}"], -s))
    return best, scores


def teacher_label(g_config: str) -> str:
    """The EXTRACTORS row that is g's L_rmap target: GAE from the block g's config starts at."""
    start = int((read_yaml(g_config).get("model") or {}).get("relevancy_start_layer", -1))
    return "gae" if start == -1 else "gae_all_blocks" if start == 0 else f"gae_from_block{start}"


def teacher_on_val(ev: Evaluator, ties: str) -> dict[str, Any]:
    """GAE from the last block (g.yaml's L_rmap target, as the reference) vs. from all blocks, on
    **val**: the evidence a choice of g's relevancy target may rest on (test is not used for it);
    pointing by ``ties``, the tie rule of g's val history, so that the figures are comparable."""
    suffix = "" if ties == POINTING_TIES[0] else f"_ties_{ties}"
    return {label: {**ev.wsg("val", label + suffix, method="gae", options=EXTRACTORS[label][1], pointing_ties=ties),
                    "pointing_ties": ties}
            for label in ("gae", "gae_all_blocks")}


def released_tie_rows(ev: Evaluator, teacher: str) -> dict[str, dict[str, Any]]:
    """g, its teacher and last-block GAE scored with the released code's pointing tie rule (the first
    maximal pixel, ``--pointing-ties first``) instead of the default centre of the flat top."""
    sources = {"g": {"checkpoint": ev.s.g_checkpoint}} if ev.s.has_g else {}
    for label in dict.fromkeys((teacher, "gae")):
        name, options = EXTRACTORS[label]
        sources[label] = {"method": name, "options": options}
    return {label: {split: ev.wsg(split, f"{label}_ties_first", pointing_ties="first", **kwargs) for split in SPLITS}
            for label, kwargs in sources.items()}


def wsg_rows(ev: Evaluator, g_training: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every WSG row on both splits: baselines, training-free extractors, g (``g_training``: its
    ``training.json`` record, whose val history sets the tie rule of the teacher's val figures)."""
    sigma, sigma_scores = choose_centre_sigma(ev)
    rows: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        sources: dict[str, dict[str, Any]] = {
            "random": {"method": "random", "options": {"seed": ev.s.seed}},
            "centre": {"method": "centre", "options": {"sigma_fraction": sigma}},
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
    teacher = teacher_label(ev.s.g_config)
    return {"rows": rows, "centre_sigma": sigma, "centre_sigma_val_box_acc": sigma_scores,
            "not_applicable": NOT_APPLICABLE, "teacher_val": teacher_on_val(ev, val_history_ties(g_training)),
            "teacher": teacher, "released_ties": released_tie_rows(ev, teacher)}


def wwbl_rows(ev: Evaluator) -> dict[str, Any]:
    """WWbL metric of Algorithm 1 with g and with GAE as g's teacher (WWbL Table 7 in miniature)."""
    rows: dict[str, dict[str, Any]] = {}
    teacher = EXTRACTORS[teacher_label(ev.s.g_config)]
    area = ev.s.wwbl_min_proposal_area
    pipeline = WWbLOptions(proposals=ProposalGenerator(min_area_ratio=area))
    for split in SPLITS:
        for label, kwargs in (("g", {"checkpoint": ev.s.g_checkpoint}),
                              ("gae", {"method": teacher[0], "options": teacher[1]})):
            if label == "g" and not ev.s.has_g:
                rows.setdefault(label, {})[split] = {"missing": f"no exported g at {ev.s.g_checkpoint}"}
                continue
            settings = ev.eval_settings("wwbl", split, f"{label}-area{area:g}", limit=ev.s.wwbl_limit,
                                        captioner=ev.s.blip, match_prefix="", pipeline=pipeline, **kwargs)
            try:
                rows.setdefault(label, {})[split] = ev.run(settings)
            except (ValueError, RuntimeError, OSError) as err:
                log.error("WWbL %s on %s failed: %s", label, split, err)
                rows.setdefault(label, {})[split] = {"error": f"{type(err).__name__}: {err}"}
    return {"rows": rows, "captioner": ev.s.blip, "match_prefix": "", "min_proposal_area": area}
