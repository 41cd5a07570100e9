"""Two reference heatmap sources that ignore the image and the phrase: where chance and a centre
prior put the point and the box. Any real source must beat them (``--method random`` / ``centre``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from wwbl.clip import FrozenCLIP
from wwbl.extractors.base import HeatmapExtractor, register_extractor


def gaussian_maps(centres_xy: Tensor, sigmas: Tensor, size: int) -> Tensor:
    """``P×size×size`` isotropic Gaussians (peak 1); centres and sigmas in pixels of the square frame,
    pixel ``i`` sampled at its centre ``i + 0.5``."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx = (grid[None, None, :] - centres_xy[:, 0, None, None]) / sigmas[:, None, None]
    dy = (grid[None, :, None] - centres_xy[:, 1, None, None]) / sigmas[:, None, None]
    return torch.exp(-0.5 * (dx * dx + dy * dy))


@register_extractor("random")
class RandomBlobBaseline(HeatmapExtractor):
    """Random-point / random-box baseline: per (image, phrase) a Gaussian at a uniformly random centre
    with a random width (``sigma_range``, fraction of the side). Its argmax is a uniformly random
    point and the WSG box rule turns it into a random box around that point. Seeded: one instance
    draws the same sequence of maps for the same sequence of calls."""

    def __init__(self, clip: FrozenCLIP, seed: int = 0, sigma_range: tuple[float, float] = (0.05, 0.35),
                 **options: Any):
        super().__init__(clip, **options)
        self.generator = torch.Generator().manual_seed(seed)
        self.sigma_range = sigma_range

    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        count, size = len(phrases), images.shape[-1]
        centres = torch.rand(count, 2, generator=self.generator) * size
        low, high = self.sigma_range
        sigmas = (low + (high - low) * torch.rand(count, generator=self.generator)) * size
        return gaussian_maps(centres, sigmas, size).to(images.device)


@register_extractor("centre")
class CentreGaussianBaseline(HeatmapExtractor):
    """Centre baseline: the same centred Gaussian (width ``sigma_fraction`` of the side) for every
    phrase; the point is the image centre, the box a centred square-ish box."""

    def __init__(self, clip: FrozenCLIP, sigma_fraction: float = 0.2, **options: Any):
        super().__init__(clip, **options)
        self.sigma_fraction = sigma_fraction

    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        count, size = len(phrases), images.shape[-1]
        centres = torch.full((count, 2), size / 2.0)
        sigmas = torch.full((count,), self.sigma_fraction * size)
        return gaussian_maps(centres, sigmas, size).to(images.device)
