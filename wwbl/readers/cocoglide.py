"""CocoGlide (TruFor, CVPR 2023) for the poster's mask study (REFERENCE.md E§8).

Files (``root`` or ``root/CocoGlide``): ``fake/glide_inpainting_val2017_<cocoid>_up.png`` (the 512
GLIDE-inpainted images), ``mask/<category>_<cocoid>_mask.png`` (binary masks of the inpainted
region), ``real/<category>_<cocoid>.png`` (unused here). The category in the mask file name is
the text GLIDE was given; it becomes the sample's ``label`` (underscores read as spaces). Only
fake images have a localisation target. Masks are binarised at > 127.

Malformed input: a mask whose name is not ``<category>_<cocoid>_mask.png`` (or names no category), or
without its fake image, is skipped at load; an unreadable mask (empty, truncated, not an image) is
skipped by the evaluation when it is read; a COCO id given by two masks is kept once. Each is one line
of the run's skipped list.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from wwbl.errors import AnnotationError, MissingResourceError
from wwbl.readers.common import DatasetIndex, MaskSample, collect, first_existing, require_dir

HINT = "Get CocoGlide.zip from the TruFor README (grip-unina/TruFor) and unzip it"
_MASK = re.compile(r"^(?P<label>.+)_(?P<cocoid>\d+)_mask\.png$")


def load_cocoglide(root: str | Path, split: str = "test") -> DatasetIndex[MaskSample]:
    """The 512 fake CocoGlide images with their masks and category labels."""
    root = first_existing([Path(root) / "CocoGlide", Path(root)], "CocoGlide directory", HINT)
    fake_dir = require_dir(root / "fake", "CocoGlide fake images", HINT)
    mask_dir = require_dir(root / "mask", "CocoGlide masks", HINT)
    skipped: list[str] = []

    def build(name: str, mask_path: Path) -> list[MaskSample]:
        match = _MASK.match(name)
        if not match:
            raise AnnotationError(f"mask file name '{name}' is not '<category>_<cocoid>_mask.png'")
        cocoid, label = match["cocoid"], match["label"].replace("_", " ").strip()
        if not label:
            raise AnnotationError(f"mask file name '{name}' names no category")
        image = fake_dir / f"glide_inpainting_val2017_{cocoid}_up.png"
        if not image.is_file():
            raise MissingResourceError(f"fake image for mask '{name}' not found: '{image}'")
        return [MaskSample(image_id=cocoid, image_path=image, mask_path=mask_path,
                           label=label)]

    masks = sorted(mask_dir.glob("*.png"))
    samples = collect(((m.name, m) for m in masks), build, skipped)
    return DatasetIndex(name="cocoglide", split=split, samples=samples, skipped=skipped)


def load_mask(path: Path, size_hw: tuple[int, int] | None = None) -> Tensor:
    """A boolean ``H×W`` mask (> 127 of the first/gray channel); resized (nearest) to ``size_hw`` if given."""
    try:
        with Image.open(path) as img:
            gray = img.convert("L")
            if size_hw is not None and gray.size != (size_hw[1], size_hw[0]):
                gray = gray.resize((size_hw[1], size_hw[0]), Image.NEAREST)
            return torch.from_numpy(np.asarray(gray) > 127)
    except FileNotFoundError as err:
        raise MissingResourceError(f"mask not found: '{path}'") from err
    except OSError as err:
        raise AnnotationError(f"cannot read mask '{path}': {err}") from err
