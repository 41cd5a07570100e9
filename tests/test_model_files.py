"""Damaged model files: every loader names the file and the problem in one line.

A corpus of broken copies of the shipped models (checkpoints/shapes_g, shapes_clip, shapes_blip) and of
tiny random ones, written under tmp_path: truncated or random weights, configs with each bad field,
weights that do not fit, empty folders and files given where folders are expected.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from wwbl.clip import FrozenCLIP
from wwbl.clip.adapter import MODEL_CONFIG_DIR
from wwbl.errors import MissingResourceError, ModelFileError
from wwbl.export import export_from_lightning_checkpoint, load_grounding_net, main as export_main
from wwbl.inference.captioner import BlipCaptioner
from wwbl.lit_module import WWbLModule, check_resume_checkpoint
from wwbl.migrate_checkpoint import migrate_checkpoint
from wwbl.networks import GroundingNet

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints"


def _expect(error_type: type, call: Callable, file_name: str, problem: str) -> Exception:
    """``call()`` raises ``error_type`` whose one-line message names ``file_name`` and contains ``problem``."""
    with pytest.raises(error_type) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    assert file_name in message and problem in message, message
    if isinstance(caught.value, ModelFileError):
        assert Path(caught.value.path).name == file_name and message.startswith(caught.value.path + ": ")
    return caught.value


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _edit_weights(path: Path, edit: Callable[[dict], None]) -> None:
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


# -- network g exports -----------------------------------------------------------------------------
def _set(section: str | None, key: str, value) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        (config[section] if section else config)[key] = value
    return edit


def _drop(key: str) -> Callable[[dict], None]:
    return lambda config: config.pop(key)


G_CONFIG_CASES = {  # name: (edit of config.json, what the message says)
    "format_version_string": (_set(None, "format_version", "2"), 'has format_version "2"'),
    "format_version_newer": (_set(None, "format_version", 3), "a newer wwbl wrote it"),
    "format_version_null": (_set(None, "format_version", None), "has format_version null"),
    "foreign_format": (_set(None, "format", "other-g"), "is not a wwbl network g export"),
    "unknown_architecture": (_set(None, "architecture", "transformer"), 'architecture "transformer" is unknown'),
    "architecture_list": (_set(None, "architecture", ["grounding_net"]), 'architecture ["grounding_net"] is unknown'),
    "kwargs_missing": (_drop("kwargs"), "lacks the required entry 'kwargs'"),
    "kwargs_not_object": (_set(None, "kwargs", [64, 8]), "'kwargs' must be an object, not array"),
    "kwarg_wrong_type": (_set("kwargs", "vgg_width_div", "eight"),
                         'kwargs.vgg_width_div must be an integer, not string "eight"'),
    "kwarg_null": (_set("kwargs", "text_dim", None), "kwargs.text_dim must be an integer, not null"),
    "kwarg_float": (_set("kwargs", "text_dim", 128.5), "kwargs.text_dim must be an integer, not number 128.5"),
    "kwarg_unknown": (_set("kwargs", "colour", "red"), "kwargs ['colour'] are not options of 'grounding_net'"),
    "kwarg_impossible": (_set("kwargs", "vgg_width_div", 0), "its kwargs build no 'grounding_net'"),
    "clip_model_number": (_set("clip", "model", 12), "clip.model must be a string, not integer 12"),
    "clip_not_object": (_set(None, "clip", "shapes-vit"), "'clip' must be an object, not string"),
    "input_size_string": (_set(None, "input_size", "128"), 'input_size must be an integer, not string "128"'),
    "input_size_zero": (_set(None, "input_size", 0), "input_size must be positive"),
    "text_prefix_null": (_set(None, "text_prefix", None), "text_prefix must be a string, not null"),
}


@pytest.fixture
def g_copy(tmp_path) -> Path:
    """A copy of the shipped g beside a link to the shipped CLIP (its config names ../shapes_clip)."""
    target = tmp_path / "shapes_g"
    shutil.copytree(SHIPPED / "shapes_g", target)
    os.symlink(SHIPPED / "shapes_clip", tmp_path / "shapes_clip")
    return target


def test_the_undamaged_copy_loads(g_copy):
    net, config = load_grounding_net(str(g_copy))
    assert isinstance(net, GroundingNet) and config["format_version"] == 2


@pytest.mark.parametrize("case", sorted(G_CONFIG_CASES))
def test_g_config_with_a_bad_field(g_copy, case):
    edit, problem = G_CONFIG_CASES[case]
    _edit_json(g_copy / "config.json", edit)
    _expect(ModelFileError, lambda: load_grounding_net(str(g_copy)), "config.json", problem)


@pytest.mark.parametrize("text, problem", [("{not json", "is not valid JSON"), ("[1, 2]", "holds a JSON array"),
                                           ("", "is not valid JSON")])
def test_g_config_that_is_no_json_object(g_copy, text, problem):
    (g_copy / "config.json").write_text(text)
    _expect(ModelFileError, lambda: load_grounding_net(str(g_copy)), "config.json", problem)


@pytest.mark.parametrize("damage", [_truncate, _random_bytes, lambda p: p.write_bytes(b"")])
def test_g_weights_corrupt_or_truncated(g_copy, damage):
    damage(g_copy / "model.safetensors")
    _expect(ModelFileError, lambda: load_grounding_net(str(g_copy)), "model.safetensors", "corrupt or truncated")


def test_g_weights_of_another_size(g_copy):
    _edit_json(g_copy / "config.json", _set("kwargs", "decoder_channels", 32))  # the file holds 64
    err = _expect(ModelFileError, lambda: load_grounding_net(str(g_copy)), "model.safetensors", "shape mismatch")
    assert "in the file, [32" in str(err) and " and " in str(err)  # several layers: the first three, then a count


def test_g_weights_with_missing_and_unexpected_keys(g_copy):
    weights = g_copy / "model.safetensors"
    first, second = sorted(load_file(str(weights)))[:2]
    _edit_weights(weights, lambda state: [state.pop(first), state.pop(second)])
    err = _expect(ModelFileError, lambda: load_grounding_net(str(g_copy)), "model.safetensors", "missing keys")
    assert {first, second} == set(str(err).split("missing keys ", 1)[1].split(", ")) and "unexpected" not in str(err)
    shutil.copy(SHIPPED / "shapes_g" / "model.safetensors", weights)
    _edit_weights(weights, lambda state: state.update(stray=torch.zeros(2)))
    _expect(ModelFileError, lambda: load_grounding_net(str(g_copy)), "model.safetensors", "unexpected keys stray")


def test_g_export_given_as_a_file_or_an_empty_folder(g_copy, tmp_path):
    _expect(ModelFileError, lambda: load_grounding_net(str(g_copy / "model.safetensors")), "model.safetensors",
            "is a file, but an exported network g is a folder")
    (tmp_path / "empty").mkdir()
    _expect(MissingResourceError, lambda: load_grounding_net(str(tmp_path / "empty")), "config.json", "not found")


def test_infer_cli_on_a_damaged_export_says_one_line(g_copy, tmp_path):
    _truncate(g_copy / "model.safetensors")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    run = subprocess.run([sys.executable, str(REPO / "infer.py"), "--image", str(tmp_path / "red.png"),
                          "--checkpoint", str(g_copy), "--captioner", str(SHIPPED / "shapes_blip"),
                          "--out", str(tmp_path / "out"), "--quiet"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert lines == [f"error: {g_copy / 'model.safetensors'}: " + lines[0].split(": ", 2)[2]], lines
    assert "corrupt or truncated" in lines[0]


# -- CLIP folders and files -----------------------------------------------------------------------
@pytest.fixture
def clip_dir(tmp_path) -> Path:
    """A tiny random CLIP as an open_clip model folder."""
    torch.manual_seed(0)
    clip = FrozenCLIP("wwbl-tiny-vit", pretrained="random")
    folder = tmp_path / "tiny_clip"
    folder.mkdir()
    model_cfg = json.loads((MODEL_CONFIG_DIR / "wwbl-tiny-vit.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    return folder


def _vision(key: str, value) -> Callable[[dict], None]:
    return lambda config: config["model_cfg"]["vision_cfg"].__setitem__(key, value)


def test_the_tiny_clip_folder_loads(clip_dir):
    assert FrozenCLIP(checkpoint=clip_dir).embed_dim == 32


@pytest.mark.parametrize("edit, problem", [
    (_vision("bogus", 1), "open_clip cannot build a CLIP from its 'model_cfg' (TypeError"),
    (_vision("width", "wide"), "open_clip cannot build a CLIP"),
    (lambda c: c["model_cfg"].pop("embed_dim"), "'model_cfg' lacks ['embed_dim']"),
    (lambda c: c.__setitem__("model_cfg", [1]), "'model_cfg' must be an object, not array"),
])
def test_clip_folder_with_wrong_config_keys(clip_dir, edit, problem):
    _edit_json(clip_dir / "open_clip_config.json", edit)
    _expect(ModelFileError, lambda: FrozenCLIP(checkpoint=clip_dir), "open_clip_config.json", problem)


def test_clip_folder_config_that_is_no_json(clip_dir):
    (clip_dir / "open_clip_config.json").write_text("model_cfg = {}")
    _expect(ModelFileError, lambda: FrozenCLIP(checkpoint=clip_dir), "open_clip_config.json", "is not valid JSON")


def test_clip_folder_weights_that_do_not_fit(clip_dir):
    _edit_json(clip_dir / "open_clip_config.json", _vision("width", 64))
    _expect(ModelFileError, lambda: FrozenCLIP(checkpoint=clip_dir), "open_clip_model.safetensors",
            "the weights do not fit the CLIP that open_clip_config.json describes: shape mismatch")


def test_clip_folder_weights_with_a_missing_key(clip_dir):
    _edit_weights(clip_dir / "open_clip_model.safetensors", lambda state: state.pop("logit_scale"))
    _expect(ModelFileError, lambda: FrozenCLIP(checkpoint=clip_dir), "open_clip_model.safetensors",
            "missing keys logit_scale")


def test_shipped_clip_folder_with_truncated_weights(tmp_path):
    folder = tmp_path / "shapes_clip"
    shutil.copytree(SHIPPED / "shapes_clip", folder)
    _truncate(folder / "open_clip_model.safetensors")
    _expect(ModelFileError, lambda: FrozenCLIP(checkpoint=folder), "open_clip_model.safetensors",
            "corrupt or truncated")


@pytest.mark.parametrize("name, problem", [("clip.safetensors", "not a readable safetensors file"),
                                           ("clip.pt", "not a readable PyTorch file")])
def test_clip_weights_file_of_random_bytes(tmp_path, name, problem):
    _random_bytes(tmp_path / name)
    _expect(ModelFileError, lambda: FrozenCLIP("wwbl-tiny-vit", checkpoint=tmp_path / name), name, problem)


def test_clip_torch_file_that_holds_no_state_dict(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "clip.pt")
    _expect(ModelFileError, lambda: FrozenCLIP("wwbl-tiny-vit", checkpoint=tmp_path / "clip.pt"), "clip.pt",
            "holds no state dict")


def test_bare_clip_weights_file_for_another_model_points_at_its_folder(clip_dir):
    weights = clip_dir / "open_clip_model.safetensors"
    err = _expect(ModelFileError, lambda: FrozenCLIP("wwbl-tiny-rn", checkpoint=weights),
                  "open_clip_model.safetensors", "the weights do not fit open_clip model 'wwbl-tiny-rn'")
    assert str(err).endswith(f"pass the folder {clip_dir} instead")


def test_clip_config_file_given_as_weights(clip_dir):
    _expect(ModelFileError, lambda: FrozenCLIP(checkpoint=clip_dir / "open_clip_config.json"),
            "open_clip_config.json", f"is a JSON file, not CLIP weights; pass the CLIP folder {clip_dir}")


def test_empty_clip_folder(tmp_path):
    _expect(MissingResourceError, lambda: FrozenCLIP(checkpoint=tmp_path), tmp_path.name,
            "lacks open_clip_config.json")


# -- BLIP folders ---------------------------------------------------------------------------------
@pytest.fixture
def blip_copy(tmp_path) -> Path:
    target = tmp_path / "shapes_blip"
    shutil.copytree(SHIPPED / "shapes_blip", target)
    return target


def _load_blip(folder: Path) -> Callable[[], BlipCaptioner]:
    return lambda: BlipCaptioner.from_pretrained(str(folder), allow_download=False)


def test_the_blip_copy_loads(blip_copy):
    assert _load_blip(blip_copy)().model.config.model_type == "blip"


def test_blip_with_truncated_weights(blip_copy):
    _truncate(blip_copy / "model.safetensors")
    _expect(ModelFileError, _load_blip(blip_copy), "model.safetensors", "corrupt or truncated")


def test_blip_with_missing_weights(blip_copy):
    _edit_weights(blip_copy / "model.safetensors", lambda state: state.pop("vision_model.post_layernorm.weight"))
    _expect(ModelFileError, _load_blip(blip_copy), "model.safetensors",
            "missing keys vision_model.post_layernorm.weight")


def test_blip_config_of_another_size(blip_copy, capsys):
    _edit_json(blip_copy / "config.json", lambda c: c["vision_config"].__setitem__("intermediate_size", 200))
    _expect(ModelFileError, _load_blip(blip_copy), "model.safetensors", 
            "shape mismatch vision_model.encoder.layers.0.mlp.fc1.bias [384] in the file, [200] in the network")
    assert "LOAD REPORT" not in capsys.readouterr().out  # transformers' table stays hidden


@pytest.mark.parametrize("edit, problem", [
    (lambda p: p.write_text("{"), "is not valid JSON"),
    (lambda p: _edit_json(p, _set(None, "model_type", "bert")), "describes a 'bert' model, not a BLIP captioner"),
])
def test_blip_with_a_bad_config(blip_copy, edit, problem):
    edit(blip_copy / "config.json")
    _expect(ModelFileError, _load_blip(blip_copy), "config.json", problem)


@pytest.mark.parametrize("removed, role", [(("config.json",), "its config"), (("tokenizer.json",), "its tokenizer"),
                                           (("model.safetensors",), "its weights")])
def test_blip_folder_missing_a_file(blip_copy, removed, role):
    for name in removed:
        (blip_copy / name).unlink()
    _expect(MissingResourceError, _load_blip(blip_copy), "shapes_blip", f"lacks {role}")


def test_blip_given_a_weights_file(blip_copy):
    _expect(ModelFileError, _load_blip(blip_copy / "model.safetensors"), "model.safetensors",
            "is a file, but a BLIP captioner is a folder")


# -- Lightning checkpoints ------------------------------------------------------------------------
def _tiny_g() -> GroundingNet:
    torch.manual_seed(0)
    return GroundingNet(text_dim=32, decoder_channels=8, vgg_width_div=16, pretrained_backbone=False)


def _checkpoint(path: Path, net: GroundingNet, **spec_changes) -> Path:
    spec = {"architecture": "grounding_net", "kwargs": net.config(), "input_size": 64, "text_prefix": "",
            "clip": {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None}, **spec_changes}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "wwbl_export": spec,
                "hyper_parameters": {"task": "wsg"}}, path)
    return path


def test_a_sound_checkpoint_exports(tmp_path):
    export_from_lightning_checkpoint(str(_checkpoint(tmp_path / "g.ckpt", _tiny_g())), str(tmp_path / "out"))
    assert isinstance(load_grounding_net(str(tmp_path / "out"))[0], GroundingNet)


@pytest.mark.parametrize("damage, problem", [
    (_truncate, "corrupt or truncated"),
    (_random_bytes, "is not a readable PyTorch file"),
    (lambda p: p.write_bytes(b""), "is not a readable PyTorch file"),
    (lambda p: torch.save([1, 2], p), "holds a list, not a Lightning checkpoint"),
])
def test_damaged_checkpoint_file(tmp_path, damage, problem):
    path = _checkpoint(tmp_path / "g.ckpt", _tiny_g())
    damage(path)
    _expect(ModelFileError, lambda: export_from_lightning_checkpoint(str(path), str(tmp_path / "out")), "g.ckpt",
            problem)
    _expect(ModelFileError, lambda: migrate_checkpoint(str(path), str(tmp_path / "new.ckpt")), "g.ckpt", problem)


def test_checkpoint_with_a_bad_description_or_weights(tmp_path):
    net = _tiny_g()
    bad_kwargs = _checkpoint(tmp_path / "kwargs.ckpt", net, kwargs={**net.config(), "text_dim": "32"})
    _expect(ModelFileError, lambda: export_from_lightning_checkpoint(str(bad_kwargs), str(tmp_path / "o")),
            "kwargs.ckpt", 'kwargs.text_dim must be an integer, not string "32"')
    resized = _checkpoint(tmp_path / "resized.ckpt", net, kwargs={**net.config(), "decoder_channels": 16})
    _expect(ModelFileError, lambda: export_from_lightning_checkpoint(str(resized), str(tmp_path / "o")),
            "resized.ckpt", "the weights do not fit the 'grounding_net' its 'wwbl_export' entry describes")
    _expect(ModelFileError, lambda: export_from_lightning_checkpoint(str(tmp_path), str(tmp_path / "o")),
            tmp_path.name, "is a folder, but checkpoint is a file")


def test_export_cli_on_a_damaged_checkpoint(tmp_path, capsys):
    _random_bytes(tmp_path / "g.ckpt")
    assert export_main(["--ckpt", str(tmp_path / "g.ckpt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'g.ckpt'}: is not a readable PyTorch file")


def test_resume_checkpoint_is_checked_against_the_model(tmp_path):
    module = WWbLModule(clip_model="wwbl-tiny-vit", clip_pretrained="random", pretrained_backbone=False,
                        network={"architecture": "grounding_net", "vgg_width_div": 16, "decoder_channels": 8})
    sound = _checkpoint(tmp_path / "sound.ckpt", module.net)
    check_resume_checkpoint(str(sound), module)  # fits: no error
    other = _checkpoint(tmp_path / "other.ckpt", GroundingNet(text_dim=32, decoder_channels=16, vgg_width_div=16,
                                                               pretrained_backbone=False))
    _expect(ModelFileError, lambda: check_resume_checkpoint(str(other), module), "other.ckpt",
            "its g weights do not fit the configured network (model.network): shape mismatch")
    _truncate(sound)
    _expect(ModelFileError, lambda: check_resume_checkpoint(str(sound), module), "sound.ckpt", "corrupt or truncated")


def test_clip_weights_file_for_an_unknown_model(clip_dir):
    _expect(ValueError, lambda: FrozenCLIP("no-such-clip", checkpoint=clip_dir / "open_clip_model.safetensors"),
            "open_clip_model.safetensors", "unknown open_clip model 'no-such-clip'")


# -- infer.py on each damaged model: exit status 2, one line naming the file ----------------------
def _models_copy(tmp_path: Path) -> Path:
    """Copies of the shipped g, its CLIP and BLIP side by side (g's config names ../shapes_clip)."""
    for name in ("shapes_g", "shapes_clip", "shapes_blip"):
        shutil.copytree(SHIPPED / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("damaged, edit, problem", [
    ("shapes_clip/open_clip_model.safetensors", _truncate, "corrupt or truncated"),
    ("shapes_clip/open_clip_config.json", lambda p: _edit_json(p, lambda c: c["model_cfg"].pop("embed_dim")),
     "'model_cfg' lacks ['embed_dim']"),
    ("shapes_blip/model.safetensors", _random_bytes, "corrupt or truncated"),
    ("shapes_g/config.json", lambda p: _edit_json(p, _set("kwargs", "text_dim", None)),
     "kwargs.text_dim must be an integer, not null"),
])
def test_infer_on_each_damaged_model_file_exits_2_naming_it(infer, tmp_path, capsys, damaged, edit, problem):
    models = _models_copy(tmp_path)
    edit(models / damaged)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    code = infer.main(["--image", str(tmp_path / "red.png"), "--checkpoint", str(models / "shapes_g"),
                       "--captioner", str(models / "shapes_blip"), "--out", str(tmp_path / "out"), "--quiet"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert Path(damaged).name in lines[0] and problem in lines[0], lines
