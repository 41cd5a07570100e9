"""WWbLModule under mixed precision, against fp32, on CPU (where torch.autocast really computes in bf16/fp16).

Measured first with ``benchmarks/mixed_precision_agreement.py`` (numbers in benchmarks/RESULTS.md, section
"Mixed precision agreement"); each tolerance below states the measurement and its margin. Two settings:
the tiny random models of the other tests, and the trained shapes-world CLIP and g of ``checkpoints/``
(random networks give the least favourable gradients: their agreement is the lower of the two).
"""
import contextlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import wwbl.lit_module as lit_module
from shapes_world.generator import ShapesWorld, WorldConfig
from tests.helpers.tiny_module import tiny_module
from wwbl.clip.relevancy import _rollout
from wwbl.lit_module import WWbLModule

REPO = Path(__file__).resolve().parents[1]
BATCH = 8


def _smooth_images(n, side):
    torch.manual_seed(3)
    return F.interpolate(torch.rand(n, 3, 8, 8), size=(side, side), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def tiny():
    module = tiny_module().train()
    return module, _smooth_images(BATCH, 64), [f"thing number {i}" for i in range(BATCH)]


@pytest.fixture(scope="module")
def shapes():
    """The shipped shapes-world CLIP and g, all-block relevancy as configs/shapes/g.yaml, on train scenes."""
    g_dir = REPO / "checkpoints" / "shapes_g"
    kwargs = json.loads((g_dir / "config.json").read_text())["kwargs"]
    module = WWbLModule(clip_model="shapes-vit", clip_pretrained=None,
                        clip_checkpoint=str(REPO / "checkpoints" / "shapes_clip"),
                        network={"architecture": "grounding_net", **kwargs}, pretrained_backbone=False,
                        input_size=128, relevancy_start_layer=0)
    module.net.load_state_dict(load_file(g_dir / "model.safetensors"))
    world = ShapesWorld(WorldConfig(image_size=128))
    scenes = [world.scene("train", i) for i in range(BATCH)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in scenes])
    return module.train(), images, [s.objects[0].phrase for s in scenes]


def _autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _step(module, images, phrases, dtype, g_autocast=True):
    """Loss terms and g's flattened gradients of one step; backward outside autocast, as Lightning does.
    ``g_autocast=False`` runs g's forward with autocast off (only CLIP and the relevancy in ``dtype``)."""
    module.net.zero_grad()
    forward = module.net.forward
    if not g_autocast:
        def fp32_forward(*args, **kwargs):
            with torch.autocast("cpu", enabled=False):
                return forward(*args, **kwargs)
        module.net.forward = fp32_forward
    try:
        with _autocast(dtype):
            terms = module.compute_losses(images, phrases)
        terms["loss"].backward()
    finally:
        module.net.__dict__.pop("forward", None)
    grad = torch.cat([p.grad.flatten() for p in module.net.parameters() if p.grad is not None])
    return {k: v.item() for k, v in terms.items()}, grad.double()


@pytest.mark.parametrize("setting", ["tiny", "shapes"])
@pytest.mark.parametrize("start_layer", [-1, 0])
def test_relevancy_target_under_bf16_autocast_agrees_with_fp32(setting, start_layer, request):
    """Measured |Δ| of the [0, 1] maps, max / mean: tiny 1.2e-2 / 1.1e-3 (start -1), 1.3e-2 / 2.0e-3 (0);
    shapes 1.7e-2 / 3.7e-4, 8.2e-3 / 1.7e-4. Asserted: max ≤ 5e-2 and mean ≤ 5e-3 (≥ 2.5× margin); the
    target stays fp32 (its rollout and normalisation are fp32)."""
    module, images, phrases = request.getfixturevalue(setting)
    text = module.clip.encode_text(phrases)
    x, normalize = module._clip_inputs(images)
    ref = module.clip.relevancy(x, text, start_layer=start_layer, normalize_input=normalize)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = module.clip.relevancy(x, text, start_layer=start_layer, normalize_input=normalize)
    assert mixed.dtype == torch.float32
    diff = (mixed - ref).abs()
    assert diff.max() <= 5e-2 and diff.mean() <= 5e-3, (diff.max().item(), diff.mean().item())
    assert diff.max() > 0  # autocast really computed in bf16 (else this test would test nothing)


