"""Captions and entity sentences of shapes-world scenes."""
from __future__ import annotations

import re

from shapes_world.captions import entity_sentences, join_list, with_article
from shapes_world.generator import ShapesWorld
from shapes_world.writers import image_id
from tests.helpers.shapes import SMALL


def test_caption_words():
    assert with_article("orange star") == "an orange star"
    assert with_article("red circle") == "a red circle"
    assert join_list(["x", "y", "z"]) == "x, y and z"
    assert join_list(["x"]) == "x"


def test_open_world_sentences_only_name_heldout_objects():
    world = ShapesWorld(SMALL)
    heldout = {f"{c} {s}" for c, s in world.heldout_combos}
    for index in range(10):
        scene = world.scene("openworld", index)
        for sentence in entity_sentences(scene, image_id("openworld", index), SMALL.seed):
            for phrase in re.findall(r"/other an? ([^\]]+)\]", sentence):
                assert phrase in heldout
