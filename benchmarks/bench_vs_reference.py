"""Our training step and our Algorithm 1 beside the released code's formulation of the same computation.

    python benchmarks/bench_vs_reference.py train [--size tiny|paper] [--batches 2] [--precision 32-true]
                                                  [--repeats 3] [--flops] [--markdown FILE] [--device cpu]
    python benchmarks/bench_vs_reference.py wwbl  [--size tiny|paper] [--max-proposals 20] [--images 1]
                                                  [--chunk 120] [--precision fp32] [--repeats 2] [--markdown FILE]

The baselines are `baselines.ReleasedTrainingStep` and `baselines.ReleasedWWbL` (what they do, and
the test that they compute our numbers: their docstrings, `tests/benchmarks/test_baselines.py`). In one
process the formulations alternate, repetition by repetition, in rotating order, after one untimed
warm-up each; every figure is the median over the repetitions, so machine load hits all alike and the
ratio is measured under the same conditions.

train — one optimisation step of g (WSG: network g + CLIP, the four losses) on B random images with
fresh phrases each step (no text-cache hits), our `WWbLModule.compute_losses` + backward + SGD versus
the released `gen_step` with CLIP unfrozen (the release) and frozen (to separate what freezing buys
from the rest). The module uses the released loss options (`baselines.RELEASED_LOSS_OPTIONS`), so both
compute the same losses. Reported: samples/s, the stage shares, peak memory (`_common.PeakMemory`), the
ratio to ours; with ``--flops`` the FLOPs of one step (`torch.utils.flop_counter.FlopCounterMode`: matmuls,
convolutions, attention; forward and backward) and, on a GPU whose peak is known or given
(``--peak-tflops``), the MFU = FLOPs / step time / peak. Each formulation's MFU uses its own FLOPs (the
release does more work: CLIP's weight gradients). ``--batches 1 2 4`` gives the scaling table.

wwbl — Algorithm 1 on synthetic 640×480 photos: our `WWbLPipeline` (all images in one call: captions
batched across images in chunks of ``--chunk``, text cached, g's encoder once per image; no confidence
scoring, which the release does not have) versus the release (image by image, chunks per image, g per
cluster). Reported per image: seconds by stage, proposals captioned, clusters; whether both gave the same
captions. ``--max-proposals 10 20 50`` and ``--images 1 2 4`` give the scaling tables.

Sizes: "paper" = ViT-B-32 CLIP (random weights), full VGG16 g at ``--input-size`` (299), BLIP-base
(`BlipConfig()`, BERT-size tokenizer built offline); "tiny" = the test models (seconds on a CPU). Random
BLIP weights decode every caption to ``max_length`` (an upper bound of a trained BLIP); its vision tower is
re-drawn so that captions differ between crops (`_common.captions_depend_on_the_image`).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from _common import (
    PeakMemory,
    RepeatableProposals,
    StageTimer,
    add_common_args,
    random_blip_captioner,
    random_phrases,
    setup,
    sync,
    synthetic_photo,
    tiny_blip_captioner,
)
from baselines import RELEASED_LOSS_OPTIONS, RELEASED_PREFIX, RELEASED_WEIGHTS, ReleasedTrainingStep, ReleasedWWbL
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.flop_counter import FlopCounterMode

from wwbl.box_rules import BoxRule
from wwbl.cli import add_precision_argument
from wwbl.clip import FrozenCLIP
from wwbl.defaults import CAPTION_CHUNK, CLUSTER_THRESHOLD, MIN_CLUSTER_SIZE
from wwbl.devices import autocast
from wwbl.extractors.network_g import NetworkGExtractor
from wwbl.inference import WWbLPipeline
from wwbl.inference.captioner import CaptionSettings
from wwbl.inference.proposals import ProposalGenerator
from wwbl.lit_module import WWbLModule
from wwbl.networks import GroundingNet

SIZES = {
    "tiny": {"clip_model": "wwbl-tiny-vit", "side": 64,
             "network": {"architecture": "grounding_net", "vgg_width_div": 16, "decoder_channels": 16}},
    "paper": {"clip_model": "ViT-B-32", "side": None,  # --input-size
              "network": {"architecture": "grounding_net"}},
}
# Dense peak FLOP/s of known GPUs, by a substring of torch.cuda.get_device_name (TFLOP/s). H200 SXM = H100 SXM
# compute (same GH100 die): NVIDIA's datasheet gives BF16/FP16 Tensor 1,979 and TF32 Tensor 989 TFLOPS *with*
# 2:4 sparsity (dense: half), FP32 (CUDA cores) 67 TFLOPS. fp32 training runs PyTorch's default: cuDNN
# convolutions in TF32 (torch.backends.cudnn.allow_tf32), matmuls in FP32 — its MFU is given against both.
PEAK_TFLOPS = {"H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
               "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}}
TRAIN_STAGES = ["text enc", "relevancy", "g forward", "clip f/b fwd", "losses (fwd)", "backward", "optimiser"]
WWBL_STAGES = ["proposals", "captioning", "text enc", "clustering", "heatmaps", "boxes"]


# -- shared: interleaved repetitions --------------------------------------------------------------
class Sample:
    """One formulation's repetitions: total seconds, seconds per stage, peak memory."""

    def __init__(self) -> None:
        self.totals: list[float] = []
        self.stages: dict[str, list[float]] = {}
        self.peaks: list[float] = []

    def add(self, total: float, stages: dict[str, float], peak: float | None) -> None:
        self.totals.append(total)
        for name, seconds in stages.items():
            self.stages.setdefault(name, []).append(seconds)
        if peak is not None:
            self.peaks.append(peak)

    @property
    def total(self) -> float:
        return statistics.median(self.totals)

    def stage(self, name: str) -> float:
        return statistics.median(self.stages.get(name, [0.0]))

    @property
    def peak(self) -> float | None:
        return statistics.median(self.peaks) if self.peaks else None


