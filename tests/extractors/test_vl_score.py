"""VL-Score: Score-CAM weights by hand, masked channel embeddings against a per-channel loop."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.images import random_images, blocky_image
from wwbl.extractors import build_extractor
from wwbl.extractors.vl_score import channel_embeddings, component_boxes, score_cam_weights


def test_score_cam_weights_hand_computed():
    scores = torch.tensor([[0.3, 0.1, 0.5], [0.1, 0.05, 0.2]])
    base = torch.tensor([0.2, 0.25])
    weights, present = score_cam_weights(scores, base)
    e1, e3 = math.exp(0.1), math.exp(0.3)
    assert torch.allclose(weights[0], torch.tensor([e1 / (e1 + e3), 0.0, e3 / (e1 + e3)]))
    assert present.tolist() == [True, False]
    assert torch.equal(weights[1], torch.zeros(3))
    uncapped, present = score_cam_weights(scores, base, temperature=0.5, cap=False)
    assert present.tolist() == [True, True]
    assert torch.allclose(uncapped[1], torch.softmax(torch.tensor([-0.3, -0.4, -0.1]), 0))


def test_masked_channel_embeddings_equal_a_naive_per_channel_loop(rn_clip_input_sensitive):
    prepared = rn_clip_input_sensitive.prepare(torch.stack(random_images(10, [(128, 128), (128, 128)])))
    activations = rn_clip_input_sensitive.resnet.last_stage_features(prepared)
    activations = activations[:, 100:112]  # a subset of channels keeps the test fast
    fast = channel_embeddings(rn_clip_input_sensitive, prepared, activations, batch_size=7)  # chunks straddle images
    for image, channel in itertools.product(range(2), range(0, 12, 3)):
        up = F.interpolate(
            activations[image, channel][None, None], size=(128, 128), mode="bilinear", align_corners=True
        )
        mask = (up - up.min()) / (up.max() - up.min() + 1e-7)
        naive = rn_clip_input_sensitive.encode_image_prepared(prepared[image : image + 1] * mask)[0]
        assert torch.allclose(fast[image, channel], naive, atol=1e-5)


def test_vl_score_map_is_the_weighted_activation_sum(rn_clip_input_sensitive):
    extractor = build_extractor("vl_score", rn_clip_input_sensitive, base_cap=False, softmax_temperature=0.01)
    prepared = rn_clip_input_sensitive.prepare(torch.stack(random_images(12, [(128, 128)])))
    phrases = ["dog", "cat"]
    text = extractor.encode_phrases(phrases)
    fast = extractor._heatmaps_square(prepared, text, torch.tensor([0, 0]), phrases)
    activations = rn_clip_input_sensitive.resnet.last_stage_features(prepared)[0]
    # channel_embeddings is checked against a naive loop above
    embeddings = channel_embeddings(rn_clip_input_sensitive, prepared, activations[None], batch_size=64)[0]
    base = rn_clip_input_sensitive.encode_image_prepared(torch.zeros_like(prepared))[0]
    for p in range(2):
        gaps = embeddings @ text[p] - base @ text[p]
        weights = torch.softmax(gaps / 0.01, 0)
        assert weights.max() > 3 * weights.min()  # the test is not a plain mean
        expected = torch.relu(sum(w * a for w, a in zip(weights, activations)))
        assert torch.allclose(fast[p], expected, atol=1e-5)


def test_vl_score_synonyms_are_averaged(rn_clip_input_sensitive):
    extractor = build_extractor("vl_score", rn_clip_input_sensitive, synonym_separator=",")
    embedding = extractor.encode_phrases(["tench, Tinca tinca"])[0]
    parts = rn_clip_input_sensitive.encode_text(["an image of a tench.", "an image of a Tinca tinca."])
    assert torch.allclose(embedding, F.normalize(parts.mean(0), dim=0), atol=1e-6)
    with pytest.raises(ValueError):
        extractor.encode_phrases([" , "])


def test_component_boxes_hand_made_map():
    heatmap = torch.zeros(40, 50)
    heatmap[2:10, 3:20] = 1.0  # component A: rows 2..9, cols 3..19
    heatmap[20:30, 30:35] = 0.8  # component B
    heatmap[30:40, 35:45] = 0.7  # touches B only diagonally: separate with 4-connectivity
    heatmap[35, 5] = 0.9  # one pixel: below the H*W/1000 = 2 pixel minimum
    heatmap[15:18, 40:45] = 0.5  # below the 0.6 threshold
    boxes, scores = component_boxes(heatmap, 0.6, 1e-3)
    assert sorted(map(tuple, boxes.tolist())) == sorted(
        [(3.0, 2.0, 20.0, 10.0), (30.0, 20.0, 35.0, 30.0), (35.0, 30.0, 45.0, 40.0)]
    )
    assert sorted(scores.tolist()) == pytest.approx([0.7, 0.8, 1.0])
    assert component_boxes(torch.zeros(5, 5), 0.6, 1e-3)[0].shape == (0, 4)


def test_vl_score_outputs_at_original_resolution(rn_clip_input_sensitive):
    extractor = build_extractor("vl_score", rn_clip_input_sensitive, base_cap=False)
    images = [blocky_image(36, 100)]
    phrases = [["a red box", "grey"]]
    maps = extractor.heatmaps(images, phrases)
    assert [tuple(m.shape) for m in maps] == [(2, 36, 100)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps)
    for image, det in zip(images, extractor.detect(images, phrases)):
        height, width = image.shape[-2:]
        assert (det.boxes[:, [0, 2]] <= width).all() and (det.boxes[:, [1, 3]] <= height).all()
        assert (det.boxes[:, 2:] > det.boxes[:, :2]).all()


def test_vl_score_refuses_a_vit(tiny_clip):
    with pytest.raises(ValueError):
        build_extractor("vl_score", tiny_clip)
