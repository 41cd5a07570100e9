"""Export of g as safetensors + JSON and the Lightning-free, pickle-free loader; exports load from any
working directory; ``from_pretrained`` / ``save_pretrained`` keep the export layout."""
import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

import wwbl
from wwbl.clip import FrozenCLIP
from wwbl.errors import MissingResourceError, ModelFileError
from wwbl.export import (export_from_lightning_checkpoint, export_grounding_net, load_grounding_net, read_export_config,
                         resolve_clip_checkpoint)
from wwbl.extractors.network_g import NetworkGExtractor
from wwbl.networks import GroundingNet, WSOLUNet

REPO = Path(__file__).resolve().parents[1]
CLIP_SPEC = {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None}
SHIPPED_G = REPO / "checkpoints" / "shapes_g"


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
    with pytest.raises(ModelFileError, match="not a wwbl network g export"):
        load_grounding_net(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
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


def test_grounding_net_with_another_backbone_round_trips(tmp_path):
    torch.manual_seed(0)
    g = _trained_like(GroundingNet(text_dim=16, decoder_channels=8, backbone="resnet18", pretrained_backbone=False))
    export_grounding_net(g, str(tmp_path), CLIP_SPEC)
    loaded, config = load_grounding_net(str(tmp_path))
    assert config["kwargs"]["backbone"] == "resnet18"
    x, text = torch.rand(2, 3, 40, 40), torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, text), g(x, text))


def _reference_g(state, images01, text):
    """The VGG16 network g of the released code, written out with torch.nn.functional on the raw
    exported tensors (independent of GroundingNet): relu4_3 features → bottleneck → cosine gate →
    two ×2 up-sampling blocks → bilinear (corners aligned) → sigmoid."""
    def bn(x, name):
        return F.batch_norm(x, state[f"{name}.running_mean"], state[f"{name}.running_var"], state[f"{name}.weight"],
                            state[f"{name}.bias"], training=False, eps=1e-5)

    def conv(x, name):
        return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    def up(x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    x = (images01 - 0.5) / 0.5  # the "reference" input normalisation
    for i in range(23):  # VGG16 features[:23]: conv+ReLU pairs, 2×2 max-pools at 4, 9, 16
        if i in (4, 9, 16):
            x = F.max_pool2d(x, 2)
        elif f"encoder.{i}.weight" in state:
            x = F.relu(conv(x, f"encoder.{i}"))
    x = F.relu(bn(conv(x, "bottleneck.0"), "bottleneck.1"))
    x = F.relu(bn(conv(x, "bottleneck.3"), "bottleneck.4"))
    cosine = (F.normalize(x, dim=1) * F.normalize(text, dim=1)[:, :, None, None]).sum(1, keepdim=True)
    x = x * cosine
    x = F.relu(bn(conv(up(x), "up0.1"), "up0.2"))
    x = F.relu(bn(conv(x, "up0.4"), "up0.5"))
    x = conv(F.relu(bn(conv(up(x), "up1.1"), "up1.2")), "up1.4")
    x = F.interpolate(x, size=images01.shape[-2:], mode="bilinear", align_corners=True)
    return torch.sigmoid(x)[:, 0]


@pytest.mark.skipif(not (SHIPPED_G / "config.json").is_file(), reason="shipped checkpoints/shapes_g is absent")
def test_shipped_export_without_backbone_option_loads_with_the_reference_forward(tmp_path):
    """An export written before GroundingNet had a ``backbone`` option (the shipped g's files with that
    key removed, as the g shipped until 2026-12-03 had them) loads as the VGG16 g."""
    legacy = tmp_path / "shapes_g"
    legacy.mkdir()
    config = json.loads((SHIPPED_G / "config.json").read_text())
    config["kwargs"].pop("backbone", None)
    (legacy / "config.json").write_text(json.dumps(config))
    shutil.copy(SHIPPED_G / "model.safetensors", legacy / "model.safetensors")
    assert config["format_version"] == 2 and "backbone" not in config["kwargs"]
    net, loaded_config = load_grounding_net(str(legacy))
    assert loaded_config["clip"]["checkpoint"] == str(legacy.parent / "shapes_clip")
    assert {**loaded_config, "clip": config["clip"]} == config and net.config()["backbone"] == "vgg16"
    state = load_file(str(legacy / "model.safetensors"))
    assert set(net.state_dict()) == set(state)
    torch.manual_seed(0)
    images, text = torch.rand(2, 3, 128, 128), torch.randn(2, config["kwargs"]["text_dim"])
    expected = _reference_g(state, images, text)
    assert (expected[0] - expected[1]).abs().max() > 1e-3  # the two images give different maps
    with torch.no_grad():
        assert torch.allclose(net(images, text), expected, atol=1e-5)


SHIPPED_CLIP = REPO / "checkpoints" / "shapes_clip"


@pytest.fixture(scope="module")
def tiny_clip_file(tmp_path_factory) -> Path:
    """A tiny CLIP's weights as a plain state-dict file, seeded so that they differ from any fresh random model."""
    torch.manual_seed(7)
    clip = FrozenCLIP("wwbl-tiny-vit", pretrained="random")
    path = tmp_path_factory.mktemp("weights") / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(path))
    return path


