"""The LightningModule that trains network g against a frozen CLIP (paper §3, §4).

One class serves both tasks:

* ``task="wsg"``: the text-conditioned :class:`~wwbl.networks.GroundingNet` (COCO / VG phrases);
* ``task="wsol"``: the image-only :class:`~wwbl.networks.WSOLUNet` (class-name text is used by
  the losses only).

g's architecture is one JSON-able argument, ``network`` = ``{"architecture": "grounding_net" |
"wsol_unet", **that architecture's options}``, built by :func:`wwbl.networks.build_network`
(an option the architecture does not take is an error); e.g. ``{"architecture":
"grounding_net", "backbone": "resnet50"}`` grounds on ResNet-50's stride-8 ``layer2``.

Per step: the phrases (with ``text_prefix``) are encoded by CLIP; g predicts M; the Chefer
relevancy map H of (image, phrase) is the detached L_rmap target; the masked images M⊙I and
(1−M)⊙I go through CLIP's image encoder in one batched forward, so gradients reach g through
the frozen CLIP. See :mod:`wwbl.losses` for the loss options.

``mask_space``: "image" (default, the paper's M⊙I) masks the [0, 1] image (masked pixels are
black) and then applies CLIP's normalisation; "reference" reproduces the released code, which
masks the 0.5/0.5-normalised [-1, 1] image (masked pixels mid-grey) and feeds it — and the
relevancy pass — to CLIP without CLIP's normalisation.

CLIP is rebuilt from the ``clip_*`` hyper-parameters and is deliberately not a registered
sub-module: checkpoints hold g's weights, the optimiser state, the JSON-able hyper-parameters
and (under ``"wwbl_export"``) what :mod:`wwbl.export` needs to rebuild g.

Mixed precision (``--trainer.precision bf16-mixed`` / ``16-mixed``; the default is ``32-true``, fp32
throughout). Lightning runs ``training_step`` and ``validation_step`` under ``torch.autocast``; inside it:

* g's convolutions run in the autocast dtype (they are most of the step's work); its map M is taken
  to fp32 before anything reads it (`_g`).
* The frozen CLIP runs under autocast everywhere: the text tower, the masked-image forward through
  which the gradients reach g, and the relevancy forward/backward. The relevancy's Chefer products
  ∂s/∂A ⊙ A, the head mean, the rollout R ← R + Ā R and the min-max normalisation are fp32
  (:func:`wwbl.clip.relevancy.relevancy_maps`): accumulated in bf16 over ViT-B-32's 12 blocks
  (``relevancy_start_layer=0``) the rollout made the map error 1.7× larger.
* The losses run with autocast off, on fp32 maps and embeddings: the ``all_pairs`` cosine and the
  WSOL prompt logits are matmuls, which autocast would otherwise take to bf16.

Measured against fp32 (benchmarks/mixed_precision_agreement.py, numbers in benchmarks/RESULTS.md):
on the trained shapes-world CLIP and g, the relevancy target under bf16 autocast moves by ~4e-4 on
average (≤ 2e-2 at one pixel) on its [0, 1] scale; the loss terms agree to ≤ 2e-3 relative (L_back,
a cosine near 0, to ≤ 1e-3 absolute); the gradient into g keeps a cosine of 0.9994 with the fp32 one
(0.997 for random tiny models). With g in fp32 and only CLIP in bf16 that cosine is 1 − 4e-6 and
L_rmap moves ~7× less than from g's own bf16 convolutions, so an fp32 relevancy pass (an extra fp32
ViT forward and backward per step) would buy nothing measurable. ``16-mixed`` adds Lightning's
GradScaler on the loss; nothing here casts parameters, so the scaler sees g's fp32 gradients.
``clip_precision`` (fp16/bf16 CLIP weights) is a separate knob for the weights' dtype.

``channels_last`` keeps g's convolution weights and inputs in ``torch.channels_last`` (faster
convolutions on tensor cores); ``compile`` wraps g's forward with ``torch.compile``
(``nn.Module.compile``: in place, so the state dict keeps its ``net.*`` names and a checkpoint
loads into an uncompiled g). Neither enters the export: they are ways of running g, not g.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from wwbl.box_rules import BoxRule
from wwbl.clip import ClipSpec, minmax_normalize
from wwbl.defaults import POINTING_TIES
from wwbl.errors import ModelFileError
from wwbl.export import CHECKPOINT_KEY, network_state_from_checkpoint, read_checkpoint
from wwbl.images import resize_heatmap
from wwbl.losses import (
    FORMS,
    PAIRINGS,
    LossWeights,
    background_loss,
    foreground_loss,
    regularization_loss,
    relevancy_loss,
    wsol_background_loss,
    wsol_foreground_loss,
)
from wwbl.metrics import BoxAccuracy, PointingAccuracy
from wwbl.model_files import state_mismatch
from wwbl.networks import architecture_name, build_network

TASKS = ("wsg", "wsol")
# The network architecture each task trains.
TASK_ARCHITECTURES = {"wsg": "grounding_net", "wsol": "wsol_unet"}
# Hyper-parameters of checkpoints written before ``network`` existed (one flat argument each).
LEGACY_NETWORK_HPARAMS = ("input_norm", "vgg_width_div", "decoder_channels", "backbone", "max_decoder_channels")
MASK_SPACES = ("image", "reference")
REG_SPACES = ("g", "clip")
# "constant": the released code's (its step_size / gamma are parsed, never used); "cosine": the SGD
# step decays to 0 over the run's optimiser steps (per step, as ``trainer.estimated_stepping_batches``).
LR_SCHEDULES = ("constant", "cosine")
# The released WSOL code's CUB prompt list minus the target (index 0, "bird").
CUB_BACKGROUND_PROMPTS = ["sky", "lake", "sea", "tree", "leaves", "axes", "person"]


class WWbLModule(L.LightningModule):
    """Trains network g (WSG or WSOL) with L_fore, L_back, L_rmap and L_reg.

    Args:
        task: "wsg" (GroundingNet, text-conditioned) or "wsol" (WSOLUNet, image only).
        network: g's architecture, ``{"architecture": ..., **options}`` (see the module
            docstring); it must be the task's ("grounding_net" for WSG, "wsol_unet" for WSOL).
            Default: the task's architecture with its defaults (the paper's VGG16 g).
            GroundingNet's ``text_dim`` is CLIP's embedding width and may be left out.
        clip_model, clip_pretrained, clip_checkpoint, clip_precision: the frozen CLIP
            (:class:`wwbl.clip.FrozenCLIP` arguments; ``clip_pretrained="random"`` for untrained
            weights, ``None`` only with ``clip_checkpoint``).
        pretrained_backbone: ImageNet initialisation of g's encoder (paper: yes).
        backbone_weights: a local file with those ImageNet weights (default: the torch hub / HF cache).
        input_size: side of the square training images (recorded in the export).
        text_prefix: prepended to every phrase before CLIP (released code: "image of ").
        lambda_fore, lambda_back, lambda_rmap, lambda_reg: loss weights (paper 1, 1, 4, 1).
        pairing: "diagonal" (paper) or "all_pairs" (released code) for L_fore / L_back.
        back_abs: |cos| in L_back (released code) instead of cos (paper).
        loss_form: "cosine" (paper, both tasks) or "reference_wsol" (released WSOL code:
            cross-entropy over [target, background prompts] and the background/full ratio).
        background_prompts: the non-target prompts of "reference_wsol".
        mask_space: "image" (paper) or "reference" (released code), see the module docstring.
        reg_space: where L_reg = mean(M) is taken: "g" (default, g's output size) or "clip" (M
            resized to CLIP's input side, bilinear with align_corners=True — the released code's
            mean of the 224 mask).
        relevancy_start_layer: Chefer relevancy start block (-1 = last only, as the reference).
        lr, momentum, weight_decay: SGD (paper: 3e-4, 0.9, 1e-4; released code lr 1.2e-3).
        lr_schedule: "constant" (default, the released code's) or "cosine" (decay to 0 over the run).
        val_box_mode: box rule for the validation box accuracy, "paper" or "reference" (the
            released code's): for WSG ``wsg_boxes`` (NMS 0.3 vs. the union rule), for WSOL
            ``wsol_box`` (the largest contour at 0.1 of the map vs. of the cubehelix gray).
        val_pointing_ties: the validation pointing game's point of a flat-topped map, "centre"
            (default) or "first" (the released code's; see :func:`wwbl.metrics.argmax_points`), as
            ``--pointing-ties`` of the evaluation.
        val_box_threshold, val_box_nms_iou: that rule's threshold and (WSG) NMS IoU; None = the
            rule's defaults (the same :class:`~wwbl.box_rules.BoxRule` fields as ``--box-threshold``
            and ``--box-nms-iou`` of ``infer.py`` and the evaluation).
        channels_last: g's convolution weights and inputs in ``torch.channels_last`` memory format
            (default False; the same maps, faster convolutions on GPUs with tensor cores).
        compile: ``torch.compile`` g's forward (default False; the frozen CLIP is not compiled).
    """

    def __init__(
        self,
        task: str = "wsg",
        network: dict[str, Any] | None = None,
        clip_model: str = "ViT-B-32",
        clip_pretrained: str | None = "openai",
        clip_checkpoint: str | None = None,
        clip_precision: str = "fp32",
        pretrained_backbone: bool = True,
        backbone_weights: str | None = None,
        input_size: int = 299,
        text_prefix: str = "",
        lambda_fore: float = 1.0,
        lambda_back: float = 1.0,
        lambda_rmap: float = 4.0,
        lambda_reg: float = 1.0,
        pairing: str = "diagonal",
        back_abs: bool = False,
        loss_form: str = "cosine",
        background_prompts: list[str] | None = None,
        mask_space: str = "image",
        reg_space: str = "g",
        relevancy_start_layer: int = -1,
        lr: float = 3e-4,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        lr_schedule: str = "constant",
        val_box_mode: str = "paper",
        val_box_threshold: float | None = None,
        val_box_nms_iou: float | None = None,
        val_pointing_ties: str = POINTING_TIES[0],
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        _check_choice("task", task, TASKS)
        _check_choice("pairing", pairing, PAIRINGS)
        _check_choice("loss_form", loss_form, FORMS)
        _check_choice("mask_space", mask_space, MASK_SPACES)
        _check_choice("reg_space", reg_space, REG_SPACES)
        _check_choice("val_pointing_ties", val_pointing_ties, POINTING_TIES)
        _check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        if loss_form == "reference_wsol" and not background_prompts:
            raise ValueError("loss_form='reference_wsol' needs background_prompts (e.g. the CUB list "
                             f"{CUB_BACKGROUND_PROMPTS})")
        self.save_hyperparameters()
        self.val_box_rule  # noqa: B018 — checks the box-rule settings now, not at the first validation
        clip = ClipSpec(clip_model, clip_pretrained, clip_checkpoint, clip_precision).build()
        # Kept outside the registered sub-modules so it never enters the state dict or the optimiser.
        self.__dict__["clip"] = clip
        self.net: nn.Module = build_network(**network_config(task, network, clip.embed_dim),
                                            pretrained_backbone=pretrained_backbone, backbone_weights=backbone_weights)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()  # in place: the state dict keeps its ``net.*`` names
        self.weights = LossWeights(lambda_fore, lambda_back, lambda_rmap, lambda_reg)
        self._metrics: nn.ModuleDict | None = None

    # -- device handling for the unregistered CLIP ------------------------------------------------
    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> WWbLModule:
        super()._apply(fn, *args, **kwargs)
        if "clip" in self.__dict__:
            self.clip._apply(fn, *args, **kwargs)
        return self

    # -- forward ---------------------------------------------------------------------------------
    def phrases_for_clip(self, phrases: Sequence[str]) -> list[str]:
        """The phrases as CLIP sees them (with ``text_prefix``)."""
        return [self.hparams.text_prefix + p for p in phrases]

    def forward(self, images01: torch.Tensor, text_emb: torch.Tensor | None = None) -> torch.Tensor:
        """g's map B×H×W in [0, 1]; ``text_emb`` (B×D) is required for the WSG task."""
        if self.hparams.task == "wsg" and text_emb is None:
            raise ValueError("the WSG network needs one text embedding per image")
        return self._g(images01, text_emb)

    def _g(self, images01: torch.Tensor, text_emb: torch.Tensor | None,
           image_index: torch.Tensor | None = None) -> torch.Tensor:
        """g's maps as fp32 (whatever autocast computed them in), its input in g's memory format."""
        if self.hparams.channels_last:
            images01 = images01.contiguous(memory_format=torch.channels_last)
        return self.net(images01, text_emb, image_index).float()

    def _clip_inputs(self, images01: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Images at CLIP's size in the space they are masked in, and whether CLIP must normalise them."""
        side = self.clip.image_size
        x = resize_heatmap(images01, (side, side), align_corners=True)  # as the released code
        if self.hparams.mask_space == "reference":
            return x * 2.0 - 1.0, False
        return x, True

    def _encode(self, images: torch.Tensor, normalize: bool) -> torch.Tensor:
        return self.clip.encode_image(images, normalize_input=normalize)

    # -- training --------------------------------------------------------------------------------
    def compute_losses(self, images01: torch.Tensor, phrases: Sequence[str]) -> dict[str, torch.Tensor]:
        """All loss terms and the weighted total (key ``loss``) for one batch."""
        hp = self.hparams
        text = self.clip.encode_text(self.phrases_for_clip(phrases)).to(images01.device)
        mask = self(images01, text if hp.task == "wsg" else None)
        x_clip, normalize = self._clip_inputs(images01)
        target = self.clip.relevancy(x_clip, text, start_layer=hp.relevancy_start_layer, normalize_input=normalize)
        # Training resizes as the released code (align_corners=True).
        m = resize_heatmap(mask, x_clip.shape[-2:], align_corners=True)
        fore_emb, back_emb = self._encode(torch.cat([x_clip * m[:, None], x_clip * (1.0 - m[:, None])]),
                                          normalize).chunk(2)
        if hp.loss_form == "reference_wsol":
            others = self.clip.encode_text(self.phrases_for_clip(hp.background_prompts)).to(text)
            with torch.no_grad():
                full_emb = self._encode(x_clip, normalize)
        # The losses in fp32 under mixed precision too (module docstring): autocast off, fp32 inputs.
        with torch.autocast(mask.device.type, enabled=False):
            terms = {"rmap": relevancy_loss(mask, resize_heatmap(target.to(mask), mask.shape[-2:], align_corners=True)),
                     "reg": regularization_loss(m if hp.reg_space == "clip" else mask)}
            if hp.loss_form == "cosine":
                terms["fore"] = foreground_loss(fore_emb, text, hp.pairing)
                terms["back"] = background_loss(back_emb, text, hp.pairing, absolute=hp.back_abs)
            else:
                terms["fore"] = wsol_foreground_loss(fore_emb, text, others, self.clip.logit_scale)
                terms["back"] = wsol_background_loss(back_emb, full_emb, text, self.clip.logit_scale)
            terms["loss"] = self.weights.total(terms)
        return terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        terms = self.compute_losses(batch["image"], batch["phrase"])
        batch_size = len(batch["phrase"])
        for name in ("fore", "back", "rmap", "reg"):
            self.log(f"train/loss_{name}", terms[name], batch_size=batch_size)
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=batch_size)
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        hp = self.hparams
        sgd = torch.optim.SGD(self.net.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant":
            return sgd
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=steps)
        return {"optimizer": sgd, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    # -- validation: pointing game and box accuracy on a grounding split ---------------------------
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self._metrics is None and self._has_val_data():
            self._metrics = nn.ModuleDict({"pointing_acc": PointingAccuracy(ties=self.hparams.val_pointing_ties),
                                           "box_acc": BoxAccuracy()})

    def _has_val_data(self) -> bool:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return bool(getattr(datamodule, "has_val_data", False))

    def predict_maps(self, images01: torch.Tensor, entity_phrases: Sequence[Sequence[str]],
                     entity_image: Sequence[int]) -> torch.Tensor:
        """E×S×S maps, one per entity: the mean of g's maps over the entity's phrases (as the
        reference for Flickr entities) in image ``entity_image[e]``; WSOL ignores the phrases."""
        device = images01.device
        owner_image = torch.as_tensor(list(entity_image), dtype=torch.long, device=device)
        if self.hparams.task == "wsol":
            return self._g(images01, None, owner_image)
        counts = torch.tensor([len(p) for p in entity_phrases], device=device)
        if len(counts) == 0 or (counts == 0).any():
            raise ValueError("every validation entity needs at least one phrase")
        flat = [p for phrases in entity_phrases for p in phrases]
        text = self.clip.encode_text(self.phrases_for_clip(flat)).to(device)
        owner_entity = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
        maps = self._g(images01, text, owner_image[owner_entity])
        summed = maps.new_zeros(len(counts), *maps.shape[1:]).index_add_(0, owner_entity, maps)
        return summed / counts.view(-1, 1, 1).to(summed)

    def validation_step(self, batch: Sequence[dict[str, Any]], batch_idx: int) -> None:
        if self._metrics is None:
            raise RuntimeError("validation metrics were not set up; does the datamodule define has_val_data?")
        images = torch.stack([item["image"] for item in batch]).to(self.device)
        entity_image = [i for i, item in enumerate(batch) for _ in item["phrases"]]
        maps = self.predict_maps(images, [p for item in batch for p in item["phrases"]], entity_image)
        # Min-max normalised before the box rule, as the evaluation and inference do (wwbl.box_rules).
        heatmaps = [resize_heatmap(m, tuple(batch[i]["size"]), align_corners=False)
                    for m, i in zip(minmax_normalize(maps), entity_image)]
        gt_boxes = [b.to(self.device) for item in batch for b in item["boxes"]]
        rule = self.val_box_rule
        pred_boxes = [rule.detect(h).boxes.to(self.device) for h in heatmaps]
        self._metrics["pointing_acc"].update(heatmaps, gt_boxes)
        self._metrics["box_acc"].update(pred_boxes, gt_boxes)
        for name, metric in self._metrics.items():
            self.log(f"val/{name}", metric, batch_size=len(heatmaps), prog_bar=True)

    @property
    def val_box_rule(self) -> BoxRule:
        """The validation box rule: WSOL's largest contour or the WSG rule, in ``val_box_mode``, at
        ``val_box_threshold`` / ``val_box_nms_iou`` (the same :class:`BoxRule` as inference and the evaluation)."""
        hp = self.hparams
        return BoxRule(rule="wsol" if hp.task == "wsol" else "wsg", mode=hp.val_box_mode,
                       threshold=hp.get("val_box_threshold"), nms_iou=hp.get("val_box_nms_iou"))

    # -- checkpoints -----------------------------------------------------------------------------
    def export_spec(self) -> dict[str, Any]:
        """JSON-able description of g for :mod:`wwbl.export` (architecture, CLIP, prompts)."""
        hp = self.hparams
        return {
            "architecture": architecture_name(self.net),
            "kwargs": self.net.config(),
            "clip": {"model": hp.clip_model, "pretrained": hp.clip_pretrained, "checkpoint": hp.clip_checkpoint},
            "input_size": hp.input_size,
            "text_prefix": hp.text_prefix,
            "task": hp.task,
            "mask_space": hp.mask_space,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.export_spec()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        legacy = sorted(set(checkpoint.get("hyper_parameters", {})) & set(LEGACY_NETWORK_HPARAMS))
        if legacy:
            raise ValueError(f"this checkpoint's g is described by the flat hyper-parameters {legacy} of an older "
                             "wwbl; convert it with `python -m wwbl.migrate_checkpoint OLD.ckpt NEW.ckpt`")


def check_resume_checkpoint(ckpt_path: str, module: WWbLModule) -> None:
    """Check ``train.py --ckpt_path`` before Lightning resumes from it: a readable WWbLModule checkpoint
    (read with ``weights_only=True``) whose g weights fit ``module``'s network; else `ModelFileError`."""
    ckpt = read_checkpoint(ckpt_path)
    legacy = sorted(set(ckpt.get("hyper_parameters") or {}) & set(LEGACY_NETWORK_HPARAMS))
    if legacy:
        raise ModelFileError(ckpt_path, f"g is described by the flat hyper-parameters {legacy} of an older wwbl; "
                                        "convert it with `python -m wwbl.migrate_checkpoint OLD.ckpt NEW.ckpt`")
    problem = state_mismatch(module.net.state_dict(), network_state_from_checkpoint(ckpt, ckpt_path))
    if problem:
        raise ModelFileError(ckpt_path, f"its g weights do not fit the configured network (model.network): {problem}")


def network_config(task: str, network: dict[str, Any] | None, text_dim: int) -> dict[str, Any]:
    """:func:`~wwbl.networks.build_network` arguments of g for ``task``: ``network`` (default: the
    task's architecture), checked against the task, with CLIP's ``text_dim`` for GroundingNet."""
    expected = TASK_ARCHITECTURES[task]
    config = dict(network) if network is not None else {"architecture": expected}
    if config.get("architecture") != expected:
        raise ValueError(f"task '{task}' trains network architecture '{expected}', but network.architecture is "
                         f"{config.get('architecture')!r}")
    misplaced = sorted({"pretrained_backbone", "backbone_weights"} & set(config))
    if misplaced:
        raise ValueError(f"{misplaced} are model arguments (model.pretrained_backbone, model.backbone_weights), "
                         f"not network options")
    if expected == "grounding_net" and config.setdefault("text_dim", text_dim) != text_dim:
        raise ValueError(f"network.text_dim {config['text_dim']} differs from CLIP's embedding width {text_dim}")
    return config


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got '{value}'")
