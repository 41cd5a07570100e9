"""Detection confidence: a box score that a user can threshold, comparable across phrases and images.

Why a second score: the box rules (:mod:`wwbl.box_rules`) cut boxes from min-max-normalised maps, so
the rule's own score — the mean normalised heat inside the box — is about 0.8 for *any* phrase,
whether or not its object is in the image: the normalisation removes exactly the information
"how much heat is there at all". The box geometry stays the rule's (the papers' and the released
code's numbers do not move); only the score attached to each box changes.

The confidence of a box ``b`` cut from the map of phrase ``t`` in image ``I``:

* ``clip(b) = max(0, cos(E_I(crop(I, b)), E_T(t)))`` — the frozen CLIP's cosine between the crop of
  the box (bilinearly resized to CLIP's input, ``roi_align``) and the phrase (with the extractor's
  text prefix, as the map was made). It asks "is *this* in the box", independently of the map.
* ``heat(b)`` — the mean of the **raw** map inside the box, recovered from the same forward pass as
  ``min + (max − min) · normalised`` (:meth:`HeatmapExtractor.heatmaps_and_ranges`). Only where the
  raw maps are absolute (``extractor.absolute_maps``: network g, whose map is a per-pixel sigmoid, so
  an absent object leaves a cold map). Relevancy and similarity maps of the training-free methods
  are relative to themselves, their raw scale says nothing across phrases, so for them the
  confidence is the CLIP term alone.
* ``confidence = sqrt(heat · clip)`` (absolute maps) or ``clip`` — a geometric mean, so both the map
  and CLIP must agree; it lies in [0, 1]. CLIP cosines of matching pairs are small numbers
  (≈ 0.2–0.35 for OpenAI's CLIPs), so a useful threshold depends on the CLIP: the shapes world's is
  measured in ``docs/shapes_report/scores.md`` (``python -m shapes_world.score_auc``).

:class:`Scoring` carries the two user knobs through every door (``wwbl.load(score_threshold=,
top_k=)``, ``infer.py`` and ``python -m wwbl.evaluation --score-threshold / --top-k``): boxes under
``threshold`` are dropped (so a phrase whose object is absent can get no box), and ``top_k`` keeps an
image's ``k`` most confident boxes. Crops of all boxes of a batch of images go through CLIP together.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor
from torchvision.ops import roi_align

from wwbl.boxes import Detections
from wwbl.extractors.base import HeatmapExtractor
from wwbl.images import as_tensor01

CROPS_PER_FORWARD = 256  # bounds CLIP's activation memory on batches with very many boxes


@dataclass(frozen=True)
class Scoring:
    """What to keep by confidence: boxes scoring at least ``threshold`` (None: all), then an image's
    ``top_k`` most confident ones (None: all). Defaults keep everything."""

    threshold: float | None = None
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"score_threshold must lie in [0, 1], got {self.threshold}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")

    def keep(self, detections: Detections) -> Detections:
        """One image's detections filtered by threshold, then the top k (those in decreasing confidence);
        without ``top_k`` the kept boxes stay in their order."""
        kept = detections if self.threshold is None else detections.select(detections.scores >= self.threshold)
        if self.top_k is None:
            return kept
        return kept.select(kept.scores.argsort(descending=True, stable=True)[:self.top_k])


def box_heat(heatmaps: Tensor, ranges: Tensor, map_index: Tensor, boxes: Tensor) -> Tensor:
    """Mean raw heat inside each box: ``min + (max − min) · mean normalised heat`` of its map.

    ``heatmaps`` P×H×W (min-max normalised), ``ranges`` P×2 raw (min, max), ``map_index`` N (the map of
    each box), ``boxes`` N×4 xyxy; all boxes at once through one integral image per map. A box covers
    the pixels it touches (floor of the start, ceiling of the end, at least one pixel).
    """
    if len(boxes) == 0:
        return torch.zeros(0)
    height, width = heatmaps.shape[-2:]
    padded = torch.nn.functional.pad(heatmaps.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))  # P×(H+1)×(W+1)
    x0 = boxes[:, 0].floor().clamp(0, width - 1).long()
    y0 = boxes[:, 1].floor().clamp(0, height - 1).long()
    x1 = torch.maximum(boxes[:, 2].ceil().clamp(0, width).long(), x0 + 1)
    y1 = torch.maximum(boxes[:, 3].ceil().clamp(0, height).long(), y0 + 1)
    sums = padded[map_index, y1, x1] - padded[map_index, y0, x1] - padded[map_index, y1, x0] + padded[map_index, y0, x0]
    normalised = (sums / ((x1 - x0) * (y1 - y0))).float()
    low, high = ranges[map_index, 0].float(), ranges[map_index, 1].float()
    return low + (high - low) * normalised


@torch.no_grad()
def crop_similarity(extractor: HeatmapExtractor, images: Sequence[Tensor], boxes: Sequence[Tensor],
                    phrases: Sequence[Sequence[str]]) -> list[Tensor]:
    """Per image the CLIP cosine of each box's crop (resized to CLIP's input) with that box's phrase."""
    clip = extractor.clip
    side = clip.image_size
    crops = [roi_align(image[None].float(), [b.float()], output_size=(side, side), spatial_scale=1.0,
                       sampling_ratio=2, aligned=True) for image, b in zip(images, boxes) if len(b)]
    counts = [len(b) for b in boxes]
    if not crops:
        return [torch.zeros(0) for _ in boxes]
    stacked = torch.cat(crops)
    image_emb = torch.cat([clip.encode_image(stacked[i:i + CROPS_PER_FORWARD].to(clip.device))
                           for i in range(0, len(stacked), CROPS_PER_FORWARD)])
    text_emb = extractor.encode_phrases([p for per_image in phrases for p in per_image])
    cosine = (image_emb.float() * text_emb.float()).sum(-1).cpu()
    return list(cosine.split(counts))


