"""GEM, the Grounding Everything Module (Bousselham et al., CVPR 2024; WalBouss/GEM @ 5fa677c).

In the last `depth` blocks of a CLIP ViT a second token stream runs beside the ordinary one. Each
block's self-self attention groups tokens by q-q, k-k and v-v similarity (L2-normalised per head,
adaptive inverse temperature τ⁻¹ = mean_i ‖x_i‖ / √d_h over the image's ln_1 outputs), applies the
resulting attention to the original v, averages the three results and projects with out_proj.
The GEM stream starts as the tokens entering the first patched block and accumulates only those
attention outputs (no MLP); both streams read ln_1 of the *ordinary* stream. The heatmap is the
cosine between each patch of proj(ln_post(GEM stream)) and the text (REFERENCE.md E§3).

The reference resizes the image to 448×448 (bicubic, aspect ratio ignored) and resamples the
positional embeddings bicubically; here the input side is the `input_size` option (default 448)
and `wwbl.clip.vit` resamples them bilinearly (documented deviation, it only affects non-native
grids). On models with fewer blocks than `depth` all blocks are patched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wwbl.clip import FrozenCLIP
from wwbl.clip.vit import ViTInternals
from wwbl.extractors.base import HeatmapExtractor, register_extractor

GEM_INPUT_SIZE = 448
GEM_DEPTH = 6  # the reference's gem_depth=7 patches resblocks[-1] … resblocks[-6]


def adaptive_inverse_temperature(x_normed: Tensor, head_dim: int) -> Tensor:
    """τ⁻¹ per image: the mean token norm of the ln_1 output over √d_h, shaped B×1×1×1."""
    return (x_normed.norm(dim=-1).mean(dim=-1) / head_dim**0.5).reshape(-1, 1, 1, 1)


def self_self_attention(q: Tensor, k: Tensor, v: Tensor, inv_temp: Tensor | float, iterations: int = 1) -> Tensor:
    """GEM's ensemble of q-q, k-k and v-v attention applied to v; inputs and output B×heads×L×d_h."""
    outputs = []
    for p in (q, k, v):
        for _ in range(iterations):
            p_bar = F.normalize(p, dim=-1)
            p = torch.softmax(inv_temp * p_bar @ p_bar.transpose(-2, -1), dim=-1) @ p_bar
        p_bar = F.normalize(p, dim=-1)
        outputs.append(torch.softmax(inv_temp * p_bar @ p_bar.transpose(-2, -1), dim=-1) @ v)
    return sum(outputs) / 3.0


def gem_tokens(
    vit: ViTInternals,
    prepared: Tensor,
    depth: int = GEM_DEPTH,
    iterations: int = 1,
    temperature: float | None = None,
) -> Tensor:
    """Final GEM-stream tokens B×(1+N)×width. `temperature` fixes τ⁻¹ instead of the adaptive one."""
    first = max(vit.num_layers - depth, 0)
    x_ori = vit.run_blocks(vit.tokens_in(prepared), 0, first)
    x_gem = x_ori
    for i in range(first, vit.num_layers):
        x_normed = vit.attn_norm(i, x_ori)
        q, k, v = vit.qkv(i, x_normed)
        inv_temp = temperature if temperature is not None else adaptive_inverse_temperature(x_normed, q.shape[-1])
        x_gem = x_gem + vit.attn_scale(i, vit.attn_proj(i, self_self_attention(q, k, v, inv_temp, iterations)))
        x_ori, _ = vit.block_forward(i, x_ori)
    return x_gem


def patch_text_similarity(
    vit: ViTInternals, tokens: Tensor, text_emb: Tensor, image_index: Tensor, grid_hw: tuple[int, int]
) -> Tensor:
    """Cosine of every projected patch token of image `image_index[p]` with text p: P×h×w."""
    patches = F.normalize(vit.project(tokens[:, 1:]).float(), dim=-1)
    sims = (patches[image_index] * F.normalize(text_emb.float(), dim=-1)[:, None]).sum(-1)
    return sims.reshape(-1, *grid_hw)


@register_extractor("gem")
class GEMExtractor(HeatmapExtractor):
    """GEM heatmaps (ViT CLIP only). Options: `depth` (blocks patched, 6), `iterations` (1),
    `temperature` (None = adaptive τ⁻¹), `input_size` (448, the reference's square input)."""

    def __init__(
        self,
        clip: FrozenCLIP,
        depth: int = GEM_DEPTH,
        iterations: int = 1,
        temperature: float | None = None,
        input_size: int = GEM_INPUT_SIZE,
        **base_options,
    ):
        super().__init__(clip, input_size=input_size, **base_options)
        if depth < 1 or iterations < 0:
            raise ValueError(f"GEM needs depth >= 1 and iterations >= 0, got {depth}, {iterations}")
        self.vit = clip.vit
        self.depth, self.iterations, self.temperature = depth, iterations, temperature

    @torch.no_grad()
    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        tokens = gem_tokens(self.vit, images, self.depth, self.iterations, self.temperature)
        grid_hw = tuple(s // self.vit.patch_size for s in images.shape[-2:])
        return patch_text_similarity(self.vit, tokens, text_emb, image_index, grid_hw)
