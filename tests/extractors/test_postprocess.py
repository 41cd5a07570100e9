"""The poster's post-processing: morphology against OpenCV, hand-computed grid searches."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests.helpers.images import random_images
from wwbl.extractors import build_extractor
from wwbl.extractors.postprocess import (
    PostProcessConfig,
    close_map,
    grey_dilate,
    grey_erode,
    grid_search,
    grid_search_extractor,
    postprocess,
)


def test_dilate_then_erode_hand_computed():
    mask = torch.zeros(5, 5)
    mask[2, 1] = mask[2, 3] = 1  # two pixels with a one-pixel gap
    dilated = grey_dilate(mask, 3)
    want_dilated = torch.zeros(5, 5)
    want_dilated[1:4, 0:5] = 1
    assert torch.equal(dilated, want_dilated)
    closed = close_map(mask, 3, 3)
    want_closed = torch.zeros(5, 5)
    want_closed[2, :] = 1  # gap filled; the image border does not erode (OpenCV's convention)
    assert torch.equal(closed, want_closed)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_morphology_matches_opencv(size):
    rng = np.random.default_rng(size)
    mask = (rng.random((13, 17)) > 0.6).astype(np.uint8)
    kernel = np.ones((size, size), np.uint8)
    assert np.array_equal(grey_dilate(torch.from_numpy(mask), size).numpy(), cv2.dilate(mask, kernel))
    assert np.array_equal(grey_erode(torch.from_numpy(mask), size).numpy(), cv2.erode(mask, kernel))


def test_grid_search_curve_hand_computed():
    heatmap = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    mask = torch.tensor([[0, 1], [1, 0]], dtype=torch.bool)
    result = grid_search([heatmap], [mask], interpolations=("nearest",), dilations=(1,), erosions=(1,),
                         num_thresholds=5)  # thresholds 0, .25, .5, .75, 1 with the rule map >= τ
    (settings, curve), = result.table
    assert settings == {"interpolation": "nearest", "dilation": 1, "erosion": 1}
    assert torch.allclose(curve.float(), torch.tensor([2 / 4, 2 / 3, 1.0, 1 / 2, 0.0]))
    assert result.best == PostProcessConfig("nearest", 0.5, 1, 1) and result.best_mean_iou == pytest.approx(1.0)


def test_postprocess_rejects_bad_settings():
    with pytest.raises(ValueError):
        PostProcessConfig("area", 0.5, 1, 1)
    with pytest.raises(ValueError):
        PostProcessConfig("nearest", 0.5, 0, 1)
    with pytest.raises(ValueError):
        grid_search([torch.zeros(2, 2)], [torch.zeros(3, 3, dtype=torch.bool)] * 2)
    with pytest.raises(ValueError):
        grid_search([torch.zeros(2, 2)], [torch.zeros(2, 2, dtype=torch.bool)], dilations=())


def test_postprocess_nearest_threshold_and_closing():
    low_res = torch.tensor([[0.9, 0.1, 0.9]])
    mask = postprocess(low_res, (2, 6), PostProcessConfig("nearest", 0.5, 1, 1))
    want = torch.tensor([[1, 1, 0, 0, 1, 1]] * 2, dtype=torch.bool)
    assert torch.equal(mask, want)
    closed = postprocess(low_res, (2, 6), PostProcessConfig("nearest", 0.5, 3, 3))
    assert closed.all()  # dilation bridges the 2-px gap; erosion keeps it (border counts as foreground)
    bilinear = postprocess(low_res, (1, 6), PostProcessConfig("bilinear", 0.5, 1, 1))
    # bilinear samples at x = 0.25, 0.75, 1.25, … of the 3 source pixels: 0.9, 0.7, 0.3, 0.3, 0.7, 0.9
    assert torch.equal(bilinear, torch.tensor([[1, 1, 0, 0, 1, 1]], dtype=torch.bool))


def test_grid_search_finds_the_closing_that_fills_holes():
    gt = torch.zeros(16, 16, dtype=torch.bool)
    gt[4:12, 4:12] = True
    holes = gt.float().clone()
    holes[5:11:2, 5:11:2] = 0  # isolated one-pixel holes inside the object
    result = grid_search([holes, holes], [gt, gt], interpolations=("nearest",), dilations=(1, 3), erosions=(1, 3))
    assert result.best.dilation == 3 and result.best.erosion == 3
    assert result.best_mean_iou == pytest.approx(1.0)
    assert len(result.table) == 4
    plain_curve = [curve for settings, curve in result.table if settings["dilation"] == 1 and settings["erosion"] == 1]
    assert plain_curve[0].max() == pytest.approx((64 - 9) / 64)


def test_grid_search_extractor_skips_unreadable_images(tiny_clip, tmp_path):
    extractor = build_extractor("gem", tiny_clip, input_size=64)
    images = random_images(10, [(20, 30), (25, 25)])
    masks = [torch.rand(20, 30) > 0.5, torch.rand(25, 25) > 0.5]
    grid = {"interpolations": ("bilinear",), "dilations": (1, 3), "erosions": (1,), "num_thresholds": 11}
    missing = tmp_path / "missing.png"
    got = grid_search_extractor(extractor, [images[0], missing, images[1]], ["a", "b", "c"],
                                [masks[0], torch.zeros(5, 5, dtype=torch.bool), masks[1]], **grid)
    maps = extractor.heatmaps(images, [["a"], ["c"]])
    want = grid_search([m[0] for m in maps], masks, **grid)
    assert got.best == want.best and got.best_mean_iou == pytest.approx(want.best_mean_iou)
    with pytest.raises(ValueError, match="no readable"):
        grid_search_extractor(extractor, [missing], ["a"], [masks[0]], **grid)
