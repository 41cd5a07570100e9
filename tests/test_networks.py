"""Network g: GroundingNet (WSG) and WSOLUNet (WSOL) on tiny random instances."""

import math
import os

import huggingface_hub
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models import mobilenet_v2, resnet50
from torchvision.models.vgg import cfgs, make_layers

from wwbl.errors import MissingResourceError
from wwbl.networks import GroundingNet, WSOLUNet, available_backbones, build_network
from wwbl.networks.backbones import TIMM_BACKBONES, InputNormalize, build_tapped_backbone, vgg16_features


def torchvision_vgg16_relu4_3():
    """torchvision's own VGG16 feature stack (without the big classifier), cut at relu4_3."""
    return make_layers(cfgs["D"])[:23]


def tiny_g(**kw):
    torch.manual_seed(0)
    return GroundingNet(text_dim=16, vgg_width_div=16, pretrained_backbone=False, **kw).eval()


def test_grounding_net_output_is_a_map_in_0_1_at_input_size():
    g = tiny_g()
    out = g(torch.rand(3, 3, 50, 36), torch.randn(3, 16))
    assert out.shape == (3, 50, 36)
    assert (out > 0).all() and (out < 1).all()


def test_vgg_encoder_matches_torchvision_vgg16_relu4_3_layout():
    ours = vgg16_features(pretrained=False)
    reference = torchvision_vgg16_relu4_3()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    x = torch.rand(1, 3, 40, 40)
    ours.load_state_dict(reference.state_dict())
    assert torch.allclose(ours(x), reference(x))
    assert ours(x).shape == (1, 512, 5, 5)  # stride 8, 512 channels


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


@pytest.mark.parametrize("name,mean,std", [("reference", 0.5, 0.5), ("imagenet", 0.485, 0.229)])
def test_input_normalisation(name, mean, std):
    x = torch.full((1, 3, 2, 2), 0.7)
    assert torch.allclose(InputNormalize(name)(x)[0, 0], torch.full((2, 2), (0.7 - mean) / std))


def test_pretrained_backbone_offline_without_cache_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingResourceError, match="vgg16-397923af.pth"):
        GroundingNet(text_dim=16, pretrained_backbone=True)


def test_pretrained_backbone_loads_the_cached_imagenet_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    source = torchvision_vgg16_relu4_3()
    os.makedirs(tmp_path / "hub" / "checkpoints")
    torch.save({f"features.{k}": v for k, v in source.state_dict().items()},
               tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    g = GroundingNet(text_dim=16, pretrained_backbone=True)
    for k, v in source.state_dict().items():
        assert torch.equal(g.encoder.state_dict()[k], v)


def test_tiny_width_cannot_use_imagenet_weights():
    with pytest.raises(ValueError, match="width"):
        GroundingNet(text_dim=16, vgg_width_div=4, pretrained_backbone=True)


def test_vgg_taps_are_the_reference_wsol_taps():
    taps = build_tapped_backbone("vgg16", pretrained=False, width_div=8)(torch.rand(1, 3, 64, 64))
    # relu1_2, pool1, relu2_2, relu3_3, relu4_3, relu5_3
    assert [t.shape[1:] for t in taps] == [(8, 64, 64), (8, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8),
                                           (64, 4, 4)]


@pytest.mark.parametrize("backbone,kw", [("vgg16", {"vgg_width_div": 16}), ("resnet18", {}), ("mobilenet_v2", {})])
def test_wsol_unet_shapes(backbone, kw):
    torch.manual_seed(0)
    net = WSOLUNet(backbone, pretrained_backbone=False, **kw).eval()
    out = net(torch.rand(2, 3, 64, 48))
    assert out.shape == (2, 64, 48)
    assert ((out > 0) & (out < 1)).all()


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["densenet161", "inception_v3", "resnet50", "resnet101"])
def test_wsol_unet_other_backbones(backbone):
    net = WSOLUNet(backbone, pretrained_backbone=False).eval()
    assert net(torch.rand(1, 3, 96, 96)).shape == (1, 96, 96)


def test_wsol_unet_uses_its_skip_connections():
    torch.manual_seed(0)
    net = WSOLUNet("vgg16", pretrained_backbone=False, vgg_width_div=16).eval()
    x = torch.rand(1, 3, 32, 32)
    base = net(x)
    # Zeroing the full-resolution skip (relu1_2) must change the output.
    net.decoder[-1].register_forward_pre_hook(lambda m, args: (args[0], torch.zeros_like(args[1])))
    assert not torch.allclose(base, net(x))


def test_unknown_backbone_and_architecture():
    with pytest.raises(ValueError, match="unknown backbone"):
        WSOLUNet("alexnet", pretrained_backbone=False)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("unet3d")


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


# --- timm backbones (paper Tables 2/4 backbones that torchvision lacks) ---------------------

