"""SLIC superpixels: token membership and painting against the per-region reference."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.helpers.images import blocky_image
from wwbl.extractors.superpixels import slic_superpixels


def test_superpixel_membership_and_painting():
    image = blocky_image(40, 56)
    superpixels = slic_superpixels(image, levels=(6, 12))
    labels = superpixels.labels
    assert labels.shape == (2, 40, 56)
    assert set(labels.unique().tolist()) == set(range(superpixels.num_regions))
    grid_hw = (5, 7)
    membership = superpixels.token_membership(grid_hw)
    for region in range(superpixels.num_regions):  # the reference: each pixel mask resized with nearest
        level = int(torch.nonzero((labels == region).flatten(1).any(1))[0])
        mask = (labels[level] == region).float()[None, None]
        expected = F.interpolate(mask, size=grid_hw, mode="nearest").flatten() > 0.5
        assert torch.equal(membership[region], expected)
    values = torch.rand(3, superpixels.num_regions)
    painted = superpixels.paint(values)
    y, x = 13, 41
    for level in range(2):
        assert torch.equal(painted[:, level, y, x], values[:, labels[level, y, x]])
