"""Reading image and mask files into arrays, and images into float tensors.

`to_float_chw` decodes any image a user hands over (file, PIL image, array, tensor) exactly as the
datasets decode their files, and `fit_channels` is the one rule for an image whose channel count
differs from the model's or dataset's, so training and prediction see the same pixels.

Images: PNG, JPEG, BMP through Pillow; TIFF (multi-band, 16-bit, float, multi-page stacks)
through tifffile. Masks: 8-bit index PNGs, palette ("P" mode) PNGs whose pixel values are the
class ids, 16-bit PNG/TIFF, or RGB colour-coded masks decoded with a colour -> class map. JPEG
masks are refused: lossy compression invents values between class ids at every edge.

A decompression-bomb guard refuses any file whose pixel count exceeds `max_pixels`
(`MAX_PIXELS` = 100 million by default; pass a larger value for huge remote-sensing scenes, or
tile them first) before decoding it.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from pixelwise.errors import ConfigError, DataError

MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
_TIFF_SUFFIXES = (".tif", ".tiff")
_JPEG_SUFFIXES = (".jpg", ".jpeg")

Colour = tuple[int, int, int]
ImageLike = np.ndarray | Image.Image | torch.Tensor | str | Path
# What Pillow and tifffile raise on damaged bytes (found by tests/reliability fuzzing: a bad TIFF
# header gives TypeError or ZeroDivisionError from inside tifffile, not only TiffFileError).
_DECODER_ERRORS = (OSError, ValueError, IndexError, KeyError, TypeError, ArithmeticError,
                   EOFError, SyntaxError, NotImplementedError, struct.error,
                   tifffile.TiffFileError)


def read_image(path: Path, page: int | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The pixels of an image file as `(H, W, C)` in the file's own dtype (uint8, uint16, ...).

    `page` picks one slice of a multi-page TIFF stack. Grey images get `C = 1`; palette
    images are expanded to RGB; the alpha band of PNG/BMP images is dropped (TIFF bands are
    all kept: a 4-band TIFF is e.g. RGB + near infrared).
    Raises `DataError` naming the file when it cannot be read or is larger than `max_pixels`.
    """
    array = _read_pixels(Path(path), page, max_pixels, _IMAGE_MODES)
    return array[..., None] if array.ndim == 2 else array


# Pillow modes converted on reading: images become grey or RGB (alpha dropped, palettes
# expanded); masks keep their indices (P), lose alpha, and 1-bit masks become 8-bit, not bool.
_IMAGE_MODES = {"LA": "L", "1": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "CMYK": "RGB",
                "YCbCr": "RGB"}
_MASK_MODES = {"RGBA": "RGB", "LA": "RGB", "1": "L"}


def _read_pixels(path: Path, page: int | None, max_pixels: int,
                 conversions: Mapping[str, str]) -> np.ndarray:
    """The pixels of a TIFF page, or of a Pillow image after converting its mode by
    ``conversions``; ``DataError`` naming the file when it cannot be read."""
    if path.suffix.lower() in _TIFF_SUFFIXES:
        return _read_tiff(path, page, max_pixels)
    with _open_pil(path, max_pixels) as image:
        if image.mode in conversions:
            image = image.convert(conversions[image.mode])
        return np.asarray(image)


def read_mask(
    path: Path,
    page: int | None = None,
    colour_map: Mapping[Colour, int] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """The raw values of a mask file as an `(H, W)` integer array (class ids before any mapping).

    Index and palette PNGs give their stored indices. RGB masks need `colour_map`
    (`{(r, g, b): class_id}`); an RGB mask whose three channels are equal is read as grey.
    Raises `DataError` naming the file for JPEG masks, unknown colours, unreadable files.
    """
    path = Path(path)
    if path.suffix.lower() in _JPEG_SUFFIXES:
        raise DataError(
            f"{path}: masks must be lossless (PNG, TIFF, BMP), got JPEG; JPEG compression "
            "invents values between class ids at every edge; try re-exporting the masks as PNG"
        )
    array = _read_pixels(path, page, max_pixels, _MASK_MODES)
    if array.ndim == 3:
        array = _decode_colours(array[..., :3], colour_map, path)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{path}: a mask must be a single-band integer image (H, W), got {array.dtype} "
            f"{array.shape}; try an 8-bit index PNG"
        )
    return array


