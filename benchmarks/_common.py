"""Shared helpers of the benchmark scripts: timing, realistic synthetic inputs, random real-size models.

Pretrained weights are not needed: a randomly initialised network of the real architecture does the
same arithmetic as the trained one, so it times the same (decoding length aside, see
`random_blip_captioner`). Every helper follows `--device`; CUDA work is synchronised before a clock
is read.
"""
from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on the shared 2-core machine 2 threads ran a tiny "
                             "training step ~150x slower from contention)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions after one warm-up (default 2)")
    parser.add_argument("--seed", type=int, default=0)


def setup(args: argparse.Namespace) -> torch.device:
    """Seeds, thread count and device; prints the machine line every result table starts with."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA device")
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | torch {torch.__version__} | "
          f"{platform.processor() or platform.machine()} | threads {torch.get_num_threads()} | device {device}{gpu}")
    return device


def sync(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], repeats: int, device: torch.device | str | None = None,
              warmup: int = 1) -> float:
    """Median wall-clock seconds of `fn()` over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class StageTimer:
    """Accumulates wall-clock seconds per named stage (`with timer("name"): ...`), synchronising CUDA."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


class PeakMemory:
    """Peak memory of a block of work, in MiB above what was resident when it began.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only; the caching allocator's reserve is not
    counted). CPU: the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``,
    Linux) minus the resident set at the start — it counts every allocation of the block, torch's and
    others', and undercounts memory that the C allocator kept from an earlier block and hands out again
    (set ``MALLOC_MMAP_THRESHOLD_=65536`` so that large tensors are mapped and unmapped each time).
    ``mib`` is None where neither is available.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.mib: float | None = None

    def __enter__(self) -> "PeakMemory":
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = _reset_peak_rss()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        elif self._start is not None:
            self.mib = (_status_kib("VmHWM") - self._start) / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def _reset_peak_rss() -> int | None:
    """Resets the peak resident set to the current one; the current one in KiB (None off Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return _status_kib("VmRSS")
    except OSError:
        return None


def print_table(header: list[str], rows: list[list[object]]) -> None:
    """A Markdown table (pasted as is into benchmarks/RESULTS.md)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in cells:
        print("| " + " | ".join(row) + " |")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def synthetic_photo(width: int, height: int, seed: int = 0, objects: int = 12) -> Image.Image:
    """A photo-like RGB image: smooth background, overlapping coloured shapes, blur and sensor noise.

    Selective search's cost depends on the image's structure; pure noise (thousands of regions) or
    a flat image (none) would mis-time it, so a few object-like regions are drawn.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([(xx / width) * rng.uniform(60, 200) + (yy / height) * rng.uniform(20, 80)
                     for _ in range(3)], axis=-1)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(objects):
        w, h = rng.integers(width // 10, width // 2), rng.integers(height // 10, height // 2)
        x, y = rng.integers(0, width - w), rng.integers(0, height - h)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x), int(y), int(x + w), int(y + h)], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


class RepeatableProposals:
    """A `ProposalGenerator` that answers the same boxes for the same image on every call.

    OpenCV's selective search returns the same set of boxes on every call but in an order that changes from
    call to call (its region ranking draws random numbers, and ``cv2.setRNGSeed`` does not fix it), so a
    ``max_proposals`` cap keeps a different subset each time. Two formulations must caption the same crops
    to be compared: this runs the real generator at every call (so its cost is timed as before) and returns
    the boxes of its first call on an image with those pixels (the pipelines pass converted copies).
    """

    def __init__(self, generator) -> None:
        self.generator = generator
        self._first: dict[str, torch.Tensor] = {}

    def __call__(self, image: Image.Image) -> torch.Tensor:
        boxes = self.generator(image)
        key = f"{image.size}{image.mode}" + hashlib.sha1(image.tobytes()).hexdigest()
        return self._first.setdefault(key, boxes).clone()


def random_phrases(count: int, seed: int = 0, words: int = 4) -> list[str]:
    """Distinct phrases (distinct so that CLIP's per-phrase text cache never short-cuts a timing)."""
    vocabulary = ["red", "blue", "green", "small", "large", "wooden", "metal", "dog", "cat", "man", "woman",
                  "child", "car", "tree", "house", "ball", "table", "chair", "window", "door", "street", "sky",
                  "water", "grass", "shirt", "hat", "bag", "bike"]
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(vocabulary, words)) + f" {seed}-{i}" for i in range(count)]


