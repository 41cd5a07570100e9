"""WWbL inference cost per image, stage by stage (paper Algorithm 1), and WSG grounding per (image, phrase).

    python benchmarks/bench_pipeline.py [--image-size 640 480] [--caption-crops 2] [--phrases 5]
                                        [--g-size 299] [--device cpu] [--repeats 2] [--threads 1]
                                        [--compare-unbatched] [--full]

Models are real-size with random weights (timing only): BLIP-base captioner
(`BlipForConditionalGeneration(BlipConfig())`, a locally built BERT-size tokenizer), ViT-B-32 CLIP
(`pretrained=None`) and full VGG16 network g (`pretrained_backbone=False`). The image is a synthetic
photo-like picture (`_common.synthetic_photo`), so selective search sees realistic structure.

Stages of Algorithm 1 for one image:

1. proposals    — selective search (OpenCV, reference settings) + grid boxes
2. captioning   — BLIP beam search over `--caption-crops` crops in one batch; the per-image cost is
                  extrapolated linearly to all N proposals (captioning is batched in chunks of 120,
                  so the per-crop cost is what matters); `--compare-unbatched` also times one
                  `generate` call per crop. Random weights decode every caption to max_length
                  (30 tokens): an upper bound of a trained BLIP.
3. text enc     — CLIP text encoder on distinct captions (one batch; nothing cached), timed on
                  `--text-captions` of them and scaled to N
4. clustering   — community detection + representatives on the N caption embeddings
5. heatmaps     — network g for `--phrases` cluster phrases (one image encoding, K decodings)
6. boxes        — the paper's box rule on the K heatmaps

`--full` also runs `WWbLPipeline` end to end on the image (all N crops captioned: slow on CPU).
The WSG part times `GroundingPipeline` (g heatmaps + boxes) for U images × P phrases in one call,
and one call per (image, phrase).
"""
from __future__ import annotations

import argparse

import torch
from _common import (
    add_common_args,
    print_table,
    random_blip_captioner,
    random_phrases,
    setup,
    synthetic_photo,
    time_call,
)

from wwbl.box_rules import BoxRule
from wwbl.clip import FrozenCLIP
from wwbl.extractors.network_g import NetworkGExtractor
from wwbl.inference.captioner import CaptionSettings
from wwbl.inference.community import community_detection, representatives
from wwbl.inference.pipeline import GroundingPipeline, WWbLPipeline
from wwbl.inference.proposals import ProposalGenerator
from wwbl.networks import GroundingNet


def build_g(clip: FrozenCLIP, side: int, device: torch.device) -> NetworkGExtractor:
    net = GroundingNet(text_dim=clip.embed_dim, pretrained_backbone=False).to(device).eval()
    return NetworkGExtractor(clip, net, input_size=side)


