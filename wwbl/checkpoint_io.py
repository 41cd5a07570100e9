"""Checkpoint files that a kill cannot leave half-written.

Lightning's default local write goes through an fsspec transaction whose temporary file lives in
the system temp folder; when that is another filesystem than the run folder (a tmpfs ``/tmp``, a
network or scratch disk for runs) the final move is a copy, and a kill during the copy leaves a
truncated ``last.ckpt``; nothing is fsync'ed either. :class:`AtomicCheckpointIO` serialises the
checkpoint to a temporary file beside its target (``wwbl.atomic_files``), fsyncs it and renames
it over the target (``os.replace``, atomic on POSIX and Windows), then fsyncs the folder: a reader sees the old file
or the new one, never a part. A temporary file left by a kill is overwritten by the next save of
that file. ``train.py`` installs it unless ``trainer.plugins`` names another CheckpointIO.

:class:`StepCheckpoint` is the every-N-steps ``last.ckpt`` of ``train.py --step_checkpoint``.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from wwbl.atomic_files import write_atomic


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a same-folder temporary file, fsync and rename."""
    write_atomic(path, lambda f: torch.save(obj, f))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic local writes (module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        if "://" in str(path):  # remote filesystems keep Lightning's own transactional upload
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, path)


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` every N training steps, except at an epoch's last batch.

    Lightning (2.6) does not resume a checkpoint written at the last batch of an epoch, before
    the epoch's validation, the way an uninterrupted run goes on: the resumed run skips that
    epoch's validation (and with it the best-checkpoint choice), and its fit-loop counters come
    out so that the logged steps of the next resume lag by one. The epoch-end checkpoint
    written after validation a moment later takes that save's place; a kill in between loses at
    most the interval since the previous step save.
    """

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, *args, **kwargs)
