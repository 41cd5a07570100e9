"""The Bucharest poster's heatmap post-processing and its grid search (papers/002; REFERENCE.md E§8).

A heatmap (at any resolution, e.g. the patch grid) is interpolated to the mask size ("nearest",
"bilinear" or "bicubic"), thresholded, then dilated and eroded with square k×k kernels (a
morphological closing when both sizes are equal; 1 = no-op). The poster found dilation followed
by erosion with kernels of 41–61 px best and scored methods by mean IoU across 100 thresholds
uniformly spaced in [0, 1].

Flat grey-level morphology commutes with thresholding (dilate(map > τ) = (maxfilter(map) > τ)),
so the grid search filters each continuous map once per kernel pair and then compares it with
all thresholds at once. Borders follow OpenCV's defaults: outside pixels never dilate into the
image and never erode it. Even kernel sizes use OpenCV's anchor k//2.

Scoring reuses `wwbl.metrics.MeanIoUSweep`: a pixel is foreground when `map >= τ`,
per-image IoU (empty vs empty = 1) averaged over images, 100 thresholds `linspace(0, 1, 100)`.
Interpolated and closed maps are clamped to [0, 1] first (bicubic can overshoot).
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from wwbl.errors import ImageLoadError
from wwbl.metrics import MeanIoUSweep
from wwbl.extractors.base import HeatmapExtractor, ImageInput
from wwbl.images import as_tensor01

log = logging.getLogger(__name__)

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
DEFAULT_KERNEL_SIZES = (1, 41, 51, 61)
NUM_THRESHOLDS = 100


@dataclass(frozen=True)
class PostProcessConfig:
    """One post-processing setting; kernel size 1 disables that operation."""

    interpolation: str = "bilinear"
    threshold: float = 0.5
    dilation: int = 1
    erosion: int = 1

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        for name in ("dilation", "erosion"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} kernel size must be >= 1, got {getattr(self, name)}")


def resize_map(heatmap: Tensor, size_hw: tuple[int, int], mode: str) -> Tensor:
    """Resize an h×w (or …×h×w) map to `size_hw` with the poster's interpolation `mode`."""
    if mode not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {mode!r}")
    lead = heatmap.shape[:-2]
    x = heatmap.reshape(-1, 1, *heatmap.shape[-2:]).float()
    if tuple(x.shape[-2:]) != tuple(size_hw):
        align = None if mode == "nearest" else False
        x = F.interpolate(x, size=tuple(size_hw), mode=mode, align_corners=align)
    return x.reshape(*lead, *size_hw)


def _window_max(x: Tensor, size: int, dim: int) -> Tensor:
    """Max over a window of `size` along dim (-1 or -2), anchor size//2, outside ignored."""
    if size == 1:
        return x
    before, after = size // 2, size - 1 - size // 2
    pad = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
    padded = F.pad(x, pad, value=float("-inf"))
    kernel = (1, size) if dim == -1 else (size, 1)
    return F.max_pool2d(padded, kernel_size=kernel, stride=1)


def grey_dilate(maps: Tensor, size: int) -> Tensor:
    """Flat square k×k grey dilation of …×H×W maps (binary masks included)."""
    x = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    return _window_max(_window_max(x, size, -1), size, -2).reshape(maps.shape)


def grey_erode(maps: Tensor, size: int) -> Tensor:
    """Flat square k×k grey erosion; pixels outside the image count as foreground (OpenCV default)."""
    return -grey_dilate(-maps.float(), size)


def close_map(maps: Tensor, dilation: int, erosion: int) -> Tensor:
    """Dilation with a `dilation`×`dilation` kernel, then erosion with an `erosion`×`erosion` one."""
    return grey_erode(grey_dilate(maps, dilation), erosion)


def postprocess(heatmap: Tensor, size_hw: tuple[int, int], config: PostProcessConfig) -> Tensor:
    """Binary mask H×W (bool) from a heatmap: interpolate, threshold, dilate, erode."""
    resized = resize_map(heatmap, size_hw, config.interpolation).clamp(0, 1)
    return close_map(resized, config.dilation, config.erosion) >= config.threshold


@dataclass
class GridSearchResult:
    """Best setting, its mean IoU, and every (setting without threshold, mean IoU per threshold) row."""

    best: PostProcessConfig
    best_mean_iou: float
    thresholds: Tensor
    table: list[tuple[dict, Tensor]]


def grid_search(
    heatmaps: Sequence[Tensor],
    masks: Sequence[Tensor],
    interpolations: Sequence[str] = INTERPOLATIONS,
    dilations: Sequence[int] = DEFAULT_KERNEL_SIZES,
    erosions: Sequence[int] = DEFAULT_KERNEL_SIZES,
    num_thresholds: int = NUM_THRESHOLDS,
) -> GridSearchResult:
    """Exhaustive search of interpolation × dilation × erosion × threshold on a validation split,
    maximising mean IoU. `heatmaps[i]` (any resolution) is scored against the boolean `masks[i]` H×W."""
    _check_pairs(heatmaps, masks)
    if not (interpolations and dilations and erosions):
        raise ValueError("the grid needs at least one interpolation, one dilation and one erosion size")
    table, best, best_value, thresholds = [], None, -1.0, None
    for mode in interpolations:
        resized = [resize_map(h, m.shape[-2:], mode).clamp(0, 1) for h, m in zip(heatmaps, masks)]
        for dilation, erosion in itertools.product(dilations, erosions):
            config = PostProcessConfig(mode, 0.0, int(dilation), int(erosion))
            sweep = MeanIoUSweep(num_thresholds)
            sweep.update([close_map(h, config.dilation, config.erosion) for h in resized], masks)
            result = sweep.compute()
            curve, thresholds = result["curve"], result["thresholds"]
            table.append(({k: v for k, v in asdict(config).items() if k != "threshold"}, curve))
            index = int(curve.argmax())
            if float(curve[index]) > best_value:
                best_value = float(curve[index])
                best = PostProcessConfig(mode, float(thresholds[index]), config.dilation, config.erosion)
    return GridSearchResult(best=best, best_mean_iou=best_value, thresholds=thresholds, table=table)


def grid_search_extractor(
    extractor: HeatmapExtractor,
    images: Sequence[ImageInput],
    phrases: Sequence[str],
    masks: Sequence[Tensor],
    **grid_options: Any,
) -> GridSearchResult:
    """Run `extractor` on a validation split (one phrase and one boolean mask per image) and grid-search
    its post-processing. Items whose image cannot be read are reported and skipped. The extractor's
    maps are already at the mask resolution, so the interpolation choice matters only for coarser maps."""
    if not len(images) == len(phrases) == len(masks):
        raise ValueError(f"{len(images)} images, {len(phrases)} phrases and {len(masks)} masks")
    kept = []
    for index, image in enumerate(images):
        try:
            kept.append((as_tensor01(image), phrases[index], masks[index]))
        except ImageLoadError as err:
            log.warning("skipping validation item %d: %s", index, err)
    if not kept:
        raise ValueError("no readable validation item to tune the post-processing on")
    maps = extractor.heatmaps([item[0] for item in kept], [[item[1]] for item in kept])
    return grid_search([m[0] for m in maps], [item[2] for item in kept], **grid_options)


def _check_pairs(heatmaps: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    if len(heatmaps) != len(masks) or not heatmaps:
        raise ValueError(f"need one mask per heatmap and at least one pair, got {len(heatmaps)} and {len(masks)}")