def read_size(path: Path, page: int | None = None, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """`(H, W)` of an image or mask file (one page of a TIFF stack) from its header alone.

    Nothing is decoded, so checking thousands of files takes seconds (training's quick check
    does it for every pair). Raises `DataError` naming the file, as `read_image` does, when the
    header is unreadable or the image is larger than `max_pixels`.
    """
    path = Path(path)
    if path.suffix.lower() in _TIFF_SUFFIXES:
        with _tiff_file(path) as tiff:
            header = tiff.pages[page or 0]
            size = (int(header.imagelength), int(header.imagewidth))
        _check_pixels(path, size[0] * size[1], max_pixels)
        return size
    with _open_pil(path, max_pixels, load=False) as image:
        return image.height, image.width


def image_to_tensor(
    array: np.ndarray, band_range: list[tuple[float, float]] | None = None
) -> torch.Tensor:
    """`(H, W, C)` pixels -> `(C, H, W)` float32 scaled to about [0, 1].

    8-bit images are divided by 255. Other integer images (16-bit, 32-bit) are scaled band by
    band to `(x - low) / (high - low)`, with `band_range[c] = (low, high)` or by default the
    band's own 1st and 99th percentiles in this image, so that each band fills about [0, 1]
    whatever its sensor's range (remote sensing, microscopy). Float images are taken as
    already scaled unless `band_range` is given (as `to_float_chw` takes them).
    """
    if array.dtype == np.uint8:
        scaled = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating) and band_range is None:
        scaled = array.astype(np.float32, copy=False)  # no copy of a float32 tensor's view
    else:
        values = array.astype(np.float32)
        if band_range is None:
            low, high = np.percentile(values.reshape(-1, values.shape[-1]), [1, 99], axis=0)
        else:
            low, high = np.asarray(band_range, dtype=np.float32).T
        # np.percentile answers in float64: cast back so every image is float32.
        scaled = ((values - low) / np.maximum(high - low, 1e-6)).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


def fit_channels(image: np.ndarray, channels: int, source: str | Path) -> np.ndarray:
    """`image` `(H, W, C)` with `channels` bands: a grey image for three channels is repeated to
    RGB, an RGBA one loses its alpha; any other mismatch raises `DataError` naming `source`."""
    bands = image.shape[2]
    if bands == channels:
        return image
    if channels == 3 and bands == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 3 and bands == 4:
        return image[..., :3]
    example = {1: " (e.g. PIL .convert('L'))", 3: " (e.g. PIL .convert('RGB'))"}.get(channels, "")
    raise DataError(
        f"{source}: images must have {channels} channel(s), got {bands} (shape "
        f"{tuple(image.shape)}); try converting it to {channels} channel(s){example}"
    )


def to_float_chw(image: ImageLike, channels: int) -> torch.Tensor:
    """`image` as float32 `(C, H, W)` with `C = channels`, scaled as the datasets scale it.

    Accepts a file path, a PIL image, a numpy array `(H, W)` or `(H, W, C)`, or a tensor
    `(C, H, W)` / `(H, W)` (read on the CPU). Integer images are scaled by `image_to_tensor`
    (8-bit / 255, 16-bit band by band), except integer tensors, which are taken as 8-bit; float
    images are taken as already in [0, 1]. Channels are fitted by `fit_channels`.
    """
    source = str(image) if isinstance(image, (str, Path)) else "image"  # named in errors
    return image_to_tensor(fit_channels(_as_hwc(image), channels, source))


