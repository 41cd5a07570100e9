"""LightningDataModules for training network g.

* :class:`GroundingDataModule`: COCO 2014 captions or Visual Genome region phrases (WSG), with an
  optional grounding validation set in the Flickr30k Entities layout (pointing game + box
  accuracy, the signal the reference selects checkpoints on — here on ``val`` by default, not
  ``test``).
* :class:`WSOLDataModule`: CUB-200-2011 (WSOL), validated on its test split.

Training batches are ``{"image": B×3×S×S in [0, 1], "phrase": list[str]}``. Validation batches
are lists of per-image items ``{"image": 3×S×S, "size": (H, W), "phrases": [list[str] per
entity], "boxes": [K×4 xyxy per entity, original frame]}``; g's map of an entity (the mean over
its phrases) is resized back to the original size before scoring.

The training loader is a :class:`wwbl.data.resumable.ResumableLoader`: its order and every item's
augmentation follow from the global seed and the epoch. The data module saves the loader's
position in every checkpoint (``state_dict``) and gives it back to the loader on resume, so a run
resumed from a mid-epoch checkpoint continues with the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from wwbl.data.coco import CocoCaptions
from wwbl.data.cub import CUBEval, CUBTrain
from wwbl.data.grounding_val import FlickrGroundingVal
from wwbl.data.resumable import ResumableLoader
from wwbl.data.transforms import eval_transform, grounding_train_transform, wsol_train_transform
from wwbl.data.visual_genome import VisualGenomeRegions

GROUNDING_DATASETS = ("coco", "vg")
# The loader knobs both data modules share (module docstring).
PERSISTENT_WORKERS = True
PREFETCH_FACTOR = 2


def list_collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation items differ in size and box count: keep them as a list."""
    return items


class _TrainingDataModule(L.LightningDataModule):
    """Loaders shared by both data modules: shuffled training batches, list-collated validation."""

    def __init__(self, batch_size: int, num_workers: int, val_batch_size: int, has_val_data: bool,
                 pin_memory: bool | None, persistent_workers: bool, prefetch_factor: int) -> None:
        super().__init__()
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {prefetch_factor}")
        self.batch_size, self.num_workers, self.val_batch_size = batch_size, num_workers, val_batch_size
        self.has_val_data = has_val_data
        self.pin_memory, self.persistent_workers, self.prefetch_factor = pin_memory, persistent_workers, prefetch_factor
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._train_loader: ResumableLoader | None = None
        self._resume_position: dict[str, int] | None = None  # from a checkpoint, until the loader exists

    @property
    def image_size(self) -> int:
        """g's input side; `train.py` links it to `model.input_size`."""
        return self.hparams.image_size

    def loader_options(self) -> dict[str, Any]:
        """The DataLoader arguments both loaders share (workers, pinning, prefetching)."""
        options: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": self._pin()}
        if self.num_workers > 0:  # DataLoader refuses these without workers
            options.update(persistent_workers=self.persistent_workers, prefetch_factor=self.prefetch_factor)
        return options

    def _pin(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> ResumableLoader:
        if self.train_set is None:
            self.setup("fit")
        if len(self.train_set) < self.batch_size:
            raise ValueError(f"the training set has {len(self.train_set)} images, fewer than one batch of "
                             f"{self.batch_size}; with drop_last nothing would be trained")
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        self._train_loader = ResumableLoader(self.train_set, self.batch_size, num_replicas=world_size, rank=rank,
                                             **self.loader_options())
        if self._resume_position is not None:
            self._train_loader.resume_at(self._resume_position)
            self._resume_position = None  # once: a reloaded loader starts its epoch from the beginning
        return self._train_loader

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: where the training loader is in its epoch."""
        return {} if self._train_loader is None else {"train_loader": self._train_loader.position()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Called on resume, before the training loader is made."""
        self._resume_position = state.get("train_loader")

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_val_data:
            return []
        if self.val_set is None:
            self.setup("validate")
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False, collate_fn=list_collate,
                          **self.loader_options())


