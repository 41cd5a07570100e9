"""One-step training runs of every config family through train.py (LightningCLI) on generated data,
with the tiny random CLIP and a tiny g; checkpoints, export and resume."""
import csv
import functools
import math
from pathlib import Path

import pytest
import torch

import train
from shapes_world import ShapesWorld, WorldConfig
from shapes_world.writers import write_coco as write_shapes_coco, write_flickr
from tests.helpers.training_layouts import write_coco, write_cub, write_flickr30k, write_visual_genome
from wwbl.export import load_grounding_net, main as export_main
from wwbl.lit_module import WWbLModule


REPO = Path(__file__).resolve().parents[1]
TINY = ["--model.clip_model", "wwbl-tiny-vit", "--model.clip_pretrained", "random",
        "--model.pretrained_backbone", "false", "--model.network.vgg_width_div", "16",
        "--data.image_size", "64", "--data.batch_size", "2", "--data.num_workers", "0",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.log_every_n_steps", "1", "--trainer.enable_model_summary", "false"]


def run(config, tmp_path, *extra):
    args = ["--config", str(REPO / "configs" / config), *TINY, "--trainer.default_root_dir", str(tmp_path / "run"),
            *extra]
    return train.main(args)


def logged(cli):
    with open(Path(cli.trainer.logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for row in rows for k, v in row.items() if v not in ("", None)}


def check_run(cli, val_keys):
    metrics = logged(cli)
    for key in ["train/loss", "train/loss_fore", "train/loss_back", "train/loss_rmap", "train/loss_reg", *val_keys]:
        assert key in metrics and math.isfinite(metrics[key]), key
    assert cli.trainer.global_step == 1
    assert all(p.grad is None and not p.requires_grad for p in cli.model.clip.parameters())
    log_dir = Path(cli.trainer.logger.log_dir)
    assert (log_dir / "config.yaml").is_file()
    ckpt_path = log_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["state_dict"] and all(k.startswith("net.") for k in ckpt["state_dict"])
    momentum = ckpt["optimizer_states"][0]["state"]
    assert momentum and any(s["momentum_buffer"].abs().sum() > 0 for s in momentum.values())
    return ckpt_path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_coco(root / "coco", n_images=2)
    write_flickr30k(root / "flickr")
    write_visual_genome(root / "vg", train_ids=(1, 2), test_ids=(3,))
    write_cub(root / "cub", n_images=4)
    return root


def test_coco_paper_config_trains_validates_exports_and_resumes(datasets, tmp_path):
    cli = run("coco_wsg.yaml", tmp_path, "--data.root", str(datasets / "coco"),
              "--data.val_root", str(datasets / "flickr"))
    ckpt_path = check_run(cli, ["val/pointing_acc", "val/box_acc"])
    assert cli.model.hparams.pairing == "diagonal" and cli.model.hparams.input_size == 64

    export_main(["--ckpt", str(ckpt_path), "--out", str(tmp_path / "export")])  # python -m wwbl.export
    net, config = load_grounding_net(str(tmp_path / "export"))
    assert config["clip"]["model"] == "wwbl-tiny-vit" and config["input_size"] == 64
    x = torch.rand(2, 3, 64, 64)
    text = cli.model.clip.encode_text(["a cube", "a ball"])
    cli.model.net.eval()
    with torch.no_grad():
        assert torch.equal(net(x, text), cli.model.net(x, text))

    resumed = run("coco_wsg.yaml", tmp_path, "--data.root", str(datasets / "coco"), "--data.val_root", "null",
                  "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt_path))
    assert resumed.trainer.global_step == 2
    # The resumed run continues in the same version folder and keeps the best-checkpoint tracking.
    assert resumed.trainer.logger.log_dir == cli.trainer.logger.log_dir
    assert resumed.trainer.checkpoint_callback.dirpath == cli.trainer.checkpoint_callback.dirpath
    assert resumed.trainer.checkpoint_callback.best_model_path == cli.trainer.checkpoint_callback.best_model_path


def test_coco_reference_config_trains(datasets, tmp_path):
    cli = run("coco_wsg_reference.yaml", tmp_path, "--data.root", str(datasets / "coco"), "--data.val_root", "null")
    check_run(cli, [])
    hp = cli.model.hparams
    assert (hp.pairing, hp.back_abs, hp.mask_space, hp.text_prefix) == ("all_pairs", True, "reference", "image of ")
    assert cli.datamodule.hparams.word_dropout == 0.2


def test_vg_config_trains(datasets, tmp_path):
    cli = run("vg_wsg.yaml", tmp_path, "--data.root", str(datasets / "vg"), "--data.val_root", "null")
    check_run(cli, [])


@pytest.mark.parametrize("loss_form", ["cosine", "reference_wsol"])
def test_cub_wsol_config_trains_and_validates(datasets, tmp_path, loss_form):
    cli = run("cub_wsol.yaml", tmp_path, "--data.root", str(datasets / "cub"), "--data.image_size", "64",
              "--data.resize_size", "72", "--model.loss_form", loss_form)
    check_run(cli, ["val/pointing_acc", "val/box_acc"])


def test_shapes_stage_c_config_trains_g_against_the_shipped_clip(tmp_path):
    """Smoke run of the shapes world's stage (c): configs/shapes/g.yaml as shipped (its frozen small
    CLIP from checkpoints/), on a tiny world written in the real COCO / Flickr30k layouts."""
    world = ShapesWorld(WorldConfig())
    write_shapes_coco(world, str(tmp_path / "coco"), "train", 4)
    write_flickr(world, str(tmp_path / "flickr30k"), {"val": 2})
    cli = train.main([
        "--config", str(REPO / "configs" / "shapes" / "g.yaml"),
        "--model.clip_checkpoint", str(REPO / "checkpoints" / "shapes_clip"),
        "--data.root", str(tmp_path / "coco"), "--data.val_root", str(tmp_path / "flickr30k"),
        "--data.batch_size", "2", "--data.num_workers", "0", "--data.val_batch_size", "2",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
    ])
    check_run(cli, ["val/pointing_acc", "val/box_acc"])
    assert cli.model.clip.spec["checkpoint"].endswith("shapes_clip")


def test_wsg_g_with_a_resnet50_stride_8_backbone_trains_from_one_config_line(datasets, tmp_path):
    # In a config this is the one line ``backbone: resnet50``; TINY's width divisor is VGG16-only.
    cli = run("coco_wsg.yaml", tmp_path, "--data.root", str(datasets / "coco"), "--data.val_root", "null",
              "--model.network.vgg_width_div", "1", "--model.network.backbone", "resnet50")
    check_run(cli, [])
    net = cli.model.net
    assert net.config()["backbone"] == "resnet50" and net.bottleneck[0].in_channels == 512  # layer2's width
    assert not any(k.startswith("encoder.3.") for k in net.state_dict())  # layer3 and layer4 are not built
    net.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        maps = net(x, cli.model.clip.encode_text(["a cube", "a ball"]))
    assert maps.shape == (2, 64, 64) and ((maps > 0) & (maps < 1)).all()


def test_a_config_name_is_found_in_configs():
    assert Path(train.find_config("coco_wsg.yaml")) == REPO / "configs" / "coco_wsg.yaml"
    assert Path(train.find_config("coco_wsg")) == REPO / "configs" / "coco_wsg.yaml"
    assert Path(train.find_config("g.yaml")) == REPO / "configs" / "shapes" / "g.yaml"
    assert train.resolve_configs(["--config=coco_wsg", "--model.lr", "1"]) == [
        f"--config={REPO / 'configs' / 'coco_wsg.yaml'}", "--model.lr", "1"]


def test_user_errors_end_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # a setting the parser refuses: no usage dump
        train.main(["--config", "coco_wsg.yaml", "--model.lambda_fore", "heavy"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    with pytest.raises(SystemExit) as exit_:  # data that is not there: MissingResourceError in one line
        run("coco_wsg.yaml", tmp_path, "--data.root", str(tmp_path / "missing"), "--data.val_root", "null")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "Traceback" not in "\n".join(err)


def test_a_damaged_resume_checkpoint_ends_in_one_line(datasets, tmp_path, capsys):
    damaged = tmp_path / "last.ckpt"
    damaged.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(SystemExit) as exit_:
        run("coco_wsg.yaml", tmp_path, "--data.root", str(datasets / "coco"), "--data.val_root", "null",
            "--ckpt_path", str(damaged))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: {damaged}: is not a readable PyTorch file")


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_validates_exports_and_resumes(datasets, tmp_path, precision):
    """``--trainer.precision bf16-mixed`` end to end on CPU (real bf16 autocast). On CPU Lightning
    runs ``16-mixed`` as bf16-mixed (fp16 AMP is CUDA-only there); the fp16 + GradScaler path is
    the next test."""
    cli = run("coco_wsg.yaml", tmp_path, "--data.root", str(datasets / "coco"),
              "--data.val_root", str(datasets / "flickr"), "--trainer.precision", precision,
              "--data.pin_memory", "false", "--data.persistent_workers", "false", "--data.prefetch_factor", "3")
    ckpt_path = check_run(cli, ["val/pointing_acc", "val/box_acc"])
    assert cli.trainer.precision == "bf16-mixed"
    dm = cli.datamodule  # the loader knobs are reachable from the command line
    assert (dm.pin_memory, dm.persistent_workers, dm.prefetch_factor) == (False, False, 3)
    assert all(p.dtype == torch.float32 for p in cli.model.net.parameters())  # autocast casts no parameter
    export_main(["--ckpt", str(ckpt_path), "--out", str(tmp_path / "export")])
    net, _ = load_grounding_net(str(tmp_path / "export"))
    assert all(p.dtype == torch.float32 for p in net.state_dict().values() if p.is_floating_point())
    resumed = run("coco_wsg.yaml", tmp_path, "--data.root", str(datasets / "coco"), "--data.val_root", "null",
                  "--trainer.precision", precision, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt_path))
    assert resumed.trainer.global_step == 2


def test_fp16_autocast_with_the_grad_scaler_trains_on_cpu(datasets, tmp_path):
    """The ``16-mixed`` path as it runs on a GPU (fp16 autocast, loss scaled by a GradScaler, gradients
    unscaled before SGD), here on CPU through an explicit MixedPrecision plugin: nothing in the module
    may cast g to half or bypass the scaled loss."""
    plugin = tmp_path / "fp16.yaml"
    plugin.write_text("trainer:\n  precision: null\n  plugins:\n    - class_path: lightning.pytorch.plugins.MixedPrecision\n"
                      "      init_args: {precision: 16-mixed, device: cpu}\n")
    cli = run("coco_wsg.yaml", tmp_path, "--config", str(plugin), "--data.root", str(datasets / "coco"),
              "--data.val_root", str(datasets / "flickr"))
    scaler = cli.trainer.precision_plugin.scaler
    assert cli.trainer.precision == "16-mixed" and scaler is not None and scaler.is_enabled()
    ckpt_path = check_run(cli, ["val/pointing_acc", "val/box_acc"])
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["MixedPrecision"]["scale"] == scaler.get_scale()  # the scaler's state is checkpointed
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_a_g_trained_channels_last_and_compiled_checkpoints_and_exports_as_a_plain_g(datasets, tmp_path, monkeypatch):
    """``--model.channels_last true --model.compile true`` (compiled with aot_eager here: Inductor's
    first compile takes minutes on this CPU, see tests/test_g_channels_last_compile.py); the checkpoint
    holds the plain ``net.*`` names and loads, like its export, into an uncompiled contiguous g."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    cli = run("coco_wsg.yaml", tmp_path, "--data.root", str(datasets / "coco"), "--data.val_root", "null",
              "--trainer.precision", "bf16-mixed", "--model.channels_last", "true", "--model.compile", "true")
    ckpt_path = check_run(cli, [])
    assert cli.model.net._compiled_call_impl is not None
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    hparams = {k: v for k, v in cli.model.hparams.items() if not k.startswith("_")}  # LightningCLI's _instantiator
    plain = WWbLModule(**{**hparams, "compile": False, "channels_last": False})
    assert state.keys() == plain.state_dict().keys()
    plain.load_state_dict(state)
    export_main(["--ckpt", str(ckpt_path), "--out", str(tmp_path / "export")])
    net, _ = load_grounding_net(str(tmp_path / "export"))
    x, text = torch.rand(2, 3, 64, 64), plain.clip.encode_text(["a cube", "a ball"])
    plain.net.eval()
    cli.model.net.eval()
    with torch.no_grad():
        expected = cli.model(x, text)
        assert torch.allclose(plain(x, text), expected, atol=1e-5)
        assert torch.allclose(net(x, text), expected, atol=1e-5)
