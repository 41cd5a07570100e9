"""The LightningModule: the loss wiring against a naive recomputation, validation in the original frame,
option checks and g's network config."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.tiny_module import tiny_module
from wwbl.box_rules import BoxRule
from wwbl.lit_module import WWbLModule
from wwbl.metrics import BoxAccuracy, PointingAccuracy


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


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="pairing"):
        tiny_module(pairing="diag")
    with pytest.raises(ValueError, match="background_prompts"):
        tiny_module(loss_form="reference_wsol")
    with pytest.raises(ValueError, match="mask_space"):
        tiny_module(mask_space="lab")
    with pytest.raises(ValueError, match="lr_schedule"):
        tiny_module(lr_schedule="step")


def test_constant_schedule_is_plain_sgd():
    optimizer = tiny_module(lr=0.1).configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == 0.1


def test_cosine_schedule_halves_the_step_midway_and_ends_at_zero():
    module = tiny_module(lr=0.1, lr_schedule="cosine")
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])
    expected = [0.05 * (1 + math.cos(math.pi * t / 10)) for t in range(11)]  # 0.1 · (1 + cos(πt/T)) / 2
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[5] == pytest.approx(0.05) and seen[10] == pytest.approx(0.0, abs=1e-12)


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


class _FixedMask(torch.nn.Module):
    """Stands in for g: the same hand-made 2×3 mask for every image."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, images, text=None, image_index=None):
        return self.mask.expand(len(images), *self.mask.shape)


def _upsample_align_corners(values, size_hw):
    """Naive separable linear interpolation with corner pixels aligned (numpy, float64)."""
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


def test_validation_box_rule_takes_the_same_settings_as_the_clis():
    module = tiny_module(val_box_threshold=0.8, val_box_nms_iou=0.1)
    assert module.val_box_rule == BoxRule(rule="wsg", mode="paper", threshold=0.8, nms_iou=0.1)
    assert tiny_module().val_box_rule == BoxRule(rule="wsg", mode="paper")
    with pytest.raises(ValueError, match="NMS"):  # the WSOL rule has no NMS: refused when the module is built
        tiny_module(task="wsol", network={"architecture": "wsol_unet", "backbone": "vgg16"}, val_box_nms_iou=0.3)


@pytest.mark.parametrize("ties, expected", [("centre", 1.0), ("first", 0.0)])
def test_validation_pointing_follows_val_pointing_ties(monkeypatch, ties, expected):
    module = tiny_module(val_pointing_ties=ties)
    monkeypatch.setattr(module, "_has_val_data", lambda: True)
    module.setup("fit")
    # A flat top over rows/cols 8..40 of a 64×64 map; the GT box holds its centre but not its first pixel.
    maps = torch.zeros(1, 64, 64)
    maps[0, 8:41, 8:41] = 1.0
    batch = [{"image": torch.rand(3, 64, 64), "size": (64, 64), "phrases": [["a"]],
              "boxes": [torch.tensor([[16.0, 16.0, 40.0, 40.0]])]}]
    monkeypatch.setattr(module, "predict_maps", lambda images, phrases, owners: maps)
    module.validation_step(batch, 0)
    assert module._metrics["pointing_acc"].compute() == expected


def test_unknown_val_pointing_ties_is_refused():
    with pytest.raises(ValueError, match="val_pointing_ties"):
        tiny_module(val_pointing_ties="middle")
