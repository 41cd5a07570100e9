"""Reference-formulation baselines: the same computations, done the way the released code does them.

The benchmarks time our training step and our Algorithm 1 beside these, in one run, so that the
ratio says what the formulation buys. They are written from the description of the released code
(`/work/shared/notes/wwbl-reference-implementation.md` §4, §4.1, §7; `train_grounding.py::gen_step`,
`utils.py::interpret_new`, `inference_grounding.py::inference_wwbl`), reusing only our network g,
our CLIP weights, BLIP, the proposal generator, the clustering and the box rule — the parts both
formulations share — so that both compute the same numbers (`tests/benchmarks/test_baselines.py`).

Training (`ReleasedTrainingStep`), as `gen_step`:

* CLIP is **not frozen**: its parameters require grad (they are merely left out of the optimiser), so
  every CLIP forward builds a full graph and the backward computes weight gradients for CLIP's image
  and text towers (``clip_requires_grad=False`` is the frozen variant, to show where the ratio comes from;
  the relevancy pass then makes its input require grad instead, as the notes suggest).
* The phrases are encoded at the full 77-token context with a graph, uncached; z_t is not detached, so
  the backward also runs through the text tower.
* The relevancy target is `interpret_new`: one full CLIP forward ``model(images, texts)`` — every image
  block with its attention probabilities kept (the vendored Chefer CLIP computes attention explicitly and
  hooks each block's ``attn_probs``), plus the text tower a second time — then ``autograd.grad`` of the
  summed matched logits w.r.t. the last block's attention. It is batched over the B pairs (one backward),
  not per sample.
* The foreground and background images go through CLIP in two separate forwards, each with the explicit
  Chefer attention and its gradient hooks.

Algorithm 1 (`ReleasedWWbL`), as `inference_wwbl`: one image at a time; each crop preprocessed on its
own, captioned in chunks of ``chunk_size`` (120) per image — no batching across images, no sharing of
identical crops — by the released BLIP's decoding (salesforce/BLIP ``models/med.py``: the decoder caches
its self-attention only; every step projects the beam-repeated image embeddings to cross-attention keys
and values again, in every layer); captions encoded at the full context, uncached; per cluster the representative is
encoded again and network g runs once per cluster (its image encoder included). The released code stops
at the heatmaps; the box rule is applied here to each map so that both formulations return boxes.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from wwbl.box_rules import BoxRule
from wwbl.boxes import Detections
from wwbl.clip import FrozenCLIP, minmax_normalize
from wwbl.extractors.network_g import NetworkGExtractor
from wwbl.images import as_tensor01, resize_heatmap, resize_square
from wwbl.inference.blip_decoding import decode_with_cache
from wwbl.inference.captioner import BlipCaptioner
from wwbl.inference.community import community_detection, representatives
from wwbl.inference.proposals import ProposalGenerator
from wwbl.lit_module import WWbLModule

# The loss options under which WWbLModule computes the released losses (notes §4): B×B pairs, |cos| in
# L_back, masking in the [-1, 1] space, L_reg on the 224 mask, the "image of " prompt. The weights are
# read from the module (any weights; the HEAD defaults are fore 0.25, back 0.5, rmap 16, reg 0.25).
RELEASED_LOSS_OPTIONS = {"task": "wsg", "pairing": "all_pairs", "back_abs": True, "mask_space": "reference",
                         "reg_space": "clip", "loss_form": "cosine", "relevancy_start_layer": -1}
RELEASED_WEIGHTS = {"lambda_fore": 0.25, "lambda_back": 0.5, "lambda_rmap": 16.0, "lambda_reg": 0.25}
RELEASED_PREFIX = "image of "


class Timer:
    """The stage-timer protocol the baselines report to (`_common.StageTimer`); a no-op by default."""

    def __call__(self, name: str):
        return nullcontext()


@contextmanager
def _requires_grad(model: nn.Module, on: bool) -> Iterator[None]:
    """CLIP's parameters require grad inside (the released, unfrozen CLIP); frozen again after."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(on)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(False)


