"""Grad-CAM for a CLIP ResNet (Selvaraju et al. 2017, as in kevinzakka/clip_playground; REFERENCE.md E§7).

A = the output of `visual.layer4` (before the attention pool). The target is the raw dot product
of the unnormalised image embedding with the text embedding; α_k = spatial mean of ∂target/∂A_k;
map = ReLU(Σ_k α_k A_k), bicubically upsampled to the input size (align_corners=False). The text
embedding arrives L2-normalised, which scales each pair's map by a positive constant and so does
not change the min-max normalised result. The reference's Gaussian blur is for display only and
is not applied. ViT models are refused: the reference (REFERENCE.md E§7) is Grad-CAM for CLIP ResNets only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wwbl.clip import FrozenCLIP
from wwbl.clip.resnet import ResNetInternals
from wwbl.extractors.base import HeatmapExtractor, register_extractor

_UPSAMPLING = ("bicubic", "bilinear", "nearest", "none")


def gradcam_maps(
    resnet: ResNetInternals, prepared: Tensor, text_emb: Tensor, image_index: Tensor | None = None
) -> Tensor:
    """Grad-CAM of image `image_index[p]` (default p) for text p on the layer4 grid: P×h×w, ≥ 0, detached.

    The trunk runs once per image; only the attention pool runs per (image, text) pair.
    """
    with torch.no_grad():
        features = resnet.last_stage_features(prepared)
    if image_index is not None:
        features = features[image_index]
    with torch.enable_grad():
        features.requires_grad_(True)
        image_emb = resnet.attention_pool(features).float()
        target = (image_emb * text_emb.to(image_emb)).sum()  # pairs are independent: one backward for all
        (grads,) = torch.autograd.grad(target, features)
    weights = grads.float().mean(dim=(-2, -1), keepdim=True)
    return (weights * features.detach().float()).sum(dim=1).clamp(min=0)


@register_extractor("gradcam")
class GradCAMExtractor(HeatmapExtractor):
    """Grad-CAM heatmaps (ResNet CLIP only). Option `upsampling`: "bicubic" (reference), "bilinear",
    "nearest", or "none" (return the layer4 grid; the base then resizes bilinearly)."""

    def __init__(self, clip: FrozenCLIP, upsampling: str = "bicubic", **base_options):
        super().__init__(clip, **base_options)
        self.resnet = clip.resnet
        if upsampling not in _UPSAMPLING:
            raise ValueError(f"upsampling must be one of {_UPSAMPLING}, got {upsampling!r}")
        self.upsampling = upsampling

    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        maps = gradcam_maps(self.resnet, images, text_emb, image_index)
        if self.upsampling == "none":
            return maps
        size = images.shape[-2:]
        align = False if self.upsampling in ("bicubic", "bilinear") else None
        return F.interpolate(maps[:, None], size=size, mode=self.upsampling, align_corners=align)[:, 0]
