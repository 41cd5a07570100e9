"""One-step training runs of every config family through train.py (LightningCLI) on generated data,
with the tiny random CLIP and a tiny g; checkpoints, export and resume; the loss wiring."""

import csv
import math
import sys
from pathlib import Path

import lightning
import pytest
import torch
from training_layouts import write_coco, write_cub, write_flickr30k, write_visual_genome

from wwbl.errors import AnnotationError
from wwbl.export import export_from_lightning_checkpoint, load_grounding_net
from wwbl.export import main as export_main
from wwbl.lit_module import WWbLModule
from wwbl.migrate_checkpoint import main as migrate_main
from wwbl.migrate_checkpoint import migrate_hparams

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train

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


# -- the loss wiring of the module, against a naive recomputation ---------------------------------

def tiny_module(**kw):
    torch.manual_seed(0)
    kw.setdefault("network", {"architecture": "grounding_net", "vgg_width_div": 16})
    return WWbLModule(clip_model="wwbl-tiny-vit", clip_pretrained="random", pretrained_backbone=False,
                      input_size=64, **kw)


@pytest.mark.parametrize("mask_space", ["image", "reference"])
def test_module_losses_match_a_naive_computation(mask_space):
    module = tiny_module(mask_space=mask_space, pairing="all_pairs", back_abs=True, text_prefix="image of ")
    module.net.eval()
    images, phrases = torch.rand(2, 3, 64, 64), ["a red cube", "a blue ball"]
    terms = module.compute_losses(images, phrases)

    clip = module.clip
    text = clip.encode_text(["image of a red cube", "image of a blue ball"])
    mask = module.net(images, text)
    if mask_space == "image":  # M ⊙ I in [0, 1], then CLIP's own normalisation
        fore = clip.encode_image(images * mask[:, None])
        back = clip.encode_image(images * (1 - mask[:, None]))
        rel = clip.relevancy(images, text)
    else:  # the reference multiplies the [-1, 1] image and skips CLIP's normalisation
        fore = clip.encode_image_prepared((images * 2 - 1) * mask[:, None])
        back = clip.encode_image_prepared((images * 2 - 1) * (1 - mask[:, None]))
        rel = clip.relevancy(images * 2 - 1, text, normalize_input=False)
    assert terms["fore"].item() == pytest.approx(1 - (fore @ text.T).mean().item(), abs=1e-5)
    assert terms["back"].item() == pytest.approx((back @ text.T).abs().mean().item(), abs=1e-5)
    assert terms["rmap"].item() == pytest.approx(((mask - rel) ** 2).mean().item(), abs=1e-5)
    assert terms["reg"].item() == pytest.approx(mask.mean().item(), abs=1e-6)
    expected = terms["fore"] + terms["back"] + 4 * terms["rmap"] + terms["reg"]
    assert terms["loss"].item() == pytest.approx(expected.item(), abs=1e-5)


def test_foreground_gradient_reaches_g_through_frozen_clip():
    module = tiny_module(lambda_back=0.0, lambda_rmap=0.0, lambda_reg=0.0)
    loss = module.compute_losses(torch.rand(2, 3, 64, 64), ["a cube", "a ball"])["loss"]
    loss.backward()
    grads = [p.grad for p in module.net.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in module.clip.parameters())


def test_validation_maps_average_over_an_entitys_phrases():
    module = tiny_module()
    module.net.eval()
    images = torch.rand(2, 3, 64, 64)
    maps = module.predict_maps(images, [["a cat", "the cat"], ["a dog"]], [1, 0])
    text = module.clip.encode_text(["a cat", "the cat", "a dog"])
    with torch.no_grad():
        single = module.net(images[[1, 1, 0]], text)
    assert torch.allclose(maps[0], (single[0] + single[1]) / 2, atol=1e-6)
    assert torch.allclose(maps[1], single[2], atol=1e-6)


