"""Throughput of the batched Chefer relevancy map versus a per-pair loop.

    python benchmarks/bench_relevancy.py [--model wwbl-tiny-vit] [--batch 32] [--device cpu]

Prints pairs per second for the batched call (one backward for the whole batch) and for the
naive loop of one call per pair. Use a real model (e.g. --model ViT-B-32 --pretrained openai) on
a GPU to measure what training pays per step.
"""
from __future__ import annotations

import argparse
import time

import torch

from wwbl.clip import FrozenCLIP


def _time(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="wwbl-tiny-vit")
    parser.add_argument("--pretrained", default="random", help="open_clip tag, or random (untrained) weights")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--start-layer", type=int, default=-1)
    args = parser.parse_args()

    clip = FrozenCLIP(args.model, pretrained=args.pretrained).to(args.device)
    images = torch.rand(args.batch, 3, clip.image_size, clip.image_size, device=args.device)
    texts = clip.encode_text([f"phrase number {i}" for i in range(args.batch)])

    batched = _time(lambda: clip.relevancy(images, texts, args.start_layer), args.repeats)
    looped = _time(lambda: [clip.relevancy(images[i:i + 1], texts[i:i + 1], args.start_layer)
                            for i in range(args.batch)], max(1, args.repeats // 2))
    print(f"model={args.model} device={args.device} batch={args.batch} start_layer={args.start_layer}")
    print(f"batched: {args.batch / batched:10.1f} pairs/s")
    print(f"looped : {args.batch / looped:10.1f} pairs/s  (speed-up x{looped / batched:.1f})")


if __name__ == "__main__":
    main()
