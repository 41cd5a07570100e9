"""Adapting CLIP's box search against brute force over every box."""
from __future__ import annotations

import pytest
import torch

from tests.helpers.naive import brute_force_box
from wwbl.extractors import box_search
from wwbl.extractors.box_search import coarse_to_fine_box_search, exhaustive_box_search, inclusive_to_xyxy


@pytest.mark.parametrize("strict", [False, True])
def test_exhaustive_box_search_equals_brute_force(strict):
    gen = torch.Generator().manual_seed(1)
    maps = torch.rand(3, 6, 9, generator=gen) ** 3
    for lam in (0.3, 0.8):
        boxes, values = exhaustive_box_search(maps, lam, strict=strict)
        for heatmap, box, value in zip(maps, boxes, values):
            expected_box, expected_value = brute_force_box(heatmap, lam, strict)
            assert tuple(box.tolist()) == expected_box
            assert value.item() == pytest.approx(expected_value, abs=1e-5)


def test_exhaustive_box_search_chunking_does_not_change_the_result(monkeypatch):
    maps = torch.rand(2, 7, 5, generator=torch.Generator().manual_seed(2))
    whole = exhaustive_box_search(maps, 0.5)
    monkeypatch.setattr(box_search, "_MAX_SCORES_PER_CHUNK", 7)
    chunked = exhaustive_box_search(maps, 0.5)
    assert torch.equal(whole[0], chunked[0])
    assert torch.allclose(whole[1], chunked[1])


@pytest.mark.parametrize(("rows", "cols"), [((8, 23), (16, 31)), ((5, 20), (9, 27))])
def test_coarse_to_fine_finds_a_bright_rectangle(rows, cols):
    # 1 inside R, 0 outside, lam = 0.5 on 32×32: dropping a pixel of R costs 1/|R| >= 1/256 of the
    # fraction and saves only 0.5/1024 of penalty, adding an outside pixel only costs, so the optimum
    # is R itself with value 1 - 0.5 |R| / 1024.
    heatmap = torch.zeros(1, 32, 32)
    heatmap[0, rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = 1.0
    boxes, values = coarse_to_fine_box_search(heatmap, 0.5, downsample=8)
    area = (rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1)
    assert boxes[0].tolist() == [cols[0], rows[0], cols[1], rows[1]]
    assert values[0].item() == pytest.approx(1 - 0.5 * area / 1024)


def test_coarse_to_fine_value_is_the_objective_of_its_box_and_bounded_by_the_optimum():
    maps = torch.rand(2, 12, 10, generator=torch.Generator().manual_seed(3)) ** 4
    boxes, values = coarse_to_fine_box_search(maps, 0.6, downsample=4)
    for heatmap, box, value in zip(maps, boxes, values):
        x1, y1, x2, y2 = box.tolist()
        own = float(heatmap[y1 : y2 + 1, x1 : x2 + 1].sum() / heatmap.sum()) - 0.6 * (x2 - x1 + 1) * (y2 - y1 + 1) / 120
        assert value.item() == pytest.approx(own, abs=1e-5)
        assert value.item() <= brute_force_box(heatmap, 0.6)[1] + 1e-6
    _, exact_values = coarse_to_fine_box_search(maps, 0.6, downsample=1)
    assert exact_values[0].item() == pytest.approx(brute_force_box(maps[0], 0.6)[1], abs=1e-5)


def test_inclusive_boxes_to_image_xyxy():
    boxes = torch.tensor([[2, 4, 5, 9]])
    # map 10 (h) × 20 (w) -> image 30 × 40: x scale 2, y scale 3
    assert inclusive_to_xyxy(boxes, (10, 20), (30, 40)).tolist() == [[4.0, 12.0, 12.0, 30.0]]
    assert inclusive_to_xyxy(boxes, (10, 20), (30, 40), reference_scaling=True).tolist() == [[4.0, 12.0, 10.0, 27.0]]
