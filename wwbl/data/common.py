"""Shared pieces of the training datasets: the image-file check and the image/phrase dataset.

Training items are ``{"image": 3×S×S float [0, 1], "phrase": str}``; the default collate
turns a batch into ``{"image": B×3×S×S, "phrase": list[str]}``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from wwbl.errors import AnnotationError, ImageLoadError, MissingResourceError
from wwbl.images import load_image

# How many following items a dataset tries when an image cannot be decoded.
MAX_LOAD_RETRIES = 10


def check_images_exist(paths: Sequence[str], what: str) -> None:
    """Raise MissingResourceError listing (some of) the image files that do not exist."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(f"'{p}'" for p in missing[:5])
        raise MissingResourceError(
            f"{len(missing)} of {len(paths)} {what} images are missing, e.g. {shown} (see data/README.md; "
            f"pass check_files=False to skip this check and report unreadable images while training)"
        )


def random_choice(items: Sequence[str]) -> str:
    """Uniform choice with torch's RNG (seeded per DataLoader worker by Lightning)."""
    return items[int(torch.randint(len(items), ()).item())]


class ImagePhraseDataset(Dataset):
    """Images each with a list of phrases; an item is the image and one random phrase.

    An image that cannot be decoded is reported (a warning naming the file) and the next
    image is used instead, so one corrupt file does not stop a training run.
    """

    def __init__(self, image_paths: Sequence[str], phrases: Sequence[Sequence[str]],
                 transform: Callable[[Any], torch.Tensor],
                 phrase_fn: Callable[[str], str] | None = None) -> None:
        if len(image_paths) != len(phrases):
            raise ValueError("one phrase list per image is required")
        if not image_paths:
            raise AnnotationError("the dataset holds no images with phrases")
        self.image_paths = list(image_paths)
        self.phrases = [list(p) for p in phrases]
        self.transform = transform
        self.phrase_fn = phrase_fn

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(MAX_LOAD_RETRIES):
            i = (index + attempt) % len(self)
            try:
                image = load_image(self.image_paths[i])
            except ImageLoadError as e:
                warnings.warn(f"skipping unreadable training image '{self.image_paths[i]}': {e}", stacklevel=2)
                continue
            phrase = random_choice(self.phrases[i])
            if self.phrase_fn is not None:
                phrase = self.phrase_fn(phrase)
            return {"image": self.transform(image), "phrase": phrase}
        raise ImageLoadError(f"{MAX_LOAD_RETRIES} consecutive images from '{self.image_paths[index]}' on "
                             f"could not be read; check the image directory")
