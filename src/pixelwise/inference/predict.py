"""`Segmenter`: a trained model as a function from an image to a label map.

>>> seg = Segmenter.from_checkpoint("runs/exp/best.safetensors")
>>> label = seg.predict("photo.png")          # (H, W) class ids (uint8)
>>> labels = seg.predict(["a.png", "b.png"])  # a list: same-size images run as one batch
>>> proba = seg.predict_proba(array_hwc_uint8)  # (K, H, W) probabilities

Images are scaled to [0, 1] exactly as the datasets do and normalised with the mean/std stored
in the checkpoint, so prediction sees what training saw. Images larger than ``tile_above``
pixels on a side, and every image for a U-Net with unpadded ("valid") convolutions, go through
:func:`pixelwise.inference.tiling.predict_tiled` (overlap-tile, U-Net §2); smaller ones run
whole.

``backend=`` runs the model through PyTorch fp32 or bf16, or onnxruntime fp32 or int8, or
``"auto"``: the fastest of those measured here whose labels agree with fp32
(:mod:`pixelwise.inference.backends`). int8 and ``"auto"`` need a few calibration images.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixelwise.checkpoint import ModelMeta, load_model
from pixelwise.data.io import IMAGE_SUFFIXES, ImageLike, to_float_chw
from pixelwise.device import pick_device
from pixelwise.errors import ConfigError, DataError
from pixelwise.inference.backends import CALIBRATED, BackendChoice, build_backend, choose_backend
from pixelwise.inference.onnx import OnnxModule, load_onnx
from pixelwise.inference.tta import with_tta
from pixelwise.labels import class_ids, label_dtype
from pixelwise.models.layers import reflect_indices

CALIBRATION_IMAGES = 4  # images taken from a calibration folder (the first, sorted by name)
TILE = 512  # default tile size of images predicted tile by tile


class Segmenter:
    """Runs a segmentation model on single images of any size (see the module docs).

    Args:
        model, meta: the network and its checkpoint metadata (classes, palette, mean/std). The
            model's ``geometry`` (``pixelwise.models.geometry_of``) sets the tiles' alignment
            and sends every image of a "valid" model (output smaller than input) through tiling.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        tile_above, tile, overlap: images larger than ``tile_above`` pixels on a side are
            predicted in ``tile``-pixel tiles overlapping by ``overlap`` pixels.
        tile_batch: tiles per forward pass of tiled images.
        tta_flips, tta_scales: test-time augmentation (:mod:`pixelwise.inference.tta`).
        progress: show a progress bar over the tiles of tiled images.
        backend: "torch" (eager fp32), "torch-bf16", "onnx", "onnx-int8" or "auto"
            (:mod:`pixelwise.inference.backends`); None: the model as given (eager PyTorch, or
            onnxruntime fp32 for an :class:`OnnxModule`). ``backend_choice`` holds what "auto"
            measured (None for a named backend).
        calibration: images for "onnx-int8" and "auto": a folder (its first
            ``CALIBRATION_IMAGES`` images by name) or a list of images (paths, arrays...). Each
            is prepared as prediction prepares it; one that prediction would tile gives one
            centre tile.
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, device: str | torch.device = "auto",
                 tile_above: int = 1024, tile: int = TILE, overlap: int = 64, tile_batch: int = 4,
                 tta_flips: tuple[str, ...] = (), tta_scales: tuple[float, ...] = (1.0,),
                 progress: bool = False, backend: str | None = None,
                 calibration: str | Path | Sequence[ImageLike] | None = None) -> None:
        from pixelwise.models.geometry import geometry_of

        self.device = pick_device(device)
        self.geometry = geometry_of(model)  # read before TTA wraps the model
        self.meta = meta
        self.tile_above, self.tile, self.overlap = tile_above, tile, overlap
        self.tile_batch = tile_batch
        self.progress = progress  # a progress bar over the tiles of large images
        shape = (-1, 1, 1)
        self._mean = torch.tensor(meta.mean, dtype=torch.float32, device=self.device).view(shape)
        self._std = torch.tensor(meta.std, dtype=torch.float32, device=self.device).view(shape)
        # channels_last: faster convolutions on CPU and CUDA, the layout evaluate uses too.
        model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.backend = backend or ("onnx" if isinstance(model, OnnxModule) else "torch")
        self.backend_choice: BackendChoice | None = None
        inputs = ([self.calibration_input(image) for image in calibration_images(calibration)]
                  if self.backend in CALIBRATED else [])
        if self.backend == "auto":  # timed with the TTA views and scales prediction runs
            runner, self.backend_choice = choose_backend(
                model, self.device, meta.in_channels, inputs,
                wrap=lambda module: with_tta(module, tta_flips, tta_scales))
            self.backend = self.backend_choice.name
        else:
            runner = build_backend(self.backend, model, self.device, meta.in_channels, inputs)
        self.model = with_tta(runner, tta_flips, tta_scales)
        self.tta_flips, self.tta_scales = tuple(tta_flips), tuple(tta_scales)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto",
                        **options) -> Segmenter:
        """Rebuild the model from one ``.safetensors`` file written by ``pixelwise train``, or
        run an ``.onnx`` file written by ``pixelwise export`` through onnxruntime (CPU).
        ``options`` (``backend``, ``calibration``, tiling, TTA) go to :class:`Segmenter`."""
        if Path(path).suffix.lower() == ".onnx":
            return cls(*load_onnx(path), device="cpu", **options)
        model, meta = load_model(path)
        return cls(model, meta, device=device, **options)

    def __repr__(self) -> str:
        classes = ", ".join(self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
        tta = (f", tta flips {self.tta_flips} scales {self.tta_scales}"
               if self.tta_flips or self.tta_scales != (1.0,) else "")
        return (f"Segmenter({self.meta.name}, {self.meta.num_classes} classes [{classes}], "
                f"{self.meta.in_channels} input channels, device {self.device}, backend {self.backend}, "
                f"tiles of "
                f"{self.tile} px overlapping {self.overlap} px above {self.tile_above} px{tta})")

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return self.meta.palette

    @torch.inference_mode()
    def predict(self, image: ImageLike | Sequence[ImageLike],
                batch_size: int = 8) -> np.ndarray | list[np.ndarray]:
        """Label map ``(H, W)`` of class ids (uint8 for up to 256 classes, else int16).

        Given a list (or tuple) of images, returns a list of label maps in the same order: the
        images are all decoded first, and those of one size that run whole go through the model
        ``batch_size`` at a time. Tiled images never hold all class probabilities at once, so
        memory stays flat in the image size (see :func:`pixelwise.inference.tiling.predict_tiled`).
        """
        if isinstance(image, (list, tuple)):
            return self._predict_list([to_float_chw(i, self.meta.in_channels) for i in image],
                                      batch_size)
        chw = to_float_chw(image, self.meta.in_channels)
        if self._needs_tiling(chw):
            return self._tiled(chw, return_proba=False)
        return self._labels(self._whole(chw[None]))[0]

    @torch.inference_mode()
    def predict_proba(self, image: ImageLike) -> np.ndarray:
        """Class probabilities ``(K, H, W)`` float32 (softmax over classes) for one image."""
        chw = to_float_chw(image, self.meta.in_channels)
        if self._needs_tiling(chw):
            return self._tiled(chw, return_proba=True)[1]
        return self._whole(chw[None])[0].float().cpu().numpy()

    @torch.inference_mode()
    def predict_with_proba(self, image: ImageLike) -> tuple[np.ndarray, np.ndarray]:
        """The label map ``(H, W)`` (as :meth:`predict`) and the class probabilities ``(K, H,
        W)`` float32 (as :meth:`predict_proba`) of one image, from one pass of the model: for
        outputs that need both, such as the watershed cells beside the label map."""
        chw = to_float_chw(image, self.meta.in_channels)
        if self._needs_tiling(chw):
            return self._tiled(chw, return_proba=True)
        proba = self._whole(chw[None])
        return self._labels(proba)[0], proba[0].float().cpu().numpy()

    def _predict_list(self, chws: list[torch.Tensor], batch_size: int) -> list[np.ndarray]:
        """Label maps of float ``(C, H, W)`` images, in order; same-size whole images batched."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}; try 8")
        labels: list[np.ndarray | None] = [None] * len(chws)
        same_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, chw in enumerate(chws):
            if self._needs_tiling(chw):
                labels[index] = self._tiled(chw, return_proba=False)
            else:
                same_size[tuple(chw.shape[-2:])].append(index)
        for indices in same_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                batch = self._labels(self._whole(torch.stack([chws[i] for i in chunk])))
                for index, label in zip(chunk, batch, strict=True):
                    labels[index] = label
        return labels

    def _whole(self, batch: torch.Tensor) -> torch.Tensor:
        """Softmax ``(N, K, H, W)`` of whole images ``(N, C, H, W)`` in one forward pass."""
        return self.model(self._normalise(batch.to(self.device))).softmax(1)

    def _labels(self, proba: torch.Tensor) -> np.ndarray:
        """``(N, H, W)`` class ids of softmax ``(N, K, H, W)``, in the compact dtype."""
        return class_ids(proba).cpu().numpy().astype(label_dtype(self.meta.num_classes))

    def _tiled(self, chw: torch.Tensor, return_proba: bool):
        from pixelwise.inference.tiling import predict_tiled

        return predict_tiled(
            self.model, chw, tile=self.geometry.nearest_input_size(self.tile),
            overlap=self.overlap, num_classes=self.meta.num_classes, return_proba=return_proba,
            batch_size=self.tile_batch, align=self.geometry.align, geometry=self.geometry,
            device=self.device, preprocess=self._normalise, progress=self.progress,
        )

    def calibration_input(self, image: ImageLike) -> torch.Tensor:
        """``image`` as the model sees it, normalised ``(1, C, h, w)`` on the device: whole, or
        for an image prediction would tile, one tile from its centre (mirrored where the image
        is smaller than the tile, as a valid U-Net's tiles are)."""
        chw = to_float_chw(image, self.meta.in_channels)
        if self._needs_tiling(chw):
            chw = centre_tile(chw, self.geometry.nearest_input_size(self.tile))
        return self._normalise(chw.to(self.device)[None])

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        return (batch - self._mean) / self._std

    def _needs_tiling(self, chw: torch.Tensor) -> bool:
        """Valid models (output smaller than input) always go tile by tile, with mirroring."""
        return not self.geometry.same_size or max(chw.shape[-2:]) > self.tile_above


def calibration_images(source: str | Path | Sequence[ImageLike] | None) -> list[ImageLike]:
    """The calibration images ``source`` names: a folder's first ``CALIBRATION_IMAGES`` images
    (sorted by name), or the images of a list as given; none for None."""
    if source is None:
        return []
    if not isinstance(source, str | Path):
        return list(source)
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(f"calibration must be a folder of images, got {str(folder)!r}; "
                        "try a folder of a few training images")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"calibration folder {folder} must contain images "
                        f"({', '.join(IMAGE_SUFFIXES)}), got none")
    return images[:CALIBRATION_IMAGES]


def centre_tile(chw: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` x ``size`` centre of ``chw`` ``(C, H, W)``, mirrored past its borders where
    the image is smaller (as a valid U-Net's tiles are)."""
    height, width = chw.shape[-2:]
    rows = reflect_indices((height - size) // 2, (height - size) // 2 + size, height)
    cols = reflect_indices((width - size) // 2, (width - size) // 2 + size, width)
    return chw[:, torch.from_numpy(rows)][:, :, torch.from_numpy(cols)]
