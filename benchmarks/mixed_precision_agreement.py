"""How far mixed precision moves WWbL's training signals from fp32 (CPU autocast, which is real bf16/fp16).

    python benchmarks/mixed_precision_agreement.py [--settings tiny shapes vitb] [--batch 8] [--threads 1]

For each setting, one batch, the module's own code under ``torch.autocast`` against the same code in fp32:

* relevancy — `FrozenCLIP.relevancy` (the L_rmap target) under bf16 and fp16 autocast, and under bf16
  autocast with the rollout accumulated in bf16 (the naive variant the fp32 rollout guards against);
  max / mean absolute difference of the [0, 1] maps, for the last block only (start -1) and all blocks (0);
* losses — every term of `WWbLModule.compute_losses` (absolute and relative difference);
* gradients into g — cosine and relative error of all of g's gradients after ``loss.backward()``, with the
  bf16 error split into its sources: autocast on g only, and on CLIP only (relevancy + masked images).

Settings: "tiny" = random wwbl-tiny-vit CLIP (2 blocks) + random VGG16/16 g at 64², smooth random images;
"shapes" = the trained shapes-world CLIP (4 blocks) and g from ``checkpoints/`` on shapes-world scenes at
128² (all-block relevancy, as ``configs/shapes/g.yaml``); "vitb" = random ViT-B-32 (12 blocks, 224²),
relevancy only. Deterministic: the numbers depend only on the seed, not on the machine's load.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import add_common_args, print_table, setup
from safetensors.torch import load_file

import wwbl.clip.relevancy as relevancy_module
from shapes_world.generator import ShapesWorld, WorldConfig
from wwbl.lit_module import WWbLModule

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def build(setting: str, batch: int) -> tuple[WWbLModule, torch.Tensor, list[str]]:
    """The module (train mode), a batch of [0, 1] images and one phrase per image."""
    torch.manual_seed(0)
    if setting == "shapes":
        g_dir = REPO / "checkpoints" / "shapes_g"
        kwargs = json.loads((g_dir / "config.json").read_text())["kwargs"]
        module = WWbLModule(clip_model="shapes-vit", clip_pretrained=None,
                            clip_checkpoint=str(REPO / "checkpoints" / "shapes_clip"),
                            network={"architecture": "grounding_net", **kwargs}, pretrained_backbone=False,
                            input_size=128, relevancy_start_layer=0)
        module.net.load_state_dict(load_file(g_dir / "model.safetensors"))
        world = ShapesWorld(WorldConfig(image_size=128))
        scenes = [world.scene("train", i) for i in range(batch)]
        images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in scenes])
        return module.train(), images, [s.objects[0].phrase for s in scenes]
    clip_model, side = ("wwbl-tiny-vit", 64) if setting == "tiny" else ("ViT-B-32", 224)
    module = WWbLModule(clip_model=clip_model, clip_pretrained="random", pretrained_backbone=False,
                        network={"architecture": "grounding_net", "vgg_width_div": 16}, input_size=side)
    images = F.interpolate(torch.rand(batch, 3, 8, 8), size=(side, side), mode="bilinear", align_corners=False)
    return module.train(), images, [f"thing number {i}" for i in range(batch)]


def autocast(dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def rollout_in(dtype: torch.dtype) -> Iterator[None]:
    """The relevancy with its rollout R ← R + Ā R (and Ā) accumulated in ``dtype`` instead of fp32."""
    def rollout(probs, grads):
        b, _, length, _ = probs[0].shape
        rel = torch.eye(length, dtype=dtype).expand(b, length, length)
        for attn, grad in zip(probs, grads):
            rel = rel + (grad.to(dtype) * attn.detach().to(dtype)).clamp(min=0).mean(dim=1) @ rel
        return rel.float()

    original = relevancy_module._rollout
    relevancy_module._rollout = rollout
    try:
        yield
    finally:
        relevancy_module._rollout = original


def relevancy_rows(setting: str, module: WWbLModule, images: torch.Tensor, phrases: list[str]) -> list[list]:
    clip = module.clip
    text = clip.encode_text(phrases)
    x, normalize = module._clip_inputs(images)
    rows = []
    for start in (-1, 0):
        def maps(dtype: torch.dtype | None, start: int = start) -> torch.Tensor:
            with autocast(dtype):
                return clip.relevancy(x, text, start_layer=start, normalize_input=normalize)

        ref = maps(None)
        results = {"bf16 autocast": maps(torch.bfloat16), "fp16 autocast": maps(torch.float16)}
        with rollout_in(torch.bfloat16):
            results["bf16 autocast, bf16 rollout"] = maps(torch.bfloat16)
        for name, out in results.items():
            diff = (out - ref).abs()
            rows.append([setting, start, name, f"{diff.max():.2e}", f"{diff.mean():.2e}"])
    return rows


def step(module: WWbLModule, images: torch.Tensor, phrases: list[str], outer: torch.dtype | None,
         g_dtype: Callable[[], contextlib.AbstractContextManager] | None = None) -> tuple[dict, torch.Tensor]:
    """Loss terms and g's flattened gradients of one `compute_losses` + backward (as Lightning: backward
    outside autocast); ``g_dtype`` wraps g's forward in its own autocast context."""
    module.net.zero_grad()
    forward = module.net.forward
    if g_dtype is not None:
        def wrapped(*args, **kwargs):
            with g_dtype():
                return forward(*args, **kwargs)
        module.net.forward = wrapped
    try:
        with autocast(outer):
            terms = module.compute_losses(images, phrases)
        terms["loss"].backward()
    finally:
        module.net.__dict__.pop("forward", None)
    return ({k: v.item() for k, v in terms.items()},
            torch.cat([p.grad.flatten() for p in module.net.parameters() if p.grad is not None]).double())


