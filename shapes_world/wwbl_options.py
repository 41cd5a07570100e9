"""What WWbL's speed options cost and gain: Algorithm 1 on the shapes world, once per option.

    python -m shapes_world.wwbl_options --out runs/wwbl_options [--limit N] [--device cpu] [--threads 1]

Algorithm 1 runs with the bundled shapes-world models (network g ``checkpoints/shapes_g`` with its CLIP
``checkpoints/shapes_clip``, the shapes BLIP ``checkpoints/shapes_blip``) on the first ``--limit`` images
of the held-out test split (``data/shapes/flickr30k``, test list; all of it by default), scored as the
shapes report scores WWbL: the evaluation's WWbL task (``wwbl.evaluation.tasks.WWbLTask``, no GT match
prefix, the paper's box rule), so each row's pointing / box accuracy is what ``python -m wwbl.evaluation
wwbl`` reports with the row's flags. Configurations (flags of ``add_pipeline_arguments``, the same in
``infer.py`` and the evaluation):

* ``default`` — identical crops captioned once (exact);
* ``--caption-repeated-crops`` — every crop captioned, the reference's cost (same output as the default);
* ``--proposal-dedup-iou 0.7`` / ``0.5``, ``--num-beams 2`` / ``1``, ``--max-proposals 50`` / ``20`` —
  options that change the output, for speed.

Writes ``results.md`` (the table: accuracy, proposals and crops captioned per image, seconds per
image of the pipeline alone, speed-up vs the default, and whether the predictions equal the
default's) and ``results.json`` (the rows, the machine and versions). Timings on a loaded machine are
noise: rerun on an idle one (one warm-up image runs first, untimed).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shapes_world.report_provenance import environment
from shapes_world.report_settings import SPLITS
from wwbl.cli import OneLineParser, add_pipeline_arguments, device_name, positive_int
from wwbl.clip import ClipSpec
from wwbl.devices import resolve_device
from wwbl.errors import MissingResourceError
from wwbl.evaluation.evaluate import EvalSettings, build_heatmap_source
from wwbl.evaluation.tasks import Unit, WWbLTask, group_by_image, prediction_entries
from wwbl.images import load_image
from wwbl.inference.api import WWbLModel
from wwbl.inference.captioner import BlipCaptioner
from wwbl.inference.options import pipeline_options_from_args
from wwbl.readers import load_dataset

# Row label → the pipeline flags it adds to the defaults; the first row is the baseline of the speed-ups.
CONFIGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("default", ()),
    ("every crop captioned (reference cost)", ("--caption-repeated-crops",)),
    ("dedup IoU 0.7", ("--proposal-dedup-iou", "0.7")),
    ("dedup IoU 0.5", ("--proposal-dedup-iou", "0.5")),
    ("2 beams", ("--num-beams", "2")),
    ("1 beam (greedy)", ("--num-beams", "1")),
    ("at most 50 proposals", ("--max-proposals", "50")),
    ("at most 20 proposals", ("--max-proposals", "20")),
)


@dataclass
class Models:
    """What every configuration shares: the heatmap source g (with its CLIP) and the loaded BLIP."""

    g: Any
    blip: BlipCaptioner
    settings: EvalSettings  # the evaluation's WWbL settings of the run (box rule, scoring, matching)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m shapes_world.wwbl_options", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/wwbl_options", help="folder for results.md and results.json")
    p.add_argument("--limit", type=positive_int, default=None, help="first N test images (default: all)")
    p.add_argument("--data", default="data/shapes", help="the written shapes world (shapes_world.writers --out)")
    p.add_argument("--g", dest="g_checkpoint", default="checkpoints/shapes_g", help="exported g")
    p.add_argument("--clip-checkpoint", default="checkpoints/shapes_clip")
    p.add_argument("--clip-model", default="shapes-vit")
    p.add_argument("--blip", default="checkpoints/shapes_blip", help="BLIP captioner folder")
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per pipeline call")
    return p


def pipeline_options(flags: Sequence[str]) -> Any:
    """The :class:`WWbLOptions` that ``flags`` name, read by the parser every entry point uses."""
    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser)
    return pipeline_options_from_args(parser.parse_args(list(flags)))


def load_models(args: argparse.Namespace) -> Models:
    root = Path(args.data) / SPLITS["test"]
    for what, path in (("the shapes-world test split", root / "test.txt"), ("the exported g", Path(args.g_checkpoint)),
                       ("the shapes CLIP", Path(args.clip_checkpoint)), ("the shapes BLIP", Path(args.blip))):
        if not path.exists():
            raise MissingResourceError(f"{what} is missing ('{path}'); write the world with `python -m "
                                       "shapes_world.writers --config configs/shapes/world.yaml --out data/shapes`")
    settings = EvalSettings(task="wwbl", dataset="flickr30k", root=str(root), split="test", out=args.out,
                            checkpoint=args.g_checkpoint, clip_model=args.clip_model, clip_pretrained=None,
                            clip_checkpoint=args.clip_checkpoint, device=args.device, batch_size=args.batch_size,
                            captioner=args.blip, match_prefix="", progress=False)
    clip = ClipSpec(args.clip_model, None, args.clip_checkpoint).build(args.device)
    g = build_heatmap_source(settings, clip)
    return Models(g, BlipCaptioner.from_pretrained(args.blip, args.device, allow_download=False), settings)


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_config(models: Models, flags: Sequence[str], units: list[Unit], images: list, batch_size: int) -> dict:
    """One configuration over every image: its WWbL metrics, records, counts and pipeline seconds."""
    options = pipeline_options(flags)
    captioner = BlipCaptioner(models.blip.model, models.blip.processor, options.caption)
    s = models.settings
    model = WWbLModel(models.g, captioner, boxes=s.box_rule("wsg"), options=options, scoring=s.scoring)
    counts = {"seconds": 0.0, "proposals": 0}

    def predict(batch_units: Sequence[Unit], batch_images: Sequence[Any]) -> list[list[dict]]:
        _synchronise(s.device)
        start = time.perf_counter()
        results = model.detect_batch(list(batch_images))
        _synchronise(s.device)
        counts["seconds"] += time.perf_counter() - start
        counts["proposals"] += sum(len(r.proposals) for r in results)
        return [prediction_entries(r, s.pointing_ties) for r in results]

    task = WWbLTask(predict, models.g.clip.encode_text, s.match_prefix or "", s.gt_mode, s.iou_threshold, s.drop_empty)
    records: dict[str, dict] = {}
    for start in range(0, len(units), batch_size):
        for record in task.process(units[start:start + batch_size], images[start:start + batch_size]):
            records[record["key"]] = record
    metrics = task.score(units, records)
    return {"flags": list(flags), "pointing": metrics["pointing"], "bbox_acc": metrics["bbox_acc"],
            "images": len(units), "proposals": counts["proposals"], "captioned": captioner.captioned,
            "seconds": counts["seconds"], "predictions": {k: r["predictions"] for k, r in records.items()}}


def table_rows(rows: dict[str, dict]) -> list[dict]:
    """Per row the table's derived values; the first row is the baseline (speed-up 1, its own output)."""
    base_label = next(iter(rows))
    base = rows[base_label]
    base_speed = base["seconds"] / base["images"]
    out = []
    for label, row in rows.items():
        per_image = row["seconds"] / row["images"]
        out.append({"label": label, "flags": " ".join(row["flags"]), "pointing": row["pointing"],
                    "bbox_acc": row["bbox_acc"], "proposals": row["proposals"] / row["images"],
                    "captioned": row["captioned"] / row["images"], "seconds": per_image,
                    "speedup": base_speed / per_image if per_image > 0 else float("inf"),
                    "same": row["predictions"] == base["predictions"]})
    return out


