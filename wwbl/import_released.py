"""Import the authors' released network g checkpoints (COCO- and VG-trained) into the wwbl export.

The released files (linked from the README of ``talshaharabany/what-is-where-by-looking``) are
whole pickled ``torch.nn.DataParallel(MultiModel)`` objects written by ``torch.save(model)``.
Loading them with ``torch.load`` would import the authors' modules and run whatever the pickle
names. Here they are read **without executing pickled code**: a restricted unpickler admits only
tensor/storage rebuilding, ``OrderedDict``/``set``, and the reference's and ``torch.nn``'s module
classes as inert placeholders that merely record their pickled ``__dict__``; any other global is
refused. The placeholders' ``_parameters``/``_buffers``/``_modules`` give the state dict, which is
renamed onto :class:`wwbl.networks.GroundingNet` (the same architecture) and loaded strictly::

    module.E.Org_model.<i>.*                     -> encoder.<i>.*
    module.D.bottleneck.{conv1,BN1,conv2,BN2}.*  -> bottleneck.{0,1,3,4}.*
    module.D.up0.{conv1,BN1,conv2,BN2}.*         -> up0.{1,2,4,5}.*
    module.D.up1.{conv1,BN1,conv2}.*             -> up1.{1,2,4}.*
    module.D.up1.BN2.*                           (built but never used by the reference: dropped)

A plain state-dict checkpoint with those names (``module.`` optional, possibly under a
``state_dict`` or ``model`` key) is accepted too.

The export's config names what g was trained with: CLIP ViT-B-32 with the OpenAI weights,
phrases prefixed ``"image of "``, 304-pixel inputs normalised with mean = std = 0.5. (The
reference's own WWbL inference fed g 224-pixel images and captions without the prefix; pass
``--text-prefix ""`` to ``infer.py`` to reproduce that.)

Usage: ``python -m wwbl.import_released net_best.pth exported_g/``.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import shutil
import sys
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from wwbl.errors import MissingResourceError
from wwbl.export import export_grounding_net
from wwbl.networks import GroundingNet

REFERENCE_CLIP = {"model": "ViT-B-32", "pretrained": "openai", "checkpoint": None}
REFERENCE_INPUT_SIZE = 304
REFERENCE_TEXT_PREFIX = "image of "
# The authors' module classes that appear in their pickles (file model.py, models/vgg16.py, base.py).
REFERENCE_CLASSES = frozenset({("model", "MultiModel"), ("models.vgg16", "VGG16"), ("base", "MMDecoder"),
                               ("base", "BottleneckBlock"), ("base", "UpBlock")})
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
_DECODER_RENAMES = {
    "bottleneck": {"conv1": "0", "BN1": "1", "conv2": "3", "BN2": "4"},
    "up0": {"conv1": "1", "BN1": "2", "conv2": "4", "BN2": "5"},
    "up1": {"conv1": "1", "BN1": "2", "conv2": "4"},
}
_UNUSED_PREFIXES = ("D.up1.BN2.",)
_DECODER_KEY = re.compile(r"^D\.(bottleneck|up0|up1)\.([A-Za-z0-9]+)\.(.+)$")
_ENCODER_PREFIX = "E.Org_model."


class ReleasedCheckpointError(ValueError):
    """A released checkpoint cannot be read or does not match network g; the message names the file."""


class InertObject:
    """Stands in for a pickled module instance: records the pickled state, runs none of the class's code."""

    global_name = "?"
    # Class-level, read-only default: NEWOBJ creates instances without calling __init__.
    state: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, *args: Any) -> None:
        self.args = args  # only reached when a pickle calls the class (REDUCE); kept for inspection

    def __setstate__(self, state: Any) -> None:
        # pickle passes (dict, slots) when the object had __slots__; a module has a plain dict.
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.global_name} has a non-dict pickled state")
        self.state = state


_PLACEHOLDERS: dict[str, type[InertObject]] = {}


def _placeholder_class(module: str, name: str) -> type[InertObject]:
    """One inert class per global, so the tree still says which class each node was."""
    full = f"{module}.{name}"
    if full not in _PLACEHOLDERS:
        _PLACEHOLDERS[full] = type(name, (InertObject,), {"global_name": full})
    return _PLACEHOLDERS[full]


