"""Datasets, joint transforms and data checks: everything from files on disk to tensors."""

from pixelwise.data.info import DatasetInfo
from pixelwise.data.palette import default_palette
from pixelwise.data.synthetic import SyntheticShapes

__all__ = ["DatasetInfo", "SyntheticShapes", "default_palette"]
