"""CLIP Surgery (Li et al. 2023; xmed-lab/CLIP_Surgery @ d4696d4; REFERENCE.md E§4), ViT models.

Architecture surgery: in the last `depth` (6) blocks a second stream runs beside the ordinary one.
It starts as the tokens entering the first patched block and adds, per block, only the v-v
attention softmax(v vᵀ/√d_h) v (through out_proj) computed from ln_1 of the ordinary stream; the
FFN is skipped. Feature surgery for a single text: with the L2-normalised projected patch tokens
f_i and text t, s_i = f_i · (t − t_∅), where t_∅ is the embedding of the empty prompt, ensembled
over `empty_prompt_templates` (default the 80 OpenAI ImageNet templates applied to ""; the
reference ensembles 85, the 5 extra "…in the scene" ones are not recorded). The base min-max
normalises each map. The reference feeds 224 or 512 square inputs (`input_size`, default CLIP's).

The ResNet variant (v-v attention pool) is not provided: its value normalisation is not recorded
precisely enough in what we read of the reference (REFERENCE.md E§4) to reproduce, so ResNet models are refused with a clear error.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torch import Tensor

from wwbl.clip import FrozenCLIP
from wwbl.clip.vit import UnsupportedCLIPError, ViTInternals
from wwbl.extractors.base import HeatmapExtractor, register_extractor

SURGERY_DEPTH = 6
DEFAULT_EMPTY_PROMPTS = tuple(template("") for template in OPENAI_IMAGENET_TEMPLATES)


def value_value_attention(v: Tensor) -> Tensor:
    """softmax(v vᵀ · d_h^-1/2) v per head (B×heads×L×d_h), no L2 normalisation (ViT)."""
    return torch.softmax((v * v.shape[-1] ** -0.5) @ v.transpose(-2, -1), dim=-1) @ v


def surgery_tokens(vit: ViTInternals, prepared: Tensor, depth: int = SURGERY_DEPTH) -> Tensor:
    """Tokens of the surgery stream B×(1+N)×width, the class token taken from the ordinary stream."""
    first = max(vit.num_layers - depth, 0)
    x_ori = vit.run_blocks(vit.tokens_in(prepared), 0, first)
    x_new = x_ori
    for i in range(first, vit.num_layers):
        _, _, v = vit.qkv(i, vit.attn_norm(i, x_ori))
        x_new = x_new + vit.attn_scale(i, vit.attn_proj(i, value_value_attention(v)))
        x_ori, _ = vit.block_forward(i, x_ori)
    return torch.cat([x_ori[:, :1], x_new[:, 1:]], dim=1)


@register_extractor("clip_surgery")
class CLIPSurgeryExtractor(HeatmapExtractor):
    """CLIP Surgery heatmaps (ViT CLIP only). Options: `depth` (6), `subtract_empty_prompt`
    (True: the single-text feature surgery), `empty_prompt_templates`, `input_size`."""

    def __init__(
        self,
        clip: FrozenCLIP,
        depth: int = SURGERY_DEPTH,
        subtract_empty_prompt: bool = True,
        empty_prompt_templates: Sequence[str] = DEFAULT_EMPTY_PROMPTS,
        **base_options,
    ):
        super().__init__(clip, **base_options)
        if not clip.is_vit:
            raise UnsupportedCLIPError("clip_surgery is implemented for ViT CLIP models only (the ResNet "
                                       "attention-pool variant is not provided); use e.g. ViT-B-16.")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if subtract_empty_prompt and not empty_prompt_templates:
            raise ValueError("empty_prompt_templates must hold at least one template")
        self.vit, self.depth = clip.vit, depth
        self.empty_prompts = list(empty_prompt_templates) if subtract_empty_prompt else []
        self._empty: Tensor | None = None

    def _empty_embedding(self) -> Tensor | None:
        if self.empty_prompts and self._empty is None:
            # encode_text rejects "" (no word to ground); the tokenizer itself handles it, so encode directly
            emb = self.clip.encode_text_full_context(self.empty_prompts)
            self._empty = F.normalize(emb.mean(dim=0), dim=-1)
        return self._empty

    @torch.no_grad()
    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        text = F.normalize(text_emb.float(), dim=-1)
        empty = self._empty_embedding()
        direction = text - empty.to(text) if empty is not None else text
        tokens = surgery_tokens(self.vit, images, self.depth)
        grid_hw = tuple(s // self.vit.patch_size for s in images.shape[-2:])
        patches = F.normalize(self.vit.project(tokens[:, 1:]).float(), dim=-1)
        return (patches[image_index] * direction[:, None]).sum(-1).reshape(-1, *grid_hw)
