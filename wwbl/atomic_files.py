"""Files that a kill cannot leave half-written: the one atomic text writer of wwbl.

``write_atomic`` (and ``write_text_atomic`` for text) writes a temporary file beside its target, fsyncs it, renames it over the
target (``os.replace``, atomic on POSIX and Windows) and fsyncs the folder, so a reader sees the old
file or the new one, never a part, also after a power loss. Inference outputs, the evaluation's
``run.json`` / ``results.json`` / ``skipped.json``, the training checkpoints and the trimmed
``metrics.csv`` of a resumed run go through here.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; folders cannot be opened for fsync on every platform."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def partial_path(path: Path) -> Path:
    """The temporary file beside ``path`` that an atomic write of it goes through; a kill can leave
    it behind, and the next write of ``path`` replaces it."""
    return path.with_name(f".{path.name}.partial")


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into `partial_path` in the same folder, fsync and an atomic rename over
    ``path``; an error (not a kill) leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        with open(partial, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with `write_atomic`."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))
