"""The tapped backbones: torchvision and timm layouts, input normalisation, ImageNet weights offline."""
import math
import os

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision.models import mobilenet_v2

from tests.helpers.vgg import torchvision_vgg16_relu4_3
from wwbl.errors import MissingResourceError
from wwbl.networks import GroundingNet, WSOLUNet, available_backbones
from wwbl.networks.backbones import TIMM_BACKBONES, InputNormalize, build_tapped_backbone, vgg16_features


def test_vgg_encoder_matches_torchvision_vgg16_relu4_3_layout():
    ours = vgg16_features(pretrained=False)
    reference = torchvision_vgg16_relu4_3()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    x = torch.rand(1, 3, 40, 40)
    ours.load_state_dict(reference.state_dict())
    assert torch.allclose(ours(x), reference(x))
    assert ours(x).shape == (1, 512, 5, 5)  # stride 8, 512 channels


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


MOBILENET_V1_HUB_ID = "timm/mobilenetv1_100.ra4_e3600_r224_in1k"


def test_timm_backbones_are_listed():
    assert TIMM_BACKBONES == {"mobilenet_v1": "mobilenetv1_100"}
    assert "mobilenet_v1" in available_backbones()


def test_mobilenet_v1_taps_are_timm_feature_pyramid():
    encoder = build_tapped_backbone("mobilenet_v1", pretrained=False)
    reported = timm.create_model("mobilenetv1_100", features_only=True).feature_info
    # MobileNetV1 (Howard et al. 2017, Table 1) widths at the end of each stride: 2, 4, …, 32.
    assert encoder.channels == reported.channels() == [64, 128, 256, 512, 1024]
    assert reported.reduction() == [2, 4, 8, 16, 32]
    taps = encoder(torch.rand(1, 3, 50, 70))
    expected = [(c, math.ceil(50 / r), math.ceil(70 / r)) for c, r in zip(encoder.channels, reported.reduction())]
    assert [tuple(t.shape[1:]) for t in taps] == expected


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
