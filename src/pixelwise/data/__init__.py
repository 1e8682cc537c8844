"""Datasets, joint transforms and data checks: everything from files on disk to tensors."""

from pixelwise.data.datasets import (
    ISBI2012,
    KINDS,
    CamVid,
    Cityscapes,
    FolderDataset,
    VOCSegmentation,
    check_request,
    dataset_options,
    open_dataset,
)
from pixelwise.data.info import DatasetInfo
from pixelwise.data.palette import default_palette
from pixelwise.data.synthetic import SyntheticShapes

__all__ = [
    "KINDS",
    "ISBI2012",
    "CamVid",
    "Cityscapes",
    "DatasetInfo",
    "FolderDataset",
    "SyntheticShapes",
    "VOCSegmentation",
    "check_request",
    "dataset_options",
    "default_palette",
    "open_dataset",
]
