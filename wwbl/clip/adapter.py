"""The frozen CLIP used as teacher and text encoder.

`FrozenCLIP` wraps any open_clip model (a pretrained tag, a local weights file, or a model
directory in open_clip's `open_clip_config.json` + `open_clip_model.safetensors` layout). The
parameters are frozen and the model stays in eval mode; gradients still flow from CLIP's outputs
back to its *inputs*, which is how network g's mask is trained.

Two rules hold for every entry point (configs, CLIs, `wwbl.load`, the LightningModule), because
they all build CLIP here:

* Weights trained with QuickGELU (every ``openai`` tag, and the open_clip tags flagged
  ``quick_gelu``) are built with QuickGELU; open_clip itself would build exact GELU for
  ``ViT-B-32`` + ``openai`` and only warn.
* Random weights only when asked for by name (``pretrained="random"``), with a warning; no tag and
  no checkpoint is an error.
"""
from __future__ import annotations

import json
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wwbl.clip.relevancy import relevancy_maps
from wwbl.clip.resnet import ResNetInternals
from wwbl.clip.text import encode_text_short, supports_short_context
from wwbl.clip.vit import UnsupportedCLIPError, ViTInternals
from wwbl.errors import MissingResourceError, ModelFileError
from wwbl.model_files import json_type, load_checked, read_json_object, read_weights

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The one spelling, everywhere, for "no trained weights": a tiny test model or a speed benchmark.
RANDOM_WEIGHTS = "random"
# The files of an open_clip model folder.
CLIP_CONFIG_FILE, CLIP_WEIGHTS_FILE = "open_clip_config.json", "open_clip_model.safetensors"


def register_model_configs(path: str | Path = MODEL_CONFIG_DIR) -> None:
    """Make the JSON architectures in `path` (a file or a folder) known to open_clip by file stem."""
    open_clip.add_model_config(Path(path))


register_model_configs()