def interleave(runs: dict[str, Callable[[int], None]], timers: dict[str, StageTimer], repeats: int,
               device: torch.device) -> dict[str, Sample]:
    """Each run once untimed, then `repeats` rounds in rotating order; `runs[name](seed)` does one repetition."""
    names = list(runs)
    for name in names:
        runs[name](10**6)
    samples = {name: Sample() for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            timers[name].reset()
            with PeakMemory(device) as memory:
                sync(device)
                start = time.perf_counter()
                runs[name](r)
                sync(device)
                total = time.perf_counter() - start
            samples[name].add(total, dict(timers[name].seconds), memory.mib)
    return samples


def fmt_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    cells = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


# -- training -------------------------------------------------------------------------------------
class TrainPrecision:
    """Lightning's precision strings for a hand-written step: "32-true" (or "32"), "bf16-mixed", "16-mixed"
    (autocast from Lightning's own `MixedPrecision` plugin; a `GradScaler` for "16-mixed")."""

    CHOICES = ("32-true", "32", "bf16-mixed", "16-mixed")

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision not in self.CHOICES:
            raise SystemExit(f"--precision must be one of {list(self.CHOICES)}, got {precision!r}")
        self.name = precision
        mixed = precision.endswith("-mixed")
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        self.plugin = MixedPrecision(precision, device.type, self.scaler) if mixed else None

    def context(self):
        return self.plugin.forward_context() if self.plugin else nullcontext()

    @property
    def peak_key(self) -> str:
        return "fp32" if self.plugin is None else "bf16"  # fp16 and bf16 tensor cores peak alike


def build_module(args: argparse.Namespace, device: torch.device) -> WWbLModule:
    size = SIZES[args.size]
    side = size["side"] or args.input_size
    options = {k: v for k, v in RELEASED_LOSS_OPTIONS.items()}
    module = WWbLModule(clip_model=size["clip_model"], clip_pretrained="random", clip_precision=args.clip_precision,
                        pretrained_backbone=False, input_size=side, network=size["network"],
                        text_prefix=RELEASED_PREFIX, **options, **RELEASED_WEIGHTS)
    return module.to(device).train()


class Router:
    """Stage timing of our module's own calls, on only while our step runs (the baselines call g too)."""

    def __init__(self) -> None:
        self.timer: StageTimer | None = None

    def instrument(self, module: WWbLModule) -> None:
        def timed(name, fn):
            @functools.wraps(fn)
            def wrapper(*a, **kw):
                with (self.timer(name) if self.timer else nullcontext()):
                    return fn(*a, **kw)
            return wrapper

        module.clip.relevancy = timed("relevancy", module.clip.relevancy)
        module._encode = timed("clip f/b fwd", module._encode)
        module.net.forward = timed("g forward", module.net.forward)
        module.clip.encode_text = timed("text enc", module.clip.encode_text)


def training_runs(module: WWbLModule, batch: int, precision: TrainPrecision, device: torch.device,
                  timers: dict[str, StageTimer]) -> dict[str, Callable[[int], None]]:
    optimiser = module.configure_optimizers()
    router = Router()
    router.instrument(module)
    side = module.hparams.input_size
    images = torch.rand(batch, 3, side, side, device=device)
    scaler = precision.scaler

    def ours(seed: int) -> None:
        timer = router.timer = timers["ours"]
        try:
            optimiser.zero_grad(set_to_none=True)
            with precision.context():
                with timer("losses (fwd)"):
                    loss = module.compute_losses(images, random_phrases(batch, seed=seed))["loss"]
            with timer("backward"):
                (scaler.scale(loss) if scaler else loss).backward()
            with timer("optimiser"):
                if scaler:
                    scaler.step(optimiser)
                    scaler.update()
                else:
                    optimiser.step()
        finally:
            router.timer = None

    def released(unfrozen: bool, name: str) -> Callable[[int], None]:
        step = ReleasedTrainingStep(module, optimiser, clip_requires_grad=unfrozen, timer=timers[name], scaler=scaler)

        def run(seed: int) -> None:
            with precision.context():
                step(images, random_phrases(batch, seed=seed))
        return run

    return {"ours": ours, "released": released(True, "released"),
            "released, CLIP frozen": released(False, "released, CLIP frozen")}


def count_flops(run: Callable[[int], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        run(7)
    return int(counter.get_total_flops())


def peak_tflops(args: argparse.Namespace, device: torch.device) -> dict[str, float] | None:
    if args.peak_tflops:
        return {"bf16": args.peak_tflops, "tf32": args.peak_tflops, "fp32": args.peak_tflops}
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks for key, peaks in PEAK_TFLOPS.items() if key in name), None)


def mfu(flop_per_s: float, peaks: dict[str, float], key: str) -> str:
    """MFU against the precision's peak; fp32 also against the dense TF32 peak (cuDNN's default for convolutions)."""
    text = f"{100 * flop_per_s / (peaks[key] * 1e12):.2f} %"
    if key == "fp32" and peaks["tf32"] != peaks["fp32"]:
        text += f" ({100 * flop_per_s / (peaks['tf32'] * 1e12):.2f} % of TF32)"
    return text


def bench_train(args: argparse.Namespace, device: torch.device) -> str:
    precision = TrainPrecision(args.precision, device)
    module = build_module(args, device)
    size = SIZES[args.size]
    peaks = peak_tflops(args, device)
    parts = [f"### Training step, {args.size} size ({size['clip_model']} CLIP, g {size['network']}, "
             f"S = {module.hparams.input_size}), precision {precision.name}, CLIP {args.clip_precision}, "
             f"{device.type}, median of {args.repeats}"]
    scaling = []
    for batch in args.batches:
        timers = {name: StageTimer(device) for name in ("ours", "released", "released, CLIP frozen")}
        runs = training_runs(module, batch, precision, device, timers)
        samples = interleave(runs, timers, args.repeats, device)
        flops = {name: count_flops(run) for name, run in runs.items()} if args.flops else {}
        ours = samples["ours"]
        rows, share_rows = [], []
        for name, s in samples.items():
            row = [name, batch / s.total, s.total, fmt_mib(s.peak), f"×{s.total / ours.total:.2f}"]
            if flops:
                row.append(f"{flops[name] / 1e9:.4g}")
                if peaks:
                    row.append(mfu(flops[name] / s.total, peaks, precision.peak_key))
            rows.append(row)
            share_rows.append([name] + [f"{s.stage(st):.4g} ({100 * s.stage(st) / s.total:.0f} %)"
                                        for st in TRAIN_STAGES])
        header = ["formulation", "samples/s", "s/step", "peak MiB", "time vs ours"]
        if flops:
            header.append("GFLOPs/step")
            if peaks:
                header.append(f"MFU (peak {peaks[precision.peak_key]:g} TFLOP/s)")
        parts += [f"\nB = {batch}:\n", markdown_table(header, rows), "\nStages, s/step (share of the step):\n",
                  markdown_table(["formulation"] + TRAIN_STAGES, share_rows)]
        rel, frozen = samples["released"], samples["released, CLIP frozen"]
        scaling.append([batch, batch / ours.total, batch / rel.total, batch / frozen.total,
                        f"×{rel.total / ours.total:.2f}", f"×{frozen.total / ours.total:.2f}",
                        fmt_mib(ours.peak), fmt_mib(rel.peak)])
    if len(args.batches) > 1:
        parts += ["\nScaling with the batch size (samples/s; speed-up of ours over each baseline):\n",
                  markdown_table(["B", "ours", "released", "released, CLIP frozen", "vs released",
                                  "vs frozen", "peak MiB ours", "peak MiB released"], scaling)]
    return "\n".join(parts)


# -- WWbL Algorithm 1 -----------------------------------------------------------------------------
def build_wwbl_parts(args: argparse.Namespace, device: torch.device):
    size = SIZES[args.size]
    clip = FrozenCLIP(size["clip_model"], pretrained="random").to(device)
    network = {k: v for k, v in size["network"].items() if k != "architecture"}
    net = GroundingNet(text_dim=clip.embed_dim, pretrained_backbone=False, **network)
    g = NetworkGExtractor(clip, net, input_size=size["side"] or args.input_size)
    settings = CaptionSettings(max_length=args.max_length, chunk_size=args.chunk)
    captioner = (tiny_blip_captioner(device, settings) if args.size == "tiny"
                 else random_blip_captioner(device, settings, vary=True))
    return g, captioner


class StageRouter:
    """Times our pipeline's stages through its own calls, on only while our pipeline runs."""

    def __init__(self, pipeline: WWbLPipeline) -> None:
        self.timer: StageTimer | None = None
        self.pipeline = pipeline
        for attribute, stage in (("_propose", "proposals"), ("text_encoder", "text enc"),
                                 ("cluster_captions", "clustering+text"), ("boxes", "boxes")):
            setattr(pipeline, attribute, self._timed(stage, getattr(pipeline, attribute)))
        pipeline.captioner.caption_regions = self._timed("captioning", pipeline.captioner.caption_regions)
        pipeline.heatmaps.heatmaps = self._timed("heatmaps", pipeline.heatmaps.heatmaps)

    def _timed(self, name: str, fn):
        def wrapper(*a, **kw):
            with (self.timer(name) if self.timer else nullcontext()):
                return fn(*a, **kw)
        return wrapper


def wwbl_runs(g, captioner, images, max_proposals: int | None, device: torch.device, precision: str,
              timers: dict[str, StageTimer], outputs: dict[str, list]) -> dict[str, Callable[[int], None]]:
    proposals = RepeatableProposals(ProposalGenerator(max_proposals=max_proposals))
    rule = BoxRule()
    pipeline = WWbLPipeline(g, captioner, proposals=proposals, boxes=rule, scoring=None)
    router = StageRouter(pipeline)
    released = ReleasedWWbL(g, captioner, proposals, rule, CLUSTER_THRESHOLD, MIN_CLUSTER_SIZE, timer=timers["released"])

    def ours(seed: int) -> None:
        router.timer = timers["ours"]
        try:
            with torch.no_grad(), autocast(device, precision):
                outputs["ours"] = pipeline(images)
        finally:
            router.timer = None
        seconds = timers["ours"].seconds  # the text encoder runs inside the clustering call
        seconds["clustering"] = seconds.pop("clustering+text", 0.0) - seconds.get("text enc", 0.0)

    def reference(seed: int) -> None:
        with autocast(device, precision):
            outputs["released"] = released(images)

    return {"ours": ours, "released": reference}


def match(ours: list, released: list) -> str:
    """How far the two outputs agree: captions, clusters, cluster phrases. A two-caption cluster's members tie
    for representative, so the 1e-7 difference between our short-context text encoding and the release's
    full context can pick the other member: such differences are counted as ties."""
    captions = all(a.captions == b.captions for a, b in zip(ours, released))
    clusters = all(a.clusters == b.clusters for a, b in zip(ours, released))
    same = ties = 0
    for a, b in zip(ours, released):
        for group, p, q in zip(a.clusters, a.phrases, b.phrases):
            members = {a.captions[i].strip() for i in group}
            same += p == q
            ties += p != q and len(group) == 2 and {p, q} == members
    total = sum(len(a.phrases) for a in ours)
    return (f"same captions: {'yes' if captions else 'NO'}, same clusters: {'yes' if clusters else 'NO'}, "
            f"same phrases: {same}/{total}" + (f" ({ties} two-caption ties)" if ties else ""))


def bench_wwbl(args: argparse.Namespace, device: torch.device) -> str:
    g, captioner = build_wwbl_parts(args, device)
    size = SIZES[args.size]
    parts = [f"### WWbL Algorithm 1, {args.size} size ({size['clip_model']} CLIP, g at {g.input_size}², BLIP "
             f"{'tiny' if args.size == 'tiny' else 'base'}, ≤{args.max_length} tokens, chunks of {args.chunk}), "
             f"precision {args.precision}, {device.type}, 640×480 synthetic photos, median of {args.repeats}"]
    scaling = []
    for max_proposals in args.max_proposals:
        for count in args.images:
            images = [synthetic_photo(640, 480, seed=args.seed + k) for k in range(count)]
            timers = {name: StageTimer(device) for name in ("ours", "released")}
            outputs: dict[str, list] = {}
            runs = wwbl_runs(g, captioner, images, max_proposals, device, args.precision, timers, outputs)
            samples = interleave(runs, timers, args.repeats, device)
            ours, rel = samples["ours"], samples["released"]
            crops = sum(len(r.proposals) for r in outputs["ours"]) / count
            clusters = sum(len(r.phrases) for r in outputs["ours"]) / count
            agree = match(outputs["ours"], outputs["released"])
            rows = [[name, s.total / count] + [s.stage(st) / count for st in WWBL_STAGES] + [fmt_mib(s.peak)]
                    for name, s in samples.items()]
            parts += [f"\n{count} image(s), ≤{max_proposals} proposals: {crops:.0f} crops captioned and "
                      f"{clusters:.1f} clusters per image; {agree}; "
                      f"ours ×{rel.total / ours.total:.2f} faster\n",
                      markdown_table(["formulation", "s/image"] + [f"{st} s/image" for st in WWBL_STAGES]
                                     + ["peak MiB"], rows)]
            scaling.append([max_proposals, count, f"{crops:.0f}", f"{clusters:.1f}", ours.total / count,
                            rel.total / count, f"×{rel.total / ours.total:.2f}",
                            f"×{rel.stage('captioning') / max(ours.stage('captioning'), 1e-9):.2f}"])
    if len(scaling) > 1:
        parts += ["\nScaling with the proposal count and the images per call (s/image):\n",
                  markdown_table(["max proposals", "images", "crops/image", "clusters/image", "ours",
                                  "released", "speed-up", "captioning speed-up"], scaling)]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    train = sub.add_parser("train", help="training step: ours vs the released gen_step")
    wwbl = sub.add_parser("wwbl", help="Algorithm 1: ours vs the released inference_wwbl")
    for p in (train, wwbl):
        add_common_args(p)
        p.add_argument("--size", choices=sorted(SIZES), default="tiny", help="model sizes (default tiny)")
        p.add_argument("--input-size", type=int, default=299, help="g's input side at the paper size (paper 299)")
        p.add_argument("--markdown", type=Path, help="also append the tables to this file")
    train.set_defaults(repeats=3)
    train.add_argument("--batches", type=int, nargs="+", default=[2], help="batch sizes (paper: 32)")
    train.add_argument("--precision", default="32-true", help=f"Lightning precision: {list(TrainPrecision.CHOICES)}")
    train.add_argument("--clip-precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                       help="CLIP's weights (WWbLModule clip_precision; the release ran fp16 on GPU)")
    train.add_argument("--flops", action="store_true", help="count the FLOPs of one step of each (and the MFU)")
    train.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s for the MFU (default: known GPUs)")
    add_precision_argument(wwbl)
    wwbl.add_argument("--max-proposals", type=int, nargs="+", default=[20], help="proposal caps (released: none)")
    wwbl.add_argument("--images", type=int, nargs="+", default=[1], help="images per call")
    wwbl.add_argument("--chunk", type=int, default=CAPTION_CHUNK, help=f"captioning chunk (released {CAPTION_CHUNK})")
    wwbl.add_argument("--max-length", type=int, default=30, help="BLIP max_length (released 30)")
    args = parser.parse_args()
    device = setup(args)
    text = bench_train(args, device) if args.what == "train" else bench_wwbl(args, device)
    print(text)
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as out:
            out.write(text + "\n\n")


if __name__ == "__main__":
    main()
