"""The scene generator: determinism, boxes and masks against pixels, hard scenes, held-out combinations."""
from __future__ import annotations

import numpy as np
import pytest

from shapes_world.captions import image_captions
from shapes_world.generator import COLOURS, ShapesWorld, WorldConfig, draw_shapes


def test_scenes_are_deterministic_by_seed_split_and_index(world):
    a, b = world.scene("train", 7), ShapesWorld().scene("train", 7)
    assert np.array_equal(a.image, b.image)
    assert [(o.phrase, o.box) for o in a.objects] == [(o.phrase, o.box) for o in b.objects]
    assert not np.array_equal(a.image, world.scene("train", 8).image)
    assert not np.array_equal(a.image, world.scene("val", 7).image)
    assert not np.array_equal(a.image, ShapesWorld(WorldConfig(seed=1)).scene("train", 7).image)


def test_boxes_and_masks_agree_with_pixels(world):
    for index in range(40):
        scene = world.scene("test", index)
        masks = np.stack([o.mask for o in scene.objects])
        assert masks.sum(axis=0).max() <= 1, "visible masks must not overlap"
        for k, obj in enumerate(scene.objects):
            ys, xs = np.nonzero(obj.mask)
            assert obj.box == (xs.min(), ys.min(), xs.max(), ys.max())
            # the visible pixels carry the object's colour (jitter 14 + noise 6 per channel)
            mean = scene.image[obj.mask].astype(float).mean(axis=0)
            assert np.abs(mean - np.array(COLOURS[obj.colour])).max() < 60, (index, obj.phrase, mean)
            # occlusion: at least min_visible of the object's own full shape stays visible
            shape_id = np.array([world.shapes.index(obj.shape)])
            full = draw_shapes(shape_id, np.array([obj.centre]), np.array([obj.radius]), 64)[0]
            assert obj.mask.sum() >= world.config.min_visible * full.sum() - 1e-6
            assert not (obj.mask & ~full).any()


def test_scenes_are_hard_shared_attributes_varied_counts_and_sizes(world):
    shared, total, counts, radii, overlapping = 0, 0, set(), [], 0
    for index in range(200):
        objects = world.scene("train", index).objects
        combos = [(o.colour, o.shape) for o in objects]
        assert len(set(combos)) == len(combos), "colour-shape combinations are unique within a scene"
        counts.add(len(objects))
        radii += [o.radius for o in objects]
        for k, (c, s) in enumerate(combos):
            total += 1
            shared += any((c == c2 or s == s2) for j, (c2, s2) in enumerate(combos) if j != k)
        full = draw_shapes(np.array([world.shapes.index(o.shape) for o in objects]),
                           np.array([o.centre for o in objects]), np.array([o.radius for o in objects]), 64)
        overlapping += bool((full.sum(axis=0) > 1).any())
    assert shared / total > 0.5, "a target must often share its colour or shape with a distractor"
    assert counts >= {2, 3, 4, 5, 6}
    assert max(radii) / min(radii) > 3
    assert overlapping > 20, "objects must sometimes touch or overlap"


def test_open_world_phrases_never_in_g_training_captions(world):
    heldout = world.heldout_combos
    assert len(heldout) == world.config.num_heldout_combos
    seen = set(world.combos_for("train"))
    assert {c for c, _ in seen} == set(world.colours) and {s for _, s in seen} == set(world.shapes)
    phrases = [f"{c} {s}" for c, s in heldout]
    for index in range(150):
        scene = world.scene("train", index)
        text = " | ".join(image_captions(scene, world.config.seed))
        assert not any(p in text for p in phrases), text
    for index in range(50):
        scene = world.scene("openworld", index)
        assert scene.annotated, "every open-world scene has a held-out object to ground"
        assert all((scene.objects[k].colour, scene.objects[k].shape) in heldout for k in scene.annotated)


def test_unknown_split_and_bad_config_are_rejected(world):
    with pytest.raises(ValueError, match="unknown split"):
        world.scene("nope", 0)
    with pytest.raises(ValueError, match="min_objects"):
        WorldConfig(min_objects=0)
