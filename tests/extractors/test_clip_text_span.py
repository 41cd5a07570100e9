"""ClipTextSpan: the class-token decomposition and the contrast phrases."""
from __future__ import annotations

import pytest
import torch

from tests.helpers.images import random_images
from wwbl.extractors import build_extractor
from wwbl.extractors.clip_text_span import cls_decomposition


def test_clip_text_span_components_sum_to_image_embedding(tiny_clip):
    x = tiny_clip.prepare(torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        parts = cls_decomposition(tiny_clip.vit, x)
        want = tiny_clip.model.encode_image(x)  # open_clip's own, unnormalised
    assert parts.tokens.shape == (3, 1 + 64, tiny_clip.embed_dim)
    assert torch.allclose(parts.tokens.sum(dim=1) + parts.rest, want, atol=1e-4)


def test_clip_text_span_contrast_phrases_shift_the_text_direction(tiny_clip):
    image = random_images(4, [(64, 64)])
    plain = build_extractor("clip_text_span", tiny_clip, contrast="none")
    contrasted = build_extractor("clip_text_span", tiny_clip, contrast=["a cat", "a dog"])
    a, b = plain.heatmaps(image, [["a red square"]])[0], contrasted.heatmaps(image, [["a red square"]])[0]
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError):
        build_extractor("clip_text_span", tiny_clip, contrast=[])