def _g(text_dim: int) -> GroundingNet:
    torch.manual_seed(0)
    return GroundingNet(text_dim=text_dim, decoder_channels=8, vgg_width_div=16, pretrained_backbone=False).eval()


def _export(tmp_path: Path, monkeypatch, clip_file: Path, embed: bool = False) -> Path:
    """Export from a working directory where the CLIP is named by a cwd-relative path, as a user types it."""
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    shutil.copy(clip_file, work / "models" / "clip.safetensors")
    monkeypatch.chdir(work)
    spec = {"model": "wwbl-tiny-vit", "pretrained": None, "checkpoint": "models/clip.safetensors"}
    export_grounding_net(_g(FrozenCLIP("wwbl-tiny-vit", pretrained="random").embed_dim), "exports/g", spec,
                         extra={"input_size": 48, "text_prefix": ""}, embed_clip=embed)
    return work / "exports" / "g"


def _same_weights(clip: FrozenCLIP, clip_file: Path) -> bool:
    expected = load_file(str(clip_file))
    return all(torch.equal(v, expected[k]) for k, v in clip.model.state_dict().items())


def test_clip_is_recorded_relative_to_the_export_and_found_from_another_directory(tmp_path, monkeypatch,
                                                                                   tiny_clip_file):
    export = _export(tmp_path, monkeypatch, tiny_clip_file)
    config = json.loads((export / "config.json").read_text())
    assert config["format_version"] == 2 and config["clip"]["checkpoint"] == "../../models/clip.safetensors"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    g = NetworkGExtractor.from_export(export)
    assert _same_weights(g.clip, tiny_clip_file)
    assert wwbl.load(export).heatmaps.clip.spec["checkpoint"] == str(tmp_path / "work" / "models" / "clip.safetensors")


def test_embedded_clip_travels_with_the_export(tmp_path, monkeypatch, tiny_clip_file):
    export = _export(tmp_path, monkeypatch, tiny_clip_file, embed=True)
    assert json.loads((export / "config.json").read_text())["clip"]["checkpoint"] == "clip/clip.safetensors"
    moved = shutil.move(str(export), str(tmp_path / "moved_g"))
    shutil.rmtree(tmp_path / "work")  # the original CLIP weights are gone
    monkeypatch.chdir(tmp_path)
    assert _same_weights(NetworkGExtractor.from_export(moved).clip, tiny_clip_file)


def test_embedding_missing_clip_weights_is_an_error(tmp_path):
    spec = {"model": "wwbl-tiny-vit", "pretrained": None, "checkpoint": str(tmp_path / "nowhere.safetensors")}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        export_grounding_net(_g(16), str(tmp_path / "g"), spec, embed_clip=True)


