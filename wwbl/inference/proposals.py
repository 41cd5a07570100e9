"""Region proposals for WWbL (Algorithm 1, line 2): selective search plus grid boxes.

As the reference (REFERENCE.md W§7 items 1–3), proposals are computed in a square *working frame*
(224×224 by default) and mapped back to the original image frame as ``xyxy`` floats:

* OpenCV-contrib selective search, fast mode, ``base_k = inc_k = 150``, ``sigma = 0.8``.
  ``encoding="reference"`` feeds the working image as float32 RGB in [-1, 1] (the released code
  passes its normalised dataset tensor; OpenCV treats it as BGR with [0, 256) histograms, which is
  part of the reproduced behaviour); ``encoding="uint8_bgr"`` feeds the ordinary uint8 BGR image,
  which yields up to ~3× more boxes.
* Grid boxes for fractions 1/2, 1/3, 1/4: side ``int(S·f) + 1`` with corners on
  ``range(0, S, side)``, clipped at the border.
* Only boxes whose area exceeds ``min_area_ratio`` (10 %, ``--min-proposal-area``) of the frame are
  kept (this drops the 1/4 grid at S = 224, as in the reference). It suits photos, whose objects are
  large; it would drop most objects of the shapes world (2–20 % of a scene), whose demo uses
  ``--min-proposal-area 0.02`` (the Makefile's ``DEMO_FLAGS``).
* Optional, off by default as in the reference (both change WWbL's output, for speed: BLIP
  captions every proposal):

  - ``dedup_iou``: greedy de-duplication in proposal order — a box is dropped when its IoU with an
    earlier *kept* box exceeds ``dedup_iou`` (so of two near-duplicates the earlier one stays);
  - ``max_proposals``: keep the first N proposals that are left after the area filter and
    ``dedup_iou``.

  Proposal order: the grid boxes first (the 1/2 grid, then 1/3, row by row; 13 boxes survive the
  area filter at S = 224), then selective search's boxes from the smallest to the largest (ties by
  x, y, w, h). So ``max_proposals`` = 13 keeps only the grid boxes, and a larger cap keeps the grid
  plus the smallest selective-search boxes above the area filter (object-sized regions; large
  ones overlap the grid); with ``dedup_iou`` the smaller of two near-duplicates stays.

* Selective search's own output order is level × ``rand()`` (OpenCV's rank, drawn from C's
  process-wide random state, so it changes from call to call and between threads); the boxes
  are re-sorted by area as above, which makes the proposals — and the captions' order, on which
  tied caption clusters depend — the same on every run. The set of boxes is OpenCV's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.ops import nms

from wwbl.boxes import from_coco_xywh
from wwbl.defaults import MIN_PROPOSAL_AREA, SS_ENCODING

Encoding = Literal["reference", "uint8_bgr"]


def _selective_search_factory():
    try:
        return cv2.ximgproc.segmentation.createSelectiveSearchSegmentation
    except AttributeError as error:
        raise ImportError(
            "selective search needs OpenCV's contrib module cv2.ximgproc; install "
            "opencv-contrib-python-headless (and uninstall a plain opencv-python that shadows it)"
        ) from error


def dedup_boxes(boxes: torch.Tensor, iou: float) -> torch.Tensor:
    """``boxes`` (``xyxy``, in order) without those whose IoU with an earlier kept box exceeds ``iou``."""
    if len(boxes) < 2:
        return boxes
    rank_scores = torch.linspace(1.0, 0.0, len(boxes))  # NMS keeps the higher score: earlier boxes win
    return boxes[nms(boxes, rank_scores, iou).sort().values]


def grid_boxes(size: int, fractions: tuple[float, ...]) -> torch.Tensor:
    """The reference's grid proposals in an ``size×size`` frame, ``xyxy`` clipped to the frame."""
    boxes = []
    for fraction in fractions:
        side = int(size * fraction) + 1
        corners = torch.arange(0, size, side, dtype=torch.float32)
        ys, xs = torch.meshgrid(corners, corners, indexing="ij")
        starts = torch.stack([xs.flatten(), ys.flatten()], dim=1)
        boxes.append(torch.cat([starts, (starts + side).clamp(max=size)], dim=1))
    return torch.cat(boxes) if boxes else torch.zeros((0, 4))


@dataclass
class ProposalGenerator:
    """Selective search + grid proposals (see the module docstring for every option)."""

    working_size: int = 224
    encoding: Encoding = SS_ENCODING
    base_k: int = 150
    inc_k: int = 150
    sigma: float = 0.8
    grid_fractions: tuple[float, ...] = (1 / 2, 1 / 3, 1 / 4)
    min_area_ratio: float = MIN_PROPOSAL_AREA
    selective_search: bool = True
    dedup_iou: float | None = None
    max_proposals: int | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ("reference", "uint8_bgr"):
            raise ValueError(f"unknown selective-search encoding {self.encoding!r}")
        if self.working_size < 8:
            raise ValueError("working_size must be at least 8 pixels")
        if self.dedup_iou is not None and not 0.0 <= self.dedup_iou <= 1.0:
            raise ValueError(f"dedup_iou must lie in [0, 1] (or be None: off), got {self.dedup_iou}")
        if not 0.0 <= self.min_area_ratio < 1.0:
            raise ValueError(f"min_area_ratio must lie in [0, 1), got {self.min_area_ratio}")
        if self.max_proposals is not None and self.max_proposals < 1:
            raise ValueError(f"max_proposals must be at least 1 (or None: no cap), got {self.max_proposals}")
        if self.selective_search:
            self._create = _selective_search_factory()

    def _search_input(self, square: Image.Image) -> np.ndarray:
        rgb = np.asarray(square, dtype=np.uint8)
        if self.encoding == "uint8_bgr":
            return np.ascontiguousarray(rgb[..., ::-1])
        return np.ascontiguousarray((rgb.astype(np.float32) / 255.0 - 0.5) / 0.5)

    def _selective_search_boxes(self, square: Image.Image) -> torch.Tensor:
        search = self._create()
        search.setBaseImage(self._search_input(square))
        search.switchToSelectiveSearchFast(self.base_k, self.inc_k, self.sigma)
        rects = np.asarray(search.process(), dtype=np.int64).reshape(-1, 4)
        # OpenCV orders its boxes by level × C rand(), a process-wide random state: sort them so that the
        # order (which dedup_iou, max_proposals and tied clusters depend on) is the same on every run.
        x, y, w, h = rects.T
        rects = rects[np.lexsort((h, w, y, x, w * h))]
        return from_coco_xywh(rects.astype(np.float32)).clamp(0, self.working_size)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Proposals for one RGB PIL image: ``(N, 4)`` float ``xyxy`` in its original frame."""
        if image.width < 1 or image.height < 1:
            raise ValueError("cannot propose regions in an empty image")
        size = self.working_size
        square = image.convert("RGB").resize((size, size), Image.BILINEAR)
        parts = [grid_boxes(size, self.grid_fractions)]
        if self.selective_search:
            parts.append(self._selective_search_boxes(square))
        boxes = torch.cat(parts)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = boxes[areas > self.min_area_ratio * size * size]
        if self.dedup_iou is not None:
            boxes = dedup_boxes(boxes, self.dedup_iou)
        if self.max_proposals is not None:
            boxes = boxes[: self.max_proposals]
        scale = torch.tensor([image.width, image.height, image.width, image.height]) / size
        return boxes * scale
