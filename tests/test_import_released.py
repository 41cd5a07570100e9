"""Importing the authors' released g checkpoints (pickled DataParallel(MultiModel)) without running their code.

The source files are built here with the reference's exact pickle layout: classes whose module paths are
the reference's (``model.MultiModel``, ``models.vgg16.VGG16``, ``base.MMDecoder``/``BottleneckBlock``/
``UpBlock``), written from the released architecture as described in docs/REFERENCE.md W§2, wrapped in DataParallel and
saved with ``torch.save(model)``.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wwbl.export import load_grounding_net, read_export_config
from wwbl.import_released import ReleasedCheckpointError, import_released, main, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
VGG_TO_RELU4_3 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
SETSTATE_CALLS: list[str] = []  # any use of a reference class while importing lands here


class VGG16(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in VGG_TO_RELU4_3:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = item
        self.Org_model = nn.Sequential(*layers)  # torchvision vgg16().features[:23]

    def __setstate__(self, state):
        SETSTATE_CALLS.append("VGG16")
        super().__setstate__(state)


class BottleneckBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1, self.BN1 = nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch)
        self.conv2, self.BN2 = nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch)


class UpBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, func: str) -> None:
        super().__init__()
        self.func = func
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv1, self.BN1 = nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch)
        self.conv2, self.BN2 = nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch)


class MMDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bottleneck = BottleneckBlock(512)
        self.up0 = UpBlock(512, 512, "relu")
        self.up1 = UpBlock(512, 1, "None")
        self.dropout = nn.Dropout(0.0)


class MultiModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.E, self.D = VGG16(), MMDecoder()

    def __setstate__(self, state):
        SETSTATE_CALLS.append("MultiModel")
        super().__setstate__(state)


REFERENCE_PATHS = {"model": [MultiModel], "models.vgg16": [VGG16], "base": [MMDecoder, BottleneckBlock, UpBlock]}


@contextmanager
def reference_modules():
    """Make the (module-level, so bare-qualname) test classes importable under the reference's module paths."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "models", types.ModuleType("models"))
        for module_name, classes in REFERENCE_PATHS.items():
            module = types.ModuleType(module_name)
            for cls in classes:
                mp.setattr(cls, "__module__", module_name)
                setattr(module, cls.__name__, cls)
            mp.setitem(sys.modules, module_name, module)
        yield


def bn(x: torch.Tensor, layer: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps)


def reference_forward(model: MultiModel, images01: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The released forward, written from REFERENCE.md W§2, on the source module's own weights."""
    x = (images01 - 0.5) / 0.5
    for layer in model.E.Org_model:
        if isinstance(layer, nn.Conv2d):
            x = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=1))
        elif isinstance(layer, nn.MaxPool2d):
            x = F.max_pool2d(x, 2, 2)
    b = model.D.bottleneck
    z = F.relu(bn(F.conv2d(x, b.conv1.weight, b.conv1.bias, padding=1), b.BN1))
    z = F.relu(bn(F.conv2d(z, b.conv2.weight, b.conv2.bias, padding=1), b.BN2))
    cos = (z / z.norm(dim=1, keepdim=True) * (text / text.norm(dim=1, keepdim=True))[:, :, None, None]).sum(1)
    h = z * cos[:, None]
    for block, last in ((model.D.up0, False), (model.D.up1, True)):
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = F.relu(bn(F.conv2d(h, block.conv1.weight, block.conv1.bias, padding=1), block.BN1))
        h = F.conv2d(h, block.conv2.weight, block.conv2.bias, padding=1)
        if not last:
            h = F.relu(bn(h, block.BN2))
    return torch.sigmoid(F.interpolate(h, size=images01.shape[-2:], mode="bilinear", align_corners=True))[:, 0]


def randomise(model: nn.Module, seed: int) -> None:
    """Random weights and BatchNorm statistics, so every tensor's placement matters to the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Conv2d):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(path of a pickled DataParallel(MultiModel) as saved from a GPU run, the source model)."""
    torch.manual_seed(0)
    model = MultiModel().eval()
    randomise(model, seed=1)
    dp = nn.DataParallel(model)
    dp.device_ids, dp.output_device, dp.src_device_obj = [0], 0, torch.device("cuda", 0)  # as on the authors' GPU
    path = tmp_path_factory.mktemp("released") / "net_best.pth"
    with reference_modules():
        torch.save(dp, path)
    return path, model


def inputs(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 24, 32, generator=g), torch.randn(2, 512, generator=g)


def assert_outputs_match(net: nn.Module, model: MultiModel) -> None:
    images, text = inputs()
    with torch.no_grad():
        ours, theirs = net(images, text), reference_forward(model, images, text)
    assert ours.shape == (2, 24, 32)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_released_pickle_imports_to_an_export_with_the_reference_forward(released, tmp_path):
    path, model = released
    SETSTATE_CALLS.clear()
    with reference_modules():  # even when the authors' classes are importable, none of their code runs
        out = import_released(path, tmp_path / "g")
    assert SETSTATE_CALLS == []
    net, config = load_grounding_net(str(out))
    assert_outputs_match(net, model)
    assert config["clip"] == {"model": "ViT-B-32", "pretrained": "openai", "checkpoint": None}
    assert (config["input_size"], config["text_prefix"], config["input_norm"]) == (304, "image of ", "reference")
    assert config["kwargs"] == {"text_dim": 512, "decoder_channels": 512, "vgg_width_div": 1,
                                "input_norm": "reference", "backbone": "vgg16"}
    assert sorted(os.listdir(tmp_path)) == ["g"]  # no staging folder left behind


