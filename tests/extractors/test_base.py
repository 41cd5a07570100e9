"""The common extractor interface and the registry: unit range, original size, batch invariance."""
from __future__ import annotations

import pytest
import torch

from tests.helpers.images import random_images
from wwbl.extractors import HeatmapExtractor, available_extractors, build_extractor


MY_EXTRACTORS = ("gae", "gem", "clip_surgery", "clip_text_span")


def _build(name, tiny_clip, rn_clip_live_residuals):
    if name == "gradcam":
        return build_extractor(name, rn_clip_live_residuals)
    options = {"contrast": ["a cat", "a dog"]} if name == "clip_text_span" else {}
    if name == "gem":
        options["input_size"] = 64
    return build_extractor(name, tiny_clip, **options)


@pytest.mark.parametrize("name", MY_EXTRACTORS + ("gradcam",))
def test_heatmaps_in_unit_range_at_original_size_and_batch_invariant(name, tiny_clip, rn_clip_live_residuals):
    extractor = _build(name, tiny_clip, rn_clip_live_residuals)
    images = random_images(7, [(40, 90), (77, 31)])
    phrases = [["a red car", "the sky"], ["a tree"]]
    batched = extractor.heatmaps(images, phrases)
    assert [tuple(m.shape) for m in batched] == [(2, 40, 90), (1, 77, 31)]
    assert max(float(m.std()) for m in batched) > 0  # not all maps degenerate (Grad-CAM may give one all-0 map)
    for maps in batched:
        assert maps.min() >= 0 and maps.max() <= 1 and torch.isfinite(maps).all()
    for image, image_phrases, maps in zip(images, phrases, batched):
        for phrase, one_map in zip(image_phrases, maps):
            single = extractor.heatmaps([image], [[phrase]])[0][0]
            assert torch.allclose(single, one_map, atol=1e-4)


def test_registry_builds_each_name(tiny_clip, rn_clip_live_residuals):
    names = set(available_extractors())
    assert set(MY_EXTRACTORS + ("gradcam", "g")) <= names
    for name in MY_EXTRACTORS + ("gradcam",):
        built = _build(name, tiny_clip, rn_clip_live_residuals)
        assert isinstance(built, HeatmapExtractor) and built.name == name
    for name in ("gem", "clip_surgery", "gae", "clip_text_span"):
        with pytest.raises(ValueError):
            build_extractor(name, rn_clip_live_residuals)
