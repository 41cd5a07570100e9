"""The papers' tables from evaluation results, as Markdown, CSV and JSON; several runs merge into one.

A result is the ``results.json`` of one run (task, dataset, method, metrics). Runs of the same
task are pivoted into tables laid out like the papers': one row per method, one column group
per metric with one column per dataset, in the papers' dataset order:

* WSG — WWbL Tables 6–7: pointing accuracy and bbox accuracy on VG, Flickr30k, ReferIt;
* zero-shot phrase localisation — Adapting-CLIP Table 1: Acc@thr on Flickr All / Other / S0 / S1
  and VG S0 / S1;
* WWbL — WWbL Table 7: pointing and bbox accuracy per dataset, WWbL rows alone and, when WSG runs
  exist too, the full table with "WWbL: method" and "WSG: method" rows;
* WSOL — WWbL Tables 2–3 (GT-known localisation on CUB, Cars, Dogs) and VL-Score's ImageNet
  table (mean box IoU, GT-known, top-1 and top-5 localisation);
* masks — the poster: best mean IoU over the 100-threshold sweep, its threshold, and PxAP.

Accuracies print as percentages with two decimals (as in the papers); mean IoU, thresholds and
PxAP as fractions with four.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from wwbl.atomic_files import write_text_atomic
from wwbl.errors import MissingResourceError

DATASET_NAMES = {
    "vg": "VG", "flickr30k": "Flickr", "referit": "ReferIt",
    "zsg_flickr_all": "Flickr All", "zsg_flickr_other": "Flickr Other", "zsg_flickr_s0": "Flickr S0",
    "zsg_flickr_s1": "Flickr S1", "zsg_vg_s0": "VG S0", "zsg_vg_s1": "VG S1",
    "cub": "CUB", "cars": "Stanford-Cars", "dogs": "Stanford-Dogs", "imagenet": "ImageNet", "cocoglide": "CocoGlide",
}
TASK_NAMES = {"wsg": "WSG", "wwbl": "WWbL", "wsol": "WSOL", "masks": "masks"}
PERCENT = {"pointing", "bbox_acc", "acc_iou", "gt_known_loc", "top1_loc", "top5_loc", "top1_cls", "top5_cls"}


@dataclass(frozen=True)
class Layout:
    """A table: which task, which datasets (in column order), which metric groups."""

    key: str
    title: str
    tasks: tuple[str, ...]  # several tasks: one row per (task, method), labelled "TASK: method"
    datasets: tuple[str, ...]
    groups: tuple[tuple[str, str], ...]  # (metric key, group title)


LAYOUTS = (
    Layout("wsg", "WSG: pointing game and bounding-box accuracy (WWbL Tables 6-7)", ("wsg",),
           ("vg", "flickr30k", "referit"), (("pointing", "Point Acc"), ("bbox_acc", "Bbox Acc"))),
    Layout("zsg", "Phrase localisation Acc@thr, IoU > 0.5 Flickr / 0.3 VG (Adapting-CLIP Table 1)", ("wsg",),
           ("zsg_flickr_all", "zsg_flickr_other", "zsg_flickr_s0", "zsg_flickr_s1", "zsg_vg_s0", "zsg_vg_s1"),
           (("acc_iou", "Acc"),)),
    Layout("wwbl", "WWbL: pointing game and bounding-box accuracy (WWbL Table 7, WWbL rows)", ("wwbl",),
           ("vg", "flickr30k", "referit"), (("pointing", "Point Acc"), ("bbox_acc", "Bbox Acc"))),
    Layout("table7", "WWbL and WSG: pointing game and bounding-box accuracy (WWbL Table 7)", ("wwbl", "wsg"),
           ("vg", "flickr30k", "referit"), (("pointing", "Point Acc"), ("bbox_acc", "Bbox Acc"))),
    Layout("wsol", "WSOL: GT-known localisation (WWbL Tables 2-3)", ("wsol",),
           ("cub", "cars", "dogs", "imagenet"), (("gt_known_loc", "GT-known Loc"),)),
    Layout("imagenet_loc", "Zero-shot localisation (VL-Score)", ("wsol",), ("imagenet", "cub", "cars", "dogs"),
           (("mean_box_iou", "box IoU"), ("gt_known_loc", "GT-known Loc"), ("top1_loc", "Top-1 Loc"),
            ("top5_loc", "Top-5 Loc"))),
    Layout("masks", "Mask localisation (poster): mean IoU over 100 thresholds, PxAP", ("masks",), ("cocoglide",),
           (("best_miou", "mean IoU"), ("best_threshold", "threshold"), ("pxap", "PxAP"))),
)


def format_value(metric: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}" if metric in PERCENT else f"{value:.4f}"


def build_tables(results: Sequence[dict]) -> list[dict[str, Any]]:
    """Tables (``{"key", "title", "columns", "rows"}``) for every layout that has data.

    Rows are methods in first-appearance order; a column exists only for a dataset some run
    covered; a later run of the same (method, task, dataset) replaces an earlier one.
    """
    tables = []
    for layout in LAYOUTS:
        runs = [r for r in results if r["task"] in layout.tasks and r["dataset"] in layout.datasets]
        if len(layout.tasks) > 1 and len({r["task"] for r in runs}) < 2:
            continue  # a combined table only when both tasks have runs
        runs.sort(key=lambda r: layout.tasks.index(r["task"]))
        cells: dict[tuple[str, str], dict] = {}
        methods: list[str] = []
        for run in runs:
            row = f"{TASK_NAMES[run['task']]}: {run['method']}" if len(layout.tasks) > 1 else run["method"]
            if row not in methods:
                methods.append(row)
            cells[(row, run["dataset"])] = run["metrics"]
        present = [d for d in layout.datasets if any(d == r["dataset"] for r in runs)]
        columns = [(m, d) for m, _ in layout.groups for d in present
                   if any(m in cells.get((meth, d), {}) for meth in methods)]
        if not columns:
            continue
        titles = dict(layout.groups)
        header = ["Method"] + [f"{titles[m]} {DATASET_NAMES.get(d, d)}" for m, d in columns]
        rows = [[method] + [format_value(m, cells.get((method, d), {}).get(m)) for m, d in columns] for method in methods]
        raw = [{"method": method, **{f"{m}/{d}": cells.get((method, d), {}).get(m) for m, d in columns}}
               for method in methods]
        tables.append({"key": layout.key, "title": layout.title, "columns": header, "rows": rows, "values": raw})
    return tables


def to_markdown(table: dict[str, Any]) -> str:
    lines = [f"### {table['title']}", "", "| " + " | ".join(table["columns"]) + " |",
             "| " + " | ".join("---" for _ in table["columns"]) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def to_csv(table: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table["columns"])
    writer.writerows(table["rows"])
    return buffer.getvalue()


def write_tables(results: Sequence[dict], out: str | Path, echo: bool = True) -> list[Path]:
    """Write ``tables.md``, ``tables.json`` and one ``table_<key>.csv`` per table; print the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(results)
    markdown = "\n".join(to_markdown(t) for t in tables)
    written = [out / "tables.md", out / "tables.json"]
    write_text_atomic(written[0], markdown)
    write_text_atomic(written[1], json.dumps(tables, indent=2))
    for table in tables:
        path = out / f"table_{table['key']}.csv"
        write_text_atomic(path, to_csv(table))
        written.append(path)
    if echo and markdown:
        print(markdown)
    return written


def collect_results(paths: Sequence[str | Path]) -> list[dict]:
    """``results.json`` of each given run directory (or file), searched recursively in directories."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("results.json")))
        else:
            raise MissingResourceError(f"no evaluation results at '{path}'")
    if not found:
        raise MissingResourceError(f"no results.json under {', '.join(map(str, paths))}")
    return [_read_results(p) for p in found]


def _read_results(path: Path) -> dict:
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"'{path}' is not a readable results.json: {err}") from err
    if not isinstance(results, dict):
        raise ValueError(f"'{path}' is not a results.json (not a JSON object)")
    return results


def merge_runs(paths: Sequence[str | Path], out: str | Path) -> list[Path]:
    """Merge several runs (methods, datasets) into one set of tables under ``out``."""
    return write_tables(collect_results(paths), out)