def test_reader_gives_an_inert_tree_of_the_pickled_modules(released):
    path, model = released
    tree = read_checkpoint(path)
    assert tree.global_name == "torch.nn.parallel.data_parallel.DataParallel"
    multi = tree.state["_modules"]["module"]
    assert multi.global_name == "model.MultiModel"
    assert multi.state["_modules"]["D"].state["_modules"]["up1"].global_name == "base.UpBlock"
    conv = multi.state["_modules"]["E"].state["_modules"]["Org_model"].state["_modules"]["21"]
    assert torch.equal(conv.state["_parameters"]["weight"], model.E.Org_model[21].weight)
    assert tree.state["src_device_obj"] == "cuda:0"


@pytest.mark.parametrize("wrap", ["dataparallel_state_dict", "state_dict_key", "model_key"])
def test_plain_state_dict_checkpoints_are_accepted(released, tmp_path, wrap):
    _, model = released
    content = {"dataparallel_state_dict": lambda: nn.DataParallel(model).state_dict(),
               "state_dict_key": lambda: {"state_dict": model.state_dict(), "epoch": 3},
               "model_key": lambda: {"model": model.state_dict()}}[wrap]()
    torch.save(content, tmp_path / "weights.pth")
    net, _ = load_grounding_net(str(import_released(tmp_path / "weights.pth", tmp_path / "g")))
    assert_outputs_match(net, model)


class SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalCall(SystemCall):
    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w')",)


def assert_refused(path: Path, tmp_path: Path, match: str) -> None:
    with pytest.raises(ReleasedCheckpointError, match=match) as info:
        import_released(path, tmp_path / "out")
    assert str(path) in str(info.value)
    assert not (tmp_path / "out").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out")]


@pytest.mark.parametrize("payload, name", [(SystemCall, "system"), (EvalCall, "eval")])
def test_malicious_zip_pickles_are_refused_without_running(tmp_path, payload, name):
    marker = tmp_path / "marker"
    torch.save({"state_dict": payload(marker)}, tmp_path / "evil.pth")
    assert_refused(tmp_path / "evil.pth", tmp_path, rf"refused global '[\w.]+\.{name}'")
    assert not marker.exists()


def test_malicious_legacy_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(SystemCall(marker), protocol=2))
    assert_refused(tmp_path / "evil.pth", tmp_path, "not a readable, safe torch checkpoint")
    assert not marker.exists()


def test_unknown_reference_class_is_refused(tmp_path):
    class Injected(nn.Module):
        pass

    Injected.__module__, Injected.__qualname__ = "base", "Injected"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "base", types.SimpleNamespace(Injected=Injected))
        torch.save(Injected(), tmp_path / "other.pth")
    assert_refused(tmp_path / "other.pth", tmp_path, "refused global 'base.Injected'")


def rewrite_zip(src: Path, dst: Path, drop: str) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if not item.filename.endswith(drop):
                zout.writestr(item, zin.read(item.filename))


@pytest.mark.parametrize("damage", ["half", "tail", "text", "storage_missing"])
def test_damaged_files_are_refused(released, tmp_path, damage):
    path, _ = released
    bad = tmp_path / "bad.pth"
    data = path.read_bytes()
    if damage == "half":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "tail":
        bad.write_bytes(data[:-64])
    elif damage == "text":
        bad.write_text("not a checkpoint\n")
    else:
        rewrite_zip(path, bad, drop="/data/3")
    assert_refused(bad, tmp_path, "not a readable, safe torch checkpoint")


def mutated_state(model: MultiModel, change: str) -> dict[str, torch.Tensor]:
    state = dict(model.state_dict())
    if change == "missing":
        del state["D.up0.BN1.running_var"]
    elif change == "unexpected":
        state["D.up2.conv1.weight"] = torch.zeros(1)
    else:
        state["E.Org_model.5.weight"] = torch.zeros(128, 64, 1, 1)
    return state


@pytest.mark.parametrize("change, named", [("missing", r"missing \['up0.2.running_var'\]"),
                                           ("unexpected", "unexpected key 'D.up2.conv1.weight'"),
                                           ("shape", r"encoder.5.weight \(128, 64, 1, 1\) != \(128, 64, 3, 3\)")])
def test_state_dicts_that_do_not_match_g_are_refused(released, tmp_path, change, named):
    torch.save(mutated_state(released[1], change), tmp_path / "w.pth")
    assert_refused(tmp_path / "w.pth", tmp_path, named)


def test_cli_imports_end_to_end(released, tmp_path):
    path, model = released
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "wwbl.import_released", str(path), str(tmp_path / "g")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "imported network g" in run.stdout
    assert read_export_config(str(tmp_path / "g"))["text_prefix"] == "image of "
    assert_outputs_match(load_grounding_net(str(tmp_path / "g"))[0], model)


def test_cli_reports_errors_and_keeps_a_non_empty_output(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02garbage")
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "junk.pth"), str(tmp_path / "out")])
    assert info.value.code == 2 and "junk.pth" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "junk.pth"), str(tmp_path / "full")])
    assert "already exists" in capsys.readouterr().err
    assert os.listdir(tmp_path / "full") == ["keep.txt"]
