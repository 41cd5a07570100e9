"""MS-COCO captions in COCO's own layout: the one reader of a captions file and its image folder.

    <root>/annotations/captions_<split>.json
    <root>/<split>/COCO_<split>_000000000009.jpg     (or <root>/images/<split>/, the reference's)
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from wwbl.errors import AnnotationError, MissingResourceError
from wwbl.readers.common import require_dir

HINT = "see data/README.md"


def resolve_coco_image_dir(root: str, split: str, image_dir: str | None) -> str:
    """``image_dir`` if given, else ``<root>/<split>`` or ``<root>/images/<split>``."""
    if image_dir is not None:
        return str(require_dir(image_dir, f"COCO {split} image directory", HINT))
    for candidate in (os.path.join(root, split), os.path.join(root, "images", split)):
        if os.path.isdir(candidate):
            return candidate
    raise MissingResourceError(
        f"COCO {split} image directory not found: expected '{os.path.join(root, split)}' or "
        f"'{os.path.join(root, 'images', split)}' ({HINT})"
    )


def parse_coco_captions(data: Any, path: str) -> tuple[dict[int, str], dict[int, list[str]]]:
    """``(image id → file name, image id → captions)`` from a COCO captions JSON."""
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise AnnotationError(f"COCO captions file '{path}' needs the top-level keys 'images' and 'annotations'")
    files: dict[int, str] = {}
    captions: dict[int, list[str]] = defaultdict(list)
    try:
        for img in data["images"]:
            if int(img["id"]) in files:
                raise AnnotationError(f"COCO captions file '{path}' lists the image id {img['id']} twice")
            files[int(img["id"])] = str(img["file_name"])
        for ann in data["annotations"]:
            text = " ".join(str(ann["caption"]).split())
            if text:
                captions[int(ann["image_id"])].append(text)
    except AnnotationError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise AnnotationError(f"malformed entry in COCO captions file '{path}': {e!r}") from e
    unknown = set(captions) - set(files)
    if unknown:
        raise AnnotationError(f"COCO captions file '{path}' has captions for {len(unknown)} image ids that "
                              f"are not in its 'images' list, e.g. {sorted(unknown)[:5]}")
    return files, dict(captions)
