"""Heatmap → boxes rules on hand-made, non-square maps with answers worked out by hand."""
import numpy as np
import pytest
import torch

from wwbl.box_rules import BoxRule, cubehelix_gray, wsg_boxes, wsol_box


def blank(h=60, w=90):
    return torch.zeros(h, w)


def test_wsol_takes_the_largest_contour_in_the_original_frame():
    heat = blank(40, 100)
    heat[5:15, 60:90] = 0.8      # 10×30 = 300 px -> box x 60..90, y 5..15
    heat[20:35, 5:20] = 0.5      # 15×15 = 225 px
    heat[0:2, 0:100] = 0.1       # exactly the threshold: zeroed
    dets = wsol_box(heat)
    assert dets.boxes.tolist() == [[60.0, 5.0, 90.0, 15.0]]
    assert dets.scores.item() == pytest.approx(0.8)


def test_wsol_prefers_enclosed_area_over_bounding_box_size():
    heat = blank(50, 70)
    heat[2:40, 2:3] = 0.9       # thin line, box 1×38
    heat[2:3, 2:60] = 0.9       # + thin line, union box 58×38 but tiny enclosed area
    heat[20:40, 30:50] = 0.6    # 20×20 solid square
    dets = wsol_box(heat)
    assert dets.boxes.tolist() == [[30.0, 20.0, 50.0, 40.0]]


def test_wsol_empty_map_gives_no_box():
    assert len(wsol_box(blank())) == 0


def test_wsg_paper_keeps_strong_blobs_and_drops_weak_ones():
    heat = blank(60, 90)
    heat[5:15, 10:30] = 0.9          # box (10,5,30,15) score 0.9
    heat[30:50, 60:80] = 0.6         # box (60,30,80,50) score 0.6 >= 0.45
    heat[40:50, 5:15] = 0.55         # a 10×10 ring, 1 px wide, hollow inside
    heat[41:49, 6:14] = 0.0          # ring mean = 36·0.55/100 = 0.198 < 0.45 -> dropped
    dets = wsg_boxes(heat)
    assert dets.boxes.tolist() == [[10.0, 5.0, 30.0, 15.0], [60.0, 30.0, 80.0, 50.0]]
    assert dets.scores.tolist() == pytest.approx([0.9, 0.6])


def test_wsg_paper_nms_at_0_3_in_xyxy():
    heat = blank(30, 50)
    heat[0:20, 0:2] = 0.8            # an L: column ...
    heat[18:20, 0:20] = 0.8          # ... and bottom row: box (0,0,20,20)
    heat[3:17, 3:17] = 0.95          # separate square: box (3,3,17,17), IoU with the L box = 196/400
    l_score = (76 * 0.8 + 196 * 0.95) / 400
    dets = wsg_boxes(heat)
    assert dets.boxes.tolist() == [[3.0, 3.0, 17.0, 17.0]]
    both = wsg_boxes(heat, nms_iou=0.5)
    assert both.boxes.tolist() == [[3.0, 3.0, 17.0, 17.0], [0.0, 0.0, 20.0, 20.0]]
    assert both.scores.tolist() == pytest.approx([0.95, l_score])


def test_wsg_paper_min_area_filter():
    heat = blank(50, 100)
    heat[0:5, 0:5] = 1.0             # 25 px = 0.5 % of the map
    heat[20:40, 40:90] = 0.9         # 1000 px = 20 %
    dets = wsg_boxes(heat, min_area_ratio=0.05)
    assert dets.boxes.tolist() == [[40.0, 20.0, 90.0, 40.0]]


def _ring_with_inner_blob(h=60, w=70):
    heat = blank(h, w)
    heat[10:50, 10:50] = 1.0         # thick ring: outer 40×40 ...
    heat[20:40, 20:40] = 0.0         # ... with a 20×20 hole
    heat[25:35, 25:35] = 1.0         # a solid 10×10 blob inside the hole
    return heat


def test_wsg_reference_reproduces_the_xywh_nms_and_union():
    # Contours (RETR_TREE): outer ring (10,10,40,40) conf 1300/1600, the hole, the inner blob conf 1.
    # Correct xyxy NMS at 0.05 would suppress the ring box (IoU 100/1600 = 0.0625 with the blob);
    # fed (x, y, w, h) the blob box reads as an empty box, so the ring survives and the union is the ring.
    dets = wsg_boxes(_ring_with_inner_blob(), mode="reference")
    assert dets.boxes.tolist() == [[10.0, 10.0, 50.0, 50.0]]
    assert dets.scores.item() == pytest.approx(1.0)


def test_wsg_paper_on_the_same_map_sees_only_the_outer_contour():
    dets = wsg_boxes(_ring_with_inner_blob())
    assert dets.boxes.tolist() == [[10.0, 10.0, 50.0, 50.0]]
    assert dets.scores.item() == pytest.approx(1300 / 1600)


def test_wsg_reference_union_skips_weak_boxes_and_uses_relative_threshold():
    heat = blank(50, 120)
    heat[5:15, 10:30] = 0.5          # normalised 1.0
    heat[30:45, 80:110] = 0.3        # normalised 0.6 -> gray ≈ 153 > 127, conf ≈ 0.6 > 0.5
    heat[30:40, 40:60] = 0.2         # normalised 0.4 -> below the threshold
    dets = wsg_boxes(heat, mode="reference")
    assert dets.boxes.tolist() == [[10.0, 5.0, 110.0, 45.0]]


