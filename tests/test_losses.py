"""The four loss terms against hand-computed cases, in both pairing modes and both L_back forms."""

import math

import pytest
import torch
import torch.nn.functional as F

from wwbl.losses import (
    LossWeights,
    background_loss,
    foreground_loss,
    regularization_loss,
    relevancy_loss,
    wsol_background_loss,
    wsol_foreground_loss,
)

# Unit vectors: f·z = [[1, .6], [0, .8]], b·z = [[0, .8], [-1, -.6]].
F_EMB = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
B_EMB = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
Z_EMB = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def test_foreground_diagonal_and_all_pairs():
    assert foreground_loss(F_EMB, Z_EMB, "diagonal").item() == pytest.approx(((1 - 1) + (1 - 0.8)) / 2)
    assert foreground_loss(F_EMB, Z_EMB, "all_pairs").item() == pytest.approx(1 - (1 + 0.6 + 0 + 0.8) / 4)


def test_background_cos_and_abs_in_both_pairings():
    assert background_loss(B_EMB, Z_EMB, "diagonal").item() == pytest.approx((0 - 0.6) / 2)
    assert background_loss(B_EMB, Z_EMB, "diagonal", absolute=True).item() == pytest.approx(0.6 / 2)
    assert background_loss(B_EMB, Z_EMB, "all_pairs").item() == pytest.approx((0 + 0.8 - 1 - 0.6) / 4)
    assert background_loss(B_EMB, Z_EMB, "all_pairs", absolute=True).item() == pytest.approx((0.8 + 1 + 0.6) / 4)


def test_all_pairs_foreground_equals_batch_mean_text_form():
    torch.manual_seed(0)
    f, z = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    expected = 1 - f.mean(0) @ z.mean(0)  # REFERENCE.md W§4: pulls each image toward the batch-mean text
    assert foreground_loss(f, z, "all_pairs").item() == pytest.approx(expected.item(), abs=1e-6)


def test_relevancy_and_regularisation():
    mask = torch.tensor([[[0.5, 1.0], [0.0, 0.25]]])
    target = torch.tensor([[[0.0, 1.0], [1.0, 0.25]]])
    assert relevancy_loss(mask, target).item() == pytest.approx((0.25 + 0 + 1 + 0) / 4)
    assert regularization_loss(mask).item() == pytest.approx(1.75 / 4)


def test_relevancy_target_gets_no_gradient():
    mask = torch.rand(1, 2, 2, requires_grad=True)
    target = torch.rand(1, 2, 2, requires_grad=True)
    relevancy_loss(mask, target).backward()
    assert mask.grad is not None and target.grad is None


def test_weighted_total_uses_the_paper_defaults():
    terms = {"fore": torch.tensor(1.0), "back": torch.tensor(2.0), "rmap": torch.tensor(3.0), "reg": torch.tensor(4.0)}
    assert LossWeights().total(terms).item() == pytest.approx(1 + 2 + 4 * 3 + 4)
    assert LossWeights(0.25, 0.5, 16, 0.25).total(terms).item() == pytest.approx(0.25 + 1 + 48 + 1)


def test_reference_wsol_foreground_is_prompt_cross_entropy():
    fore = torch.tensor([[1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0]])
    others = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    # logits = [1, 0, 0.6] with scale 1; CE with target 0
    expected = -math.log(math.e / (math.e + 1 + math.exp(0.6)))
    assert wsol_foreground_loss(fore, target, others, 1.0).item() == pytest.approx(expected, abs=1e-6)


def test_reference_wsol_background_is_logit_ratio():
    back = torch.tensor([[0.6, 0.8]])
    full = torch.tensor([[1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0]])
    assert wsol_background_loss(back, full, target, 2.0).item() == pytest.approx(1.2 / 2.0, abs=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="pairing"):
        foreground_loss(F_EMB, Z_EMB, "diag")
    with pytest.raises(ValueError, match="B×D"):
        foreground_loss(F_EMB, Z_EMB[:1])
    with pytest.raises(ValueError, match="shape"):
        relevancy_loss(torch.rand(1, 2, 2), torch.rand(1, 3, 3))
