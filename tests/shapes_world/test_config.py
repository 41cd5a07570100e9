"""The time-budgeted learning-rate schedule by hand; the stage flags over the YAML config."""
from __future__ import annotations

import pytest

from shapes_world.config import budgeted_lr, stage_config_from_args, stage_parser
from shapes_world.train_blip import BlipTrainConfig
from shapes_world.train_clip import ClipTrainConfig


def test_budgeted_lr_hand_computed():
    assert budgeted_lr(0, 0.0, 1.0, 10, 110, 0.0) == pytest.approx(0.1)
    assert budgeted_lr(60, 0.0, 1.0, 10, 110, 0.0) == pytest.approx(0.5)  # half way: cos(pi/2)
    assert budgeted_lr(20, 5.0, 1.0, 10, 110, 10.0) == pytest.approx(0.5)  # time runs out first
    assert budgeted_lr(200, 0.0, 1.0, 10, 110, 0.0) == pytest.approx(0.0)


def test_stage_flags_override_the_config_and_unset_ones_keep_it(tmp_path):
    config = tmp_path / "stage.yaml"
    config.write_text("train:\n  steps: 7\n  num_workers: 3\n")
    parser = stage_parser("test", str(config))
    _, cfg = stage_config_from_args(parser.parse_args(["--device", "cuda:1", "--threads", "4"]), ClipTrainConfig())
    assert (cfg.device, cfg.threads, cfg.steps, cfg.num_workers) == ("cuda:1", 4, 7, 3)
    _, cfg = stage_config_from_args(parser.parse_args(["--num-workers", "0"]), BlipTrainConfig())
    assert (cfg.device, cfg.num_workers, cfg.steps) == ("cpu", 0, 7)
