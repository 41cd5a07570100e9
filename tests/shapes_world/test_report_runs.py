"""The teacher label follows g's config; printed commands parse back to the same run."""
from __future__ import annotations

import shlex

from shapes_world.report_runs import cli_command, teacher_label
from wwbl.evaluation.__main__ import build_parser
from wwbl.evaluation.evaluate import EvalSettings, settings_from_args
from wwbl.inference.options import WWbLOptions
from wwbl.inference.proposals import ProposalGenerator


def test_teacher_follows_the_g_config(tmp_path):
    for start, label in ((-1, "gae"), (0, "gae_all_blocks"), (2, "gae_from_block2")):
        config = tmp_path / f"g{start}.yaml"
        config.write_text(f"model:\n  relevancy_start_layer: {start}\n")
        assert teacher_label(str(config)) == label


def test_printed_command_parses_back_to_the_same_run():
    """The report prints each run as a shell command; split as a shell would, the evaluation's own
    parser must read back the same options (a list option once printed unquoted split into words)."""
    settings = EvalSettings(task="wwbl", dataset="flickr30k", root="data/shapes/flickr30k", out="runs/x y",
                            split="test", method="adapting_clip", clip_model="shapes-vit",
                            clip_checkpoint="checkpoints/shapes_clip", captioner="checkpoints/shapes_blip",
                            match_prefix="", extractor_options={"slic_levels": [8, 12, 16]}, limit=25,
                            pipeline=WWbLOptions(proposals=ProposalGenerator(min_area_ratio=0.02)))
    words = shlex.split(cli_command(settings))
    assert words[:3] == ["python", "-m", "wwbl.evaluation"]
    back = settings_from_args(build_parser().parse_args(words[3:]))
    assert back.extractor_options == {"slic_levels": [8, 12, 16]}
    assert (back.out, back.match_prefix, back.limit, back.method) == ("runs/x y", "", 25, "adapting_clip")
    assert back.clip_pretrained is None and back.clip_checkpoint == "checkpoints/shapes_clip"
    assert back.pipeline.proposals.min_area_ratio == 0.02
