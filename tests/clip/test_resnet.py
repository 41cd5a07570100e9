"""ResNet internals: the dilated trunk and the value projection against open_clip's own modules."""
from __future__ import annotations

import copy

import torch

from wwbl.clip import ResNetInternals


def test_dilated_resnet_is_the_atrous_version_of_the_strided_one(rn_clip_input_sensitive):
    # À trous: the dilated trunk sampled every 32 pixels equals the ordinary stride-32 trunk.
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(9))
    dense = rn_clip_input_sensitive.resnet.dilated_features(x)
    strided = rn_clip_input_sensitive.resnet.last_stage_features(x)
    assert dense.shape[-2:] == (96 - 30, 64 - 30)
    assert torch.allclose(dense[..., ::32, ::32], strided, atol=1e-5)


def test_value_projection_is_the_attention_pool_of_a_constant_map(rn_clip_input_sensitive):
    # open_clip's own attention pool over identical tokens (constant features, no positional
    # embedding) returns c_proj(v_proj(f)) whatever the attention weights: the value projection.
    visual = copy.deepcopy(rn_clip_input_sensitive.model.visual)
    with torch.no_grad():
        visual.attnpool.positional_embedding.zero_()
        side = rn_clip_input_sensitive.image_size // 32
        feature = torch.randn(2, visual.attnpool.k_proj.in_features, 1, 1, generator=torch.Generator().manual_seed(8))
        features = feature.expand(-1, -1, side, side)
        want = visual.attnpool(features)
        got = ResNetInternals(visual).value_projection(features)
    assert got.shape == (2, want.shape[1], side, side)
    assert torch.allclose(got, want[:, :, None, None].expand_as(got), atol=1e-5)