def wwbl_stages(args, device, clip, g, captioner) -> list[list[object]]:
    image = synthetic_photo(*args.image_size, seed=args.seed)
    proposer = ProposalGenerator()
    rows: list[list[object]] = []
    t = time_call(lambda: proposer(image), args.repeats)
    proposals = proposer(image)
    n = len(proposals)
    rows.append(["1 proposals (selective search + grid)", t, f"{n} proposals"])

    crops = proposals[: args.caption_crops]
    captioner.caption_regions([image], [crops[:1]])  # warm-up on one crop (a crop costs seconds on CPU)
    t_crops = time_call(lambda: captioner.caption_regions([image], [crops]), 1, warmup=0)
    per_crop = t_crops / len(crops)
    rows.append([f"2 captioning, {len(crops)} crops in one batch", t_crops, f"{per_crop:.3g} s/crop"])
    pixels = captioner.processor.image_processor(images=captioner.crops(image, crops), return_tensors="pt")
    pixels = pixels.pixel_values.to(device)
    with torch.no_grad():
        t_vision = time_call(lambda: captioner.model.vision_model(pixel_values=pixels), 1)
    decoding = f"beam-search decoding ({captioner.settings.num_beams} beams, ≤{captioner.settings.max_length} tokens)"
    rows.append(["2a of which BLIP image encoder", t_vision,
                 f"{t_vision / len(crops):.3g} s/crop; the rest is {decoding}"])
    if args.compare_unbatched:
        one = lambda: [captioner.caption_regions([image], [crops[i:i + 1]]) for i in range(len(crops))]
        t_one = time_call(one, 1, warmup=0)
        rows.append([f"2' captioning, {len(crops)} crops one by one", t_one,
                     f"{t_one / len(crops):.3g} s/crop (batched x{t_one / t_crops:.2f} faster)"])
    rows.append([f"2 captioning, all {n} crops (extrapolated)", per_crop * n, "per-crop cost × N"])

    counter = iter(range(10**6))
    m = min(n, args.text_captions)
    full_context = lambda: clip.model.encode_text(clip.tokenize(random_phrases(m, seed=next(counter))))  # noqa: E731
    with torch.no_grad():
        t_full = time_call(full_context, args.repeats) * n / m
    rows.append([f"3' text encoding, {n} captions, open_clip's full 77-token context", t_full,
                 f"{1e3 * t_full / n:.3g} ms/caption"])
    t_text = time_call(lambda: clip.encode_text(random_phrases(m, seed=next(counter))), args.repeats) * n / m
    rows.append([f"3 text encoding, {n} captions (FrozenCLIP: context cut to the longest)", t_text,
                 f"{1e3 * t_text / n:.3g} ms/caption, x{t_full / t_text:.1f} vs full context"
                 + (f" (timed on {m}, × N/{m})" if m < n else "")])

    emb = clip.encode_text(random_phrases(n, seed=10**7)).cpu()
    t_cluster = time_call(lambda: representatives(emb, community_detection(emb, 0.85, 2)), args.repeats)
    rows.append([f"4 clustering, {n} captions", t_cluster, ""])

    phrases = random_phrases(args.phrases, seed=1)
    t_maps = time_call(lambda: g.heatmaps([image], [phrases]), args.repeats)
    rows.append([f"5 heatmaps (g, S={args.g_size}), {args.phrases} phrases", t_maps,
                 f"{t_maps / args.phrases:.3g} s/phrase"])

    maps = g.heatmaps([image], [phrases])[0]
    rule = BoxRule()
    t_boxes = time_call(lambda: rule(maps, phrases), args.repeats)
    rows.append([f"6 boxes, {args.phrases} heatmaps {args.image_size[0]}×{args.image_size[1]}", t_boxes, ""])
    total = t + per_crop * n + t_text + t_cluster + t_maps + t_boxes
    rows.append(["Algorithm 1 per image (sum, captioning and text extrapolated)", total, ""])

    if args.full:
        pipeline = WWbLPipeline(g, captioner, proposals=proposer, boxes=rule)
        t_full = time_call(lambda: pipeline([image]), 1, warmup=0)
        rows.append([f"WWbLPipeline end to end ({n} crops captioned)", t_full, ""])
    return rows


def wsg_rows(args, device, g) -> list[list[object]]:
    images = [synthetic_photo(*args.image_size, seed=args.seed + k) for k in range(args.wsg_images)]
    phrases = [random_phrases(args.phrases, seed=100 + k) for k in range(args.wsg_images)]
    pipeline = GroundingPipeline(g)
    pairs = args.wsg_images * args.phrases
    t_batch = time_call(lambda: pipeline(images, phrases), args.repeats)
    one_by_one = lambda: [pipeline([img], [[p]]) for img, plist in zip(images, phrases) for p in plist]
    t_loop = time_call(one_by_one, 1, warmup=0)
    return [[f"WSG, {args.wsg_images} images × {args.phrases} phrases, one call", t_batch, 1e3 * t_batch / pairs],
            ["WSG, one call per (image, phrase)", t_loop, 1e3 * t_loop / pairs]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--image-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    parser.add_argument("--caption-crops", type=int, default=2, help="crops captioned in the timed batch")
    parser.add_argument("--phrases", type=int, default=5, help="cluster phrases per image (WWbL) / phrases (WSG)")
    parser.add_argument("--text-captions", type=int, default=32,
                        help="captions in the timed text-encoding batch (cost scaled to all N)")
    parser.add_argument("--wsg-images", type=int, default=2)
    parser.add_argument("--g-size", type=int, default=299, help="network g's input side")
    parser.add_argument("--max-length", type=int, default=30, help="BLIP max_length (reference 30)")
    parser.add_argument("--compare-unbatched", action="store_true", help="also caption the crops one by one")
    parser.add_argument("--full", action="store_true", help="also run WWbLPipeline end to end (slow on CPU)")
    parser.add_argument("--skip-wwbl", action="store_true")
    args = parser.parse_args()
    device = setup(args)
    clip = FrozenCLIP("ViT-B-32", pretrained="random").to(device)
    g = build_g(clip, args.g_size, device)
    if not args.skip_wwbl:
        captioner = random_blip_captioner(device, CaptionSettings(max_length=args.max_length))
        print(f"\n## WWbL Algorithm 1, one {args.image_size[0]}×{args.image_size[1]} image")
        print_table(["stage", "seconds", "note"], wwbl_stages(args, device, clip, g, captioner))
    print("\n## WSG grounding (network g + boxes)")
    print_table(["run", "seconds", "ms per (image, phrase)"], wsg_rows(args, device, g))


if __name__ == "__main__":
    main()
