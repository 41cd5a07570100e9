"""The benchmarks' reference-formulation baselines compute what our code computes (else their ratio means
nothing): the same losses and gradients of g for a training step, the same proposals, captions, clusters,
heatmaps and boxes for Algorithm 1 — on tiny random models."""
import numpy as np
import pytest
import torch
from _common import RepeatableProposals, captions_depend_on_the_image
from baselines import (RELEASED_LOSS_OPTIONS, RELEASED_PREFIX, RELEASED_WEIGHTS, ReleasedTrainingStep, ReleasedWWbL,
                       released_blip_cache)
from PIL import Image
from tests.helpers.tiny_blip import save_tiny_blip
from tests.helpers.tiny_module import tiny_module

from wwbl.box_rules import BoxRule
from wwbl.extractors.network_g import NetworkGExtractor
from wwbl.inference import WWbLPipeline
from wwbl.inference.blip_decoding import decode_with_cache
from wwbl.inference.captioner import BlipCaptioner, CaptionSettings
from wwbl.inference.proposals import ProposalGenerator
from wwbl.networks import GroundingNet

PHRASES = ["a red ball", "two dogs on the grass", "the sky", "a man with a hat"]


def released_module():
    options = {k: v for k, v in RELEASED_LOSS_OPTIONS.items() if k != "task"}
    return tiny_module(text_prefix=RELEASED_PREFIX, **options, **RELEASED_WEIGHTS).train()


def g_grads(module):
    return [p.grad.clone() for p in module.net.parameters() if p.grad is not None]


@pytest.mark.parametrize("clip_requires_grad", [True, False])
def test_released_step_computes_our_losses_and_gradients(clip_requires_grad):
    module = released_module()
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours = module.compute_losses(images, PHRASES)
    module.net.zero_grad()
    ours["loss"].backward()
    ours_grads = g_grads(module)
    baseline = ReleasedTrainingStep(module, module.configure_optimizers(), clip_requires_grad)
    module.net.zero_grad()
    theirs = baseline.losses(images, PHRASES)
    theirs["loss"].backward()
    for name in ("fore", "back", "rmap", "reg", "loss"):
        torch.testing.assert_close(theirs[name], ours[name], rtol=1e-4, atol=1e-6, msg=name)
    theirs_grads = g_grads(module)
    assert len(theirs_grads) == len(ours_grads) > 10
    for a, b in zip(theirs_grads, ours_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
    assert float(ours["rmap"].detach()) > 0 and all(torch.isfinite(ours[k]) for k in ours)


def test_released_step_trains_clip_weights_only_when_unfrozen():
    module = released_module()
    images = torch.rand(2, 3, 64, 64)
    before = [p.clone() for p in module.net.parameters()]
    clip_params = list(module.clip.model.parameters())
    had_grads = {}
    for unfrozen in (True, False):
        step = ReleasedTrainingStep(module, module.configure_optimizers(), clip_requires_grad=unfrozen)
        release = step._release_clip_grads

        def spy(unfrozen=unfrozen, release=release):  # what the backward left in CLIP, before it is freed
            had_grads[unfrozen] = sum(p.grad is not None for p in clip_params)
            release()

        step._release_clip_grads = spy
        step(images, PHRASES[:2])
        assert all(not p.requires_grad and p.grad is None for p in clip_params)
        assert step.attn_grads == []  # released after the step
    # The unfrozen CLIP got a gradient for every parameter the losses reach (all but the logit scale,
    # which interpret_new's score uses, but autograd.grad to the attention does not keep); the frozen one none.
    assert had_grads[True] == len(clip_params) - 1 and had_grads[False] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, module.net.parameters()))  # g stepped


def test_released_step_refuses_other_loss_options():
    module = tiny_module()  # paper options: diagonal pairs, image-space masks
    with pytest.raises(ValueError, match="pairing"):
        ReleasedTrainingStep(module, module.configure_optimizers())


