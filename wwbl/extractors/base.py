"""One interface for every heatmap source: network g and the training-free CLIP extractors.

`HeatmapExtractor.heatmaps(images, phrases)` takes images in any supported form and, per image,
the phrases to localise; it returns per image a P_i×H_i×W_i tensor in [0, 1] at the image's
original resolution. Subclasses implement one batched method, `_heatmaps_square`, on square
inputs of side `input_size`; the base class loads and resizes images, encodes each distinct
phrase once, batches images in chunks, min-max normalises each map and resizes it back.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from wwbl.clip import FrozenCLIP, minmax_normalize
from wwbl.images import as_tensor01, resize_heatmap, resize_square

ImageInput = str | Path | Image.Image | np.ndarray | Tensor

_REGISTRY: dict[str, type["HeatmapExtractor"]] = {}


class HeatmapExtractor(nn.Module, ABC):
    """Base class of heatmap sources.

    Args:
        clip: the frozen CLIP used for text (and, for training-free methods, for images).
        text_prefix: prepended to every phrase before CLIP encodes it (the reference's "image of ").
        input_size: side of the square image the method sees; defaults to CLIP's input size.
        images_per_batch: how many images are processed together (with all their phrases).
    """

    # Whether the raw maps (before the min-max) are on an absolute scale that means the same for every
    # phrase and image (g's sigmoid: 0 = "not here"); relevancy and similarity maps are only relative.
    absolute_maps: bool = False

    def __init__(
        self,
        clip: FrozenCLIP,
        text_prefix: str = "",
        input_size: int | None = None,
        images_per_batch: int = 16,
    ):
        super().__init__()
        if clip is None:
            raise ValueError(f"{type(self).__name__} needs a FrozenCLIP (pass clip=FrozenCLIP(...))")
        self.clip = clip
        self.text_prefix = text_prefix
        self.input_size = int(input_size or clip.image_size)
        self.images_per_batch = images_per_batch

    @property
    def device(self) -> torch.device:
        return self.clip.device

    def heatmaps(
        self, images: Sequence[ImageInput], phrases: Sequence[Sequence[str]], native_resolution: bool = False,
        normalize: bool = True,
    ) -> list[Tensor]:
        """Per image a P_i×H_i×W_i float tensor in [0, 1] (CPU) at the original resolution.

        `native_resolution=True` returns the maps at the size the method produced them (e.g. the
        patch grid), for post-processing that chooses its own interpolation. `normalize=False` skips
        the per-map min-max (values in the method's own scale), for callers that combine raw maps
        first, as the released code's Flickr entity average.
        """
        return self.heatmaps_and_ranges(images, phrases, native_resolution, normalize)[0]

    def heatmaps_and_ranges(
        self, images: Sequence[ImageInput], phrases: Sequence[Sequence[str]], native_resolution: bool = False,
        normalize: bool = True,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """`heatmaps` and, per image, the ``P_i×2`` (min, max) of each map in the method's own scale
        before the min-max, so that ``min + (max − min) · map`` recovers the raw map from the same forward
        pass (the detection confidence of `wwbl.inference.scoring` reads g's absolute sigmoid heat so)."""
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        tensors = [as_tensor01(image) for image in images]
        out: list[Tensor] = []
        ranges: list[Tensor] = []
        for start in range(0, len(tensors), self.images_per_batch):
            chunk = slice(start, start + self.images_per_batch)
            maps, spans = self._chunk_heatmaps(tensors[chunk], [list(p) for p in phrases[chunk]], native_resolution,
                                               normalize)
            out.extend(maps)
            ranges.extend(spans)
        return out, ranges

    def _chunk_heatmaps(self, images: list[Tensor], phrases: list[list[str]], native_resolution: bool,
                        normalize: bool) -> tuple[list[Tensor], list[Tensor]]:
        busy = [i for i, p in enumerate(phrases) if p]  # images without phrases cost nothing
        out = [torch.zeros(0, *img.shape[-2:]) for img in images]
        ranges = [torch.zeros(0, 2) for _ in images]
        if not busy:
            return out, ranges
        counts = [len(phrases[i]) for i in busy]
        flat = [p for i in busy for p in phrases[i]]
        square = resize_square([images[i] for i in busy], self.input_size).to(self.device)
        image_index = torch.repeat_interleave(torch.arange(len(busy)), torch.tensor(counts)).to(self.device)
        text_emb = self.encode_phrases(flat)
        maps = self._heatmaps_square(self.prepare_images(square), text_emb, image_index, flat)
        # Every source is min-max normalised, as the reference's box extraction does, so one box rule fits all.
        maps = maps.detach().float()
        flat_maps = maps.flatten(-2)
        low_high = torch.stack([flat_maps.min(dim=-1).values, flat_maps.max(dim=-1).values], dim=-1).cpu()
        maps = (minmax_normalize(maps) if normalize else maps).cpu()
        for i, per_image, span in zip(busy, maps.split(counts), low_high.split(counts)):
            if not native_resolution:
                per_image = resize_heatmap(per_image, images[i].shape[-2:], align_corners=False)
                per_image = per_image.clamp(0, 1) if normalize else per_image
            out[i] = per_image
            ranges[i] = span
        return out, ranges

    def encode_phrases(self, phrases: list[str]) -> Tensor:
        """CLIP text embeddings (P×D, L2-normalised) of the prefixed phrases."""
        return self.clip.encode_text([self.text_prefix + p for p in phrases])

    def prepare_images(self, square01: Tensor) -> Tensor:
        """Square [0,1] images -> the method's input; CLIP's preprocessing unless overridden."""
        return self.clip.prepare(square01)

    @abstractmethod
    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        """Maps for P (image, phrase) pairs: images U×3×S×S (prepared, each image once), text_emb P×D,
        image_index P (which image each phrase belongs to) -> P×h×w in any scale (normalised by the caller).
        """


def register_extractor(name: str) -> Callable[[type[HeatmapExtractor]], type[HeatmapExtractor]]:
    """Class decorator adding an extractor to the registry under `name`."""

    def add(cls: type[HeatmapExtractor]) -> type[HeatmapExtractor]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"extractor name {name!r} is already registered by {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return add


def build_extractor(name: str, clip: FrozenCLIP | None = None, **options: Any) -> HeatmapExtractor:
    """Instantiate a registered extractor by name (see `available_extractors()`)."""
    import wwbl.extractors  # noqa: F401  (populates the registry)

    if name not in _REGISTRY:
        raise KeyError(f"unknown extractor {name!r}; available: {', '.join(available_extractors())}")
    return _REGISTRY[name](clip=clip, **options)


def available_extractors() -> list[str]:
    import wwbl.extractors  # noqa: F401  (populates the registry)

    return sorted(_REGISTRY)
