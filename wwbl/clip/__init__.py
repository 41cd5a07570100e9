"""Frozen CLIP behind one small adapter (see `adapter.py`; open_clip internals live in `vit.py`)."""
from wwbl.clip.adapter import FrozenCLIP, register_model_configs
from wwbl.clip.relevancy import minmax_normalize, relevancy_maps
from wwbl.clip.vit import UnsupportedCLIPError, ViTInternals

__all__ = ["FrozenCLIP", "ViTInternals", "UnsupportedCLIPError", "minmax_normalize", "register_model_configs",
           "relevancy_maps"]
