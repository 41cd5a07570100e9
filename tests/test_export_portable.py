"""Exports load from any working directory; ``from_pretrained`` / ``save_pretrained`` keep the export layout."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import wwbl
from wwbl.clip import FrozenCLIP
from wwbl.export import export_grounding_net, read_export_config, resolve_clip_checkpoint
from wwbl.extractors.network_g import NetworkGExtractor
from wwbl.networks import GroundingNet

REPO = Path(__file__).resolve().parents[1]
SHIPPED_G = REPO / "checkpoints" / "shapes_g"
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
    result = model.ground(torch.rand(3, 40, 60), ["a red circle"])
    assert result.heatmaps.shape == (1, 40, 60) and len(result.detections) == 1


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