class FrozenCLIP(nn.Module):
    """A frozen open_clip model with differentiable preprocessing, cached text encoding and relevancy.

    Args:
        model: open_clip architecture name (e.g. "ViT-B-32", or "wwbl-tiny-vit" from
            `wwbl/clip/model_configs`). Ignored when `checkpoint` is a model directory.
        pretrained: open_clip pretrained tag (e.g. "openai"; needs the weights in the local cache or
            network access), or "random" for randomly initialised weights (tests, benchmarks).
            With `checkpoint` it only names where the weights come from: "openai" there selects
            QuickGELU. None is allowed only with `checkpoint`.
        checkpoint: local weights: a `.safetensors`/`.pt`/`.bin` state dict for `model`, or a
            directory holding `open_clip_config.json` and `open_clip_model.safetensors` (its
            `model_cfg.quick_gelu` is honoured).
        precision: "fp32", "fp16" or "bf16" for the frozen weights (the reference ran fp16 on GPU).
        text_cache_size: how many phrase embeddings to keep (least recently used are evicted).
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = None,
        checkpoint: str | Path | None = None,
        precision: str = "fp32",
        cache_dir: str | None = None,
        text_cache_size: int = 65536,
    ):
        super().__init__()
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        self.spec = {"model": model, "pretrained": pretrained, "checkpoint": str(checkpoint) if checkpoint else None,
                     "precision": precision}
        net, self.model_name = _build_open_clip(model, pretrained, checkpoint, cache_dir)
        self.model = net.to(_PRECISIONS[precision])
        self.model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(self.model_name)
        self._short_text = supports_short_context(self.model)
        preprocess = open_clip.get_model_preprocess_cfg(self.model)
        size = preprocess.get("size", self.model.visual.image_size)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD))
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.embed_dim = int(self.model.text_projection.shape[-1]) if _has_text_projection(self.model) else \
            int(self.encode_text(["a"]).shape[-1])
        self.logit_scale = float(self.model.logit_scale.exp())
        self._text_cache: OrderedDict[str, Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._vit: ViTInternals | None = None
        self._resnet: ResNetInternals | None = None

    def train(self, mode: bool = True) -> "FrozenCLIP":
        # Frozen means frozen: Lightning's model.train() must not switch CLIP out of eval mode.
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self._mean.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def is_vit(self) -> bool:
        return hasattr(self.model.visual, "transformer") and hasattr(self.model.visual, "conv1")

    @property
    def vit(self) -> ViTInternals:
        """Block-level access for relevancy and the training-free extractors (ViT models only)."""
        if self._vit is None:
            self._vit = ViTInternals(self.model.visual)
        return self._vit

    @property
    def resnet(self) -> ResNetInternals:
        """Stage-level access for the ResNet extractors (ModifiedResNet models only; else UnsupportedCLIPError)."""
        if self._resnet is None:
            self._resnet = ResNetInternals(self.model.visual)
        return self._resnet

    # -- images ---------------------------------------------------------------------------------
    def prepare(self, images01: Tensor, normalize: bool = True) -> Tensor:
        """Differentiable preprocessing: B×3×H×W in [0,1] -> CLIP's input (bilinear resize, normalisation).

        `normalize=False` only resizes; the reference fed CLIP [-1,1] images that way.
        """
        if images01.dim() != 4 or images01.shape[1] != 3:
            raise ValueError(f"expected images shaped B×3×H×W, got {tuple(images01.shape)}")
        x = images01.to(self._mean.device, torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if normalize:
            x = (x - self._mean) / self._std
        return x.to(self.dtype)

    def encode_image_prepared(self, x: Tensor) -> Tensor:
        """L2-normalised float32 embeddings of already prepared inputs; differentiable w.r.t. x."""
        return F.normalize(self.model.encode_image(x.to(self.dtype)).float(), dim=-1)

    def encode_image(self, images01: Tensor, normalize_input: bool = True) -> Tensor:
        """L2-normalised float32 embeddings B×D of [0,1] images; differentiable w.r.t. the images."""
        return self.encode_image_prepared(self.prepare(images01, normalize_input))

    # -- text -----------------------------------------------------------------------------------
    def tokenize(self, phrases: Sequence[str]) -> Tensor:
        return self.tokenizer(list(phrases)).to(self.device)

    @torch.no_grad()
    def encode_text(self, phrases: Sequence[str]) -> Tensor:
        """L2-normalised float32 embeddings T×D; each distinct phrase is encoded once and cached."""
        phrases = [_check_phrase(p) for p in phrases]
        missing = list(dict.fromkeys(p for p in phrases if p not in self._text_cache))
        if missing:
            tokens = self.tokenize(missing)
            raw = encode_text_short(self.model, tokens) if self._short_text else self.model.encode_text(tokens)
            emb = F.normalize(raw.float(), dim=-1)
            for phrase, vector in zip(missing, emb):
                self._remember(phrase, vector)
        for p in phrases:
            self._text_cache.move_to_end(p)
        if not phrases:
            return torch.empty(0, self.embed_dim, device=self.device)
        return torch.stack([self._text_cache[p] for p in phrases]).to(self.device)

    def encode_text_full_context(self, phrases: Sequence[str]) -> Tensor:
        """L2-normalised float32 embeddings T×D from open_clip's own full-context `encode_text`.

        Uncached and unchecked: empty prompts are allowed (CLIP Surgery's "empty" text).
        """
        return F.normalize(self.model.encode_text(self.tokenize(phrases)).float(), dim=-1)

    def _remember(self, phrase: str, vector: Tensor) -> None:
        self._text_cache[phrase] = vector
        while len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)

    # -- relevancy ------------------------------------------------------------------------------
    def relevancy(
        self, images01: Tensor, text_emb: Tensor, start_layer: int = -1, normalize_input: bool = True
    ) -> Tensor:
        """Chefer relevancy for the pairs (image_i, text_i): B×S×S in [0, 1], S = image_size, detached."""
        if not self.is_vit:
            raise UnsupportedCLIPError("Chefer relevancy needs a ViT CLIP; this model's image tower is "
                                       f"{type(self.model.visual).__name__}.")
        prepared = self.prepare(images01.detach(), normalize_input)
        return relevancy_maps(self.vit, prepared, text_emb, self.logit_scale, start_layer)

    def extra_repr(self) -> str:
        return json.dumps(self.spec)


def _has_text_projection(model: nn.Module) -> bool:
    proj = getattr(model, "text_projection", None)
    return isinstance(proj, Tensor) and proj.dim() == 2


def _check_phrase(phrase: Any) -> str:
    if not isinstance(phrase, str):
        raise TypeError(f"phrases must be strings, got {type(phrase).__name__}")
    if not phrase.strip():
        raise ValueError("empty phrase: CLIP needs at least one word to ground")
    return phrase


# -- loading ------------------------------------------------------------------------------------
def uses_quick_gelu(model: str, pretrained: str | None) -> bool:
    """Whether weights `pretrained` for architecture `model` were trained with QuickGELU.

    True for every OpenAI tag (ViT and ResNet alike), for open_clip tags whose pretrained config
    says ``quick_gelu`` (e.g. ViT-B-32 ``laion400m_e31``) and for ``*-quickgelu`` architectures.
    """
    if model.endswith("-quickgelu"):
        return True
    if pretrained is None or pretrained == RANDOM_WEIGHTS:
        return False
    if pretrained.lower().replace("-", "_") == "openai":
        return True
    return bool(open_clip.get_pretrained_cfg(model, pretrained).get("quick_gelu", False))


def _build_open_clip(
    model: str, pretrained: str | None, checkpoint: str | Path | None, cache_dir: str | None
) -> tuple[nn.Module, str]:
    """Returns the open_clip model and the architecture name its tokenizer is looked up by."""
    if checkpoint is not None:
        if pretrained == RANDOM_WEIGHTS:
            raise ValueError(f"pretrained={RANDOM_WEIGHTS!r} contradicts checkpoint={str(checkpoint)!r}; give one")
        return _from_local(model, Path(checkpoint), uses_quick_gelu(model, pretrained))
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; known: open_clip.list_models() and "
                         f"the JSON files in {MODEL_CONFIG_DIR}")
    if pretrained is None:
        tags = ", ".join(repr(t) for t in open_clip.list_pretrained_tags_by_model(model)) or "none known"
        raise ValueError(
            f"CLIP {model!r} needs weights: pass pretrained=<tag> (open_clip tags for it: {tags}), "
            "checkpoint=<local weights file or open_clip model folder>, or pretrained='random' for "
            "untrained weights (CLIs: --clip-pretrained / --clip-checkpoint; train.py: "
            "--model.clip_pretrained / --model.clip_checkpoint)")
    quick_gelu = uses_quick_gelu(model, pretrained)
    if pretrained == RANDOM_WEIGHTS:
        log.warning("CLIP %r has RANDOM weights (pretrained=%r): its embeddings and maps mean nothing",
                    model, RANDOM_WEIGHTS)
        return _quiet_create(model, quick_gelu), model
    try:
        net = open_clip.create_model(model, pretrained=pretrained, cache_dir=cache_dir, force_quick_gelu=quick_gelu)
        return net, model
    except Exception as err:  # download/network/cache failures come in many types
        raise MissingResourceError(
            f"Could not load CLIP weights for model {model!r}, pretrained tag {pretrained!r} ({err}). "
            "Without network access they must already be in the cache: on a machine with network run "
            f"`python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{pretrained}')\"` "
            "and copy the Hugging Face cache (~/.cache/huggingface) here, or pass a local weights file "
            "with checkpoint=/path/to/open_clip_model.safetensors (infer.py: --clip-checkpoint; train.py: "
            "--model.clip_checkpoint)."
        ) from err


def _quiet_create(model: str, quick_gelu: bool) -> nn.Module:
    # open_clip warns "initialized randomly" for tag-less models: wrong before a local load, and
    # said by our own warning for pretrained="random".
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(model, force_quick_gelu=quick_gelu)
    finally:
        logger.setLevel(level)


def _from_local(model: str, path: Path, quick_gelu: bool) -> tuple[nn.Module, str]:
    hint = ""
    if path.is_dir():
        config_file, weights = path / CLIP_CONFIG_FILE, path / CLIP_WEIGHTS_FILE
        for needed in (config_file, weights):
            if not needed.is_file():
                raise MissingResourceError(f"CLIP model directory {path} lacks {needed.name}")
        model = _register_dir_config(config_file)
        net = _create_from_dir_config(model, config_file, quick_gelu)
        path, what = weights, f"the CLIP that {config_file.name} describes"
    elif not path.is_file():
        raise MissingResourceError(f"CLIP checkpoint file not found: {path}")
    else:
        if path.suffix == ".json":
            raise ModelFileError(path, f"is a JSON file, not CLIP weights; pass the CLIP folder {path.parent} "
                                       "or its weights file")
        # Names with a scheme ("hf-hub:...") are open_clip's to resolve.
        if ":" not in model and model not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model!r} for the CLIP weights {path}; known: "
                             f"open_clip.list_models() and the JSON files in {MODEL_CONFIG_DIR}")
        if (path.parent / CLIP_CONFIG_FILE).is_file():
            hint = f"it lies in an open_clip model folder: pass the folder {path.parent} instead"
        net, what = _quiet_create(model, quick_gelu), f"open_clip model {model!r}"
    state = read_weights(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    load_checked(net, state, path, what, hint)
    return net, model


def _register_dir_config(config_file: Path) -> str:
    config = read_json_object(config_file)
    model_cfg = config.get("model_cfg", config)
    if not isinstance(model_cfg, dict):
        raise ModelFileError(config_file, f"'model_cfg' must be an object, not {json_type(model_cfg)}")
    missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in model_cfg]
    if missing:  # open_clip would skip such a config silently and then not find the model
        raise ModelFileError(config_file, f"'model_cfg' lacks {missing}, which open_clip needs to build a CLIP")
    name = f"local-{config_file.parent.resolve().name}"
    # open_clip reads the file while registering and keeps the config in memory: no file must stay.
    with tempfile.TemporaryDirectory(prefix="wwbl_clip_cfg_") as folder:
        target = Path(folder) / f"{name}.json"
        target.write_text(json.dumps(model_cfg))
        register_model_configs(target)
    return name


def _create_from_dir_config(model: str, config_file: Path, quick_gelu: bool) -> nn.Module:
    """The open_clip model of a folder's config; a config open_clip cannot build from is named."""
    try:
        return _quiet_create(model, quick_gelu)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, AssertionError) as error:
        raise ModelFileError(config_file, f"open_clip cannot build a CLIP from its 'model_cfg' "
                                          f"({type(error).__name__}: {error})") from error
