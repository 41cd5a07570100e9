"""Multi-level SLIC superpixels for Adapting CLIP's region tokens (REFERENCE.md E§1.1-1.2).

Each image is segmented at several SLIC levels (``n_segments`` 100, 150, ..., 600, compactness 50,
sigma 0, skimage defaults otherwise); every superpixel of every level becomes one region. Regions
are numbered globally per image: level l's labels are offset by the number of regions of the
levels before it, so one gather paints region scores back into per-level pixel maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import slic
from torch import Tensor

DEFAULT_LEVELS = tuple(range(100, 601, 50))


@dataclass
class Superpixels:
    """Superpixels of one image at several levels.

    labels: ``L×H×W`` long, the global region id of every pixel at every level.
    num_regions: total number of regions over all levels.
    """

    labels: Tensor
    num_regions: int

    def token_membership(self, grid_hw: tuple[int, int]) -> Tensor:
        """``num_regions×(h·w)`` bool: which token-grid cells each region covers.

        Each region mask is resized to the grid with nearest interpolation (as the reference), which
        equals sampling the label maps at the nearest pixels. A region smaller than a cell may cover
        no cell; its token then attends only to itself.
        """
        sampled = F.interpolate(self.labels[:, None].float(), size=grid_hw, mode="nearest")[:, 0].long()
        membership = torch.zeros(self.num_regions, grid_hw[0] * grid_hw[1], dtype=torch.bool, device=sampled.device)
        cells = torch.arange(grid_hw[0] * grid_hw[1], device=sampled.device).expand(sampled.shape[0], -1)
        membership[sampled.flatten(1).flatten(), cells.flatten()] = True
        return membership

    def paint(self, region_values: Tensor) -> Tensor:
        """Per-region values ``T×num_regions`` -> per-level pixel maps ``T×L×H×W``."""
        return region_values[:, self.labels]


def slic_superpixels(
    image01: Tensor, levels: Sequence[int] = DEFAULT_LEVELS, compactness: float = 50.0, sigma: float = 0.0
) -> Superpixels:
    """SLIC at every level of ``levels`` on a ``3×H×W`` image in [0, 1]."""
    if not levels:
        raise ValueError("at least one SLIC level is needed")
    array = image01.detach().permute(1, 2, 0).clamp(0, 1).cpu().double().numpy()
    maps, offset = [], 0
    for n_segments in levels:
        raw = slic(array, n_segments=int(n_segments), compactness=compactness, sigma=sigma, start_label=0)
        _, dense = np.unique(raw, return_inverse=True)  # contiguous ids even if SLIC skips some
        dense = dense.reshape(raw.shape)
        maps.append(torch.from_numpy(dense + offset))
        offset += int(dense.max()) + 1
    return Superpixels(labels=torch.stack(maps).long().to(image01.device), num_regions=offset)
