"""Plain ``nn.Module`` networks g: :class:`GroundingNet` (WSG/WWbL) and :class:`WSOLUNet` (WSOL).

:func:`build_network` rebuilds either one from its architecture name and JSON-able kwargs
(``net.config()``), which is how checkpoints, exports and ``WWbLModule(network=...)`` describe
a network; a key the chosen architecture does not take is an error, never ignored.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from wwbl.networks.backbones import available_backbones, build_tapped_backbone
from wwbl.networks.grounding_net import GroundingNet
from wwbl.networks.wsol_unet import WSOLUNet

ARCHITECTURES: dict[str, type[nn.Module]] = {"grounding_net": GroundingNet, "wsol_unet": WSOLUNet}


def architecture_name(net: nn.Module) -> str:
    """The registry name of ``net``'s class."""
    for name, cls in ARCHITECTURES.items():
        if type(net) is cls:
            return name
    raise ValueError(f"{type(net).__name__} is not a registered network g architecture")


def network_options(architecture: str) -> list[str]:
    """The keyword arguments ``architecture``'s constructor takes (``pretrained_backbone`` included)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{architecture}'; available: {sorted(ARCHITECTURES)}")
    return [name for name in inspect.signature(ARCHITECTURES[architecture]).parameters]


def build_network(architecture: str, pretrained_backbone: bool = False, **kwargs: Any) -> nn.Module:
    """Build network g by name ("grounding_net" or "wsol_unet") from its config kwargs."""
    options = network_options(architecture)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for network architecture '{architecture}'; "
                         f"it takes {sorted(set(options) - {'pretrained_backbone'})}")
    return ARCHITECTURES[architecture](pretrained_backbone=pretrained_backbone, **kwargs)


__all__ = [
    "ARCHITECTURES", "GroundingNet", "WSOLUNet", "architecture_name", "available_backbones",
    "build_network", "build_tapped_backbone", "network_options",
]
