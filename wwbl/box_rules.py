"""Heatmap → boxes rules (paper §3.1 and the released code's variant) and :class:`BoxRule`, the one
object that carries a rule's settings through every door (training validation, ``wwbl.load``,
``infer.py`` and ``python -m wwbl.evaluation``).

Heatmaps are float maps in [0, 1] at the original image resolution, so every box comes out as
absolute-pixel ``xyxy`` in the original image frame. A contour whose bounding rectangle is
``(x, y, w, h)`` in pixel indices covers the continuous box ``[x, y, x + w, y + h]``.

Rules
-----
* :func:`wsol_box` with ``mode="paper"`` — WSOL (paper §3.1): zero pixels not above 0.1, Suzuki
  contours, the box of the largest contour.
* :func:`wsol_box` with ``mode="reference"`` — ``utils.generate_bbox(th=0.1)`` of the released WSOL
  code: min-max normalise, cubehelix gray (as the reference WSG mode), keep gray above
  ``int(0.1·max(gray))``, all contours (``RETR_TREE``), the bounding rectangle of the contour with
  the largest ``cv2.contourArea`` (first one on ties). Without any contour it gives no box, as
  paper mode (REFERENCE.md W§2.3 records no fallback of the released code).
* :func:`wsg_boxes` with ``mode="paper"`` — WSG as the paper states: zero pixels not above 0.5, a
  box per (outer) contour scored by the mean of the map inside it, NMS at IoU 0.3 on xyxy boxes,
  drop boxes scoring under 50 % of the best.
* :func:`wsg_boxes` with ``mode="reference"`` — ``generate_bbox`` of the released code (REFERENCE.md W§6.4):
  min-max normalise, cubehelix colour map → gray, ``THRESH_TOZERO`` at 0.5·max(gray), all contours
  (``RETR_TREE``, holes included), confidence = mean thresholded gray in the box / 255, NMS at IoU
  0.05 on boxes passed as ``(x, y, w, h)`` (the released code's bug, reproduced), keep
  conf > 50 % of the best, then the **union** of the survivors as the single prediction. Without any
  contour the released code predicts the box ``[0, 0, 1, 1]``; so does this mode (score 0).

The cubehelix gray of both reference modes normalises in float64, as the released code's numpy.

Minimum box size (paper modes only; the reference modes reproduce the released code as it is): a
box narrower or shorter than ``min_side_fraction`` (default 2 %) of the map's side, and never
under 2 pixels, is a map artifact — a lone pixel or a one-pixel seam of a min-max-normalised map —
not an object, and is dropped before NMS (the WSOL rule then takes the largest remaining contour).

Scale convention: every caller (training-time validation, ``python -m wwbl.evaluation``, the
inference pipelines) min-max normalises a map before these rules, as the released code's
``generate_bbox`` does, so the thresholds are fractions of the map's own range whatever its source.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
from matplotlib import colormaps
from torchvision.ops import nms

from wwbl.boxes import Detections, from_coco_xywh
from wwbl.defaults import BOX_MODES, BOX_RULES, WSG_NMS_IOU, WSG_THRESHOLD, WSOL_THRESHOLD

BoxMode = Literal["paper", "reference"]
RuleName = Literal["wsg", "wsol"]
MIN_SIDE_FRACTION = 0.02
MIN_SIDE_PIXELS = 2


def _as_numpy_map(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    """A 2-D float32 numpy copy of ``heatmap`` (validated)."""
    array = heatmap.detach().float().cpu().numpy() if torch.is_tensor(heatmap) else np.asarray(heatmap)
    if array.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D (H×W), got shape {tuple(array.shape)}")
    if array.size == 0:
        raise ValueError("a heatmap must not be empty")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("the heatmap contains NaN or infinite values")
    return array


def _contour_rects(binary: np.ndarray, retrieval: int) -> np.ndarray:
    """``(K, 4)`` int array of contour bounding rectangles ``(x, y, w, h)`` of a uint8 mask."""
    contours, _ = cv2.findContours(binary, retrieval, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 4), dtype=np.int64)
    return np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64).reshape(-1, 4)


def box_means(values: np.ndarray, rects_xywh: np.ndarray) -> np.ndarray:
    """Mean of ``values`` inside each rectangle, all rectangles at once via an integral image."""
    integral = cv2.integral(values.astype(np.float64))  # (H+1)×(W+1), integral[y, x] = sum above-left
    x0, y0 = rects_xywh[:, 0], rects_xywh[:, 1]
    x1, y1 = x0 + rects_xywh[:, 2], y0 + rects_xywh[:, 3]
    sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    areas = np.maximum(rects_xywh[:, 2] * rects_xywh[:, 3], 1)
    return (sums / areas).astype(np.float32)


def _side_filter(rects: np.ndarray, shape_hw: tuple[int, int], min_side_fraction: float) -> np.ndarray:
    """Rectangles ``(x, y, w, h)`` whose width and height both reach the minimum box side."""
    if min_side_fraction <= 0:
        return rects
    min_w = max(MIN_SIDE_PIXELS, min_side_fraction * shape_hw[1])
    min_h = max(MIN_SIDE_PIXELS, min_side_fraction * shape_hw[0])
    return rects[(rects[:, 2] >= min_w) & (rects[:, 3] >= min_h)]


def _area_filter(rects: np.ndarray, shape_hw: tuple[int, int], min_area_ratio: float) -> np.ndarray:
    if min_area_ratio <= 0:
        return rects
    return rects[rects[:, 2] * rects[:, 3] > min_area_ratio * shape_hw[0] * shape_hw[1]]


def wsol_box(heatmap: torch.Tensor | np.ndarray, threshold: float = WSOL_THRESHOLD, mode: BoxMode = "paper",
             min_side_fraction: float = MIN_SIDE_FRACTION) -> Detections:
    """The WSOL box: threshold the map, take the largest contour's bounding box.

    ``mode="paper"`` zeroes pixels with value ``<= threshold`` and ignores contours whose box is
    under the minimum side (module docstring); ``mode="reference"`` thresholds the cubehelix gray
    image at ``int(threshold·max(gray))``. The score is the mean of the map inside the box.
    Returns an empty :class:`Detections` when no contour qualifies.
    """
    array = _as_numpy_map(heatmap)
    if mode == "paper":
        rect = _largest_paper_rect(array, threshold, min_side_fraction)
    elif mode == "reference":
        rect = _largest_reference_rect(array, threshold)
    else:
        raise ValueError(f"unknown box mode {mode!r}; expected 'paper' or 'reference'")
    if rect is None:
        return Detections.empty()
    return Detections(boxes=from_coco_xywh(rect), scores=torch.from_numpy(box_means(array, rect)), phrases=None)


def _largest_paper_rect(array: np.ndarray, threshold: float, min_side_fraction: float) -> np.ndarray | None:
    binary = (array > threshold).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rects = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64).reshape(-1, 4)
    kept = [c for c, r in zip(contours, rects) if len(_side_filter(r[None], array.shape, min_side_fraction))]
    if not kept:
        return None
    # Largest by enclosed area; a one-pixel-wide contour has area 0, so fall back to point count.
    largest = max(kept, key=lambda c: (cv2.contourArea(c), len(c)))
    return np.array([cv2.boundingRect(largest)], dtype=np.int64)


def _largest_reference_rect(array: np.ndarray, threshold: float) -> np.ndarray | None:
    gray = cubehelix_gray(array)
    _, kept = cv2.threshold(gray, int(threshold * int(gray.max())), 255, cv2.THRESH_TOZERO)
    contours, _ = cv2.findContours(kept, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    return np.array([cv2.boundingRect(max(contours, key=cv2.contourArea))], dtype=np.int64)


def _wsg_paper(array: np.ndarray, threshold: float, nms_iou: float, min_score_ratio: float,
               min_area_ratio: float, min_side_fraction: float) -> Detections:
    binary = (array > threshold).astype(np.uint8)
    rects = _area_filter(_contour_rects(binary, cv2.RETR_EXTERNAL), array.shape, min_area_ratio)
    rects = _side_filter(rects, array.shape, min_side_fraction)
    if len(rects) == 0:
        return Detections.empty()
    boxes = from_coco_xywh(rects)
    scores = torch.from_numpy(box_means(array, rects))
    keep = nms(boxes, scores, nms_iou)  # sorted by decreasing score
    boxes, scores = boxes[keep], scores[keep]
    strong = scores >= min_score_ratio * scores.max()
    return Detections(boxes=boxes[strong], scores=scores[strong], phrases=None)


def cubehelix_gray(array: np.ndarray) -> np.ndarray:
    """The released code's gray image: min-max normalise, cubehelix colours, uint8 RGB → gray.

    The normalisation runs in float64 as the released code's numpy: in float32 a value can land
    on the other side of a colour-map bin edge (k/256) and change the gray level.
    """
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    normalised = (values - low) / (high - low) if high > low else np.zeros_like(values)
    rgb = (colormaps["cubehelix"](normalised)[..., :3] * 255).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _wsg_reference(array: np.ndarray, threshold: float, nms_iou: float, min_score_ratio: float,
                   min_area_ratio: float) -> Detections:
    gray = cubehelix_gray(array)
    _, kept = cv2.threshold(gray, int(threshold * int(gray.max())), 255, cv2.THRESH_TOZERO)
    rects = _area_filter(_contour_rects(kept, cv2.RETR_TREE), array.shape, min_area_ratio)
    if len(rects) == 0:
        return Detections(boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0]]), scores=torch.zeros(1), phrases=None)
    conf = torch.from_numpy(box_means(kept.astype(np.float32), rects) / 255.0)
    as_coded = torch.as_tensor(rects, dtype=torch.float32)  # (x, y, w, h) fed to an xyxy NMS, as coded
    keep = nms(as_coded, conf, nms_iou)
    conf_kept = conf[keep]
    strong = keep[conf_kept > min_score_ratio * conf_kept.max()]
    survivors = from_coco_xywh(rects[strong.numpy()])
    union = torch.cat([survivors[:, :2].min(dim=0).values, survivors[:, 2:].max(dim=0).values])
    return Detections(boxes=union[None], scores=conf[strong].max()[None], phrases=None)


def wsg_boxes(heatmap: torch.Tensor | np.ndarray, threshold: float = WSG_THRESHOLD, nms_iou: float | None = None,
              min_score_ratio: float = 0.5, mode: BoxMode = "paper", min_area_ratio: float = 0.0,
              min_side_fraction: float = MIN_SIDE_FRACTION) -> Detections:
    """WSG boxes from one heatmap (see the module docstring for both modes).

    ``nms_iou`` defaults to 0.3 in ``"paper"`` mode and 0.05 in ``"reference"`` mode.
    ``min_area_ratio`` drops contour boxes not larger than that fraction of the map (0 = off, as the
    paper and the released code; the BBR follow-up uses 0.05); ``min_side_fraction`` is the paper
    mode's minimum box side (module docstring; 0 = off).
    Paper mode returns the boxes sorted by decreasing score (possibly none); reference mode
    always returns exactly one box.
    """
    array = _as_numpy_map(heatmap)
    if mode == "paper":
        return _wsg_paper(array, threshold, WSG_NMS_IOU["paper"] if nms_iou is None else nms_iou, min_score_ratio, min_area_ratio,
                          min_side_fraction)
    if mode == "reference":
        return _wsg_reference(array, threshold, WSG_NMS_IOU["reference"] if nms_iou is None else nms_iou, min_score_ratio, min_area_ratio)
    raise ValueError(f"unknown box mode {mode!r}; expected 'paper' or 'reference'")


@dataclass(frozen=True)
class BoxRule:
    """Heatmap → boxes with every setting of the rule in one object.

    ``rule="wsg"`` (:func:`wsg_boxes`: ``mode="paper"`` threshold 0.5, NMS 0.3, 50 % filter, or
    ``mode="reference"``, the released ``generate_bbox``); ``rule="wsol"`` (:func:`wsol_box`: the
    largest contour above 0.1, of the map or, in reference mode, of its cubehelix gray).
    ``threshold`` / ``nms_iou`` of ``None`` take the rule's defaults; NMS and the score / area
    filters belong to the WSG rule only.
    """

    rule: RuleName = "wsg"
    mode: BoxMode = "paper"
    threshold: float | None = None
    nms_iou: float | None = None
    min_score_ratio: float = 0.5
    min_area_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.rule not in BOX_RULES:
            raise ValueError(f"unknown box rule {self.rule!r}; expected 'wsg' or 'wsol'")
        if self.mode not in BOX_MODES:
            raise ValueError(f"unknown box mode {self.mode!r}; expected 'paper' or 'reference'")
        if self.rule == "wsol" and self.nms_iou is not None:
            raise ValueError("the WSOL rule keeps one box and has no NMS; nms_iou applies to the WSG rule only")

    def detect(self, heatmap: torch.Tensor | np.ndarray) -> Detections:
        """The boxes of one ``H×W`` heatmap."""
        if self.rule == "wsol":
            return wsol_box(heatmap, threshold=WSOL_THRESHOLD if self.threshold is None else self.threshold,
                            mode=self.mode)
        return wsg_boxes(heatmap, threshold=WSG_THRESHOLD if self.threshold is None else self.threshold,
                         nms_iou=self.nms_iou, min_score_ratio=self.min_score_ratio, mode=self.mode,
                         min_area_ratio=self.min_area_ratio)

    def __call__(self, heatmaps: torch.Tensor, phrases: Sequence[str]) -> Detections:
        """Boxes for a stack of ``P×H×W`` heatmaps, each box labelled with its heatmap's phrase."""
        if heatmaps.ndim != 3 or heatmaps.shape[0] != len(phrases):
            raise ValueError(f"expected {len(phrases)} heatmaps of shape P×H×W, got {tuple(heatmaps.shape)}")
        per_map = [self.detect(heatmap) for heatmap in heatmaps]
        labels = [phrase for phrase, dets in zip(phrases, per_map) for _ in range(len(dets.scores))]
        return Detections(boxes=torch.cat([d.boxes for d in per_map]) if per_map else torch.zeros((0, 4)),
                          scores=torch.cat([d.scores for d in per_map]) if per_map else torch.zeros(0),
                          phrases=labels)
