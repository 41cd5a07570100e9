"""Typed results of grounding (WSG) and of what-is-where (WWbL) inference."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from wwbl.boxes import Detections, denormalize_boxes, normalize_boxes
from wwbl.images import resize_heatmap


@dataclass
class GroundingResult:
    """One image's answer: per phrase a heatmap, and the boxes (each labelled with its phrase).

    ``image_size`` is ``(height, width)`` of the original image; ``heatmaps`` is ``P×H×W`` in
    [0, 1] in that frame, one per entry of ``phrases``; ``detections.boxes`` are absolute ``xyxy``.
    """

    image_size: tuple[int, int]
    phrases: list[str]
    heatmaps: torch.Tensor
    detections: Detections

    def boxes_for(self, phrase: str) -> Detections:
        """The detections labelled with ``phrase``."""
        labels = self.detections.phrases or []
        keep = [i for i, label in enumerate(labels) if label == phrase]
        return self.detections.select(keep)


@dataclass
class DetectionResult(GroundingResult):
    """A WWbL answer (Algorithm 1): the phrases were found by captioning proposals.

    ``proposals`` (``N×4`` xyxy) were captioned into ``captions``; ``clusters`` hold indices into
    ``captions`` (only non-empty captions are clustered), one cluster per entry of ``phrases``.
    """

    proposals: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    captions: list[str] = field(default_factory=list)
    clusters: list[list[int]] = field(default_factory=list)


@dataclass
class IterativeResult(GroundingResult):
    """An answer of the iterative variant (Appendix A / the reference's "algorithm 2").

    Step ``k`` captioned the (progressively blacked-out) image as ``phrases[k]``, localised it as
    ``detections.boxes[k]``, captioned that crop as ``crop_captions[k]`` and scored the agreement of
    the two captions in CLIP space as ``confidences[k]``.
    """

    crop_captions: list[str] = field(default_factory=list)
    confidences: torch.Tensor = field(default_factory=lambda: torch.zeros(0))


def in_frame(result: GroundingResult, image_size: tuple[int, int]) -> GroundingResult:
    """``result`` (computed on a working copy of the image) mapped to the ``(height, width)`` frame of
    the original: boxes and proposals scaled per axis (a working-frame x lands at ``x · W / w``),
    heatmaps resized bilinearly (``align_corners=False``, the same pixel-edge convention)."""
    if tuple(result.image_size) == tuple(image_size):
        return result
    work = result.image_size

    def scaled(boxes: torch.Tensor) -> torch.Tensor:
        return denormalize_boxes(normalize_boxes(boxes, work), image_size)

    changes = {"image_size": tuple(image_size),
               "heatmaps": resize_heatmap(result.heatmaps, tuple(image_size), align_corners=False),
               "detections": replace(result.detections, boxes=scaled(result.detections.boxes))}
    if isinstance(result, DetectionResult):
        changes["proposals"] = scaled(result.proposals)
    return replace(result, **changes)
