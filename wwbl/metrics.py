"""Localisation metrics of the papers as ``torchmetrics.Metric`` subclasses.

Every metric keeps only sums and counts (``dist_reduce_fx="sum"``), so values are exact under DDP.
Conventions shared by all metrics:

* boxes are absolute-pixel ``xyxy`` floats in the original image frame (``wwbl.boxes`` convention);
* IoU is continuous, ``inter / (area_a + area_b - inter)`` with no ``+1`` terms (the WWbL code,
  Adapting-CLIP's ``GroundingEvaluator`` and VL-Score all compute it this way); the WSOL metrics
  take ``iou_area="inclusive"`` for the released WSOL code's pixel-inclusive areas
  ``(x2 - x1 + 1)·(y2 - y1 + 1)`` (intersection likewise);
* heatmaps are ``H×W`` float maps at the **original** image resolution (callers resize with
  ``wwbl.images.resize_heatmap``, bilinear — the reference uses ``cv2.resize``, also bilinear);
* a pointing location is ``(row, col)`` in pixel indices; of several maximal pixels the one deepest
  inside the thickest flat top (``ties="centre"``, see :func:`argmax_points`) or the first
  (``ties="first"``, the reference's ``np.argmax``).

Each update is vectorised over images: ragged inputs are padded into one batch tensor.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from wwbl.defaults import POINTING_TIES

GTMode = Literal["union", "any"]
BoxRule = Literal["union", "top1", "max"]
IoUArea = Literal["continuous", "inclusive"]
IOU_AREAS = ("continuous", "inclusive")


# ----------------------------------------------------------------------------- helpers


def _check_heatmap(heatmap: Tensor) -> None:
    if heatmap.ndim != 2 or heatmap.numel() == 0:
        raise ValueError(f"a heatmap must be a non-empty H×W tensor, got shape {tuple(heatmap.shape)}")
    if not torch.isfinite(heatmap).all():
        raise ValueError("a heatmap contains NaN or infinite values")


def as_boxes(boxes: Tensor | Sequence[Sequence[float]], allow_empty: bool = True) -> Tensor:
    """Validate a ``(K, 4)`` xyxy box tensor (float32); raises ``ValueError`` on bad boxes."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim == 1 and boxes.shape[0] == 4:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4), got {tuple(boxes.shape)}")
    if not allow_empty and boxes.shape[0] == 0:
        raise ValueError("at least one ground-truth box is required")
    if not torch.isfinite(boxes).all():
        raise ValueError("boxes contain NaN or infinite values")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(f"boxes must be xyxy with x2 >= x1 and y2 >= y1, got {boxes.tolist()}")
    return boxes