def test_format_1_exports_resolve_against_the_working_directory_then_the_export(tmp_path, monkeypatch,
                                                                                 tiny_clip_file):
    export = tmp_path / "old_g"
    export_grounding_net(_g(FrozenCLIP("wwbl-tiny-vit", pretrained="random").embed_dim), str(export),
                         {"model": "wwbl-tiny-vit", "pretrained": None, "checkpoint": None}, {"input_size": 48})
    config = json.loads((export / "config.json").read_text())
    config.update(format_version=1, clip={**config["clip"], "checkpoint": "weights/clip.safetensors"})
    (export / "config.json").write_text(json.dumps(config))
    (export / "weights").mkdir()
    shutil.copy(tiny_clip_file, export / "weights" / "clip.safetensors")
    cwd = tmp_path / "cwd"
    (cwd / "weights").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    # Only beside the export: found there.
    assert read_export_config(str(export))["clip"]["checkpoint"] == str(export / "weights" / "clip.safetensors")
    assert _same_weights(NetworkGExtractor.from_export(export).clip, tiny_clip_file)
    # Also beside the working directory: that one wins, as format 1 meant.
    (cwd / "weights" / "clip.safetensors").write_bytes(b"")
    assert read_export_config(str(export))["clip"]["checkpoint"] == str(cwd / "weights" / "clip.safetensors")
    assert resolve_clip_checkpoint("weights/clip.safetensors", str(export), 2) == str(export / "weights" /
                                                                                      "clip.safetensors")
    assert resolve_clip_checkpoint(None, str(export), 1) is None


@pytest.mark.skipif(not (SHIPPED_G / "config.json").is_file(), reason="shipped checkpoints/shapes_g is absent")
def test_shipped_g_loads_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = wwbl.load(SHIPPED_G)
    assert _same_weights(model.heatmaps.clip, SHIPPED_CLIP / "open_clip_model.safetensors")
    scene = json.loads((REPO / "data" / "shapes_samples" / "scenes.json").read_text())["scenes"][0]
    image = REPO / "data" / "shapes_samples" / scene["file"]
    result = model.ground(image, ["a " + scene["objects"][0]["phrase"]])  # an object the scene shows
    height, width = Image.open(image).size[::-1]
    assert result.heatmaps.shape == (1, height, width) and len(result.detections) >= 1
    assert ((result.detections.boxes >= 0) & (result.detections.boxes <= torch.tensor([width, height] * 2))).all()


def test_save_pretrained_writes_the_export_layout_and_from_pretrained_reads_it(tmp_path, monkeypatch,
                                                                               tiny_clip_file):
    g = NetworkGExtractor.from_export(_export(tmp_path, monkeypatch, tiny_clip_file))
    saved = tmp_path / "saved"
    g.save_pretrained(saved)
    assert {"config.json", "model.safetensors", "clip"} <= {p.name for p in saved.iterdir()}
    assert read_export_config(str(saved))["format"] == "wwbl-g"
    shutil.rmtree(tmp_path / "work")  # the saved folder stands alone
    monkeypatch.chdir(tmp_path)
    again = NetworkGExtractor.from_pretrained(saved)
    assert _same_weights(again.clip, tiny_clip_file)
    assert (again.input_size, again.text_prefix) == (48, "")
    image = torch.rand(3, 30, 50)
    assert torch.equal(again.heatmaps([image], [["a dog"]])[0], g.heatmaps([image], [["a dog"]])[0])
    assert NetworkGExtractor.from_pretrained(saved, text_prefix="image of ").text_prefix == "image of "


def test_from_pretrained_reads_a_hub_repository_from_the_local_cache(tmp_path, monkeypatch, tiny_clip_file):
    """The Hub path without a network: a cache laid out as huggingface_hub lays it, read with local_files_only."""
    g = NetworkGExtractor.from_export(_export(tmp_path, monkeypatch, tiny_clip_file, embed=True))
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf_cache" / "models--someone--tiny-wwbl-g"
    g.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.chdir(tmp_path)
    loaded = NetworkGExtractor.from_pretrained("someone/tiny-wwbl-g", cache_dir=tmp_path / "hf_cache",
                                               local_files_only=True)
    assert _same_weights(loaded.clip, tiny_clip_file)
    assert all(torch.equal(v, g.network.state_dict()[k]) for k, v in loaded.network.state_dict().items())


def test_export_refuses_foreign_checkpoints(tmp_path):
    torch.save({"state_dict": {"layer.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ModelFileError, match="wwbl_export"):
        export_from_lightning_checkpoint(str(tmp_path / "other.ckpt"), str(tmp_path / "out"))