def loss_and_grad_rows(setting: str, module: WWbLModule, images: torch.Tensor,
                       phrases: list[str]) -> tuple[list[list], list[list]]:
    ref_terms, ref_grad = step(module, images, phrases, None)
    runs = {"bf16 autocast": (torch.bfloat16, None), "fp16 autocast": (torch.float16, None),
            "bf16 on g only": (None, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
            "bf16 on CLIP only": (torch.bfloat16, lambda: torch.autocast("cpu", enabled=False))}
    loss_rows, grad_rows = [], []
    for name, (outer, g_ctx) in runs.items():
        terms, grad = step(module, images, phrases, outer, g_ctx)
        for key in ("fore", "back", "rmap", "reg", "loss"):
            abs_err = abs(terms[key] - ref_terms[key])
            loss_rows.append([setting, name, key, f"{ref_terms[key]:.4f}", f"{abs_err:.1e}",
                              f"{abs_err / abs(ref_terms[key]):.1e}"])
        cos = F.cosine_similarity(grad, ref_grad, dim=0).item()
        grad_rows.append([setting, name, f"{cos:.6f}", f"{((grad - ref_grad).norm() / ref_grad.norm()).item():.2e}"])
    return loss_rows, grad_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["tiny", "shapes", "vitb"], choices=["tiny", "shapes", "vitb"])
    parser.add_argument("--batch", type=int, default=8, help="images per batch (vitb: 2)")
    add_common_args(parser)
    args = parser.parse_args()
    setup(args)
    rel_rows, loss_rows, grad_rows = [], [], []
    for setting in args.settings:
        module, images, phrases = build(setting, 2 if setting == "vitb" else args.batch)
        rel_rows += relevancy_rows(setting, module, images, phrases)
        if setting != "vitb":
            losses, grads = loss_and_grad_rows(setting, module, images, phrases)
            loss_rows += losses
            grad_rows += grads
    print_table(["setting", "start layer", "relevancy", "max abs Δ", "mean abs Δ"], rel_rows)
    if loss_rows:
        print_table(["setting", "run", "term", "fp32 value", "abs Δ", "abs Δ / abs fp32"], loss_rows)
        print_table(["setting", "run", "cos(∇g, ∇g fp32)", "‖Δ∇g‖ / ‖∇g fp32‖"], grad_rows)


if __name__ == "__main__":
    main()
