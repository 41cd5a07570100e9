"""GAE: the extractor equals CLIP's own relevancy map."""
from __future__ import annotations

import pytest
import torch

from tests.helpers.images import random_images
from wwbl.extractors import build_extractor


@pytest.mark.parametrize("start_layer", [-1, 0])
def test_gae_equals_clip_relevancy(tiny_clip, start_layer):
    images = random_images(6, [(64, 64), (64, 64)])
    got = build_extractor("gae", tiny_clip, start_layer=start_layer).heatmaps(images, [["a cat"], ["a road"]])
    text = tiny_clip.encode_text(["a cat", "a road"])
    want = tiny_clip.relevancy(torch.stack(images), text, start_layer=start_layer)
    assert torch.allclose(torch.cat(got), want, atol=1e-5)
