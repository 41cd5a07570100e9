"""YAML configs of the shapes world: ``world:`` (``WorldConfig`` fields) plus per-command sections."""
from __future__ import annotations

import argparse

import math
from dataclasses import fields, replace
from typing import Any, TypeVar

import yaml

from wwbl.errors import AnnotationError, MissingResourceError
from shapes_world.generator import WorldConfig

StageConfig = TypeVar("StageConfig")


def read_yaml(path: str) -> dict[str, Any]:
    """A YAML mapping; a missing file or a non-mapping raises an error naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError as e:
        raise MissingResourceError(f"config file not found: '{path}'") from e
    except yaml.YAMLError as e:
        raise AnnotationError(f"config file '{path}' is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise AnnotationError(f"config file '{path}' must hold a mapping at the top level")
    return data


def world_config_from(section: dict[str, Any] | None) -> WorldConfig:
    """``WorldConfig`` from a mapping; unknown keys are an error (typos must not pass silently)."""
    section = dict(section or {})
    known = {f.name for f in fields(WorldConfig)}
    unknown = set(section) - known
    if unknown:
        raise ValueError(f"unknown world config keys {sorted(unknown)}; known: {sorted(known)}")
    for key in ("clutter_specks", "colours", "shapes"):
        if key in section:
            section[key] = tuple(section[key])
    return WorldConfig(**section)


def load_world_config(path: str) -> tuple[WorldConfig, dict[str, Any]]:
    """The world and the dataset sizes (``sizes:`` section) of a world YAML."""
    data = read_yaml(path)
    return world_config_from(data.get("world")), dict(data.get("sizes") or {})


def stage_world(section: dict[str, Any] | str | None) -> WorldConfig:
    """A stage config's ``world:``: a mapping of ``WorldConfig`` fields, or the path of a world
    YAML (``world: configs/shapes/world.yaml``) so that every stage shares one world."""
    if isinstance(section, str):
        return load_world_config(section)[0]
    return world_config_from(section)


def budgeted_lr(step: int, minutes: float, lr: float, warmup_steps: int, steps: int, max_minutes: float) -> float:
    """Linear warm-up, then cosine decay to zero over ``steps`` or ``max_minutes`` (if > 0),
    whichever runs out first, so a time-budgeted run on a busy machine still ends annealed."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    if max_minutes > 0:
        progress = max(progress, minutes / max_minutes)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def load_stage_config(path: str, overrides: dict[str, Any], default: StageConfig) -> tuple[WorldConfig, StageConfig]:
    """World + training-stage config from YAML (``world:``, ``train:``) with command-line overrides
    (None values are ignored) applied to the dataclass instance ``default``."""
    data = read_yaml(path)
    section = {**(data.get("train") or {}), **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name for f in fields(default)}
    unknown = set(section) - known
    if unknown:
        raise ValueError(f"unknown train config keys {sorted(unknown)}; known: {sorted(known)}")
    return stage_world(data.get("world")), replace(default, **section)


def stage_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    """The flags every stage trainer shares (each overrides its config's ``train`` section; None
    leaves the config's value); a stage adds its own before parsing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--out-dir", dest="out_dir")
    parser.add_argument("--max-minutes", dest="max_minutes", type=float)
    parser.add_argument("--init-from", dest="init_from", help="model directory to continue training from")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--warmup-steps", dest="warmup_steps", type=int)
    parser.add_argument("--device", help="where the training steps run (cpu, cuda, cuda:1); evaluation and "
                                         "saving run on the CPU")
    parser.add_argument("--num-workers", dest="num_workers", type=int, help="scene-generating DataLoader workers")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    return parser


def stage_config_from_args(args: argparse.Namespace, default: StageConfig) -> tuple[WorldConfig, StageConfig]:
    """The stage's world and train config: ``args.config`` with the given flags applied."""
    return load_stage_config(args.config, {k: v for k, v in vars(args).items() if k != "config"}, default)
