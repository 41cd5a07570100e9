"""Box search of Adapting CLIP (Li, Shakhnarovich, Yeh 2022, Eq. 3-4; reference `utils/box_search.py`).

The box maximises ``f(B) = sum_{p in B} H(p) / sum_p H(p) - lam * |B| / (H*W)`` (map fraction minus an
area penalty). Box sums come from an integral image. Coordinates are *inclusive* pixel indices
``(x1, y1, x2, y2)`` with area ``(x2-x1+1)(y2-y1+1)``, as in the reference.

The reference search (and the default here) is two-level and exhaustive at each level: every box with
``x1 < x2`` and ``y1 < y2`` on the map bilinearly downsampled by ``downsample`` (28x28 for 224 / 8),
then every box whose coordinates lie within +-``downsample`` pixels of the coarse box scaled back, at
full resolution. All maps of a batch are searched at once; no Python loop runs over boxes or maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Upper bound on the number of (map, y-pair, x-pair) scores held in memory at once.
_MAX_SCORES_PER_CHUNK = 1 << 23


def integral_image(maps: torch.Tensor) -> torch.Tensor:
    """Zero-padded 2-D cumulative sum: ``out[..., y, x] = maps[..., :y, :x].sum()``; shape ``(..., H+1, W+1)``.

    Accumulated in float64 (float32 on MPS, which lacks it) so that box sums taken as differences of
    large totals stay exact enough to rank near-equal boxes.
    """
    maps = maps.to(torch.float32 if maps.device.type == "mps" else torch.float64)
    cumulative = maps.cumsum(-1).cumsum(-2)
    return F.pad(cumulative, (1, 0, 1, 0))


def box_objective(
    integral: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor, lam: float
) -> torch.Tensor:
    """Objective of inclusive boxes.

    ``integral`` is ``B x (H+1) x (W+1)``; the coordinates have a leading dimension of 1 or B and
    broadcast together to ``B x ...``.
    """
    batch, height_1, width_1 = integral.shape
    flat = integral.reshape(batch, -1)
    shape = (batch,) + torch.broadcast_shapes(x1.shape, y1.shape, x2.shape, y2.shape)[1:]

    def corner(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        index = (y * width_1 + x).expand(shape).reshape(batch, -1)
        return flat.gather(1, index).reshape(shape)

    box_sum = corner(y2 + 1, x2 + 1) - corner(y1, x2 + 1) - corner(y2 + 1, x1) + corner(y1, x1)
    total = flat[:, -1].clamp_min(torch.finfo(flat.dtype).tiny).reshape((batch,) + (1,) * (len(shape) - 1))
    area = ((x2 - x1 + 1) * (y2 - y1 + 1)).to(integral.dtype)
    return box_sum / total - lam * area / ((height_1 - 1) * (width_1 - 1))


def _coordinate_pairs(length: int, strict: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All (start, end) index pairs with ``start < end`` (strict) or ``start <= end``."""
    start, end = torch.triu_indices(length, length, offset=1 if strict else 0, device=device)
    return start, end


