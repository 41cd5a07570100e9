"""Heatmap → boxes rules on hand-made, non-square maps with answers worked out by hand."""
import numpy as np
import pytest
import torch

from wwbl.inference.heatmap_boxes import boxes_for_phrases, wsg_boxes, wsol_box


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


def test_boxes_for_phrases_labels_boxes_and_accepts_numpy():
    heat = blank(30, 40)
    heat[0:10, 0:10] = 1.0
    stack = torch.stack([heat, blank(30, 40), heat.flip(1)])
    dets = boxes_for_phrases(stack, ["left", "nothing", "right"])
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
