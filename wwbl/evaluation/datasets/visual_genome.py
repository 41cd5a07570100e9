"""Visual Genome test split of MultiGrounding (as used by WWbL, notes §5 and §6.1).

Files (under ``root``):

* ``VG_Annotations/region_descriptions.json`` — raw VG v1.2: a list of
  ``{"id": image id, "regions": [{"region_id", "image_id", "phrase", "x", "y", "width", "height"}, …]}``;
* ``VG_Annotations/data_splits.pickle`` — MultiGrounding's split, a dict with ``"train"`` and
  ``"test"`` lists of image ids (builtins-only unpickler; ``data_splits.json`` accepted instead);
* optional ``VG_Annotations/image_data.json`` (VG's ``[{"image_id"|"id", "width", "height"}]``) for
  image sizes; otherwise the sizes come from the image headers;
* images ``VG_Images/<id>.jpg``.

Protocol: one sample per region of a test image whose box ``[x, y, x + w, y + h]`` covers more
than ``min_area_fraction`` (5 %) of the image; the phrase is lowercased. The reference's VG
evaluation of g used a **double** ``"image of "`` prefix (loader + evaluation); reproduce it with
``text_prefix="image of "`` here plus the extractor's own ``"image of "``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from wwbl.errors import AnnotationError
from wwbl.evaluation.datasets.common import (
    DatasetIndex,
    GroundingSample,
    box_tensor,
    collect,
    first_existing,
    image_size_hw,
    make_phrase,
    passes_area_filter,
    pickle_or_json,
    read_json,
    read_pickle_or_json,
    require_file,
)

HINT = ("Get region_descriptions.json (and image_data.json) from visualgenome.org, data_splits.pickle from "
        "MultiGrounding, and the images into VG_Images/")


def _image_sizes(ann_dir: Path) -> dict[str, tuple[int, int]]:
    path = ann_dir / "image_data.json"
    if not path.is_file():
        return {}
    sizes = {}
    for index, item in enumerate(read_json(path, "Visual Genome image_data.json")):
        try:
            key = item.get("image_id", item.get("id"))
            sizes[str(key)] = (int(item["height"]), int(item["width"]))
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise AnnotationError(f"'{path}' entry {index}: needs image_id/id, width and height") from err
    return sizes


def _split_ids(ann_dir: Path, split: str) -> set[str]:
    splits = read_pickle_or_json(pickle_or_json(ann_dir, "data_splits"), "MultiGrounding VG split")
    if not isinstance(splits, dict) or split not in splits:
        raise AnnotationError(f"MultiGrounding VG split file in '{ann_dir}' has no key {split!r}")
    return {str(i) for i in splits[split]}


def region_box(region: Any, where: str) -> tuple[str, Any]:
    """``(phrase, [x, y, x + w, y + h])`` of one VG region; AnnotationError if malformed."""
    try:
        x, y, w, h = (float(region[k]) for k in ("x", "y", "width", "height"))
        return region["phrase"], box_tensor([x, y, x + w, y + h], where)
    except (KeyError, TypeError, ValueError) as err:
        raise AnnotationError(f"{where}: needs phrase, x, y, width, height") from err


def load_visual_genome(root: str | Path, split: str = "test", min_area_fraction: float | None = 0.05,
                       text_prefix: str = "", lowercase: bool = True,
                       images_dir: str | Path | None = None) -> DatasetIndex[GroundingSample]:
    """Load the MultiGrounding VG split (see the module docstring for layout and protocol)."""
    root = Path(root)
    ann_dir = first_existing([root / "VG_Annotations", root], "Visual Genome annotations directory", HINT)
    wanted = _split_ids(ann_dir, split)
    regions_file = require_file(ann_dir / "region_descriptions.json", "Visual Genome region descriptions", HINT)
    entries = read_json(regions_file, "Visual Genome region descriptions")
    if not isinstance(entries, list):
        raise AnnotationError(f"'{regions_file}' must hold a list of images")
    sizes = _image_sizes(ann_dir)
    image_root = Path(images_dir) if images_dir else first_existing(
        [root / "VG_Images", root / "images"], "Visual Genome images directory", HINT)
    skipped: list[str] = []

    def keyed() -> Any:
        for index, entry in enumerate(entries):
            key = entry.get("id", entry.get("image_id")) if isinstance(entry, dict) else None
            if key is None:
                skipped.append(f"'{regions_file}' entry {index}: no image id")
            elif str(key) in wanted:
                yield str(key), entry

    def build(image_id: str, entry: dict) -> list[GroundingSample]:
        path = image_root / f"{image_id}.jpg"
        size_hw = sizes.get(image_id) or image_size_hw(path)
        samples = []
        for index, region in enumerate(entry.get("regions") or []):
            where = f"'{regions_file}' image {image_id} region {index}"
            try:  # a bad region is reported alone; the image's other regions stay
                phrase, box = region_box(region, where)
                text = make_phrase(phrase, where, text_prefix, lowercase)
            except AnnotationError as err:
                skipped.append(str(err))
                continue
            if passes_area_filter(box[0], size_hw, min_area_fraction):
                samples.append(GroundingSample(image_id=image_id, image_path=path, size_hw=size_hw, phrases=[text],
                                               gt_boxes=box, item_id=f"{image_id}/{region.get('region_id', index)}"))
        return samples

    samples = collect(keyed(), build, skipped)
    return DatasetIndex(name="vg", split=split, samples=samples, skipped=skipped)
