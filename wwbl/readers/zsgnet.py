"""ZSGNet's annotation CSVs (TheShadow29/zsgnet-pytorch ``ds_csv_ann``), as Adapting-CLIP evaluates them.

Files (under ``root``, Adapting-CLIP's layout; ``root/ds_csv_ann`` may be ``root`` itself):

* ``ds_csv_ann/<dir>/csv_dir/<file>.csv`` with, for Flickr30k, the columns ``img_id`` (with or
  without ``.jpg``), ``bbox`` (a Python list literal ``[x1, y1, x2, y2]``) and ``query`` (a
  string, or a list literal of strings); for Visual Genome ``image_fpath`` (relative to the VG
  image root, e.g. ``VG_100K/1.jpg``), ``bbox`` and ``phrase``. Other columns are ignored.
* images ``flickr/flickr30k_images/<img_id>.jpg`` and ``vg/<image_fpath>``.

Splits (Adapting-CLIP Table 1): ``zsg_flickr_all`` = ``flickr30k``, ``zsg_flickr_s0`` =
``flickr30k_c0`` (ZSGNet case 0), ``zsg_flickr_s1`` = ``flickr30k_c1`` (case 1), each with
``train/val/test.csv``; ``zsg_vg_s0`` = ``vg_split`` ``test_balanced_c2.csv`` (case 2),
``zsg_vg_s1`` = ``test_balanced_c3.csv`` (case 3), both validating on ``val_balanced.csv``.
``zsg_flickr_other`` = ``zsg_flickr_all`` restricted to rows whose query is an ``other``-type
mention in the image's Flickr30k Entities sentences (``sentences_dir``; Adapting-CLIP used a
phrase → type table over all images — a per-image lookup here).

Protocol: one sample per row; only the **first** query is used (Adapting-CLIP), one GT box; no
area filter; scored with strict ``IoU > thr`` (0.5 Flickr, 0.3 VG; ``ACC_THRESHOLDS``).

Malformed input: a CSV without the needed columns or whose quoting breaks the layout fails the load
naming the file and line; a row that is short, holds bytes that are not UTF-8, an empty or non-text
query, or a bbox that is not a list of four numbers (strings, null, NaN, inverted) is skipped. Each is
one line of ``DatasetIndex.skipped``.
"""
from __future__ import annotations

import ast
import csv
import re
from pathlib import Path
from typing import Any

from wwbl.errors import AnnotationError
from wwbl.readers.common import (
    DatasetIndex,
    GroundingSample,
    box_tensor,
    collect,
    first_existing,
    make_phrase,
    require_file,
)
from wwbl.readers.flickr30k import parse_sentences

HINT = "Get ds_csv_ann from the ZSGNet DATA_README (TheShadow29/zsgnet-pytorch) and the Flickr30k / VG images"

# name → (csv directory, csv file per split, image kind)
ZSG_SPLITS: dict[str, tuple[str, dict[str, str], str]] = {
    "zsg_flickr_all": ("flickr30k", {"train": "train", "val": "val", "test": "test"}, "flickr"),
    "zsg_flickr_other": ("flickr30k", {"train": "train", "val": "val", "test": "test"}, "flickr"),
    "zsg_flickr_s0": ("flickr30k_c0", {"train": "train", "val": "val", "test": "test"}, "flickr"),
    "zsg_flickr_s1": ("flickr30k_c1", {"train": "train", "val": "val", "test": "test"}, "flickr"),
    "zsg_vg_s0": ("vg_split", {"train": "train", "val": "val_balanced", "test": "test_balanced_c2"}, "vg"),
    "zsg_vg_s1": ("vg_split", {"train": "train", "val": "val_balanced", "test": "test_balanced_c3"}, "vg"),
}
ACC_THRESHOLDS = {"flickr": 0.5, "vg": 0.3}
_LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)  # what literal_eval raises
_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"


def acc_threshold(name: str) -> float:
    """ZSGNet's Acc@thr threshold for a split name: 0.5 on Flickr30k, 0.3 on Visual Genome."""
    return ACC_THRESHOLDS[ZSG_SPLITS[name][2]]


def parse_queries(text: str, where: str) -> list[str]:
    """A query cell: a plain string or a list literal of strings."""
    text = (text or "").strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except _LITERAL_ERRORS as err:
            raise AnnotationError(f"{where}: query list is not a valid literal: {text!r}") from err
        if not isinstance(value, list) or not value or not all(isinstance(q, str) for q in value):
            raise AnnotationError(f"{where}: query list must hold strings: {text!r}")
        return value
    return [text]


