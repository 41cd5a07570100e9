"""MS-COCO 2014 captions for WSG training (all train2014 images, as the released code), read by
:mod:`wwbl.readers.coco`.

Layout (COCO's own)::

    <root>/annotations/captions_train2014.json
    <root>/train2014/COCO_train2014_000000000009.jpg     (or <root>/images/train2014/, the reference's)

Each item is an image with one of its captions drawn uniformly. ``word_dropout`` (released
code: 0.2) drops each space-separated word independently; if every word is dropped one random
word is kept (the reference would then train on the bare prompt prefix), since CLIP cannot
ground an empty phrase. The "image of " prefix is added by the LightningModule
(``text_prefix``), where phrases enter CLIP.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from wwbl.data.common import ImagePhraseDataset, check_images_exist
from wwbl.readers.coco import HINT, parse_coco_captions, resolve_coco_image_dir
from wwbl.readers.common import read_json

log = logging.getLogger(__name__)


def drop_words(caption: str, p: float) -> str:
    """Drop each word with probability ``p``; at least one word is always kept."""
    words = caption.split()
    if p <= 0 or len(words) <= 1:
        return " ".join(words)
    keep = torch.rand(len(words)) >= p
    if not keep.any():
        keep[int(torch.randint(len(words), ()).item())] = True
    return " ".join(w for w, k in zip(words, keep.tolist()) if k)


class CocoCaptions(ImagePhraseDataset):
    """COCO images with their captions; an item is ``{"image", "phrase"}``."""

    def __init__(self, root: str, transform: Callable[[Any], torch.Tensor], split: str = "train2014",
                 word_dropout: float = 0.0, image_dir: str | None = None, check_files: bool = True) -> None:
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        ann_path = os.path.join(root, "annotations", f"captions_{split}.json")
        files, captions = parse_coco_captions(read_json(ann_path, "COCO captions file", HINT), ann_path)
        images_dir = resolve_coco_image_dir(root, split, image_dir)
        ids = sorted(files)
        without = [i for i in ids if i not in captions]
        if without:
            log.warning("COCO %s: %d of %d images have no caption and are not used (e.g. ids %s)",
                        split, len(without), len(ids), without[:5])
        ids = [i for i in ids if i in captions]
        paths = [os.path.join(images_dir, files[i]) for i in ids]
        if check_files:
            check_images_exist(paths, f"COCO {split}")
        self.word_dropout = word_dropout
        super().__init__(paths, [captions[i] for i in ids], transform,
                         phrase_fn=self._dropout if word_dropout > 0 else None)

    def _dropout(self, caption: str) -> str:
        return drop_words(caption, self.word_dropout)
