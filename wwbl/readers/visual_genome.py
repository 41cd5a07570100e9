"""Visual Genome in the MultiGrounding layout: the one reader of its split file and region
descriptions, for the WWbL test protocol (REFERENCE.md W§5 and W§6.1) and for training phrases
(``parse_region_descriptions``, used by ``wwbl.data.VisualGenomeRegions``).

Files (under ``root``):

* ``VG_Annotations/region_descriptions.json`` — raw VG v1.2: a list of
  ``{"id": image id, "regions": [{"region_id", "image_id", "phrase", "x", "y", "width", "height"}, …]}``;
* ``VG_Annotations/data_splits.pickle`` — MultiGrounding's split, a dict with ``"train"`` and
  ``"test"`` lists of image ids (builtins-only unpickler; ``data_splits.json`` accepted instead;
  ``read_split_file`` also takes a JSON list or a text file of ids);
* optional ``VG_Annotations/image_data.json`` (VG's ``[{"image_id"|"id", "width", "height"}]``) for
  image sizes; otherwise the sizes come from the image headers;
* images ``VG_Images/<id>.jpg``.

Protocol: one sample per region of a test image whose box ``[x, y, x + w, y + h]`` covers more
than ``min_area_fraction`` (5 %) of the image; the phrase is lowercased. The reference's VG
evaluation of g used a **double** ``"image of "`` prefix (loader + evaluation); reproduce it with
``text_prefix="image of "`` here plus the extractor's own ``"image of "``.

Malformed input: an unreadable split file, region_descriptions.json or image_data.json (not JSON, not
UTF-8, wrong top-level type, a key repeated in one object, an image_data entry without a positive
integer size) fails the load naming the file and entry; an image entry without an id or a regions list,
or whose image is missing, is skipped; a region without a text phrase or with an invalid box (strings,
null, NaN, negative size) is skipped alone; a region id given twice for one image is kept once. Each is
one line of ``DatasetIndex.skipped``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from wwbl.boxes import from_coco_xywh
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
    positive_size,
    read_json,
    read_pickle_or_json,
    read_split_ids,
)

HINT = ("Get region_descriptions.json (and image_data.json) from visualgenome.org, data_splits.pickle from "
        "MultiGrounding, and the images into VG_Images/")


def _image_sizes(ann_dir: Path) -> dict[str, tuple[int, int]]:
    path = ann_dir / "image_data.json"
    if not path.is_file():
        return {}
    items = read_json(path, "Visual Genome image_data.json")
    if not isinstance(items, list):
        raise AnnotationError(f"'{path}' must hold a list of {{image_id, width, height}} entries")
    sizes = {}
    for index, item in enumerate(items):
        where = f"'{path}' entry {index}"
        key = item.get("image_id", item.get("id")) if isinstance(item, dict) else None
        if key is None or "height" not in item or "width" not in item:
            raise AnnotationError(f"{where}: needs image_id/id, width and height")
        sizes[str(key)] = positive_size(item["height"], item["width"], where)
    return sizes


def _to_ids(values: Any, path: Path) -> list[int]:
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError) as err:
        raise AnnotationError(f"split file '{path}' must list integer image ids: {err}") from err


def read_split_file(path: str | Path, split: str) -> list[int]:
    """Image ids of ``split`` from a MultiGrounding pickle, a JSON file (a dict of split name → ids,
    or one list of ids) or a text file of ids (one per line)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".txt":
        return _to_ids(read_split_ids(path, "split file"), path)
    if ext not in (".pickle", ".pkl", ".json"):
        raise AnnotationError(f"split file '{path}' must be .pickle/.pkl, .json or .txt")
    data = read_pickle_or_json(path, "MultiGrounding VG split")
    if isinstance(data, dict):
        if split not in data:
            raise AnnotationError(f"split file '{path}' has no split '{split}' (has {sorted(map(str, data))})")
        data = data[split]
    if not isinstance(data, (list, tuple, set)):
        raise AnnotationError(f"split file '{path}' must hold a list of image ids (or a dict of such lists)")
    return _to_ids(data, path)


