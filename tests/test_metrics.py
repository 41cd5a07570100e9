"""Hand-computed cases for wwbl.metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wwbl.metrics import (
    AccAtIoU,
    BoxAccuracy,
    GTKnownLoc,
    MeanIoUSweep,
    PointingAccuracy,
    PxAP,
    TopKLoc,
    WWbLMetric,
    argmax_points,
    box_ious,
)


def _peak(h: int, w: int, row: int, col: int) -> torch.Tensor:
    heatmap = torch.zeros(h, w)
    heatmap[row, col] = 1.0
    return heatmap


def test_argmax_first_max_row_major_non_square() -> None:
    a = torch.zeros(3, 5)
    a[1, 4] = a[2, 0] = 1.0  # tie: (1, 4) comes first in row-major order
    b = torch.zeros(6, 2)
    b[5, 1] = 0.5
    points = argmax_points([a, b], ties="first")  # different sizes are padded internally
    assert points.tolist() == [[1, 4], [5, 1]]


def test_argmax_centre_equals_first_for_unique_maxima() -> None:
    maps = [torch.rand(37, 53, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    expected = [[int(m.argmax()) // 53, int(m.argmax()) % 53] for m in maps]  # continuous maps: no ties
    assert argmax_points(maps).tolist() == expected == argmax_points(maps, ties="first").tolist()


def test_argmax_centre_of_a_flat_top() -> None:
    # A 64×64 map whose maximum is a flat rectangle, rows 10–20 and cols 30–50 (centre (15, 40)),
    # on a slope that rises to the right, so smoothing alone would not centre it.
    heatmap = torch.linspace(0.0, 0.5, 64).expand(64, 64).clone()
    heatmap[10:21, 30:51] = 1.0
    assert argmax_points([heatmap], ties="first").tolist() == [[10, 30]]
    assert argmax_points([heatmap]).tolist() == [[15, 40]]


def test_argmax_centre_prefers_the_larger_flat_top() -> None:
    heatmap = torch.zeros(64, 64)
    heatmap[2:5, 2:5] = 1.0  # small plateau first in row-major order
    heatmap[30:50, 20:40] = 1.0  # large plateau, centre (39.5, 29.5)
    row, col = argmax_points([heatmap])[0].tolist()
    assert 37 <= row <= 42 and 27 <= col <= 32


def test_argmax_centre_does_not_depend_on_the_other_maps_of_the_call() -> None:
    big = torch.zeros(90, 120)
    big[60:80, 5:25] = 1.0
    small = torch.zeros(40, 30)
    small[0:10, 10:30] = 1.0  # touches the top and right borders: padding must not pull the point
    together = argmax_points([big, small]).tolist()
    assert together == argmax_points([big]).tolist() + argmax_points([small]).tolist()
    row, col = together[1]
    assert 3 <= row <= 6 and 18 <= col <= 21  # the plateau's centre is (4.5, 19.5)


def test_argmax_of_a_constant_map_is_its_first_pixel_under_both_rules() -> None:
    blank = torch.full((20, 30), 0.5)
    padded_beside = torch.zeros(40, 10)
    padded_beside[5, 5] = 1.0
    for ties in ("centre", "first"):
        assert argmax_points([blank, padded_beside], ties=ties).tolist() == [[0, 0], [5, 5]]


def test_argmax_rejects_unknown_ties() -> None:
    with pytest.raises(ValueError, match="ties"):
        argmax_points([torch.zeros(3, 3)], ties="middle")
    with pytest.raises(ValueError, match="ties"):
        PointingAccuracy(ties="middle")


def test_pointing_inclusive_edges_and_non_square() -> None:
    metric = PointingAccuracy()
    # 40 rows × 100 cols; box x in [10, 20], y in [5, 8]; points on each edge count as hits.
    heatmaps = [_peak(40, 100, 8, 20), _peak(40, 100, 5, 10), _peak(40, 100, 9, 20), _peak(40, 100, 8, 21)]
    box = torch.tensor([[10.0, 5.0, 20.0, 8.0]])
    metric.update(heatmaps, [box] * 4)
    assert metric.compute().item() == pytest.approx(0.5)


def test_pointing_rows_are_y_and_cols_are_x() -> None:
    # A wide image where transposing (row, col) would change the verdict.
    metric = PointingAccuracy()
    metric.update([_peak(10, 50, 2, 40)], [torch.tensor([[35.0, 0.0, 45.0, 5.0]])])
    assert metric.compute().item() == 1.0
    metric.reset()
    metric.update([_peak(50, 10, 40, 2)], [torch.tensor([[35.0, 0.0, 45.0, 5.0]])])
    assert metric.compute().item() == 0.0


def test_pointing_union_vs_any() -> None:
    # Two boxes with a gap between them; the point lies in the gap, inside their union only.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    heatmap = _peak(40, 40, 15, 15)
    union, any_box = PointingAccuracy("union"), PointingAccuracy("any")
    union.update([heatmap], [boxes])
    any_box.update([heatmap], [boxes])
    assert union.compute().item() == 1.0
    assert any_box.compute().item() == 0.0


def test_pointing_requires_gt_box() -> None:
    with pytest.raises(ValueError):
        PointingAccuracy().update([_peak(4, 4, 0, 0)], [torch.zeros(0, 4)])


def test_box_accuracy_union_rule_hand_computed() -> None:
    # Predicted boxes [0,0,10,10] and [10,0,20,10] → union [0,0,20,10] (area 200).
    # GT boxes [0,0,10,20] and [0,0,5,5] → union [0,0,10,20] (area 200); intersection 100.
    # IoU = 100 / 300 = 1/3.
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 5.0, 5.0]])
    assert box_ious([pred], [gt], "union").item() == pytest.approx(1 / 3)
    # top1: [0,0,10,10] vs union [0,0,10,20] → 100/200.
    assert box_ious([pred], [gt], "top1").item() == pytest.approx(0.5)
    # max: best pair is [0,0,10,10] vs [0,0,10,20] → 0.5 ([0,0,5,5] gives 0.25).
    assert box_ious([pred], [gt], "max").item() == pytest.approx(0.5)


def test_box_accuracy_threshold_inclusive_vs_strict() -> None:
    pred = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    gt = [torch.tensor([[0.0, 0.0, 10.0, 20.0]])]  # IoU exactly 0.5
    inclusive, strict = BoxAccuracy(0.5), AccAtIoU(0.5)
    inclusive.update(pred, gt)
    strict.update(pred, gt)
    assert inclusive.compute().item() == 1.0
    assert strict.compute().item() == 0.0
    vg = AccAtIoU(0.3)  # the VG threshold
    vg.update(pred, gt)
    assert vg.compute().item() == 1.0


def test_box_accuracy_empty_prediction_is_miss_and_mean_iou() -> None:
    metric = BoxAccuracy()
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    metric.update([torch.zeros(0, 4), gt.clone()], [gt, gt])
    assert metric.compute().item() == pytest.approx(0.5)
    assert metric.mean_iou().item() == pytest.approx(0.5)


def test_box_ious_match_naive_reference() -> None:
    generator = torch.Generator().manual_seed(0)

    def random_boxes(n: int) -> torch.Tensor:
        xy = torch.rand(n, 2, generator=generator) * 50
        wh = torch.rand(n, 2, generator=generator) * 30 + 1
        return torch.cat([xy, xy + wh], 1)

    def naive_iou(a, b) -> float:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    preds = [random_boxes(k) for k in (1, 3, 2)]
    gts = [random_boxes(k) for k in (2, 1, 4)]
    got = box_ious(preds, gts, "max")
    for i, (p, g) in enumerate(zip(preds, gts)):
        expected = max(naive_iou(a.tolist(), b.tolist()) for a in p for b in g)
        assert got[i].item() == pytest.approx(expected, rel=1e-5)


def test_wwbl_metric_matching_and_miss_counting() -> None:
    d = torch.eye(3)
    box_a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    box_b = torch.tensor([[20.0, 20.0, 30.0, 30.0]])
    # Image 1: two captions; caption 0 points into A with box A, caption 1 points into B with box B.
    pred_emb = [d[:2], torch.zeros(0, 3)]
    pred_points = [torch.tensor([[5, 5], [25, 25]]), torch.zeros(0, 2, dtype=torch.long)]
    pred_boxes = [[box_a, box_b], []]
    # GT item "B" is nearest to caption 1 (correct), GT item "A" is nearest to caption 1 too
    # (its embedding leans towards caption 1) → pointing into B while GT is A → miss.
    gt_emb = [torch.tensor([[0.0, 1.0, 0.0], [0.4, 0.6, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])]
    gt_boxes = [[box_b, box_a], [box_a]]

    metric = WWbLMetric()
    metric.update(pred_emb, pred_points, pred_boxes, gt_emb, gt_boxes)
    out = metric.compute()
    assert out["items"].item() == 3  # the empty image's GT item counts as a miss
    assert out["pointing"].item() == pytest.approx(1 / 3)
    assert out["box"].item() == pytest.approx(1 / 3)
    assert out["empty_images"].item() == 1

    reference = WWbLMetric(drop_empty=True)
    reference.update(pred_emb, pred_points, pred_boxes, gt_emb, gt_boxes)
    assert reference.compute()["pointing"].item() == pytest.approx(1 / 2)
    assert reference.compute()["items"].item() == 2


def test_gt_known_loc_max_over_gt_boxes() -> None:
    metric = GTKnownLoc()
    pred = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    gt = [torch.tensor([[50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 12.0]])]  # second: IoU 100/120
    metric.update(pred, gt)
    assert metric.compute().item() == 1.0


def test_topk_loc() -> None:
    metric = TopKLoc(topk=(1, 2))
    pred = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])] * 3
    gt = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])] * 2 + [torch.tensor([[30.0, 30.0, 40.0, 40.0]])]
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.4, 0.1], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    metric.update(pred, gt, scores, labels)
    out = metric.compute()
    # item0: located, top1 correct; item1: located, label in top2 only; item2: classified, not located.
    assert out["gt_known_loc"].item() == pytest.approx(2 / 3)
    assert out["top1_loc"].item() == pytest.approx(1 / 3)
    assert out["top2_loc"].item() == pytest.approx(2 / 3)
    assert out["top1_cls"].item() == pytest.approx(2 / 3)
    assert out["top2_cls"].item() == pytest.approx(1.0)
    assert out["mean_iou"].item() == pytest.approx(2 / 3)


def _naive_iou_curve(heatmaps, masks, thresholds):
    curve = []
    for t in thresholds:
        ious = []
        for h, m in zip(heatmaps, masks):
            pred = h >= t
            union = np.logical_or(pred, m).sum()
            ious.append(1.0 if union == 0 else np.logical_and(pred, m).sum() / union)
        curve.append(np.mean(ious))
    return np.array(curve)


def test_mean_iou_sweep_matches_naive_loop() -> None:
    rng = np.random.default_rng(0)
    heatmaps = [rng.random((7, 11)), rng.random((5, 5))]
    masks = [rng.random((7, 11)) > 0.6, np.zeros((5, 5), bool)]
    metric = MeanIoUSweep()
    metric.update([torch.from_numpy(h) for h in heatmaps], [torch.from_numpy(m) for m in masks])
    out = metric.compute()
    expected = _naive_iou_curve(heatmaps, masks, np.linspace(0, 1, 100))
    np.testing.assert_allclose(out["curve"].numpy(), expected, atol=1e-12)
    assert out["best_miou"].item() == pytest.approx(expected.max())


def test_mean_iou_sweep_hand_case() -> None:
    # Perfect map: 1 inside the mask, 0 outside → IoU 1 for every threshold in (0, 1].
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1:3, 2:5] = True
    metric = MeanIoUSweep(num_thresholds=3)  # thresholds 0, 0.5, 1
    metric.update([mask.float()], [mask])
    out = metric.compute()
    assert out["curve"].tolist() == pytest.approx([6 / 24, 1.0, 1.0])


def _naive_pxap(heatmaps, masks) -> float:
    thresholds = np.append(np.arange(100) / 100, 1.0)  # the histogram's edges up to 1
    scores = np.concatenate([h.ravel() for h in heatmaps])
    truth = np.concatenate([m.ravel() for m in masks])
    precision, recall = [], []
    for t in thresholds[::-1]:  # sweep from high to low threshold
        pred = scores >= t
        tp = np.logical_and(pred, truth).sum()
        fp = np.logical_and(pred, ~truth).sum()
        precision.append(tp / (tp + fp) if tp + fp else 0.0)
        recall.append(tp / truth.sum())
    ap, previous = 0.0, 0.0
    for p, r in zip(precision, recall):
        ap += p * (r - previous)
        previous = r
    return ap


def test_pxap_matches_naive_threshold_sweep() -> None:
    rng = np.random.default_rng(1)
    # Scores on a grid offset from the 0.01 thresholds (no ties); max 1.0 as min-max normalised maps.
    heatmaps = [np.floor(rng.random((9, 13)) * 1000) / 1000 + 5e-4, np.floor(rng.random((6, 6)) * 1000) / 1000 + 5e-4]
    heatmaps[0][0, 0] = 1.0
    masks = [heatmaps[0] + rng.normal(0, 0.3, (9, 13)) > 0.6, rng.random((6, 6)) > 0.5]
    metric = PxAP()
    metric.update([torch.from_numpy(h) for h in heatmaps], [torch.from_numpy(m) for m in masks])
    assert metric.compute().item() == pytest.approx(_naive_pxap(heatmaps, masks), abs=1e-9)


def test_pxap_perfect_map_is_one() -> None:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 3:7] = True
    metric = PxAP()
    metric.update([mask.float()], [mask])
    assert metric.compute().item() == pytest.approx(1.0)


def test_metrics_sum_states_merge_like_ddp() -> None:
    # Two "ranks" merged must equal one metric over all items (the sum reduction under DDP).
    whole, first, second = PointingAccuracy(), PointingAccuracy(), PointingAccuracy()
    maps = [_peak(5, 7, 1, 1), _peak(5, 7, 4, 6), _peak(5, 7, 0, 3)]
    boxes = [torch.tensor([[0.0, 0.0, 2.0, 2.0]])] * 3
    whole.update(maps, boxes)
    first.update(maps[:1], boxes[:1])
    second.update(maps[1:], boxes[1:])
    first.merge_state(second)
    assert first.compute().item() == pytest.approx(whole.compute().item()) == pytest.approx(1 / 3)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_empty_metric_is_nan() -> None:
    assert math.isnan(PointingAccuracy().compute().item())


def test_bad_heatmap_rejected() -> None:
    with pytest.raises(ValueError):
        PointingAccuracy().update([torch.full((3, 3), float("nan"))], [torch.tensor([[0.0, 0.0, 1.0, 1.0]])])


def test_nearest_captions_matches_per_image_argmax() -> None:
    from wwbl.metrics import nearest_captions

    generator = torch.Generator().manual_seed(3)
    preds = [torch.randn(p, 6, generator=generator) for p in (3, 0, 1, 4)]
    gts = [torch.randn(g, 6, generator=generator) for g in (2, 2, 3, 1)]
    got = nearest_captions(preds, gts)
    assert got[1] is None
    for p, g, m in zip(preds, gts, got):
        if len(p):
            assert m.tolist() == [int((p @ row).argmax()) for row in g]


def test_wsol_iou_with_inclusive_pixel_areas():
    from wwbl.metrics import GTKnownLoc, TopKLoc

    pred, gt = torch.tensor([[0.0, 0.0, 9.0, 9.0]]), torch.tensor([[5.0, 5.0, 14.0, 14.0]])
    # continuous: 4·4 / (81 + 81 - 16) = 16/146; inclusive: 5·5 / (100 + 100 - 25) = 1/7
    for area, iou, located in (("continuous", 16 / 146, 0.0), ("inclusive", 1 / 7, 1.0)):
        metric = GTKnownLoc(iou_threshold=0.12, iou_area=area)
        metric.update([pred], [gt])
        assert metric.mean_iou().item() == pytest.approx(iou)
        assert metric.compute().item() == located
        topk = TopKLoc((1,), iou_threshold=0.12, iou_area=area)
        topk.update([pred], [gt], None, torch.tensor([0]), ranked=torch.tensor([[0]]))
        assert topk.compute()["top1_loc"].item() == located
    with pytest.raises(ValueError, match="iou_area"):
        GTKnownLoc(iou_area="pixels")