class ReleasedTrainingStep:
    """One optimisation step of g computed as the released ``train_grounding.py::gen_step``.

    Args:
        module: a WSG `WWbLModule` with `RELEASED_LOSS_OPTIONS` (so that it computes the same losses)
            and a ViT CLIP; its g, CLIP and loss weights are used.
        optimiser: the optimiser of g (`module.configure_optimizers()`).
        clip_requires_grad: True = the released unfrozen CLIP; False = the same formulation with CLIP frozen.
        timer: a stage timer (`_common.StageTimer`); stages are named as the benchmark's instrumentation of
            our module ("text enc", "relevancy", "g forward", "clip f/b fwd", "backward", "optimiser").
        scaler: a `torch.amp.GradScaler` for fp16 mixed precision (as Lightning's "16-mixed"), else None.
    """

    def __init__(self, module: WWbLModule, optimiser: torch.optim.Optimizer, clip_requires_grad: bool = True,
                 timer=None, scaler: torch.amp.GradScaler | None = None) -> None:
        differing = {k: module.hparams[k] for k, v in RELEASED_LOSS_OPTIONS.items() if module.hparams[k] != v}
        if differing:
            raise ValueError(f"the released formulation computes the losses with {RELEASED_LOSS_OPTIONS}; "
                             f"this module differs in {differing}")
        if not module.clip.is_vit:
            raise ValueError("the released relevancy (interpret_new) needs a ViT CLIP")
        self.module = module
        self.clip: FrozenCLIP = module.clip
        self.optimiser = optimiser
        self.clip_requires_grad = clip_requires_grad
        self.timer = timer or Timer()
        self.scaler = scaler
        self.attn_grads: list[Tensor] = []  # what the vendored CLIP's backward hooks store (attn_grad)

    def __call__(self, images01: Tensor, phrases: Sequence[str]) -> dict[str, Tensor]:
        """zero_grad, the losses, backward and the SGD step; returns the loss terms."""
        self.optimiser.zero_grad()
        with _requires_grad(self.clip.model, self.clip_requires_grad):
            with self.timer("losses (fwd)"):
                terms = self._losses(images01, phrases)
            with self.timer("backward"):
                (self.scaler.scale(terms["loss"]) if self.scaler else terms["loss"]).backward()
        with self.timer("optimiser"):
            if self.scaler:
                self.scaler.step(self.optimiser)
                self.scaler.update()
            else:
                self.optimiser.step()
        self._release_clip_grads()
        return terms

    def losses(self, images01: Tensor, phrases: Sequence[str]) -> dict[str, Tensor]:
        """The loss terms alone (forward), with the released CLIP set-up."""
        with _requires_grad(self.clip.model, self.clip_requires_grad):
            return self._losses(images01, phrases)

    def _losses(self, images01: Tensor, phrases: Sequence[str]) -> dict[str, Tensor]:
        clip, weights = self.clip, self.module.weights
        tokens = clip.tokenize(self.module.phrases_for_clip(phrases))
        with self.timer("text enc"):
            z_t = F.normalize(clip.model.encode_text(tokens).float(), dim=-1)  # full context, with a graph
        side = clip.image_size
        x224 = F.interpolate(images01 * 2.0 - 1.0, size=(side, side), mode="bilinear", align_corners=True)
        with self.timer("relevancy"):
            cam = self._interpret_new(x224.detach(), tokens)
        cam = F.interpolate(cam[:, None], size=images01.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
        with self.timer("g forward"):
            mask = self.module.net(images01, z_t)
        rmap = F.mse_loss(mask, cam)
        m224 = F.interpolate(mask[:, None], size=(side, side), mode="bilinear", align_corners=True)
        with self.timer("clip f/b fwd"):
            z_fore = self._encode_image(x224 * m224)[0]
            z_back = self._encode_image(x224 * (1.0 - m224))[0]
        terms = {"rmap": rmap, "reg": m224.mean(), "fore": (1.0 - z_fore @ z_t.T).mean(),
                 "back": (z_back @ z_t.T).abs().mean()}
        terms["loss"] = (weights.fore * terms["fore"] + weights.reg * terms["reg"] + weights.rmap * terms["rmap"]
                         + weights.back * terms["back"])
        return terms

    def _encode_image(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The vendored Chefer CLIP's image forward: explicit attention in every block, each block's
        probabilities kept and, when they are in a graph, hooked to store their gradient."""
        vit = self.clip.vit
        tokens, probs = vit.run_blocks(vit.tokens_in(x), return_attn=True)
        for p in probs:
            if p.requires_grad:
                p.register_hook(self.attn_grads.append)
        return F.normalize(vit.head(tokens).float(), dim=-1), probs

    def _interpret_new(self, x224: Tensor, tokens: Tensor) -> Tensor:
        """`utils.py::interpret_new`: B×224×224 relevancy in [0, 1] of image i for phrase i (detached)."""
        clip = self.clip
        if not self.clip_requires_grad:
            x224 = x224.requires_grad_(True)  # frozen CLIP: the input carries the graph to the attention
        with torch.enable_grad():
            image_emb, probs = self._encode_image(x224)
            text_emb = F.normalize(clip.model.encode_text(tokens).float(), dim=-1)  # model(images, texts)
            logits = clip.logit_scale * image_emb @ text_emb.T
            score = logits.diagonal().sum()  # one-hot on the matched pairs
            clip.model.zero_grad(set_to_none=False)
            grad = torch.autograd.grad(score, [probs[-1]])[0]
        cam = (grad.float() * probs[-1].detach().float()).clamp(min=0).mean(dim=1)  # B×L×L, heads averaged
        relevance = cam[:, 0, 1:]  # (I + Ā)[CLS, patches]: the identity adds nothing off the diagonal
        grid = clip.vit.grid_of(x224)
        maps = F.interpolate(relevance.reshape(-1, 1, *grid), size=x224.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
        low = maps.flatten(1).min(dim=1).values.view(-1, 1, 1)
        high = maps.flatten(1).max(dim=1).values.view(-1, 1, 1)
        return ((maps - low) / (high - low).clamp_min(1e-12)).detach()  # the released (x − min)/(max − min)

    def _release_clip_grads(self) -> None:
        # The released code keeps CLIP's .grad allocated between steps; freeing them here keeps the
        # interleaved timing of our step from carrying them (the next baseline step allocates them again).
        for p in self.clip.model.parameters():
            p.grad = None
        self.attn_grads.clear()


@dataclass
class ReleasedResult:
    """One image's Algorithm 1 output from the released formulation."""

    proposals: Tensor
    captions: list[str]
    clusters: list[list[int]]
    phrases: list[str]
    heatmaps: Tensor
    detections: Detections


class ReleasedWWbL:
    """Algorithm 1 image by image, as ``inference_grounding.py::inference_wwbl`` (see the module docstring).

    Args:
        extractor: network g behind its extractor (its network, input size, text prefix and CLIP are used).
        captioner: BLIP; its model, processor and decoding settings (``chunk_size`` included) are used.
        proposals, boxes, cluster_threshold, min_cluster_size: as `WWbLPipeline`.
        timer: a stage timer; stages "proposals", "captioning", "text enc", "clustering", "heatmaps", "boxes".
    """

    def __init__(self, extractor: NetworkGExtractor, captioner: BlipCaptioner, proposals: ProposalGenerator,
                 boxes: BoxRule, cluster_threshold: float, min_cluster_size: int, timer=None) -> None:
        self.extractor = extractor
        self.captioner = captioner
        self.proposals = proposals
        self.boxes = boxes
        self.cluster_threshold = cluster_threshold
        self.min_cluster_size = min_cluster_size
        self.timer = timer or Timer()

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> list[ReleasedResult]:
        return [self._one(image.convert("RGB")) for image in images]

    def _one(self, image: Image.Image) -> ReleasedResult:
        with self.timer("proposals"):
            boxes = self.proposals(image)
        with self.timer("captioning"):
            captions = self._caption(image, boxes)
        usable = [i for i, c in enumerate(captions) if c.strip()]
        with self.timer("text enc"):
            emb = self.extractor.clip.encode_text_full_context([captions[i] for i in usable]).float().cpu()
        with self.timer("clustering"):
            local = community_detection(emb, self.cluster_threshold, self.min_cluster_size) if usable else []
            chosen = representatives(emb, local)
        phrases = [captions[usable[i]].strip() for i in chosen]
        with self.timer("heatmaps"):
            heatmaps = self._heatmaps(image, phrases)
        with self.timer("boxes"):
            detections = self._boxes(heatmaps, phrases)
        return ReleasedResult(boxes, captions, [[usable[i] for i in group] for group in local], phrases, heatmaps,
                              detections)

    def _caption(self, image: Image.Image, boxes: Tensor) -> list[str]:
        """Each crop preprocessed alone, the image's crops captioned in chunks of ``chunk_size``."""
        cap, settings = self.captioner, self.captioner.settings
        model = cap.model
        dtype = next(model.parameters()).dtype
        device = next(model.parameters()).device
        pixels = [cap.processor.image_processor(images=[crop], return_tensors="pt").pixel_values
                  for crop in cap.crops(image, boxes)]
        captions: list[str] = []
        for start in range(0, len(pixels), settings.chunk_size):
            chunk = torch.cat(pixels[start:start + settings.chunk_size]).to(device, dtype)
            prompt = cap.processor.tokenizer([settings.prompt] * len(chunk), return_tensors="pt").input_ids
            output = decode_with_cache(model, chunk, prompt.to(device), settings.num_beams,
                                       lambda _: released_blip_cache(model.text_decoder.config),
                                       min_length=settings.min_length, max_length=settings.max_length,
                                       **settings.generate_kwargs)
            captions.extend(_strip_prompt(t, settings.prompt)
                            for t in cap.processor.tokenizer.batch_decode(output, skip_special_tokens=True))
        return captions

    def _heatmaps(self, image: Image.Image, phrases: list[str]) -> Tensor:
        """g once per cluster phrase (image encoder included), each phrase encoded again, full context."""
        g = self.extractor
        tensor = as_tensor01(image)
        square = resize_square([tensor], g.input_size).to(g.device)
        maps = []
        for phrase in phrases:
            z = g.clip.encode_text_full_context([g.text_prefix + phrase])
            raw = g.network(square, z).float()
            heat = resize_heatmap(minmax_normalize(raw).cpu(), tensor.shape[-2:], align_corners=False)
            maps.append(heat.clamp(0, 1))
        return torch.cat(maps) if maps else torch.zeros(0, *tensor.shape[-2:])

    def _boxes(self, heatmaps: Tensor, phrases: list[str]) -> Detections:
        found = [(self.boxes.detect(heat), phrase) for heat, phrase in zip(heatmaps, phrases)]
        return Detections(torch.cat([d.boxes for d, _ in found]) if found else torch.zeros(0, 4),
                          torch.cat([d.scores for d, _ in found]) if found else torch.zeros(0),
                          [p for d, p in found for _ in range(len(d))])


def _strip_prompt(text: str, prompt: str) -> str:
    """BLIP's decoded text without the prompt (the released code strips ``"a picture of "``)."""
    prompt, text = prompt.strip().lower(), text.strip()
    return text[len(prompt):].strip() if prompt and text.lower().startswith(prompt) else text


class _NeverUpdated(dict):
    """``EncoderDecoderCache.is_updated`` that never says a layer's cross-attention is cached."""

    def __setitem__(self, layer: int, updated: bool) -> None:
        pass


def released_blip_cache(config: object) -> EncoderDecoderCache:
    """A decoder cache that keeps self-attention only, as the released BLIP's ``med.py``: the
    cross-attention keys and values are projected from the (beam-repeated) image embeddings again
    at every step; nothing of them is stored or reordered."""

    class Forgetful(DynamicCache):
        def update(self, keys: Tensor, values: Tensor, layer_idx: int, *args, **kwargs) -> tuple[Tensor, Tensor]:
            return keys, values

    class SelfAttentionOnly(EncoderDecoderCache):
        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.self_attention_cache.reorder_cache(beam_idx)

    cache = SelfAttentionOnly(DynamicCache(config=config), Forgetful(config=config))
    cache.is_updated = _NeverUpdated()
    return cache
