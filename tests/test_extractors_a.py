"""Training-free extractors, part A: GAE, GEM, CLIP Surgery, ClipTextSpan, Grad-CAM, network g and
the poster's post-processing. Tiny random CLIP models; every number is checked against a naive
computation written here, open_clip's own forward, OpenCV, or a hand-computed case."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from wwbl.clip import FrozenCLIP
from wwbl.extractors import HeatmapExtractor, available_extractors, build_extractor
from wwbl.extractors.clip_surgery import surgery_tokens
from wwbl.extractors.clip_text_span import cls_decomposition
from wwbl.extractors.gem import gem_tokens, self_self_attention
from wwbl.extractors.gradcam import gradcam_maps
from wwbl.extractors.postprocess import (
    PostProcessConfig,
    close_map,
    grey_dilate,
    grey_erode,
    grid_search,
    grid_search_extractor,
    postprocess,
)

MY_EXTRACTORS = ("gae", "gem", "clip_surgery", "clip_text_span")


@pytest.fixture(scope="module")
def vit_clip() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("wwbl-tiny-vit", pretrained="random")


@pytest.fixture(scope="module")
def rn_clip() -> FrozenCLIP:
    torch.manual_seed(0)
    clip = FrozenCLIP("wwbl-tiny-rn", pretrained="random")
    # open_clip zero-initialises every bn3 weight, which makes a random ResNet's residual branches
    # vanish; give the batch norms random affine parameters so that Grad-CAM has something to see.
    with torch.no_grad():
        for module in clip.model.visual.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return clip


def _images(seed: int, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=gen) for h, w in sizes]


# -- GEM --------------------------------------------------------------------------------------------
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


def test_gem_tokens_match_naive_two_stream_forward(vit_clip):
    visual = vit_clip.model.visual
    x = vit_clip.prepare(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        got = gem_tokens(vit_clip.vit, x, depth=1)
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


def test_clip_surgery_tokens_match_naive_value_value_attention(vit_clip):
    visual = vit_clip.model.visual
    x = vit_clip.prepare(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(12)))
    with torch.no_grad():
        got = surgery_tokens(vit_clip.vit, x, depth=1)
        tokens = visual._embeds(x)
        blocks = visual.transformer.resblocks
        for block in blocks[:-1]:
            tokens = block(tokens)
        last = blocks[-1]
        normed = last.ln_1(tokens)[0]
        heads, width = last.attn.num_heads, normed.shape[-1]
        d = width // heads
        v = (normed @ last.attn.in_proj_weight[2 * width:].T + last.attn.in_proj_bias[2 * width:]).tolist()
        merged = []
        for i in range(len(v)):
            row = []
            for h in range(heads):
                vh = [r[h * d:(h + 1) * d] for r in v]
                logits = [sum(a * b for a, b in zip(vh[i], vh[j])) / math.sqrt(d) for j in range(len(vh))]
                weights = [math.exp(z - max(logits)) for z in logits]
                row += [sum(w * vh[j][c] for j, w in enumerate(weights)) / sum(weights) for c in range(d)]
            merged.append(row)
        want = tokens[0] + last.attn.out_proj(torch.tensor(merged))
        want[0] = blocks[-1](tokens)[0, 0]  # the class token comes from the ordinary stream
    assert torch.allclose(got[0], want, atol=1e-5)


# -- ClipTextSpan -----------------------------------------------------------------------------------
def test_clip_text_span_components_sum_to_image_embedding(vit_clip):
    x = vit_clip.prepare(torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        parts = cls_decomposition(vit_clip.vit, x)
        want = vit_clip.model.encode_image(x)  # open_clip's own, unnormalised
    assert parts.tokens.shape == (3, 1 + 64, vit_clip.embed_dim)
    assert torch.allclose(parts.tokens.sum(dim=1) + parts.rest, want, atol=1e-4)


def test_clip_text_span_contrast_phrases_shift_the_text_direction(vit_clip):
    image = _images(4, [(64, 64)])
    plain = build_extractor("clip_text_span", vit_clip, contrast="none")
    contrasted = build_extractor("clip_text_span", vit_clip, contrast=["a cat", "a dog"])
    a, b = plain.heatmaps(image, [["a red square"]])[0], contrasted.heatmaps(image, [["a red square"]])[0]
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError):
        build_extractor("clip_text_span", vit_clip, contrast=[])


# -- Grad-CAM ---------------------------------------------------------------------------------------
def test_gradcam_matches_explicit_autograd(rn_clip):
    x = rn_clip.prepare(torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(5)))
    text = rn_clip.encode_text(["a dog", "a tree"])
    got = gradcam_maps(rn_clip.resnet, x, text)
    captured = {}
    hook = rn_clip.model.visual.layer4.register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
    try:
        x_leaf = x.clone().requires_grad_(True)
        emb = rn_clip.model.encode_image(x_leaf)
        activation = captured["a"]
        activation.retain_grad()
        (emb * text).sum().backward()
    finally:
        hook.remove()
    want = torch.relu((activation.grad.mean(dim=(2, 3), keepdim=True) * activation).sum(1)).detach()
    assert want.abs().max() > 0
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_gradcam_refuses_vit(vit_clip):
    with pytest.raises(ValueError, match="ResNet"):
        build_extractor("gradcam", vit_clip)


# -- GAE --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("start_layer", [-1, 0])
def test_gae_equals_clip_relevancy(vit_clip, start_layer):
    images = _images(6, [(64, 64), (64, 64)])
    got = build_extractor("gae", vit_clip, start_layer=start_layer).heatmaps(images, [["a cat"], ["a road"]])
    text = vit_clip.encode_text(["a cat", "a road"])
    want = vit_clip.relevancy(torch.stack(images), text, start_layer=start_layer)
    assert torch.allclose(torch.cat(got), want, atol=1e-5)


# -- common interface -------------------------------------------------------------------------------
def _build(name, vit_clip, rn_clip):
    if name == "gradcam":
        return build_extractor(name, rn_clip)
    options = {"contrast": ["a cat", "a dog"]} if name == "clip_text_span" else {}
    if name == "gem":
        options["input_size"] = 64
    return build_extractor(name, vit_clip, **options)


@pytest.mark.parametrize("name", MY_EXTRACTORS + ("gradcam",))
def test_heatmaps_in_unit_range_at_original_size_and_batch_invariant(name, vit_clip, rn_clip):
    extractor = _build(name, vit_clip, rn_clip)
    images = _images(7, [(40, 90), (77, 31)])
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


def test_registry_builds_each_name(vit_clip, rn_clip):
    names = set(available_extractors())
    assert set(MY_EXTRACTORS + ("gradcam", "g")) <= names
    for name in MY_EXTRACTORS + ("gradcam",):
        built = _build(name, vit_clip, rn_clip)
        assert isinstance(built, HeatmapExtractor) and built.name == name
    for name in ("gem", "clip_surgery", "gae", "clip_text_span"):
        with pytest.raises(ValueError):
            build_extractor(name, rn_clip)


# -- post-processing --------------------------------------------------------------------------------
def test_dilate_then_erode_hand_computed():
    mask = torch.zeros(5, 5)
    mask[2, 1] = mask[2, 3] = 1  # two pixels with a one-pixel gap
    dilated = grey_dilate(mask, 3)
    want_dilated = torch.zeros(5, 5)
    want_dilated[1:4, 0:5] = 1
    assert torch.equal(dilated, want_dilated)
    closed = close_map(mask, 3, 3)
    want_closed = torch.zeros(5, 5)
    want_closed[2, :] = 1  # gap filled; the image border does not erode (OpenCV's convention)
    assert torch.equal(closed, want_closed)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_morphology_matches_opencv(size):
    rng = np.random.default_rng(size)
    mask = (rng.random((13, 17)) > 0.6).astype(np.uint8)
    kernel = np.ones((size, size), np.uint8)
    assert np.array_equal(grey_dilate(torch.from_numpy(mask), size).numpy(), cv2.dilate(mask, kernel))
    assert np.array_equal(grey_erode(torch.from_numpy(mask), size).numpy(), cv2.erode(mask, kernel))


def test_grid_search_curve_hand_computed():
    heatmap = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    mask = torch.tensor([[0, 1], [1, 0]], dtype=torch.bool)
    result = grid_search([heatmap], [mask], interpolations=("nearest",), dilations=(1,), erosions=(1,),
                         num_thresholds=5)  # thresholds 0, .25, .5, .75, 1 with the rule map >= τ
    (settings, curve), = result.table
    assert settings == {"interpolation": "nearest", "dilation": 1, "erosion": 1}
    assert torch.allclose(curve.float(), torch.tensor([2 / 4, 2 / 3, 1.0, 1 / 2, 0.0]))
    assert result.best == PostProcessConfig("nearest", 0.5, 1, 1) and result.best_mean_iou == pytest.approx(1.0)


def test_postprocess_rejects_bad_settings():
    with pytest.raises(ValueError):
        PostProcessConfig("area", 0.5, 1, 1)
    with pytest.raises(ValueError):
        PostProcessConfig("nearest", 0.5, 0, 1)
    with pytest.raises(ValueError):
        grid_search([torch.zeros(2, 2)], [torch.zeros(3, 3, dtype=torch.bool)] * 2)
    with pytest.raises(ValueError):
        grid_search([torch.zeros(2, 2)], [torch.zeros(2, 2, dtype=torch.bool)], dilations=())


def test_postprocess_nearest_threshold_and_closing():
    low_res = torch.tensor([[0.9, 0.1, 0.9]])
    mask = postprocess(low_res, (2, 6), PostProcessConfig("nearest", 0.5, 1, 1))
    want = torch.tensor([[1, 1, 0, 0, 1, 1]] * 2, dtype=torch.bool)
    assert torch.equal(mask, want)
    closed = postprocess(low_res, (2, 6), PostProcessConfig("nearest", 0.5, 3, 3))
    assert closed.all()  # dilation bridges the 2-px gap; erosion keeps it (border counts as foreground)
    bilinear = postprocess(low_res, (1, 6), PostProcessConfig("bilinear", 0.5, 1, 1))
    # bilinear samples at x = 0.25, 0.75, 1.25, … of the 3 source pixels: 0.9, 0.7, 0.3, 0.3, 0.7, 0.9
    assert torch.equal(bilinear, torch.tensor([[1, 1, 0, 0, 1, 1]], dtype=torch.bool))


def test_grid_search_finds_the_closing_that_fills_holes():
    gt = torch.zeros(16, 16, dtype=torch.bool)
    gt[4:12, 4:12] = True
    holes = gt.float().clone()
    holes[5:11:2, 5:11:2] = 0  # isolated one-pixel holes inside the object
    result = grid_search([holes, holes], [gt, gt], interpolations=("nearest",), dilations=(1, 3), erosions=(1, 3))
    assert result.best.dilation == 3 and result.best.erosion == 3
    assert result.best_mean_iou == pytest.approx(1.0)
    assert len(result.table) == 4
    plain_curve = [curve for settings, curve in result.table if settings["dilation"] == 1 and settings["erosion"] == 1]
    assert plain_curve[0].max() == pytest.approx((64 - 9) / 64)


# -- network g --------------------------------------------------------------------------------------
def _tiny_g(text_dim: int = 32):
    from wwbl.networks import GroundingNet

    torch.manual_seed(8)
    return GroundingNet(text_dim=text_dim, vgg_width_div=16, pretrained_backbone=False).eval()


def test_network_g_from_export_matches_direct_forward(vit_clip, tmp_path):
    from wwbl.export import export_grounding_net
    from wwbl.extractors.network_g import NetworkGExtractor

    net = _tiny_g()
    spec = {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None}
    export_grounding_net(net, str(tmp_path), spec, extra={"input_size": 48, "text_prefix": "image of "})
    extractor = NetworkGExtractor.from_export(tmp_path, clip=vit_clip)
    assert extractor.input_size == 48 and extractor.text_prefix == "image of "
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(9))  # already at g's size
    got = extractor.heatmaps([image], [["a dog", "a cat"]])[0]
    with torch.no_grad():
        raw = net(image.expand(2, 3, 48, 48), vit_clip.encode_text(["image of a dog", "image of a cat"]))
    low, high = raw.flatten(1).min(1).values, raw.flatten(1).max(1).values
    want = (raw - low[:, None, None]) / (high - low)[:, None, None]
    assert torch.allclose(got, want, atol=1e-5)
    # the registry name and a CLIP rebuilt from the export's spec work too
    assert build_extractor("g", vit_clip, network=str(tmp_path)).input_size == 48
    rebuilt = NetworkGExtractor.from_export(tmp_path)
    assert rebuilt.heatmaps([torch.rand(3, 30, 50)], [["a dog"]])[0].shape == (1, 30, 50)


def test_network_g_rejects_mismatched_text_size_and_missing_input_size(vit_clip):
    from wwbl.extractors.network_g import NetworkGExtractor

    with pytest.raises(ValueError, match="32-d"):
        NetworkGExtractor(vit_clip, _tiny_g(text_dim=16), input_size=48)
    with pytest.raises(ValueError, match="input_size"):
        NetworkGExtractor(vit_clip, _tiny_g())


def test_grid_search_extractor_skips_unreadable_images(vit_clip, tmp_path):
    extractor = build_extractor("gem", vit_clip, input_size=64)
    images = _images(10, [(20, 30), (25, 25)])
    masks = [torch.rand(20, 30) > 0.5, torch.rand(25, 25) > 0.5]
    grid = {"interpolations": ("bilinear",), "dilations": (1, 3), "erosions": (1,), "num_thresholds": 11}
    missing = tmp_path / "missing.png"
    got = grid_search_extractor(extractor, [images[0], missing, images[1]], ["a", "b", "c"],
                                [masks[0], torch.zeros(5, 5, dtype=torch.bool), masks[1]], **grid)
    maps = extractor.heatmaps(images, [["a"], ["c"]])
    want = grid_search([m[0] for m in maps], masks, **grid)
    assert got.best == want.best and got.best_mean_iou == pytest.approx(want.best_mean_iou)
    with pytest.raises(ValueError, match="no readable"):
        grid_search_extractor(extractor, [missing], ["a"], [masks[0]], **grid)