class GroundingDataModule(_TrainingDataModule):
    """WSG training data (COCO captions or VG regions) and optional Flickr30k Entities validation.

    Args:
        dataset: "coco" or "vg".
        root: dataset root (see data/README.md).
        image_size: training side S (paper 299, released code 304).
        hflip_p: horizontal flip probability (paper 0.5).
        word_dropout: COCO word-drop probability (released code 0.2, paper 0).
        coco_split, coco_image_dir: COCO annotation split name and an explicit image folder.
        vg_split, vg_split_file, vg_max_words: VG split name, split file (default
            ``VG_Annotations/data_splits.pickle``) and the phrase length limit.
        val_root: Flickr30k Entities root for validation (None: no validation).
        val_split: "val" (default) or "test" (the reference's choice).
        val_max_items: validate on the first N items only (None: all).
        check_files: verify that every image file exists when the dataset is built.
        num_workers, pin_memory, persistent_workers, prefetch_factor: the DataLoaders' workers,
            pinning (None: when training on CUDA), worker persistence and per-worker prefetch
            (module docstring).
    """

    def __init__(
        self,
        dataset: str = "coco",
        root: str = "data/coco",
        image_size: int = 299,
        hflip_p: float = 0.5,
        batch_size: int = 32,
        num_workers: int = 8,
        word_dropout: float = 0.0,
        coco_split: str = "train2014",
        coco_image_dir: str | None = None,
        vg_split: str = "train",
        vg_split_file: str | None = None,
        vg_max_words: int = 80,
        val_root: str | None = None,
        val_split: str = "val",
        val_batch_size: int = 8,
        val_max_items: int | None = None,
        check_files: bool = True,
        pin_memory: bool | None = None,
        persistent_workers: bool = PERSISTENT_WORKERS,
        prefetch_factor: int = PREFETCH_FACTOR,
    ) -> None:
        super().__init__(batch_size, num_workers, val_batch_size, val_root is not None, pin_memory,
                         persistent_workers, prefetch_factor)
        if dataset not in GROUNDING_DATASETS:
            raise ValueError(f"dataset must be one of {GROUNDING_DATASETS}, got '{dataset}'")
        if dataset != "coco" and word_dropout > 0:
            raise ValueError("word_dropout applies to COCO captions only")
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and self.train_set is None:
            transform = grounding_train_transform(hp.image_size, hp.hflip_p)
            if hp.dataset == "coco":
                self.train_set = CocoCaptions(hp.root, transform, split=hp.coco_split, word_dropout=hp.word_dropout,
                                              image_dir=hp.coco_image_dir, check_files=hp.check_files)
            else:
                self.train_set = VisualGenomeRegions(hp.root, transform, split=hp.vg_split,
                                                     split_file=hp.vg_split_file, max_words=hp.vg_max_words,
                                                     check_files=hp.check_files)
        if stage in ("fit", "validate") and self.has_val_data and self.val_set is None:
            self.val_set = FlickrGroundingVal(hp.val_root, hp.val_split, eval_transform(hp.image_size),
                                              max_items=hp.val_max_items)


class WSOLDataModule(_TrainingDataModule):
    """CUB-200-2011 WSOL training (256 resize → 224 random crop → flip) and test-split validation.

    Args:
        root: CUB_200_2011 folder (see data/README.md).
        image_size, resize_size: crop side and the resize before cropping (paper 224, 256).
        hflip_p: horizontal flip probability (paper 0.5).
        text: "category" (the same word for every image) or "class_name" (the image's species).
        category: the category word (paper: the object's name; released code: "bird").
        validate: evaluate localisation on the test split after each epoch.
        num_workers, pin_memory, persistent_workers, prefetch_factor: as for
            :class:`GroundingDataModule`.
    """

    def __init__(
        self,
        root: str = "data/CUB_200_2011",
        image_size: int = 224,
        resize_size: int = 256,
        hflip_p: float = 0.5,
        batch_size: int = 48,
        num_workers: int = 8,
        text: str = "category",
        category: str = "bird",
        validate: bool = True,
        val_batch_size: int = 32,
        check_files: bool = True,
        pin_memory: bool | None = None,
        persistent_workers: bool = PERSISTENT_WORKERS,
        prefetch_factor: int = PREFETCH_FACTOR,
    ) -> None:
        super().__init__(batch_size, num_workers, val_batch_size, validate, pin_memory, persistent_workers,
                         prefetch_factor)
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and self.train_set is None:
            self.train_set = CUBTrain(hp.root, wsol_train_transform(hp.image_size, hp.resize_size, hp.hflip_p),
                                      text=hp.text, category=hp.category, check_files=hp.check_files)
        if stage in ("fit", "validate") and self.has_val_data and self.val_set is None:
            self.val_set = CUBEval(hp.root, eval_transform(hp.image_size), text=hp.text, category=hp.category,
                                   check_files=hp.check_files)
