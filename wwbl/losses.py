"""The four WWbL loss terms (paper §3, eqs. 1–4) and their documented variants.

All embeddings are L2-normalised CLIP embeddings, so ``a @ b.T`` is a cosine.

* ``fore`` = 1 − cos(E(M⊙I), z_t) (the paper's −CLIP up to a constant, as the released code).
* ``back`` = cos(E((1−M)⊙I), z_t), or |cos| with ``back_abs=True`` (released code).
* ``rmap`` = mean squared error between M and the relevancy map H.
* ``reg``  = mean(M) (M ≥ 0, so this is the L1 norm divided by the pixel count). The module
  takes it over g's output by default (``reg_space="g"``); ``reg_space="clip"`` takes it over M
  resized to CLIP's input side, as the released code (the mean of the 224 mask).

``pairing="diagonal"`` (paper) uses only the matched pairs (image_i, text_i);
``pairing="all_pairs"`` (released code) averages over all B×B image/text pairs of the batch.

``form="reference_wsol"`` is the released WSOL code's fore/back (commit f237ab4): a
cross-entropy over a prompt list whose entry 0 is the target, and the ratio of the background
logit to the full-image logit of the target prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAIRINGS = ("diagonal", "all_pairs")
FORMS = ("cosine", "reference_wsol")


def _pair_cosines(image_emb: torch.Tensor, text_emb: torch.Tensor, pairing: str) -> torch.Tensor:
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image and text embeddings must both be B×D, got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    if pairing == "diagonal":
        return (image_emb * text_emb).sum(dim=-1)
    if pairing == "all_pairs":
        return image_emb @ text_emb.T
    raise ValueError(f"unknown pairing '{pairing}'; choose one of {PAIRINGS}")


def foreground_loss(fore_emb: torch.Tensor, text_emb: torch.Tensor, pairing: str = "diagonal") -> torch.Tensor:
    """L_fore = mean(1 − cos(E(M⊙I), z_t)) over the chosen pairs."""
    return (1.0 - _pair_cosines(fore_emb, text_emb, pairing)).mean()


def background_loss(back_emb: torch.Tensor, text_emb: torch.Tensor, pairing: str = "diagonal",
                    absolute: bool = False) -> torch.Tensor:
    """L_back = mean(cos(E((1−M)⊙I), z_t)) over the chosen pairs; |cos| if ``absolute``."""
    cos = _pair_cosines(back_emb, text_emb, pairing)
    return (cos.abs() if absolute else cos).mean()


def relevancy_loss(mask: torch.Tensor, relevancy: torch.Tensor) -> torch.Tensor:
    """L_rmap = mean((M − H)²); H is a detached target of the same shape as M."""
    if mask.shape != relevancy.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and relevancy {tuple(relevancy.shape)} differ in shape")
    return F.mse_loss(mask, relevancy.detach())


def regularization_loss(mask: torch.Tensor) -> torch.Tensor:
    """L_reg = mean(M)."""
    return mask.mean()


def prompt_logits(image_emb: torch.Tensor, target_emb: torch.Tensor, other_emb: torch.Tensor,
                  logit_scale: float) -> torch.Tensor:
    """B×(1+K) CLIP logits against [target_i, other prompts]; column 0 is each image's target."""
    target = (image_emb * target_emb).sum(dim=-1, keepdim=True)
    return logit_scale * torch.cat([target, image_emb @ other_emb.T], dim=1)


def wsol_foreground_loss(fore_emb: torch.Tensor, target_emb: torch.Tensor, other_emb: torch.Tensor,
                         logit_scale: float) -> torch.Tensor:
    """Cross-entropy of the masked image's prompt logits with target index 0 (reference WSOL)."""
    logits = prompt_logits(fore_emb, target_emb, other_emb, logit_scale)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def wsol_background_loss(back_emb: torch.Tensor, full_emb: torch.Tensor, target_emb: torch.Tensor,
                         logit_scale: float, eps: float = 1e-8) -> torch.Tensor:
    """mean(logit(back, target) / (logit(full image, target) + eps)) (reference WSOL)."""
    back = logit_scale * (back_emb * target_emb).sum(dim=-1)
    full = logit_scale * (full_emb * target_emb).sum(dim=-1)
    return (back / (full + eps)).mean()


@dataclass(frozen=True)
class LossWeights:
    """λ_fore, λ_back, λ_rmap, λ_reg; defaults are the paper's 1, 1, 4, 1."""

    fore: float = 1.0
    back: float = 1.0
    rmap: float = 4.0
    reg: float = 1.0

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the terms named ``fore``, ``back``, ``rmap``, ``reg``."""
        return (self.fore * terms["fore"] + self.back * terms["back"]
                + self.rmap * terms["rmap"] + self.reg * terms["reg"])
