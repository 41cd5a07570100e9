"""A CSV metrics log that a resumed run continues instead of deleting.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it opens a version folder that is not
empty, so a run resumed into its own folder (``train.py --ckpt_path …/version_N/…``) would lose
the history of everything before the kill. :class:`ContinuingCSVLogger` keeps it: the rows of the
steps before the resumed run's first logged step stay, the rows from that step on (the part the
killed run did after its last checkpoint, which the resumed run does again) are replaced by the
new ones, so the file reads like one uninterrupted run's. It is also written out at every
checkpoint, and once more with the row of the checkpoint's step (Lightning logs a step after its
``on_train_batch_end`` checkpoint), so a ``kill -9`` loses no row of the steps a resumed run does
not redo (Lightning otherwise writes every 100 steps).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from wwbl.atomic_files import write_text_atomic


class _ContinuingWriter(ExperimentWriter):
    """Opens an existing ``metrics.csv`` without deleting it; trims it at the first new step."""

    def __init__(self, log_dir: str) -> None:
        self._trimmed = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Continuing the folder is the point: nothing is deleted, so nothing to warn about."""

    def save(self) -> None:
        if self.metrics and not self._trimmed:
            self._trim_from(min(int(row["step"]) for row in self.metrics))
            self._trimmed = True
        super().save()

    def _trim_from(self, first_new_step: int) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if not row.get("step") or int(float(row["step"])) < first_new_step]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)
        write_text_atomic(path, text.getvalue())  # a kill now leaves the old file whole
        self.metrics_keys = sorted(header)  # the base class appends under this header (or widens it)


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger`` whose version folder, if it exists, is continued (module docstring)."""

    @classmethod
    def like(cls, logger: CSVLogger) -> ContinuingCSVLogger:
        """The same logger: folder, name, version (unset: the next free one), prefix, flush interval."""
        return cls(logger.save_dir, name=logger.name, version=logger._version, prefix=logger._prefix,
                   flush_logs_every_n_steps=logger._flush_logs_every_n_steps)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_next_row = False

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """The rows up to a checkpoint are on disk when it is; the next row follows at once."""
        self.save()
        self._write_next_row = True

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        if self._write_next_row:
            self.save()
            self._write_next_row = False

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
