"""Chefer et al. relevancy maps for ViT CLIP ("generic attention explainability", GAE).

For a pair (image, text) the score is s = logit_scale · cos(E_img(x), ẑ_t). For every block l
from `start_layer` on, Ā_l = mean_heads(clamp(∂s/∂A_l ⊙ A_l, min=0)) and the relevancy is
R = Π (I + Ā_l R) accumulated from the first used block; the map is R[CLS, patches].

With `start_layer=-1` (the default and the WWbL reference, `utils.py::interpret_new`) only the
last block is used, so the map is Ā_last[CLS, patches]. `start_layer=0` is the full rollout of
Chefer's paper. Pairs are independent, so one backward pass serves the whole batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wwbl.clip.vit import ViTInternals


def relevancy_maps(
    vit: ViTInternals,
    prepared: Tensor,
    text_emb: Tensor,
    logit_scale: float = 100.0,
    start_layer: int = -1,
    image_index: Tensor | None = None,
) -> Tensor:
    """Relevancy of image `image_index[p]` for text p -> P×S×S in [0, 1] (detached).

    `prepared` holds U images (U×3×S×S, CLIP's input), `text_emb` P texts; without `image_index`
    the pairs are (image_i, text_i). The blocks before `start_layer` do not depend on the text, so
    they run once per image without a graph; only the explained blocks run per pair, with one
    backward pass for all pairs. The patch map is upsampled bilinearly (align_corners=False) to the
    input size and min-max normalised per map, as the reference does.
    """
    if image_index is None:
        if prepared.shape[0] != text_emb.shape[0]:
            raise ValueError(f"relevancy needs one text per image, got {prepared.shape[0]} images and "
                             f"{text_emb.shape[0]} texts")
        image_index = torch.arange(prepared.shape[0], device=prepared.device)
    first = start_layer % vit.num_layers
    with torch.no_grad():
        prefix = vit.run_blocks(vit.tokens_in(prepared.detach()), 0, first)
    with torch.enable_grad():
        tokens = prefix[image_index].requires_grad_(True)  # puts the explained attention in the graph
        tokens, probs = vit.run_blocks(tokens, first, None, return_attn=True)
        image_emb = F.normalize(vit.head(tokens).float(), dim=-1)
        score = logit_scale * (image_emb * text_emb.to(image_emb)).sum()
        grads = torch.autograd.grad(score, probs)
    patch_rel = _rollout(probs, grads)[:, 0, 1:]
    return _to_image_map(patch_rel, prepared.shape[-2:], _grid_of(prepared, vit))


def _rollout(probs: list[Tensor], grads: tuple[Tensor, ...]) -> Tensor:
    """R = Π_l (I + Ā_l) applied as R ← R + Ā_l R, from the first used block on."""
    b, _, length, _ = probs[0].shape
    rel = torch.eye(length, device=probs[0].device, dtype=torch.float32).expand(b, length, length)
    for attn, grad in zip(probs, grads):
        cam = (grad.float() * attn.detach().float()).clamp(min=0).mean(dim=1)
        rel = rel + cam @ rel
    return rel


def _grid_of(prepared: Tensor, vit: ViTInternals) -> tuple[int, int]:
    return prepared.shape[-2] // vit.patch_size, prepared.shape[-1] // vit.patch_size


def _to_image_map(patch_rel: Tensor, size_hw: tuple[int, int], grid_hw: tuple[int, int]) -> Tensor:
    maps = patch_rel.reshape(-1, 1, *grid_hw)
    maps = F.interpolate(maps, size=tuple(size_hw), mode="bilinear", align_corners=False)[:, 0]
    return minmax_normalize(maps).detach()


def minmax_normalize(maps: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-map min-max to [0, 1] over the last two dimensions.

    A constant map carries no ranking: it becomes 1 where its value is positive (e.g. a box covering
    the whole image) and 0 otherwise (e.g. "object absent").
    """
    flat = maps.flatten(-2)
    low = flat.min(dim=-1, keepdim=True).values
    span = flat.max(dim=-1, keepdim=True).values - low
    scaled = (flat - low) / span.clamp_min(eps)
    return torch.where(span > eps, scaled, (flat > 0).to(flat.dtype)).reshape(maps.shape)
