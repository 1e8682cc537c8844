"""Sliding-window (overlap-tile) inference for images of any size, in flat memory.

Two kinds of model are handled, told apart by the model's
:class:`~pixelwise.models.geometry.Geometry` (``model.geometry`` for every model
``pixelwise.models.build`` returns; a plain module that states none is taken as "same" with
alignment 1, and ``geometry=`` describes any other):

* **"same" models** (output size == input size: FCN, `unet` with `padding="same"`). Tiles of
  `tile` pixels step by `tile - overlap` (rounded down to a multiple of `align`) and the last
  tile of a row or column ends exactly at the image border, so every tile sees the image border
  the way whole-image inference does (the model's own padding), never a mirrored copy. The last
  tile is up to `align - 1` pixels larger than `tile` so that every tile starts on a multiple of
  `align`: pass the model's total downsampling (`model.geometry.align`: `2 ** depth` for U-Net,
  32 for FCN) and each tile sees the same pooling grid as the whole image.
* **"valid" models** (`unet` with `padding="valid"`, output smaller than input by a margin `m`,
  the geometry's `border`, on each side): the U-Net paper's overlap-tile strategy (Ronneberger
  et al. 2015, §2 and Fig. 2). Output tiles of the model's output size are laid on a grid over the image; the input
  of each is that tile grown by `m` on every side, read from the image mirrored at its borders,
  so the border pixels get their missing context by mirroring. With `overlap=0`, `align=1` the
  output tiles abut without blending, exactly as in the paper; with `align=2 ** depth` the output
  tiles overlap by the output size modulo `align` and equal the network run on the whole
  mirror-padded image.

Overlapping predictions are blended with a window over each output tile: "gaussian" (the
default, as in nnU-Net and MONAI: `exp(-d^2 / (2 sigma^2))` with `sigma = tile / 8` per axis,
each axis clipped below at 1e-3 of its peak, see `window_1d`) weights tile centres, where the
model has most context, far above tile edges inside the image, where zero padding and missing
context distort predictions; tile edges on the image border are not down-weighted, since there
the model sees what whole-image inference sees. "constant" averages tiles equally. Softmax
probabilities are blended, then normalised by the summed weights.

Memory is flat in the image height: tiles are processed one band (tile row) at a time; float
accumulators cover one band only, and rows the band completes are finalised (argmax) into the
output label map, which may be a preallocated array or a `numpy.memmap`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pixelwise.data.io import open_tiff  # noqa: F401  (re-exported: docs/inference.md's way in)
from pixelwise.errors import ConfigError, DataError
from pixelwise.labels import label_dtype
from pixelwise.models.geometry import Geometry, geometry_of
from pixelwise.models.layers import reflect_indices

Model = nn.Module | Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Span:
    """One tile along one axis: output pixels `[start, start + size)` in image coordinates."""

    start: int
    size: int


def window_1d(size: int, flat_start: bool, flat_end: bool, kind: str) -> np.ndarray:
    """Blending weights `(size,)` float32 along one axis of a tile, peak 1.

    "gaussian": `exp(-d^2 / (2 sigma^2))`, `d` the distance to the centre, `sigma = size / 8`,
    clipped below at 1e-3 (so the 2-D product keeps its ratios everywhere, and pixels covered by
    a single tile are well defined). A half lying on the image border is flat at 1: there the
    model sees the border as whole-image inference does, so those predictions are as good as the
    centre's. "constant": all ones.
    """
    if kind == "constant":
        return np.ones(size, np.float32)
    distance = np.arange(size, dtype=np.float64) - (size - 1) / 2
    weights = np.maximum(np.exp(-0.5 * (distance / (0.125 * size)) ** 2), 1e-3)
    if flat_start:
        weights[distance < 0] = 1.0
    if flat_end:
        weights[distance > 0] = 1.0
    return weights.astype(np.float32)


def tile_spans(length: int, tile: int, stride: int, align: int, fixed_size: bool) -> list[Span]:
    """Tiles covering `[0, length)` along one axis, starting on multiples of `align`.

    Starts are `0, stride, 2 * stride, ...` (`stride` a multiple of `align`). With
    `fixed_size=False` ("same" models) the last tile starts at the largest multiple of `align`
    not above `length - tile` and ends exactly at `length` (so it is `tile` to `tile + align - 1`
    long); an axis shorter than `tile` is one tile of its own length. With `fixed_size=True`
    ("valid" models) every tile is `tile` long and the last one may run past `length` (the caller
    mirrors the image there and crops the output).
    """
    if length <= tile:
        return [Span(0, tile if fixed_size else length)]
    if fixed_size:
        count = -(-(length - tile) // stride) + 1
        return [Span(k * stride, tile) for k in range(count)]
    last = (length - tile) // align * align
    return [Span(s, tile) for s in range(0, last, stride)] + [Span(last, length - last)]


class _Source:
    """Uniform `(C, h, w)` float32 tile reads from a tensor `(C, H, W)` or an array (HWC/CHW)."""

    def __init__(self, image: np.ndarray | Tensor, channels_last: bool | None) -> None:
        if isinstance(image, Tensor):
            if image.ndim != 3:
                raise DataError(
                    f"image tensor must be (C, H, W), got shape {tuple(image.shape)}; "
                    "try image.unsqueeze(0) for a single band"
                )
            self.array, self.channels_last = image.detach().cpu(), False
        else:
            image = np.asarray(image) if not isinstance(image, np.ndarray) else image
            if image.ndim == 2:
                image = image[None]
                channels_last = False
            if image.ndim != 3:
                raise DataError(
                    f"image array must be (H, W), (H, W, C) or (C, H, W), got shape "
                    f"{image.shape}; try squeezing extra axes"
                )
            if channels_last is None:
                channels_last = image.shape[2] < image.shape[0]
            self.array, self.channels_last = image, channels_last
        shape = self.array.shape
        self.channels = shape[2] if self.channels_last else shape[0]
        self.height, self.width = (shape[0], shape[1]) if self.channels_last else shape[1:]

    def read(self, rows: np.ndarray, cols: np.ndarray) -> Tensor:
        if isinstance(self.array, Tensor):
            tile = self.array[:, torch.from_numpy(rows)][:, :, torch.from_numpy(cols)]
            return tile.float()
        if self.channels_last:
            tile = self.array[rows[:, None], cols[None, :]].transpose(2, 0, 1)
        else:
            tile = self.array[:, rows[:, None], cols[None, :]]
        return torch.from_numpy(np.ascontiguousarray(tile, dtype=np.float32))


def _check_options(tile: tuple[int, int], overlap: tuple[int, int], batch_size: int,
                   window: str, align: int) -> None:
    for t, o in zip(tile, overlap, strict=True):
        if t < 1 or not 0 <= o < t:
            raise ConfigError(
                f"tile must be >= 1 and overlap in [0, tile), got tile={tile}, overlap={overlap}; "
                "try tile=512, overlap=128"
            )
    if batch_size < 1 or align < 1:
        raise ConfigError(
            f"batch_size and align must be >= 1, got batch_size={batch_size}, align={align}; "
            "try batch_size=4, align=1"
        )
    if window not in ("gaussian", "constant"):
        raise ConfigError(f"window must be 'gaussian' or 'constant', got {window!r}; try 'gaussian'")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _run(model: Model, batch: list[Tensor], device: torch.device,
         preprocess: Callable[[Tensor], Tensor] | None) -> np.ndarray:
    """Softmax probabilities `(N, K, h', w')` float32 of a batch of equal-sized tiles."""
    x = torch.stack(batch).to(device)
    if preprocess is not None:
        x = preprocess(x)
    with torch.inference_mode():
        return torch.softmax(model(x).float(), dim=1).cpu().numpy()


def _model_device(model: Model, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(model, nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cpu")


@dataclass(frozen=True)
class TileGrid:
    """Where the output tiles lie (`rows` x `cols`) and the input margin around each (0 for
    "same" models)."""

    rows: list[Span]
    cols: list[Span]
    margin: tuple[int, int]


def plan_grid(geometry: Geometry, height: int, width: int, tile: tuple[int, int],
              overlap: tuple[int, int], align: int) -> TileGrid:
    """Lay the tiles over a `height` x `width` image from the model's geometry (no model run).

    Raises:
        ConfigError: the model does not accept `tile` (the message names the nearest size), or
            its output tile is smaller than `align`.
    """
    out_tile = [geometry.output_size(t) for t in tile]
    # step by tile - overlap rounded down to a multiple of align (at least align)
    stride = [max(align, (o - lap) // align * align) for o, lap in zip(out_tile, overlap,
                                                                        strict=True)]
    if any(step > o for step, o in zip(stride, out_tile, strict=True)):
        raise ConfigError(
            f"output tile must be at least align={align} pixels, got {tuple(out_tile)}; "
            "try a larger tile"
        )
    fixed = not geometry.same_size
    return TileGrid(tile_spans(height, out_tile[0], stride[0], align, fixed),
                    tile_spans(width, out_tile[1], stride[1], align, fixed),
                    (geometry.border, geometry.border))


@overload
def predict_tiled(model: Model, image: np.ndarray | Tensor, tile: int | Sequence[int],
                  overlap: int | Sequence[int], batch_size: int = ..., *,
                  num_classes: int | None = ..., return_proba: Literal[False] = ...,
                  window: str = ..., align: int = ..., geometry: Geometry | None = ...,
                  device: str | torch.device | None = ..., progress: bool = ..., preprocess: Callable[[Tensor], Tensor] | None = ...,
                  channels_last: bool | None = ..., out: np.ndarray | None = ...) -> np.ndarray: ...


@overload
def predict_tiled(model: Model, image: np.ndarray | Tensor, tile: int | Sequence[int],
                  overlap: int | Sequence[int], batch_size: int = ..., *,
                  num_classes: int | None = ..., return_proba: Literal[True],
                  window: str = ..., align: int = ..., geometry: Geometry | None = ...,
                  device: str | torch.device | None = ..., progress: bool = ..., preprocess: Callable[[Tensor], Tensor] | None = ...,
                  channels_last: bool | None = ..., out: np.ndarray | None = ...,
                  ) -> tuple[np.ndarray, np.ndarray]: ...


def predict_tiled(
    model: Model,
    image: np.ndarray | Tensor,
    tile: int | Sequence[int],
    overlap: int | Sequence[int],
    batch_size: int = 4,
    *,
    num_classes: int | None = None,
    return_proba: bool = False,
    window: str = "gaussian",
    align: int = 1,
    geometry: Geometry | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    channels_last: bool | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Label map `(H, W)` of an image of any size, predicted tile by tile (see module docs).

    Args:
        model: maps float `(N, C, h, w)` to logits `(N, K, h', w')`, `h' = h` ("same") or the
            centre `h' < h` ("valid" U-Net), as `geometry` states. Run under
            `torch.inference_mode`, once per batch of tiles.
        image: `(C, H, W)` tensor, or array `(H, W)`, `(H, W, C)` or `(C, H, W)` (a memmap is
            read tile by tile). Arrays are taken as channels-last when the last axis is shorter
            than the first, unless `channels_last` says otherwise.
        tile: model input tile size, int or `(h, w)`; for a valid U-Net one that the network
            accepts (`geometry.nearest_input_size` gives one).
        overlap: pixels shared by neighbouring output tiles, int or `(h, w)`.
        batch_size: tiles per forward pass.
        num_classes: checked against the model's output channels when given.
        return_proba: also return blended probabilities `(K, H, W)` float32 (memory grows with
            the image: only when asked).
        window: "gaussian" or "constant" blending window.
        align: tile starts are multiples of this (the model's total downsampling,
            `geometry.align`, keeps every tile on the whole image's pooling grid).
        geometry: the model's size rules (`pixelwise.models.Geometry`); default
            `model.geometry`, or for a module that states none `SAME_SIZE` (output of the
            input's size, alignment 1). Tiles are planned from it: nothing is run to find out.
        device: where tiles run; default the model's parameters' device.
        progress: show a tqdm progress bar over tiles.
        preprocess: applied to each float32 batch `(N, C, h, w)` on `device` before the model
            (scaling and mean/std normalisation), so the whole image is never normalised at once.
        out: preallocated `(H, W)` integer array (e.g. a memmap) to write the label map into.

    Returns:
        The label map `(H, W)` (uint8 for <= 256 classes, else int16; `out` if given), and with
        `return_proba=True` the tuple `(label, proba)`.
    """
    tile, overlap = _pair(tile), _pair(overlap)
    _check_options(tile, overlap, batch_size, window, align)
    source = _Source(image, channels_last)
    device = _model_device(model, device)
    height, width = source.height, source.width
    geometry = geometry_of(model) if geometry is None else geometry
    grid = plan_grid(geometry, height, width, tile, overlap, align)
    row_spans, col_spans, margin = grid.rows, grid.cols, grid.margin
    if out is not None and out.shape != (height, width):
        raise ConfigError(f"out must have shape {(height, width)}, got {out.shape}; "
                          "try allocating it with the image's height and width")

    label = proba = None
    bar = tqdm(total=len(row_spans) * len(col_spans), disable=not progress, unit="tile")
    band = _Band(rows=max(s.size for s in row_spans), cols=col_spans[-1].start + col_spans[-1].size)
    ends = [s.start for s in row_spans[1:]] + [row_spans[-1].start + row_spans[-1].size]
    for rows, end in zip(row_spans, ends, strict=True):
        band.add_row(_predict_row(model, source, rows, col_spans, margin, batch_size, device,
                                  preprocess, window), rows)
        if label is None:  # the first tiles have told the number of classes
            label, proba = _outputs(band.classes, (height, width), num_classes, return_proba, out)
        bar.update(len(col_spans))
        band.finalise(end, label, proba)  # no later tile touches the rows above `end`
    bar.close()
    return (label, proba) if return_proba else label


