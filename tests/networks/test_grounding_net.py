"""GroundingNet (WSG's network g) on tiny random instances."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet50

from tests.helpers.vgg import torchvision_vgg16_relu4_3
from wwbl.networks import GroundingNet, build_network


def tiny_g(**kw):
    torch.manual_seed(0)
    return GroundingNet(text_dim=16, vgg_width_div=16, pretrained_backbone=False, **kw).eval()


def test_grounding_net_output_is_a_map_in_0_1_at_input_size():
    g = tiny_g()
    out = g(torch.rand(3, 3, 50, 36), torch.randn(3, 16))
    assert out.shape == (3, 50, 36)
    assert (out > 0).all() and (out < 1).all()


def test_full_size_g_has_the_reference_parameter_budget():
    g = GroundingNet(text_dim=512, pretrained_backbone=False)
    vgg = sum(p.numel() for p in torchvision_vgg16_relu4_3().parameters())
    # bottleneck: 2 convs 512→512 (+BN); up0: 2 convs; up1: conv 512→1, conv 1→1 (REFERENCE.md W§2.2)
    conv = 512 * 512 * 9 + 512
    expected = vgg + 2 * (2 * conv + 2 * 1024) + (512 * 9 + 1 + 2) + (9 + 1)
    assert sum(p.numel() for p in g.parameters()) == expected


def test_similarity_map_is_per_pixel_cosine_with_the_text():
    g = tiny_g()
    feats = torch.randn(2, 16, 3, 4)
    text = torch.randn(2, 16)
    sim = g.similarity_map(feats, text)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                expected = F.cosine_similarity(feats[b, :, i, j], text[b], dim=0)
                assert torch.isclose(sim[b, 0, i, j], expected, atol=1e-5)


def test_gating_uses_unnormalised_features_times_cosine():
    g = tiny_g()
    x, text = torch.rand(2, 3, 32, 32), torch.randn(2, 16)
    captured = {}
    g.up0.register_forward_hook(lambda m, inp, out: captured.setdefault("gated", inp[0]))
    g(x, text)
    z = g.bottleneck(g.encoder((x - 0.5) / 0.5))
    cos = (F.normalize(z, dim=1) * F.normalize(text, dim=1)[:, :, None, None]).sum(1, keepdim=True)
    assert torch.allclose(captured["gated"], z * cos, atol=1e-5)


def test_text_conditioning_changes_the_map_but_not_its_scale():
    g = tiny_g().train()  # batch statistics: a fresh eval-mode BN + ReLU can flatten a tiny g's output
    x, text = torch.rand(1, 3, 32, 32), torch.randn(1, 16)
    a = g(x, text)
    assert torch.allclose(a, g(x, 7.0 * text), atol=1e-6)  # the text embedding is normalised
    assert not torch.allclose(a, g(x, -text), atol=1e-4)


def test_text_shape_is_checked():
    with pytest.raises(ValueError, match="text_emb"):
        tiny_g()(torch.rand(2, 3, 32, 32), torch.randn(1, 16))


def test_build_network_from_config_round_trips():
    g = tiny_g()
    rebuilt = build_network("grounding_net", **g.config())
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in g.state_dict().items()}


def test_image_index_runs_the_encoder_once_per_image_with_the_same_maps():
    g = tiny_g()
    images, text = torch.rand(2, 3, 32, 32), torch.randn(3, 16)
    index = torch.tensor([1, 0, 1])
    calls = []
    g.encoder.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    with torch.no_grad():
        shared = g(images, text, image_index=index)
        repeated = g(images[index], text)
    assert calls == [2, 3]
    assert torch.allclose(shared, repeated, atol=1e-6)
    with pytest.raises(ValueError, match="image_index"):
        g(images, text[:2], image_index=index)


def test_grounding_net_config_records_its_backbone_and_rebuilds_it():
    g = GroundingNet(text_dim=16, decoder_channels=8, backbone="resnet18", pretrained_backbone=False)
    assert g.config() == {"text_dim": 16, "decoder_channels": 8, "vgg_width_div": 1, "input_norm": "reference",
                          "backbone": "resnet18"}
    rebuilt = build_network("grounding_net", **g.config())
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in g.state_dict().items()}


# The width of each backbone's stride-8 output, from the architectures' papers/torchvision docs:
# ResNet-18 layer2 128, ResNet-50 layer2 512 (bottleneck ×4), MobileNetV2's 3rd stage 32,
# MobileNetV1 after its 3rd stride 256.
@pytest.mark.parametrize("backbone,channels", [("resnet18", 128), ("resnet50", 512), ("mobilenet_v2", 32),
                                               ("mobilenet_v1", 256)])
def test_grounding_net_backbones_are_cut_at_stride_8(backbone, channels):
    torch.manual_seed(0)
    g = GroundingNet(text_dim=16, decoder_channels=8, backbone=backbone, pretrained_backbone=False).eval()
    features = g.encode_image(torch.rand(2, 3, 64, 96))
    assert features.shape == (2, 16, 8, 12)
    assert g.bottleneck[0].in_channels == channels
    out = g(torch.rand(2, 3, 64, 96), torch.randn(2, 16))
    assert out.shape == (2, 64, 96) and ((out > 0) & (out < 1)).all()


def test_resnet50_grounding_encoder_is_torchvision_resnet50_up_to_layer2():
    torch.manual_seed(0)
    reference = resnet50().eval()
    g = GroundingNet(text_dim=16, backbone="resnet50", pretrained_backbone=False).eval()
    stem, layer1, layer2 = g.encoder
    stem.load_state_dict(torch.nn.Sequential(reference.conv1, reference.bn1).state_dict())
    layer1[1].load_state_dict(reference.layer1.state_dict())
    layer2.load_state_dict(reference.layer2.state_dict())
    kept = [reference.conv1, reference.bn1, reference.layer1, reference.layer2]
    assert sum(p.numel() for p in g.encoder.parameters()) == sum(p.numel() for m in kept for p in m.parameters())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        r = reference
        expected = r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))
        assert torch.equal(g.encoder(x), expected)


def test_vgg16_grounding_net_keeps_the_torchvision_vgg16_feature_keys():
    g = GroundingNet(text_dim=16, vgg_width_div=16, pretrained_backbone=False)
    encoder_keys = {k[len("encoder."):] for k in g.state_dict() if k.startswith("encoder.")}
    assert encoder_keys == set(torchvision_vgg16_relu4_3().state_dict())


def test_grounding_net_backbone_errors():
    with pytest.raises(ValueError, match="unknown backbone"):
        GroundingNet(text_dim=16, backbone="alexnet", pretrained_backbone=False)
    with pytest.raises(ValueError, match="only supported for vgg16"):
        GroundingNet(text_dim=16, backbone="resnet18", vgg_width_div=4, pretrained_backbone=False)


def test_positive_output_init_makes_the_map_rise_with_the_last_relu_channel():
    default, positive = tiny_g(), tiny_g(output_init="positive")
    assert (positive.up1[-1].weight >= 0).all()
    assert torch.equal(positive.up1[-1].weight, default.up1[-1].weight.abs())  # same draw, signs dropped
    assert positive.config() == default.config()  # an initialisation, not an architecture
    # Non-negative weights: the logit can only rise where the ReLU channel before it rises, and a dead
    # (zero) channel gives the lowest logit, the bias.
    torch.manual_seed(1)
    low = torch.rand(4, 1, 9, 9)
    high = low + torch.rand(4, 1, 9, 9)
    last = positive.up1[-1]
    with torch.no_grad():
        assert (last(high) >= last(low)).all()
        assert (last(low) >= last(torch.zeros_like(low)) - 1e-6).all()


def test_unknown_output_init_is_refused():
    with pytest.raises(ValueError, match="output_init"):
        tiny_g(output_init="negative")
