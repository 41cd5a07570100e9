"""Image transforms for training g: PIL image in, 3×S×S float tensor in [0, 1] out.

Normalisation is not done here (networks normalise inside, see docs/ARCHITECTURE.md).

* WSG (released code): ``Resize((S, S))`` (aspect ratio not kept, no crop) → horizontal flip.
* WSOL (paper §4): ``Resize((256, 256))`` → ``RandomCrop(224)`` → horizontal flip; evaluation
  resizes straight to 224×224.

Flipping does not rewrite "left"/"right" in the text, as in the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms as T

ImageTransform = Callable[[Image.Image], torch.Tensor]


def grounding_train_transform(image_size: int, hflip_p: float = 0.5) -> ImageTransform:
    """Square resize to ``image_size`` and a random horizontal flip with probability ``hflip_p``."""
    return T.Compose([
        T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.RandomHorizontalFlip(hflip_p),
        T.ToTensor(),
    ])


def wsol_train_transform(image_size: int = 224, resize_size: int = 256, hflip_p: float = 0.5) -> ImageTransform:
    """Square resize to ``resize_size``, random ``image_size`` crop, random horizontal flip."""
    if resize_size < image_size:
        raise ValueError(f"resize_size ({resize_size}) must be >= image_size ({image_size})")
    return T.Compose([
        T.Resize((resize_size, resize_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.RandomCrop(image_size),
        T.RandomHorizontalFlip(hflip_p),
        T.ToTensor(),
    ])


def eval_transform(image_size: int) -> ImageTransform:
    """Square resize to ``image_size``; boxes stay in the original frame (maps are resized back)."""
    return T.Compose([
        T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.ToTensor(),
    ])
