"""Typed results of grounding (WSG) and of what-is-where (WWbL) inference."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from wwbl.boxes import Detections


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
