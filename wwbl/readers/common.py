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


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file; bytes that are not UTF-8 raise an AnnotationError naming the file and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise AnnotationError(f"{what} '{path}' line {line}: not UTF-8 text ({err.reason} at byte {err.start})") from err


def read_split_ids(path: Path, what: str) -> list[str]:
    """Non-empty stripped lines of a split list (one image id per line); an empty list is an error."""
    require_file(path, what)
    ids = [line.strip() for line in read_text(path, what).splitlines() if line.strip()]
    if not ids:
        raise AnnotationError(f"{what} '{path}' lists no image ids")
    return ids


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members; a repeated name is refused (every reader would keep one value silently)."""
    table: dict[str, Any] = {}
    for key, value in pairs:
        if key in table:
            raise AnnotationError(f"the key {key!r} appears twice in one object")
        table[key] = value
    return table


def read_json(path: str | Path, what: str, hint: str = "") -> Any:
    """A JSON file; a missing file, invalid JSON or a key repeated in one object raises an error naming
    the file (and the key)."""
    path = require_file(path, what, hint)
    text = read_text(path, what)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{what} '{path}' is not valid JSON: {err}") from err
    except AnnotationError as err:
        raise AnnotationError(f"{what} '{path}': {err}") from err


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


def _positive_int(value: Any) -> int:
    """A positive integer from an int, an integral float or a decimal string; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a boolean")
    number = value if isinstance(value, float) else int(value)
    if number != int(number) or number <= 0:
        raise ValueError("not a positive integer")
    return int(number)


def positive_size(height: Any, width: Any, where: str) -> tuple[int, int]:
    """``(height, width)`` as positive integers; AnnotationError naming ``where`` otherwise."""
    try:
        return _positive_int(height), _positive_int(width)
    except (TypeError, ValueError, OverflowError) as err:
        raise AnnotationError(f"{where}: image size must be positive integers, got {height!r} x {width!r}") from err


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
    if _holds_bool(values):
        raise AnnotationError(f"{where}: boxes are not numbers: {values!r}")
    try:
        boxes = torch.as_tensor(values, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise AnnotationError(f"{where}: boxes are not numbers: {values!r}") from err
    if boxes.ndim == 1 and boxes.numel() % 4 == 0:  # a flat [x1, y1, x2, y2, …]
        boxes = boxes.reshape(-1, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise AnnotationError(f"{where}: expected boxes [x1, y1, x2, y2], got {values!r}")
    if not torch.isfinite(boxes).all() or (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise AnnotationError(f"{where}: invalid box (need finite x2 >= x1, y2 >= y1): {boxes.tolist()}")
    return boxes


def boxes_outside_image(boxes: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Per xyxy box, whether no part of it lies inside the ``(height, width)`` image (a box that
    only overhangs the border, as publishers' boxes sometimes do, is inside)."""
    height, width = size_hw
    return (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)


def _holds_bool(values: Any) -> bool:
    """Whether nested lists hold a boolean (torch would read ``true`` as the coordinate 1)."""
    if isinstance(values, bool):
        return True
    return isinstance(values, (list, tuple)) and any(_holds_bool(v) for v in values)


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


def sample_id(sample: Any) -> str:
    """What identifies a sample in its benchmark: ``image/item`` for grounding, the image otherwise."""
    item = getattr(sample, "item_id", None)
    return f"image {sample.image_id} item {item}" if item is not None else f"image {sample.image_id}"


def collect(items: Iterable[tuple[str, Any]], build: Callable[[str, Any], list[Any]], skipped: list[str]) -> list[Any]:
    """Apply ``build(key, raw)`` to each item; AnnotationError/MissingResourceError → ``skipped``.

    ``build`` returns a list of samples (possibly empty); this is how a batch loader reports and
    skips a bad item without losing the rest. A sample whose id (``sample_id``) an earlier item
    already gave is reported and skipped: the first stays, so no item is counted twice.
    """
    samples: list[Any] = []
    first_key: dict[str, str] = {}
    for key, raw in items:
        try:
            built = build(key, raw)
        except (AnnotationError, MissingResourceError) as err:
            skipped.append(f"{key}: {err}")
            continue
        for sample in built:
            ident = sample_id(sample)
            if ident in first_key:
                skipped.append(f"{key}: duplicate {ident} (first given by {first_key[ident]}); the first is kept")
                continue
            first_key[ident] = key
            samples.append(sample)
    return samples
