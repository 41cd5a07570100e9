"""Export network g as ``model.safetensors`` + ``config.json`` and load it back without Lightning.

Loading never unpickles: weights come from safetensors and the description from JSON. A
Lightning checkpoint is converted with ``torch.load(weights_only=True)``, which only admits
tensors and primitive containers.

``config.json`` holds::

    {"format": "wwbl-g", "format_version": 1,
     "architecture": "grounding_net" | "wsol_unet", "kwargs": {...},
     "input_size": 299, "input_norm": "reference",
     "clip": {"model": ..., "pretrained": ..., "checkpoint": ...},
     "text_prefix": "", ...extra}

A local CLIP ``checkpoint`` is recorded relative to the export folder (format 2), or embedded as
``clip/`` inside it (``--embed-clip``), so an export loads from any working directory; format-1
exports recorded it relative to the working directory and are still read (see `resolve_clip_checkpoint`).

Usage: ``python -m wwbl.export --ckpt run/last.ckpt --out exported_g/ [--embed-clip]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from wwbl.errors import AnnotationError, MissingResourceError
from wwbl.networks import architecture_name, build_network

FORMAT = "wwbl-g"
# 2: a relative CLIP checkpoint is relative to the export folder (1: to the working directory).
FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
EMBEDDED_CLIP = "clip"  # the folder inside an export that holds embedded CLIP weights
NET_PREFIX = "net."
# Checkpoint entry (JSON-able dict) in which WWbLModule records how to rebuild and export g.
CHECKPOINT_KEY = "wwbl_export"


def export_grounding_net(model: nn.Module, path_dir: str, clip_spec: dict[str, Any],
                         extra: dict[str, Any] | None = None, embed_clip: bool = False) -> str:
    """Write ``model`` (a GroundingNet or WSOLUNet) to ``path_dir``; returns the directory.

    A local CLIP checkpoint in ``clip_spec`` (a path valid from the working directory) is recorded
    relative to ``path_dir``, or with ``embed_clip`` copied into ``path_dir/clip``.
    """
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture_name(model),
        "kwargs": model.config(),
        "input_norm": model.config()["input_norm"],
        "clip": dict(clip_spec),
    }
    for key, value in (extra or {}).items():
        if key in config:
            raise ValueError(f"extra key '{key}' would overwrite a reserved config entry")
        config[key] = value
    json.dumps(config)  # fail before writing anything if a value is not JSON-able
    os.makedirs(path_dir, exist_ok=True)
    if config["clip"].get("checkpoint"):
        config["clip"]["checkpoint"] = _record_clip_checkpoint(config["clip"]["checkpoint"], path_dir, embed_clip)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(path_dir, WEIGHTS_FILE), metadata={"format": FORMAT})
    with open(os.path.join(path_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    return path_dir


def _record_clip_checkpoint(checkpoint: str, path_dir: str, embed: bool) -> str:
    """How the export names its CLIP weights: a path relative to ``path_dir`` (after copying them in when ``embed``)."""
    source = os.path.abspath(checkpoint)
    if embed:
        if not os.path.exists(source):
            raise MissingResourceError(f"CLIP checkpoint '{checkpoint}' not found, so it cannot be embedded")
        name = EMBEDDED_CLIP if os.path.isdir(source) else f"{EMBEDDED_CLIP}/{os.path.basename(source)}"
        target = os.path.join(os.path.abspath(path_dir), name)
        if target != source:  # re-saving an export into its own folder leaves its embedded CLIP as it is
            if os.path.isdir(source):
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(source, target)
        return name
    try:
        return os.path.relpath(source, os.path.abspath(path_dir)).replace(os.sep, "/")
    except ValueError:  # another drive (Windows): no relative path exists
        return source


def resolve_clip_checkpoint(checkpoint: str | None, path_dir: str, format_version: int) -> str | None:
    """The export's CLIP checkpoint as a path usable from the working directory.

    Format 2 records it relative to the export folder. Format 1 recorded it relative to the working
    directory of the export; it is taken from there when it exists, else relative to the export.
    """
    if not checkpoint or os.path.isabs(checkpoint):
        return checkpoint
    beside_export = os.path.normpath(os.path.join(os.path.abspath(path_dir), checkpoint))
    if format_version < 2 and (os.path.exists(checkpoint) or not os.path.exists(beside_export)):
        return os.path.abspath(checkpoint)
    return beside_export


def read_export_config(path_dir: str) -> dict[str, Any]:
    """Read and validate ``config.json`` of an exported g.

    ``clip.checkpoint`` comes back resolved (`resolve_clip_checkpoint`), usable from any working directory.
    """
    config_path = os.path.join(path_dir, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise MissingResourceError(f"exported network config '{config_path}' not found; "
                                   f"export a model with `python -m wwbl.export --ckpt ... --out {path_dir}`")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"'{config_path}' is not valid JSON: {e}") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise AnnotationError(f"'{config_path}' is not a wwbl network g export (format != '{FORMAT}')")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise AnnotationError(f"'{config_path}' has format_version {config['format_version']}; "
                              f"this wwbl reads up to {FORMAT_VERSION}")
    for key in ("architecture", "kwargs", "clip"):
        if key not in config:
            raise AnnotationError(f"'{config_path}' lacks the required entry '{key}'")
    config["clip"] = dict(config["clip"])
    config["clip"]["checkpoint"] = resolve_clip_checkpoint(config["clip"].get("checkpoint"), path_dir,
                                                           config.get("format_version", 0))
    return config


def load_grounding_net(path_dir: str, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported g in eval mode; returns ``(network, config)``."""
    config = read_export_config(path_dir)
    weights_path = os.path.join(path_dir, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        raise MissingResourceError(f"exported network weights '{weights_path}' not found")
    net = build_network(config["architecture"], pretrained_backbone=False, **config["kwargs"])
    device = str(map_location) if isinstance(map_location, torch.device) else map_location
    net.load_state_dict(load_file(weights_path, device=device))
    return net.to(map_location).eval(), config


def network_state_from_checkpoint(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The ``net.*`` entries of a WWbLModule checkpoint's state dict, prefix removed."""
    state = ckpt.get("state_dict", {})
    net_state = {k[len(NET_PREFIX):]: v for k, v in state.items() if k.startswith(NET_PREFIX)}
    if not net_state:
        raise AnnotationError("the checkpoint holds no 'net.*' weights; is it a wwbl WWbLModule checkpoint?")
    return net_state


def export_from_lightning_checkpoint(ckpt_path: str, out_dir: str, embed_clip: bool = False) -> str:
    """Convert a WWbLModule ``.ckpt`` into the safetensors + JSON export (no unpickling).

    A relative CLIP checkpoint in the ``.ckpt`` is taken relative to the working directory.
    """
    if not os.path.isfile(ckpt_path):
        raise MissingResourceError(f"checkpoint '{ckpt_path}' not found")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    spec = ckpt.get(CHECKPOINT_KEY)
    if not isinstance(spec, dict):
        raise AnnotationError(f"'{ckpt_path}' lacks the '{CHECKPOINT_KEY}' entry; "
                              f"it was not written by wwbl.lit_module.WWbLModule")
    net = build_network(spec["architecture"], pretrained_backbone=False, **spec["kwargs"])
    net.load_state_dict(network_state_from_checkpoint(ckpt))
    extra = {k: v for k, v in spec.items() if k not in ("architecture", "kwargs", "clip")}
    return export_grounding_net(net, out_dir, spec["clip"], extra, embed_clip=embed_clip)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export network g from a Lightning checkpoint "
                                                 "to safetensors + config.json.")
    parser.add_argument("--ckpt", required=True, help="path to a WWbLModule .ckpt file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--embed-clip", action="store_true",
                        help="copy local CLIP weights into the export (default: refer to them by a relative path)")
    args = parser.parse_args(argv)
    out = export_from_lightning_checkpoint(args.ckpt, args.out, embed_clip=args.embed_clip)
    print(f"exported network g to {out}")


if __name__ == "__main__":
    main()