def _outputs(classes: int, shape: tuple[int, int], num_classes: int | None, return_proba: bool,
             out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The label map (`out`, or new in the label dtype) and, when asked, the probabilities."""
    if num_classes is not None and classes != num_classes:
        raise ConfigError(
            f"model must output num_classes={num_classes} channels, got {classes}; "
            "check the checkpoint's class list"
        )
    label = np.empty(shape, label_dtype(classes)) if out is None else out
    return label, np.empty((classes, *shape), np.float32) if return_proba else None


def _predict_row(model: Model, source: _Source, rows: Span, col_spans: list[Span],
                 margin: tuple[int, int], batch_size: int, device: torch.device,
                 preprocess: Callable[[Tensor], Tensor] | None,
                 window: str) -> Iterator[tuple[Span, np.ndarray, np.ndarray]]:
    """Yield `(cols, probabilities (K, h, w), weights (h, w))` for each tile of one band."""
    row_index = reflect_indices(rows.start - margin[0], rows.start + rows.size + margin[0],
                                source.height)
    row_weights = window_1d(rows.size, rows.start == 0,
                            rows.start + rows.size >= source.height, window)
    by_width: dict[int, list[Span]] = {}
    for cols in col_spans:
        by_width.setdefault(cols.size, []).append(cols)
    for spans in by_width.values():
        for first in range(0, len(spans), batch_size):
            batch_spans = spans[first:first + batch_size]
            tiles = [source.read(row_index, reflect_indices(c.start - margin[1],
                                                            c.start + c.size + margin[1],
                                                            source.width))
                     for c in batch_spans]
            batch = _run(model, tiles, device, preprocess)
            if batch.shape[2:] != (rows.size, batch_spans[0].size):
                raise ConfigError(
                    f"model output must be {(rows.size, batch_spans[0].size)} for an input tile "
                    f"of {tuple(tiles[0].shape[1:])}, as the model's geometry states, got "
                    f"{batch.shape[2:]}; try geometry=pixelwise.models.Geometry(align=..., "
                    "border=..., smallest_input=...) describing the model"
                )
            for cols, probabilities in zip(batch_spans, batch, strict=True):
                col_weights = window_1d(cols.size, cols.start == 0,
                                        cols.start + cols.size >= source.width, window)
                yield cols, probabilities, np.outer(row_weights, col_weights)


class _Band:
    """Float accumulators for one band of rows, shifted down as rows are finalised."""

    def __init__(self, rows: int, cols: int) -> None:
        self.sum: np.ndarray | None = None  # (K, rows, cols), allocated once a tile tells K
        self.weight = np.zeros((rows, cols), np.float32)
        self.top = 0  # image row of the band's first row

    @property
    def classes(self) -> int:
        return len(self.sum)

    def add_row(self, tiles: Iterator[tuple[Span, np.ndarray, np.ndarray]], rows: Span) -> None:
        y = rows.start - self.top
        for cols, probabilities, weights in tiles:
            if self.sum is None:
                self.sum = np.zeros((len(probabilities), *self.weight.shape), np.float32)
            region = (slice(y, y + rows.size), slice(cols.start, cols.start + cols.size))
            self.sum[(slice(None), *region)] += probabilities * weights
            self.weight[region] += weights

    def finalise(self, stop: int, label: np.ndarray, proba: np.ndarray | None) -> None:
        """Write image rows `[top, stop)` (cropped to the image) and drop them from the band."""
        done = stop - self.top
        height, width = label.shape
        keep = min(stop, height) - self.top
        if keep > 0:
            mean = self.sum[:, :keep, :width] / self.weight[:keep, :width]
            label[self.top:self.top + keep] = mean.argmax(0)
            if proba is not None:
                proba[:, self.top:self.top + keep] = mean
        self.sum = np.roll(self.sum, -done, axis=1)
        self.sum[:, -done:] = 0
        self.weight = np.roll(self.weight, -done, axis=0)
        self.weight[-done:] = 0
        self.top = stop
