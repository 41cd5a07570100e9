"""Sample types and helpers shared by the dataset readers (benchmarks and training data alike).

Every benchmark loader returns a :class:`DatasetIndex`: the samples in file order plus ``skipped``,
one ``"where: why"`` line per annotation item that could not be used (malformed entry, unreadable
image header). Missing files raise :class:`wwbl.errors.MissingResourceError` naming them; a
malformed whole file raises :class:`wwbl.errors.AnnotationError` naming the file and the entry.
Boxes are absolute-pixel ``xyxy`` float tensors in the original image frame. This module holds the
one ``require_file`` / ``read_json`` and the one restricted unpickler of wwbl.
"""
from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

import torch
from PIL import Image
from torch import Tensor

from wwbl.errors import AnnotationError, MissingResourceError


@dataclass(frozen=True)
class GroundingSample:
    """One ground-truth item of a phrase-grounding benchmark.

    ``phrases`` are all the phrases that refer to the item (a Flickr30k entity has one per
    mention; heatmaps are averaged over them, as the reference); ``gt_boxes`` ``(K, 4)`` all its
    boxes (the metrics take their union or any of them). ``size_hw`` is ``None`` when the
    annotation does not record it (the evaluator reads it from the image).
    """

    image_id: str
    image_path: Path
    size_hw: tuple[int, int] | None
    phrases: list[str]
    gt_boxes: Tensor
    item_id: str
    category: str | None = None


@dataclass(frozen=True)
class WSOLSample:
    """One image of a WSOL benchmark: its class (0-based ``label``), the class's names (the first
    is the display name, the rest synonyms) and the GT boxes ``(K, 4)``."""

    image_id: str
    image_path: Path
    size_hw: tuple[int, int] | None
    label: int
    class_names: tuple[str, ...]
    gt_boxes: Tensor


@dataclass(frozen=True)
class MaskSample:
    """One image with a binary GT mask (``mask_path``) and the text naming the masked object."""

    image_id: str
    image_path: Path
    mask_path: Path
    label: str
    size_hw: tuple[int, int] | None = None


S = TypeVar("S")


@dataclass
class DatasetIndex(Generic[S]):
    """A loaded benchmark split: ``samples`` plus the ``skipped`` items with reasons."""

    name: str
    split: str
    samples: list[S]
    skipped: list[str] = field(default_factory=list)
    class_names: list[tuple[str, ...]] | None = None  # WSOL: all classes, index = label

    def __len__(self) -> int:
        return len(self.samples)


# ----------------------------------------------------------------------------- files


def require_file(path: str | Path, what: str, hint: str = "") -> Path:
    """``path`` if it is a file, else MissingResourceError naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(f"{what} not found: expected the file '{path}'{'. ' + hint if hint else ''}")
    return path


def require_dir(path: str | Path, what: str, hint: str = "") -> Path:
    """``path`` if it is a directory, else MissingResourceError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise MissingResourceError(f"{what} not found: expected the directory '{path}'{'. ' + hint if hint else ''}")
    return path


def first_existing(candidates: Sequence[Path], what: str, hint: str = "", is_dir: bool = True) -> Path:
    """The first candidate that exists, else MissingResourceError listing all of them."""
    for candidate in candidates:
        if (candidate.is_dir() if is_dir else candidate.is_file()):
            return candidate
    listed = ", ".join(f"'{c}'" for c in candidates)
    kind = "directory" if is_dir else "file"
    raise MissingResourceError(f"{what} not found: expected a {kind} at one of {listed}{'. ' + hint if hint else ''}")


def read_split_ids(path: Path, what: str) -> list[str]:
    """Non-empty stripped lines of a split list (one image id per line)."""
    require_file(path, what)
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_json(path: str | Path, what: str, hint: str = "") -> Any:
    """A JSON file; a missing file or invalid JSON raises an error naming the file."""
    path = require_file(path, what, hint)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{what} '{path}' is not valid JSON: {err}") from err


_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool", "complex"}


