"""The Lightning data modules: batches and the Flickr30k validation set."""
import torch

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
