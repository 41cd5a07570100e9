"""Crop & Rank: ranking by the crop's own embedding; outputs at the original resolution."""
from __future__ import annotations

import torch

from tests.helpers.images import blocky_image
from wwbl.extractors import build_extractor
from wwbl.extractors.crop_and_rank import selective_search_boxes
from wwbl.images import resize_square


def test_crop_and_rank_ranks_a_proposal_by_its_own_embedding_first(tiny_clip):
    extractor = build_extractor("crop_and_rank", tiny_clip, num_proposals=20)
    square = resize_square([blocky_image(48, 72)], tiny_clip.image_size)
    proposals = selective_search_boxes(square[0], 20)
    assert len(proposals) > 2
    target = proposals[1].round().long().tolist()
    crop = square[:, :, target[1] : target[3], target[0] : target[2]]
    text_emb = tiny_clip.encode_image(crop)  # naive: slice then bilinear resize in `prepare`
    boxes, scores = extractor.rank(square, text_emb, torch.tensor([0]))
    assert boxes[0, 0].tolist() == proposals[1].tolist()
    assert scores[0, 0].item() > 0.99
    assert (scores[0, 1:] <= scores[0, 0]).all()
    heatmap = extractor._heatmaps_square(square, text_emb, torch.tensor([0]), ["crop"])[0]
    expected = torch.zeros_like(heatmap)
    expected[target[1] : target[3], target[0] : target[2]] = 1.0
    assert torch.equal(heatmap, expected)


def test_crop_and_rank_detect_and_heatmaps_at_original_resolution(tiny_clip):
    extractor = build_extractor("crop_and_rank", tiny_clip, num_proposals=30, heatmap_boxes=3)
    images = [blocky_image(40, 90), blocky_image(70, 30)]
    phrases = [["a red box", "a blue box"], ["grey"]]
    maps = extractor.heatmaps(images, phrases)
    assert [tuple(m.shape) for m in maps] == [(2, 40, 90), (1, 70, 30)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps)
    for image, det in zip(images, extractor.detect(images, phrases)):
        height, width = image.shape[-2:]
        assert (
            (det.boxes >= 0).all() and (det.boxes[:, [0, 2]] <= width).all() and (det.boxes[:, [1, 3]] <= height).all()
        )
        assert (det.scores.abs() <= 1).all()