def argmax_points(heatmaps: Sequence[Tensor], ties: str = POINTING_TIES[0]) -> Tensor:
    """``(N, 2)`` long ``(row, col)`` of each heatmap's maximum.

    A unique maximum is the point, as ``argmax``. Several maximal pixels (a flat top) are resolved by
    ``ties``: ``"first"`` takes the first in row-major order (``np.argmax``, the reference);
    ``"centre"`` (default) the one deepest inside the thickest flat top (most 3×3 erosions survived;
    the map's edge counts as outside), the one nearest the centroid of those if several. A constant map
    shows no place, so it keeps the first pixel under both rules (a blank map must not score as a
    centre prior). Why "centre": g's
    released output block (BN on one channel → ReLU → a 1→1 conv) gives the map a plateau wherever that
    ReLU is dead and the last weight is negative; the shipped shapes g has about a thousand tied
    maximal pixels per 128² map, and "first" puts the point on the plateau's top edge.

    Maps of different sizes are padded right and bottom with ``-inf``; this keeps the row-major
    order of the original pixels, and the padding never ties with a maximum.
    """
    if ties not in POINTING_TIES:
        raise ValueError(f"unknown ties {ties!r}; expected one of {', '.join(POINTING_TIES)}")
    if len(heatmaps) == 0:
        return torch.zeros((0, 2), dtype=torch.long)
    for heatmap in heatmaps:
        _check_heatmap(heatmap)
    height = max(h.shape[0] for h in heatmaps)
    width = max(h.shape[1] for h in heatmaps)
    if all(h.shape == (height, width) for h in heatmaps):
        batch = torch.stack([h.float() for h in heatmaps])
    else:
        batch = heatmaps[0].new_full((len(heatmaps), height, width), float("-inf"), dtype=torch.float32)
        for i, heatmap in enumerate(heatmaps):
            batch[i, : heatmap.shape[0], : heatmap.shape[1]] = heatmap
    flat = batch.flatten(1).argmax(dim=1)
    if ties == "centre":
        pixels = torch.tensor([h.numel() for h in heatmaps], device=batch.device)
        flat = _centre_of_ties(batch, flat, pixels)
    return torch.stack([flat // width, flat % width], dim=1)


def _centre_of_ties(batch: Tensor, first: Tensor, pixels: Tensor) -> Tensor:
    """Flat indices: ``first`` where a map's maximum is unique or the map constant (``pixels``: each
    map's own size); else, among the tied pixels farthest (chessboard distance) from any untied pixel
    or the map's edge, the one nearest their centroid."""
    best = batch.flatten(1).max(dim=1).values
    count = (batch >= best[:, None, None]).flatten(1).sum(dim=1)
    several = (count > 1) & (count < pixels)
    if not several.any():
        return first
    tied = batch[several] >= best[several, None, None]
    depth = _depth(tied)
    deepest = depth == depth.flatten(1).max(dim=1).values[:, None, None]
    rows = torch.arange(tied.shape[1], device=tied.device, dtype=torch.float32)[None, :, None]
    cols = torch.arange(tied.shape[2], device=tied.device, dtype=torch.float32)[None, None, :]
    weight = deepest.float()
    count = weight.sum(dim=(1, 2))
    centre_row = (weight * rows).sum(dim=(1, 2)) / count
    centre_col = (weight * cols).sum(dim=(1, 2)) / count
    distance = (rows - centre_row[:, None, None]) ** 2 + (cols - centre_col[:, None, None]) ** 2
    out = first.clone()
    out[several] = distance.masked_fill(~deepest, float("inf")).flatten(1).argmin(dim=1)
    return out


def _depth(mask: Tensor) -> Tensor:
    """Per pixel of the N×H×W boolean ``mask``: how many 3×3 erosions it survives (outside counts as False)."""
    depth = torch.zeros(mask.shape, dtype=torch.int32, device=mask.device)
    current = mask
    while current.any():  # as many passes as the deepest flat top is thick
        depth += current.int()
        padded = F.pad(current.float()[:, None], (1, 1, 1, 1), value=0.0)
        current = (-F.max_pool2d(-padded, 3, stride=1))[:, 0] > 0.5
    return depth


def pad_boxes(boxes: Sequence[Tensor], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Stack ragged ``(K_i, 4)`` box sets into ``(N, K, 4)`` plus a validity mask ``(N, K)``."""
    sets = [as_boxes(b) for b in boxes]
    count = max([len(s) for s in sets], default=0)
    padded = torch.zeros((len(sets), max(count, 1), 4), device=device)
    valid = torch.zeros((len(sets), max(count, 1)), dtype=torch.bool, device=device)
    for i, s in enumerate(sets):
        padded[i, : len(s)] = s.to(padded.device)
        valid[i, : len(s)] = True
    return padded, valid


def union_of_padded(boxes: Tensor, valid: Tensor) -> Tensor:
    """``(N, 4)`` union box of each padded set (``min x1, min y1, max x2, max y2``)."""
    inf = torch.tensor(float("inf"), device=boxes.device)
    low = torch.where(valid[..., None], boxes[..., :2], inf).amin(dim=1)
    high = torch.where(valid[..., None], boxes[..., 2:], -inf).amax(dim=1)
    return torch.cat([low, high], dim=1)


def pairwise_iou(a: Tensor, b: Tensor, iou_area: IoUArea = "continuous") -> Tensor:
    """IoU of ``(..., A, 4)`` against ``(..., B, 4)`` boxes → ``(..., A, B)``; empty union → 0.

    ``iou_area="inclusive"`` counts pixels with both end coordinates included (``+1`` on every
    side length), as the released WSOL code.
    """
    if iou_area not in IOU_AREAS:
        raise ValueError(f"unknown iou_area {iou_area!r}; expected one of {IOU_AREAS}")
    extra = 1.0 if iou_area == "inclusive" else 0.0
    a, b = a[..., :, None, :], b[..., None, :, :]
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2]) + extra).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0] + extra) * (a[..., 3] - a[..., 1] + extra)
    area_b = (b[..., 2] - b[..., 0] + extra) * (b[..., 3] - b[..., 1] + extra)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def points_in_boxes(points: Tensor, gt_boxes: Sequence[Tensor], gt_mode: GTMode = "union") -> Tensor:
    """``(N,)`` bool: is point ``(row, col)`` inside the GT (inclusive ``x1 <= col <= x2``, rows alike).

    ``gt_mode="union"`` tests the union box of each GT set (the reference, lenient for Flickr
    entities with several boxes); ``"any"`` tests whether some single GT box contains the point.
    """
    if gt_mode not in ("union", "any"):
        raise ValueError(f"unknown gt_mode {gt_mode!r}; expected 'union' or 'any'")
    if any(len(as_boxes(b)) == 0 for b in gt_boxes):
        raise ValueError("every item needs at least one ground-truth box")
    boxes, valid = pad_boxes(gt_boxes, device=points.device)
    if gt_mode == "union":
        boxes, valid = union_of_padded(boxes, valid)[:, None], valid.any(dim=1, keepdim=True)
    row, col = points[:, 0:1].float(), points[:, 1:2].float()
    inside = (boxes[..., 0] <= col) & (col <= boxes[..., 2]) & (boxes[..., 1] <= row) & (row <= boxes[..., 3])
    return (inside & valid).any(dim=1)


def box_ious(pred_boxes: Sequence[Tensor], gt_boxes: Sequence[Tensor], box_rule: BoxRule = "union",
             iou_area: IoUArea = "continuous") -> Tensor:
    """``(N,)`` IoU per item under ``box_rule``; an item without predicted boxes scores 0.

    * ``"union"``: IoU(union of predicted boxes, union of GT boxes) — the WWbL reference.
    * ``"top1"``: IoU(first predicted box, union of GT boxes) — one box per query (Adapting-CLIP,
      ZSGNet; predictions are sorted by decreasing score, as ``wsg_boxes`` returns them).
    * ``"max"``: max IoU over all (predicted, GT) pairs — WSOL GT-known loc on ImageNet, VL-Score.
    """
    if box_rule not in ("union", "top1", "max"):
        raise ValueError(f"unknown box_rule {box_rule!r}; expected 'union', 'top1' or 'max'")
    if len(pred_boxes) != len(gt_boxes):
        raise ValueError(f"{len(pred_boxes)} predicted box sets for {len(gt_boxes)} ground-truth sets")
    if len(gt_boxes) == 0:
        return torch.zeros(0)
    if any(len(as_boxes(b)) == 0 for b in gt_boxes):
        raise ValueError("every item needs at least one ground-truth box")
    gt, gt_valid = pad_boxes(gt_boxes)
    pred, pred_valid = pad_boxes(pred_boxes)
    has_pred = pred_valid.any(dim=1)
    if box_rule == "max":
        ious = pairwise_iou(pred, gt, iou_area)
        ious = torch.where(pred_valid[:, :, None] & gt_valid[:, None, :], ious, torch.zeros_like(ious))
        return ious.flatten(1).amax(dim=1)
    gt_union = union_of_padded(gt, gt_valid)
    chosen = union_of_padded(pred, pred_valid) if box_rule == "union" else pred[:, 0]
    chosen = torch.where(has_pred[:, None], chosen, torch.zeros_like(chosen))
    ious = pairwise_iou(chosen[:, None], gt_union[:, None], iou_area)[:, 0, 0]
    return torch.where(has_pred, ious, torch.zeros_like(ious))


def _passes(ious: Tensor, threshold: float, strict: bool) -> Tensor:
    return ious > threshold if strict else ious >= threshold


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return num.float() / den.float() if den > 0 else torch.tensor(float("nan"), device=num.device)


def nearest_captions(pred_embeddings: Sequence[Tensor], gt_embeddings: Sequence[Tensor]) -> list[Tensor | None]:
    """Per image, the index of the predicted caption nearest (dot product) to each GT embedding;
    ``None`` for an image without predictions. All images are matched in one masked product."""
    sizes_p = [len(e) for e in pred_embeddings]
    sizes_g = [len(e) for e in gt_embeddings]
    if sum(sizes_p) == 0 or sum(sizes_g) == 0:
        return [None if p == 0 else torch.zeros(0, dtype=torch.long) for p in sizes_p]
    preds = torch.cat([e.detach().float().cpu().reshape(len(e), -1) for e in pred_embeddings if len(e)])
    gts = torch.cat([e.detach().float().cpu().reshape(len(e), -1) for e in gt_embeddings if len(e)])
    owner_p = torch.repeat_interleave(torch.arange(len(sizes_p)), torch.tensor(sizes_p))
    owner_g = torch.repeat_interleave(torch.arange(len(sizes_g)), torch.tensor(sizes_g))
    sims = (gts @ preds.T).masked_fill(owner_g[:, None] != owner_p[None, :], float("-inf"))
    start_p = torch.tensor([0, *sizes_p]).cumsum(0)[:-1]
    local = sims.argmax(dim=1) - start_p[owner_g]
    per_image = local.split(sizes_g)
    return [None if p == 0 else m for p, m in zip(sizes_p, per_image)]


# ----------------------------------------------------------------------------- grounding


class PointingAccuracy(Metric):
    """Pointing game (WWbL §6.3, ``isCorrectHit``).

    Protocol: the heatmap at the original image resolution; the point is its maximum (flat tops
    resolved by ``ties``, see :func:`argmax_points`); a hit iff ``x1 <= col <= x2`` and ``y1 <= row <= y2`` (inclusive)
    for the union GT box (``gt_mode="union"``, the reference; Flickr entities use the union of
    their boxes) or for some GT box (``gt_mode="any"``). Accuracy = hits / items, in [0, 1].
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, gt_mode: GTMode = "union", ties: str = POINTING_TIES[0], **kwargs) -> None:
        super().__init__(**kwargs)
        if gt_mode not in ("union", "any"):
            raise ValueError(f"unknown gt_mode {gt_mode!r}; expected 'union' or 'any'")
        if ties not in POINTING_TIES:
            raise ValueError(f"unknown ties {ties!r}; expected one of {', '.join(POINTING_TIES)}")
        self.gt_mode, self.ties = gt_mode, ties
        self.add_state("hits", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, heatmaps: Sequence[Tensor] | None, gt_boxes: Sequence[Tensor], points: Tensor | None = None) -> None:
        """``heatmaps``: one ``H_i×W_i`` map per item; ``gt_boxes``: its ``(K_i, 4)`` GT boxes.
        Pass ``heatmaps=None`` and ``points`` ``(N, 2)`` ``(row, col)`` for precomputed argmax points."""
        if points is None:
            if heatmaps is None or len(heatmaps) != len(gt_boxes):
                raise ValueError("give one heatmap per ground-truth set (or precomputed points)")
            points = argmax_points(heatmaps, self.ties)
        points = torch.as_tensor(points).reshape(-1, 2)
        if len(points) != len(gt_boxes):
            raise ValueError(f"{len(points)} points for {len(gt_boxes)} ground-truth sets")
        if len(points) == 0:
            return
        hits = points_in_boxes(points, gt_boxes, self.gt_mode)
        self.hits += int(hits.sum())
        self.total += len(points)

    def compute(self) -> Tensor:
        return _ratio(self.hits, self.total)


class BoxAccuracy(Metric):
    """Box accuracy: fraction of items whose IoU passes the threshold.

    Protocol (defaults = WWbL reference ``calc_correctness``): predicted boxes come from
    ``wwbl.box_rules.wsg_boxes`` (or any box rule, passed in precomputed), the GT
    is the union of the item's GT boxes, and the item is correct iff ``IoU >= iou_threshold``
    (``strict=True``: ``IoU > iou_threshold``). ``box_rule`` picks which IoU (see
    :func:`box_ious`): ``"union"`` (union of predicted boxes, the reference), ``"top1"`` (the
    first, best-scoring box) or ``"max"`` (best pair). No predicted box → a miss.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, iou_threshold: float = 0.5, strict: bool = False, box_rule: BoxRule = "union",
                 iou_area: IoUArea = "continuous", **kwargs) -> None:
        super().__init__(**kwargs)
        if box_rule not in ("union", "top1", "max"):
            raise ValueError(f"unknown box_rule {box_rule!r}; expected 'union', 'top1' or 'max'")
        if iou_area not in IOU_AREAS:
            raise ValueError(f"unknown iou_area {iou_area!r}; expected one of {IOU_AREAS}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
        self.iou_threshold, self.strict, self.box_rule, self.iou_area = iou_threshold, strict, box_rule, iou_area
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("iou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred_boxes: Sequence[Tensor], gt_boxes: Sequence[Tensor]) -> None:
        """``pred_boxes``: ``(M_i, 4)`` per item, sorted by decreasing score; ``gt_boxes``: ``(K_i, 4)``."""
        ious = box_ious(pred_boxes, gt_boxes, self.box_rule, self.iou_area)
        self.correct += int(_passes(ious, self.iou_threshold, self.strict).sum())
        self.total += len(ious)
        self.iou_sum += float(ious.double().sum())

    def compute(self) -> Tensor:
        return _ratio(self.correct, self.total)

    def mean_iou(self) -> Tensor:
        """Mean IoU of the chosen box over all items (synchronised like ``compute``)."""
        return _ratio(self.iou_sum, self.total)


class AccAtIoU(BoxAccuracy):
    """Acc@thr of Adapting-CLIP / ZSGNet: one box per query, correct iff ``IoU > thr`` (strict).

    The thresholds follow ZSGNet: 0.5 for Flickr30k, 0.3 for Visual Genome. The box is the first
    (best-scoring) prediction, the GT the row's single box (union if several).
    """

    def __init__(self, iou_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(iou_threshold=iou_threshold, strict=True, box_rule="top1", **kwargs)


class WWbLMetric(Metric):
    """The WWbL metric (paper §4, reference ``wwbl_algo1_point_metric.py``).

    Protocol: for every GT item of an image, its text embedding (the mean of its phrases'
    normalised CLIP embeddings; argmax is unaffected by re-normalising) is compared by dot product
    with the embeddings of the image's predicted captions; the nearest caption's heatmap is scored
    with the pointing game (:class:`PointingAccuracy` rules) and its boxes with
    :class:`BoxAccuracy` rules against the item's GT boxes.

    Images with no prediction: by default every GT item of such an image counts as a miss for both
    accuracies. ``drop_empty=True`` reproduces the reference, which silently excluded those images
    from the denominator. ``compute`` returns ``{"pointing", "box", "empty_images", "items"}``.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, iou_threshold: float = 0.5, strict: bool = False, gt_mode: GTMode = "union",
                 box_rule: BoxRule = "union", drop_empty: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.iou_threshold, self.strict, self.gt_mode = iou_threshold, strict, gt_mode
        self.box_rule, self.drop_empty = box_rule, drop_empty
        for name in ("point_hits", "box_hits", "total", "empty_images"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred_embeddings: Sequence[Tensor] | None, pred_points: Sequence[Tensor],
               pred_boxes: Sequence[Sequence[Tensor]], gt_embeddings: Sequence[Tensor] | None,
               gt_boxes: Sequence[Sequence[Tensor]], matches: Sequence[Tensor | None] | None = None) -> None:
        """Per image ``i``: ``pred_embeddings[i]`` ``(P_i, D)`` caption embeddings, ``pred_points[i]``
        ``(P_i, 2)`` argmax ``(row, col)`` of each caption's heatmap (see :func:`argmax_points`),
        ``pred_boxes[i]`` ``P_i`` box sets ``(M, 4)``; ``gt_embeddings[i]`` ``(G_i, D)`` and
        ``gt_boxes[i]`` ``G_i`` GT box sets. With the matching already done, pass the embeddings as
        ``None`` and ``matches[i]`` ``(G_i,)`` (nearest caption per GT item; ``None`` = no prediction)."""
        if matches is None:
            if pred_embeddings is None or gt_embeddings is None or len(pred_embeddings) != len(gt_embeddings):
                raise ValueError("pred_embeddings and gt_embeddings need one entry per image (or pass matches)")
            matches = nearest_captions(pred_embeddings, gt_embeddings)
        if len({len(matches), len(pred_points), len(pred_boxes), len(gt_boxes)}) != 1:
            raise ValueError("matches, pred_points, pred_boxes and gt_boxes need one entry per image")
        matched_points, matched_boxes, matched_gt = [], [], []
        for match, points, boxes, gts in zip(matches, pred_points, pred_boxes, gt_boxes):
            if match is None or len(points) == 0:
                self.empty_images += 1
                if not self.drop_empty:
                    self.total += len(gts)
                continue
            match = torch.as_tensor(match, dtype=torch.long).reshape(-1)
            if len(match) != len(gts) or len(points) != len(boxes) or (match >= len(points)).any():
                raise ValueError("per-image match/prediction/GT lengths disagree")
            matched_points.append(torch.as_tensor(points).reshape(-1, 2)[match])
            matched_boxes.extend(boxes[j] for j in match.tolist())
            matched_gt.extend(gts)
        if not matched_gt:
            return
        hits = points_in_boxes(torch.cat(matched_points), matched_gt, self.gt_mode)
        ious = box_ious(matched_boxes, matched_gt, self.box_rule)
        self.point_hits += int(hits.sum())
        self.box_hits += int(_passes(ious, self.iou_threshold, self.strict).sum())
        self.total += len(matched_gt)

    def compute(self) -> dict[str, Tensor]:
        return {"pointing": _ratio(self.point_hits, self.total), "box": _ratio(self.box_hits, self.total),
                "empty_images": self.empty_images.clone(), "items": self.total.clone()}


# ----------------------------------------------------------------------------- WSOL


class GTKnownLoc(BoxAccuracy):
    """WSOL GT-known localisation: max IoU over (predicted, GT) box pairs ``>= iou_threshold``.

    WWbL (Tables 2, 3) predicts one box per image (``wsol_box``: largest contour above 0.1) and
    uses ``>=``; ImageNet images with several GT boxes take the maximum over them. VL-Score wrote
    "larger than 0.5": pass ``strict=True`` for that reading. ``iou_area="inclusive"`` adds the
    released WSOL code's ``+1`` pixel terms (default ``"continuous"``).
    """

    def __init__(self, iou_threshold: float = 0.5, strict: bool = False, iou_area: IoUArea = "continuous",
                 **kwargs) -> None:
        super().__init__(iou_threshold=iou_threshold, strict=strict, box_rule="max", iou_area=iou_area, **kwargs)


class TopKLoc(Metric):
    """VL-Score localisation: GT-known, top-1 and top-5 loc plus classification and mean box IoU.

    Protocol: box IoU = max over (predicted, GT) pairs (for the GT class's heatmap); GT-known loc
    counts IoU passing the threshold; top-k loc additionally requires the GT label among the top-k
    zero-shot class scores. ``compute`` returns ``gt_known_loc``, ``top{k}_loc``, ``top{k}_cls``
    for each ``k`` in ``topk`` and ``mean_iou``.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, topk: Sequence[int] = (1, 5), iou_threshold: float = 0.5, strict: bool = False,
                 iou_area: IoUArea = "continuous", **kwargs) -> None:
        super().__init__(**kwargs)
        if not topk or min(topk) < 1:
            raise ValueError(f"topk must be positive integers, got {topk}")
        if iou_area not in IOU_AREAS:
            raise ValueError(f"unknown iou_area {iou_area!r}; expected one of {IOU_AREAS}")
        self.topk, self.iou_threshold, self.strict = tuple(int(k) for k in topk), iou_threshold, strict
        self.iou_area = iou_area
        self.add_state("loc", default=torch.zeros(len(self.topk), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("cls", default=torch.zeros(len(self.topk), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("gt_known", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("iou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred_boxes: Sequence[Tensor], gt_boxes: Sequence[Tensor], class_scores: Tensor | None,
               labels: Tensor, ranked: Tensor | None = None) -> None:
        """``class_scores``: ``(N, C)`` zero-shot scores; ``labels``: ``(N,)`` GT class indices. Instead
        of scores, ``ranked`` ``(N, K)`` may give class indices by decreasing score (``K >= max(topk)``)."""
        if ranked is None:
            if class_scores is None or class_scores.ndim != 2 or class_scores.shape[0] != len(gt_boxes):
                raise ValueError("class_scores must be (N, C) with one row per item (or pass ranked)")
            if max(self.topk) > class_scores.shape[1]:
                raise ValueError(f"top-{max(self.topk)} needs at least that many classes, got {class_scores.shape[1]}")
            ranked = class_scores.topk(max(self.topk), dim=1).indices
        labels = torch.as_tensor(labels).long().reshape(-1).cpu()
        ranked = torch.as_tensor(ranked).long().cpu()
        if ranked.ndim != 2 or len(ranked) != len(labels) or len(labels) != len(gt_boxes):
            raise ValueError("ranked must be (N, K) with one row and one label per item")
        if ranked.shape[1] < max(self.topk):
            raise ValueError(f"top-{max(self.topk)} needs {max(self.topk)} ranked classes, got {ranked.shape[1]}")
        ious = box_ious(pred_boxes, gt_boxes, "max", self.iou_area)
        located = _passes(ious, self.iou_threshold, self.strict)
        for i, k in enumerate(self.topk):
            in_top = (ranked[:, :k] == labels[:, None]).any(dim=1)
            self.cls[i] += int(in_top.sum())
            self.loc[i] += int((in_top & located).sum())
        self.gt_known += int(located.sum())
        self.total += len(labels)
        self.iou_sum += float(ious.double().sum())

    def compute(self) -> dict[str, Tensor]:
        out = {"gt_known_loc": _ratio(self.gt_known, self.total), "mean_iou": _ratio(self.iou_sum, self.total)}
        for i, k in enumerate(self.topk):
            out[f"top{k}_loc"] = _ratio(self.loc[i], self.total)
            out[f"top{k}_cls"] = _ratio(self.cls[i], self.total)
        return out


# ----------------------------------------------------------------------------- masks


def _check_pairs(heatmaps: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    if len(heatmaps) != len(masks):
        raise ValueError(f"{len(heatmaps)} heatmaps for {len(masks)} masks")
    for heatmap, mask in zip(heatmaps, masks):
        _check_heatmap(heatmap)
        if heatmap.shape != mask.shape:
            raise ValueError(f"heatmap {tuple(heatmap.shape)} and mask {tuple(mask.shape)} differ in size")
        if heatmap.min() < 0 or heatmap.max() > 1:
            raise ValueError("mask metrics need heatmaps with values in [0, 1]")


class MeanIoUSweep(Metric):
    """Mean IoU over a threshold sweep (the Bucharest poster: 100 thresholds in [0, 1]).

    Protocol: thresholds ``linspace(0, 1, num_thresholds)``; at threshold ``t`` the predicted mask
    is ``heatmap >= t``; per-image IoU with the GT mask (both empty → 1); the mean over images per
    threshold gives a curve. ``compute`` returns ``curve`` (T,), ``thresholds`` (T,), ``best_miou``
    (the poster's "mean IoU", best over the grid) and ``best_threshold``. Counting uses sorted
    values, so the cost does not grow with the number of thresholds.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_thresholds: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_thresholds < 2:
            raise ValueError("num_thresholds must be at least 2")
        self.register_buffer("thresholds", torch.linspace(0, 1, num_thresholds, dtype=torch.float64), persistent=False)
        self.add_state("iou_sum", default=torch.zeros(num_thresholds, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, heatmaps: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
        """``heatmaps``: ``H×W`` maps in [0, 1]; ``masks``: same-size boolean GT masks."""
        _check_pairs(heatmaps, masks)
        thresholds = self.thresholds.to(self.iou_sum.device)
        for heatmap, mask in zip(heatmaps, masks):
            values = heatmap.reshape(-1).double().to(thresholds.device)
            inside = mask.reshape(-1).bool().to(thresholds.device)
            predicted = len(values) - torch.searchsorted(values.sort().values, thresholds, right=False)
            inter = int(inside.sum()) - torch.searchsorted(values[inside].sort().values, thresholds, right=False)
            union = predicted + int(inside.sum()) - inter
            self.iou_sum += torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union, dtype=torch.float64))
        self.images += len(heatmaps)

    def compute(self) -> dict[str, Tensor]:
        curve = self.iou_sum / self.images if self.images > 0 else torch.full_like(self.iou_sum, float("nan"))
        best = int(curve.argmax())
        return {"curve": curve, "thresholds": self.thresholds.clone(), "best_miou": curve[best],
                "best_threshold": self.thresholds[best]}


class PxAP(Metric):
    """Pixel average precision (Choe et al. 2020 ``MaskEvaluator``, used by the WWbL WSOL code).

    Protocol: score thresholds ``0, 0.01, …, 0.99``; pixel scores are histogrammed over all images
    into bins with right edges ``thresholds ∪ {1, 2, 3}`` (separately for GT-foreground and
    background pixels); from the highest bin down, the cumulative counts give TP and FP;
    ``PxAP = Σ precision[i] · (recall[i] − recall[i−1])`` over thresholds. Bins where
    ``TP + FP = 0`` carry no recall change and contribute 0. Heatmaps must lie in [0, 1] (the
    original min-max normalises its score maps first).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        steps = torch.arange(100, dtype=torch.float64) / 100
        self.register_buffer("edges", torch.cat([steps, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)]),
                             persistent=False)
        bins = len(self.edges) - 1
        self.add_state("fg_hist", default=torch.zeros(bins, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bg_hist", default=torch.zeros(bins, dtype=torch.float64), dist_reduce_fx="sum")

    def _histogram(self, values: Tensor) -> Tensor:
        index = torch.bucketize(values.double(), self.edges.to(values.device), right=True) - 1
        index = index.clamp(0, len(self.edges) - 2)
        return torch.bincount(index, minlength=len(self.edges) - 1).double()

    def update(self, heatmaps: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
        """``heatmaps``: ``H×W`` maps in [0, 1]; ``masks``: same-size boolean GT masks."""
        _check_pairs(heatmaps, masks)
        if not heatmaps:
            return
        values = torch.cat([h.reshape(-1).double() for h in heatmaps]).to(self.fg_hist.device)
        inside = torch.cat([m.reshape(-1).bool() for m in masks]).to(self.fg_hist.device)
        self.fg_hist += self._histogram(values[inside])
        self.bg_hist += self._histogram(values[~inside])

    def compute(self) -> Tensor:
        tp = self.fg_hist.flip(0).cumsum(0)
        fp = self.bg_hist.flip(0).cumsum(0)
        positives = self.fg_hist.sum()
        if positives <= 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.zeros_like(tp))
        recall = tp / positives
        return (precision[1:] * recall.diff()).sum()