def _as_hwc(image: ImageLike) -> np.ndarray:
    """Any accepted image as an `(H, W, C)` array (a view of a CPU tensor, not a copy)."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        tensor = tensor.float() if tensor.is_floating_point() else tensor.float() / 255
        return (tensor[None] if tensor.dim() == 2 else tensor).permute(1, 2, 0).numpy()
    if isinstance(image, Image.Image):
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise DataError(
            f"image must be a path, PIL image, numpy array or tensor, got {type(image).__name__}"
        )
    if image.ndim not in (2, 3):
        raise DataError(f"image arrays must be (H, W) or (H, W, C), got shape {image.shape}; "
                        "try one image at a time")
    return image[..., None] if image.ndim == 2 else image


@contextlib.contextmanager
def _open_pil(path: Path, max_pixels: int, load: bool = True) -> Iterator[Image.Image]:
    """Open with Pillow, refusing more than `max_pixels` pixels before decoding anything;
    `load=False` leaves the pixels undecoded (the header alone gives size and mode)."""
    try:
        with warnings.catch_warnings():
            # Our own limit replaces Pillow's (which warns above 89 Mpx and refuses twice that).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(
            f"{path}: the file must be a readable image, got {type(error).__name__}: {error}; "
            "try opening it in an image viewer or re-exporting it"
        ) from error
    with image:
        _check_pixels(path, image.width * image.height, max_pixels)
        try:
            if load:
                image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise DataError(
                f"{path}: the file must be a complete image, got {type(error).__name__}: "
                f"{error}; try re-exporting it (is it truncated?)"
            ) from error
        yield image


def open_tiff(path: str | Path) -> np.ndarray:
    """A whole TIFF (its first series) for `predict_tiled`, without reading it when possible.

    Uncompressed, contiguous TIFFs (as written by `tifffile.imwrite` without compression) come
    back as a read-only `numpy.memmap`, so only the tiles being predicted are read from disk;
    other TIFFs (compressed, tiled) are read whole. Returns `(H, W)` or `(H, W, C)` (or
    `(C, H, W)` for planar files). No pixel limit: this is the way in for images too large to
    decode at once. Raises `DataError` naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image must be an existing TIFF file, got {path}; check the path")
    with _tiff_file(path) as tiff:
        series = tiff.series[0]
        if series.dataoffset is None:  # compressed or tiled: not one contiguous block
            return series.asarray()
        dtype = np.dtype(tiff.byteorder + series.dtype.char)
        return np.memmap(path, dtype, "r", series.dataoffset, series.shape, "C")


def tiff_pages(path: Path) -> int:
    """The number of pages of a TIFF (the slices of a stack such as ISBI 2012's volumes)."""
    with _tiff_file(path) as tiff:
        return len(tiff.pages)


@contextlib.contextmanager
def _tiff_file(path: Path) -> Iterator[tifffile.TiffFile]:
    """`tifffile.TiffFile(path)`; a decoder error while it is open becomes `DataError`."""
    try:
        with tifffile.TiffFile(path) as tiff:
            yield tiff
    except DataError:
        raise
    except _DECODER_ERRORS as error:
        raise DataError(
            f"{path}: the file must be a readable TIFF, got {type(error).__name__}: {error}; "
            "try opening it with tifffile or re-exporting it"
        ) from error