def test_relevancy_rollout_accumulates_in_fp32_from_bf16_attention():
    """Chefer's rollout R ← R + Ā R over 12 blocks (ViT-B) from bf16 attention and gradients, as autocast
    delivers them, against a float64 rollout of the same values: measured 1.5e-7 of the CLS row's maximum
    (fp32 accumulation) vs 8e-3–9e-3 when accumulated in bf16. Asserted ≤ 1e-5; the bf16 accumulation,
    computed here, must miss that bound (so the bound catches it)."""
    gen = torch.Generator().manual_seed(0)
    batch, heads, length = 2, 12, 50
    probs = [torch.randn(batch, heads, length, length, generator=gen).mul(2).softmax(-1).bfloat16()
             for _ in range(12)]
    grads = [torch.randn(batch, heads, length, length, generator=gen).mul(0.5).bfloat16() for _ in range(12)]

    def rollout_in(dtype):
        rel = torch.eye(length, dtype=dtype).expand(batch, length, length)
        for attn, grad in zip(probs, grads):
            rel = rel + (grad.to(dtype) * attn.to(dtype)).clamp(min=0).mean(dim=1) @ rel
        return rel[:, 0, 1:].double()

    exact = rollout_in(torch.float64)

    def error(row):
        return ((row - exact).abs().amax(-1) / exact.amax(-1)).max().item()

    ours = _rollout(probs, grads)
    assert ours.dtype == torch.float32
    assert error(ours[:, 0, 1:].double()) <= 1e-5
    assert error(rollout_in(torch.bfloat16)) > 1e-3


@pytest.mark.parametrize("loss_form", ["cosine", "reference_wsol"])
def test_losses_run_in_fp32_with_autocast_off(monkeypatch, loss_form):
    """Under bf16 autocast every loss function sees autocast off and only fp32 tensors (``all_pairs`` is a
    matmul, which autocast would take to bf16), and every term comes out fp32."""
    extra = {"background_prompts": ["sky", "tree"]} if loss_form == "reference_wsol" else {}
    module = tiny_module(pairing="all_pairs", loss_form=loss_form, **extra)
    seen = []
    for name in ("foreground_loss", "background_loss", "relevancy_loss", "regularization_loss",
                 "wsol_foreground_loss", "wsol_background_loss"):
        def spy(*args, _loss=getattr(lit_module, name), _name=name, **kwargs):
            dtypes = {a.dtype for a in args if torch.is_tensor(a)}
            seen.append((_name, torch.is_autocast_enabled("cpu"), dtypes))
            return _loss(*args, **kwargs)
        monkeypatch.setattr(lit_module, name, spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = module.compute_losses(_smooth_images(2, 64), ["a red cube", "a blue ball"])
    assert len(seen) == 4
    assert all(not autocast and dtypes == {torch.float32} for _, autocast, dtypes in seen), seen
    assert all(t.dtype == torch.float32 for t in terms.values())


@pytest.mark.parametrize("setting, dtype", [
    ("tiny", torch.bfloat16), ("tiny", torch.float16), ("shapes", torch.bfloat16),
    # CPU fp16 convolutions are slow (~50 s for this batch on the shared machine): -m slow
    pytest.param("shapes", torch.float16, marks=pytest.mark.slow)], ids=["tiny-bf16", "tiny-fp16", "shapes-bf16",
                                                                        "shapes-fp16"])
def test_losses_and_gradients_into_g_under_autocast_agree_with_fp32(setting, dtype, request):
    """Measured, bf16 / fp16 autocast (B = 8): the relative error of fore, rmap, reg and the total ≤ 1.9e-3 /
    1.3e-4; L_back (a cosine near 0, so compared absolutely) |Δ| ≤ 1.0e-3 / 4.2e-5; cos(∇g, ∇g fp32) =
    0.99719 / 0.99978 (tiny), 0.99941 / 0.99997 (shapes). Asserted: relative ≤ 1e-2, |Δ back| ≤ 5e-3
    (≥ 5× margin) and cos ≥ 0.99 (tiny bf16: 1 − cos 2.8e-3 vs 1e-2), ≥ 0.995 (shapes)."""
    module, images, phrases = request.getfixturevalue(setting)
    ref_terms, ref_grad = _step(module, images, phrases, None)
    terms, grad = _step(module, images, phrases, dtype)
    for key in ("fore", "rmap", "reg", "loss"):
        assert abs(terms[key] - ref_terms[key]) <= 1e-2 * abs(ref_terms[key]), key
    assert abs(terms["back"] - ref_terms["back"]) <= 5e-3
    assert terms != ref_terms  # autocast really changed the arithmetic
    assert F.cosine_similarity(grad, ref_grad, dim=0) >= (0.99 if setting == "tiny" else 0.995)


@pytest.mark.parametrize("setting", ["tiny", "shapes"])
def test_clip_and_relevancy_in_bf16_barely_move_the_gradient_into_g(setting, request):
    """Why CLIP (masked-image forward and relevancy) runs under autocast: with g's forward in fp32 and only
    CLIP in bf16, measured 1 − cos(∇g, ∇g fp32) = 2e-6 (tiny) and 4e-6 (shapes), relative error 2.1e-3 /
    2.7e-3, against 2.8e-3 / 5.0e-4 (1 − cos) from g's own bf16 convolutions. Asserted 1 − cos ≤ 1e-4
    (25× margin)."""
    module, images, phrases = request.getfixturevalue(setting)
    _, ref_grad = _step(module, images, phrases, None)
    _, grad = _step(module, images, phrases, torch.bfloat16, g_autocast=False)
    assert not torch.equal(grad, ref_grad)
    assert 1 - F.cosine_similarity(grad, ref_grad, dim=0) <= 1e-4
