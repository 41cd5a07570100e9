"""Training survives a kill: atomic checkpoint writes, the step-interval last.ckpt, and a mid-epoch
resume that continues with the very batches (and augmentations) of an uninterrupted run."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Dataset

import train
from tests.helpers.training_layouts import write_coco, write_flickr30k
from wwbl.atomic_files import partial_path
from wwbl.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from wwbl.data.resumable import ResumableLoader, ResumableSampler

REPO = Path(__file__).resolve().parents[1]


class Died(RuntimeError):
    """What :class:`DieAt` raises: the run stops as a killed one would, its files as they are."""


class DieAt(Callback):
    """Stops a run with :class:`Died` when ``hook`` is reached at ``global_step == step``."""

    def __init__(self, step: int, hook: str) -> None:
        self.step, self.hook = step, hook

    def on_train_batch_start(self, trainer, *args):
        self._maybe_die(trainer, "on_train_batch_start")

    def on_validation_start(self, trainer, *args):
        self._maybe_die(trainer, "on_validation_start")

    def _maybe_die(self, trainer, hook):
        if hook == self.hook and trainer.global_step == self.step:
            raise Died(f"stopped at step {self.step} in {hook}")


class RandomItems(Dataset):
    """Item i is (i, a draw from torch's global RNG): shows the order and the per-item randomness."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.tensor([float(i), torch.rand(()).item()])


def batches(loader):
    return [b.clone() for b in loader]


# ----------------------------------------------------------------------------- the loader


def test_each_epoch_is_a_seeded_permutation_with_a_new_order():
    loader = ResumableLoader(RandomItems(), batch_size=2, seed=3)
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        epochs.append(torch.cat(batches(loader)))
    for rows in epochs:
        assert sorted(rows[:, 0].tolist()) == [float(i) for i in range(10)]  # every item once
    assert not torch.equal(epochs[0][:, 0], epochs[1][:, 0])
    again = ResumableLoader(RandomItems(), batch_size=2, seed=3)
    again.sampler.set_epoch(1)
    assert torch.equal(torch.cat(batches(again)), epochs[1])  # order and per-item draws repeat


def test_an_items_randomness_depends_on_seed_epoch_and_index_only():
    one = ResumableLoader(RandomItems(), batch_size=2, seed=0)
    workers = ResumableLoader(RandomItems(), batch_size=5, seed=0, num_workers=2)
    by_index = {}
    for loader in (one, workers):
        torch.manual_seed(len(by_index))  # the global RNG state must not matter
        rows = torch.cat(batches(loader))
        for i, draw in rows.tolist():
            by_index.setdefault(i, set()).add(draw)
    assert all(len(draws) == 1 for draws in by_index.values())
    state = torch.get_rng_state()
    ResumableLoader(RandomItems(), batch_size=2, seed=0).dataset[(4, 123)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left as it was


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loader_restored_part_way_yields_the_rest_of_the_epoch(num_workers):
    full = ResumableLoader(RandomItems(), batch_size=2, seed=7, num_workers=num_workers)
    full.sampler.set_epoch(2)
    expected = batches(full)
    first = ResumableLoader(RandomItems(), batch_size=2, seed=7, num_workers=num_workers)
    first.sampler.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator).clone() for _ in range(2)]
    state = first.position()
    assert state == {"epoch": 2, "batches": 2}
    resumed = ResumableLoader(RandomItems(), batch_size=2, seed=7, num_workers=num_workers)
    resumed.resume_at(state)
    resumed.sampler.set_epoch(2)  # Lightning sets the epoch again: the part-way start survives it
    rest = batches(resumed)
    assert len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(seen + rest, expected))
    assert resumed.position() == {"epoch": 2, "batches": 5}
    resumed.sampler.set_epoch(3)  # the next epoch starts from its beginning
    assert len(batches(resumed)) == 5


def test_ranks_share_an_epoch_without_overlap():
    shares = [list(ResumableSampler(RandomItems(), seed=1, num_replicas=3, rank=r)) for r in range(3)]
    indices = [i for share in shares for i, _ in share]
    assert all(len(s) == 3 for s in shares) and len(set(indices)) == 9  # 10 // 3 each, tail left out


