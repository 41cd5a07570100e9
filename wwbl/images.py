"""Reading images robustly and moving between PIL, numpy and [0, 1] tensors.

Every image entering wwbl goes through `load_image` or `to_tensor01`, so odd files (grayscale,
RGBA, palette, 16-bit, CMYK, EXIF-rotated) behave like ordinary RGB photos.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from wwbl.errors import ImageLoadError

MIN_SIDE = 2
MAX_PIXELS = 20_000 * 20_000


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as an upright RGB PIL image.

    EXIF orientation is applied, alpha is composited on white, 16-bit and float images are
    rescaled to 8 bits. Raises ImageLoadError (naming the file) for missing, unreadable,
    degenerate (< 2 px) or decompression-bomb-sized images.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageLoadError(f"{path}: {img.width}×{img.height} exceeds the {MAX_PIXELS} pixel limit")
            img.load()
            return to_rgb(ImageOps.exif_transpose(img), name=str(path))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"cannot read image {path}: {err}") from err


def to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited on white)."""
    if min(img.size) < MIN_SIDE:
        raise ImageLoadError(f"{name}: {img.width}×{img.height} is too small to localise anything")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _rescale_to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def _rescale_to_8bit(img: Image.Image) -> Image.Image:
    array = np.asarray(img, dtype=np.float64)
    high = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
    if img.mode == "F":
        low, high = float(array.min()), float(array.max())
        array = (array - low) / max(high - low, 1e-12) * 255.0
    else:
        array = array / high * 255.0
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")


def to_tensor01(image: Image.Image | np.ndarray | Tensor) -> Tensor:
    """PIL image, H×W×3 uint8 array, or 3×H×W tensor -> float32 tensor 3×H×W in [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(to_rgb(image))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise ImageLoadError(f"expected an H×W×3 array, got shape {image.shape}")
        scale = 255.0 if image.dtype == np.uint8 else 65535.0 if image.dtype == np.uint16 else 1.0
        image = torch.from_numpy(np.array(image[..., :3])).permute(2, 0, 1).float() / scale
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ImageLoadError(f"expected a 3×H×W tensor, got {getattr(image, 'shape', type(image))}")
    if min(image.shape[-2:]) < MIN_SIDE:
        raise ImageLoadError(f"image of size {tuple(image.shape[-2:])} is too small to localise anything")
    return image.float().clamp(0.0, 1.0)


def as_tensor01(image: str | Path | Image.Image | np.ndarray | Tensor) -> Tensor:
    """Any supported image input (path, PIL, array, tensor) -> 3×H×W float tensor in [0, 1]."""
    if isinstance(image, (str, Path)):
        image = load_image(image)
    return to_tensor01(image)


def resize_heatmap(heatmap: Tensor, size_hw: tuple[int, int], *, align_corners: bool) -> Tensor:
    """Bilinear resize of the last two dims of `heatmap` (maps, or the channels of images) to `size_hw`.

    The one map resize of wwbl; every caller states its fidelity choice: ``align_corners=True``
    reproduces the released training code (its ``F.interpolate(..., align_corners=True)``),
    ``False`` is the default of evaluation and inference (as ``cv2.resize``). Differentiable.
    """
    if tuple(heatmap.shape[-2:]) == tuple(size_hw):
        return heatmap
    lead = heatmap.shape[:-2]
    flat = heatmap.reshape(-1, 1, *heatmap.shape[-2:]).float()
    out = F.interpolate(flat, size=tuple(size_hw), mode="bilinear", align_corners=align_corners)
    return out.reshape(*lead, *size_hw)


def resize_square(images: list[Tensor], side: int) -> Tensor:
    """Stack 3×H_i×W_i tensors into B×3×side×side (bilinear, no aspect preservation, as the reference)."""
    return torch.stack([
        F.interpolate(img[None], size=(side, side), mode="bilinear", align_corners=False, antialias=True)[0]
        for img in images
    ])