def test_validation_scores_maps_in_the_original_image_frame(monkeypatch):
    from torch import nn

    from wwbl.metrics import BoxAccuracy, PointingAccuracy

    module = tiny_module()
    module._metrics = nn.ModuleDict({"pointing_acc": PointingAccuracy(), "box_acc": BoxAccuracy()})
    # a 40×80 image seen by g at 64×64; entity boxes in the original frame
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([[40.0, 20.0, 79.0, 39.0]])]
    batch = [{"image": torch.rand(3, 64, 64), "size": (40, 80), "phrases": [["a"], ["b"]], "boxes": boxes}]
    maps = torch.zeros(2, 64, 64)
    maps[0, 0:32, 0:16] = 1.0  # the first box scaled to 64×64 (x ×0.8, y ×1.6)
    maps[1, 32:64, 32:64] = 1.0
    monkeypatch.setattr(module, "predict_maps", lambda images, phrases, owners: maps)
    module.validation_step(batch, 0)
    assert module._metrics["pointing_acc"].compute() == 1.0
    assert module._metrics["box_acc"].compute() == 1.0
    for metric in module._metrics.values():
        metric.reset()
    monkeypatch.setattr(module, "predict_maps", lambda images, phrases, owners: maps.flip(0))
    module.validation_step(batch, 0)
    assert module._metrics["pointing_acc"].compute() == 0.0
    assert module._metrics["box_acc"].compute() == 0.0


