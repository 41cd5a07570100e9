"""Chefer/GAE relevancy against a naive per-pair computation; shared image work; min-max."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wwbl.clip import FrozenCLIP, minmax_normalize
from wwbl.clip.relevancy import relevancy_maps


def _naive_last_layer_relevancy(clip: FrozenCLIP, image01: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Chefer's last-block relevancy for one pair, using open_clip's own modules and torch's MHA weights."""
    visual = clip.model.visual
    x = clip.prepare(image01[None])
    tokens = visual._embeds(x) if hasattr(visual, "_embeds") else None
    for block in visual.transformer.resblocks[:-1]:
        tokens = block(tokens)
    last = visual.transformer.resblocks[-1]
    normed = last.ln_1(tokens)
    _, probs = last.attn(normed, normed, normed, need_weights=True, average_attn_weights=False)
    probs = probs.detach().requires_grad_(True)
    heads = last.attn.num_heads
    width = normed.shape[-1]
    v = F.linear(normed, last.attn.in_proj_weight[2 * width:], last.attn.in_proj_bias[2 * width:])
    v = v.reshape(1, -1, heads, width // heads).transpose(1, 2)
    attn_out = last.attn.out_proj((probs @ v).transpose(1, 2).reshape(1, -1, width))
    out = tokens + attn_out
    out = out + last.mlp(last.ln_2(out))
    emb = F.normalize(visual.ln_post(out[:, 0]) @ visual.proj, dim=-1)
    score = clip.logit_scale * (emb * text).sum()
    (grad,) = torch.autograd.grad(score, probs)
    cam = (grad * probs).clamp(min=0).mean(dim=1)[0, 0, 1:]
    side = int(cam.numel() ** 0.5)
    cam = F.interpolate(cam.reshape(1, 1, side, side), size=(clip.image_size,) * 2, mode="bilinear")[0, 0]
    return (cam - cam.min()) / (cam.max() - cam.min())


def test_relevancy_matches_naive_per_pair_computation(tiny_clip):
    torch.manual_seed(1)
    images = torch.rand(3, 3, 64, 64)
    texts = tiny_clip.encode_text(["a red square", "two blue circles", "a green triangle left"])
    batched = tiny_clip.relevancy(images, texts)
    assert batched.shape == (3, 64, 64)
    for i in range(3):
        with torch.enable_grad():
            naive = _naive_last_layer_relevancy(tiny_clip, images[i], texts[i])
        assert torch.allclose(batched[i], naive, atol=1e-4)


def test_relevancy_properties(tiny_clip):
    images = torch.rand(2, 3, 50, 80)
    texts = tiny_clip.encode_text(["a dog", "a cat"])
    last = tiny_clip.relevancy(images, texts)
    rollout = tiny_clip.relevancy(images, texts, start_layer=0)
    explicit_last = tiny_clip.relevancy(images, texts, start_layer=tiny_clip.vit.num_layers - 1)
    for maps in (last, rollout):
        assert maps.min() >= 0 and maps.max() <= 1
        assert torch.allclose(maps.flatten(1).amax(1), torch.ones(2))
        assert not maps.requires_grad
    assert torch.allclose(last, explicit_last)
    assert not torch.allclose(last, rollout)
    # Pairs are independent: the first pair alone gives the same map.
    assert torch.allclose(tiny_clip.relevancy(images[:1], texts[:1]), last[:1], atol=1e-5)


def test_relevancy_requires_one_text_per_image(tiny_clip):
    with pytest.raises(ValueError, match="one text per image"):
        tiny_clip.relevancy(torch.rand(2, 3, 64, 64), tiny_clip.encode_text(["a"]))


def test_minmax_normalize_hand_cases():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[0.7, 0.7], [0.7, 0.7]], [[0.0, 0.0], [0.0, 0.0]]])
    out = minmax_normalize(maps)
    assert out[0].tolist() == [[0.0, 0.5], [0.25, 1.0]]
    assert out[1].tolist() == [[1.0, 1.0], [1.0, 1.0]]  # constant positive: everywhere
    assert out[2].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # constant zero: nowhere


@pytest.mark.parametrize("start_layer", [-1, 1])
def test_relevancy_with_image_index_equals_relevancy_of_repeated_images(tiny_clip, start_layer):
    prepared = tiny_clip.prepare(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
    text = tiny_clip.encode_text(["a dog", "a cat", "a red ball"])
    index = torch.tensor([1, 0, 1])
    got = relevancy_maps(tiny_clip.vit, prepared, text, tiny_clip.logit_scale, start_layer, image_index=index)
    want = relevancy_maps(tiny_clip.vit, prepared[index], text, tiny_clip.logit_scale, start_layer)
    assert got.shape == (3, tiny_clip.image_size, tiny_clip.image_size) and not got.requires_grad
    assert torch.allclose(got, want, atol=1e-6)
