"""Functional access to an open_clip VisionTransformer.

Together with `resnet.py` (the ResNet tower), `text.py` (the text tower) and `adapter.py`, this is
the only code that reaches into open_clip's internals; the extractors use only its methods.
open_clip runs attention through `nn.MultiheadAttention(need_weights=False)` (and its main branch
is replacing that module), so we do not hook it: we recompute each block from its parameters,
which exposes the attention probabilities, accepts custom attention masks and extra tokens, and
allows other patch strides.
The parameters read here (conv1, class/positional embeddings, ln_pre, per block ln_1, in_proj,
out_proj, ls_1, ln_2, mlp, ls_2, then ln_post and proj) have been stable across open_clip 2.x–3.2;
`tests/clip/test_vit.py` checks that this forward equals open_clip's own on tiny models.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class UnsupportedCLIPError(ValueError):
    """The open_clip model lacks the structure a ViT-based method needs."""


class LayerNormParams(NamedTuple):
    """A LayerNorm's affine parameters and epsilon (for methods that linearise it)."""

    weight: Tensor
    bias: Tensor
    eps: float


class ViTInternals:
    """Parameter-level forward of `model.visual` (an open_clip `VisionTransformer`)."""

    def __init__(self, visual: nn.Module):
        self._check_supported(visual)
        self._visual = visual
        self._blocks = list(visual.transformer.resblocks)
        self.num_layers = len(self._blocks)
        self.num_heads = self._blocks[0].attn.num_heads
        self.width = visual.conv1.out_channels
        self.patch_size = int(visual.conv1.kernel_size[0])
        self.grid_size = tuple(int(g) for g in visual.grid_size)

    @staticmethod
    def _check_supported(visual: nn.Module) -> None:
        needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post")
        missing = [name for name in needed if not hasattr(visual, name)]
        if missing:
            raise UnsupportedCLIPError(
                f"{type(visual).__name__} is not an open_clip VisionTransformer (missing {missing}); "
                "this method needs a ViT CLIP such as ViT-B-32."
            )
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise UnsupportedCLIPError("Only ViT CLIP models pooled by the class token are supported.")
        block = visual.transformer.resblocks[0]
        if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention) or hasattr(block, "ln_1_kv"):
            raise UnsupportedCLIPError(
                f"Unsupported attention block {type(block).__name__}; supported: open_clip "
                "ResidualAttentionBlock with nn.MultiheadAttention (open_clip_torch < 3.3)."
            )

    @property
    def dtype(self) -> torch.dtype:
        return self._visual.conv1.weight.dtype

    # -- embeddings -----------------------------------------------------------------------------
    def pos_embed(self, grid_hw: tuple[int, int], mode: str = "bilinear", antialias: bool = False) -> Tensor:
        """Positional embeddings (1 + h·w)×width, the patch part resized to `grid_hw` (`mode`: bilinear, bicubic)."""
        pos = self._visual.positional_embedding
        if tuple(grid_hw) == self.grid_size:
            return pos
        gh, gw = self.grid_size
        patch_pos = pos[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos.float(), size=grid_hw, mode=mode, align_corners=False,
                                  antialias=antialias and mode in ("bilinear", "bicubic"))
        patch_pos = patch_pos.to(pos.dtype).permute(0, 2, 3, 1).reshape(grid_hw[0] * grid_hw[1], -1)
        return torch.cat([pos[:1], patch_pos], dim=0)

    def tokens_in(self, x: Tensor, stride: int | None = None, padding: int = 0, pos_mode: str = "bilinear",
                  pos_antialias: bool = False) -> Tensor:
        """Prepared images B×3×H×W -> tokens B×(1+h·w)×width after ln_pre.

        `stride` < patch size (with zero `padding`) gives overlapping patches (Adapting CLIP's reduced
        stride); the positional embeddings are then resized to the denser grid, read back with
        `grid_of`.
        """
        conv = self._visual.conv1
        patches = F.conv2d(x.to(self.dtype), conv.weight, stride=stride or self.patch_size, padding=padding)
        grid_hw = (patches.shape[-2], patches.shape[-1])
        patches = patches.flatten(2).transpose(1, 2)
        cls = self._visual.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1) + self.pos_embed(grid_hw, pos_mode, pos_antialias).to(patches.dtype)
        return self._visual.ln_pre(tokens)

    def grid_of(self, x: Tensor, stride: int | None = None, padding: int = 0) -> tuple[int, int]:
        """The patch grid (h, w) that `tokens_in(x, stride, padding)` produces."""
        stride = stride or self.patch_size
        return tuple((side + 2 * padding - self.patch_size) // stride + 1 for side in x.shape[-2:])

    # -- blocks ---------------------------------------------------------------------------------
    def attn_norm(self, i: int, x: Tensor) -> Tensor:
        """Block i's LayerNorm before attention (ln_1): the input `qkv` expects."""
        return self._blocks[i].ln_1(x)

    def attn_scale(self, i: int, attn_out: Tensor) -> Tensor:
        """Block i's layer scale on the attention branch (ls_1; the identity in most CLIPs)."""
        return self._blocks[i].ls_1(attn_out)

    def qkv(self, i: int, x_normed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head q, k, v of block i, each B×heads×L×head_dim (x already through ln_1)."""
        attn = self._blocks[i].attn
        q, k, v = F.linear(x_normed, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        b, length, _ = x_normed.shape
        split = lambda t: t.reshape(b, length, self.num_heads, -1).transpose(1, 2)  # noqa: E731
        return split(q), split(k), split(v)

    def attn_proj(self, i: int, heads_out: Tensor) -> Tensor:
        """Merge heads B×heads×L×d -> B×L×width and apply block i's output projection (out_proj)."""
        b, _, length, _ = heads_out.shape
        merged = heads_out.transpose(1, 2).reshape(b, length, self.width)
        proj = self._blocks[i].attn.out_proj
        return F.linear(merged, proj.weight, proj.bias)

    def attn_proj_bias(self, i: int) -> Tensor:
        """The bias (width) of block i's attention output projection."""
        return self._blocks[i].attn.out_proj.bias

    def attention(self, i: int, x_normed: Tensor, attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Block i's self-attention. Returns (output B×L×width, probabilities B×heads×L×L).

        `attn_mask` is additive (float, -inf to block) or boolean (True = blocked), shaped L×L,
        B×L×L or B×heads×L×L.
        """
        q, k, v = self.qkv(i, x_normed)
        scores = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
        if attn_mask is not None:
            scores = scores + _additive_mask(attn_mask, scores.dtype, scores.dim())
        probs = scores.softmax(dim=-1)
        return self.attn_proj(i, probs @ v), probs

    def mlp_residual(self, i: int, x: Tensor) -> Tensor:
        """The second half of block i: x + ls_2(mlp(ln_2(x)))."""
        block = self._blocks[i]
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def block_forward(self, i: int, x: Tensor, attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One residual block; returns (tokens, attention probabilities)."""
        attn_out, probs = self.attention(i, self.attn_norm(i, x), attn_mask)
        x = x + self.attn_scale(i, attn_out)
        return self.mlp_residual(i, x), probs

    def run_blocks(
        self,
        tokens: Tensor,
        start: int = 0,
        end: int | None = None,
        attn_mask: Tensor | None = None,
        return_attn: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Run blocks [start, end); optionally return each block's attention probabilities."""
        probs_all = []
        for i in range(start, self.num_layers if end is None else end):
            tokens, probs = self.block_forward(i, tokens, attn_mask)
            probs_all.append(probs)
        return (tokens, probs_all) if return_attn else tokens

    # -- output ---------------------------------------------------------------------------------
    @property
    def final_norm(self) -> LayerNormParams:
        """The parameters of ln_post, the LayerNorm before the projection."""
        norm = self._visual.ln_post
        return LayerNormParams(norm.weight, norm.bias, norm.eps)

    @property
    def projection(self) -> Tensor | None:
        """The visual projection width×D (None when the tower has none)."""
        return self._visual.proj

    def project(self, tokens: Tensor) -> Tensor:
        """ln_post then the visual projection, applied to every token given (…×width -> …×D)."""
        out = self._visual.ln_post(tokens)
        return out @ self.projection if self.projection is not None else out

    def head(self, tokens: Tensor) -> Tensor:
        """Unnormalised image embedding B×D from the class token of the final tokens."""
        return self.project(tokens[:, 0])

    def forward(self, x: Tensor) -> Tensor:
        """Full image embedding (unnormalised), equal to `model.encode_image` for supported models."""
        return self.head(self.run_blocks(self.tokens_in(x)))


def _additive_mask(mask: Tensor, dtype: torch.dtype, ndim: int) -> Tensor:
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)
    mask = mask.to(dtype)
    while mask.dim() < ndim:
        mask = mask.unsqueeze(-3)
    return mask
