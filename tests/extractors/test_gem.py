"""GEM: self-self attention and the two-stream forward against naive loops."""
from __future__ import annotations

import math

import pytest
import torch

from wwbl.extractors.gem import gem_tokens, self_self_attention


def _naive_ssa(q, k, v, inv_temp, iterations):
    """Loop-level q-q/k-k/v-v attention on nested lists for one head: L×d inputs."""

    def normalize(rows):
        return [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in rows]

    def attend(p_bar, values):
        out = []
        for i in range(len(p_bar)):
            logits = [inv_temp * sum(a * b for a, b in zip(p_bar[i], p_bar[j])) for j in range(len(p_bar))]
            weights = [math.exp(z - max(logits)) for z in logits]
            total = sum(weights)
            out.append([sum(w / total * values[j][c] for j, w in enumerate(weights)) for c in range(len(values[0]))])
        return out

    results = []
    for p in (q, k, v):
        for _ in range(iterations):
            p = attend(normalize(p), normalize(p))
        results.append(attend(normalize(p), v))
    return [[sum(r[i][c] for r in results) / 3 for c in range(len(v[0]))] for i in range(len(v))]


@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_self_self_attention_matches_naive_loops(iterations):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 4, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    got = self_self_attention(q, k, v, 1.7, iterations)
    for b in range(2):
        for h in range(2):
            want = _naive_ssa(q[b, h].tolist(), k[b, h].tolist(), v[b, h].tolist(), 1.7, iterations)
            assert torch.allclose(got[b, h], torch.tensor(want, dtype=torch.float64), atol=1e-10)


def test_self_self_attention_parallel_tokens_average_values():
    # rows of q, k and v each share one direction -> every attention is uniform -> output = mean(v)
    scales = torch.tensor([1.0, 2.0, 4.0])[:, None]
    q = (scales * torch.tensor([1.0, 2.0, 2.0])).reshape(1, 1, 3, 3)
    k = (scales * torch.tensor([0.0, -1.0, 3.0])).reshape(1, 1, 3, 3)
    v = (scales * torch.tensor([2.0, 1.0, 0.5])).reshape(1, 1, 3, 3)
    out = self_self_attention(q, k, v, 5.0)
    mean_v = torch.tensor([2.0, 1.0, 0.5]) * 7 / 3
    assert torch.allclose(out, mean_v.expand(1, 1, 3, 3))


def test_gem_tokens_match_naive_two_stream_forward(tiny_clip):
    visual = tiny_clip.model.visual
    x = tiny_clip.prepare(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        got = gem_tokens(tiny_clip.vit, x, depth=1)
        # independent: open_clip's own embedding and blocks for the ordinary stream
        tokens = visual._embeds(x)
        blocks = visual.transformer.resblocks
        for block in blocks[:-1]:
            tokens = block(tokens)
        last = blocks[-1]
        normed = last.ln_1(tokens)
        heads, width = last.attn.num_heads, normed.shape[-1]
        qkv = normed @ last.attn.in_proj_weight.T + last.attn.in_proj_bias
        q, k, v = (t.reshape(2, -1, heads, width // heads).transpose(1, 2) for t in qkv.split(width, -1))
        inv_temp = normed.norm(dim=-1).mean(dim=1) / math.sqrt(width // heads)
        want = torch.empty_like(tokens)
        for b in range(2):
            per_head = [torch.tensor(_naive_ssa(q[b, h].tolist(), k[b, h].tolist(), v[b, h].tolist(),
                                                 float(inv_temp[b]), 1)) for h in range(heads)]
            merged = torch.cat(per_head, dim=-1)
            want[b] = tokens[b] + last.attn.out_proj(merged)
    assert torch.allclose(got, want, atol=1e-5)
