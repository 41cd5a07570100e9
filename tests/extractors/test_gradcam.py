"""Grad-CAM against explicit autograd on a tiny random ResNet CLIP."""
from __future__ import annotations

import pytest
import torch

from wwbl.extractors import build_extractor
from wwbl.extractors.gradcam import gradcam_maps


def test_gradcam_matches_explicit_autograd(rn_clip_live_residuals):
    x = rn_clip_live_residuals.prepare(torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(5)))
    text = rn_clip_live_residuals.encode_text(["a dog", "a tree"])
    got = gradcam_maps(rn_clip_live_residuals.resnet, x, text)
    captured = {}
    hook = rn_clip_live_residuals.model.visual.layer4.register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
    try:
        x_leaf = x.clone().requires_grad_(True)
        emb = rn_clip_live_residuals.model.encode_image(x_leaf)
        activation = captured["a"]
        activation.retain_grad()
        (emb * text).sum().backward()
    finally:
        hook.remove()
    want = torch.relu((activation.grad.mean(dim=(2, 3), keepdim=True) * activation).sum(1)).detach()
    assert want.abs().max() > 0
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_gradcam_refuses_vit(tiny_clip):
    with pytest.raises(ValueError, match="ResNet"):
        build_extractor("gradcam", tiny_clip)