def parse_bbox(text: str, where: str) -> Any:
    try:
        value = ast.literal_eval((text or "").strip())
    except _LITERAL_ERRORS as err:
        raise AnnotationError(f"{where}: bbox is not a list literal: {text!r}") from err
    return box_tensor(value, where)


def _other_phrases(sentences_dir: Path, image_id: str) -> set[str]:
    mentions = parse_sentences(sentences_dir / f"{image_id}.txt")
    return {phrase for sentence in mentions for _, phrase, types in sentence if "other" in types}


def load_zsgnet(name: str, root: str | Path, split: str = "test", text_prefix: str = "", lowercase: bool = False,
                all_queries: bool = False, images_dir: str | Path | None = None,
                sentences_dir: str | Path | None = None) -> DatasetIndex[GroundingSample]:
    """Load a ZSGNet split by name (see ``ZSG_SPLITS`` and the module docstring).

    ``all_queries=True`` keeps every query of a row (heatmaps averaged) instead of the first.
    """
    if name not in ZSG_SPLITS:
        raise ValueError(f"unknown ZSGNet split {name!r}; expected one of {', '.join(ZSG_SPLITS)}")
    folder, files, kind = ZSG_SPLITS[name]
    if split not in files:
        raise ValueError(f"unknown split {split!r} for {name}; expected {', '.join(files)}")
    root = Path(root)
    csv_root = first_existing([root / "ds_csv_ann", root], "ZSGNet 'ds_csv_ann' directory", HINT)
    csv_path = require_file(csv_root / folder / "csv_dir" / f"{files[split]}.csv", f"ZSGNet {name} {split} CSV", HINT)
    image_root = Path(images_dir) if images_dir else first_existing(
        [root / "flickr" / "flickr30k_images", root / "flickr30k_images"] if kind == "flickr"
        else [root / "vg", root / "visual_genome"], f"{kind} images directory", HINT)
    if name == "zsg_flickr_other" and sentences_dir is None:
        raise ValueError("zsg_flickr_other needs sentences_dir= the Flickr30k Entities 'Sentences' directory")
    skipped: list[str] = []
    other_cache: dict[str, set[str]] = {}

    def build(where: str, row: dict[str, str]) -> list[GroundingSample]:
        if any(isinstance(v, str) and _UNDECODED.search(v) for v in row.values()):
            raise AnnotationError(f"{where}: not UTF-8 text")
        if kind == "flickr":
            image_file = (row.get("img_id") or "").strip()
            queries = parse_queries(row.get("query", ""), where)
        else:
            image_file = (row.get("image_fpath") or "").strip()
            queries = [row.get("phrase", "")]
        if not image_file:
            raise AnnotationError(f"{where}: no image column ({'img_id' if kind == 'flickr' else 'image_fpath'})")
        if kind == "flickr" and not image_file.endswith(".jpg"):
            image_file += ".jpg"
        image_id = Path(image_file).stem
        if name == "zsg_flickr_other":
            if image_id not in other_cache:
                other_cache[image_id] = _other_phrases(Path(sentences_dir), image_id)
            if queries[0] not in other_cache[image_id]:
                return []
        phrases = [make_phrase(q, where, text_prefix, lowercase) for q in (queries if all_queries else queries[:1])]
        return [GroundingSample(image_id=image_id, image_path=image_root / image_file, size_hw=None, phrases=phrases,
                                gt_boxes=parse_bbox(row.get("bbox", ""), where), item_id=where.rsplit(" ", 1)[-1])]

    with csv_path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        needed = {"bbox", "img_id", "query"} if kind == "flickr" else {"bbox", "image_fpath", "phrase"}
        try:
            if not needed <= set(reader.fieldnames or []):
                raise AnnotationError(f"'{csv_path}' header {reader.fieldnames} lacks the columns {sorted(needed)}")
            rows = ((f"'{csv_path}' line {reader.line_num} row{index}", row) for index, row in enumerate(reader))
            samples = collect(rows, build, skipped)
        except csv.Error as err:  # e.g. a NUL byte: the rows after it cannot be told apart
            raise AnnotationError(f"'{csv_path}' line {reader.line_num}: not a readable CSV row ({err})") from err
    return DatasetIndex(name=name, split=split, samples=samples, skipped=skipped)
