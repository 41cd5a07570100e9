"""Frozen CLIP behind one small adapter (see `adapter.py`); open_clip internals live only in this package."""
from wwbl.clip.adapter import RANDOM_WEIGHTS, FrozenCLIP, register_model_configs, uses_quick_gelu
from wwbl.clip.relevancy import minmax_normalize, relevancy_maps
from wwbl.clip.resnet import ResNetInternals
from wwbl.clip.spec import ClipSpec
from wwbl.clip.vit import UnsupportedCLIPError, ViTInternals

__all__ = ["ClipSpec", "FrozenCLIP", "RANDOM_WEIGHTS", "ResNetInternals", "ViTInternals", "UnsupportedCLIPError",
           "minmax_normalize", "register_model_configs", "relevancy_maps", "uses_quick_gelu"]
