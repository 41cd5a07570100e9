"""Small synthetic images shared by the extractor and reader tests."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image


def random_images(seed: int, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=gen) for h, w in sizes]


def blocky_image(height: int, width: int) -> torch.Tensor:
    """Coloured rectangles on grey: structure for SLIC and selective search."""
    img = torch.full((3, height, width), 0.5)
    img[:, height // 8 : height // 2, width // 6 : width // 2] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    img[:, height // 2 :, width // 2 :] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    return img


def flat_image_file(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), 128).save(path)
    return path