@pytest.fixture(scope="module")
def wwbl_parts(tiny_clip, tmp_path_factory):
    torch.manual_seed(0)
    net = GroundingNet(text_dim=tiny_clip.embed_dim, decoder_channels=8, vgg_width_div=16, pretrained_backbone=False)
    g = NetworkGExtractor(tiny_clip, net, input_size=64)
    path = save_tiny_blip(tmp_path_factory.mktemp("blip_varied"))
    captioner = BlipCaptioner.from_pretrained(str(path), settings=CaptionSettings(max_length=8, chunk_size=5))
    captions_depend_on_the_image(captioner.model)  # else every crop gets the same caption
    return g, captioner


def photos(count):
    rng = np.random.default_rng(3)
    out = []
    for k in range(count):
        array = np.full((60 + 8 * k, 90, 3), 40, dtype=np.uint8)
        array[10:40, 10:50] = rng.integers(0, 255, 3)
        array[25:55, 45:85] = rng.integers(0, 255, 3)
        out.append(Image.fromarray(np.clip(array + rng.integers(0, 30, array.shape), 0, 255).astype(np.uint8)))
    return out


def test_released_wwbl_returns_our_captions_clusters_heatmaps_and_boxes(wwbl_parts):
    g, captioner = wwbl_parts
    proposals, rule = RepeatableProposals(ProposalGenerator(max_proposals=12)), BoxRule()  # the same crops
    # Caption embeddings from the full context, as the baseline's: a two-caption cluster's members tie for
    # representative in exact arithmetic, and the short context's 1e-7 difference (tests/clip) could break
    # the tie the other way. The heatmaps' phrases go through our cached, short-context encoder.
    ours = WWbLPipeline(g, captioner, text_encoder=g.clip.encode_text_full_context, proposals=proposals, boxes=rule,
                        cluster_threshold=0.9, scoring=None)
    theirs = ReleasedWWbL(g, captioner, proposals, rule, cluster_threshold=0.9, min_cluster_size=2)
    images = photos(3)
    expected, got = ours(images), theirs(images)
    assert sum(len(r.phrases) for r in expected) >= 5  # several clusters per image: several maps each
    assert len({c for r in expected for c in r.captions}) >= 2  # and captions that differ
    for e, t in zip(expected, got):
        torch.testing.assert_close(t.proposals, e.proposals)
        assert t.captions == e.captions
        assert t.clusters == e.clusters and t.phrases == e.phrases
        torch.testing.assert_close(t.heatmaps, e.heatmaps, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(t.detections.boxes, e.detections.boxes)
        torch.testing.assert_close(t.detections.scores, e.detections.scores, rtol=1e-4, atol=1e-5)
        assert t.detections.phrases == e.detections.phrases


def test_the_released_blip_decoding_reprojects_the_image_at_every_step_and_gives_generates_tokens(wwbl_parts):
    _, captioner = wwbl_parts
    model = captioner.model
    pixels = torch.rand(3, 3, 32, 32) * 4 - 2
    prompt = captioner.processor.tokenizer(["a picture of "] * 3, return_tensors="pt").input_ids
    first_key = model.text_decoder.bert.encoder.layer[0].crossattention.self.key
    calls = []
    hook = first_key.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        expected = model.generate(pixel_values=pixels, input_ids=prompt, num_beams=3, max_length=10)
        cached_calls = list(calls)
        calls.clear()
        got = decode_with_cache(model, pixels, prompt, 3, lambda _: released_blip_cache(model.text_decoder.config),
                                max_length=10)
    finally:
        hook.remove()
    assert torch.equal(got, expected)
    steps = expected.shape[1] - (prompt.shape[1] - 1)  # tokens generated after [DEC] + the prompt
    assert cached_calls == [9]  # transformers projects the 3 × 3 beam copies once
    assert calls == [9] * steps  # the released decoder: again at every step
