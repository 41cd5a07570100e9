"""BLIP captioner (Algorithm 1, line 3) through transformers' ``BlipForConditionalGeneration``.

Defaults follow the reference (REFERENCE.md W§7 item 5): prompt ``"a picture of "`` (stripped from the
output), beam search with 3 beams, length 5–30 tokens (prompt included, as BLIP counts it),
crops captioned in chunks of 120 across all the images of a call. Preprocessing is the BLIP
processor's own (bicubic resize to the captioner's image size, CLIP mean/std).

Three exact savings (the captions are those of captioning every crop one by one with ``generate``):

* identical crops are captioned once and the caption shared (``share_identical_crops``, on by
  default): the same integer pixel rectangle of the same image (after :func:`_pixel_box`'s
  rounding; selective search and the grid often give boxes that round to one rectangle), and
  byte-identical crop images (a repeated image, or two rectangles over identical pixels);
* each crop's cross-attention keys and values are projected once, not once per beam, and not
  reordered at every beam-search step (:mod:`wwbl.inference.blip_decoding`);
* on a CUDA out-of-memory error the chunk is halved and retried, down to one crop (then the
  error is raised); the smaller chunk is kept for the captioner's later calls.

The reference captioner is the Salesforce pre-training checkpoint ``model_base_capfilt_large.pth``;
convert it with :mod:`wwbl.inference.blip_convert` and pass the output folder. A Hugging Face id
(e.g. ``Salesforce/blip-image-captioning-base``, a COCO-finetuned captioner) works as well.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from wwbl.defaults import (
    CAPTION_CHUNK,
    CAPTION_PROMPT,
    DEFAULT_CAPTIONER,
    MAX_CAPTION_LENGTH,
    MIN_CAPTION_LENGTH,
    NUM_BEAMS,
)
from wwbl.errors import MissingResourceError, ModelFileError
from wwbl.inference.blip_decoding import generate_caption_ids
from wwbl.model_files import check_safetensors, first_few, read_json_object, require_folder

log = logging.getLogger(__name__)


@dataclass
class CaptionSettings:
    """Decoding settings; ``generate_kwargs`` are passed on to ``generate`` (e.g. sampling).

    ``reference_crop_size``: crop regions from the image resized to that square (224 in the released
    code, which crops its 224² dataset image) instead of from the original image (default).

    ``chunk_size``: crops per ``generate`` call (halved on CUDA out-of-memory, see the module
    docstring). ``share_identical_crops``: caption identical crops once (exact, on by default;
    ``False`` captions every crop, for timing the reference's cost). Neither changes a caption.
    """

    prompt: str = CAPTION_PROMPT
    num_beams: int = NUM_BEAMS
    min_length: int = MIN_CAPTION_LENGTH
    max_length: int = MAX_CAPTION_LENGTH
    chunk_size: int = CAPTION_CHUNK
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    reference_crop_size: int | None = None
    share_identical_crops: bool = True


# A local BLIP folder (save_pretrained layout) holds each role's file under one of these names.
BLIP_FILES = {"config": ("config.json",), "weights": ("model.safetensors", "model.safetensors.index.json",
                                                      "pytorch_model.bin"),
              "image processor": ("processor_config.json", "preprocessor_config.json"),
              "tokenizer": ("tokenizer.json", "vocab.txt")}


def _blip_classes() -> tuple[type, type]:
    from transformers import BlipForConditionalGeneration, BlipProcessor  # lazy: slow to import

    return BlipForConditionalGeneration, BlipProcessor


def _load_blip(source: str, allow_download: bool):
    local = Path(source).expanduser()
    if local.exists():
        return _load_local_blip(local)
    model_class, processor_class = _blip_classes()
    attempts = [True] if not allow_download or os.environ.get("HF_HUB_OFFLINE") else [True, False]
    last_error: Exception | None = None
    for local_only in attempts:
        try:
            model = model_class.from_pretrained(source, local_files_only=local_only)
            processor = processor_class.from_pretrained(source, local_files_only=local_only)
            return model, processor
        except (OSError, ValueError) as error:  # missing files / offline hub / not a BLIP folder
            last_error = error
    raise MissingResourceError(
        f"BLIP captioner {source!r} is not available ({' '.join(str(last_error).split())}). Supply it as a local "
        "folder holding a transformers BlipForConditionalGeneration + BlipProcessor (save_pretrained layout), e.g. "
        "one converted from the Salesforce checkpoint with `python -m wwbl.inference.blip_convert "
        "model_base_capfilt_large.pth OUT_DIR --tokenizer <local bert-base-uncased folder>`, or pre-download "
        "the Hugging Face model into the cache on a machine with network access."
    ) from last_error


def _load_local_blip(folder: Path):
    """A BLIP folder, checked before transformers reads it: the files are there, the weights readable and
    complete (transformers would fill missing weights with random ones and only warn)."""
    holds = "config.json, model.safetensors and the processor files (save_pretrained layout)"
    require_folder(folder, "a BLIP captioner", holds)
    found = {}
    for role, names in BLIP_FILES.items():
        found[role] = next((folder / name for name in names if (folder / name).is_file()), None)
        if found[role] is None:
            raise MissingResourceError(f"BLIP captioner folder '{folder}' lacks its {role} ({' or '.join(names)}); "
                                       f"it must hold {holds}")
    model_type = read_json_object(found["config"]).get("model_type")
    if model_type != "blip":
        raise ModelFileError(found["config"], f"describes a {model_type!r} model, not a BLIP captioner "
                                              "(model_type 'blip')")
    if found["weights"].suffix == ".safetensors":
        check_safetensors(found["weights"])
    model_class, processor_class = _blip_classes()
    try:
        with _quiet_transformers():
            # Mismatched shapes come back in `info` (named below) instead of an error pointing at the hidden table.
            model, info = model_class.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                                      ignore_mismatched_sizes=True)
            processor = processor_class.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError) as error:
        raise ModelFileError(folder, f"transformers cannot load it as a BLIP captioner "
                                     f"({type(error).__name__}: {error})") from error
    shapes = [f"{key} {list(in_file)} in the file, {list(in_model)} in the network"
              for key, in_file, in_model in sorted(info.get("mismatched_keys") or ())]
    problem = "; ".join(f"{label} {first_few(keys)}" for label, keys in
                        (("missing keys", sorted(info.get("missing_keys") or ())), ("shape mismatch", shapes)) if keys)
    if problem:
        raise ModelFileError(found["weights"], f"the weights do not fit the BLIP that config.json describes: {problem}")
    return model, processor


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers prints a table of every weight that does not fit; the one-line error above says it instead."""
    from transformers.utils import logging as hf_logging  # lazy: slow to import

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


PixelBox = tuple[int, int, int, int]  # x0, y0, x1, y1 in whole pixels (PIL's crop rectangle)


def _pixel_box(box: torch.Tensor, width: int, height: int) -> PixelBox:
    """Integer crop rectangle covering ``box`` inside the image, at least one pixel wide and high."""
    x0 = min(max(math.floor(float(box[0])), 0), width - 1)
    y0 = min(max(math.floor(float(box[1])), 0), height - 1)
    x1 = max(min(math.ceil(float(box[2])), width), x0 + 1)
    y1 = max(min(math.ceil(float(box[3])), height), y0 + 1)
    return x0, y0, x1, y1


def _first_of_each(keys: Sequence[Hashable]) -> tuple[list[int], list[int]]:
    """Where each distinct key first occurs, and for every key which of those first occurrences it repeats."""
    slot: dict[Hashable, int] = {}
    firsts, inverse = [], []
    for position, key in enumerate(keys):
        if key not in slot:
            slot[key] = len(firsts)
            firsts.append(position)
        inverse.append(slot[key])
    return firsts, inverse


def _image_key(image: Image.Image) -> tuple[str, tuple[int, int], bytes]:
    """Equal for byte-identical images (mode, size and a 256-bit digest of the pixels)."""
    return image.mode, image.size, hashlib.blake2b(image.tobytes(), digest_size=32).digest()


class BlipCaptioner:
    """Batched BLIP captioning of whole images and of image regions.

    ``chunk_size`` is the number of crops per ``generate`` call: ``settings.chunk_size`` until a
    CUDA out-of-memory error halves it (kept for later calls). ``captioned`` counts the images BLIP
    has run on (identical crops once when shared), for measurements.
    """

    def __init__(self, model: torch.nn.Module, processor: Any, settings: CaptionSettings | None = None) -> None:
        self.model = model.eval()
        self.processor = processor
        self.settings = settings or CaptionSettings()
        if self.settings.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.chunk_size = self.settings.chunk_size
        self.captioned = 0

    @classmethod
    def from_pretrained(cls, source: str = DEFAULT_CAPTIONER, device: str | torch.device = "cpu",
                        settings: CaptionSettings | None = None, allow_download: bool = True) -> BlipCaptioner:
        """Load from a local ``save_pretrained`` folder or a Hugging Face model id."""
        model, processor = _load_blip(source, allow_download)
        return cls(model.to(device), processor, settings)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prompt_ids(self, count: int) -> torch.Tensor:
        ids = self.processor.tokenizer([self.settings.prompt] * count, return_tensors="pt").input_ids
        return ids.to(self.device)

    def _strip_prompt(self, text: str) -> str:
        prompt = self.settings.prompt.strip().lower()
        text = text.strip()
        return text[len(prompt):].strip() if prompt and text.lower().startswith(prompt) else text

    @torch.no_grad()
    def _caption_chunk(self, images: Sequence[Image.Image]) -> list[str]:
        dtype = next(self.model.parameters()).dtype
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt").pixel_values
        s = self.settings
        output = generate_caption_ids(self.model, pixels.to(self.device, dtype), self._prompt_ids(len(images)),
                                      num_beams=s.num_beams, min_length=s.min_length, max_length=s.max_length,
                                      **s.generate_kwargs)
        texts = self.processor.tokenizer.batch_decode(output, skip_special_tokens=True)
        self.captioned += len(images)
        return [self._strip_prompt(text) for text in texts]

    def _caption_chunks(self, images: list[Image.Image]) -> list[str]:
        """Captions in chunks of ``self.chunk_size``, halving the chunk on CUDA out-of-memory."""
        texts: list[str] = []
        while len(texts) < len(images):
            chunk = images[len(texts):len(texts) + self.chunk_size]
            try:
                texts.extend(self._caption_chunk(chunk))
                continue
            except torch.cuda.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
            # Outside the handler, so the failed chunk's tensors (held by the traceback) are freed first.
            self.chunk_size = len(chunk) // 2
            log.warning("CUDA out of memory captioning %d crops at once; retrying in chunks of %d",
                        len(chunk), self.chunk_size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return texts

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per RGB PIL image, in chunks of ``chunk_size`` (byte-identical images captioned once
        when ``settings.share_identical_crops``)."""
        images = [image.convert("RGB") for image in images]
        if not self.settings.share_identical_crops:
            return self._caption_chunks(images)
        firsts, inverse = _first_of_each([_image_key(image) for image in images])
        texts = self._caption_chunks([images[i] for i in firsts])
        return [texts[i] for i in inverse]

    def _crop_frame(self, image: Image.Image, boxes: torch.Tensor) -> tuple[Image.Image, list[PixelBox]]:
        """The image crops are cut from (``reference_crop_size`` applied) and each box's pixel rectangle in it."""
        source, scale = image, (1.0, 1.0)
        if self.settings.reference_crop_size is not None:
            side = self.settings.reference_crop_size
            source, scale = image.resize((side, side), Image.BILINEAR), (side / image.width, side / image.height)
        scaled = boxes.float().cpu() * torch.tensor([scale[0], scale[1], scale[0], scale[1]])
        return source, [_pixel_box(box, source.width, source.height) for box in scaled]

    def crops(self, image: Image.Image, boxes: torch.Tensor) -> list[Image.Image]:
        """Crops of ``boxes`` (``xyxy`` in the image frame), clipped to the image."""
        source, rectangles = self._crop_frame(image, boxes)
        return [source.crop(rectangle) for rectangle in rectangles]

    def caption_regions(self, images: Sequence[Image.Image], boxes: Sequence[torch.Tensor]) -> list[list[str]]:
        """Captions of every region of every image, batched across images; one list per image. With
        ``settings.share_identical_crops`` a pixel rectangle repeated in one image is cropped and captioned once."""
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box sets")
        frames = [self._crop_frame(image.convert("RGB"), image_boxes) for image, image_boxes in zip(images, boxes)]
        regions = [(k, rectangle) for k, (_, rectangles) in enumerate(frames) for rectangle in rectangles]
        keys = regions if self.settings.share_identical_crops else range(len(regions))
        firsts, inverse = _first_of_each(keys)
        unique = self.caption([frames[k][0].crop(rectangle) for k, rectangle in (regions[i] for i in firsts)])
        flat = [unique[i] for i in inverse]
        counts, out, start = [len(b) for b in boxes], [], 0
        for count in counts:
            out.append(flat[start:start + count])
            start += count
        return out
