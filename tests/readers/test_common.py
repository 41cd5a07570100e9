"""Shared reader plumbing: split pickles are read without running their code."""
import os
import pickle

import pytest

from wwbl.errors import AnnotationError
from wwbl.readers.common import read_pickle_or_json


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_split_pickle_is_read_safely(tmp_path):
    path = tmp_path / "data_splits.pickle"
    with open(path, "wb") as f:
        pickle.dump({"train": [_Evil()]}, f)
    with pytest.raises(AnnotationError, match="refusing to load"):
        read_pickle_or_json(str(path), "split pickle")
    with open(path, "wb") as f:
        pickle.dump({"train": [1, 2], "test": ("3",)}, f)
    assert read_pickle_or_json(str(path), "split pickle") == {"train": [1, 2], "test": ("3",)}
