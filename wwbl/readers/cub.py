"""CUB-200-2011 in its publisher's layout: the one reader, for WSOL evaluation and training.

Files (``root`` or ``root/CUB_200_2011``)::

    images.txt               "<image id> <relative path>"
    image_class_labels.txt   "<image id> <class id>"          (1-based)
    classes.txt              "<class id> <NNN.Class_Name>"
    train_test_split.txt     "<image id> <1 = train, 0 = test>"
    bounding_boxes.txt       "<image id> <x> <y> <width> <height>"
    images/<relative path>

``test`` = ``is_train == 0`` (5,794 images). Boxes stay in the stored pixel coordinates
(``[x, y, x + w, y + h]``, no offset). A malformed line (too few fields, a non-integer or repeated
id, bytes that are not UTF-8) or an empty file fails its whole file; an image whose label, split or
box is missing or invalid (not numbers, NaN, non-positive size) is reported in ``skipped`` (training,
which must not be silently thinned, raises on it instead).
"""
from __future__ import annotations

from pathlib import Path

from wwbl.boxes import from_coco_xywh
from wwbl.errors import AnnotationError
from wwbl.readers.common import DatasetIndex, WSOLSample, box_tensor, collect, first_existing, read_text, require_file

HINT = "Get CUB_200_2011.tgz from the Caltech-UCSD Birds site"
SPLITS = ("train", "test")


def read_table(path: Path, what: str, columns: int) -> dict[str, list[str]]:
    """``id → remaining fields`` of a whitespace-separated CUB file (the last field may hold spaces)."""
    require_file(path, what, HINT)
    rows: dict[str, list[str]] = {}
    for number, line in enumerate(read_text(path, what).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1)
        if len(fields) != columns or not (fields[0].isascii() and fields[0].isdigit()):
            raise AnnotationError(f"{what} '{path}' line {number}: expected {columns} fields starting with an "
                                  f"integer id, got {line.strip()!r}")
        if fields[0] in rows:
            raise AnnotationError(f"{what} '{path}' line {number}: duplicate id {fields[0]}")
        rows[fields[0]] = [f.strip() for f in fields[1:]]
    if not rows:
        raise AnnotationError(f"{what} '{path}' is empty")
    return rows


def cub_class_name(folder: str) -> str:
    """``'001.Black_footed_Albatross'`` → ``'black footed albatross'``."""
    name = folder.split(".", 1)[1] if "." in folder else folder
    return " ".join(name.replace("_", " ").lower().split())


def load_cub(root: str | Path, split: str = "test") -> DatasetIndex[WSOLSample]:
    """CUB-200-2011 boxes and classes of ``split``, in image-id order (see the module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"unknown CUB split {split!r}; expected train or test")
    root = first_existing([Path(root) / "CUB_200_2011", Path(root)], "CUB-200-2011 directory", HINT)
    images = read_table(root / "images.txt", "CUB images.txt", 2)
    labels = read_table(root / "image_class_labels.txt", "CUB image_class_labels.txt", 2)
    classes = read_table(root / "classes.txt", "CUB classes.txt", 2)
    is_train = read_table(root / "train_test_split.txt", "CUB train_test_split.txt", 2)
    boxes = read_table(root / "bounding_boxes.txt", "CUB bounding_boxes.txt", 5)
    class_ids = sorted(classes, key=int)
    class_names = [(cub_class_name(classes[c][0]),) for c in class_ids]
    index_of = {c: i for i, c in enumerate(class_ids)}
    wanted = "1" if split == "train" else "0"
    skipped: list[str] = []

    def build(image_id: str, path: list[str]) -> list[WSOLSample]:
        where = f"CUB image {image_id}"
        for table, name in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt"),
                            (boxes, "bounding_boxes.txt")):
            if image_id not in table:
                raise AnnotationError(f"{where} is missing from '{root / name}'")
        if is_train[image_id][0] != wanted:
            return []
        if labels[image_id][0] not in index_of:
            raise AnnotationError(f"{where}: class id {labels[image_id][0]} is not in '{root / 'classes.txt'}'")
        try:
            xywh = [float(v) for v in boxes[image_id]]
        except ValueError as err:
            raise AnnotationError(f"{where}: box in bounding_boxes.txt is not numeric: {boxes[image_id]}") from err
        if not xywh[2] > 0 or not xywh[3] > 0:  # also NaN
            raise AnnotationError(f"{where}: box in bounding_boxes.txt has non-positive size: {boxes[image_id]}")
        label = index_of[labels[image_id][0]]
        return [WSOLSample(image_id=image_id, image_path=root / "images" / path[0], size_hw=None, label=label,
                           class_names=class_names[label], gt_boxes=box_tensor(from_coco_xywh(xywh), where))]

    items = sorted(images.items(), key=lambda item: int(item[0]))
    samples = collect(items, build, skipped)
    return DatasetIndex(name="cub", split=split, samples=samples, skipped=skipped, class_names=class_names)
