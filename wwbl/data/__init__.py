"""Training data for network g: datasets in their published layouts and the LightningDataModules.

See data/README.md for the expected directory trees.
"""

from wwbl.data.coco import CocoCaptions
from wwbl.data.cub import CUBEval, CUBTrain
from wwbl.data.datamodules import GroundingDataModule, WSOLDataModule
from wwbl.data.visual_genome import VisualGenomeRegions

__all__ = ["CUBEval", "CUBTrain", "CocoCaptions", "GroundingDataModule", "VisualGenomeRegions", "WSOLDataModule"]
