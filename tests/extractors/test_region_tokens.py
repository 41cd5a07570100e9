"""Region tokens against per-region masked attention through every block."""
from __future__ import annotations

import itertools

import pytest
import torch

from tests.helpers.images import random_images
from tests.helpers.naive import naive_region_embedding, patch_tokens
from wwbl.extractors.region_tokens import reduced_stride, region_embeddings


def test_whole_image_region_reproduces_clips_image_embedding(tiny_clip):
    images = tiny_clip.prepare(torch.stack(random_images(4, [(64, 64), (64, 64)])))
    stride, padding = reduced_stride(tiny_clip.vit.patch_size, 1)
    tokens, grid_hw = patch_tokens(tiny_clip.vit, images, stride, padding)
    assert grid_hw == tiny_clip.vit.grid_size
    inside = torch.ones(2, 3, grid_hw[0] * grid_hw[1], dtype=torch.bool)
    regions = region_embeddings(tiny_clip.vit, tokens, inside, chunk_size=2)
    expected = tiny_clip.model.encode_image(images)
    assert torch.allclose(regions, expected[:, None].expand_as(regions), atol=1e-5)


@pytest.mark.parametrize("start_block", [0, 1])
def test_region_tokens_equal_naive_masked_attention(tiny_clip, start_block):
    vit = tiny_clip.vit
    images = tiny_clip.prepare(torch.stack(random_images(5, [(64, 64), (64, 64)])))
    stride, padding = reduced_stride(vit.patch_size, 2)
    tokens, grid_hw = patch_tokens(vit, images, stride, padding)
    assert grid_hw == (2 * vit.grid_size[0], 2 * vit.grid_size[1])
    cells = grid_hw[0] * grid_hw[1]
    gen = torch.Generator().manual_seed(6)
    inside = torch.rand(2, 3, cells, generator=gen) < 0.3
    inside[0, 1] = False  # an empty region attends only to itself
    inside[1, 2] = True
    fast = region_embeddings(vit, tokens, inside, start_block=start_block, chunk_size=2)
    for b, m in itertools.product(range(2), range(3)):
        naive = naive_region_embedding(vit, tokens[b : b + 1], torch.nonzero(inside[b, m]).flatten(), start_block)
        assert torch.allclose(fast[b, m], naive[0], atol=1e-5), (b, m)


def test_reference_mask_value_is_practically_exact(tiny_clip):
    images = tiny_clip.prepare(torch.stack(random_images(7, [(64, 64)])))
    tokens, grid_hw = patch_tokens(tiny_clip.vit, images, *reduced_stride(tiny_clip.vit.patch_size, 2))
    inside = torch.rand(1, 4, grid_hw[0] * grid_hw[1], generator=torch.Generator().manual_seed(8)) < 0.5
    exact = region_embeddings(tiny_clip.vit, tokens, inside)
    reference = region_embeddings(tiny_clip.vit, tokens, inside, mask_value=-100.0)
    assert torch.allclose(exact, reference, atol=1e-4)


def test_reduced_stride_constants_match_the_reference():
    assert reduced_stride(14, 2) == (7, 6)
    assert reduced_stride(16, 2) == (8, 7)
    assert reduced_stride(32, 2) == (16, 15)
    with pytest.raises(ValueError):
        reduced_stride(14, 3)
