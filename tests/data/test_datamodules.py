"""The Lightning data modules: batches, the Flickr30k validation set and the DataLoader settings."""
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from tests.helpers.training_layouts import write_coco, write_cub, write_flickr30k
from wwbl.data import GroundingDataModule, WSOLDataModule


def test_grounding_datamodule_batches_and_flickr_validation(tmp_path):
    write_coco(tmp_path / "coco")
    write_flickr30k(tmp_path / "flickr")
    dm = GroundingDataModule("coco", str(tmp_path / "coco"), image_size=32, batch_size=2, num_workers=0,
                             val_root=str(tmp_path / "flickr"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and len(batch["phrase"]) == 2
    val = next(iter(dm.val_dataloader()))
    assert len(val) == 2 and val[0]["size"] == (40, 50)
    assert val[0]["phrases"] == [["a man", "the person"]]
    assert torch.allclose(val[0]["boxes"][0], torch.tensor([[4.0, 4.0, 29.0, 34.0]]))


def test_wsol_datamodule(tmp_path):
    write_cub(tmp_path)
    dm = WSOLDataModule(str(tmp_path), image_size=24, resize_size=28, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 24, 24)
    assert len(next(iter(dm.val_dataloader()))) == 3


def _loader_settings(loader):
    return (loader.num_workers, loader.pin_memory, loader.persistent_workers, loader.prefetch_factor)


def _trainer_on(device_type):
    """Stands in for the Trainer a data module is attached to: `_pin` reads its root device, the
    training loader its world size and rank."""
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device_type)), world_size=1, global_rank=0)


def test_loader_defaults_workers_pinning_persistence_and_prefetch(tmp_path):
    write_coco(tmp_path / "coco")
    write_flickr30k(tmp_path / "flickr")
    dm = GroundingDataModule("coco", str(tmp_path / "coco"), image_size=32, batch_size=2,
                             val_root=str(tmp_path / "flickr"))
    # Documented defaults: 8 workers, persistent, 2 batches ahead each; no trainer (or a CPU one): not pinned.
    assert _loader_settings(dm.train_dataloader()) == (8, False, True, 2)
    assert _loader_settings(dm.val_dataloader()) == (8, False, True, 2)
    dm.trainer = _trainer_on("cpu")
    assert dm.train_dataloader().pin_memory is False
    dm.trainer = _trainer_on("cuda")  # pin_memory=None pins when the trainer trains on CUDA
    assert dm.train_dataloader().pin_memory is True and dm.val_dataloader().pin_memory is True


def test_loader_knobs_are_passed_and_those_needing_workers_dropped_without(tmp_path):
    write_cub(tmp_path)
    dm = WSOLDataModule(str(tmp_path), image_size=24, resize_size=28, batch_size=2, num_workers=3,
                        pin_memory=False, persistent_workers=False, prefetch_factor=5)
    dm.trainer = _trainer_on("cuda")  # an explicit pin_memory wins over the trainer's device
    assert _loader_settings(dm.train_dataloader()) == (3, False, False, 5)
    dm = WSOLDataModule(str(tmp_path), image_size=24, resize_size=28, batch_size=2, num_workers=0, pin_memory=True)
    # torch refuses persistent workers and a prefetch factor without workers: they are not passed.
    assert _loader_settings(dm.train_dataloader()) == (0, True, False, None)


def test_bad_loader_settings_are_refused():
    with pytest.raises(ValueError, match="prefetch_factor must be >= 1, got 0"):
        WSOLDataModule("unused", prefetch_factor=0)
    with pytest.raises(ValueError, match="num_workers must be >= 0, got -1"):
        GroundingDataModule("coco", "unused", num_workers=-1)


def test_images_are_decoded_and_resized_in_the_workers(tmp_path):
    """Each item leaves ``__getitem__`` (so a worker process) as an S×S tensor from a larger JPEG: the main
    process only stacks them. Iterated here through one real worker process."""
    write_coco(tmp_path / "coco")
    dm = GroundingDataModule("coco", str(tmp_path / "coco"), image_size=24, batch_size=2, num_workers=1)
    dm.setup("fit")
    with Image.open(dm.train_set.image_paths[0]) as source:
        assert source.size != (24, 24)
    assert dm.train_set[0]["image"].shape == (3, 24, 24)
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 24, 24) and batch["image"].dtype == torch.float32
