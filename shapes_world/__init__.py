"""The shapes world: a procedural offline benchmark where every stage of WWbL runs for real.

- :mod:`shapes_world.generator` — deterministic scenes (``ShapesWorld(WorldConfig()).scene(split, i)``)
- :mod:`shapes_world.captions` — object phrases, COCO-style captions, Flickr30k-Entities sentences
- :mod:`shapes_world.writers` — the datasets in COCO 2014 / Flickr30k Entities layouts, sample scenes
- :mod:`shapes_world.train_clip` — stage (a): a small open_clip ViT, contrastive pretraining
- :mod:`shapes_world.train_blip` — stage (b): a small BLIP captioner for region crops
- stage (c), network g: ``python train.py --config configs/shapes/g.yaml``
"""
from shapes_world.generator import ShapesWorld, WorldConfig

__all__ = ["ShapesWorld", "WorldConfig"]
