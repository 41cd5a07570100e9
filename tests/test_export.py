"""Export of g as safetensors + JSON and the Lightning-free, pickle-free loader."""

import json
import pickle
import struct

import pytest
import torch

from wwbl.errors import AnnotationError, MissingResourceError
from wwbl.export import export_grounding_net, load_grounding_net
from wwbl.networks import GroundingNet, WSOLUNet

CLIP_SPEC = {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None}


def _trained_like(net):
    """Give BatchNorm non-default running statistics so the export must carry buffers too."""
    net.train()
    with torch.no_grad():
        for _ in range(2):
            x = torch.rand(2, 3, 32, 32)
            net(x, torch.randn(2, 16)) if isinstance(net, GroundingNet) else net(x)
    return net.eval()


def _read_safetensors_header(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def test_grounding_net_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    g = _trained_like(GroundingNet(text_dim=16, vgg_width_div=16, pretrained_backbone=False))
    export_grounding_net(g, str(tmp_path), CLIP_SPEC, {"input_size": 64, "text_prefix": "image of "})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    header = _read_safetensors_header(tmp_path / "model.safetensors")
    assert set(header) - {"__metadata__"} == set(g.state_dict())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "grounding_net" and config["clip"] == CLIP_SPEC
    assert config["input_size"] == 64 and config["text_prefix"] == "image of " and config["input_norm"] == "reference"

    loaded, loaded_config = load_grounding_net(str(tmp_path))
    assert loaded_config == config and not loaded.training
    x, text = torch.rand(2, 3, 40, 40), torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, text), g(x, text))


def test_loading_never_unpickles(tmp_path, monkeypatch):
    torch.manual_seed(0)
    g = GroundingNet(text_dim=16, vgg_width_div=16, pretrained_backbone=False).eval()
    export_grounding_net(g, str(tmp_path), CLIP_SPEC)

    def refuse(*args, **kwargs):
        raise AssertionError("the loader unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded, _ = load_grounding_net(str(tmp_path))
    x, text = torch.rand(1, 3, 32, 32), torch.randn(1, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, text), g(x, text))


def test_wsol_unet_round_trip(tmp_path):
    torch.manual_seed(0)
    net = _trained_like(WSOLUNet("vgg16", pretrained_backbone=False, vgg_width_div=16))
    export_grounding_net(net, str(tmp_path), CLIP_SPEC, {"task": "wsol"})
    loaded, config = load_grounding_net(str(tmp_path))
    assert config["architecture"] == "wsol_unet" and config["kwargs"]["backbone"] == "vgg16"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_missing_and_foreign_exports_give_named_errors(tmp_path):
    with pytest.raises(MissingResourceError, match="config.json"):
        load_grounding_net(str(tmp_path / "nothing"))
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(AnnotationError, match="not a wwbl network g export"):
        load_grounding_net(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_grounding_net(str(tmp_path))


def test_missing_weights_file_is_named(tmp_path):
    g = GroundingNet(text_dim=16, vgg_width_div=16, pretrained_backbone=False)
    export_grounding_net(g, str(tmp_path), CLIP_SPEC)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(MissingResourceError, match="model.safetensors"):
        load_grounding_net(str(tmp_path))


def test_extra_cannot_overwrite_reserved_entries(tmp_path):
    g = GroundingNet(text_dim=16, vgg_width_div=16, pretrained_backbone=False)
    with pytest.raises(ValueError, match="reserved"):
        export_grounding_net(g, str(tmp_path), CLIP_SPEC, {"architecture": "x"})