def exhaustive_box_search(maps: torch.Tensor, lam: float, strict: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Best inclusive box of every map of ``maps`` (``B x H x W``) over all boxes.

    ``strict=True`` restricts to ``x1 < x2`` and ``y1 < y2`` (the reference's coarse level).
    Returns ``(boxes B x 4 long (x1, y1, x2, y2), objective B)``.
    """
    batch, height, width = maps.shape
    if strict and (height < 2 or width < 2):
        raise ValueError(f"a strict box search needs maps of at least 2x2 cells, got {height}x{width}")
    integral = integral_image(maps)
    ys1, ys2 = _coordinate_pairs(height, strict, maps.device)
    xs1, xs2 = _coordinate_pairs(width, strict, maps.device)
    rows_per_chunk = max(1, _MAX_SCORES_PER_CHUNK // (batch * xs1.numel()))
    best_value = torch.full((batch,), -float("inf"), dtype=integral.dtype, device=maps.device)
    best_box = torch.zeros(batch, 4, dtype=torch.long, device=maps.device)
    for start in range(0, ys1.numel(), rows_per_chunk):
        y1 = ys1[start : start + rows_per_chunk]
        y2 = ys2[start : start + rows_per_chunk]
        values = box_objective(integral, xs1[None, None], y1[None, :, None], xs2[None, None], y2[None, :, None], lam)
        chunk_value, flat_index = values.reshape(batch, -1).max(dim=1)
        row, col = flat_index // xs1.numel(), flat_index % xs1.numel()
        chunk_box = torch.stack([xs1[col], y1[row], xs2[col], y2[row]], dim=1)
        better = chunk_value > best_value
        best_value = torch.where(better, chunk_value, best_value)
        best_box = torch.where(better[:, None], chunk_box, best_box)
    return best_box, best_value


def refine_box_search(
    maps: torch.Tensor, lam: float, centres: torch.Tensor, radius: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best inclusive box whose every coordinate lies within ``+-radius`` of ``centres`` (``B x 4``)."""
    batch, height, width = maps.shape
    integral = integral_image(maps)
    offsets = torch.arange(-radius, radius + 1, device=maps.device)
    limits = torch.tensor([width - 1, height - 1, width - 1, height - 1], device=maps.device)
    candidates = (centres[:, :, None] + offsets).clamp(min=torch.zeros_like(limits)[:, None], max=limits[:, None])
    k = offsets.numel()
    x1 = candidates[:, 0].reshape(batch, k, 1, 1, 1)
    y1 = candidates[:, 1].reshape(batch, 1, k, 1, 1)
    x2 = candidates[:, 2].reshape(batch, 1, 1, k, 1)
    y2 = candidates[:, 3].reshape(batch, 1, 1, 1, k)
    values = box_objective(integral, x1, y1, x2, y2, lam)
    values = values.masked_fill((x1 > x2) | (y1 > y2), -float("inf")).reshape(batch, -1)
    best_value, flat_index = values.max(dim=1)
    i, j, m, n = torch.unravel_index(flat_index, (k, k, k, k))
    rows = torch.arange(batch, device=maps.device)
    box = torch.stack(
        [candidates[rows, 0, i], candidates[rows, 1, j], candidates[rows, 2, m], candidates[rows, 3, n]], dim=1
    )
    return box, best_value


def coarse_to_fine_box_search(maps: torch.Tensor, lam: float, downsample: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's two-level search (``BruteForceBoxSearch(downsample=8)``) on ``B x H x W`` maps.

    ``downsample=1`` searches every box at full resolution (exact, but memory grows as ``H^2 W^2``).
    Returns ``(boxes B x 4 long inclusive (x1, y1, x2, y2), objective B)``.
    """
    if maps.ndim != 3:
        raise ValueError(f"expected B x H x W maps, got shape {tuple(maps.shape)}")
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    if downsample == 1:
        return exhaustive_box_search(maps, lam)
    height, width = maps.shape[-2:]
    coarse_size = (max(2, height // downsample), max(2, width // downsample))
    coarse = F.interpolate(maps[:, None].float(), size=coarse_size, mode="bilinear", align_corners=False)[:, 0]
    coarse_box, _ = exhaustive_box_search(coarse, lam, strict=True)
    return refine_box_search(maps, lam, coarse_box * downsample, radius=downsample)


def inclusive_to_xyxy(
    boxes: torch.Tensor, map_hw: tuple[int, int], image_hw: tuple[int, int], reference_scaling: bool = False
) -> torch.Tensor:
    """Inclusive map-pixel boxes -> canonical float xyxy in an image of size ``image_hw``.

    By default a box covers pixel edges ``[x1, x2+1)``. ``reference_scaling=True`` reproduces the
    reference, which scales the inclusive indices themselves (``x * w / W``) and so drops one map pixel
    at the right and bottom.
    """
    end_offset = 0 if reference_scaling else 1
    edges = boxes.float() + torch.tensor([0, 0, end_offset, end_offset], dtype=torch.float32, device=boxes.device)
    scale = torch.tensor(
        [image_hw[1] / map_hw[1], image_hw[0] / map_hw[0], image_hw[1] / map_hw[1], image_hw[0] / map_hw[0]],
        device=boxes.device,
    )
    return edges * scale
