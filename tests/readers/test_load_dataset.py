"""The reader registry by name."""
from __future__ import annotations

import pytest

from wwbl.readers import load_dataset


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("nope", ".")