def confidence(clip_cosine: Tensor, heat: Tensor | None) -> Tensor:
    """``sqrt(heat · max(0, cos))`` with absolute heat, else ``max(0, cos)``; in [0, 1]."""
    agreement = clip_cosine.clamp(0, 1)
    return agreement if heat is None else (heat.clamp(0, 1) * agreement).sqrt()


def score_detections(extractor: HeatmapExtractor, images: Sequence[object], phrases: Sequence[Sequence[str]],
                     heatmaps: Sequence[Tensor], ranges: Sequence[Tensor],
                     detections: Sequence[Detections]) -> list[Detections]:
    """Per image the detections with ``scores`` = confidence and ``rule_scores`` = the rule's score.

    ``phrases[i]`` names the maps ``heatmaps[i]`` (``P_i×H×W``, normalised) whose raw ranges are
    ``ranges[i]``; each box is labelled with its map's phrase (a repeated phrase has one map).
    """
    labels = [list(d.phrases or []) for d in detections]
    tensors = [as_tensor01(image) for image in images]
    cosines = crop_similarity(extractor, tensors, [d.boxes for d in detections], labels)
    out = []
    for plist, maps, span, dets, names, cos in zip(phrases, heatmaps, ranges, detections, labels, cosines):
        heat = None
        if extractor.absolute_maps:
            position = {p: i for i, p in reversed(list(enumerate(plist)))}  # a repeated phrase: its first map
            heat = box_heat(maps, span, torch.tensor([position[n] for n in names], dtype=torch.long), dets.boxes)
        out.append(Detections(dets.boxes, confidence(cos, heat), dets.phrases, rule_scores=dets.scores))
    return out


def heatmaps_for(extractor: HeatmapExtractor, scoring: Scoring | None, images: list[Image.Image],
                 phrases: list[list[str]]) -> tuple[list[Tensor], list[Tensor] | None]:
    """The maps of a pipeline and, when it scores confidences, their raw ranges (one forward pass)."""
    if scoring is None:
        return extractor.heatmaps(images, phrases), None
    return extractor.heatmaps_and_ranges(images, phrases)


def rescore(extractor: HeatmapExtractor, scoring: Scoring | None, images: Sequence[object],
            phrases: Sequence[Sequence[str]], heatmaps: Sequence[Tensor], ranges: Sequence[Tensor] | None,
            detections: list[Detections]) -> list[Detections]:
    """The rule's detections as they are (``scoring=None``) or with confidences, filtered by ``scoring``."""
    if scoring is None:
        return detections
    scored = score_detections(extractor, images, phrases, heatmaps, ranges, detections)
    return [scoring.keep(d) for d in scored]
