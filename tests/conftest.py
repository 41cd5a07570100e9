"""Shared test set-up: offline hubs, small thread pools, tiny random models."""
import os

# No test may reach a model hub: fail fast instead of retrying against the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models are overhead-bound: one thread is faster than two contending ones.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_clip():
    """A tiny random ViT CLIP (64 px input, patch 8, width 32, 2 blocks)."""
    from wwbl.clip import FrozenCLIP

    torch.manual_seed(0)
    return FrozenCLIP("wwbl-tiny-vit", pretrained="random")


@pytest.fixture(scope="session")
def tiny_rn_clip():
    """A tiny random ModifiedResNet CLIP (128 px input)."""
    from wwbl.clip import FrozenCLIP

    torch.manual_seed(0)
    return FrozenCLIP("wwbl-tiny-rn", pretrained="random")
