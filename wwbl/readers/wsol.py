"""WSOL benchmarks in their publishers' layouts: Stanford Cars, Stanford Dogs, ImageNet val (CUB-200-2011
is read by :mod:`wwbl.readers.cub`).

Boxes are kept in the coordinates the publishers store (pixel indices, no offset); each loader
returns :class:`WSOLSample` items and the dataset's class list (``DatasetIndex.class_names``,
index = ``label``; each entry holds the class's names, synonyms after the first).

* **Stanford Cars**: ``cars_test_annos_withlabels.mat`` (or ``devkit/cars_train_annos.mat`` for
  ``train``) with the struct ``annotations`` (``bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname``),
  ``devkit/cars_meta.mat`` (``class_names``), images ``cars_test/`` / ``cars_train/``.
* **Stanford Dogs**: ``lists/test_list.mat`` (``file_list``, ``annotation_list``, ``labels`` 1-based),
  ``Annotation/<annotation>`` (PASCAL-VOC XML without extension), ``Images/<file>``.
* **ImageNet val** (the Kaggle LOC layout): ``LOC_synset_mapping.txt`` (``wnid name, synonym, …``
  in class order), ``ILSVRC/Annotations/CLS-LOC/val/<id>.xml`` (VOC XML, one ``<object>`` per box),
  ``ILSVRC/Data/CLS-LOC/val/<id>.JPEG``; ``annotations_dir``/``images_dir`` override (e.g. the
  ``val/`` folder of ``ILSVRC2012_bbox_val_v3.tgz``).

Malformed input: an unreadable list or meta file (not a MATLAB file, a missing field, labels that are
not integers, a synset line without a name, bytes that are not UTF-8) fails the load naming the file;
an item whose record or box XML is unusable (empty, truncated, not XML, no ``<bndbox>``, boxes that are
not numbers, NaN, inverted, an unknown class) is skipped; an image listed twice is kept once. Each is
one line of ``DatasetIndex.skipped``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from wwbl.errors import AnnotationError
from wwbl.readers.common import (
    DatasetIndex,
    WSOLSample,
    box_tensor,
    collect,
    first_existing,
    read_text,
    require_dir,
    require_file,
)


# ----------------------------------------------------------------------------- .mat helpers


def _loadmat(path: Path, what: str, hint: str) -> dict[str, Any]:
    require_file(path, what, hint)
    try:
        return loadmat(str(path), squeeze_me=True)
    except Exception as err:  # scipy raises several types for corrupt files
        raise AnnotationError(f"{what} '{path}' cannot be read as a MATLAB file: {err}") from err


def _mat_field(table: dict[str, Any], name: str, path: Path) -> Any:
    """A top-level variable of a loaded .mat file; AnnotationError naming the file when it is absent."""
    if name not in table:
        raise AnnotationError(f"'{path}' has no variable '{name}'")
    return table[name]


def _mat_strings(value: Any) -> list[str]:
    return [str(v) for v in np.atleast_1d(value)]


def _mat_ints(value: Any, where: str) -> list[int]:
    try:
        return [int(v) for v in np.atleast_1d(value)]
    except (TypeError, ValueError, OverflowError) as err:
        raise AnnotationError(f"{where}: not integers: {err}") from err


# ----------------------------------------------------------------------------- Stanford Cars

CARS_HINT = "Get the Stanford Cars images, devkit and cars_test_annos_withlabels.mat"


def load_stanford_cars(root: str | Path, split: str = "test") -> DatasetIndex[WSOLSample]:
    """Stanford Cars boxes from the devkit ``.mat`` files (see the module docstring)."""
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"unknown Stanford Cars split {split!r}; expected train or test")
    meta_path = first_existing([root / "devkit" / "cars_meta.mat", root / "cars_meta.mat"], "cars_meta.mat",
                               CARS_HINT, is_dir=False)
    meta = _loadmat(meta_path, "Stanford Cars meta", CARS_HINT)
    class_names = [(name,) for name in _mat_strings(_mat_field(meta, "class_names", meta_path))]
    ann_path = (first_existing([root / "cars_test_annos_withlabels.mat", root / "devkit" / "cars_test_annos_withlabels.mat"],
                               "Stanford Cars test annotations with labels", CARS_HINT, is_dir=False)
                if split == "test" else root / "devkit" / "cars_train_annos.mat")
    table = _loadmat(ann_path, f"Stanford Cars {split} annotations", CARS_HINT).get("annotations")
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    if not set(fields) <= set(getattr(getattr(table, "dtype", None), "names", None) or ()):
        raise AnnotationError(f"'{ann_path}': expected a struct 'annotations' with fields {fields}")
    image_dir = require_dir(root / f"cars_{split}", f"Stanford Cars {split} images", CARS_HINT)
    skipped: list[str] = []

    def build(index: str, record: Any) -> list[WSOLSample]:
        where = f"'{ann_path}' annotations({int(index) + 1})"
        classes = _mat_ints(record["class"], f"{where} class")
        if len(classes) != 1:
            raise AnnotationError(f"{where}: expected one class, got {classes}")
        label = classes[0] - 1
        if not 0 <= label < len(class_names):
            raise AnnotationError(f"{where}: class {label + 1} outside 1..{len(class_names)}")
        try:
            box = box_tensor([float(record[k]) for k in fields[:4]], where)
        except (TypeError, ValueError) as err:
            raise AnnotationError(f"{where}: bbox_x1..bbox_y2 are not numbers") from err
        fname = str(record["fname"]).strip()
        if not fname:
            raise AnnotationError(f"{where}: empty fname")
        return [WSOLSample(image_id=Path(fname).stem, image_path=image_dir / fname, size_hw=None, label=label,
                           class_names=class_names[label], gt_boxes=box)]

    samples = collect(((str(i), r) for i, r in enumerate(np.atleast_1d(table))), build, skipped)
    return DatasetIndex(name="cars", split=split, samples=samples, skipped=skipped, class_names=class_names)


# ----------------------------------------------------------------------------- VOC XML (Dogs, ImageNet)


def parse_voc_boxes(path: Path) -> tuple[list[str], list[list[float]]]:
    """Object names and ``[xmin, ymin, xmax, ymax]`` boxes of a PASCAL-VOC style XML file."""
    require_file(path, "box annotation")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, ValueError, LookupError) as err:  # LookupError: an unknown declared encoding
        raise AnnotationError(f"'{path}' is not valid XML: {err}") from err
    names, boxes = [], []
    for index, obj in enumerate(root.iter("object")):
        try:
            boxes.append([float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")])
        except (TypeError, ValueError) as err:
            raise AnnotationError(f"'{path}': <object> #{index} has an invalid <bndbox>") from err
        names.append((obj.findtext("name") or "").strip())
    if not boxes:
        raise AnnotationError(f"'{path}': no <object> with a <bndbox>")
    return names, boxes


DOGS_HINT = "Get images.tar, annotation.tar and lists.tar from the Stanford Dogs site"


def dog_class_name(folder: str) -> str:
    """``'n02085620-Chihuahua'`` → ``'chihuahua'``."""
    return folder.split("-", 1)[-1].replace("_", " ").lower()


def load_stanford_dogs(root: str | Path, split: str = "test") -> DatasetIndex[WSOLSample]:
    """Stanford Dogs boxes (see the module docstring)."""
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"unknown Stanford Dogs split {split!r}; expected train or test")
    list_path = first_existing([root / "lists" / f"{split}_list.mat", root / f"{split}_list.mat"],
                               f"Stanford Dogs {split}_list.mat", DOGS_HINT, is_dir=False)
    lists = _loadmat(list_path, f"Stanford Dogs {split} list", DOGS_HINT)
    files = _mat_strings(_mat_field(lists, "file_list", list_path))
    annotations = _mat_strings(_mat_field(lists, "annotation_list", list_path))
    labels = _mat_ints(_mat_field(lists, "labels", list_path), f"'{list_path}' labels")
    if not (len(files) == len(annotations) == len(labels)) or not files:
        raise AnnotationError(f"Stanford Dogs {split}_list.mat: file_list, annotation_list and labels differ in length")
    folders = {}
    for fname, label in zip(files, labels):
        folders.setdefault(label, fname.split("/")[0])
    class_names = [(dog_class_name(folders[k]),) for k in sorted(folders)]
    index_of = {k: i for i, k in enumerate(sorted(folders))}
    ann_dir = require_dir(root / "Annotation", "Stanford Dogs Annotation directory", DOGS_HINT)
    image_dir = require_dir(root / "Images", "Stanford Dogs Images directory", DOGS_HINT)
    skipped: list[str] = []

    def build(fname: str, item: tuple[str, int]) -> list[WSOLSample]:
        annotation, label = item
        _, boxes = parse_voc_boxes(ann_dir / annotation)
        return [WSOLSample(image_id=Path(fname).stem, image_path=image_dir / fname, size_hw=None,
                           label=index_of[label], class_names=class_names[index_of[label]],
                           gt_boxes=box_tensor(boxes, f"'{ann_dir / annotation}'"))]

    samples = collect(zip(files, zip(annotations, labels)), build, skipped)
    return DatasetIndex(name="dogs", split=split, samples=samples, skipped=skipped, class_names=class_names)


# ----------------------------------------------------------------------------- ImageNet


IMAGENET_HINT = "Get the ILSVRC2012 validation images, the val box XMLs and LOC_synset_mapping.txt"


def read_synset_mapping(path: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    """``(wnids, names)`` from lines ``n01440764 tench, Tinca tinca`` (class order = line order)."""
    require_file(path, "ImageNet synset mapping", IMAGENET_HINT)
    wnids, names = [], []
    for number, line in enumerate(read_text(path, "ImageNet synset mapping").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(" ", 1)
        synonyms = tuple(n.strip() for n in parts[1].split(",") if n.strip()) if len(parts) == 2 else ()
        if not synonyms or not parts[0].startswith("n"):
            raise AnnotationError(f"'{path}' line {number}: expected 'wnid name, synonym, …', got {line!r}")
        if parts[0] in wnids:
            raise AnnotationError(f"'{path}' line {number}: synset {parts[0]} listed twice")
        wnids.append(parts[0])
        names.append(synonyms)
    if not wnids:
        raise AnnotationError(f"'{path}' lists no synsets")
    return wnids, names


def load_imagenet_val(root: str | Path, split: str = "val", annotations_dir: str | Path | None = None,
                      images_dir: str | Path | None = None) -> DatasetIndex[WSOLSample]:
    """ImageNet-1k validation boxes (see the module docstring); ``split`` must be ``val``."""
    if split not in ("val", "test"):
        raise ValueError("ImageNet localisation is evaluated on the validation set: use split 'val'")
    root = Path(root)
    wnids, class_names = read_synset_mapping(root / "LOC_synset_mapping.txt")
    index_of = {w: i for i, w in enumerate(wnids)}
    ann_dir = Path(annotations_dir) if annotations_dir else first_existing(
        [root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val", root / "val"], "ImageNet val box XMLs", IMAGENET_HINT)
    image_dir = Path(images_dir) if images_dir else first_existing(
        [root / "ILSVRC" / "Data" / "CLS-LOC" / "val", root / "images" / "val"], "ImageNet val images", IMAGENET_HINT)
    skipped: list[str] = []

    def build(image_id: str, xml: Path) -> list[WSOLSample]:
        names, boxes = parse_voc_boxes(xml)
        if names[0] not in index_of:
            raise AnnotationError(f"'{xml}': synset {names[0]!r} is not in LOC_synset_mapping.txt")
        label = index_of[names[0]]
        return [WSOLSample(image_id=image_id, image_path=image_dir / f"{image_id}.JPEG", size_hw=None, label=label,
                           class_names=class_names[label], gt_boxes=box_tensor(boxes, f"'{xml}'"))]

    xmls = sorted(require_dir(ann_dir, "ImageNet val box XMLs", IMAGENET_HINT).glob("*.xml"))
    samples = collect(((x.stem, x) for x in xmls), build, skipped)
    return DatasetIndex(name="imagenet", split="val", samples=samples, skipped=skipped, class_names=class_names)
