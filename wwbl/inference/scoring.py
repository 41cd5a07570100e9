"""Detection confidence: a box score that a user can threshold, comparable across phrases and images.

Why a second score: the box rules (:mod:`wwbl.box_rules`) cut boxes from min-max-normalised maps, so
the rule's own score — the mean normalised heat inside the box — is about 0.8 for *any* phrase,
whether or not its object is in the image: the normalisation removes exactly the information
"how much heat is there at all". The box geometry stays the rule's (the papers' and the released
code's numbers do not move); only the score attached to each box changes.

The confidence of a box ``b`` cut from the map of phrase ``t`` in image ``I``:

* ``clip(b) = max(0, cos(E_I(view(I, b)), E_T(t)))`` — the frozen CLIP's cosine between the box and
  the phrase (with the extractor's text prefix, as the map was made). It asks "is *this* in the
  box", independently of the map. ``view`` (``Scoring.view``): ``"context"`` (default) is the whole
  frame at CLIP's input with everything outside the box blanked to CLIP's mean colour — the box in
  place and at its scale, as L_fore shows CLIP g's masks; ``"crop"`` resizes the box to CLIP's input
  (``roi_align``), which blows a small object up beyond the sizes CLIP saw in training. On the shapes
  world's test split, with ground-truth boxes, the shapes CLIP names an object among the scene's
  phrases 89 % of the time in the context view and 76 % in the crop view, and tells it from the
  other shapes of its colour 72 % against 44 % (``docs/shapes_report/scores.md``).
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

:class:`Scoring` carries the user knobs through every door (``wwbl.load(scoring=Scoring(...))``,
``infer.py`` and ``python -m wwbl.evaluation --score-threshold / --cross-phrase-iou / --top-k /
--score-view``): boxes under ``threshold`` are dropped (so a phrase whose object is absent can get no
box); ``cross_phrase_iou`` keeps, of overlapping boxes of different phrases, only the most confident
(Algorithm 1 names one object by every caption cluster that covers it — "a green square" and "a
green cross" for the same square — and this leaves it the name CLIP finds best; class-agnostic NMS,
off by default as the paper has none); ``top_k`` keeps an image's ``k`` most confident boxes. The
views of all boxes of a batch of images go through CLIP together.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor
from torchvision.ops import box_iou, roi_align

from wwbl.boxes import Detections
from wwbl.defaults import SCORE_VIEWS
from wwbl.extractors.base import HeatmapExtractor
from wwbl.images import as_tensor01

CROPS_PER_FORWARD = 256  # bounds CLIP's activation memory on batches with very many boxes


@dataclass(frozen=True)
class Scoring:
    """How boxes are scored and which are kept.

    ``view``: how CLIP sees a box (:data:`SCORE_VIEWS`). ``threshold``: keep boxes scoring at least
    this (None: all). ``cross_phrase_iou``: of boxes of *different* phrases overlapping by more than
    this IoU, keep only the most confident (one name per object; None: off). ``top_k``: then keep an
    image's ``k`` most confident boxes (None: all). Defaults keep everything.
    """

    threshold: float | None = None
    top_k: int | None = None
    view: str = SCORE_VIEWS[0]
    cross_phrase_iou: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"score_threshold must lie in [0, 1], got {self.threshold}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.view not in SCORE_VIEWS:
            raise ValueError(f"score view must be one of {SCORE_VIEWS}, got {self.view!r}")
        if self.cross_phrase_iou is not None and not 0.0 <= self.cross_phrase_iou <= 1.0:
            raise ValueError(f"cross_phrase_iou must lie in [0, 1], got {self.cross_phrase_iou}")

    def keep(self, detections: Detections) -> Detections:
        """One image's detections filtered by threshold, then across phrases, then the top k (those in
        decreasing confidence); without ``top_k`` the kept boxes stay in their order."""
        kept = detections if self.threshold is None else detections.select(detections.scores >= self.threshold)
        if self.cross_phrase_iou is not None:
            kept = kept.select(cross_phrase_survivors(kept, self.cross_phrase_iou))
        if self.top_k is None:
            return kept
        return kept.select(kept.scores.argsort(descending=True, stable=True)[:self.top_k])


def cross_phrase_survivors(detections: Detections, iou: float) -> Tensor:
    """Indices (ascending) of the boxes that no more confident box of another phrase overlaps by more
    than ``iou``: greedy, most confident first, boxes of the same phrase never suppress each other."""
    count = len(detections)
    if count == 0:
        return torch.zeros(0, dtype=torch.long)
    phrases = detections.phrases or [""] * count
    names = {p: i for i, p in enumerate(dict.fromkeys(phrases))}
    label = torch.tensor([names[p] for p in phrases])
    overlaps = (box_iou(detections.boxes.float(), detections.boxes.float()) > iou) & (label[:, None] != label[None])
    alive = torch.ones(count, dtype=torch.bool)
    for i in detections.scores.argsort(descending=True, stable=True).tolist():  # greedy by nature
        if alive[i]:
            alive &= ~overlaps[i]
    return alive.nonzero().flatten()


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


def box_masks(boxes: Tensor, size_hw: tuple[int, int], side: int) -> Tensor:
    """N×side×side masks of ``boxes`` (xyxy in an ``size_hw`` image) on CLIP's square input grid: the
    fraction of each input pixel the box covers (so a box narrower than a pixel still counts)."""
    height, width = size_hw
    scale = torch.tensor([side / width, side / height, side / width, side / height])
    b = boxes.float() * scale
    cells = torch.arange(side, dtype=torch.float32)
    def coverage(start: Tensor, end: Tensor) -> Tensor:
        return (torch.minimum(end[:, None], cells + 1) - torch.maximum(start[:, None], cells)).clamp(0, 1)
    return coverage(b[:, 1], b[:, 3])[:, :, None] * coverage(b[:, 0], b[:, 2])[:, None, :]


def _views(clip: object, image: Tensor, boxes: Tensor, view: str) -> Tensor:
    """CLIP inputs (prepared: resized and normalised) of one image's boxes in the chosen ``view``."""
    side = clip.image_size
    if view == "crop":
        crops = roi_align(image[None].float(), [boxes.float()], output_size=(side, side), spatial_scale=1.0,
                          sampling_ratio=2, aligned=True)
        return clip.prepare(crops)
    whole = clip.prepare(image[None].float())  # normalised: 0 is CLIP's mean colour
    return whole * box_masks(boxes, image.shape[-2:], side).to(whole)[:, None]