def _read_tiff(path: Path, page: int | None, max_pixels: int) -> np.ndarray:
    """A TIFF image as `(H, W)` or `(H, W, C)`: the whole first series, or one page of a stack.

    The pixel guard applies to one page (`width * height`), before anything is decoded.
    """
    with _tiff_file(path) as tiff:
        first = tiff.pages[0]
        _check_pixels(path, first.imagewidth * first.imagelength, max_pixels)
        if page is None:
            array, axes = tiff.series[0].asarray(), tiff.series[0].axes
        elif 0 <= page < len(tiff.pages):
            array, axes = tiff.pages[page].asarray(), tiff.pages[page].axes
        else:
            raise DataError(
                f"{path}: page must lie in 0..{len(tiff.pages) - 1}, got {page}; "
                "try a smaller slice index"
            )
    # Interleaved bands read as (H, W, S); separate planes or pages of bands as (C, H, W).
    if array.ndim == 3 and not axes.endswith("S"):
        array = np.moveaxis(array, 0, -1)
    if array.ndim not in (2, 3) or 0 in array.shape:  # e.g. a damaged header
        raise DataError(
            f"{path}: a TIFF image must be (H, W) or (H, W, bands) with at least one of each, "
            f"got shape {array.shape}; try re-exporting it as a plain 2-D image"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():  # else a NaN loss, hours later
        raise DataError(
            f"{path}: image values must be finite, got {int(np.isnan(array).sum())} NaN and "
            f"{int(np.isinf(array).sum())} infinite; try filling no-data pixels (e.g. with 0) "
            "and giving them the ignore index in the mask"
        )
    return array


def _check_pixels(path: Path, pixels: int, max_pixels: int) -> None:
    if pixels > max_pixels:
        raise DataError(
            f"{path}: images must have at most max_pixels={max_pixels} pixels (a guard against "
            f"decompression bombs), got {pixels}; try tiling the image, or pass a larger "
            "max_pixels if you trust the file"
        )


COLOUR_MAP_FORM = ("colour_map must be a list of {colour: [r, g, b], class: id} or a mapping "
                   "{'#rrggbb': id}")


def colour_map_from(value: Mapping | list | None) -> dict[Colour, int] | None:
    """A folder dataset's `colour_map` as `{(r, g, b): class_id}`, from any of its forms.

    The YAML form (configs, `--option`) is a list of `{colour: [r, g, b], class: id}`; a mapping
    `{"#rrggbb": id}` and the Python mapping `{(r, g, b): id}` are accepted too. ConfigError
    names the documented form when `value` is none of these.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(e, Mapping) and set(e) == {"colour", "class"}
                                         for e in value):
        pairs = [(entry["colour"], entry["class"]) for entry in value]
    else:
        raise ConfigError(f"{COLOUR_MAP_FORM}, got {value!r}; try "
                          "colour_map=[{colour: [255, 0, 0], class: 1}]")
    return {_colour(colour): _class_id(class_id) for colour, class_id in pairs}


def colour_map_to_yaml(colour_map: Mapping | list) -> list[dict]:
    """The YAML form of a colour map: `[{colour: [r, g, b], class: id}, ...]`."""
    return [{"colour": list(colour), "class": class_id}
            for colour, class_id in colour_map_from(colour_map).items()]


def _colour(colour) -> Colour:
    if isinstance(colour, str) and len(colour) == 7 and colour.startswith("#"):
        try:
            return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            pass
    elif isinstance(colour, (list, tuple)) and len(colour) == 3 and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour):
        return tuple(colour)
    raise ConfigError(f"{COLOUR_MAP_FORM}, got the colour {colour!r}; try [255, 0, 0] or "
                      "'#ff0000' (quoted in YAML)")


def _class_id(class_id) -> int:
    if isinstance(class_id, int) and not isinstance(class_id, bool) and class_id >= 0:
        return class_id
    raise ConfigError(f"{COLOUR_MAP_FORM}, got the class {class_id!r}; try a class id such as 1 "
                      "(or the ignore index, 255, for unlabelled colours)")


def _decode_colours(
    rgb: np.ndarray, colour_map: Mapping[Colour, int] | None, path: Path
) -> np.ndarray:
    """Class ids `(H, W)` of an RGB-coded mask `(H, W, 3)`."""
    if colour_map is None:
        if (rgb == rgb[..., :1]).all():
            return rgb[..., 0]
        raise DataError(
            f"{path}: an RGB colour-coded mask needs a colour_map, got none; try the folder "
            "dataset option colour_map=[{colour: [0, 0, 0], class: 0}, {colour: [255, 0, 0], "
            "class: 1}] (docs/datasets.md) or save the masks as index PNGs"
        )
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: class_id for (r, g, b), class_id in colour_map.items()}
    unique, inverse = np.unique(codes, return_inverse=True)
    unknown = [code for code in unique.tolist() if code not in table]
    if unknown:
        colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5]]
        raise DataError(
            f"{path}: every mask colour must be in the colour_map, got unknown colours "
            f"{colours}{' ...' if len(unknown) > 5 else ''}; try adding them to colour_map "
            "(map unlabelled colours to the ignore index)"
        )
    return np.array([table[code] for code in unique.tolist()], dtype=np.int64)[inverse].reshape(
        codes.shape
    )