# ----------------------------------------------------------------------------- atomic writes


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)

    def dies_half_way(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind


def test_a_partial_file_left_by_a_kill_is_overwritten_and_never_read(tmp_path):
    path = tmp_path / "last.ckpt"
    partial_path(path).write_bytes(b"cut short")
    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# ----------------------------------------------------------------------------- train.py


TINY = ["--config", str(REPO / "configs" / "coco_wsg.yaml"), "--model.clip_model", "wwbl-tiny-vit",
        "--model.clip_pretrained", "random", "--model.pretrained_backbone", "false",
        "--model.network.vgg_width_div", "16", "--data.image_size", "32", "--data.batch_size", "2",
        "--data.num_workers", "0", "--trainer.max_epochs", "2", "--trainer.num_sanity_val_steps", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false",
        "--step_checkpoint.every_n_train_steps", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_coco(root / "coco", n_images=8)  # 4 batches of 2 per epoch
    write_flickr30k(root / "flickr")
    return ["--data.root", str(root / "coco"), "--data.val_root", str(root / "flickr")]


def weights(cli):
    return {k: v.clone() for k, v in cli.model.net.state_dict().items()}


def test_a_run_stopped_mid_epoch_resumes_to_the_weights_of_one_uninterrupted_run(data, tmp_path):
    whole = train.main([*TINY, *data, "--trainer.default_root_dir", str(tmp_path / "whole")])
    assert whole.trainer.global_step == 8
    stopped = train.main([*TINY, *data, "--trainer.default_root_dir", str(tmp_path / "cut"),
                          "--trainer.max_steps", "7"])  # dies in epoch 1 after step 7; last.ckpt is step 6
    folder = Path(stopped.trainer.logger.log_dir)
    last = folder / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6  # at most one interval (2 steps) is redone
    best = stopped.trainer.checkpoint_callback.best_model_path
    resumed = train.main([*TINY, *data, "--trainer.default_root_dir", str(tmp_path / "cut"),
                          "--ckpt_path", str(last)])
    assert resumed.trainer.global_step == 8
    assert Path(resumed.trainer.logger.log_dir) == folder  # the same version folder
    assert resumed.trainer.checkpoint_callback.best_model_path in (best, *map(str, folder.glob("checkpoints/epoch*")))
    assert Path(resumed.trainer.checkpoint_callback.best_model_path).is_file()
    expected, got = weights(whole), weights(resumed)
    assert expected.keys() == got.keys()
    for name in expected:  # CPU, same batches in the same order: the same arithmetic
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_two_resumes_around_an_epochs_end_give_the_uninterrupted_weights_and_metrics(data, tmp_path):
    """A run dies at epoch 0's validation, its resume dies mid-epoch 1, a second resume finishes.

    The cases Lightning gets wrong by itself: a checkpoint written at an epoch's last batch
    (before validation) resumes without that epoch's validation and with counters under which
    the next resume restores no loader position (epoch 1 replayed: 14 steps, not 12) and logs
    its steps one too low; the CSV logger deletes the folder's metrics.csv on resume. The run
    folder must end as one uninterrupted run's: the same weights, every logged row (training
    losses and validation metrics, at the same epoch and step) once, one last.ckpt."""
    args = [*TINY, *data, "--trainer.max_epochs", "3"]
    whole = train.main([*args, "--trainer.default_root_dir", str(tmp_path / "whole")])
    assert whole.trainer.global_step == 12
    root = ["--trainer.default_root_dir", str(tmp_path / "cut")]
    last = tmp_path / "cut" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    die = "--trainer.callbacks+=tests.test_resume.DieAt"
    with pytest.raises(Died):
        train.main([*args, *root, die, "--trainer.callbacks.step=4", "--trainer.callbacks.hook=on_validation_start"])
    assert torch.load(last, weights_only=True)["global_step"] == 2  # no step save at an epoch's last batch
    with pytest.raises(Died):
        train.main([*args, *root, "--ckpt_path", str(last), die, "--trainer.callbacks.step=6",
                    "--trainer.callbacks.hook=on_train_batch_start"])
    assert torch.load(last, weights_only=True)["global_step"] == 6
    resumed = train.main([*args, *root, "--ckpt_path", str(last)])
    assert resumed.trainer.global_step == 12
    expected, got = weights(whole), weights(resumed)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert isinstance(resumed.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    folder = last.parent.parent
    assert not list(folder.glob("checkpoints/last-v*.ckpt"))  # one last.ckpt, written by both callbacks
    want, have = logged_rows(Path(whole.trainer.logger.log_dir)), logged_rows(folder)
    assert [row.keys() for row in have] == [row.keys() for row in want]
    for got_row, want_row in zip(have, want):
        assert got_row == pytest.approx(want_row, abs=1e-5)


def logged_rows(run_folder: Path) -> list[dict[str, float]]:
    """The rows of a run's metrics.csv, in file order, each with its non-empty columns."""
    with (run_folder / "metrics.csv").open(newline="") as file:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(file)]


@pytest.mark.slow
def test_a_run_killed_with_sigkill_at_random_points_resumes_to_the_same_weights(data, tmp_path):
    """A real ``kill -9`` of ``python train.py`` after a seeded random number of steps, then
    ``--ckpt_path last.ckpt`` until the end; the weights equal one uninterrupted run's."""
    args = [*TINY, *data, "--trainer.max_epochs", "3"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    whole = train.main([*args, "--trainer.default_root_dir", str(tmp_path / "whole")])
    root = tmp_path / "killed"
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    rng = torch.Generator().manual_seed(0)
    for attempt in range(3):
        cmd = [sys.executable, str(REPO / "train.py"), *args, "--trainer.default_root_dir", str(root)]
        if last.is_file():
            cmd += ["--ckpt_path", str(last)]
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        step_before = torch.load(last, weights_only=True)["global_step"] if last.is_file() else 0
        deadline = time.monotonic() + 120
        wait_for = step_before + 2 + int(torch.randint(0, 3, (), generator=rng))
        while time.monotonic() < deadline and process.poll() is None:
            # Read while the run rewrites it: an atomic rename never shows a half-written file.
            if last.is_file() and torch.load(last, weights_only=True)["global_step"] >= wait_for:
                break
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
    final = subprocess.run([sys.executable, str(REPO / "train.py"), *args, "--trainer.default_root_dir", str(root),
                            "--ckpt_path", str(last)], env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 12
    expected = weights(whole)
    got = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()}
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert sorted(p.name for p in root.glob("lightning_logs/*")) == ["version_0"]
    # The log: every row as in the uninterrupted run, none twice. A kill in the instant between a
    # step's checkpoint and its row being written loses that row (wwbl.run_logs): at most one a kill.
    want = {key_of(row): row for row in logged_rows(Path(whole.trainer.logger.log_dir))}
    have = [key_of(row) for row in logged_rows(root / "lightning_logs" / "version_0")]
    assert len(have) == len(set(have)) and set(have) <= set(want) and len(want) - len(have) <= 3
    for row in logged_rows(root / "lightning_logs" / "version_0"):
        assert row == pytest.approx(want[key_of(row)], abs=1e-5)


def key_of(row: dict[str, float]) -> tuple:
    return row["epoch"], row["step"], tuple(sorted(row))
