"""Region tokens for a CLIP ViT (Adapting CLIP, Li et al. 2022, Sec. 4.3; REFERENCE.md E§1.2).

A region token starts as a copy of the class token and, in every block, attends only to the patch
tokens inside its region and to itself; patch and class tokens never attend to region tokens, so the
ordinary stream runs unchanged. Its final state goes through ``ln_post`` and the projection like the
class token, giving one CLIP image embedding per region.

Region tokens do not interact, so they are processed in chunks (layer-outer, chunk-inner: the
ordinary stream is computed once) and each token's attention to itself is a per-token dot product,
so no region×region matrix is ever built. Images of a batch are processed together; images with
fewer regions are padded with empty regions whose outputs are ignored by the caller.

Everything here uses the parameter-level API of `wwbl.clip.vit.ViTInternals`. The reduced-stride
patch embedding with padding lives here because `ViTInternals.tokens_in` takes a stride but no
padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wwbl.clip.vit import ViTInternals


def reduced_stride(patch_size: int, upsample: int) -> tuple[int, int]:
    """Stem (stride, padding) for a token grid ``upsample`` times denser: ``(p // u, (p - 1) // 2)``.

    ``upsample=1`` is CLIP's own stem (stride p, no padding).
    """
    if upsample < 1 or patch_size % upsample:
        raise ValueError(f"upsample must be a divisor of the patch size {patch_size}, got {upsample}")
    if upsample == 1:
        return patch_size, 0
    return patch_size // upsample, (patch_size - 1) // 2


def region_embeddings(
    vit: ViTInternals,
    tokens: Tensor,
    inside: Tensor,
    start_block: int = 0,
    chunk_size: int = 1024,
    mask_value: float = float("-inf"),
) -> Tensor:
    """CLIP image embeddings (unnormalised) of region tokens: ``B×M×D``.

    Args:
        vit: the ViT's parameter-level forward.
        tokens: ordinary tokens ``B×(1+N)×width`` (class token first), e.g. from `ViTInternals.tokens_in`.
        inside: ``B×M×N`` bool, True where patch n lies in region m.
        start_block: the block at which region tokens are created as copies of the class token
            (the reference uses 0: all blocks).
        chunk_size: region tokens per chunk, summed over the batch (bounds memory; does not change
            the result).
        mask_value: additive score for patches outside a region. ``-inf`` excludes them exactly;
            the reference adds ``-100``.
    """
    batch, length, _ = tokens.shape
    if inside.dim() != 3 or inside.shape[0] != batch or inside.shape[2] != length - 1:
        raise ValueError(f"inside must be B×M×N = {batch}×M×{length - 1}, got {tuple(inside.shape)}")
    if not 0 <= start_block < vit.num_layers:
        raise ValueError(f"start_block must be in [0, {vit.num_layers}), got {start_block}")
    x = vit.run_blocks(tokens, 0, start_block) if start_block else tokens
    regions = x[:, :1].expand(-1, inside.shape[1], -1).clone()
    outside_bias = torch.zeros(inside.shape, dtype=x.dtype, device=x.device).masked_fill(~inside, mask_value)
    per_image = max(1, chunk_size // batch)
    for i in range(start_block, vit.num_layers):
        x, keys, values = _ordinary_block(vit, i, x)
        for start in range(0, regions.shape[1], per_image):
            chunk = slice(start, start + per_image)
            regions[:, chunk] = _region_block(vit, i, regions[:, chunk], keys, values, outside_bias[:, chunk])
    return vit.project(regions)


def _ordinary_block(vit: ViTInternals, i: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Block i on the ordinary stream; also returns the patch keys/values the region tokens attend to."""
    q, k, v = vit.qkv(i, vit.attn_norm(i, x))
    x = x + vit.attn_scale(i, vit.attn_proj(i, F.scaled_dot_product_attention(q, k, v)))
    return vit.mlp_residual(i, x), k[:, :, 1:], v[:, :, 1:]


def _region_block(
    vit: ViTInternals, i: int, regions: Tensor, keys: Tensor, values: Tensor, outside_bias: Tensor
) -> Tensor:
    """Block i for region tokens ``B×C×width`` attending to patch keys/values (``B×heads×N×d``) and themselves.

    ``outside_bias`` (``B×C×N``) is added to the patch scores: 0 inside the region, ``mask_value`` outside.
    """
    q, k_self, v_self = vit.qkv(i, vit.attn_norm(i, regions))
    q = q * q.shape[-1] ** -0.5
    patch_scores = q @ keys.transpose(-2, -1) + outside_bias[:, None]
    self_scores = (q * k_self).sum(-1, keepdim=True)
    probs = torch.cat([patch_scores, self_scores], dim=-1).softmax(dim=-1)
    attended = probs[..., :-1] @ values + probs[..., -1:] * v_self
    regions = regions + vit.attn_scale(i, vit.attn_proj(i, attended))
    return vit.mlp_residual(i, regions)