def markdown_table(rows: dict[str, dict]) -> str:
    """The results table: one line per configuration, percentages for the accuracies."""
    lines = ["| configuration | flags | WWbL pointing | WWbL box acc | proposals / image | crops captioned / image "
             "| s / image | speed-up | same predictions as default |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table_rows(rows):
        flags = f"`{r['flags']}`" if r["flags"] else "–"
        lines.append(f"| {r['label']} | {flags} | {100 * r['pointing']:.1f} % | {100 * r['bbox_acc']:.1f} % | "
                     f"{r['proposals']:.1f} | {r['captioned']:.1f} | {r['seconds']:.3f} | ×{r['speedup']:.2f} | "
                     f"{'yes' if r['same'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        args.device = str(resolve_device(args.device))
        models = load_models(args)
    except (MissingResourceError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    index = load_dataset("flickr30k", models.settings.root, "test")
    units = group_by_image(index.samples)[: args.limit]
    images = [load_image(unit.image_path) for unit in units]
    run_config(models, (), units[:1], images[:1], 1)  # warm-up, untimed
    rows = {}
    for label, flags in CONFIGS:
        rows[label] = run_config(models, flags, units, images, args.batch_size)
        print(f"{label}: {rows[label]['seconds'] / len(units):.3f} s/image", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "shapes_world.wwbl_options", *(argv if argv is not None else sys.argv[1:])])
    header = (f"# WWbL speed options on the shapes world\n\n`{command}` — {len(units)} test images, device "
              f"{args.device}, {args.threads} thread(s), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n")
    (out / "results.md").write_text(header + markdown_table(rows), encoding="utf-8")
    summary = {"command": command, "images": len(units), "device": args.device, "threads": args.threads,
               "environment": environment(), "rows": table_rows(rows)}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
