"""`Segmenter`: a trained model as a function from an image to a label map.

>>> seg = Segmenter.from_checkpoint("runs/exp/best.safetensors")
>>> label = seg.predict("photo.png")          # (H, W) class ids (uint8)
>>> proba = seg.predict_proba(array_hwc_uint8)  # (K, H, W) probabilities

Images are scaled to [0, 1] exactly as the datasets do and normalised with the mean/std stored
in the checkpoint, so prediction sees what training saw. Images larger than ``tile_above``
pixels on a side, and every image for a U-Net with unpadded ("valid") convolutions, go through
:func:`pixelwise.inference.tiling.predict_tiled` (overlap-tile, U-Net §2); smaller ones run
whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixelwise.checkpoint import ModelMeta, load_model
from pixelwise.data.io import ImageLike, to_float_chw
from pixelwise.device import pick_device
from pixelwise.inference.onnx import load_onnx
from pixelwise.inference.tta import with_tta


class Segmenter:
    """Runs a segmentation model on single images of any size (see the module docs).

    Args:
        model, meta: the network and its checkpoint metadata (classes, palette, mean/std). The
            model's ``geometry`` (``pixelwise.models.geometry_of``) sets the tiles' alignment
            and sends every image of a "valid" model (output smaller than input) through tiling.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        tile_above, tile, overlap: images larger than ``tile_above`` pixels on a side are
            predicted in ``tile``-pixel tiles overlapping by ``overlap`` pixels.
        tta_flips, tta_scales: test-time augmentation (:mod:`pixelwise.inference.tta`).
        progress: show a progress bar over the tiles of tiled images.
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, device: str | torch.device = "auto",
                 tile_above: int = 1024, tile: int = 512, overlap: int = 64,
                 tta_flips: tuple[str, ...] = (), tta_scales: tuple[float, ...] = (1.0,),
                 progress: bool = False) -> None:
        from pixelwise.models.geometry import geometry_of

        self.device = pick_device(device)
        self.geometry = geometry_of(model)  # read before TTA wraps the model
        # channels_last: faster convolutions on CPU and CUDA, the layout evaluate uses too.
        model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.model = with_tta(model, tta_flips, tta_scales)
        self.meta = meta
        self.tile_above, self.tile, self.overlap = tile_above, tile, overlap
        self.progress = progress  # a progress bar over the tiles of large images
        shape = (-1, 1, 1)
        self._mean = torch.tensor(meta.mean, dtype=torch.float32, device=self.device).view(shape)
        self._std = torch.tensor(meta.std, dtype=torch.float32, device=self.device).view(shape)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto",
                        **options) -> Segmenter:
        """Rebuild the model from one ``.safetensors`` file written by ``pixelwise train``, or
        run an ``.onnx`` file written by ``pixelwise export`` through onnxruntime (CPU)."""
        if Path(path).suffix.lower() == ".onnx":
            return cls(*load_onnx(path), device="cpu", **options)
        model, meta = load_model(path)
        return cls(model, meta, device=device, **options)

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return self.meta.palette

    @torch.inference_mode()
    def predict(self, image: ImageLike) -> np.ndarray:
        """Label map ``(H, W)`` of class ids (uint8 for up to 256 classes, else int16).

        Tiled images never hold all class probabilities at once, so memory stays flat in the
        image size (see :func:`pixelwise.inference.tiling.predict_tiled`).
        """
        chw = to_float_chw(image, self.meta.in_channels)
        if self._needs_tiling(chw):
            return self._tiled(chw, return_proba=False)
        from pixelwise.inference.tiling import label_dtype

        return self._whole(chw).argmax(0).cpu().numpy().astype(label_dtype(self.meta.num_classes))

    @torch.inference_mode()
    def predict_proba(self, image: ImageLike) -> np.ndarray:
        """Class probabilities ``(K, H, W)`` float32 (softmax over classes) for one image."""
        chw = to_float_chw(image, self.meta.in_channels)
        if self._needs_tiling(chw):
            return self._tiled(chw, return_proba=True)[1]
        return self._whole(chw).float().cpu().numpy()

    def _whole(self, chw: torch.Tensor) -> torch.Tensor:
        """Softmax ``(K, H, W)`` of the whole image in one forward pass."""
        return self.model(self._normalise(chw.to(self.device)[None])).softmax(1)[0]

    def _tiled(self, chw: torch.Tensor, return_proba: bool):
        from pixelwise.inference.tiling import predict_tiled

        return predict_tiled(
            self.model, chw, tile=self.geometry.nearest_input_size(self.tile),
            overlap=self.overlap, num_classes=self.meta.num_classes, return_proba=return_proba,
            align=self.geometry.align, geometry=self.geometry, device=self.device,
            preprocess=self._normalise, progress=self.progress,
        )

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        return (batch - self._mean) / self._std

    def _needs_tiling(self, chw: torch.Tensor) -> bool:
        """Valid models (output smaller than input) always go tile by tile, with mirroring."""
        return not self.geometry.same_size or max(chw.shape[-2:]) > self.tile_above
