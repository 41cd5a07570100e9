"""Migrating checkpoints saved before g's network became one argument."""
import lightning
import pytest
import torch

from tests.helpers.tiny_module import tiny_module
from wwbl.lit_module import WWbLModule
from wwbl.migrate_checkpoint import main as migrate_main, migrate_hparams


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
