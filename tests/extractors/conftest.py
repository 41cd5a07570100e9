"""Fixtures shared by the extractor tests."""
import pytest
import torch

from wwbl.clip import FrozenCLIP


@pytest.fixture(scope="module")
def rn_clip_live_residuals() -> FrozenCLIP:
    """The tiny ResNet CLIP with random batch-norm affines (for Grad-CAM and the common interface).

    open_clip zero-initialises every bn3 weight, which makes a random ResNet's residual branches
    vanish; random affine parameters give Grad-CAM something to see.
    """
    torch.manual_seed(0)
    clip = FrozenCLIP("wwbl-tiny-rn", pretrained="random")
    with torch.no_grad():
        for module in clip.model.visual.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return clip
