"""The two reference heatmap sources (``random``, ``centre``): registry, output form, the centre
map against a Gaussian written out by hand, and the random map's seeding."""
from __future__ import annotations

import math

import pytest
import torch

from wwbl.extractors import HeatmapExtractor, available_extractors, build_extractor
from wwbl.extractors.baselines import CentreGaussianBaseline, RandomBlobBaseline

SIZES = [(40, 90), (77, 31)]
PHRASES = [["a red circle", "a blue star"], ["a green square"]]


def _images(sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, h, w, generator=generator) for h, w in sizes]


def _raw(extractor: HeatmapExtractor, count: int, side: int) -> torch.Tensor:
    """The method's own maps (before min-max and resizing) for ``count`` phrases on one side×side image."""
    images = torch.zeros(1, 3, side, side)
    return extractor._heatmaps_square(images, torch.zeros(count, 4), torch.zeros(count, dtype=torch.long),
                                      [f"phrase {i}" for i in range(count)])


def test_both_are_registered_by_name(tiny_clip):
    assert {"random", "centre"} <= set(available_extractors())
    assert isinstance(build_extractor("random", tiny_clip, seed=3), RandomBlobBaseline)
    centre = build_extractor("centre", tiny_clip, sigma_fraction=0.1)
    assert isinstance(centre, CentreGaussianBaseline) and centre.name == "centre" and centre.sigma_fraction == 0.1


@pytest.mark.parametrize("name", ["random", "centre"])
def test_maps_have_each_image_size_and_span_zero_to_one(tiny_clip, name):
    maps = build_extractor(name, tiny_clip).heatmaps(_images(SIZES), PHRASES)
    assert [tuple(m.shape) for m in maps] == [(2, 40, 90), (1, 77, 31)]
    for per_image in maps:
        assert torch.isfinite(per_image).all() and per_image.min() >= 0 and per_image.max() <= 1
        flat = per_image.flatten(1)  # min-max normalised on the square frame, then resized (bilinear)
        assert (flat.max(dim=1).values > 0.9).all() and (flat.min(dim=1).values < 0.01).all()


def test_centre_map_is_the_centred_gaussian_written_out(tiny_clip):
    side, fraction = 33, 0.2
    raw = _raw(CentreGaussianBaseline(tiny_clip, sigma_fraction=fraction), count=2, side=side)
    sigma = fraction * side
    centre = side / 2
    want = torch.tensor([[math.exp(-((x + 0.5 - centre) ** 2 + (y + 0.5 - centre) ** 2) / (2 * sigma ** 2))
                          for x in range(side)] for y in range(side)])
    assert raw.shape == (2, side, side)
    assert torch.allclose(raw[0], want, atol=1e-6) and torch.equal(raw[0], raw[1])
    assert raw[0, 16, 16] == 1.0  # pixel 16's centre, 16.5, is the frame's centre
    assert raw[0, 16, 26].item() == pytest.approx(math.exp(-0.5 * (10 / 6.6) ** 2), abs=1e-6)
    assert divmod(int(raw[0].argmax()), side) == (16, 16)


def test_centre_map_peaks_at_the_centre_of_a_non_square_image(tiny_clip):
    maps = build_extractor("centre", tiny_clip).heatmaps(_images([(40, 90)]), [["a red circle"]])[0][0]
    peak = (maps == maps.max()).nonzero().float().mean(dim=0)
    assert torch.allclose(peak, torch.tensor([19.5, 44.5]), atol=0.5)  # the middle of rows 0..39, columns 0..89


def test_random_maps_repeat_under_a_seed_and_change_with_it(tiny_clip):
    images = _images(SIZES)
    first = build_extractor("random", tiny_clip, seed=5).heatmaps(images, PHRASES)
    again = build_extractor("random", tiny_clip, seed=5).heatmaps(images, PHRASES)
    other = build_extractor("random", tiny_clip, seed=6).heatmaps(images, PHRASES)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.allclose(first[0], other[0])
    assert not torch.allclose(first[0][0], first[0][1])  # every phrase draws its own blob


def test_random_map_is_a_gaussian_blob_within_the_width_range(tiny_clip):
    side, (low, high) = 64, (0.05, 0.35)
    raw = _raw(RandomBlobBaseline(tiny_clip, seed=0, sigma_range=(low, high)), count=50, side=side)
    assert raw.shape == (50, side, side) and raw.max() <= 1 and raw.min() >= 0
    # Along the peak's row a Gaussian's log is a parabola -0.5 (x - c)^2 / sigma^2: its curvature gives sigma.
    grid = torch.arange(side, dtype=torch.float64) + 0.5
    for one in raw.double():
        row = one[divmod(int(one.argmax()), side)[0]]
        keep = row > 1e-6
        x = grid[keep]
        design = torch.stack([x * x, x, torch.ones_like(x)], dim=1)
        curvature = torch.linalg.lstsq(design, row[keep].log()[:, None]).solution[0, 0]
        sigma = math.sqrt(-0.5 / float(curvature)) / side
        assert low - 1e-3 <= sigma <= high + 1e-3
