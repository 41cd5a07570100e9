"""Adapting CLIP: tuned constants, score maps against naive region scores, detection by box search."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.images import blocky_image
from tests.helpers.naive import brute_force_box, naive_region_embedding, patch_tokens
from wwbl.clip import FrozenCLIP
from wwbl.extractors import build_extractor
from wwbl.extractors.adapting_clip import tuned_constants
from wwbl.extractors.region_tokens import reduced_stride
from wwbl.extractors.superpixels import slic_superpixels
from wwbl.images import resize_square


def test_tuned_constants_table():
    assert tuned_constants("ViT-L-14", True, "flickr") == (0.75, 0.02)
    assert tuned_constants("ViT-L-14-quickgelu", True, "vg") == (0.80, 0.01)
    assert tuned_constants("ViT-B-32", True, "vg") == (0.90, 0.008)
    assert tuned_constants("RN50", False, "vg") == (0.80, 0.01)
    assert tuned_constants("RN50x4", False, "vg", high_res=False) == (0.80, 0.03)
    assert tuned_constants("wwbl-tiny-vit", True, "flickr") == (0.75, 0.02)
    with pytest.raises(ValueError):
        tuned_constants("RN50", False, "coco")


def test_adapting_clip_vit_map_equals_naive_region_scores(tiny_clip):
    extractor = build_extractor("adapting_clip", tiny_clip, slic_levels=(5,), temperature=0.05)
    image = blocky_image(48, 80)
    phrase = "a red box"
    maps = extractor.score_maps([image], [[phrase]])[0][0]
    square01 = resize_square([image], tiny_clip.image_size)
    prepared = tiny_clip.prepare(square01)
    superpixels = slic_superpixels(
        (prepared[0] * torch.tensor(tiny_clip.std)[:, None, None] + torch.tensor(tiny_clip.mean)[:, None, None]).clamp(
            0, 1
        ),
        (5,),
        50.0,
        0.0,
    )
    tokens, grid_hw = patch_tokens(tiny_clip.vit, prepared, *reduced_stride(tiny_clip.vit.patch_size, 2))
    membership = superpixels.token_membership(grid_hw)
    text = tiny_clip.encode_text([phrase])[0]
    expected = torch.zeros(tiny_clip.image_size, tiny_clip.image_size)
    for region in range(superpixels.num_regions):
        embedding = F.normalize(
            naive_region_embedding(tiny_clip.vit, tokens, torch.nonzero(membership[region]).flatten())[0], dim=-1
        )
        expected[superpixels.labels[0] == region] = math.exp(float(embedding @ text) / 0.05)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(maps, expected, atol=1e-4)


@pytest.mark.parametrize("model", ["vit", "rn"])
def test_adapting_clip_outputs_at_original_resolution(model, tiny_clip, rn_clip_input_sensitive):
    clip = tiny_clip if model == "vit" else rn_clip_input_sensitive
    options = {"slic_levels": (8, 16)} if model == "vit" else {"resnet_pad": 16}
    extractor = build_extractor("adapting_clip", clip, **options)
    images = [blocky_image(30, 70), blocky_image(66, 24)]
    phrases = [["a red box", "a blue box"], ["grass"]]
    maps = extractor.heatmaps(images, phrases)
    assert [tuple(m.shape) for m in maps] == [(2, 30, 70), (1, 66, 24)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps)
    detections = extractor.detect(images, phrases)
    for image, det, names in zip(images, detections, phrases):
        assert det.phrases == names and len(det) == len(names)
        height, width = image.shape[-2:]
        assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 2] <= width).all()
        assert (det.boxes[:, 1] >= 0).all() and (det.boxes[:, 3] <= height).all()
        assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all()


def test_adapting_clip_detect_is_the_box_search_on_its_score_maps(tiny_clip):
    extractor = build_extractor("adapting_clip", tiny_clip, slic_levels=(8,), box_lambda=0.6)
    image = blocky_image(32, 96)
    maps = extractor.score_maps([image], [["a red box"]])[0]
    box, _ = brute_force_box(F.interpolate(maps[None], size=(8, 8), mode="bilinear")[0, 0], 0.6, strict=True)
    detection = extractor.detect([image], [["a red box"]])[0]
    # refined box within ±8 map pixels of the coarse optimum (found here by brute force), scaled to the image
    coarse = torch.tensor(box, dtype=torch.float32) * 8
    refined = detection.boxes[0] / torch.tensor([96 / 64, 32 / 64, 96 / 64, 32 / 64])
    refined[2:] -= 1  # pixel edges -> inclusive indices
    assert ((refined - coarse).abs() <= 8 + 1e-4).all()


@pytest.mark.slow
def test_adapting_clip_at_full_size_with_every_slic_level():
    # A random ViT-B/16 at 224 px: ~3 850 region tokens over 11 SLIC levels on a 28×28 token grid.
    clip = FrozenCLIP("ViT-B-16", pretrained="random")
    extractor = build_extractor("adapting_clip", clip, region_chunk=512)
    assert extractor.slic_levels == tuple(range(100, 601, 50)) and (extractor.stride, extractor.padding) == (8, 7)
    image = blocky_image(180, 260)
    maps = extractor.heatmaps([image], [["a red box", "a blue box"]])[0]
    assert maps.shape == (2, 180, 260) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    detection = extractor.detect([image], [["a red box"]])[0]
    assert (detection.boxes[0, 2:] <= torch.tensor([260.0, 180.0])).all()
