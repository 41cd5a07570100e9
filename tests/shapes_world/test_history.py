"""g's validation history: Lightning's CSV log read back and plotted."""
from __future__ import annotations

import csv

import pytest

from shapes_world.history import plot_history, read_val_history


def test_val_history_reads_lightning_csv_and_plots(tmp_path):
    path = tmp_path / "metrics.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train/loss", "val/box_acc", "val/pointing_acc"])
        writer.writerow([0, 19, 1.5, "", ""])  # a training-loss row: no validation
        writer.writerow([0, 124, "", 0.25, 0.5])
        writer.writerow([1, 249, "", 0.375, 0.625])
    history = read_val_history(path)
    assert history == [{"epoch": 0, "step": 124, "pointing": 0.5, "bbox_acc": 0.25},
                       {"epoch": 1, "step": 249, "pointing": 0.625, "bbox_acc": 0.375}]
    png = tmp_path / "curve.png"
    plot_history(history, png, chosen_epoch=1, teacher={"pointing": 0.6, "bbox_acc": 0.3})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="CSV log"):
        read_val_history(tmp_path / "absent.csv")
