"""Files that a kill cannot leave half-written: the one atomic text writer of wwbl.

``write_text_atomic`` writes a temporary file beside its target, fsyncs it, renames it over the
target (``os.replace``, atomic on POSIX and Windows) and fsyncs the folder, so a reader sees the old
file or the new one, never a part, also after a power loss. Inference outputs, the evaluation's
``run.json`` / ``results.json`` / ``skipped.json`` and (through ``fsync_folder``) the training
checkpoints go through here.
"""
from __future__ import annotations

import os
from pathlib import Path


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through ``.<name>.partial`` in the same folder, fsync and an
    atomic rename; an error (not a kill) leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
