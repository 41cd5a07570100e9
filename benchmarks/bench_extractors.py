"""Time per (image, phrase) of every registered heatmap extractor, batched and one by one.

    python benchmarks/bench_extractors.py [--extractors all | gae gem ...] [--models ViT-B-32 RN50]
                                          [--images 2] [--phrases 3] [--image-size 640 480]
                                          [--device cpu] [--repeats 1] [--threads 1]

Each extractor is built on each CLIP it supports (random weights, `FrozenCLIP(model,
pretrained="random")`; an extractor that refuses a model is listed as "n/a"), with its default options;
"g" is the full-size network g (VGG16, random weights) at `--g-size`. For U images × P phrases:

* first call — the first `heatmaps` call, including one-time work (e.g. a contrast set's text
  embeddings, lazily built tables);
* batched    — one `heatmaps(images, phrases)` call for all U·P pairs, per pair;
* one by one — one `heatmaps([image], [[phrase]])` call per pair, per pair.

Phrase embeddings are cached by CLIP after the first call, so the batched and one-by-one numbers are
the image-side cost (text encoding is timed by bench_pipeline.py). Extractors with their own box
method (`detect`) are timed for it as well (batched).
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import add_common_args, print_table, random_phrases, setup, sync, synthetic_photo, time_call

from wwbl.clip import FrozenCLIP
from wwbl.clip.vit import UnsupportedCLIPError
from wwbl.extractors import available_extractors, build_extractor
from wwbl.networks import GroundingNet

# The default set keeps the default run within ~2 minutes on one CPU thread. Left out: adapting_clip and
# crop_and_rank (seconds per pair on CPU), clip_text_span (its first call encodes the 1 000 ImageNet
# contrast prompts, ~3 minutes on CPU) and vl_score (a CLIP forward per activation channel).
FAST = ("gae", "gem", "clip_surgery", "g", "gradcam")


def build(name: str, clip: FrozenCLIP, args: argparse.Namespace, device: torch.device):
    if name == "g":
        net = GroundingNet(text_dim=clip.embed_dim, pretrained_backbone=False).to(device).eval()
        return build_extractor("g", clip, network=net, input_size=args.g_size)
    return build_extractor(name, clip)


def time_first(fn) -> float:
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def bench_one(name: str, clip: FrozenCLIP, args, device, images, phrases) -> list[object]:
    try:
        extractor = build(name, clip, args, device)
    except (UnsupportedCLIPError, ValueError, TypeError) as error:
        return [name, clip.spec["model"], "n/a", "", "", "", str(error).split(";")[0][:60]]
    pairs = sum(len(p) for p in phrases)
    first = time_first(lambda: extractor.heatmaps(images, phrases))
    batched = time_call(lambda: extractor.heatmaps(images, phrases), args.repeats, device, warmup=0) / pairs
    one = lambda: [extractor.heatmaps([img], [[p]]) for img, plist in zip(images, phrases) for p in plist]
    single = time_call(one, 1, device, warmup=0) / pairs
    note = f"input {extractor.input_size}²"
    if hasattr(extractor, "detect"):
        detect = time_call(lambda: extractor.detect(images, phrases), 1, device, warmup=0) / pairs
        note += f"; detect {1e3 * detect:.4g} ms/pair"
    return [name, clip.spec["model"], 1e3 * first, 1e3 * batched, 1e3 * single, f"x{single / batched:.2f}", note]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.set_defaults(repeats=1)
    parser.add_argument("--extractors", nargs="+", default=list(FAST),
                        help=f"names, or 'all' for every registered one (default: {' '.join(FAST)})")
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "RN50"])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--phrases", type=int, default=3, help="phrases per image")
    parser.add_argument("--image-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    parser.add_argument("--g-size", type=int, default=299, help="network g's input side")
    args = parser.parse_args()
    device = setup(args)
    names = available_extractors() if args.extractors == ["all"] else args.extractors
    images = [synthetic_photo(*args.image_size, seed=args.seed + k) for k in range(args.images)]
    phrases = [random_phrases(args.phrases, seed=200 + k) for k in range(args.images)]
    header = ["extractor", "CLIP", "first call ms", "batched ms/pair", "one-by-one ms/pair", "batching gain", "note"]
    rows = []
    for model in args.models:
        clip = FrozenCLIP(model, pretrained="random").to(device)
        for name in names:
            if name == "g" and model != args.models[0]:
                continue  # g uses CLIP for text only: timing it once is enough
            rows.append(bench_one(name, clip, args, device, images, phrases))
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    print(f"\n## extractors: {args.images} images {args.image_size[0]}×{args.image_size[1]} × {args.phrases} phrases")
    print_table(header, rows)


if __name__ == "__main__":
    main()
