"""Words for shapes-world scenes: object phrases, image captions (COCO style) and entity-marked
sentences (Flickr30k Entities style, ``[/EN#<id>/<type> phrase]``).

All choices come from a ``numpy.random.Generator`` seeded per scene, so the text is as
deterministic as the pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shapes_world.generator import SPLIT_CODES, Scene, SceneObject

COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTIONS_PER_IMAGE = 5  # as COCO and Flickr30k


def with_article(phrase: str) -> str:
    """'an orange star', 'a red circle'."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def object_phrase(obj: SceneObject, size_word: bool = False) -> str:
    """'red circle' or, with a size word for small/large objects, 'large red circle'."""
    if size_word and obj.size_word != "medium":
        return f"{obj.size_word} {obj.phrase}"
    return obj.phrase


def join_list(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _subset(rng: np.random.Generator, count: int, full: bool) -> list[int]:
    """All indices (shuffled) or a random non-empty subset, biased toward mentioning most objects."""
    order = [int(i) for i in rng.permutation(count)]
    if full or count <= 1:
        return order
    return order[: int(rng.integers(1, count + 1))]


def format_caption(rng: np.random.Generator, phrases: Sequence[str], scene: Scene, mentions_all: bool) -> str:
    """One of the caption templates around the listed (article-less) phrases."""
    listed = join_list([with_article(p) for p in phrases])
    template = int(rng.integers(4))
    if template == 1:
        return f"{listed} on a {scene.background} background"
    if template == 2:
        return f"a picture of {listed}"
    if template == 3 and mentions_all and len(phrases) < len(COUNT_WORDS):
        noun = "shape" if len(phrases) == 1 else "shapes"
        return f"{COUNT_WORDS[len(phrases)]} {noun}: {listed}"
    if template == 3:
        return f"{listed} and other shapes"
    return listed


def image_caption(rng: np.random.Generator, scene: Scene, full: bool = False) -> str:
    """One COCO-style caption mentioning some (or, with ``full``, all) of the scene's objects."""
    chosen = _subset(rng, len(scene.objects), full)
    sized = rng.random() < 0.3
    phrases = [object_phrase(scene.objects[i], size_word=sized) for i in chosen]
    return format_caption(rng, phrases, scene, len(chosen) == len(scene.objects))


def image_captions(scene: Scene, seed: int) -> list[str]:
    """The scene's ``CAPTIONS_PER_IMAGE`` captions; the first mentions every object."""
    rng = np.random.default_rng((seed, 1000 + SPLIT_CODES[scene.split], scene.index))
    return [image_caption(rng, scene, full=(k == 0)) for k in range(CAPTIONS_PER_IMAGE)]


def entity_id(image_id: int, object_index: int) -> int:
    """Dataset-unique entity ids; ``object_index == -1`` is the background (scene) entity."""
    return image_id * 100 + (99 if object_index < 0 else object_index + 1)


def entity_sentences(scene: Scene, image_id: int, seed: int) -> list[str]:
    """Flickr30k-Entities-style sentences over the *annotated* objects (the first mentions all of
    them), with the background as a box-less ``scene`` entity, tokens separated by spaces."""
    rng = np.random.default_rng((seed, 2000 + SPLIT_CODES[scene.split], scene.index))
    annotated = scene.annotated
    sentences = []
    for k in range(CAPTIONS_PER_IMAGE):
        chosen = _subset(rng, len(annotated), full=(k == 0))
        marked = [f"[/EN#{entity_id(image_id, annotated[i])}/other "
                  f"{with_article(scene.objects[annotated[i]].phrase)}]" for i in chosen]
        sentence = join_list(marked)
        if rng.random() < 0.5:
            sentence += f" on [/EN#{entity_id(image_id, -1)}/scene a {scene.background} background]"
        sentences.append(sentence.replace(",", " ,") + " .")
    return sentences


def crop_caption(obj: SceneObject) -> str:
    """Target text for the BLIP captioner on a crop centred on ``obj``: 'a red circle'."""
    return with_article(obj.phrase)
