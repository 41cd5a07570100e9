"""Device names users type, resolved against what this machine has (one-line errors, no tracebacks)."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda, then mps, then cpu; ``cuda`` / ``cuda:N`` / ``mps`` only if present.

    Raises ValueError naming the device and what this machine offers instead.
    """
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ValueError(f"device 'mps' is not available on this machine; available: {available_devices()}")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        suffix = name[len("cuda:"):]
        if name != "cuda" and not suffix.isdigit():
            raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
        index = int(suffix) if suffix else 0
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise ValueError(f"device {name!r} is not available on this machine ({count} CUDA device(s)); "
                             f"available: {available_devices()}")
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """``torch.autocast`` for ``precision`` ("fp32" = disabled, "bf16", "fp16") on ``device``."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"unknown precision {precision!r}: use one of {sorted(dtypes)}")
    return torch.autocast(device.type, dtype=dtypes[precision], enabled=precision != "fp32")


def available_devices() -> str:
    """The devices this machine offers, for error messages (e.g. ``cpu, cuda:0``)."""
    names = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    return ", ".join(names + (["mps"] if _mps_available() else []))


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
