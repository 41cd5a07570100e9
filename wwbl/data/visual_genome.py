"""Visual Genome region phrases for WSG training, restricted to the MultiGrounding split.

Layout (the released code's)::

    <root>/VG_Annotations/region_descriptions.json   (raw VG v1.2)
    <root>/VG_Annotations/data_splits.pickle          (MultiGrounding; keys "train"/"test")
    <root>/VG_Images/<image id>.jpg

Instead of the pickle, ``split_file`` may be a JSON file (``{"train": [ids], ...}`` or a plain
list of ids) or a text file with one image id per line. The files are read by
:mod:`wwbl.readers.visual_genome` (the pickle with the restricted unpickler of
:mod:`wwbl.readers.common`, so a hostile file cannot run code). As the reference, phrases with
``max_words`` (80) or more words are not used, and phrases are lowercased.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from wwbl.data.common import ImagePhraseDataset, check_images_exist
from wwbl.errors import AnnotationError
from wwbl.readers.common import pickle_or_json
from wwbl.readers.visual_genome import parse_region_descriptions, read_region_descriptions, read_split_file

log = logging.getLogger(__name__)


class VisualGenomeRegions(ImagePhraseDataset):
    """VG images of one split with their region phrases; an item is ``{"image", "phrase"}``."""

    def __init__(self, root: str, transform: Callable[[Any], torch.Tensor], split: str = "train",
                 split_file: str | None = None, max_words: int = 80, check_files: bool = True) -> None:
        ann_dir = os.path.join(root, "VG_Annotations")
        regions_path = os.path.join(ann_dir, "region_descriptions.json")
        split_path = split_file or str(pickle_or_json(Path(ann_dir), "data_splits"))
        split_ids = read_split_file(split_path, split)
        phrases, dropped = parse_region_descriptions(read_region_descriptions(regions_path), regions_path, max_words)
        if dropped:
            log.warning("Visual Genome: %d region phrases are empty or have >= %d words and are not used",
                        dropped, max_words)
        unknown = [i for i in split_ids if i not in phrases]
        if unknown:
            raise AnnotationError(f"{len(unknown)} image ids of split '{split}' in '{split_path}' are not in "
                                  f"'{regions_path}', e.g. {unknown[:5]}")
        ids = [i for i in split_ids if phrases[i]]
        if len(ids) < len(split_ids):
            log.warning("Visual Genome %s: %d images have no usable phrase and are not used",
                        split, len(split_ids) - len(ids))
        paths = [os.path.join(root, "VG_Images", f"{i}.jpg") for i in ids]
        if check_files:
            check_images_exist(paths, f"Visual Genome {split}")
        super().__init__(paths, [phrases[i] for i in ids], transform)
