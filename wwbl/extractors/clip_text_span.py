"""ClipTextSpan spatial decomposition (Gandelsman, Efros, Steinhardt, ICLR 2024; REFERENCE.md E§5).

The class token's final residual z is a sum of direct terms: ln_pre's output, every block's MLP
output, and every block's attention output, which splits over source tokens i (and heads) as
A_{0,i} W_O v_i plus the out_proj bias. Through ln_post linearised at the actual mean μ and
std σ of z, and the projection P, each term maps to a vector in the embedding space; the
reference spreads μ and β evenly over the K = 2L+1 logged terms, and each attention term's share
(and its out_proj bias) over its N·H token-head components, so that all components sum exactly to
the (unnormalised) image embedding. `cls_decomposition` reproduces this bookkeeping.

Heatmap for a text t: s_i = ĉ_i · (t̂ − mean_{t'} t̂') over patches i, summed over all layers and
heads; reshaped to the patch grid, bilinearly upsampled to the input size, clipped at 0 (the
extractor base then min-max normalises). The contrast set is the `contrast` option: "imagenet"
(the benchmark's 1 000 ImageNet class names, here in one template, `contrast_templates`; the
reference's classifier weights are template ensembles), a list of phrases, or "none".
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from torch import Tensor

from wwbl.clip import FrozenCLIP
from wwbl.clip.vit import ViTInternals
from wwbl.extractors.base import HeatmapExtractor, register_extractor


@dataclass
class ClsDecomposition:
    """Direct contributions to the unnormalised image embedding.

    `tokens` B×N×D: per source token (class token first), summed over layers and heads;
    `rest` B×D: ln_pre and MLP terms. `tokens.sum(1) + rest` equals the image embedding.
    """

    tokens: Tensor
    rest: Tensor


def _cls_stream(vit: ViTInternals, prepared: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Runs the blocks, logging per-token attention contributions to the class token.

    Returns (token terms B×N×W summed over layers, attention bias term B×W summed over layers,
    non-attention terms B×(L+1)×W, final class-token residual B×W).
    """
    x = vit.tokens_in(prepared)
    token_terms = torch.zeros_like(x)
    bias_terms = torch.zeros_like(x[:, 0])
    other_terms = [x[:, 0]]
    for i in range(vit.num_layers):
        q, k, v = vit.qkv(i, vit.attn_norm(i, x))
        probs = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
        heads_out = probs[:, :, 0, :, None] * v  # B×H×N×d: what each source token sends to the class token
        bias = vit.attn_proj_bias(i)
        token_terms = token_terms + vit.attn_scale(i, vit.attn_proj(i, heads_out) - bias)
        bias_terms = bias_terms + vit.attn_scale(i, bias).expand_as(bias_terms)
        x = x + vit.attn_scale(i, vit.attn_proj(i, probs @ v))
        before_mlp = x
        x = vit.mlp_residual(i, x)
        other_terms.append((x - before_mlp)[:, 0])
    return token_terms, bias_terms, torch.stack(other_terms, dim=1), x[:, 0]


def cls_decomposition(vit: ViTInternals, prepared: Tensor) -> ClsDecomposition:
    """The reference's decomposition of the image embedding into direct per-token components."""
    token_terms, bias_terms, other_terms, z = _cls_stream(vit, prepared)
    norm, proj = vit.final_norm, vit.projection
    num_layers, num_tokens = vit.num_layers, token_terms.shape[1]
    num_terms = 2 * num_layers + 1
    mu = z.mean(dim=-1, keepdim=True)
    sigma = (z.var(dim=-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    gamma, beta = norm.weight, norm.bias

    def through_norm(term: Tensor, share: float, sigma_: Tensor, mu_: Tensor) -> Tensor:
        # γ ⊙ (term − share·μ)/σ + share·β, then the projection
        out = gamma * (term - share * mu_) / sigma_ + share * beta
        return out @ proj if proj is not None else out

    token_share = num_layers / (num_terms * num_tokens)
    tokens = through_norm(token_terms + bias_terms[:, None] / num_tokens, token_share, sigma[:, None], mu[:, None])
    rest = through_norm(other_terms, 1.0 / num_terms, sigma[:, None], mu[:, None]).sum(dim=1)
    return ClsDecomposition(tokens=tokens, rest=rest)


def patch_scores(
    decomposition: ClsDecomposition, direction: Tensor, image_index: Tensor, grid_hw: tuple[int, int]
) -> Tensor:
    """s_i = ĉ_i · direction_p for the patch tokens of image `image_index[p]`: P×h×w (direction P×D)."""
    patches = decomposition.tokens[:, 1:].float()
    return (patches[image_index] * direction[:, None].float()).sum(-1).reshape(-1, *grid_hw)


@register_extractor("clip_text_span")
class ClipTextSpanExtractor(HeatmapExtractor):
    """ClipTextSpan heatmaps (ViT CLIP only).

    Options: `contrast` ("imagenet" default, "none", or a sequence of phrases whose mean
    embedding is subtracted from the text), `contrast_templates` (templates for the ImageNet
    class names, default one: "a photo of a {}.").
    """

    def __init__(
        self,
        clip: FrozenCLIP,
        contrast: str | Sequence[str] = "imagenet",
        contrast_templates: Sequence[str] = ("a photo of a {}.",),
        **base_options,
    ):
        super().__init__(clip, **base_options)
        self.vit = clip.vit
        self.contrast_phrases = _contrast_phrases(contrast, contrast_templates)
        self._contrast_vector: Tensor | None = None

    def _contrast(self) -> Tensor | None:
        if self.contrast_phrases and self._contrast_vector is None:
            self._contrast_vector = self.clip.encode_text(self.contrast_phrases).mean(dim=0)
        return self._contrast_vector

    @torch.no_grad()
    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        direction = F.normalize(text_emb.float(), dim=-1)
        contrast = self._contrast()
        if contrast is not None:
            direction = direction - contrast.to(direction)
        grid_hw = tuple(s // self.vit.patch_size for s in images.shape[-2:])
        scores = patch_scores(cls_decomposition(self.vit, images), direction, image_index, grid_hw)
        upsampled = F.interpolate(scores[:, None], size=images.shape[-2:], mode="bilinear",
                                  align_corners=False)[:, 0]
        return upsampled.clamp(min=0)


def _contrast_phrases(contrast: str | Sequence[str], templates: Sequence[str]) -> list[str]:
    if isinstance(contrast, str):
        if contrast == "none":
            return []
        if contrast == "imagenet":
            if not templates:
                raise ValueError("contrast_templates must hold at least one template such as 'a photo of a {}.'")
            return [template.format(name) for name in IMAGENET_CLASSNAMES for template in templates]
        raise ValueError(f"contrast must be 'imagenet', 'none' or a list of phrases, got {contrast!r}")
    phrases = list(contrast)
    if not phrases:
        raise ValueError("an explicit contrast set needs at least one phrase; use contrast='none' for no contrast")
    return phrases
