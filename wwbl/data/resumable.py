"""A training loader that a run killed mid-epoch resumes exactly: same batches, same augmentations.

A plain shuffled DataLoader restarts its epoch on resume, so a run resumed from a mid-epoch
checkpoint sees some images twice and others not at all, and its random flips, crops and phrase
choices follow whatever state torch's global RNG is in. Here:

* :class:`ResumableSampler` draws epoch ``e``'s order from a generator seeded with ``seed + e``
  (as torch's ``DistributedSampler``, of which it is one, so Lightning leaves it in place under
  DDP; each rank takes every ``num_replicas``-th index) and gives every position its own item
  seed drawn from the same generator;
* :class:`SeededItems` runs the dataset's ``__getitem__`` with torch's RNG seeded by that item
  seed (the caller's RNG state is restored), so an item's augmentation depends on (seed, epoch,
  index) only — not on the worker count, the batch it lands in or an interruption;
* :class:`ResumableLoader` knows its position: ``position()`` is the epoch and the batches handed
  out in it, ``resume_at(position)`` makes the next iteration of that epoch skip them. The data
  module stores the position in every checkpoint and hands it back on resume
  (``wwbl.data.datamodules``). Lightning's own stateful-loader protocol is not used on purpose:
  Lightning restores a loader only when its fit loop believes it is restarting mid-epoch, and
  after a resume from a checkpoint written at an epoch's last batch its epoch counters no longer
  say so (Lightning 2.6), so the next resume would replay the epoch from its start.

The seed is Lightning's global seed (``seed_everything``, ``PL_GLOBAL_SEED``) unless given.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

ItemKey = tuple[int, int]  # (dataset index, item seed)


def global_seed() -> int:
    """Lightning's global seed (set by ``seed_everything``), 0 when none was set."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class SeededItems(Dataset):
    """``dataset`` indexed by ``(index, item_seed)``: each item is computed under torch's RNG seeded
    with its item seed, leaving the caller's RNG state as it was."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: ItemKey | int) -> Any:
        if isinstance(key, int):  # a plain sampler put in by Lightning (overfit_batches): no item seed
            return self.dataset[key]
        index, item_seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch shuffle yielding ``(index, item_seed)``; can start an epoch part-way.

    ``num_replicas`` / ``rank`` are the trainer's world size and global rank (1 / 0 on one
    device); the dataset's tail that does not divide among the ranks is left out, as with
    ``DistributedSampler(drop_last=True)``.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0  # samples of this rank's share of ``self.epoch`` already consumed

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0  # a part-way start applies to the epoch it was recorded in only
        super().set_epoch(epoch)

    def start_part_way(self, epoch: int, consumed: int) -> None:
        """Make the next iteration of ``epoch`` begin after its first ``consumed`` samples."""
        super().set_epoch(epoch)
        self.skip = consumed

    def __iter__(self) -> Iterator[ItemKey]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator)
        item_seeds = torch.randint(2 ** 62, (len(self.dataset),), generator=generator)
        mine = order[: self.total_size][self.rank:: self.num_replicas][self.skip:]
        self.skip = 0  # consumed once: the next epoch (or a re-iteration) starts from its beginning
        return iter([(int(i), int(item_seeds[i])) for i in mine])


class ResumableLoader(DataLoader):
    """A DataLoader over :class:`SeededItems` with a :class:`ResumableSampler` that can resume an
    epoch part-way (``position`` / ``resume_at``)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int | None = None, num_replicas: int = 1,
                 rank: int = 0, **loader_options: Any) -> None:
        items = dataset if isinstance(dataset, SeededItems) else SeededItems(dataset)
        sampler = loader_options.pop("sampler", None) or ResumableSampler(
            items, global_seed() if seed is None else seed, num_replicas, rank)
        super().__init__(items, batch_size=batch_size, sampler=sampler, drop_last=True, **loader_options)
        self._handed_out = 0  # batches of the current epoch given to the training loop

    def __iter__(self) -> Iterator[Any]:
        # A generator: the underlying iterator (and the sampler's order) is made at the first
        # batch, after Lightning has set the epoch, not when ``iter()`` is called.
        self._handed_out = getattr(self.sampler, "skip", 0) // self.batch_size
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def position(self) -> dict[str, int]:
        """The epoch being iterated and the batches of it handed out so far."""
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": int(self._handed_out)}

    def resume_at(self, position: dict[str, int]) -> None:
        """Make the next iteration of ``position["epoch"]`` skip its first ``position["batches"]``."""
        if not isinstance(self.sampler, ResumableSampler):
            return
        self.sampler.start_part_way(int(position["epoch"]), int(position["batches"]) * self.batch_size)
        self._handed_out = int(position["batches"])
