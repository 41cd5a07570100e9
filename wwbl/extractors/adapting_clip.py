"""Adapting CLIP for phrase localisation without training (Li, Shakhnarovich, Yeh 2022; REFERENCE.md E§1).

Score map ``phi = exp(cos(E_img(p), e_txt) / sigma)`` (Eq. 5) from spatial CLIP embeddings:

* **ViT**: region tokens (see `region_tokens.py`) over SLIC superpixels at every level of
  ``slic_levels``, run at a reduced stem stride (``upsample`` = 2: the token grid is twice as dense,
  patch positional embeddings bilinearly upsampled). Each pixel takes the score of its superpixel;
  the levels are averaged and the map is min-max normalised (reference `SLICViT.get_heatmap`).
* **ResNet**: the dilated trunk plus the attention pool's value projection at every pixel
  (`dilated_resnet.py`); the reference does not min-max this map before the box search.

The box (`detect`) maximises the map fraction inside it minus ``lam`` times its area fraction
(`box_search.py`). ``lam`` (``box_lambda``) and ``sigma`` (``temperature``) come from the reference's
evaluation table for known models (``tuned_on`` "flickr" or "vg").

``exp(cos/sigma)`` is computed as ``exp((cos - max cos)/sigma)``: the common factor cancels in the
min-max and in the box objective, and large ``1/sigma`` cannot overflow.

Documented differences from the reference: the square input comes from the base class's bilinear
(antialiased) resize instead of PIL bicubic; SLIC runs on that image un-normalised back to [0, 1]
instead of its uint8 version; masked-out patches get ``-inf`` instead of ``-100``
(``mask_value=-100`` reproduces it); boxes cover pixel edges ``[x1, x2+1)`` (``reference_box_scaling``
reproduces the reference's scaling of inclusive indices).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from wwbl.boxes import Detections
from wwbl.clip import FrozenCLIP, minmax_normalize
from wwbl.extractors.base import HeatmapExtractor, ImageInput, register_extractor
from wwbl.extractors.box_search import coarse_to_fine_box_search, inclusive_to_xyxy
from wwbl.extractors.dilated_resnet import dense_resnet_embeddings
from wwbl.extractors.region_tokens import reduced_stride, region_embeddings
from wwbl.extractors.superpixels import DEFAULT_LEVELS, slic_superpixels
from wwbl.images import as_tensor01, resize_square

log = logging.getLogger(__name__)

# (model, tuned_on) -> (box lambda, temperature sigma): the reference's eval.py (REFERENCE.md E§1.5).
TUNED_CONSTANTS = {
    ("ViT-L-14", "flickr"): (0.75, 0.02),
    ("ViT-L-14", "vg"): (0.80, 0.01),
    ("ViT-B-16", "flickr"): (0.80, 0.01),
    ("ViT-B-16", "vg"): (0.85, 0.01),
    ("ViT-B-32", "flickr"): (0.90, 0.009),
    ("ViT-B-32", "vg"): (0.90, 0.008),
    ("RN50x4", "flickr"): (0.70, 0.03),
    ("RN50x4", "vg"): (0.70, 0.01),
    ("RN50", "flickr"): (0.70, 0.03),
    ("RN50", "vg"): (0.80, 0.01),
}
# The reference's "denseclip" baseline (strided RN50x4, high_res=False).
STRIDED_RESNET_CONSTANTS = {"flickr": (0.70, 0.03), "vg": (0.80, 0.03)}
# Models the paper's headline results use; their constants stand in for unknown architectures.
FALLBACK_MODEL = {"vit": "ViT-L-14", "resnet": "RN50x4"}
# ViT-B/32's coarser grid: the reference uses fewer SLIC levels.
B32_LEVELS = tuple(range(100, 401, 50))


def tuned_constants(model_name: str, is_vit: bool, tuned_on: str, high_res: bool = True) -> tuple[float, float]:
    """(lambda, sigma) of the reference table for ``model_name`` (``-quickgelu`` etc. suffixes ignored)."""
    if tuned_on not in ("flickr", "vg"):
        raise ValueError(f"tuned_on must be 'flickr' or 'vg', got {tuned_on!r}")
    if not is_vit and not high_res:
        return STRIDED_RESNET_CONSTANTS[tuned_on]
    base = next((name for name, _ in TUNED_CONSTANTS if model_name == name or model_name.startswith(name + "-")), None)
    if base is None:
        base = FALLBACK_MODEL["vit" if is_vit else "resnet"]
        log.info("adapting_clip: no tuned constants for %s; using those of %s", model_name, base)
    return TUNED_CONSTANTS[(base, tuned_on)]


@register_extractor("adapting_clip")
class AdaptingCLIPExtractor(HeatmapExtractor):
    """Adapting CLIP score maps (ViT region tokens over SLIC superpixels, or dilated ResNet) and boxes.

    Args:
        clip: a ViT (class-token pooled) or ModifiedResNet CLIP.
        box_lambda, temperature: lambda and sigma; None takes them from the reference table.
        tuned_on: which row of the table ("flickr" or "vg").
        slic_levels: SLIC ``n_segments`` levels; None = 100..600 step 50 (100..400 for ViT-B/32).
        slic_compactness, slic_sigma: SLIC parameters (50, 0).
        upsample: ViT token-grid densification (stem stride = patch / upsample).
        start_block: ViT block at which region tokens start (0 = all blocks).
        region_chunk: region tokens processed together.
        mask_value: additive attention score outside a region (-inf; the reference uses -100).
        resnet_pad: zero padding around the ResNet input (64).
        high_res: ResNet: dilated trunk (True) or the strided "denseclip" baseline (False).
        box_downsample: coarse level of the box search (8).
        reference_box_scaling: scale inclusive box indices like the reference (see box_search).
    """

    def __init__(
        self,
        clip: FrozenCLIP,
        box_lambda: float | None = None,
        temperature: float | None = None,
        tuned_on: str = "flickr",
        slic_levels: Sequence[int] | None = None,
        slic_compactness: float = 50.0,
        slic_sigma: float = 0.0,
        upsample: int = 2,
        start_block: int = 0,
        region_chunk: int = 1024,
        mask_value: float = float("-inf"),
        resnet_pad: int = 64,
        high_res: bool = True,
        box_downsample: int = 8,
        reference_box_scaling: bool = False,
        **base_options,
    ):
        super().__init__(clip, **base_options)
        self.is_vit = clip.is_vit
        if self.is_vit:
            self.stride, self.padding = reduced_stride(clip.vit.patch_size, upsample)
            if not 0 <= start_block < clip.vit.num_layers:
                raise ValueError(f"start_block must be in [0, {clip.vit.num_layers}), got {start_block}")
        else:
            self.resnet = clip.resnet
        default_lambda, default_sigma = tuned_constants(clip.model_name, self.is_vit, tuned_on, high_res)
        self.box_lambda = default_lambda if box_lambda is None else float(box_lambda)
        self.temperature = default_sigma if temperature is None else float(temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        is_b32 = clip.model_name.startswith("ViT-B-32")
        self.slic_levels = tuple(slic_levels) if slic_levels is not None else (B32_LEVELS if is_b32 else DEFAULT_LEVELS)
        self.slic_compactness, self.slic_sigma = slic_compactness, slic_sigma
        self.start_block, self.region_chunk, self.mask_value = start_block, region_chunk, mask_value
        self.resnet_pad, self.high_res = resnet_pad, high_res
        self.box_downsample, self.reference_box_scaling = box_downsample, reference_box_scaling

    # -- score maps -------------------------------------------------------------------------------
    @torch.no_grad()
    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        used, image_index = image_index.unique(return_inverse=True)  # images without phrases cost nothing
        images = images[used]
        if self.is_vit:
            return self._vit_maps(images, text_emb, image_index)
        return self._resnet_maps(images, text_emb, image_index)

    def _scores(self, cosine: Tensor) -> Tensor:
        """``exp(cos/sigma)`` up to a positive factor per row (see the module docstring)."""
        return torch.exp((cosine - cosine.amax(dim=-1, keepdim=True)) / self.temperature)

    def _vit_maps(self, images: Tensor, text_emb: Tensor, image_index: Tensor) -> Tensor:
        vit = self.clip.vit
        images01 = (images.float() * _column(self.clip.std, images) + _column(self.clip.mean, images)).clamp(0, 1)
        superpixels = [
            slic_superpixels(img, self.slic_levels, self.slic_compactness, self.slic_sigma) for img in images01
        ]
        tokens = vit.tokens_in(images, self.stride, self.padding)
        grid_hw = vit.grid_of(images, self.stride, self.padding)
        most = max(sp.num_regions for sp in superpixels)
        inside = torch.zeros(len(images), most, grid_hw[0] * grid_hw[1], dtype=torch.bool, device=images.device)
        for i, sp in enumerate(superpixels):
            inside[i, : sp.num_regions] = sp.token_membership(grid_hw)
        embeddings = region_embeddings(vit, tokens, inside, self.start_block, self.region_chunk, self.mask_value)
        embeddings = F.normalize(embeddings.float(), dim=-1)
        maps = embeddings.new_zeros(len(image_index), *images.shape[-2:])
        for i, sp in enumerate(superpixels):  # painting: one gather per image
            rows = torch.nonzero(image_index == i).flatten()
            cosine = text_emb[rows].float() @ embeddings[i, : sp.num_regions].T
            maps[rows] = sp.paint(self._scores(cosine)).mean(dim=1)
        return maps

    def _resnet_maps(self, images: Tensor, text_emb: Tensor, image_index: Tensor) -> Tensor:
        # One image per pass: a stride-1 trunk is large (RN50x4: ~1.5 GB of layer4 features per image).
        maps = images.new_zeros(len(image_index), *images.shape[-2:], dtype=torch.float32)
        for i, image in enumerate(images):
            rows = torch.nonzero(image_index == i).flatten()
            dense = dense_resnet_embeddings(self.resnet, image[None], self.resnet_pad, self.high_res)
            cosine = torch.einsum("pd,dhw->phw", text_emb[rows].float(), F.normalize(dense[0].float(), dim=0))
            maps[rows] = self._scores(cosine.flatten(1)).reshape(cosine.shape)
        return maps

    # -- boxes ----------------------------------------------------------------------------------
    @torch.no_grad()
    def score_maps(self, images: Sequence[ImageInput], phrases: Sequence[Sequence[str]]) -> list[Tensor]:
        """Per image the ``P_i×S×S`` maps the box search runs on (ViT: min-max normalised; ResNet: raw)."""
        return [maps for maps, _ in self._score_maps_and_sizes(images, phrases)]

    def detect(self, images: Sequence[ImageInput], phrases: Sequence[Sequence[str]]) -> list[Detections]:
        """One box per phrase (score = the box objective), xyxy in each original image's frame."""
        detections = []
        for (maps, size_hw), names in zip(self._score_maps_and_sizes(images, phrases), phrases):
            if not len(names):
                detections.append(Detections.empty())
                continue
            boxes, objective = coarse_to_fine_box_search(maps, self.box_lambda, self.box_downsample)
            xyxy = inclusive_to_xyxy(boxes, tuple(maps.shape[-2:]), size_hw, self.reference_box_scaling)
            detections.append(Detections(xyxy, objective, list(names)))
        return detections

    def _score_maps_and_sizes(self, images: Sequence[ImageInput], phrases: Sequence[Sequence[str]]):
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        for start in range(0, len(images), self.images_per_batch):
            chunk_images = [as_tensor01(img) for img in images[start : start + self.images_per_batch]]
            chunk_phrases = [list(p) for p in phrases[start : start + self.images_per_batch]]
            maps = self._chunk_score_maps(chunk_images, chunk_phrases)
            yield from zip(maps, [tuple(img.shape[-2:]) for img in chunk_images])

    def _chunk_score_maps(self, images: list[Tensor], phrases: list[list[str]]) -> list[Tensor]:
        counts = [len(p) for p in phrases]
        flat = [p for per_image in phrases for p in per_image]
        if not flat:
            return [torch.zeros(0, self.input_size, self.input_size) for _ in images]
        square = resize_square(images, self.input_size).to(self.device)
        image_index = torch.repeat_interleave(torch.arange(len(images)), torch.tensor(counts)).to(self.device)
        maps = self._heatmaps_square(self.prepare_images(square), self.encode_phrases(flat), image_index, flat)
        if self.is_vit:
            maps = minmax_normalize(maps)
        return list(maps.float().cpu().split(counts))


def _column(values: Sequence[float], like: Tensor) -> Tensor:
    """Per-channel constants shaped ``1×3×1×1`` on ``like``'s device."""
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(1, 3, 1, 1)
