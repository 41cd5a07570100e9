"""COCO detection results (``[{"image_id", "category_id", "bbox", "score", ...}]``) that pycocotools'
``COCO.loadRes`` and ``COCOeval`` take as they are.

Numbering follows a COCO ground-truth file when one is given (`CocoIds.from_ground_truth`):

- ``image_id``: the GT image whose ``file_name`` is the image's file name (when several GT images
  share that name, the one whose whole ``file_name`` path ends the image's path). An image the GT
  does not list is an error: pycocotools refuses results for unknown images.
- ``category_id``: the GT category whose ``name`` is the phrase, compared case-insensitively with a
  leading article dropped ("a dog" matches "dog"). Any other phrase gets the one ``"phrase"``
  category: the GT's own category named "phrase" if it has one (a grounding GT opts in that way),
  else id `PHRASE_CATEGORY_ID` (0; the GT's largest id + 1 if the GT uses 0), which no GT category
  shares, so per-category scores ignore such boxes. pycocotools only gathers boxes whose category
  is in ``params.catIds``, so scoring them class-agnostically needs ``params.useCats = 0`` and
  ``params.catIds = gt.getCatIds() + [PHRASE_CATEGORY_ID]``.

Without a GT file, ``image_id`` is the file stem as an integer when it is all ASCII digits (COCO's own
``000000139.jpg`` → 139), else the stem itself; every box has the ``"phrase"`` category.
Every record keeps its phrase in an extra ``"phrase"`` field; ``bbox`` is ``[x, y, w, h]`` in pixels.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import torch

from wwbl.atomic_files import write_text_atomic
from wwbl.boxes import Detections, to_coco_xywh
from wwbl.errors import AnnotationError, MissingResourceError
from wwbl.inference.results import GroundingResult

PHRASE_CATEGORY_ID = 0
PHRASE_CATEGORY_NAME = "phrase"
_ARTICLE = re.compile(r"^(a|an|the)\s+")
_ASCII_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also accepts "²³", which int() refuses


def category_key(name: str) -> str:
    """How phrases and category names are compared: lower case, single spaces, no leading article."""
    return _ARTICLE.sub("", " ".join(name.lower().split()))


class CocoIds:
    """Image and category ids of COCO results: from a ground-truth file, or the defaults above."""

    def __init__(self, images: list[dict[str, Any]] | None = None, categories: list[dict[str, Any]] | None = None):
        self.has_images = images is not None
        self._images: dict[str, list[tuple[PurePath, int]]] = {}
        for image in images or []:
            path = PurePath(str(image["file_name"]).replace("\\", "/"))
            self._images.setdefault(path.name, []).append((path, image["id"]))
        self._categories: dict[str, int] = {}
        for category in categories or []:
            self._categories.setdefault(category_key(str(category["name"])), category["id"])
        used = set(self._categories.values())
        self.phrase_category_id = self._categories.get(PHRASE_CATEGORY_NAME, PHRASE_CATEGORY_ID
                                                       if PHRASE_CATEGORY_ID not in used else max(used) + 1)

    @classmethod
    def from_ground_truth(cls, gt: str | Path | Mapping[str, Any]) -> CocoIds:
        """From a COCO ground-truth file (path) or its parsed content; it must list ``images``."""
        if not isinstance(gt, Mapping):
            path = Path(gt)
            if not path.is_file():
                raise MissingResourceError(f"COCO ground-truth file '{path}' not found")
            try:
                gt = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise AnnotationError(f"'{path}' is not valid JSON: {error}") from error
        if not isinstance(gt, Mapping) or not isinstance(gt.get("images"), list):
            raise AnnotationError("a COCO ground truth needs an 'images' list (entries with 'id' and 'file_name')")
        return cls(gt["images"], gt.get("categories") or [])

    def image_id(self, image: str | Path, stem: str | None = None) -> int | str:
        """The id of ``image`` (a path); without a GT, from ``stem`` (default: the file's stem)."""
        path = PurePath(str(image).replace("\\", "/"))
        if not self.has_images:
            stem = stem or path.stem
            return int(stem) if _ASCII_DIGITS.fullmatch(stem) else stem
        same_name = self._images.get(path.name, [])
        candidates = [c for c in same_name if len(same_name) == 1 or path.parts[-len(c[0].parts):] == c[0].parts]
        if len(candidates) != 1:
            problem = "is not an image of" if not same_name else "matches several images of"
            raise ValueError(f"'{image}' {problem} the COCO ground truth (matched by images[].file_name)")
        return candidates[0][1]

    def category_id(self, phrase: str | None) -> int:
        return self._categories.get(category_key(phrase or ""), self.phrase_category_id)


def coco_records(result: GroundingResult, image_id: int | str, ids: CocoIds | None = None) -> list[dict[str, Any]]:
    """COCO detection-results entries of one image (``bbox`` = ``[x, y, w, h]``, the phrase kept)."""
    return detection_records(result.detections, image_id, ids)


def detection_records(detections: Detections, image_id: int | str, ids: CocoIds | None = None) -> list[dict[str, Any]]:
    """COCO detection-results entries of one image's detections."""
    ids = ids or CocoIds()
    phrases = detections.phrases or [""] * len(detections)
    boxes = to_coco_xywh(detections.boxes).tolist()
    return [{"image_id": image_id, "category_id": ids.category_id(phrase), "bbox": [round(v, 2) for v in box],
             "score": round(score, 5), "phrase": phrase}
            for box, score, phrase in zip(boxes, detections.scores.tolist(), phrases)]


def record_coco_records(record: Mapping[str, Any], image_id: int | str, ids: CocoIds | None = None) -> list[dict]:
    """COCO entries of an image from its written JSON record (``infer.py``'s ``<name>.json``): what its
    ``detections`` hold, so a run and a resumed run give the same entries."""
    entries = record["detections"]
    detections = Detections(torch.tensor([d["box"] for d in entries], dtype=torch.float32).reshape(-1, 4),
                            torch.tensor([d["score"] for d in entries], dtype=torch.float32),
                            [d.get("phrase", "") for d in entries])
    return detection_records(detections, image_id, ids)


def write_coco_results(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(records))
