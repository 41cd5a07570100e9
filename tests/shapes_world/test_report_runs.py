"""The teacher label follows g's config."""
from __future__ import annotations

from shapes_world.report_runs import teacher_label


def test_teacher_follows_the_g_config(tmp_path):
    for start, label in ((-1, "gae"), (0, "gae_all_blocks"), (2, "gae_from_block2")):
        config = tmp_path / f"g{start}.yaml"
        config.write_text(f"model:\n  relevancy_start_layer: {start}\n")
        assert teacher_label(str(config)) == label
