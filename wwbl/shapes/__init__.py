"""The shapes world: a procedural offline benchmark where every stage of WWbL runs for real.

- :mod:`wwbl.shapes.generator` — deterministic scenes (``ShapesWorld(WorldConfig()).scene(split, i)``)
- :mod:`wwbl.shapes.captions` — object phrases, COCO-style captions, Flickr30k-Entities sentences
- :mod:`wwbl.shapes.writers` — the datasets in COCO 2014 / Flickr30k Entities layouts, sample scenes
- :mod:`wwbl.shapes.train_clip` — stage (a): a small open_clip ViT, contrastive pretraining
- :mod:`wwbl.shapes.train_blip` — stage (b): a small BLIP captioner for region crops
- stage (c), network g: ``python train.py --config configs/shapes/g.yaml``
"""
from wwbl.shapes.generator import ShapesWorld, WorldConfig

__all__ = ["ShapesWorld", "WorldConfig"]
