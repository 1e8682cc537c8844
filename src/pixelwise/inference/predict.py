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

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from pixelwise.engine.checkpoint import ModelMeta, load_model
from pixelwise.engine.distributed import pick_device
from pixelwise.errors import CheckpointError, DataError
from pixelwise.inference.tta import with_tta

ImageLike = np.ndarray | Image.Image | torch.Tensor | str | Path


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


def to_float_chw(image: ImageLike, channels: int) -> torch.Tensor:
    """``image`` as float32 ``(C, H, W)`` scaled as the datasets scale it.

    Accepts a file path, a PIL image, a numpy array ``(H, W)`` or ``(H, W, C)``, or a tensor
    ``(C, H, W)`` / ``(H, W)``. 8-bit values are divided by 255, 16-bit arrays are scaled band by
    band (:func:`pixelwise.data.io.image_to_tensor`), floats are taken as already in [0, 1].
    """
    from pixelwise.data.io import image_to_tensor, read_image

    source = str(image) if isinstance(image, (str, Path)) else "image"  # named in errors
    if isinstance(image, (str, Path)):
        image = read_image(Path(image))
    if isinstance(image, Image.Image):
        image = np.asarray(image)
    if isinstance(image, np.ndarray):
        array = image[..., None] if image.ndim == 2 else image
        tensor = (torch.from_numpy(np.ascontiguousarray(array, np.float32)).permute(2, 0, 1)
                  if np.issubdtype(array.dtype, np.floating) else image_to_tensor(array))
    elif isinstance(image, torch.Tensor):
        tensor = image.float() if image.is_floating_point() else image.float() / 255
        tensor = tensor[None] if tensor.dim() == 2 else tensor
    else:
        raise DataError(
            f"image must be a path, PIL image, numpy array or tensor, got {type(image).__name__}"
        )
    if tensor.shape[0] != channels:
        if tensor.shape[0] == 4 and channels == 3:  # RGBA: drop alpha
            tensor = tensor[:3]
        elif tensor.shape[0] == 1 and channels == 3:  # grey into an RGB model
            tensor = tensor.expand(3, -1, -1)
        else:
            mode = "L" if channels == 1 else "RGB"
            raise DataError(
                f"{source}: images must have {channels} channels for this model, got "
                f"{tensor.shape[0]} (shape {tuple(tensor.shape)}); try converting it (e.g. PIL "
                f".convert('{mode}'))"
            )
    return tensor.contiguous()


def load_onnx(path: str | Path) -> tuple[nn.Module, ModelMeta]:
    """An exported ONNX file as a module plus the checkpoint metadata stored inside it."""
    from pixelwise.inference.onnx import OnnxModule

    module = OnnxModule(path)
    if module.metadata is None:
        raise CheckpointError(
            f"ONNX model {path} must carry pixelwise metadata (classes, mean/std), got none; "
            "try exporting it with pixelwise export CKPT --format onnx --out FILE"
        )
    return module, ModelMeta.from_json(json.dumps(module.metadata), Path(path))


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and the image files of each folder (sorted); DataError when none exist."""
    from pixelwise.data.io import IMAGE_SUFFIXES

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"input must be an image file or a folder, got {str(item)!r}")
    if not files:
        raise DataError(f"inputs must contain images ({', '.join(IMAGE_SUFFIXES)}), got none in "
                        f"{[str(i) for i in inputs]}")
    return files


def predict_to_files(segmenter: Segmenter, image: ImageLike, out_stem: str | Path,
                     formats: tuple[str, ...] = ("png", "overlay"),
                     source_name: str | None = None, min_area: int = 0,
                     simplify: float = 0.0) -> dict[str, Path]:
    """Predict ``image`` and write it in ``formats`` via :func:`pixelwise.outputs.write_prediction`
    (``<stem>.png`` palette label map, ``<stem>_overlay.png`` colours over the image, ...).

    A GeoTIFF input passes its CRS and transform on to the geotiff and geojson outputs.
    """
    from pixelwise.outputs import write_prediction
    from pixelwise.postprocess import read_georeference

    georef = None
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() in (".tif", ".tiff") and (
            {"geotiff", "geojson"} & set(formats)):
        georef = read_georeference(image)

    chw = to_float_chw(image, segmenter.meta.in_channels)
    label = segmenter.predict(chw)
    return write_prediction(label, out_stem, formats, palette=segmenter.palette,
                            class_names=segmenter.classes, image=display_image(chw),
                            georef=georef, min_area=min_area, simplify=simplify,
                            source_name=source_name)


def display_image(chw: torch.Tensor) -> np.ndarray:
    """A float ``(C, H, W)`` image in [0, 1] as 8-bit for display (overlays, figures):
    ``(H, W)`` grey for one band, else ``(H, W, 3)`` RGB from the first three bands."""
    shown = (chw.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return shown[..., 0] if shown.shape[2] == 1 else shown[..., :3]
