"""The training and evaluation transforms: output sizes and bad settings."""
import pytest
import torch
from PIL import Image

from wwbl.data.transforms import eval_transform, grounding_train_transform, wsol_train_transform


def test_transforms_sizes():
    img = Image.new("RGB", (50, 30), (255, 0, 0))
    assert grounding_train_transform(20)(img).shape == (3, 20, 20)
    assert wsol_train_transform(16, 20)(img).shape == (3, 16, 16)
    out = eval_transform(12)(img)
    assert out.shape == (3, 12, 12) and torch.allclose(out[0], torch.ones(12, 12))
    with pytest.raises(ValueError):
        wsol_train_transform(32, 16)
