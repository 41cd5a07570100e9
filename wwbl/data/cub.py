"""CUB-200-2011 for WSOL, read from its published layout::

    <root>/images.txt               "<image id> <relative path>"
    <root>/image_class_labels.txt   "<image id> <class id>"
    <root>/classes.txt              "<class id> <NNN.Class_Name>"
    <root>/train_test_split.txt     "<image id> <1 = train, 0 = test>"
    <root>/bounding_boxes.txt       "<image id> <x> <y> <width> <height>"
    <root>/images/<relative path>

The training text is either the category word for every image (``text="category"``,
``category="bird"``: the paper's "simply the name of the object") or the image's class name
(``text="class_name"``, e.g. "black footed albatross").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from wwbl.data.common import ImagePhraseDataset, check_images_exist, require_file
from wwbl.errors import AnnotationError
from wwbl.images import load_image

TEXT_MODES = ("category", "class_name")


def read_table(path: str, what: str, n_fields: int) -> dict[int, list[str]]:
    """``id → remaining fields`` of a whitespace-separated CUB file, validating every line."""
    rows: dict[int, list[str]] = {}
    with open(require_file(path, what), encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split(maxsplit=n_fields - 1) if n_fields == 2 else line.split()
            if len(fields) != n_fields or not fields[0].isdigit():
                raise AnnotationError(f"{what} '{path}' line {line_no}: expected {n_fields} fields "
                                      f"starting with an integer id, got {line.strip()!r}")
            if int(fields[0]) in rows:
                raise AnnotationError(f"{what} '{path}' line {line_no}: duplicate id {fields[0]}")
            rows[int(fields[0])] = [x.strip() for x in fields[1:]]
    return rows


def class_display_name(folder_name: str) -> str:
    """"001.Black_footed_Albatross" → "black footed albatross"."""
    name = folder_name.split(".", 1)[1] if "." in folder_name else folder_name
    return " ".join(name.replace("_", " ").lower().split())


@dataclass(frozen=True)
class CUBRecord:
    path: str
    class_name: str
    box_xyxy: tuple[float, float, float, float]


def read_cub(root: str, split: str) -> list[CUBRecord]:
    """All records of ``split`` ("train" or "test") with their class name and GT box."""
    if split not in ("train", "test"):
        raise ValueError(f"CUB split must be 'train' or 'test', got '{split}'")
    images = read_table(os.path.join(root, "images.txt"), "CUB image list", 2)
    labels = read_table(os.path.join(root, "image_class_labels.txt"), "CUB class labels", 2)
    classes = read_table(os.path.join(root, "classes.txt"), "CUB class names", 2)
    splits = read_table(os.path.join(root, "train_test_split.txt"), "CUB train/test split", 2)
    boxes = read_table(os.path.join(root, "bounding_boxes.txt"), "CUB bounding boxes", 5)
    want = "1" if split == "train" else "0"
    records = []
    for image_id, (rel_path,) in sorted(images.items()):
        for table, name in ((labels, "image_class_labels.txt"), (splits, "train_test_split.txt"),
                            (boxes, "bounding_boxes.txt")):
            if image_id not in table:
                raise AnnotationError(f"CUB image id {image_id} is missing from '{os.path.join(root, name)}'")
        if splits[image_id][0] != want:
            continue
        class_id = int(labels[image_id][0])
        if class_id not in classes:
            raise AnnotationError(f"CUB class id {class_id} is not in '{os.path.join(root, 'classes.txt')}'")
        try:
            x, y, w, h = (float(v) for v in boxes[image_id])
        except ValueError as e:
            raise AnnotationError(f"CUB box of image {image_id} in bounding_boxes.txt is not numeric") from e
        if w <= 0 or h <= 0:
            raise AnnotationError(f"CUB box of image {image_id} in bounding_boxes.txt has non-positive size")
        records.append(CUBRecord(os.path.join(root, "images", rel_path),
                                 class_display_name(classes[class_id][0]), (x, y, x + w, y + h)))
    if not records:
        raise AnnotationError(f"CUB '{root}' has no {split} images")
    return records


def _phrase(record: CUBRecord, text: str, category: str) -> str:
    if text not in TEXT_MODES:
        raise ValueError(f"text must be one of {TEXT_MODES}, got '{text}'")
    return category if text == "category" else record.class_name


class CUBTrain(ImagePhraseDataset):
    """CUB training images; an item is ``{"image", "phrase"}``."""

    def __init__(self, root: str, transform: Callable[[Any], torch.Tensor], text: str = "category",
                 category: str = "bird", check_files: bool = True) -> None:
        records = read_cub(root, "train")
        if check_files:
            check_images_exist([r.path for r in records], "CUB train")
        super().__init__([r.path for r in records], [[_phrase(r, text, category)] for r in records], transform)


class CUBEval(Dataset):
    """CUB test images for localisation; an item is ``{"image", "size" (H, W), "phrases": [[text]],
    "boxes": [1×4 xyxy in the original frame]}`` (one entity per image, the validation format of
    :mod:`wwbl.data.datamodules`). Evaluation items are never skipped: a bad image raises."""

    def __init__(self, root: str, transform: Callable[[Any], torch.Tensor], text: str = "category",
                 category: str = "bird", check_files: bool = True) -> None:
        self.records = read_cub(root, "test")
        if check_files:
            check_images_exist([r.path for r in self.records], "CUB test")
        self.transform = transform
        self.text, self.category = text, category
        _phrase(self.records[0], text, category)  # validate the text mode early

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_image(record.path)
        return {
            "image": self.transform(image),
            "size": (image.height, image.width),
            "phrases": [[_phrase(record, self.text, self.category)]],
            "boxes": [torch.tensor([record.box_xyxy], dtype=torch.float32)],
        }
