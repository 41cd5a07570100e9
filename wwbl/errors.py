"""Exceptions shared by the whole package.

Every error names what is wrong and, for missing resources, how to supply them.
"""
from __future__ import annotations


class MissingResourceError(FileNotFoundError):
    """A file, dataset or set of pretrained weights is not available locally.

    The message says what is missing and how to provide it (download elsewhere, place a file,
    or pass a local path).
    """


class ImageLoadError(ValueError):
    """An image file cannot be read or decoded."""


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names the file and the offending entry."""


class ModelFileError(ValueError):
    """A model file (weights, its config, a checkpoint) is damaged or does not fit what it describes.

    The message is one line, ``"<file>: <problem>"``; ``path`` and ``problem`` hold the two parts.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # third-party messages span lines; this one must not
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable (worker processes) despite two arguments
        return type(self), (self.path, self.problem)
