"""MS-COCO 2014 captions for WSG training (all train2014 images, as the released code).

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
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from wwbl.data.common import ImagePhraseDataset, check_images_exist, read_json, require_dir
from wwbl.errors import AnnotationError, MissingResourceError

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


def resolve_coco_image_dir(root: str, split: str, image_dir: str | None) -> str:
    """``image_dir`` if given, else ``<root>/<split>`` or ``<root>/images/<split>``."""
    if image_dir is not None:
        return require_dir(image_dir, f"COCO {split} image directory")
    for candidate in (os.path.join(root, split), os.path.join(root, "images", split)):
        if os.path.isdir(candidate):
            return candidate
    raise MissingResourceError(
        f"COCO {split} image directory not found: expected '{os.path.join(root, split)}' or "
        f"'{os.path.join(root, 'images', split)}' (see data/README.md)"
    )


def parse_coco_captions(data: Any, path: str) -> tuple[dict[int, str], dict[int, list[str]]]:
    """``(image id → file name, image id → captions)`` from a COCO captions JSON."""
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise AnnotationError(f"COCO captions file '{path}' needs the top-level keys 'images' and 'annotations'")
    files: dict[int, str] = {}
    captions: dict[int, list[str]] = defaultdict(list)
    try:
        for img in data["images"]:
            files[int(img["id"])] = str(img["file_name"])
        for ann in data["annotations"]:
            text = " ".join(str(ann["caption"]).split())
            if text:
                captions[int(ann["image_id"])].append(text)
    except (KeyError, TypeError, ValueError) as e:
        raise AnnotationError(f"malformed entry in COCO captions file '{path}': {e!r}") from e
    unknown = set(captions) - set(files)
    if unknown:
        raise AnnotationError(f"COCO captions file '{path}' has captions for {len(unknown)} image ids that "
                              f"are not in its 'images' list, e.g. {sorted(unknown)[:5]}")
    return files, dict(captions)


class CocoCaptions(ImagePhraseDataset):
    """COCO images with their captions; an item is ``{"image", "phrase"}``."""

    def __init__(self, root: str, transform: Callable[[Any], torch.Tensor], split: str = "train2014",
                 word_dropout: float = 0.0, image_dir: str | None = None, check_files: bool = True) -> None:
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        ann_path = os.path.join(root, "annotations", f"captions_{split}.json")
        files, captions = parse_coco_captions(read_json(ann_path, "COCO captions file"), ann_path)
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
