"""Training-free extractors, part B: Adapting CLIP (region tokens, superpixels, dilated ResNet, box
search), Crop & Rank and VL-Score. Tiny random CLIP models; each result is checked against a naive
computation written here (loops, per-region masked attention, per-channel Score-CAM), open_clip's own
forward, or a hand-derived case."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from wwbl.clip import FrozenCLIP, ResNetInternals
from wwbl.extractors import build_extractor
from wwbl.extractors.adapting_clip import tuned_constants
from wwbl.extractors.box_search import (
    coarse_to_fine_box_search,
    exhaustive_box_search,
    inclusive_to_xyxy,
)
from wwbl.extractors.crop_and_rank import selective_search_boxes
from wwbl.extractors.region_tokens import reduced_stride, region_embeddings
from wwbl.extractors.superpixels import slic_superpixels
from wwbl.extractors.vl_score import channel_embeddings, component_boxes, score_cam_weights
from wwbl.images import resize_square


def _patch_tokens(vit, images, stride, padding):
    return vit.tokens_in(images, stride, padding), vit.grid_of(images, stride, padding)


@pytest.fixture(scope="module")
def vit_clip() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("wwbl-tiny-vit", pretrained="random")


@pytest.fixture(scope="module")
def rn_clip() -> FrozenCLIP:
    torch.manual_seed(0)
    clip = FrozenCLIP("wwbl-tiny-rn", pretrained="random")
    # open_clip's random ResNet barely depends on its input (zero-initialised bn3, shrinking default
    # conv init): every embedding has cosine ~1 with every other. Variance-preserving convs and
    # random batch-norm affines make the network, and these tests, non-trivial.
    with torch.no_grad():
        for module in clip.model.visual.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.0)
                module.bias.uniform_(-0.1, 0.1)
    return clip


def _images(seed: int, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=gen) for h, w in sizes]


def _blocky_image(height: int, width: int) -> torch.Tensor:
    """Coloured rectangles on grey: structure for SLIC and selective search."""
    img = torch.full((3, height, width), 0.5)
    img[:, height // 8 : height // 2, width // 6 : width // 2] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    img[:, height // 2 :, width // 2 :] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    return img


# -- box search -------------------------------------------------------------------------------------
def _brute_force_box(heatmap: torch.Tensor, lam: float, strict: bool = False):
    """Every inclusive box by explicit loops and slicing."""
    height, width = heatmap.shape
    total = float(heatmap.sum())
    best, best_box = -math.inf, None
    for y1, y2, x1, x2 in itertools.product(range(height), range(height), range(width), range(width)):
        if (y1 >= y2 or x1 >= x2) if strict else (y1 > y2 or x1 > x2):
            continue
        value = float(heatmap[y1 : y2 + 1, x1 : x2 + 1].sum()) / total - lam * (y2 - y1 + 1) * (x2 - x1 + 1) / (
            height * width
        )
        if value > best:
            best, best_box = value, (x1, y1, x2, y2)
    return best_box, best


@pytest.mark.parametrize("strict", [False, True])
def test_exhaustive_box_search_equals_brute_force(strict):
    gen = torch.Generator().manual_seed(1)
    maps = torch.rand(3, 6, 9, generator=gen) ** 3
    for lam in (0.3, 0.8):
        boxes, values = exhaustive_box_search(maps, lam, strict=strict)
        for heatmap, box, value in zip(maps, boxes, values):
            expected_box, expected_value = _brute_force_box(heatmap, lam, strict)
            assert tuple(box.tolist()) == expected_box
            assert value.item() == pytest.approx(expected_value, abs=1e-5)


def test_exhaustive_box_search_chunking_does_not_change_the_result(monkeypatch):
    from wwbl.extractors import box_search

    maps = torch.rand(2, 7, 5, generator=torch.Generator().manual_seed(2))
    whole = exhaustive_box_search(maps, 0.5)
    monkeypatch.setattr(box_search, "_MAX_SCORES_PER_CHUNK", 7)
    chunked = exhaustive_box_search(maps, 0.5)
    assert torch.equal(whole[0], chunked[0])
    assert torch.allclose(whole[1], chunked[1])


@pytest.mark.parametrize(("rows", "cols"), [((8, 23), (16, 31)), ((5, 20), (9, 27))])
def test_coarse_to_fine_finds_a_bright_rectangle(rows, cols):
    # 1 inside R, 0 outside, lam = 0.5 on 32×32: dropping a pixel of R costs 1/|R| >= 1/256 of the
    # fraction and saves only 0.5/1024 of penalty, adding an outside pixel only costs, so the optimum
    # is R itself with value 1 - 0.5 |R| / 1024.
    heatmap = torch.zeros(1, 32, 32)
    heatmap[0, rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = 1.0
    boxes, values = coarse_to_fine_box_search(heatmap, 0.5, downsample=8)
    area = (rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1)
    assert boxes[0].tolist() == [cols[0], rows[0], cols[1], rows[1]]
    assert values[0].item() == pytest.approx(1 - 0.5 * area / 1024)


def test_coarse_to_fine_value_is_the_objective_of_its_box_and_bounded_by_the_optimum():
    maps = torch.rand(2, 12, 10, generator=torch.Generator().manual_seed(3)) ** 4
    boxes, values = coarse_to_fine_box_search(maps, 0.6, downsample=4)
    for heatmap, box, value in zip(maps, boxes, values):
        x1, y1, x2, y2 = box.tolist()
        own = float(heatmap[y1 : y2 + 1, x1 : x2 + 1].sum() / heatmap.sum()) - 0.6 * (x2 - x1 + 1) * (y2 - y1 + 1) / 120
        assert value.item() == pytest.approx(own, abs=1e-5)
        assert value.item() <= _brute_force_box(heatmap, 0.6)[1] + 1e-6
    _, exact_values = coarse_to_fine_box_search(maps, 0.6, downsample=1)
    assert exact_values[0].item() == pytest.approx(_brute_force_box(maps[0], 0.6)[1], abs=1e-5)


def test_inclusive_boxes_to_image_xyxy():
    boxes = torch.tensor([[2, 4, 5, 9]])
    # map 10 (h) × 20 (w) -> image 30 × 40: x scale 2, y scale 3
    assert inclusive_to_xyxy(boxes, (10, 20), (30, 40)).tolist() == [[4.0, 12.0, 12.0, 30.0]]
    assert inclusive_to_xyxy(boxes, (10, 20), (30, 40), reference_scaling=True).tolist() == [[4.0, 12.0, 10.0, 27.0]]


# -- region tokens ----------------------------------------------------------------------------------
def _naive_region_embedding(vit, tokens, region_cells, start_block=0):
    """One region at a time: the full sequence [class, patches, region] through every block with a
    boolean mask (True = blocked): ordinary tokens never see the region token, which sees its cells
    and itself only."""
    length = tokens.shape[1]
    blocked = torch.zeros(length + 1, length + 1, dtype=torch.bool)
    blocked[:length, length] = True
    blocked[length, :length] = True
    for cell in region_cells:
        blocked[length, 1 + cell] = False
    x = vit.run_blocks(tokens, 0, start_block) if start_block else tokens
    sequence = torch.cat([x, x[:, :1]], dim=1)
    for i in range(start_block, vit.num_layers):
        sequence, _ = vit.block_forward(i, sequence, blocked)
    return vit.project(sequence[:, -1])


def test_whole_image_region_reproduces_clips_image_embedding(vit_clip):
    images = vit_clip.prepare(torch.stack(_images(4, [(64, 64), (64, 64)])))
    stride, padding = reduced_stride(vit_clip.vit.patch_size, 1)
    tokens, grid_hw = _patch_tokens(vit_clip.vit, images, stride, padding)
    assert grid_hw == vit_clip.vit.grid_size
    inside = torch.ones(2, 3, grid_hw[0] * grid_hw[1], dtype=torch.bool)
    regions = region_embeddings(vit_clip.vit, tokens, inside, chunk_size=2)
    expected = vit_clip.model.encode_image(images)
    assert torch.allclose(regions, expected[:, None].expand_as(regions), atol=1e-5)


@pytest.mark.parametrize("start_block", [0, 1])
def test_region_tokens_equal_naive_masked_attention(vit_clip, start_block):
    vit = vit_clip.vit
    images = vit_clip.prepare(torch.stack(_images(5, [(64, 64), (64, 64)])))
    stride, padding = reduced_stride(vit.patch_size, 2)
    tokens, grid_hw = _patch_tokens(vit, images, stride, padding)
    assert grid_hw == (2 * vit.grid_size[0], 2 * vit.grid_size[1])
    cells = grid_hw[0] * grid_hw[1]
    gen = torch.Generator().manual_seed(6)
    inside = torch.rand(2, 3, cells, generator=gen) < 0.3
    inside[0, 1] = False  # an empty region attends only to itself
    inside[1, 2] = True
    fast = region_embeddings(vit, tokens, inside, start_block=start_block, chunk_size=2)
    for b, m in itertools.product(range(2), range(3)):
        naive = _naive_region_embedding(vit, tokens[b : b + 1], torch.nonzero(inside[b, m]).flatten(), start_block)
        assert torch.allclose(fast[b, m], naive[0], atol=1e-5), (b, m)


def test_reference_mask_value_is_practically_exact(vit_clip):
    images = vit_clip.prepare(torch.stack(_images(7, [(64, 64)])))
    tokens, grid_hw = _patch_tokens(vit_clip.vit, images, *reduced_stride(vit_clip.vit.patch_size, 2))
    inside = torch.rand(1, 4, grid_hw[0] * grid_hw[1], generator=torch.Generator().manual_seed(8)) < 0.5
    exact = region_embeddings(vit_clip.vit, tokens, inside)
    reference = region_embeddings(vit_clip.vit, tokens, inside, mask_value=-100.0)
    assert torch.allclose(exact, reference, atol=1e-4)


def test_reduced_stride_constants_match_the_reference():
    assert reduced_stride(14, 2) == (7, 6)
    assert reduced_stride(16, 2) == (8, 7)
    assert reduced_stride(32, 2) == (16, 15)
    with pytest.raises(ValueError):
        reduced_stride(14, 3)


# -- superpixels ------------------------------------------------------------------------------------
def test_superpixel_membership_and_painting():
    image = _blocky_image(40, 56)
    superpixels = slic_superpixels(image, levels=(6, 12))
    labels = superpixels.labels
    assert labels.shape == (2, 40, 56)
    assert set(labels.unique().tolist()) == set(range(superpixels.num_regions))
    grid_hw = (5, 7)
    membership = superpixels.token_membership(grid_hw)
    for region in range(superpixels.num_regions):  # the reference: each pixel mask resized with nearest
        level = int(torch.nonzero((labels == region).flatten(1).any(1))[0])
        mask = (labels[level] == region).float()[None, None]
        expected = F.interpolate(mask, size=grid_hw, mode="nearest").flatten() > 0.5
        assert torch.equal(membership[region], expected)
    values = torch.rand(3, superpixels.num_regions)
    painted = superpixels.paint(values)
    y, x = 13, 41
    for level in range(2):
        assert torch.equal(painted[:, level, y, x], values[:, labels[level, y, x]])


# -- Adapting CLIP -----------------------------------------------------------------------------------
def test_tuned_constants_table():
    assert tuned_constants("ViT-L-14", True, "flickr") == (0.75, 0.02)
    assert tuned_constants("ViT-L-14-quickgelu", True, "vg") == (0.80, 0.01)
    assert tuned_constants("ViT-B-32", True, "vg") == (0.90, 0.008)
    assert tuned_constants("RN50", False, "vg") == (0.80, 0.01)
    assert tuned_constants("RN50x4", False, "vg", high_res=False) == (0.80, 0.03)
    assert tuned_constants("wwbl-tiny-vit", True, "flickr") == (0.75, 0.02)
    with pytest.raises(ValueError):
        tuned_constants("RN50", False, "coco")


def test_adapting_clip_vit_map_equals_naive_region_scores(vit_clip):
    extractor = build_extractor("adapting_clip", vit_clip, slic_levels=(5,), temperature=0.05)
    image = _blocky_image(48, 80)
    phrase = "a red box"
    maps = extractor.score_maps([image], [[phrase]])[0][0]
    square01 = resize_square([image], vit_clip.image_size)
    prepared = vit_clip.prepare(square01)
    superpixels = slic_superpixels(
        (prepared[0] * torch.tensor(vit_clip.std)[:, None, None] + torch.tensor(vit_clip.mean)[:, None, None]).clamp(
            0, 1
        ),
        (5,),
        50.0,
        0.0,
    )
    tokens, grid_hw = _patch_tokens(vit_clip.vit, prepared, *reduced_stride(vit_clip.vit.patch_size, 2))
    membership = superpixels.token_membership(grid_hw)
    text = vit_clip.encode_text([phrase])[0]
    expected = torch.zeros(vit_clip.image_size, vit_clip.image_size)
    for region in range(superpixels.num_regions):
        embedding = F.normalize(
            _naive_region_embedding(vit_clip.vit, tokens, torch.nonzero(membership[region]).flatten())[0], dim=-1
        )
        expected[superpixels.labels[0] == region] = math.exp(float(embedding @ text) / 0.05)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(maps, expected, atol=1e-4)


@pytest.mark.parametrize("model", ["vit", "rn"])
def test_adapting_clip_outputs_at_original_resolution(model, vit_clip, rn_clip):
    clip = vit_clip if model == "vit" else rn_clip
    options = {"slic_levels": (8, 16)} if model == "vit" else {"resnet_pad": 16}
    extractor = build_extractor("adapting_clip", clip, **options)
    images = [_blocky_image(30, 70), _blocky_image(66, 24)]
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


def test_adapting_clip_detect_is_the_box_search_on_its_score_maps(vit_clip):
    extractor = build_extractor("adapting_clip", vit_clip, slic_levels=(8,), box_lambda=0.6)
    image = _blocky_image(32, 96)
    maps = extractor.score_maps([image], [["a red box"]])[0]
    box, _ = _brute_force_box(F.interpolate(maps[None], size=(8, 8), mode="bilinear")[0, 0], 0.6, strict=True)
    detection = extractor.detect([image], [["a red box"]])[0]
    # refined box within ±8 map pixels of the coarse optimum (found here by brute force), scaled to the image
    coarse = torch.tensor(box, dtype=torch.float32) * 8
    refined = detection.boxes[0] / torch.tensor([96 / 64, 32 / 64, 96 / 64, 32 / 64])
    refined[2:] -= 1  # pixel edges -> inclusive indices
    assert ((refined - coarse).abs() <= 8 + 1e-4).all()


def test_dilated_resnet_is_the_atrous_version_of_the_strided_one(rn_clip):
    # À trous: the dilated trunk sampled every 32 pixels equals the ordinary stride-32 trunk.
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(9))
    dense = rn_clip.resnet.dilated_features(x)
    strided = rn_clip.resnet.last_stage_features(x)
    assert dense.shape[-2:] == (96 - 30, 64 - 30)
    assert torch.allclose(dense[..., ::32, ::32], strided, atol=1e-5)


def test_value_projection_is_the_attention_pool_of_a_constant_map(rn_clip):
    # open_clip's own attention pool over identical tokens (constant features, no positional
    # embedding) returns c_proj(v_proj(f)) whatever the attention weights: the value projection.
    visual = copy.deepcopy(rn_clip.model.visual)
    with torch.no_grad():
        visual.attnpool.positional_embedding.zero_()
        side = rn_clip.image_size // 32
        feature = torch.randn(2, visual.attnpool.k_proj.in_features, 1, 1, generator=torch.Generator().manual_seed(8))
        features = feature.expand(-1, -1, side, side)
        want = visual.attnpool(features)
        got = ResNetInternals(visual).value_projection(features)
    assert got.shape == (2, want.shape[1], side, side)
    assert torch.allclose(got, want[:, :, None, None].expand_as(got), atol=1e-5)


# -- Crop & Rank ------------------------------------------------------------------------------------
def test_crop_and_rank_ranks_a_proposal_by_its_own_embedding_first(vit_clip):
    extractor = build_extractor("crop_and_rank", vit_clip, num_proposals=20)
    square = resize_square([_blocky_image(48, 72)], vit_clip.image_size)
    proposals = selective_search_boxes(square[0], 20)
    assert len(proposals) > 2
    target = proposals[1].round().long().tolist()
    crop = square[:, :, target[1] : target[3], target[0] : target[2]]
    text_emb = vit_clip.encode_image(crop)  # naive: slice then bilinear resize in `prepare`
    boxes, scores = extractor.rank(square, text_emb, torch.tensor([0]))
    assert boxes[0, 0].tolist() == proposals[1].tolist()
    assert scores[0, 0].item() > 0.99
    assert (scores[0, 1:] <= scores[0, 0]).all()
    heatmap = extractor._heatmaps_square(square, text_emb, torch.tensor([0]), ["crop"])[0]
    expected = torch.zeros_like(heatmap)
    expected[target[1] : target[3], target[0] : target[2]] = 1.0
    assert torch.equal(heatmap, expected)


def test_crop_and_rank_detect_and_heatmaps_at_original_resolution(vit_clip):
    extractor = build_extractor("crop_and_rank", vit_clip, num_proposals=30, heatmap_boxes=3)
    images = [_blocky_image(40, 90), _blocky_image(70, 30)]
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


# -- VL-Score ---------------------------------------------------------------------------------------
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


def test_masked_channel_embeddings_equal_a_naive_per_channel_loop(rn_clip):
    prepared = rn_clip.prepare(torch.stack(_images(10, [(128, 128), (128, 128)])))
    activations = rn_clip.resnet.last_stage_features(prepared)
    activations = activations[:, 100:112]  # a subset of channels keeps the test fast
    fast = channel_embeddings(rn_clip, prepared, activations, batch_size=7)  # chunks straddle images
    for image, channel in itertools.product(range(2), range(0, 12, 3)):
        up = F.interpolate(
            activations[image, channel][None, None], size=(128, 128), mode="bilinear", align_corners=True
        )
        mask = (up - up.min()) / (up.max() - up.min() + 1e-7)
        naive = rn_clip.encode_image_prepared(prepared[image : image + 1] * mask)[0]
        assert torch.allclose(fast[image, channel], naive, atol=1e-5)


def test_vl_score_map_is_the_weighted_activation_sum(rn_clip):
    extractor = build_extractor("vl_score", rn_clip, base_cap=False, softmax_temperature=0.01)
    prepared = rn_clip.prepare(torch.stack(_images(12, [(128, 128)])))
    phrases = ["dog", "cat"]
    text = extractor.encode_phrases(phrases)
    fast = extractor._heatmaps_square(prepared, text, torch.tensor([0, 0]), phrases)
    activations = rn_clip.resnet.last_stage_features(prepared)[0]
    embeddings = channel_embeddings(rn_clip, prepared, activations[None], batch_size=64)[0]  # checked above
    base = rn_clip.encode_image_prepared(torch.zeros_like(prepared))[0]
    for p in range(2):
        gaps = embeddings @ text[p] - base @ text[p]
        weights = torch.softmax(gaps / 0.01, 0)
        assert weights.max() > 3 * weights.min()  # the test is not a plain mean
        expected = torch.relu(sum(w * a for w, a in zip(weights, activations)))
        assert torch.allclose(fast[p], expected, atol=1e-5)


def test_vl_score_synonyms_are_averaged(rn_clip):
    extractor = build_extractor("vl_score", rn_clip, synonym_separator=",")
    embedding = extractor.encode_phrases(["tench, Tinca tinca"])[0]
    parts = rn_clip.encode_text(["an image of a tench.", "an image of a Tinca tinca."])
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


def test_vl_score_outputs_at_original_resolution(rn_clip):
    extractor = build_extractor("vl_score", rn_clip, base_cap=False)
    images = [_blocky_image(36, 100)]
    phrases = [["a red box", "grey"]]
    maps = extractor.heatmaps(images, phrases)
    assert [tuple(m.shape) for m in maps] == [(2, 36, 100)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps)
    for image, det in zip(images, extractor.detect(images, phrases)):
        height, width = image.shape[-2:]
        assert (det.boxes[:, [0, 2]] <= width).all() and (det.boxes[:, [1, 3]] <= height).all()
        assert (det.boxes[:, 2:] > det.boxes[:, :2]).all()


def test_vl_score_refuses_a_vit(vit_clip):
    with pytest.raises(ValueError):
        build_extractor("vl_score", vit_clip)


@pytest.mark.slow
def test_adapting_clip_at_full_size_with_every_slic_level():
    # A random ViT-B/16 at 224 px: ~3 850 region tokens over 11 SLIC levels on a 28×28 token grid.
    clip = FrozenCLIP("ViT-B-16", pretrained="random")
    extractor = build_extractor("adapting_clip", clip, region_chunk=512)
    assert extractor.slic_levels == tuple(range(100, 601, 50)) and (extractor.stride, extractor.padding) == (8, 7)
    image = _blocky_image(180, 260)
    maps = extractor.heatmaps([image], [["a red box", "a blue box"]])[0]
    assert maps.shape == (2, 180, 260) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    detection = extractor.detect([image], [["a red box"]])[0]
    assert (detection.boxes[0, 2:] <= torch.tensor([260.0, 180.0])).all()
