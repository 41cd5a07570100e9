"""Proposals: the reference's grid boxes, the 10 % filter, selective search, frames and options."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from wwbl.inference.proposals import ProposalGenerator, grid_boxes


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
