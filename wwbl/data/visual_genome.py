"""Visual Genome region phrases for WSG training, restricted to the MultiGrounding split.

Layout (the released code's)::

    <root>/VG_Annotations/region_descriptions.json   (raw VG v1.2)
    <root>/VG_Annotations/data_splits.pickle          (MultiGrounding; keys "train"/"test")
    <root>/VG_Images/<image id>.jpg

Instead of the pickle, ``split_file`` may be a JSON file (``{"train": [ids], ...}`` or a plain
list of ids) or a text file with one image id per line. The pickle is read with a restricted
unpickler that only admits builtin containers, strings and numbers, so a hostile file cannot
run code. As the reference, phrases with ``max_words`` (80) or more words are not used, and
phrases are lowercased.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections.abc import Callable
from typing import Any

import torch

from wwbl.data.common import ImagePhraseDataset, check_images_exist, read_json, require_file
from wwbl.errors import AnnotationError

log = logging.getLogger(__name__)

_SAFE_BUILTINS = {"dict", "list", "str", "int", "tuple", "set", "frozenset", "float"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only builtin containers/scalars; anything else is refused before it is created."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' from a split pickle")


def safe_load_pickle(path: str) -> Any:
    """Load a pickle of builtin containers, strings and numbers only."""
    require_file(path, "split pickle")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise AnnotationError(f"cannot read split pickle '{path}' safely: {e}; convert it to JSON "
                              f"(a dict of split name → list of image ids)") from e


def _to_ids(values: Any, path: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"split file '{path}' must list integer image ids: {e}") from e


def read_split_ids(path: str, split: str) -> list[int]:
    """Image ids of ``split`` from a MultiGrounding pickle, a JSON file or a text file of ids."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".pickle", ".pkl"):
        data = safe_load_pickle(path)
    elif ext == ".json":
        data = read_json(path, "split file")
    elif ext == ".txt":
        with open(require_file(path, "split file"), encoding="utf-8") as f:
            return _to_ids([line.strip() for line in f if line.strip()], path)
    else:
        raise AnnotationError(f"split file '{path}' must be .pickle/.pkl, .json or .txt")
    if isinstance(data, dict):
        if split not in data:
            raise AnnotationError(f"split file '{path}' has no split '{split}' (has {sorted(map(str, data))})")
        data = data[split]
    if not isinstance(data, (list, tuple, set)):
        raise AnnotationError(f"split file '{path}' must hold a list of image ids (or a dict of such lists)")
    return _to_ids(data, path)


def parse_region_descriptions(data: Any, path: str, max_words: int) -> tuple[dict[int, list[str]], int]:
    """``(image id → lowercased phrases, number of phrases dropped for length or emptiness)``."""
    if not isinstance(data, list):
        raise AnnotationError(f"'{path}' must be a list of per-image entries (VG region_descriptions.json)")
    phrases: dict[int, list[str]] = {}
    dropped = 0
    try:
        for entry in data:
            image_id = int(entry["id"] if "id" in entry else entry["image_id"])
            kept = []
            for region in entry["regions"]:
                words = str(region["phrase"]).lower().split()
                if 0 < len(words) < max_words:
                    kept.append(" ".join(words))
                else:
                    dropped += 1
            phrases[image_id] = kept
    except (KeyError, TypeError, ValueError) as e:
        raise AnnotationError(f"malformed entry in '{path}': {e!r}") from e
    return phrases, dropped


class VisualGenomeRegions(ImagePhraseDataset):
    """VG images of one split with their region phrases; an item is ``{"image", "phrase"}``."""

    def __init__(self, root: str, transform: Callable[[Any], torch.Tensor], split: str = "train",
                 split_file: str | None = None, max_words: int = 80, check_files: bool = True) -> None:
        ann_dir = os.path.join(root, "VG_Annotations")
        regions_path = os.path.join(ann_dir, "region_descriptions.json")
        split_path = split_file or os.path.join(ann_dir, "data_splits.pickle")
        split_ids = read_split_ids(split_path, split)
        phrases, dropped = parse_region_descriptions(
            read_json(regions_path, "VG region descriptions"), regions_path, max_words)
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
