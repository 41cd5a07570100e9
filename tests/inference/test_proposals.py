"""Proposals: the reference's grid boxes, the 10 % filter, selective search, frames and options."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from wwbl.inference.proposals import ProposalGenerator, dedup_boxes, grid_boxes


def scene(h, w, seed=0):
    rng = np.random.default_rng(seed)
    array = np.full((h, w, 3), 200, np.uint8)
    array[h // 5: h // 2, w // 6: w // 2] = (200, 30, 30)
    array[h // 2: 9 * h // 10, w // 2: 9 * w // 10] = (30, 30, 200)
    return Image.fromarray(np.clip(array + rng.integers(-10, 10, array.shape), 0, 255).astype(np.uint8))


def test_grid_boxes_match_the_reference_layout():
    boxes = grid_boxes(224, (1 / 2, 1 / 3, 1 / 4))
    assert len(boxes) == 4 + 9 + 16
    assert boxes[:4].tolist() == [[0, 0, 113, 113], [113, 0, 224, 113], [0, 113, 113, 224], [113, 113, 224, 224]]
    assert boxes[4].tolist() == [0, 0, 75, 75] and boxes[12].tolist() == [150, 150, 224, 224]
    assert boxes[13].tolist() == [0, 0, 57, 57]


def test_area_filter_drops_the_quarter_grid_and_maps_to_the_original_frame():
    image = scene(100, 300)
    boxes = ProposalGenerator(selective_search=False)(image)
    assert len(boxes) == 13  # 57² = 3249 px < 10 % of 224², the 1/2 and 1/3 grids (>= 74²) survive
    sx, sy = 300 / 224, 100 / 224
    assert boxes[0].tolist() == pytest.approx([0, 0, 113 * sx, 113 * sy])
    assert boxes[3].tolist() == pytest.approx([113 * sx, 113 * sy, 300, 100])


@pytest.mark.parametrize("encoding", ["reference", "uint8_bgr"])
def test_selective_search_boxes_are_valid_and_large(encoding):
    image = scene(90, 160)
    boxes = ProposalGenerator(encoding=encoding)(image)
    assert len(boxes) > 13
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 160 + 1e-4).all() and (boxes[:, 3] <= 90 + 1e-4).all()
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert (areas > 0.1 * 90 * 160 - 1e-3).all()


def test_reference_encoding_feeds_float_in_minus_one_one():
    square = Image.fromarray(np.array([[[0, 128, 255]] * 4] * 4, np.uint8))
    array = ProposalGenerator(selective_search=False, encoding="reference")._search_input(square)
    assert array.dtype == np.float32 and array[0, 0].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1, 1.0], abs=1e-6)
    bgr = ProposalGenerator(selective_search=False, encoding="uint8_bgr")._search_input(square)
    assert bgr.dtype == np.uint8 and bgr[0, 0].tolist() == [255, 128, 0]


def test_dedup_and_cap():
    image = scene(120, 120)
    full = ProposalGenerator()(image)
    deduped = ProposalGenerator(dedup_iou=0.5)(image)
    assert 0 < len(deduped) < len(full)
    iou = box_iou(deduped, deduped).fill_diagonal_(0)
    assert iou.max() <= 0.5 + 1e-6
    capped = ProposalGenerator(max_proposals=5)(image)
    assert torch.equal(capped, full[:5])


def test_missing_contrib_module_names_the_package(monkeypatch):
    monkeypatch.delattr(cv2, "ximgproc", raising=False)
    with pytest.raises(ImportError, match="opencv-contrib-python-headless"):
        ProposalGenerator()


def test_bad_encoding_is_rejected():
    with pytest.raises(ValueError):
        ProposalGenerator(encoding="rgb")


def test_dedup_boxes_by_hand():
    a, b, c = [0.0, 0, 10, 10], [0.0, 0, 10, 12], [5.0, 0, 15, 10]
    # IoU(a, b) = 100/120 = 0.833, IoU(a, c) = 50/150 = 0.333, IoU(b, c) = 50/170 = 0.294
    assert dedup_boxes(torch.tensor([a, b, c]), 0.7).tolist() == [a, c]
    assert dedup_boxes(torch.tensor([a, b, c]), 0.3).tolist() == [a]
    assert dedup_boxes(torch.tensor([a, b, c]), 0.34).tolist() == [a, c]
    assert dedup_boxes(torch.tensor([b, a, c]), 0.7).tolist() == [b, c]  # the earlier of a near-pair stays
    assert dedup_boxes(torch.tensor([a, b, c]), 1.0).tolist() == [a, b, c]
    # Greedy against *kept* boxes: q overlaps p (IoU 80/120 = 0.667) and r overlaps q (0.667) but p only by
    # 60/140 = 0.429; at 0.5, q goes and r stays, since q no longer suppresses anything.
    p, q, r = [0.0, 0, 10, 10], [2.0, 0, 12, 10], [4.0, 0, 14, 10]
    assert dedup_boxes(torch.tensor([p, q, r]), 0.5).tolist() == [p, r]
    assert dedup_boxes(torch.zeros(0, 4), 0.5).shape == (0, 4)


def test_dedup_of_the_grid_by_hand():
    # At S = 224 each corner box of the 1/3 grid lies inside the corner box of the 1/2 grid:
    # IoU 75²/113² = 0.4405, 74·75/(111·113) = 0.4425 (twice) and 74²/111² = 0.4444; every other pair < 0.19.
    image = scene(224, 224)
    grid = ProposalGenerator(selective_search=False)(image)
    assert len(grid) == 13
    assert torch.equal(ProposalGenerator(selective_search=False, dedup_iou=0.45)(image), grid)
    deduped = ProposalGenerator(selective_search=False, dedup_iou=0.44)(image)
    corners = [4, 6, 10, 12]  # the 1/3 grid's corners, after the 1/2 grid's four boxes
    assert torch.equal(deduped, grid[[i for i in range(13) if i not in corners]])
    capped = ProposalGenerator(selective_search=False, dedup_iou=0.44, max_proposals=6)(image)
    assert torch.equal(capped, deduped[:6])  # the cap applies after de-duplication


def test_max_proposals_keeps_the_grid_first():
    image = scene(120, 160)
    full = ProposalGenerator()(image)
    grid = ProposalGenerator(selective_search=False)(image)
    assert torch.equal(ProposalGenerator(max_proposals=13)(image), grid)
    assert torch.equal(ProposalGenerator(max_proposals=20)(image), full[:20])


@pytest.mark.parametrize("options, message", [({"dedup_iou": 1.5}, "dedup_iou"), ({"dedup_iou": -0.1}, "dedup_iou"),
                                              ({"max_proposals": 0}, "max_proposals")])
def test_bad_dedup_and_cap_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        ProposalGenerator(selective_search=False, **options)


def test_proposals_are_the_same_on_every_call_smallest_search_box_first():
    # OpenCV ranks its boxes with C rand(): unsorted, two calls on one image come back in different orders.
    image = scene(120, 160)
    first, second = ProposalGenerator()(image), ProposalGenerator()(image)
    assert torch.equal(first, second)
    search = first[13:] * torch.tensor([224 / 160, 224 / 120, 224 / 160, 224 / 120])
    areas = (search[:, 2] - search[:, 0]) * (search[:, 3] - search[:, 1])
    assert (areas[1:] >= areas[:-1] - 1e-3).all()