def test_export_refuses_foreign_checkpoints(tmp_path):
    torch.save({"state_dict": {"layer.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(AnnotationError, match="wwbl_export"):
        export_from_lightning_checkpoint(str(tmp_path / "other.ckpt"), str(tmp_path / "out"))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="pairing"):
        tiny_module(pairing="diag")
    with pytest.raises(ValueError, match="background_prompts"):
        tiny_module(loss_form="reference_wsol")
    with pytest.raises(ValueError, match="mask_space"):
        tiny_module(mask_space="lab")


@pytest.mark.slow
def test_a_few_steps_on_one_batch_reduce_the_loss():
    module = tiny_module(lr=0.05)
    optimizer = module.configure_optimizers()
    torch.manual_seed(1)
    images, phrases = torch.rand(4, 3, 64, 64), ["a cube", "a ball", "a dog", "a tree"]
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = module.compute_losses(images, phrases)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5


def test_shapes_stage_c_config_trains_g_against_the_shipped_clip(tmp_path):
    """Smoke run of the shapes world's stage (c): configs/shapes/g.yaml as shipped (its frozen small
    CLIP from checkpoints/), on a tiny world written in the real COCO / Flickr30k layouts."""
    from shapes_world import ShapesWorld, WorldConfig
    from shapes_world.writers import write_coco, write_flickr

    world = ShapesWorld(WorldConfig())
    write_coco(world, str(tmp_path / "coco"), "train", 4)
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


class _FixedMask(torch.nn.Module):
    """Stands in for g: the same hand-made 2×3 mask for every image."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, images, text=None):
        return self.mask.expand(len(images), *self.mask.shape)


def _upsample_align_corners(values, size_hw):
    """Naive separable linear interpolation with corner pixels aligned (numpy, float64)."""
    import numpy as np

    def along(axis_len, out_len):
        pos = np.arange(out_len) * (axis_len - 1) / (out_len - 1)
        low = np.minimum(np.floor(pos).astype(int), axis_len - 2)
        frac = pos - low
        weights = np.zeros((out_len, axis_len))
        weights[np.arange(out_len), low] = 1 - frac
        weights[np.arange(out_len), low + 1] = frac
        return weights

    rows, cols = along(values.shape[0], size_hw[0]), along(values.shape[1], size_hw[1])
    return rows @ values @ cols.T


@pytest.mark.parametrize("reg_space", ["g", "clip"])
def test_reg_space_takes_the_mean_at_g_size_or_after_resizing_to_clip(reg_space):
    import numpy as np

    module = tiny_module(reg_space=reg_space)
    raw = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])   # mean 1/6; resized, the corner's weight shrinks
    module.net = _FixedMask(torch.tensor(raw, dtype=torch.float32))
    terms = module.compute_losses(torch.rand(2, 3, 2, 3), ["a", "b"])
    side = module.clip.image_size
    resized_mean = _upsample_align_corners(raw, (side, side)).mean()
    # By hand for side 64: rows fall linearly 1 → 0 (mean 1/2); columns fall 1 → 0 over the first
    # 32 outputs, 1 - 2i/63 for i = 0..31, summing to 32 - 992/63.
    assert side == 64 and resized_mean == pytest.approx(0.5 * (32 - 992 / 63) / 64)
    expected = resized_mean if reg_space == "clip" else raw.mean()
    assert abs(resized_mean - raw.mean()) > 1e-3  # the two options differ on this mask
    assert terms["reg"].item() == pytest.approx(expected, abs=1e-6)


# -- g's network config ------------------------------------------------------------------------

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


def test_network_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="'max_decoder_channels'.*'grounding_net'"):
        tiny_module(network={"architecture": "grounding_net", "vgg_width_div": 16, "max_decoder_channels": 8})
    with pytest.raises(ValueError, match="task 'wsol' trains network architecture 'wsol_unet'"):
        tiny_module(task="wsol", network={"architecture": "grounding_net", "vgg_width_div": 16})
    with pytest.raises(ValueError, match="task 'wsg' trains network architecture 'grounding_net'"):
        tiny_module(task="wsg", network={"architecture": "wsol_unet", "vgg_width_div": 16})
    with pytest.raises(ValueError, match="model arguments"):
        tiny_module(network={"architecture": "grounding_net", "vgg_width_div": 16, "pretrained_backbone": False})
    with pytest.raises(ValueError, match="text_dim 7"):
        tiny_module(network={"architecture": "grounding_net", "vgg_width_div": 16, "text_dim": 7})


def test_default_network_is_the_tasks_architecture():
    torch.manual_seed(0)
    module = WWbLModule(task="wsol", clip_model="wwbl-tiny-vit", clip_pretrained="random", pretrained_backbone=False)
    assert module.net.config() == {"backbone": "vgg16", "input_norm": "reference", "max_decoder_channels": 512,
                                   "vgg_width_div": 1}


# The hyper-parameters WWbLModule saved before g's network became one argument (every argument,
# defaults included, as save_hyperparameters records them).
OLD_FLAT_HPARAMS = {
    "task": "wsg", "clip_model": "wwbl-tiny-vit", "clip_pretrained": "random", "clip_checkpoint": None,
    "clip_precision": "fp32", "pretrained_backbone": False, "backbone_weights": None, "input_norm": "reference",
    "vgg_width_div": 16, "decoder_channels": 8, "backbone": "resnet50", "max_decoder_channels": 512,
    "input_size": 64, "text_prefix": "", "lambda_fore": 1.0, "lambda_back": 1.0, "lambda_rmap": 4.0,
    "lambda_reg": 1.0, "pairing": "diagonal", "back_abs": False, "loss_form": "cosine", "background_prompts": None,
    "mask_space": "image", "reg_space": "g", "relevancy_start_layer": -1, "lr": 3e-4, "momentum": 0.9,
    "weight_decay": 1e-4, "val_box_mode": "paper",
}


def test_old_flat_hparam_checkpoint_is_refused_with_the_conversion_command_which_works(tmp_path):
    module = tiny_module(network={"architecture": "grounding_net", "vgg_width_div": 16, "decoder_channels": 8})
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": OLD_FLAT_HPARAMS,
                "pytorch-lightning_version": lightning.__version__, "wwbl_export": module.export_spec()}, old)
    with pytest.raises(ValueError, match=r"python -m wwbl.migrate_checkpoint OLD.ckpt NEW.ckpt"):
        WWbLModule.load_from_checkpoint(old)

    migrate_main([str(old), str(tmp_path / "new.ckpt")])
    loaded = WWbLModule.load_from_checkpoint(tmp_path / "new.ckpt")
    # the ignored WSG ``backbone`` hyper-parameter is dropped: the old WSG g was always VGG16
    assert loaded.hparams.network == {"architecture": "grounding_net", "input_norm": "reference",
                                      "vgg_width_div": 16, "decoder_channels": 8}
    assert all(k not in loaded.hparams for k in ("input_norm", "vgg_width_div", "decoder_channels", "backbone"))
    assert loaded.hparams.lr == 3e-4 and loaded.hparams.input_size == 64
    x, text = torch.rand(2, 3, 64, 64), torch.randn(2, module.clip.embed_dim)
    module.net.eval()
    with torch.no_grad():
        assert torch.equal(loaded.net.eval()(x, text), module.net(x, text))


def test_migration_of_a_wsol_checkpoints_hparams():
    old = {**OLD_FLAT_HPARAMS, "task": "wsol", "backbone": "resnet50", "input_norm": "imagenet",
           "vgg_width_div": 1, "max_decoder_channels": 256}
    new = migrate_hparams(old)
    assert new["network"] == {"architecture": "wsol_unet", "backbone": "resnet50", "input_norm": "imagenet",
                              "max_decoder_channels": 256, "vgg_width_div": 1}
    assert list(new)[:2] == ["task", "network"] and set(new) == set(old) - {
        "input_norm", "vgg_width_div", "decoder_channels", "backbone", "max_decoder_channels"} | {"network"}
    assert migrate_hparams(new) == new
