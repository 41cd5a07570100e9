"""Network g (WWbL's grounding network) behind the extractor interface, registered as "g".

g sees the [0, 1] image at its own square input size (it normalises internally, e.g. the
reference's mean = std = 0.5) and CLIP's text embedding of the prefixed phrase; its B×H×W output
is treated like any other extractor's map (min-max per map, resized to the original image).
An exported g (`wwbl.export`: model.safetensors + config.json) carries its input size, CLIP spec
and text prefix, so `NetworkGExtractor.from_export(path)` needs nothing else. Through huggingface_hub's
`ModelHubMixin`, `from_pretrained` reads the same folders and Hub repositories holding them, and
`save_pretrained` / `push_to_hub` write that layout (with a local CLIP embedded, so the folder stands alone).
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelHubMixin, snapshot_download
from torch import Tensor, nn

from wwbl.clip import ClipSpec, FrozenCLIP
from wwbl.export import export_grounding_net, load_grounding_net
from wwbl.extractors.base import HeatmapExtractor, register_extractor

# Entries of an export's config.json that the export writes itself; the rest travel as `extra`.
_EXPORT_OWN_KEYS = ("format", "format_version", "architecture", "kwargs", "input_norm", "clip")


@register_extractor("g")
class NetworkGExtractor(HeatmapExtractor, ModelHubMixin, library_name="wwbl", tags=["phrase-grounding"]):
    """Heatmaps from a trained network g.

    Args:
        clip: the CLIP whose text embeddings g was trained with; None builds it from the export's
            `clip` spec (only with an export path).
        network: an `nn.Module` with `forward(images01, text_emb) -> B×H×W`, or an export directory.
            A forward that also takes `image_index` (GroundingNet, WSOLUNet) encodes each image once
            for all its phrases.
        input_size: g's square input side; taken from the export when omitted.
        text_prefix: prepended to phrases; taken from the export when omitted (default "").
    """

    absolute_maps = True  # g ends in a sigmoid: its raw heat is a per-pixel probability

    def __init__(
        self,
        clip: FrozenCLIP | None,
        network: nn.Module | str | Path,
        input_size: int | None = None,
        text_prefix: str | None = None,
        images_per_batch: int = 16,
    ):
        config: dict[str, Any] = {}
        if isinstance(network, (str, Path)):
            network, config = load_grounding_net(str(network))
        if clip is None:
            if "clip" not in config:
                raise ValueError("NetworkGExtractor needs a FrozenCLIP unless network is an export directory")
            clip = ClipSpec.from_dict(config["clip"]).build()
        input_size = input_size or config.get("input_size")
        if input_size is None:
            raise ValueError("network g's input_size is unknown: pass input_size=… (the export records it)")
        prefix = text_prefix if text_prefix is not None else config.get("text_prefix", "")
        super().__init__(clip, text_prefix=prefix, input_size=input_size, images_per_batch=images_per_batch)
        _check_text_dim(network, clip)
        self.network = network.to(clip.device).eval()
        self.config = config
        self._shares_encoder = _accepts_image_index(network)

    @classmethod
    def from_export(cls, path_dir: str | Path, clip: FrozenCLIP | None = None, **options: Any) -> NetworkGExtractor:
        """Load an exported g (see `wwbl.export`); CLIP is rebuilt from the export unless given."""
        return cls(clip, network=path_dir, **options)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         **options: Any) -> NetworkGExtractor:
        """`from_pretrained`: a local export folder as it is, else a Hub repository holding one (downloaded).

        The mixin passes config.json's entries named like `__init__` arguments along with the caller's;
        `clip` arrives as the export's spec (a dict) unless the caller gave a FrozenCLIP.
        """
        folder = model_id if os.path.isdir(model_id) else snapshot_download(
            model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token)
        clip = options.pop("clip", None)
        return cls.from_export(folder, clip=clip if isinstance(clip, FrozenCLIP) else None, **options)

    def _save_pretrained(self, save_directory: Path) -> None:
        """`save_pretrained`: the export layout of `wwbl.export`, a local CLIP checkpoint copied in."""
        extra = {k: v for k, v in self.config.items() if k not in _EXPORT_OWN_KEYS}
        extra.update(input_size=self.input_size, text_prefix=self.text_prefix)
        export_grounding_net(self.network, str(save_directory), self.clip.spec, extra, embed_clip=True)

    def prepare_images(self, square01: Tensor) -> Tensor:
        return square01  # g normalises its input itself

    @torch.no_grad()
    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        if self._shares_encoder:  # g's image encoder runs once per image, not once per phrase
            return self.network(images, text_emb, image_index)
        return self.network(images[image_index], text_emb)


def _accepts_image_index(network: nn.Module) -> bool:
    """Whether `network.forward` takes `image_index` (GroundingNet, WSOLUNet) to share its image encoding."""
    try:
        return "image_index" in inspect.signature(network.forward).parameters
    except (TypeError, ValueError):  # a forward without an inspectable signature
        return False


def _check_text_dim(network: nn.Module, clip: FrozenCLIP) -> None:
    text_dim = getattr(network, "text_dim", None)
    if text_dim is not None and text_dim != clip.embed_dim:
        raise ValueError(f"network g expects {text_dim}-d text embeddings but CLIP {clip.spec['model']} gives "
                         f"{clip.embed_dim}-d; use the CLIP g was trained with")