def entry_image_id(entry: Any) -> str | None:
    """The image id of one region_descriptions.json entry (``id`` or ``image_id``), if any."""
    key = entry.get("id", entry.get("image_id")) if isinstance(entry, dict) else None
    return None if key is None else str(key)


def read_region_descriptions(path: str | Path) -> list[Any]:
    """The per-image entries of VG's region_descriptions.json."""
    entries = read_json(path, "Visual Genome region descriptions", HINT)
    if not isinstance(entries, list):
        raise AnnotationError(f"'{path}' must hold a list of per-image entries (VG region_descriptions.json)")
    return entries


def parse_region_descriptions(entries: list[Any], path: str | Path, max_words: int) -> tuple[dict[int, list[str]], int]:
    """Training phrases: ``(image id → lowercased phrases, number dropped for length or emptiness)``.

    As the released code, phrases with ``max_words`` or more words are not used; a malformed entry
    fails the whole file (training data is not silently thinned)."""
    phrases: dict[int, list[str]] = {}
    dropped = 0
    try:
        for entry in entries:
            image_id = entry_image_id(entry)
            if image_id is None:
                raise KeyError("id")
            kept = []
            for region in entry["regions"]:
                words = str(region["phrase"]).lower().split()
                if 0 < len(words) < max_words:
                    kept.append(" ".join(words))
                else:
                    dropped += 1
            phrases[int(image_id)] = kept
    except (KeyError, TypeError, ValueError) as err:
        raise AnnotationError(f"malformed entry in '{path}': {err!r}") from err
    return phrases, dropped


def region_box(region: Any, where: str) -> tuple[str, Any]:
    """``(phrase, [x, y, x + w, y + h])`` of one VG region; AnnotationError if malformed."""
    try:
        values = [region[k] for k in ("phrase", "x", "y", "width", "height")]
    except (KeyError, TypeError, IndexError) as err:
        raise AnnotationError(f"{where}: needs phrase, x, y, width, height") from err
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values[1:]):
        raise AnnotationError(f"{where}: x, y, width, height must be numbers, got {values[1:]!r}")
    return values[0], box_tensor(from_coco_xywh([float(v) for v in values[1:]]), where)


def load_visual_genome(root: str | Path, split: str = "test", min_area_fraction: float | None = 0.05,
                       text_prefix: str = "", lowercase: bool = True,
                       images_dir: str | Path | None = None) -> DatasetIndex[GroundingSample]:
    """Load the MultiGrounding VG split (see the module docstring for layout and protocol)."""
    root = Path(root)
    ann_dir = first_existing([root / "VG_Annotations", root], "Visual Genome annotations directory", HINT)
    wanted = {str(i) for i in read_split_file(pickle_or_json(ann_dir, "data_splits"), split)}
    regions_file = ann_dir / "region_descriptions.json"
    entries = read_region_descriptions(regions_file)
    sizes = _image_sizes(ann_dir)
    image_root = Path(images_dir) if images_dir else first_existing(
        [root / "VG_Images", root / "images"], "Visual Genome images directory", HINT)
    skipped: list[str] = []

    def keyed() -> Any:
        for index, entry in enumerate(entries):
            key = entry_image_id(entry)
            if key is None:
                skipped.append(f"'{regions_file}' entry {index}: no image id")
            elif key in wanted:
                yield key, entry

    def build(image_id: str, entry: dict) -> list[GroundingSample]:
        path = image_root / f"{image_id}.jpg"
        size_hw = sizes.get(image_id) or image_size_hw(path)
        regions = entry.get("regions")
        if not isinstance(regions, list):
            raise AnnotationError(f"'{regions_file}' image {image_id}: 'regions' is not a list")
        samples = []
        for index, region in enumerate(regions):
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