class _BuiltinsOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and scalars only; any other class is refused (no code runs)."""

    def __init__(self, file: io.BufferedIOBase, source: Path) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        raise AnnotationError(
            f"'{self.source}': refusing to load the class {module}.{name}; only plain Python containers are "
            "read from pickles, so a hostile file cannot run code. Convert the file to the equivalent JSON "
            "(same structure) and pass that instead.")


def read_pickle_or_json(path: str | Path, what: str) -> Any:
    """A ``.pickle`` read with the builtins-only unpickler, or a ``.json`` with the same layout."""
    path = require_file(path, what)
    if path.suffix == ".json":
        return read_json(path, what)
    try:
        with path.open("rb") as f:
            return _BuiltinsOnlyUnpickler(f, path).load()
    except AnnotationError:
        raise
    except Exception as err:  # any decoding failure of a corrupt pickle
        raise AnnotationError(f"{what} '{path}' cannot be unpickled: {err}") from err


def pickle_or_json(directory: Path, stem: str) -> Path:
    """``<stem>.pickle`` if present, else ``<stem>.json`` (the JSON equivalent), else the pickle path."""
    pickled, as_json = directory / f"{stem}.pickle", directory / f"{stem}.json"
    return as_json if not pickled.is_file() and as_json.is_file() else pickled


def image_size_hw(path: Path) -> tuple[int, int]:
    """(height, width) from the image header (no decoding); errors name the file."""
    if not path.is_file():
        raise MissingResourceError(f"image not found: '{path}'")
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception as err:
        raise AnnotationError(f"cannot read the image header of '{path}': {err}") from err
    return int(height), int(width)


# ----------------------------------------------------------------------------- boxes and text


def box_tensor(values: Any, where: str) -> Tensor:
    """``(K, 4)`` xyxy float tensor from nested numbers; AnnotationError naming ``where`` if invalid."""
    try:
        boxes = torch.as_tensor(values, dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise AnnotationError(f"{where}: boxes are not numbers: {values!r}") from err
    boxes = boxes.reshape(-1, 4) if boxes.numel() % 4 == 0 and boxes.numel() > 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise AnnotationError(f"{where}: expected boxes [x1, y1, x2, y2], got {values!r}")
    if not torch.isfinite(boxes).all() or (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise AnnotationError(f"{where}: invalid box (need finite x2 >= x1, y2 >= y1): {boxes.tolist()}")
    return boxes


def box_area_fraction(box: Tensor, size_hw: tuple[int, int]) -> float:
    """Area of one xyxy box over the image area."""
    return float((box[2] - box[0]) * (box[3] - box[1])) / float(size_hw[0] * size_hw[1])


def passes_area_filter(box: Tensor, size_hw: tuple[int, int], min_area_fraction: float | None) -> bool:
    """The reference's filter: keep a box only if its area is **more** than the fraction of the image."""
    return not min_area_fraction or box_area_fraction(box, size_hw) > min_area_fraction


def make_phrase(text: Any, where: str, text_prefix: str = "", lowercase: bool = True) -> str:
    """Clean a phrase (strip, optional lowercase, prefix); an empty/non-string one is an AnnotationError."""
    if not isinstance(text, str) or not text.strip():
        raise AnnotationError(f"{where}: empty or non-text phrase {text!r}")
    text = " ".join(text.split())
    return text_prefix + (text.lower() if lowercase else text)


def collect(items: Iterable[tuple[str, Any]], build: Callable[[str, Any], list[Any]], skipped: list[str]) -> list[Any]:
    """Apply ``build(key, raw)`` to each item; AnnotationError/MissingResourceError → ``skipped``.

    ``build`` returns a list of samples (possibly empty); this is how a batch loader reports and
    skips a bad item without losing the rest.
    """
    samples: list[Any] = []
    for key, raw in items:
        try:
            samples.extend(build(key, raw))
        except (AnnotationError, MissingResourceError) as err:
            skipped.append(f"{key}: {err}")
    return samples