def test_wsg_reference_without_contours_predicts_the_unit_box():
    dets = wsg_boxes(blank(), mode="reference")
    assert dets.boxes.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    assert dets.scores.item() == 0.0


def test_box_rule_labels_boxes_and_accepts_numpy():
    heat = blank(30, 40)
    heat[0:10, 0:10] = 1.0
    stack = torch.stack([heat, blank(30, 40), heat.flip(1)])
    dets = BoxRule()(stack, ["left", "nothing", "right"])
    assert dets.phrases == ["left", "right"]
    assert dets.boxes.tolist() == [[0.0, 0.0, 10.0, 10.0], [30.0, 0.0, 40.0, 10.0]]
    assert wsol_box(heat.numpy().astype(np.float64)).boxes.tolist() == [[0.0, 0.0, 10.0, 10.0]]


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4), torch.full((5, 5), float("nan")), torch.zeros(0, 4)])
def test_bad_heatmaps_are_rejected(bad):
    with pytest.raises(ValueError):
        wsg_boxes(bad)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        wsg_boxes(blank(), mode="fixed")


def _naive_cubehelix_gray(values64):
    """Float64 min-max, the colour map's 256-entry table indexed by floor(n·256), uint8, gray."""
    import cv2
    from matplotlib import colormaps

    table = colormaps["cubehelix"](np.arange(256))[:, :3]
    normalised = (values64 - values64.min()) / (values64.max() - values64.min())
    index = np.minimum(np.floor(normalised * 256).astype(int), 255)
    return cv2.cvtColor((table[index] * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)


def test_cubehelix_gray_normalises_in_float64():
    # (0.140625 - 0.1) / (0.9 - 0.1) with these float32 inputs is just below 13/256 in float64
    # (colour bin 12) but rounds up to bin 13 in float32; the two bins have different grays.
    heat = np.array([[0.1, 0.140625, 0.9]], dtype=np.float32)
    low, mid, high = (np.float64(v) for v in heat[0])
    assert np.floor((mid - low) / (high - low) * 256) == 12
    assert np.floor(np.float32((heat[0, 1] - heat[0, 0]) / (heat[0, 2] - heat[0, 0])) * 256) == 13
    as_float32 = heat.copy()
    as_float32[0] = (heat[0] - heat[0, 0]) / (heat[0, 2] - heat[0, 0])  # float32 normalisation
    expected = _naive_cubehelix_gray(heat.astype(np.float64))
    assert not np.array_equal(_naive_cubehelix_gray(as_float32.astype(np.float64)), expected)
    assert np.array_equal(cubehelix_gray(heat), expected)


def test_wsol_reference_mode_thresholds_the_normalised_gray():
    heat = blank(60, 100)
    heat[5:15, 70:80] = 0.08       # A: 10×10, the maximum (normalised 1)
    heat[30:50, 10:40] = 0.02      # B: 20×30 = 600 px, normalised 0.25: kept
    heat[20:50, 50:60] = 0.004     # C: 30×10 = 300 px, normalised 0.05: below 10 % of max gray
    heat[52:60, 0:100] = 0.004     # D: 8×100 = 800 px, would be the largest, normalised 0.05: dropped
    gray = _naive_cubehelix_gray(heat.numpy().astype(np.float64))
    cut = int(0.1 * int(gray.max()))
    assert gray[55, 50] <= cut < gray[40, 20]  # the premise: D and C dropped, B kept
    assert len(wsol_box(heat)) == 0           # paper mode: nothing above 0.1
    dets = wsol_box(heat, mode="reference")
    assert dets.boxes.tolist() == [[10.0, 30.0, 40.0, 50.0]]
    assert dets.scores.item() == pytest.approx(0.02)


def test_wsol_reference_mode_rejects_unknown_modes_and_empty_maps():
    assert len(wsol_box(blank(), mode="reference")) == 0
    with pytest.raises(ValueError, match="box mode"):
        wsol_box(blank(), mode="fixed")


def test_paper_rules_drop_artifact_boxes_below_the_minimum_side():
    """A lone hot pixel and a one-pixel seam are artifacts, not objects: 2 % of a 100-px side is 2 px."""
    heatmap = torch.zeros(100, 100)
    heatmap[40:60, 30:50] = 1.0  # the object: 20 × 20
    heatmap[0, 99] = 1.0  # a lone corner pixel
    heatmap[80:99, 5] = 1.0  # a one-pixel-wide seam, 19 px tall
    kept = wsg_boxes(heatmap)
    assert kept.boxes.tolist() == [[30.0, 40.0, 50.0, 60.0]]
    everything = wsg_boxes(heatmap, min_side_fraction=0.0, min_score_ratio=0.0)
    assert sorted(everything.boxes.tolist()) == [[5.0, 80.0, 6.0, 99.0], [30.0, 40.0, 50.0, 60.0],
                                                 [99.0, 0.0, 100.0, 1.0]]
    # WSOL: the seam has the most boundary points of the thin contours, but never beats a real blob;
    # a map of artifacts alone gives no box rather than a 1-pixel one.
    assert wsol_box(heatmap).boxes.tolist() == [[30.0, 40.0, 50.0, 60.0]]
    only_seam = torch.zeros(100, 100)
    only_seam[80:99, 5] = 1.0
    assert len(wsol_box(only_seam).boxes) == 0
    assert wsol_box(only_seam, min_side_fraction=0.0).boxes.tolist() == [[5.0, 80.0, 6.0, 99.0]]
