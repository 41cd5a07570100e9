"""Shared test set-up: offline hubs, small thread pools, tiny random models."""
import os

# No test may reach a model hub: fail fast instead of retrying against the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import infer as infer_script  # noqa: E402  (the entry point; stdlib-only at import)
from wwbl.clip import FrozenCLIP  # noqa: E402

# Tiny models are overhead-bound: one thread is faster than two contending ones.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_clip():
    """A tiny random ViT CLIP (64 px input, patch 8, width 32, 2 blocks)."""
    torch.manual_seed(0)
    return FrozenCLIP("wwbl-tiny-vit", pretrained="random")


@pytest.fixture(scope="session")
def tiny_rn_clip():
    """A tiny random ModifiedResNet CLIP (128 px input)."""
    torch.manual_seed(0)
    return FrozenCLIP("wwbl-tiny-rn", pretrained="random")


@pytest.fixture(scope="module")
def rn_clip_input_sensitive() -> FrozenCLIP:
    """The tiny ResNet CLIP made to depend on its input (for the ResNet internals and extractors).

    open_clip's random ResNet barely depends on its input (zero-initialised bn3, shrinking default
    conv init): every embedding has cosine ~1 with every other. Variance-preserving convs and
    random batch-norm affines make the network, and these tests, non-trivial.
    """
    torch.manual_seed(0)
    clip = FrozenCLIP("wwbl-tiny-rn", pretrained="random")
    with torch.no_grad():
        for module in clip.model.visual.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.0)
                module.bias.uniform_(-0.1, 0.1)
    return clip


@pytest.fixture(scope="session")
def infer():
    """The ``infer.py`` entry point as a module (its ``main(argv)``, ``parse_args`` …); the repository
    root is on the test path (pyproject's ``pythonpath``)."""
    return infer_script
