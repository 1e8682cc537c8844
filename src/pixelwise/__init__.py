"""pixelwise: semantic segmentation as FCN and U-Net describe it.

The top-level names are imported on first use, so ``import pixelwise`` stays fast::

    pixelwise.train(config)                     # pixelwise.engine.train.train
    pixelwise.evaluate(checkpoint, "camvid", root)  # pixelwise.engine.evaluate.evaluate
    pixelwise.Segmenter.from_checkpoint(path)   # pixelwise.inference.predict.Segmenter
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pixelwise.version import __version__

__all__ = ["Segmenter", "__version__", "evaluate", "train"]

_LAZY = {
    "train": "pixelwise.engine.train",
    "evaluate": "pixelwise.engine.evaluate",
    "Segmenter": "pixelwise.inference.predict",
}

if TYPE_CHECKING:
    from pixelwise.engine.evaluate import evaluate
    from pixelwise.engine.train import train
    from pixelwise.inference.predict import Segmenter


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pixelwise' has no attribute {name!r}")