@torch.no_grad()
def box_similarity(extractor: HeatmapExtractor, images: Sequence[Tensor], boxes: Sequence[Tensor],
                   phrases: Sequence[Sequence[str]], view: str = SCORE_VIEWS[0]) -> list[Tensor]:
    """Per image the CLIP cosine of each box (seen in ``view``, :data:`SCORE_VIEWS`) with that box's phrase."""
    if view not in SCORE_VIEWS:
        raise ValueError(f"unknown score view {view!r}; choose one of {SCORE_VIEWS}")
    clip = extractor.clip
    counts = [len(b) for b in boxes]
    views = [_views(clip, image, b, view) for image, b in zip(images, boxes) if len(b)]
    if not views:
        return [torch.zeros(0) for _ in boxes]
    stacked = torch.cat(views)
    image_emb = torch.cat([clip.encode_image_prepared(stacked[i:i + CROPS_PER_FORWARD].to(clip.device))
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
                     detections: Sequence[Detections], view: str = SCORE_VIEWS[0]) -> list[Detections]:
    """Per image the detections with ``scores`` = confidence and ``rule_scores`` = the rule's score.

    ``phrases[i]`` names the maps ``heatmaps[i]`` (``P_i×H×W``, normalised) whose raw ranges are
    ``ranges[i]``; each box is labelled with its map's phrase (a repeated phrase has one map).
    """
    labels = [list(d.phrases or []) for d in detections]
    tensors = [as_tensor01(image) for image in images]
    cosines = box_similarity(extractor, tensors, [d.boxes for d in detections], labels, view)
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
    scored = score_detections(extractor, images, phrases, heatmaps, ranges, detections, scoring.view)
    return [scoring.keep(d) for d in scored]
