"""Reading model files with one-line errors that name the file: weights, JSON configs, torch checkpoints.

Every loader (g export, CLIP folder or file, BLIP folder, Lightning checkpoint) reads through these, so
a corrupt or truncated file, a config of the wrong shape or weights that do not fit their network end
in a `ModelFileError` ``"<file>: <problem>"`` rather than a traceback from safetensors, torch or a
constructor. A file that is not there at all stays a `MissingResourceError`.
"""
from __future__ import annotations

import json
import os
import pickle
import types
import typing
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from wwbl.errors import MissingResourceError, ModelFileError

# How many offending keys a message names before "and N more".
NAMED_KEYS = 3


def require_file(path: str | os.PathLike, what: str) -> None:
    """``path`` is an existing file; a folder or nothing there is named as such."""
    if os.path.isdir(path):
        raise ModelFileError(path, f"is a folder, but {what} is a file")
    if not os.path.isfile(path):
        raise MissingResourceError(f"{what} '{path}' not found")


def require_folder(path: str | os.PathLike, what: str, holds: str) -> None:
    """``path`` is an existing folder (that should hold ``holds``); a file or nothing there is named as such."""
    if os.path.isfile(path):
        raise ModelFileError(path, f"is a file, but {what} is a folder holding {holds}")
    if not os.path.isdir(path):
        raise MissingResourceError(f"{what} '{path}' not found (a folder holding {holds})")


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(path, f"is not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise ModelFileError(path, f"holds a JSON {json_type(value)}, not an object")
    return value


def json_type(value: Any) -> str:
    """How JSON calls the type of ``value`` (for messages)."""
    if value is None:
        return "null"
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def read_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a safetensors file (on the CPU)."""
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise ModelFileError(path, f"is not a readable safetensors file; corrupt or truncated? ({error})") from error


def check_safetensors(path: str | os.PathLike) -> None:
    """Check that a safetensors file is complete and readable without loading its tensors (only the header)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except SafetensorError as error:
        raise ModelFileError(path, f"is not a readable safetensors file; corrupt or truncated? ({error})") from error


def read_torch_file(path: str | os.PathLike) -> Any:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True`` (tensors and plain containers)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelFileError(path, "is not a readable PyTorch file: corrupt, truncated, or holding objects other "
                                   f"than tensors and plain containers ({_unpickler_reason(error)})") from error
    except (EOFError, RuntimeError, OSError, ValueError) as error:  # empty, broken zip archive, short read
        raise ModelFileError(path, f"is not a readable PyTorch file; corrupt or truncated? ({error})") from error


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The cause inside torch's long ``weights_only`` message (e.g. "Unsupported operand 80")."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    return " ".join(text.split())[:200] or type(error).__name__


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (a bare one or under ``state_dict``)."""
    if str(path).endswith(".safetensors"):
        return read_safetensors(path)
    state = read_torch_file(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFileError(path, "holds no state dict (a mapping of names to tensors)")
    return state


def load_checked(module: nn.Module, state: Mapping[str, Tensor], path: str | os.PathLike, what: str,
                 hint: str = "") -> nn.Module:
    """``module`` with ``state`` loaded, after checking that the keys and shapes are exactly the module's.

    ``what`` names the module in the message; ``hint`` (optional) says what to do instead.
    """
    problem = state_mismatch(module.state_dict(), state)
    if problem:
        raise ModelFileError(path, f"the weights do not fit {what}: {problem}{'; ' + hint if hint else ''}")
    module.load_state_dict(state)
    return module


def state_mismatch(expected: Mapping[str, Tensor], found: Mapping[str, Tensor]) -> str:
    """What differs between two state dicts (missing keys, unexpected keys, shapes), or "" when they fit."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {list(found[k].shape)} in the file, {list(expected[k].shape)} in the network"
              for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    found_problems = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes))
    parts = [f"{label} {first_few(keys)}" for label, keys in found_problems if keys]
    return "; ".join(parts)


def first_few(items: list[str]) -> str:
    """The first `NAMED_KEYS` items, then how many more."""
    named = ", ".join(items[:NAMED_KEYS])
    return named + (f" and {len(items) - NAMED_KEYS} more" if len(items) > NAMED_KEYS else "")


def type_problem(name: str, value: Any, hint: Any) -> str:
    """Why ``value`` does not fit the type annotation ``hint`` (plain int/float/str/bool, optionally ``| None``),
    or "" when it does; other annotations are left to the code that uses the value."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if any(_fits(value, option) for option in options):
        return ""
    wanted = " or ".join("null" if o is type(None) else _JSON_NAMES.get(o, str(o)) for o in options)
    got = "null" if value is None else f"{json_type(value)} {json.dumps(value)[:60]}"
    return f"{name} must be {wanted}, not {got}"


_JSON_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _fits(value: Any, option: Any) -> bool:
    if option is type(None):
        return value is None
    if option is bool:
        return isinstance(value, bool)
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if option is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if option is str:
        return isinstance(value, str)
    return True  # a type this check does not describe
