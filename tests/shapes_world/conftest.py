"""Shapes worlds for the tests: the small one and the shipped one (configs/shapes/world.yaml)."""
from __future__ import annotations

from pathlib import Path

import pytest

from shapes_world.config import load_world_config
from shapes_world.generator import ShapesWorld


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld()


@pytest.fixture(scope="module")
def shipped_world() -> ShapesWorld:
    """The world the shipped models were trained on (configs/shapes/world.yaml)."""
    return ShapesWorld(load_world_config(str(Path(__file__).resolve().parents[2] / "configs/shapes/world.yaml"))[0])
