"""g's training record: validation metrics per epoch, read from Lightning's CSV log, and a plot.

    python -m shapes_world.history --run runs/shapes_g/lightning_logs/version_0 \\
        --ckpt <the exported checkpoint> --export checkpoints/shapes_g --command "python train.py ..."

writes ``<export>/training.json`` (the per-epoch validation history, the chosen checkpoint and how
it was trained), which the shapes report quotes and plots.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from wwbl.defaults import POINTING_TIES

VAL_KEYS = {"val/pointing_acc": "pointing", "val/box_acc": "bbox_acc"}


def read_val_history(metrics_csv: str | Path) -> list[dict[str, Any]]:
    """One row per validation run of a Lightning ``CSVLogger`` file: epoch, step and the val metrics."""
    path = Path(metrics_csv)
    if not path.is_file():
        raise FileNotFoundError(f"no Lightning CSV log at '{path}' (configs/shapes/g.yaml logs with CSVLogger)")
    history: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            values = {name: row.get(key, "") for key, name in VAL_KEYS.items()}
            if all(values.values()):
                history.append({"epoch": int(row["epoch"]), "step": int(row["step"]),
                                **{name: float(v) for name, v in values.items()}})
    return history


def plot_history(history: list[dict[str, Any]], out_png: str | Path, chosen_epoch: int | None = None,
                 teacher: dict[str, float] | None = None) -> None:
    """Val pointing and box accuracy per epoch (in %), the teacher's val figures as dashed lines."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for key, label, colour in (("pointing", "pointing", "tab:blue"), ("bbox_acc", "box accuracy", "tab:orange")):
        ax.plot(epochs, [100 * h[key] for h in history], marker="o", color=colour, label=f"g, val {label}")
        if teacher and key in teacher and not math.isnan(teacher[key]):
            ax.axhline(100 * teacher[key], color=colour, linestyle="--", linewidth=1, label=f"teacher, val {label}")
    if chosen_epoch is not None:
        ax.axvline(chosen_epoch, color="grey", linestyle=":", linewidth=1, label="exported checkpoint")
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


# The val pointing tie rule of checkpoints from before the val_pointing_ties knob: the first maximum.
LEGACY_POINTING_TIES = "first"


def val_history_ties(record: dict[str, Any] | None) -> str:
    """The tie rule a ``training.json`` record's val pointing was scored with (the default without a record)."""
    if record is None:
        return POINTING_TIES[0]
    return record.get("val_pointing_ties", LEGACY_POINTING_TIES)


def record_training(run_dir: str, ckpt: str, export: str, command: str) -> dict[str, Any]:
    """Write ``<export>/training.json`` from a Lightning run folder and the checkpoint that was exported."""
    history = read_val_history(Path(run_dir) / "metrics.csv")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    ties = (state.get("hyper_parameters") or {}).get("val_pointing_ties", LEGACY_POINTING_TIES)
    record = {"command": command, "checkpoint": Path(ckpt).name, "epoch": int(state.get("epoch", -1)),
              "global_step": int(state.get("global_step", -1)), "val_pointing_ties": ties, "val_history": history}
    Path(export, "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m shapes_world.history", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the Lightning run folder holding metrics.csv")
    p.add_argument("--ckpt", required=True, help="the checkpoint that was exported")
    p.add_argument("--export", required=True, help="the export folder (training.json goes there)")
    p.add_argument("--command", required=True, help="the training command, quoted in the report")
    args = p.parse_args(argv)
    record_training(args.run, args.ckpt, args.export, args.command)


if __name__ == "__main__":
    main()
