"""Grounding validation set for training: Flickr30k Entities read by :mod:`wwbl.readers.flickr30k`.

One item per image: ``{"image": 3×S×S in [0, 1], "size": (H, W) of the original image,
"phrases": [phrases of entity e], "boxes": [K_e×4 xyxy of entity e]}`` for the image's entities
(reference protocol: all mentions of an entity, maps averaged; the 5 % area filter). Phrases
carry no prompt prefix; the LightningModule adds its ``text_prefix``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from wwbl.errors import AnnotationError
from wwbl.images import load_image
from wwbl.readers.flickr30k import load_flickr30k

log = logging.getLogger(__name__)


class FlickrGroundingVal(Dataset):
    """Flickr30k Entities ``split`` grouped by image (see the module docstring)."""

    def __init__(self, root: str, split: str, transform: Callable[[Any], torch.Tensor],
                 max_items: int | None = None) -> None:
        index = load_flickr30k(root, split)
        by_image: OrderedDict[str, list] = OrderedDict()
        for sample in index.samples:
            by_image.setdefault(str(sample.image_path), []).append(sample)
        self.images = list(by_image.items())[:max_items]
        if not self.images:
            raise AnnotationError(f"Flickr30k Entities split '{split}' under '{root}' has no usable entity")
        self.skipped = index.skipped
        if self.skipped:
            log.warning("Flickr30k Entities %s: %d items skipped, e.g. %s", split, len(self.skipped), self.skipped[:3])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, samples = self.images[index]
        image = load_image(path)
        return {
            "image": self.transform(image),
            "size": (image.height, image.width),
            "phrases": [list(s.phrases) for s in samples],
            "boxes": [s.gt_boxes.float() for s in samples],
        }
