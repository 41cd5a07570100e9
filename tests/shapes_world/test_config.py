"""The time-budgeted learning-rate schedule by hand."""
from __future__ import annotations

import pytest

from shapes_world.config import budgeted_lr


def test_budgeted_lr_hand_computed():
    assert budgeted_lr(0, 0.0, 1.0, 10, 110, 0.0) == pytest.approx(0.1)
    assert budgeted_lr(60, 0.0, 1.0, 10, 110, 0.0) == pytest.approx(0.5)  # half way: cos(pi/2)
    assert budgeted_lr(20, 5.0, 1.0, 10, 110, 10.0) == pytest.approx(0.5)  # time runs out first
    assert budgeted_lr(200, 0.0, 1.0, 10, 110, 0.0) == pytest.approx(0.0)
