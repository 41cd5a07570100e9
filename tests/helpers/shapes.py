"""A small shapes world (32 px, at most four objects) for fast tests."""
from __future__ import annotations

from shapes_world.generator import WorldConfig


SMALL = WorldConfig(seed=3, image_size=32, min_radius=3.0, max_radius=8.0, max_objects=4)