@dataclass(frozen=True)
class _StorageType:
    """What a pickled ``torch.<X>Storage`` global resolves to: only its dtype is needed."""

    dtype: torch.dtype


def _rebuild_tensor(storage: Any, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """Our counterpart of ``torch._utils._rebuild_tensor_v2``: a strided view of the flat storage."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("a tensor refers to something that is not a storage")
    try:
        return storage.as_strided(tuple(size), tuple(stride), int(offset))
    except RuntimeError as error:  # sizes/strides reaching past the storage
        raise pickle.UnpicklingError(f"a tensor does not fit its storage: {error}") from error


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    """A Parameter's tensor (``_rebuild_parameter`` and ``_rebuild_parameter_with_state``)."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter holds something that is not a tensor")
    return data


def _inert_device(*args: Any) -> str:
    """``torch.device(...)`` in DataParallel's state: recorded as text, never used."""
    return ":".join(str(a) for a in args)


_CALLABLES: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,  # protocol-2 pickles use the Python 2 name
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "device"): _inert_device,
}


def _is_torch_module_class(module: str, name: str) -> bool:
    """A class of ``torch.nn`` (layers, containers, DataParallel), checked without importing anything."""
    if not module.startswith(("torch.nn.modules.", "torch.nn.parallel.")):
        return False
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and issubclass(cls, nn.Module)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch zip archive's ``data.pkl`` with storages read from the same archive."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(archive.read(prefix + "data.pkl")))
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CALLABLES:
            return _CALLABLES[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in REFERENCE_CLASSES or _is_torch_module_class(module, name):
            return _placeholder_class(module, name)
        raise pickle.UnpicklingError(f"refused global '{module}.{name}': only tensors, torch.nn modules and "
                                     f"the reference's model classes may appear in a released checkpoint")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid  # location (e.g. cuda:0) ignored: read to CPU
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"persistent id names {storage_type!r}, not a storage type")
        if key not in self._storages:
            raw = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
            flat = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)
            if storage_type.dtype is not torch.uint8 and flat.numel() != numel:
                raise pickle.UnpicklingError(f"storage {key} holds {flat.numel()} elements, expected {numel}")
            self._storages[key] = flat
        return self._storages[key]


def _read_zip(path: Path) -> Any:
    """Unpickle a torch zip checkpoint (``<name>/data.pkl`` + ``<name>/data/<key>``) with the restricted unpickler."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise pickle.UnpicklingError("the zip archive is not a torch checkpoint (no single <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder") != b"little":
            raise pickle.UnpicklingError("big-endian checkpoints are not supported")
        return _RestrictedUnpickler(archive, prefix).load()


def read_checkpoint(path: str | Path) -> Any:
    """The unpickled content of ``path``, pickled modules turned into :class:`InertObject` trees.

    Zip checkpoints (``torch.save`` since torch 1.6) go through the restricted unpickler; older
    files only through ``torch.load(weights_only=True)`` (plain tensors and containers).
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, ValueError, RuntimeError,
            TypeError, AttributeError, IndexError, OverflowError) as error:
        raise ReleasedCheckpointError(f"{path}: not a readable, safe torch checkpoint: {error}") from error


