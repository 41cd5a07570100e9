"""Sharing an image's text-independent computation across its phrases, versus repeating it per phrase.

    python benchmarks/bench_phrase_sharing.py [--images 2] [--phrases 5] [--g-size 299]
                                              [--device cpu] [--repeats 1] [--threads 1]

Both variants are timed in the same process (same load) on U images × P phrases, with real-size
random-weight models, and their outputs are compared:

* network g (`NetworkGExtractor`): `net(images, text, image_index)` runs VGG16 + bottleneck once per
  image and only the text-gated decoder per phrase; the repeated variant is `net(images[image_index], text)`.
* GAE relevancy (`GAEExtractor`, start_layer=-1): `relevancy_maps(..., image_index=...)` runs the 11 text-independent
  ViT-B-32 blocks once per image without a graph and only the explained last block per pair; the
  repeated variant is `wwbl.clip.relevancy.relevancy_maps` on `images[image_index]`.
"""
from __future__ import annotations

import argparse

import torch
from _common import add_common_args, print_table, random_phrases, setup, time_call

from wwbl.clip import FrozenCLIP
from wwbl.clip.relevancy import relevancy_maps
from wwbl.networks import GroundingNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.set_defaults(repeats=1)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--phrases", type=int, default=5, help="phrases per image")
    parser.add_argument("--g-size", type=int, default=299)
    args = parser.parse_args()
    device = setup(args)
    clip = FrozenCLIP("ViT-B-32", pretrained="random").to(device)
    pairs = args.images * args.phrases
    text = clip.encode_text(random_phrases(pairs, seed=5))
    index = torch.arange(args.images, device=device).repeat_interleave(args.phrases)
    rows = []

    net = GroundingNet(text_dim=clip.embed_dim, pretrained_backbone=False).to(device).eval()
    g_images = torch.rand(args.images, 3, args.g_size, args.g_size, device=device)
    with torch.no_grad():
        shared = time_call(lambda: net(g_images, text, index), args.repeats, device)
        repeated = time_call(lambda: net(g_images[index], text), args.repeats, device)
        diff = float((net(g_images, text, index) - net(g_images[index], text)).abs().max())
    rows.append([f"network g (VGG16, S={args.g_size})", 1e3 * repeated / pairs, 1e3 * shared / pairs,
                 f"x{repeated / shared:.2f}", f"{diff:.1e}"])

    vit = clip.vit
    prepared = clip.prepare(torch.rand(args.images, 3, clip.image_size, clip.image_size, device=device))
    shared = time_call(lambda: relevancy_maps(vit, prepared, text, clip.logit_scale, image_index=index),
                       args.repeats, device)
    repeated = time_call(lambda: relevancy_maps(vit, prepared[index], text, clip.logit_scale), args.repeats, device)
    diff = float((relevancy_maps(vit, prepared, text, clip.logit_scale, image_index=index)
                  - relevancy_maps(vit, prepared[index], text, clip.logit_scale)).abs().max())
    rows.append(["GAE relevancy (ViT-B-32, last block)", 1e3 * repeated / pairs, 1e3 * shared / pairs,
                 f"x{repeated / shared:.2f}", f"{diff:.1e}"])

    print(f"\n## {args.images} images × {args.phrases} phrases")
    print_table(["model", "repeated per phrase, ms/pair", "shared per image, ms/pair", "speed-up", "max |Δ|"], rows)


if __name__ == "__main__":
    main()
