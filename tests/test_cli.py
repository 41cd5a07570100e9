"""wwbl.cli (flags checked at parse time, without torch), wwbl.devices and the entry points' fast,
one-line answers to bad arguments."""
import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from wwbl import defaults
from wwbl.cli import device_name, output_dir, positive_int, unit_float
from wwbl.devices import available_devices, resolve_device
from wwbl.extractors import available_extractors

ROOT = Path(__file__).resolve().parents[1]
# Runs an entry point in a fresh interpreter and reports its exit code and whether torch got imported.
PROBE = """
import runpy, sys
sys.argv = {argv!r}
try:
    {run}
    code = 0
except SystemExit as exit_:
    code = exit_.code
print("RESULT", code, "torch" in sys.modules)
"""


def probe(argv: list[str], run: str) -> tuple[int, bool, str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, run=run)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT")][-1].split()
    return int(result[1]) if result[1] != "None" else 0, result[2] == "True", done.stderr


def test_parse_time_types_accept_and_refuse():
    assert positive_int("3") == 3 and unit_float("0.25") == 0.25 and device_name(" CUDA:1 ") == "cuda:1"
    for parse, bad in [(positive_int, "0"), (positive_int, "-1"), (positive_int, "two"), (unit_float, "1.5"),
                       (unit_float, "x"), (device_name, "gpu"), (device_name, ""), (device_name, "cuda:a")]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_output_dir_refuses_a_file_and_accepts_a_new_folder(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(argparse.ArgumentTypeError, match="is a file"):
        output_dir(str(tmp_path / "file.txt"))
    with pytest.raises(argparse.ArgumentTypeError, match="cannot write"):
        output_dir(str(tmp_path / "file.txt" / "below"))  # the nearest existing parent is a file
    assert output_dir(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"


def test_devices_resolve_or_say_what_exists():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert "cpu" in available_devices()
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match="not available"):
        resolve_device(f"cuda:{count}")  # one past the last GPU (cuda:0 on a machine without one)
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_the_help_lists_every_registered_heatmap_source():
    assert sorted(defaults.HEATMAP_SOURCES) == available_extractors()


@pytest.mark.parametrize("argv", [
    ["infer.py", "--help"],
    ["infer.py", "--image", "x.jpg", "--batch-size", "0"],
    ["infer.py", "--image", "x.jpg", "--num-beams", "0"],
    ["infer.py", "--image", "x.jpg", "--device", "gpu"],
    ["infer.py", "--image", "x.jpg", "--box-threshold", "2"],
    ["infer.py", "--image", "no_such_file.jpg"],
])
def test_infer_answers_help_and_bad_arguments_before_loading_torch(argv):
    code, torch_loaded, stderr = probe(argv, "runpy.run_path('infer.py', run_name='__main__')")
    assert code == (0 if "--help" in argv else 2)
    assert not torch_loaded
    if code:
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr  # one line, no usage dump


@pytest.mark.parametrize("argv", [["wwbl.evaluation", "--help"],
                                  ["wwbl.evaluation", "wsg", "--dataset", "flickr30k", "--root", "r", "--out", "o",
                                   "--limit", "0"]])
def test_evaluation_answers_before_loading_torch(argv):
    code, torch_loaded, _ = probe(argv, "runpy.run_module('wwbl.evaluation', run_name='__main__')")
    assert code == (0 if "--help" in argv else 2) and not torch_loaded


def test_train_names_a_missing_config_in_one_line_before_loading_torch():
    code, torch_loaded, stderr = probe(["train.py", "--config", "no_such.yaml"],
                                       "runpy.run_path('train.py', run_name='__main__')")
    assert (code, torch_loaded) == (2, False)
    assert stderr.strip().count("\n") == 0 and "no_such.yaml" in stderr and "coco_wsg.yaml" in stderr
