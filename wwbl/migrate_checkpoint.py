"""Convert a WWbLModule ``.ckpt`` written before g's ``network`` argument existed.

Such checkpoints describe g by flat hyper-parameters (``input_norm``, ``vgg_width_div``,
``decoder_channels`` for WSG; ``backbone``, ``input_norm``, ``max_decoder_channels``,
``vgg_width_div`` for WSOL; the other task's ones were ignored). The converted checkpoint holds
``network = {"architecture": ..., **those options}`` instead, so ``WWbLModule.load_from_checkpoint``
and ``train.py --ckpt_path`` accept it; weights, optimiser state and everything else are copied
unchanged. (``python -m wwbl.export`` reads either kind: it uses the ``wwbl_export`` entry.)

Usage: ``python -m wwbl.migrate_checkpoint old.ckpt new.ckpt``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from wwbl.errors import ModelFileError
from wwbl.export import read_checkpoint
from wwbl.lit_module import LEGACY_NETWORK_HPARAMS, TASK_ARCHITECTURES

# The flat hyper-parameters the old module passed to each task's network (the WSG g was always
# VGG16: its ``backbone`` hyper-parameter was ignored, so it is not carried over).
_USED_BY_TASK = {
    "wsg": ("input_norm", "vgg_width_div", "decoder_channels"),
    "wsol": ("backbone", "input_norm", "max_decoder_channels", "vgg_width_div"),
}


def migrate_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` with the flat network hyper-parameters replaced by ``network``; unchanged if
    it has none."""
    if not set(hparams) & set(LEGACY_NETWORK_HPARAMS):
        return dict(hparams)
    task = hparams.get("task", "wsg")
    network = {"architecture": TASK_ARCHITECTURES[task]}
    network.update({k: hparams[k] for k in _USED_BY_TASK[task] if k in hparams})
    migrated: dict[str, Any] = {}
    for key, value in hparams.items():
        if key not in LEGACY_NETWORK_HPARAMS:
            migrated[key] = value
        if key == "task":
            migrated["network"] = network
    migrated.setdefault("network", network)
    return migrated


def migrate_checkpoint(src: str, dst: str) -> str:
    """Write ``src`` with migrated hyper-parameters to ``dst`` (no unpickling); returns ``dst``."""
    ckpt = read_checkpoint(src)
    hparams = ckpt.get("hyper_parameters", {})
    if not isinstance(hparams, dict):
        raise ModelFileError(src, f"'hyper_parameters' must be a mapping, not {type(hparams).__name__}")
    ckpt["hyper_parameters"] = migrate_hparams(hparams)
    torch.save(ckpt, dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert a WWbLModule checkpoint with flat network "
                                                 "hyper-parameters to the network-config form.")
    parser.add_argument("src", help="the old .ckpt file")
    parser.add_argument("dst", help="where to write the converted .ckpt")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {migrate_checkpoint(args.src, args.dst)}")
    except (ValueError, FileNotFoundError) as error:  # a damaged or foreign checkpoint, a missing file
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
