"""CUB-200-2011 for WSOL training and validation, read by :mod:`wwbl.readers.cub` (layout there).

The training text is either the category word for every image (``text="category"``,
``category="bird"``: the paper's "simply the name of the object") or the image's class name
(``text="class_name"``, e.g. "black footed albatross"). Training data is never silently thinned:
an image the reader cannot use raises here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from wwbl.data.common import ImagePhraseDataset, check_images_exist
from wwbl.errors import AnnotationError
from wwbl.images import load_image
from wwbl.readers.common import WSOLSample
from wwbl.readers.cub import load_cub

TEXT_MODES = ("category", "class_name")


def read_cub(root: str, split: str) -> list[WSOLSample]:
    """All samples of ``split`` ("train" or "test"); any unusable image or an empty split raises."""
    index = load_cub(root, split)
    if index.skipped:
        raise AnnotationError(f"CUB '{root}': {len(index.skipped)} {split} images cannot be used, e.g. "
                              f"{index.skipped[0]}")
    if not index.samples:
        raise AnnotationError(f"CUB '{root}' has no {split} images")
    return index.samples


def _phrase(sample: WSOLSample, text: str, category: str) -> str:
    if text not in TEXT_MODES:
        raise ValueError(f"text must be one of {TEXT_MODES}, got '{text}'")
    return category if text == "category" else sample.class_names[0]


class CUBTrain(ImagePhraseDataset):
    """CUB training images; an item is ``{"image", "phrase"}``."""

    def __init__(self, root: str, transform: Callable[[Any], torch.Tensor], text: str = "category",
                 category: str = "bird", check_files: bool = True) -> None:
        samples = read_cub(root, "train")
        paths = [str(s.image_path) for s in samples]
        if check_files:
            check_images_exist(paths, "CUB train")
        super().__init__(paths, [[_phrase(s, text, category)] for s in samples], transform)


class CUBEval(Dataset):
    """CUB test images for localisation; an item is ``{"image", "size" (H, W), "phrases": [[text]],
    "boxes": [1×4 xyxy in the original frame]}`` (one entity per image, the validation format of
    :mod:`wwbl.data.datamodules`). Evaluation items are never skipped: a bad image raises."""

    def __init__(self, root: str, transform: Callable[[Any], torch.Tensor], text: str = "category",
                 category: str = "bird", check_files: bool = True) -> None:
        self.records = read_cub(root, "test")
        if check_files:
            check_images_exist([str(r.image_path) for r in self.records], "CUB test")
        self.transform = transform
        self.text, self.category = text, category
        _phrase(self.records[0], text, category)  # validate the text mode early

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_image(record.image_path)
        return {
            "image": self.transform(image),
            "size": (image.height, image.width),
            "phrases": [[_phrase(record, self.text, self.category)]],
            "boxes": [record.gt_boxes],
        }