def module_state_dict(node: InertObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict a pickled module tree would produce (persistent buffers only)."""
    state = node.state
    if not isinstance(state.get("_modules"), Mapping):
        raise ValueError(f"pickled {node.global_name} at '{prefix or '<root>'}' is not a torch module")
    skip = state.get("_non_persistent_buffers_set") or set()
    out: dict[str, torch.Tensor] = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if value is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"'{prefix}{name}' is not a tensor")
            out[prefix + name] = value
    for name, child in state["_modules"].items():
        if child is None:
            continue
        if not isinstance(child, InertObject):
            raise ValueError(f"submodule '{prefix}{name}' is not a pickled module")
        out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def checkpoint_state_dict(content: Any) -> dict[str, torch.Tensor]:
    """The reference-named state dict in a checkpoint: a pickled model or a (wrapped) state dict."""
    if isinstance(content, InertObject):
        return module_state_dict(content)
    if isinstance(content, Mapping):
        for key in ("state_dict", "model"):
            if key in content and isinstance(content[key], (Mapping, InertObject)):
                return checkpoint_state_dict(content[key])
        if content and all(isinstance(v, torch.Tensor) for v in content.values()):
            return dict(content)
    raise ValueError("it holds neither a pickled MultiModel nor a state dict of tensors")


def _grounding_net_key(key: str) -> str | None:
    """Our name of a reference key; None for the reference's unused up1.BN2; ValueError if unknown."""
    if key.startswith(_ENCODER_PREFIX):
        return "encoder." + key[len(_ENCODER_PREFIX):]
    if key.startswith(_UNUSED_PREFIXES):
        return None
    match = _DECODER_KEY.match(key)
    if match and match.group(2) in _DECODER_RENAMES[match.group(1)]:
        block, layer, rest = match.groups()
        return f"{block}.{_DECODER_RENAMES[block][layer]}.{rest}"
    raise ValueError(f"unexpected key '{key}' (not part of the reference's MultiModel)")


def to_grounding_net_state(reference: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference ``MultiModel`` state dict (``module.`` prefix optional) onto GroundingNet."""
    prefix = "module."
    if reference and all(k.startswith(prefix) for k in reference):  # saved from DataParallel
        reference = {k[len(prefix):]: v for k, v in reference.items()}
    mapped = {}
    for key, value in reference.items():
        name = _grounding_net_key(key)
        if name is not None:
            mapped[name] = value
    return mapped


def reference_grounding_net() -> GroundingNet:
    """The released architecture: full VGG16 to relu4_3, 512-wide bottleneck and decoder, CLIP text dim 512."""
    return GroundingNet(text_dim=512, decoder_channels=512, vgg_width_div=1, pretrained_backbone=False,
                        input_norm="reference", backbone="vgg16")


def load_into_grounding_net(state: Mapping[str, torch.Tensor]) -> GroundingNet:
    """A reference GroundingNet holding ``state`` (our names); every key and shape must match."""
    net = reference_grounding_net()
    target = net.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(f"{k} {tuple(state[k].shape)} != {tuple(target[k].shape)}"
                   for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"it does not match network g: missing {missing}, unexpected {unexpected}, "
                         f"wrong shape {wrong}")
    net.load_state_dict(state, strict=True)
    return net.eval()


def grounding_net_from_released(path: str | Path) -> GroundingNet:
    """Read a released (or state-dict) checkpoint safely and return it as a GroundingNet."""
    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(f"checkpoint '{path}' not found; download the authors' COCO or VG weights "
                                   "(linked from talshaharabany/what-is-where-by-looking's README) and pass its path")
    content = read_checkpoint(path)
    try:
        return load_into_grounding_net(to_grounding_net_state(checkpoint_state_dict(content)))
    except ValueError as error:
        raise ReleasedCheckpointError(f"{path}: {error}") from error


def import_released(path: str | Path, out_dir: str | Path) -> Path:
    """Convert a released checkpoint into the safetensors + JSON export at ``out_dir`` (returned).

    Nothing is written unless the whole conversion succeeds: the export is built in a temporary
    folder beside ``out_dir`` and renamed into place.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output '{out}' already exists and is not an empty folder")
    net = grounding_net_from_released(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        export_grounding_net(net, staging, REFERENCE_CLIP, extra={
            "input_size": REFERENCE_INPUT_SIZE, "text_prefix": REFERENCE_TEXT_PREFIX,
            "source": {"file": Path(path).name, "repository": "talshaharabany/what-is-where-by-looking"},
        })
        os.replace(staging, out)  # an existing empty out_dir is replaced atomically
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Import the authors' released network g checkpoint "
                                                 "(pickled DataParallel(MultiModel), read without running its code) "
                                                 "into a wwbl export folder.")
    parser.add_argument("checkpoint", help="released .pth file (COCO or VG weights) or a state-dict checkpoint")
    parser.add_argument("out_dir", help="output folder (model.safetensors + config.json); must not exist or be empty")
    args = parser.parse_args(argv)
    try:
        out = import_released(args.checkpoint, args.out_dir)
    except (ValueError, MissingResourceError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"imported network g to {out}")


if __name__ == "__main__":
    main()
