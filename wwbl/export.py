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
import sys
import typing
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from wwbl.errors import MissingResourceError, ModelFileError
from wwbl.model_files import (
    json_type,
    load_checked,
    read_json_object,
    read_safetensors,
    read_torch_file,
    require_file,
    require_folder,
    type_problem,
)
from wwbl.networks import ARCHITECTURES, architecture_name, build_network, network_options

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
    """Read and validate ``config.json`` of an exported g (`ModelFileError` naming the file and the entry).

    ``clip.checkpoint`` comes back resolved (`resolve_clip_checkpoint`), usable from any working directory.
    """
    require_folder(path_dir, "an exported network g", f"{CONFIG_FILE} and {WEIGHTS_FILE}")
    config_path = os.path.join(path_dir, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise MissingResourceError(f"exported network config '{config_path}' not found; "
                                   f"export a model with `python -m wwbl.export --ckpt ... --out {path_dir}`")
    config = read_json_object(config_path)
    if config.get("format") != FORMAT:
        raise ModelFileError(config_path, f"is not a wwbl network g export (format {json.dumps(config.get('format'))}, "
                                          f"not \"{FORMAT}\")")
    version = config.get("format_version", 0)  # exports from before format_version existed count as format 1
    if "format_version" in config and (type(version) is not int or not 1 <= version <= FORMAT_VERSION):
        newer = type(version) is int and version > FORMAT_VERSION
        raise ModelFileError(config_path, f"has format_version {json.dumps(version)}; this wwbl reads the integers "
                                          f"1 to {FORMAT_VERSION}" + ("; a newer wwbl wrote it" if newer else ""))
    check_description(config_path, config)
    config["clip"] = dict(config["clip"])
    config["clip"]["checkpoint"] = resolve_clip_checkpoint(config["clip"].get("checkpoint"), path_dir, version)
    return config


# The types of the entries beside ``kwargs`` that loading uses (other entries are notes and pass unchecked).
CLIP_ENTRIES: dict[str, Any] = {"model": str, "pretrained": str | None, "checkpoint": str | None, "precision": str}
SETTING_ENTRIES: dict[str, Any] = {"input_size": int, "input_norm": str, "text_prefix": str, "task": str,
                                   "mask_space": str}


def check_description(path: str, spec: dict[str, Any]) -> None:
    """Check the entries that rebuild g (``architecture``, ``kwargs``, ``clip`` and the recorded settings) of
    an export config or a checkpoint's ``wwbl_export`` entry read from ``path``."""
    for key in ("architecture", "kwargs", "clip"):
        if key not in spec:
            raise ModelFileError(path, f"lacks the required entry '{key}'")
    architecture = spec["architecture"]
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise ModelFileError(path, f"architecture {json.dumps(architecture)[:60]} is unknown; "
                                   f"known: {sorted(ARCHITECTURES)}")
    for key, kind in (("kwargs", dict), ("clip", dict)):
        if not isinstance(spec[key], kind):
            raise ModelFileError(path, f"'{key}' must be an object, not {json_type(spec[key])}")
    problem = _kwargs_problem(architecture, spec["kwargs"]) or _entries_problem("clip.", spec["clip"], CLIP_ENTRIES) \
        or _entries_problem("", spec, SETTING_ENTRIES)
    if problem:
        raise ModelFileError(path, problem)
    if not spec["clip"].get("model"):
        raise ModelFileError(path, "lacks 'clip.model', the open_clip architecture g was trained with")
    if isinstance(spec.get("input_size"), int) and spec["input_size"] < 1:
        raise ModelFileError(path, f"input_size must be positive, not {spec['input_size']}")


def _kwargs_problem(architecture: str, kwargs: dict[str, Any]) -> str:
    """Why ``kwargs`` cannot build ``architecture`` (an unknown option, a wrong type, null), or ""."""
    hints = typing.get_type_hints(ARCHITECTURES[architecture].__init__)
    options = set(network_options(architecture)) - {"pretrained_backbone"}
    unknown = sorted(set(kwargs) - options)
    if unknown:
        return f"kwargs {unknown} are not options of '{architecture}' (it takes {sorted(options)})"
    return _entries_problem("kwargs.", kwargs, hints)


def _entries_problem(prefix: str, entries: dict[str, Any], types_: dict[str, Any]) -> str:
    for key, value in entries.items():
        problem = type_problem(prefix + key, value, types_[key]) if key in types_ else ""
        if problem:
            return problem
    return ""


def load_grounding_net(path_dir: str, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported g in eval mode; returns ``(network, config)``."""
    config = read_export_config(path_dir)
    weights_path = os.path.join(path_dir, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        raise MissingResourceError(f"exported network weights '{weights_path}' not found")
    net = _build(os.path.join(path_dir, CONFIG_FILE), config)
    load_checked(net, read_safetensors(weights_path), weights_path, f"the '{config['architecture']}' that "
                 f"{CONFIG_FILE} describes")
    return net.to(map_location).eval(), config


def _build(path: str, spec: dict[str, Any]) -> nn.Module:
    """g from a checked description; values of the right type that still make no network (a zero width) are named."""
    try:
        return build_network(spec["architecture"], pretrained_backbone=False, **spec["kwargs"])
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as error:
        raise ModelFileError(path, f"its kwargs build no '{spec['architecture']}' ({error})") from error


def network_state_from_checkpoint(ckpt: dict[str, Any], source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """The ``net.*`` entries of a WWbLModule checkpoint's state dict, prefix removed (``source`` names it in errors)."""
    state = ckpt.get("state_dict", {})
    if not isinstance(state, dict):
        raise ModelFileError(source, f"'state_dict' must be a mapping of names to tensors, not {type(state).__name__}")
    net_state = {k[len(NET_PREFIX):]: v for k, v in state.items() if k.startswith(NET_PREFIX)}
    if not net_state:
        raise ModelFileError(source, "holds no 'net.*' weights; is it a wwbl WWbLModule checkpoint?")
    return net_state


def read_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """A Lightning ``.ckpt`` as a dict, read with ``weights_only=True`` (no unpickling of objects)."""
    require_file(ckpt_path, "checkpoint")
    ckpt = read_torch_file(ckpt_path)
    if not isinstance(ckpt, dict):
        raise ModelFileError(ckpt_path, f"holds a {type(ckpt).__name__}, not a Lightning checkpoint (a dict)")
    return ckpt


def export_from_lightning_checkpoint(ckpt_path: str, out_dir: str, embed_clip: bool = False) -> str:
    """Convert a WWbLModule ``.ckpt`` into the safetensors + JSON export (no unpickling).

    A relative CLIP checkpoint in the ``.ckpt`` is taken relative to the working directory.
    """
    ckpt = read_checkpoint(ckpt_path)
    spec = ckpt.get(CHECKPOINT_KEY)
    if not isinstance(spec, dict):
        raise ModelFileError(ckpt_path, f"lacks the '{CHECKPOINT_KEY}' entry; "
                                        f"it was not written by wwbl.lit_module.WWbLModule")
    check_description(ckpt_path, spec)
    net = _build(ckpt_path, spec)
    load_checked(net, network_state_from_checkpoint(ckpt, ckpt_path), ckpt_path,
                 f"the '{spec['architecture']}' its '{CHECKPOINT_KEY}' entry describes")
    extra = {k: v for k, v in spec.items() if k not in ("architecture", "kwargs", "clip")}
    return export_grounding_net(net, out_dir, spec["clip"], extra, embed_clip=embed_clip)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export network g from a Lightning checkpoint "
                                                 "to safetensors + config.json.")
    parser.add_argument("--ckpt", required=True, help="path to a WWbLModule .ckpt file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--embed-clip", action="store_true",
                        help="copy local CLIP weights into the export (default: refer to them by a relative path)")
    args = parser.parse_args(argv)
    try:
        out = export_from_lightning_checkpoint(args.ckpt, args.out, embed_clip=args.embed_clip)
    except (ValueError, FileNotFoundError) as error:  # a damaged or foreign checkpoint, a missing file
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported network g to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
