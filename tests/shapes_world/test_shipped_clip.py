"""The shipped CLIP (checkpoints/shapes_clip: configs/shapes/clip.yaml then clip_continue.yaml), which
meets the stage floors: it loads through the adapter, tells shapes apart in its text tower and names a
present object on scenes it was not evaluated on."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shapes_world.config import load_world_config
from shapes_world.generator import ShapesWorld
from wwbl.clip import FrozenCLIP

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "checkpoints" / "shapes_clip"
pytestmark = pytest.mark.skipif(not (SHIPPED / "open_clip_model.safetensors").is_file(),
                                reason="shipped CLIP absent")


@pytest.fixture(scope="module")
def clip_and_world():
    config, _ = load_world_config(str(REPO / "configs" / "shapes" / "world.yaml"))
    return FrozenCLIP("shapes-vit", None, checkpoint=str(SHIPPED)), ShapesWorld(config)


def test_shipped_clip_text_tower_separates_shapes_of_one_colour(clip_and_world):
    clip, world = clip_and_world
    with torch.no_grad():
        text = F.normalize(clip.encode_text([f"a {c} {s}" for c in world.colours for s in world.shapes]).float(), dim=-1)
    sims = text @ text.T
    colour = torch.arange(len(text)) // len(world.shapes)
    same_colour = (colour[:, None] == colour[None]) & ~torch.eye(len(text), dtype=torch.bool)
    # Measured: mean 0.84 for this CLIP; the CLIP shipped before 2026-12-07 gave 0.998 (it hardly encoded shape).
    assert sims[same_colour].mean() < 0.93


def test_shipped_clip_names_a_present_object_on_unseen_test_scenes(clip_and_world):
    clip, world = clip_and_world
    scenes = [world.scene("test", i) for i in range(120)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in scenes])
    combos = world.all_combos
    with torch.no_grad():
        image_f = F.normalize(clip.encode_image(images).float(), dim=-1)
        phrase_f = F.normalize(clip.encode_text([f"a {c} {s}" for c, s in combos]).float(), dim=-1)
    best = (image_f @ phrase_f.T).argmax(dim=1)
    hits = [combos[int(b)] in {(o.colour, o.shape) for o in s.objects} for b, s in zip(best, scenes)]
    # Measured on these 120 scenes: 76.7 % (84.2 % on clip_eval at training); the CLIP before it 32.5 %.
    assert sum(hits) / len(hits) >= 0.70
