"""Flickr30k Entities in its publisher's layout (BryanPlummer/flickr30k_entities).

Files (under ``root``; the reference's nesting ``flickr30k_entities/…`` and
``flickr30k_images/flickr30k_images/`` is found too):

* ``train.txt`` / ``val.txt`` / ``test.txt`` — one image id per line;
* ``Annotations/<id>.xml`` — ``<size><width/><height/></size>`` and ``<object>`` elements with one or
  more ``<name>`` (entity ids) and a ``<bndbox>`` (1-based ``xmin ymin xmax ymax``), or
  ``<nobndbox>``/``<scene>`` flags;
* ``Sentences/<id>.txt`` — five sentences, mentions written ``[/EN#<entity id>/<type>[/<type>…] words]``;
* images ``<id>.jpg``.

Protocol (reference, REFERENCE.md W§6.1): one sample per entity that has boxes and at least one mention;
``phrases`` = every mention across the five sentences (lowercased, in order, repeats kept);
``gt_boxes`` = all the entity's boxes (the metrics use their **union**); coordinates get −1
(0-based, as the reference); the entity is kept only if its **first** box covers more than
``min_area_fraction`` (0.05) of the image (size from the XML). ``text_prefix`` (e.g.
``"image of "``) is prepended to every phrase when given.

Malformed input: an image whose XML or sentences file cannot be used (missing, empty, truncated, not
XML, not UTF-8, no positive ``<size>``, a ``<bndbox>`` that is not numbers, unbalanced mention brackets)
is skipped whole; an entity whose boxes are invalid (NaN, inverted) is skipped alone; an image listed
twice in the split is kept once. Each is one line of ``DatasetIndex.skipped``.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from wwbl.errors import AnnotationError
from wwbl.readers.common import (
    DatasetIndex,
    GroundingSample,
    box_tensor,
    collect,
    first_existing,
    make_phrase,
    passes_area_filter,
    positive_size,
    read_split_ids,
    read_text,
    require_file,
)

HINT = "Get the annotations from github.com/BryanPlummer/flickr30k_entities and the images from the Flickr30k site"
_MENTION = re.compile(r"\[/EN#(\d+)((?:/[^\s\]/]+)*)\s+([^\[\]]*)\]")


def parse_annotation_xml(path: Path) -> tuple[tuple[int, int], dict[str, list[list[float]]]]:
    """``((height, width), {entity id: [[x1, y1, x2, y2], …]})`` with 0-based coordinates."""
    require_file(path, "Flickr30k Entities annotation", HINT)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, ValueError, LookupError) as err:  # LookupError: an unknown declared encoding
        raise AnnotationError(f"'{path}' is not valid XML: {err}") from err
    size = positive_size(root.findtext("size/height"), root.findtext("size/width"), f"'{path}' <size>")
    boxes: dict[str, list[list[float]]] = defaultdict(list)
    for index, obj in enumerate(root.iter("object")):
        box = obj.find("bndbox")
        if box is None:
            continue  # <nobndbox> or <scene> entities carry no box
        try:
            coords = [float(box.findtext(k)) - 1.0 for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError) as err:
            raise AnnotationError(f"'{path}': <object> #{index} has an invalid <bndbox>") from err
        for name in obj.findall("name"):
            if name.text and name.text.strip():
                boxes[name.text.strip()].append(coords)
    return size, dict(boxes)


def parse_sentences(path: Path) -> list[list[tuple[str, str, list[str]]]]:
    """Per sentence the mentions ``(entity id, phrase, types)`` in order; errors name the line."""
    require_file(path, "Flickr30k Entities sentences", HINT)
    sentences = []
    for number, line in enumerate(read_text(path, "Flickr30k Entities sentences").splitlines(), start=1):
        if not line.strip():
            continue
        mentions = _MENTION.findall(line)
        if len(mentions) != line.count("[/EN#") or line.count("[") != line.count("]"):
            raise AnnotationError(f"'{path}' line {number}: malformed mention brackets: {line!r}")
        sentences.append([(eid, phrase, [t for t in types.split("/") if t]) for eid, types, phrase in mentions])
    if not sentences:
        raise AnnotationError(f"'{path}' holds no sentences")
    return sentences


def entity_samples(image_id: str, annotations: Path, sentences: Path, image_path: Path,
                   min_area_fraction: float | None = 0.05, text_prefix: str = "",
                   lowercase: bool = True, skipped: list[str] | None = None) -> list[GroundingSample]:
    """The samples (one per boxed, mentioned entity) of one Flickr30k image. An entity with invalid
    boxes is reported in ``skipped`` and left out (raises when ``skipped`` is None)."""
    size_hw, boxes = parse_annotation_xml(annotations)
    phrases: dict[str, list[str]] = defaultdict(list)
    types: dict[str, str] = {}
    for number, mentions in enumerate(parse_sentences(sentences), start=1):
        for entity, phrase, kinds in mentions:
            if not phrase.strip():
                continue  # an empty mention carries no text to localise
            phrases[entity].append(make_phrase(phrase, f"'{sentences}' sentence {number}", text_prefix, lowercase))
            types.setdefault(entity, kinds[0] if kinds else "")
    samples = []
    for entity, entity_boxes in boxes.items():
        if entity not in phrases:
            continue
        try:
            gt = box_tensor(entity_boxes, f"'{annotations}' entity {entity}")
        except AnnotationError as err:
            if skipped is None:
                raise
            skipped.append(f"{image_id}/{entity}: {err}")
            continue
        if not passes_area_filter(gt[0], size_hw, min_area_fraction):
            continue
        samples.append(GroundingSample(image_id=image_id, image_path=image_path, size_hw=size_hw,
                                       phrases=phrases[entity], gt_boxes=gt, item_id=f"{image_id}/{entity}",
                                       category=types.get(entity)))
    return samples


def load_flickr30k(root: str | Path, split: str = "test", min_area_fraction: float | None = 0.05,
                   text_prefix: str = "", lowercase: bool = True, images_dir: str | Path | None = None,
                   annotations_dir: str | Path | None = None) -> DatasetIndex[GroundingSample]:
    """Load a Flickr30k Entities split (see the module docstring for layout and protocol).

    Args:
        root: dataset directory holding the split lists.
        split: ``train``, ``val`` or ``test`` (the reference selected models on ``test``; use ``val``).
        min_area_fraction: the reference's 5 % filter on an entity's first box; None/0 disables it.
        text_prefix: prepended to every phrase (e.g. ``"image of "``); extractors may add their own.
        lowercase: lowercase phrases (the reference does).
        images_dir: directory of ``<id>.jpg`` (default: searched under ``root``).
        annotations_dir: directory holding ``Annotations/`` and ``Sentences/`` (default: searched).
    """
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown Flickr30k split {split!r}; expected train, val or test")
    split_file = first_existing([root / f"{split}.txt", root / "flickr30k_entities" / f"{split}.txt"],
                                f"Flickr30k Entities split list '{split}.txt'", HINT, is_dir=False)
    ann_root = Path(annotations_dir) if annotations_dir else first_existing(
        [root / "Annotations", root / "flickr30k_entities" / "Annotations", root / "annotations" / "Annotations"],
        "Flickr30k Entities 'Annotations' directory", HINT).parent
    image_root = Path(images_dir) if images_dir else first_existing(
        [root / "flickr30k_images" / "flickr30k_images", root / "flickr30k_images", root / "flickr30k-images",
         root / "images"], "Flickr30k images directory", HINT)
    skipped: list[str] = []

    def build(image_id: str, _: object) -> list[GroundingSample]:
        return entity_samples(image_id, ann_root / "Annotations" / f"{image_id}.xml",
                              ann_root / "Sentences" / f"{image_id}.txt", image_root / f"{image_id}.jpg",
                              min_area_fraction, text_prefix, lowercase, skipped)

    ids = read_split_ids(split_file, "Flickr30k split list")
    samples = collect(((i, None) for i in ids), build, skipped)
    return DatasetIndex(name="flickr30k", split=split, samples=samples, skipped=skipped)


__all__ = ["load_flickr30k", "parse_annotation_xml", "parse_sentences", "entity_samples"]
