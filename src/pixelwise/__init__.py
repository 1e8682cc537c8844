"""pixelwise: semantic segmentation as FCN and U-Net describe it."""

__version__ = "0.1.0"
