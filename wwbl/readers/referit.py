"""ReferIt (refclef, UNC split) as prepared by MultiGrounding's ``Data()._referit``.

Files (under ``root``):

* ``annotations/<split>.pickle`` — a dict ``str(image id) → {"annotations": [{"query": str,
  "bbox": [[x1, y1, x2, y2]], …}, …]}`` with one entry per unique query. It is read with a
  builtins-only unpickler (no code runs); ``annotations/<split>.json`` with the same structure is
  accepted instead.
* images ``ReferIt_Images/<id // 1000 as two digits>/images/<id>.jpg`` (the SAIAPR TC-12 layout).

Protocol (reference, REFERENCE.md W§6.1): one sample per query; boxes covering at most
``min_area_fraction`` (5 %) of the image are dropped, and a query with no box left is dropped.
The image size comes from the image header. The reference gave ReferIt queries a single
``"image of "`` prefix at evaluation time (an extractor option here); ``text_prefix`` adds one in
the loader. Queries are not lowercased by default (the reference used them as stored).

Malformed input: an unreadable table (not a pickle / JSON, not a dict, a key repeated in the JSON) fails
the load naming the file; an image entry that is not ``{"annotations": [...]}``, whose id is not an
integer or whose image is missing or unreadable is skipped; an annotation without a text query or with
invalid boxes (not numbers, NaN, inverted) is skipped alone. Each is one line of ``DatasetIndex.skipped``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from wwbl.errors import AnnotationError
from wwbl.readers.common import (
    DatasetIndex,
    GroundingSample,
    box_tensor,
    collect,
    first_existing,
    image_size_hw,
    make_phrase,
    passes_area_filter,
    pickle_or_json,
    read_pickle_or_json,
)

HINT = ("Produce annotations/<split>.pickle with MultiGrounding's data preparation (refclef, UNC split) "
        "and place the SAIAPR TC-12 images under ReferIt_Images/")


def referit_image_path(images_dir: Path, image_id: str) -> Path:
    """``<images_dir>/<id // 1000, two digits>/images/<id>.jpg``."""
    try:
        folder = f"{int(image_id) // 1000:02d}"
    except ValueError as err:
        raise AnnotationError(f"image id {image_id!r} is not an integer SAIAPR id") from err
    return images_dir / folder / "images" / f"{image_id}.jpg"


def load_referit(root: str | Path, split: str = "test", min_area_fraction: float | None = 0.05,
                 text_prefix: str = "", lowercase: bool = False,
                 images_dir: str | Path | None = None) -> DatasetIndex[GroundingSample]:
    """Load a ReferIt split (see the module docstring for layout and protocol)."""
    root = Path(root)
    ann_dir = first_existing([root / "annotations", root], "ReferIt annotations directory", HINT)
    table = read_pickle_or_json(pickle_or_json(ann_dir, split), f"ReferIt '{split}' annotations")
    if not isinstance(table, dict):
        raise AnnotationError(f"ReferIt '{split}' annotations must be a dict image id → entry, got {type(table).__name__}")
    image_root = Path(images_dir) if images_dir else first_existing(
        [root / "ReferIt_Images", root / "images"], "ReferIt images directory", HINT)
    skipped: list[str] = []

    def build(image_id: str, entry: Any) -> list[GroundingSample]:
        where = f"ReferIt '{split}' key {image_id!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations"), list):
            raise AnnotationError(f"{where}: expected {{'annotations': [...]}}")
        path = referit_image_path(image_root, image_id)
        size_hw = image_size_hw(path)
        samples = []
        for index, ann in enumerate(entry["annotations"]):
            try:  # a bad annotation is reported alone; the image's other queries stay
                sample = _query_sample(ann, f"{where} annotation {index}", image_id, index, path, size_hw)
            except AnnotationError as err:
                skipped.append(str(err))
                continue
            if sample is not None:
                samples.append(sample)
        return samples

    def _query_sample(ann: Any, spot: str, image_id: str, index: int, path: Path,
                      size_hw: tuple[int, int]) -> GroundingSample | None:
        if not isinstance(ann, dict) or "query" not in ann or "bbox" not in ann:
            raise AnnotationError(f"{spot}: needs 'query' and 'bbox'")
        boxes = box_tensor(ann["bbox"], spot)
        phrase = make_phrase(ann["query"], spot, text_prefix, lowercase)
        kept = boxes[[passes_area_filter(b, size_hw, min_area_fraction) for b in boxes]]
        if len(kept) == 0:
            return None
        return GroundingSample(image_id=image_id, image_path=path, size_hw=size_hw, phrases=[phrase],
                               gt_boxes=kept, item_id=f"{image_id}/{index}")

    samples = collect(((str(k), v) for k, v in table.items()), build, skipped)
    return DatasetIndex(name="referit", split=split, samples=samples, skipped=skipped)
