"""CLIP Surgery: value-value attention tokens against a naive loop."""
from __future__ import annotations

import math

import torch

from wwbl.extractors.clip_surgery import surgery_tokens


def test_clip_surgery_tokens_match_naive_value_value_attention(tiny_clip):
    visual = tiny_clip.model.visual
    x = tiny_clip.prepare(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(12)))
    with torch.no_grad():
        got = surgery_tokens(tiny_clip.vit, x, depth=1)
        tokens = visual._embeds(x)
        blocks = visual.transformer.resblocks
        for block in blocks[:-1]:
            tokens = block(tokens)
        last = blocks[-1]
        normed = last.ln_1(tokens)[0]
        heads, width = last.attn.num_heads, normed.shape[-1]
        d = width // heads
        v = (normed @ last.attn.in_proj_weight[2 * width:].T + last.attn.in_proj_bias[2 * width:]).tolist()
        merged = []
        for i in range(len(v)):
            row = []
            for h in range(heads):
                vh = [r[h * d:(h + 1) * d] for r in v]
                logits = [sum(a * b for a, b in zip(vh[i], vh[j])) / math.sqrt(d) for j in range(len(vh))]
                weights = [math.exp(z - max(logits)) for z in logits]
                row += [sum(w * vh[j][c] for j, w in enumerate(weights)) / sum(weights) for c in range(d)]
            merged.append(row)
        want = tokens[0] + last.attn.out_proj(torch.tensor(merged))
        want[0] = blocks[-1](tokens)[0, 0]  # the class token comes from the ordinary stream
    assert torch.allclose(got[0], want, atol=1e-5)
