"""CocoGlide: images, phrases and masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.helpers.images import flat_image_file
from wwbl.readers import load_dataset, load_mask


def test_cocoglide(tmp_path: Path) -> None:
    root = tmp_path / "CocoGlide"
    flat_image_file(root / "fake" / "glide_inpainting_val2017_42_up.png", 8, 6)
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:6] = 255
    (root / "mask").mkdir()
    Image.fromarray(mask).save(root / "mask" / "fire hydrant_42_mask.png")
    Image.fromarray(mask).save(root / "mask" / "cat_99_mask.png")  # no fake image → skipped
    index = load_dataset("cocoglide", tmp_path)
    assert [(s.image_id, s.label) for s in index.samples] == [("42", "fire hydrant")]
    assert len(index.skipped) == 1 and "99" in index.skipped[0]
    loaded = load_mask(index.samples[0].mask_path)
    assert loaded.dtype == torch.bool and int(loaded.sum()) == 8 and bool(loaded[1, 2])
