"""Which frozen CLIP to build, as data: the one constructor every entry point goes through.

Settings (LightningModule hyper-parameters, evaluation and report settings, `wwbl.load`, the
export's ``"clip"`` section) name a CLIP by the same four fields; `ClipSpec` holds them and
`build` turns them into a `FrozenCLIP`, so the rules of `FrozenCLIP` (QuickGELU for the weights
that need it, random weights only by name) hold for all of them alike.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from wwbl.clip.adapter import FrozenCLIP


@dataclass(frozen=True)
class ClipSpec:
    """The arguments of `FrozenCLIP` that say which CLIP it is (see `FrozenCLIP` for each field)."""

    model: str = "ViT-B-32"
    pretrained: str | None = None
    checkpoint: str | None = None
    precision: str = "fp32"

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> ClipSpec:
        """From a dict such as an export's ``"clip"`` section; absent fields keep their defaults.

        Other keys are ignored (an export's section may carry notes beside the fields).
        """
        return cls(**{f.name: spec[f.name] for f in fields(cls) if f.name in spec})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields; `from_dict` of it gives this spec back."""
        return asdict(self)

    def build(self, device: str | torch.device | None = None) -> FrozenCLIP:
        """The frozen CLIP, moved to `device` when one is given."""
        clip = FrozenCLIP(self.model, pretrained=self.pretrained, checkpoint=self.checkpoint,
                          precision=self.precision)
        return clip if device is None else clip.to(device)
