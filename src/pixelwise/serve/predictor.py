"""`BatchPredictor`: a `Segmenter` run on several same-size images in one forward pass.

Small images are stacked into one batch (normalised with the checkpoint's mean/std, as
`Segmenter` does) and run through the model once, so the micro-batcher's batches cost one model
call. Images with a side above the segmenter's ``tile_above`` go one by one through
``Segmenter.predict_proba``, which tiles them (overlap-tile, flat memory per tile band).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pixelwise.inference.predict import Segmenter
from pixelwise.outputs import compact_label


@dataclass(frozen=True)
class Prediction:
    """One image's answer: ``label`` ``(H, W)`` class ids (uint8 up to 256 classes, else
    int16), ``confidence`` ``(H, W)`` float32 softmax probability of that class, and whether the
    image went through tiled inference."""

    label: np.ndarray
    confidence: np.ndarray
    tiled: bool


class BatchPredictor:
    """Callable ``predictor(images) -> predictions`` for a list of float ``(C, H, W)`` images of
    one size (see the module docs)."""

    def __init__(self, segmenter: Segmenter) -> None:
        from pixelwise.models import same_size_output

        self.segmenter = segmenter
        # a padding="valid" U-Net runs on the mirror-extended image, as evaluation does
        self.net = same_size_output(segmenter.model)
        shape = (1, -1, 1, 1)
        device = segmenter.device
        self.mean = torch.tensor(segmenter.meta.mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(segmenter.meta.std, dtype=torch.float32, device=device).view(shape)

    def is_tiled(self, image: torch.Tensor) -> bool:
        """Whether ``image`` is large enough to go through ``Segmenter``'s tiled inference."""
        return max(image.shape[-2:]) > self.segmenter.tile_above

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Prediction]:
        if not images:
            return []
        if len({tuple(image.shape) for image in images}) != 1:
            raise ValueError(f"images must share one shape to be batched, got "
                             f"{sorted({tuple(i.shape) for i in images})}; try grouping by size")
        if self.is_tiled(images[0]):
            return [self._tiled(image) for image in images]
        return self._batched(images)

    @torch.inference_mode()
    def _batched(self, images: Sequence[torch.Tensor]) -> list[Prediction]:
        batch = torch.stack(list(images)).to(self.segmenter.device)
        proba = self.net((batch - self.mean) / self.std).float().softmax(1)  # (N, K, H, W)
        confidence, label = proba.max(1)
        return [Prediction(compact_label(label[i].cpu().numpy()), confidence[i].cpu().numpy(),
                           tiled=False) for i in range(len(images))]

    def _tiled(self, image: torch.Tensor) -> Prediction:
        label, proba = self.segmenter.predict_with_proba(image)  # tiled; (K, H, W) float32
        return Prediction(label, proba.max(0), tiled=True)
