"""The shapes-world benchmark report: one command, Markdown + JSON.

    python -m shapes_world.report --out docs/shapes_report

Everything runs through the real pipeline: the Flickr30k-Entities-style files the shapes writer
produced are read by ``wwbl.readers.load_flickr30k`` and scored by
``wwbl.evaluation.run_evaluation`` (the code behind ``python -m wwbl.evaluation``), on the
held-out test split (seen colour-shape combinations) and on the open-world split (held-out
combinations only). The report holds

* WSG pointing / box accuracy of a random and a centre baseline (the extractors ``random`` and
  ``centre``), of every training-free extractor that applies to a ViT CLIP, and of g;
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
import json
import logging
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from shapes_world.history import plot_history
from shapes_world.report_ablation import ablation_rows
from shapes_world.report_claims import claims
from shapes_world.report_diagnostics import diagnostics
from shapes_world.report_markdown import nested_get, render_markdown
from shapes_world.report_provenance import environment, model_summary, world_summary
from shapes_world.report_runs import Evaluator, wsg_rows, wwbl_rows
from shapes_world.report_settings import ReportSettings
from wwbl.errors import MissingResourceError

log = logging.getLogger("shapes_world.report")

HISTORY_PNG = "g_val_per_epoch.png"


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
        report["wsg"] = wsg_rows(ev, nested_get(report, "models", "g_training"))
        report["diagnostics"] = diagnostics(ev, report["wsg"])
    if "wwbl" not in s.skip:
        report["wwbl"] = wwbl_rows(ev)
    if "ablation" not in s.skip:
        report["ablation"] = ablation_rows(ev)
    report["claims"] = claims(report)
    report["timings_seconds"] = ev.timings
    report["wall_clock_seconds"] = round(time.time() - started, 1)
    return report


def build_parser() -> argparse.ArgumentParser:
    defaults = ReportSettings()
    p = argparse.ArgumentParser(prog="python -m shapes_world.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=defaults.out, help="report directory (README.md + report.json)")
    p.add_argument("--work", default=defaults.work, help="intermediate runs (records, ablation trainings)")
    p.add_argument("--data", default=defaults.data, help="the written shapes world (shapes_world.writers --out)")
    p.add_argument("--clip-checkpoint", default=defaults.clip_checkpoint)
    p.add_argument("--clip-model", default=defaults.clip_model)
    p.add_argument("--g", dest="g_checkpoint", default=defaults.g_checkpoint, help="exported g (wwbl.export)")
    p.add_argument("--blip", default=defaults.blip, help="shapes BLIP captioner folder")
    p.add_argument("--g-config", default=defaults.g_config, help="g's training config (the ablation overrides it)")
    p.add_argument("--limit", type=int, default=defaults.limit, help="WSG: first N images of each split")
    p.add_argument("--wwbl-limit", type=int, default=defaults.wwbl_limit, help="WWbL: first N images of each split")
    p.add_argument("--wwbl-min-proposal-area", type=float, default=defaults.wwbl_min_proposal_area,
                   help="WWbL: proposals must cover more than this fraction of the frame (reference 0.1)")
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
    report["command"] = "python -m shapes_world.report " + shlex.join(argv if argv is not None else sys.argv[1:])
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
