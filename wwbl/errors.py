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
