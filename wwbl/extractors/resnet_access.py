"""The two halves of an open_clip `ModifiedResNet` image tower: the convolutional trunk and the pool.

Kept apart so that the ResNet-based extractors read open_clip's module names in one place
(`stem`, `layer1`…`layer4`, `attnpool`, stable across open_clip 2.x–3.2).
"""
from __future__ import annotations

from torch import Tensor, nn

from wwbl.clip.vit import UnsupportedCLIPError

_PARTS = ("stem", "layer1", "layer2", "layer3", "layer4", "attnpool")


def check_resnet(visual: nn.Module) -> None:
    """Raises UnsupportedCLIPError unless `visual` is an open_clip ModifiedResNet."""
    missing = [name for name in _PARTS if not hasattr(visual, name)]
    if missing:
        raise UnsupportedCLIPError(
            f"{type(visual).__name__} is not a CLIP ModifiedResNet (missing {missing}); this method needs a "
            "ResNet CLIP such as RN50."
        )


def last_stage_features(visual: nn.Module, prepared: Tensor) -> Tensor:
    """Output of `layer4` (the input to the attention pool), B×C×h×w."""
    x = visual.stem(prepared.to(visual.conv1.weight.dtype))
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))


def attention_pool(visual: nn.Module, features: Tensor) -> Tensor:
    """The unnormalised image embedding B×D from layer4 features."""
    return visual.attnpool(features)
