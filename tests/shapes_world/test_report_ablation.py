"""Seed aggregation of the ablation."""
from __future__ import annotations

import math

import pytest

from shapes_world.report_ablation import mean_std


def test_mean_std_is_the_sample_standard_deviation():
    result = mean_std([0.1, 0.2, 0.6])
    mean = 0.3
    std = math.sqrt(((0.1 - mean) ** 2 + (0.2 - mean) ** 2 + (0.6 - mean) ** 2) / 2)
    assert result["mean"] == pytest.approx(mean) and result["std"] == pytest.approx(std) and result["n"] == 3
    assert mean_std([0.4]) == {"mean": pytest.approx(0.4), "std": 0.0, "n": 1}
