"""Reading images robustly and moving between PIL, numpy and [0, 1] tensors.

Every image entering wwbl goes through `load_image` or `to_tensor01`, so odd files (grayscale,
RGBA, palette, 16-bit, CMYK, EXIF-rotated) behave like ordinary RGB photos.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from wwbl.errors import ImageLoadError

MIN_SIDE = 2


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an upright RGB PIL image.

    EXIF orientation is applied, alpha is composited on white, 16-bit and float images are
    rescaled to 8 bits. Raises ImageLoadError (naming the file) for missing, unreadable or
    degenerate (< 2 px) images, and for decompression bombs: more pixels than PIL's limit
    (2 × ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 million) or PNG text / ICC chunks that inflate
    past PIL's chunk limits.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageLoadError(f"{path} is not a regular file (a folder, FIFO, device or socket)")
    try:
        with warnings.catch_warnings():
            # PIL warns from half its limit on; those images are loaded (and worked on downscaled, see
            # working_copy), so the warning would only be noise; above the limit PIL raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return to_rgb(ImageOps.exif_transpose(img), name=str(path))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # ValueError: PIL's "Decompressed data too large" for PNG iCCP / zTXt / iTXt chunks
        raise ImageLoadError(f"cannot read image {path}: {err}") from err


# PIL modes that only convert to RGB through another mode (premultiplied alpha, palette with alpha).
_VIA_MODE = {"La": "LA", "RGBa": "RGBA", "PA": "RGBA", "P": "RGBA"}


def to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited on white); ImageLoadError for a mode PIL
    cannot convert."""
    if min(img.size) < MIN_SIDE:
        raise ImageLoadError(f"{name}: {img.width}×{img.height} is too small to localise anything")
    try:
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            img = _rescale_to_8bit(img)
        if img.mode in _VIA_MODE:
            img = img.convert(_VIA_MODE[img.mode])
        if img.mode in ("RGBA", "LA"):
            rgba = img.convert("RGBA")
            background = Image.new("RGB", img.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return img.convert("RGB")
    except ValueError as err:  # e.g. "conversion from X to RGB not supported"
        raise ImageLoadError(f"{name}: PIL mode {img.mode!r} cannot be converted to RGB ({err})") from err


def working_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``(width, height)`` of the working copy of an image of ``size``: scaled (aspect kept) so that
    its longer side is ``max_side``, each side at least `MIN_SIDE`; ``size`` itself when it already
    fits or ``max_side`` is None."""
    width, height = size
    if max_side is None or max(width, height) <= max_side:
        return size
    scale = max_side / max(width, height)
    return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))


def working_copy(img: Image.Image, max_side: int | None) -> Image.Image:
    """``img`` downscaled to its `working_size` (antialiased), or ``img`` itself when it fits."""
    size = working_size(img.size, max_side)
    return img if size == img.size else img.resize(size, Image.BILINEAR, reducing_gap=3.0)


def _rescale_to_8bit(img: Image.Image) -> Image.Image:
    array = np.asarray(img, dtype=np.float64)
    high = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
    if img.mode == "F":
        low, high = float(array.min()), float(array.max())
        array = (array - low) / max(high - low, 1e-12) * 255.0
    else:
        array = array / high * 255.0
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")


def _array_scale(array: np.ndarray) -> float:
    """The value of white for an image array's dtype (floats and booleans: 1)."""
    if array.dtype == np.uint16:
        return 65535.0
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ImageLoadError(f"integer image values must lie in [0, 255] (or use uint16), got "
                                 f"{array.min()}..{array.max()} ({array.dtype})")
        return 255.0
    if not (np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_):
        raise ImageLoadError(f"unsupported image dtype {array.dtype}")
    return 1.0


def _check_unit_range(image: Tensor) -> None:
    if not torch.isfinite(image).all():
        raise ImageLoadError("the image holds NaN or infinite values")
    if image.numel() and (image.min() < -1e-3 or image.max() > 1 + 1e-3):
        raise ImageLoadError(f"float image values must lie in [0, 1], got {image.min():.3g}..{image.max():.3g} "
                             "(divide 0–255 values by 255, or pass uint8)")


def to_tensor01(image: Image.Image | np.ndarray | Tensor) -> Tensor:
    """PIL image (any mode), H×W, H×W×3 or H×W×4 array (uint8, uint16, other integers in 0–255,
    bool, or floats in [0, 1]), or a C×H×W tensor (C = 1, 3 or 4; uint8 as torchvision's
    ``read_image`` returns, or floats in [0, 1]) -> float32 tensor 3×H×W in [0, 1]. Alpha is dropped,
    gray is repeated; anything else is refused with an ImageLoadError saying what was expected."""
    if isinstance(image, Image.Image):
        image = np.asarray(to_rgb(image))
    if isinstance(image, np.ndarray):
        if image.dtype == np.object_ or image.dtype.kind in "USV":
            raise ImageLoadError(f"unsupported image dtype {image.dtype}")
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise ImageLoadError(f"expected an H×W, H×W×3 or H×W×4 array, got shape {image.shape}")
        scale = _array_scale(image)
        image = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / scale
    if not isinstance(image, Tensor):
        raise ImageLoadError(f"expected a path, PIL image, array or tensor, got {type(image).__name__}")
    if image.dim() == 2:
        image = image[None]
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        hint = " (an H×W×C tensor? permute it to C×H×W)" if image.dim() == 3 and image.shape[-1] in (3, 4) else ""
        raise ImageLoadError(f"expected a C×H×W tensor with C = 1, 3 or 4, got shape {tuple(image.shape)}{hint}")
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    elif image.dtype == torch.bool or not image.is_floating_point():
        raise ImageLoadError(f"expected a uint8 or float image tensor, got {image.dtype}")
    image = image.float()
    _check_unit_range(image)
    image = image[:3] if image.shape[0] != 1 else image.expand(3, -1, -1)
    if min(image.shape[-2:]) < MIN_SIDE:
        raise ImageLoadError(f"image of size {tuple(image.shape[-2:])} is too small to localise anything")
    return image.clamp(0.0, 1.0).contiguous()


def as_tensor01(image: str | os.PathLike | Image.Image | np.ndarray | Tensor) -> Tensor:
    """Any supported image input (path, PIL, array, tensor) -> 3×H×W float tensor in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
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