MOBILENET_V1_HUB_ID = "timm/mobilenetv1_100.ra4_e3600_r224_in1k"


def test_timm_backbones_are_listed():
    assert TIMM_BACKBONES == {"mobilenet_v1": "mobilenetv1_100"}
    assert "mobilenet_v1" in available_backbones()


@pytest.mark.parametrize("backbone", sorted(TIMM_BACKBONES))
def test_wsol_unet_timm_backbone_maps_at_a_non_multiple_of_32_input(backbone):
    torch.manual_seed(0)
    net = WSOLUNet(backbone, pretrained_backbone=False, max_decoder_channels=32).eval()
    out = net(torch.rand(2, 3, 50, 70))
    assert out.shape == (2, 50, 70)
    assert ((out > 0) & (out < 1)).all()


def test_mobilenet_v1_taps_are_timm_feature_pyramid():
    encoder = build_tapped_backbone("mobilenet_v1", pretrained=False)
    reported = timm.create_model("mobilenetv1_100", features_only=True).feature_info
    # MobileNetV1 (Howard et al. 2017, Table 1) widths at the end of each stride: 2, 4, …, 32.
    assert encoder.channels == reported.channels() == [64, 128, 256, 512, 1024]
    assert reported.reduction() == [2, 4, 8, 16, 32]
    taps = encoder(torch.rand(1, 3, 50, 70))
    expected = [(c, math.ceil(50 / r), math.ceil(70 / r)) for c, r in zip(encoder.channels, reported.reduction())]
    assert [tuple(t.shape[1:]) for t in taps] == expected


def test_wsol_unet_decoder_concatenates_every_timm_tap():
    net = WSOLUNet("mobilenet_v1", pretrained_backbone=False, max_decoder_channels=32)
    skips = [64, 128, 256, 512]  # the taps below the deepest, in decoder order: reversed
    assert [block.convs[0].in_channels for block in net.decoder] == [32 + c for c in reversed(skips)]


def _random_timm_state(model_name):
    torch.manual_seed(3)
    return timm.create_model(model_name).state_dict()


def _assert_encoder_holds(encoder, state):
    loaded = encoder.features.state_dict()
    assert loaded  # non-empty
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_timm_backbone_offline_without_cache_names_the_model_and_the_remedies(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingResourceError, match="mobilenetv1_100") as err:
        WSOLUNet("mobilenet_v1", pretrained_backbone=True)
    assert MOBILENET_V1_HUB_ID in str(err.value) and "backbone_weights" in str(err.value)


def test_timm_backbone_reads_the_hugging_face_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / ("models--" + MOBILENET_V1_HUB_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    state = _random_timm_state("mobilenetv1_100")
    save_file(state, repo / "snapshots" / "0123abcd" / "model.safetensors")
    net = WSOLUNet("mobilenet_v1", pretrained_backbone=True, max_decoder_channels=32)
    _assert_encoder_holds(net.encoder, state)


def test_timm_backbone_reads_a_local_weights_file(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    state = _random_timm_state("mobilenetv1_100")
    path = tmp_path / "mobilenetv1.pth"
    torch.save(state, path)
    net = WSOLUNet("mobilenet_v1", pretrained_backbone=True, backbone_weights=str(path), max_decoder_channels=32)
    _assert_encoder_holds(net.encoder, state)
    assert "backbone_weights" not in net.config()


def test_torchvision_backbone_reads_a_local_weights_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    torch.manual_seed(4)
    state = mobilenet_v2().state_dict()
    path = tmp_path / "mobilenet_v2.safetensors"
    save_file(state, path)
    net = WSOLUNet("mobilenet_v2", pretrained_backbone=True, backbone_weights=str(path), max_decoder_channels=32)
    loaded = net.encoder.stages[0].state_dict()  # features[0:2]
    assert loaded and all(torch.equal(v, state[f"features.{k}"]) for k, v in loaded.items())


def test_backbone_weights_errors(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(MissingResourceError, match="nope.safetensors"):
        WSOLUNet("mobilenet_v1", pretrained_backbone=True, backbone_weights=missing)
    with pytest.raises(MissingResourceError, match="nope.safetensors"):
        WSOLUNet("resnet18", pretrained_backbone=True, backbone_weights=missing)
    with pytest.raises(ValueError, match="pretrained"):
        WSOLUNet("mobilenet_v1", pretrained_backbone=False, backbone_weights=missing)


# --- the network config: unknown options, GroundingNet's stride-8 backbones -------------------

@pytest.mark.parametrize("architecture,option", [("grounding_net", "max_decoder_channels"),
                                                 ("wsol_unet", "decoder_channels"), ("grounding_net", "widht")])
def test_build_network_names_an_option_the_architecture_does_not_take(architecture, option):
    with pytest.raises(ValueError, match=f"'{option}'.*'{architecture}'"):
        build_network(architecture, **{option: 8})


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
