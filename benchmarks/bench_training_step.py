"""Training-step throughput of `WWbLModule` (WSG: network g + frozen CLIP, all four losses).

    python benchmarks/bench_training_step.py [--sizes tiny real] [--batch 2] [--input-size 299]
                                             [--device cpu] [--repeats 2] [--threads 2]

One step = `compute_losses` (text encoding, g forward, Chefer relevancy pass, CLIP forward of the
masked fore/background images, the four losses) + backward + SGD step, exactly what
`training_step` runs. Reported: steps/s, images/s and a breakdown by stage, measured by wrapping
the module's own calls (nothing re-implemented):

* relevancy  — `clip.relevancy` (forward with attention + gradient w.r.t. the last block's attention)
* g forward  — `net(images, text)`
* clip f/b   — CLIP's image encoder on the 2B masked images (`_encode`)
* backward   — `loss.backward()` (through CLIP's image encoder into g)
* optimiser  — `SGD.step()`

Sizes: "tiny" = wwbl-tiny-vit CLIP + VGG16/16 g at 64²; "real" = ViT-B-32 CLIP (random weights,
`pretrained=None`) + full VGG16 g (`pretrained_backbone=False`) at `--input-size` (paper: 299).
"""
from __future__ import annotations

import argparse
import functools

import torch
from _common import StageTimer, add_common_args, print_table, random_phrases, setup

from wwbl.lit_module import WWbLModule

SIZES = {
    "tiny": {"clip_model": "wwbl-tiny-vit",
             "network": {"architecture": "grounding_net", "vgg_width_div": 16, "decoder_channels": 16}},
    "real": {"clip_model": "ViT-B-32",
             "network": {"architecture": "grounding_net", "vgg_width_div": 1, "decoder_channels": None}},
}


def build_module(size: str, input_size: int, device: torch.device, **options) -> WWbLModule:
    module = WWbLModule(task="wsg", clip_pretrained="random", pretrained_backbone=False, input_size=input_size,
                        **SIZES[size], **options)
    return module.to(device).train()


def instrument(module: WWbLModule, timer: StageTimer) -> None:
    """Time the module's own calls in place (instance attributes shadow the methods)."""
    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with timer(name):
                return fn(*args, **kwargs)
        return wrapper

    module.clip.relevancy = timed("relevancy", module.clip.relevancy)
    module._encode = timed("clip f/b fwd", module._encode)
    module.net.forward = timed("g forward", module.net.forward)
    module.clip.encode_text = timed("text enc", module.clip.encode_text)


def run_size(size: str, args: argparse.Namespace, device: torch.device) -> list[list[object]]:
    side = 64 if size == "tiny" else args.input_size
    module = build_module(size, side, device, pairing=args.pairing)
    optimiser = module.configure_optimizers()
    timer = StageTimer(device)
    instrument(module, timer)
    images = torch.rand(args.batch, 3, side, side, device=device)

    def step(seed: int) -> None:
        phrases = random_phrases(args.batch, seed=seed)  # fresh phrases: no text-cache hits, as in training
        optimiser.zero_grad(set_to_none=True)
        with timer("step total"):
            with timer("losses (fwd)"):
                loss = module.compute_losses(images, phrases)["loss"]
            with timer("backward"):
                loss.backward()
            with timer("optimiser"):
                optimiser.step()

    step(seed=10_000)  # warm-up
    timer.reset()
    n = args.repeats * (10 if size == "tiny" else 1)  # tiny steps take milliseconds: average more
    for r in range(n):
        step(seed=r)
    total = timer.seconds["step total"] / n
    print(f"\n## {size}: CLIP {SIZES[size]['clip_model']}, g vgg_width_div={SIZES[size]['network']['vgg_width_div']}, "
          f"B={args.batch}, S={side}, pairing={args.pairing}")
    print(f"steps/s {1 / total:.3f} | images/s {args.batch / total:.3f} | s/step {total:.3f}")
    stages = ["text enc", "g forward", "relevancy", "clip f/b fwd", "losses (fwd)", "backward", "optimiser"]
    print_table(["stage", "s/step", "share of step"],
                [[s, timer.seconds[s] / n, f"{100 * timer.seconds[s] / n / total:.0f} %"] for s in stages])
    return [size, args.batch, side, 1 / total, args.batch / total]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["tiny", "real"])
    parser.add_argument("--batch", type=int, default=2, help="images per step (paper: 32 on GPU; default 2)")
    parser.add_argument("--input-size", type=int, default=299, help="g's input side for the real size (paper 299)")
    parser.add_argument("--pairing", choices=["diagonal", "all_pairs"], default="diagonal")
    args = parser.parse_args()
    device = setup(args)
    summary = [run_size(size, args, device) for size in args.sizes]
    print("\n## summary")
    print_table(["size", "B", "S", "steps/s", "images/s"], summary)


if __name__ == "__main__":
    main()