# -- a BLIP-base-size random captioner ----------------------------------------------------------------
BERT_VOCAB_SIZE = 30522  # bert-base-uncased; BLIP adds [DEC] and [ENC] (BlipConfig's 30524)


def local_bert_tokenizer():
    """A BERT WordPiece tokenizer with bert-base-uncased's vocabulary size, built offline.

    The word pieces are made up (the real vocabulary is not available offline); the size, the
    special tokens and BLIP's [DEC]/[ENC] additions match, which is what decoding cost depends on.
    """
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["a", "picture", "of", "the", "dog", "cat", "man", "woman", "red", "blue", "on", "in", "with"]
    filler = [f"w{i}" for i in range(BERT_VOCAB_SIZE - len(specials) - len(words))]
    vocab = {token: i for i, token in enumerate(specials + words + filler)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def captions_depend_on_the_image(model: torch.nn.Module, gain: float = 3.0, seed: int = 0) -> None:
    """Re-draw a random BLIP's vision and cross-attention weights with variance scaling, in place.

    ``BlipConfig`` initialises the vision tower with std 1e-10, so a random BLIP gives every crop the
    same caption (one cluster per image, the heatmap stage nearly free); with these weights the captions
    differ between crops, as a trained BLIP's do. The arithmetic, and so the timing, is unchanged.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.vision_model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                std = gain / module.weight[0].numel() ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
        for name, p in model.text_decoder.named_parameters():
            if "crossattention" in name and name.endswith("weight") and "LayerNorm" not in name:
                p.copy_(torch.randn(p.shape, generator=generator) * (gain / p.shape[-1] ** 0.5))


def tiny_blip_captioner(device: torch.device, settings=None):
    """`BlipCaptioner` around a tiny random BLIP (2-layer towers, width 32, 32² input, 20-word vocabulary)
    for smoke runs, captions depending on the image (`captions_depend_on_the_image`)."""
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, \
        BlipProcessor

    from wwbl.inference.captioner import BlipCaptioner

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "picture", "of", "dog", "cat", "red", "blue", "the",
             "on", "ball", "tree", "sky", "man", "hat", "grass"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = BlipConfig(
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        text_config={**layers, "vocab_size": len(tokenizer), "max_position_embeddings": 40,
                     "encoder_hidden_size": 32, "bos_token_id": tokenizer.bos_token_id,
                     "sep_token_id": tokenizer.sep_token_id, "eos_token_id": tokenizer.sep_token_id,
                     "pad_token_id": tokenizer.pad_token_id})
    model = BlipForConditionalGeneration(config)
    captions_depend_on_the_image(model)
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    return BlipCaptioner(model.to(device).eval(), processor, settings)


def random_blip_captioner(device: torch.device, settings=None, vary: bool = False):
    """`BlipCaptioner` around a random `BlipForConditionalGeneration(BlipConfig())` (BLIP-base: ViT-B/16 at
    384², 12-layer BERT decoder) and the BLIP image processor (384², bicubic).

    Random weights rarely emit [SEP], so every caption decodes to `max_length` tokens: an upper bound
    of the real captioner, whose captions stop after about 10–15 tokens. ``vary``: captions that differ
    between crops (`captions_depend_on_the_image`), so that clustering and heatmaps see several clusters.
    """
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from wwbl.inference.captioner import BlipCaptioner

    tokenizer = local_bert_tokenizer()
    config = BlipConfig(text_config={"bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
                                     "sep_token_id": tokenizer.sep_token_id, "eos_token_id": tokenizer.sep_token_id,
                                     "pad_token_id": tokenizer.pad_token_id})
    model = BlipForConditionalGeneration(config)
    if vary:
        captions_depend_on_the_image(model)
    model = model.to(device).eval()
    processor = BlipProcessor(BlipImageProcessor(size={"height": 384, "width": 384}), tokenizer)
    return BlipCaptioner(model, processor, settings)
