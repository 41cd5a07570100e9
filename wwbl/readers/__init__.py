"""The ground floor's dataset readers, each in its publisher's layout, and one benchmark entry point by name.

Training data (``wwbl.data``) reads through the same modules (``coco``, ``cub``, ``visual_genome``,
``flickr30k``).

``load_dataset(name, root, split, **options)`` returns a :class:`DatasetIndex`; ``TASK_OF`` says
which evaluation task a dataset serves (``grounding``, ``wsol`` or ``masks``).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

from wwbl.readers.cocoglide import load_cocoglide, load_mask
from wwbl.readers.cub import load_cub
from wwbl.readers.common import DatasetIndex, GroundingSample, MaskSample, WSOLSample
from wwbl.readers.flickr30k import load_flickr30k
from wwbl.readers.referit import load_referit
from wwbl.readers.visual_genome import load_visual_genome
from wwbl.readers.wsol import load_imagenet_val, load_stanford_cars, load_stanford_dogs
from wwbl.readers.zsgnet import ZSG_SPLITS, acc_threshold, load_zsgnet

LOADERS: dict[str, Callable[..., DatasetIndex]] = {
    "flickr30k": load_flickr30k,
    "referit": load_referit,
    "vg": load_visual_genome,
    **{name: partial(load_zsgnet, name) for name in ZSG_SPLITS},
    "cub": load_cub,
    "cars": load_stanford_cars,
    "dogs": load_stanford_dogs,
    "imagenet": load_imagenet_val,
    "cocoglide": load_cocoglide,
}
TASK_OF = {**{name: "grounding" for name in ("flickr30k", "referit", "vg", *ZSG_SPLITS)},
           **{name: "wsol" for name in ("cub", "cars", "dogs", "imagenet")}, "cocoglide": "masks"}


def load_dataset(name: str, root: str | Path, split: str = "test", **options: Any) -> DatasetIndex:
    """Load benchmark ``name`` (a key of ``LOADERS``) from ``root``; options go to its loader."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](root=root, split=split, **options)


__all__ = ["DatasetIndex", "GroundingSample", "LOADERS", "MaskSample", "TASK_OF", "WSOLSample", "ZSG_SPLITS",
           "acc_threshold", "load_dataset", "load_mask"]
