"""The one atomic text writer: the old file or the new one, never a part, and no temporary file left."""
import os
from pathlib import Path

import pytest

from wwbl.atomic_files import write_text_atomic


def test_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "results.json"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second – ü")
    assert target.read_text(encoding="utf-8") == "second – ü"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


@pytest.mark.parametrize("broken", ["fsync", "replace"])
def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch, broken: str) -> None:
    target = tmp_path / "skipped.json"
    write_text_atomic(target, "old")

    def fail(*args):
        raise OSError(f"{broken} failed")

    monkeypatch.setattr(os, broken, fail)
    with pytest.raises(OSError, match=f"{broken} failed"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["skipped.json"]
