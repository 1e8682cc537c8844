"""Uploaded bytes -> the float `(C, H, W)` image a `Segmenter` takes, or a `RequestError`.

The bytes are recognised by their signature (PNG, JPEG, BMP, TIFF), then read by
:func:`pixelwise.data.io.read_image`, so an upload is read exactly as a file on disk: the same
mode rules (palette -> RGB, alpha dropped), 16-bit scaling and decoder-error handling. The pixel
limit is checked on the header alone, before anything is decoded (a decompression-bomb guard).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from pixelwise.data.io import read_image, read_size
from pixelwise.errors import DataError
from pixelwise.serve.errors import RequestError

SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"BM", ".bmp"),
)
NO_LIMIT = 2**62  # the header read alone; our own limit is checked after it, with a 413


def image_suffix(data: bytes) -> str:
    """The file suffix of an image's bytes by their signature; `RequestError(415)` otherwise."""
    if not data:
        raise RequestError(400, "the request body must hold an image, got 0 bytes; try "
                                "curl --data-binary @image.png or a multipart field 'file'")
    for signature, suffix in SIGNATURES:
        if data.startswith(signature):
            return suffix
    raise RequestError(415, f"the upload must be a PNG, JPEG, TIFF or BMP image, got bytes "
                            f"starting {data[:8]!r}; try converting it to PNG")


def decode_upload(data: bytes, channels: int, max_pixels: int,
                  name: str = "upload") -> torch.Tensor:
    """Float `(channels, H, W)` image in [0, 1] of an uploaded image file's bytes.

    Grey images go into RGB models and RGBA loses alpha, as `Segmenter` allows; other channel
    counts are refused (422). More than `max_pixels` pixels: 413. Unreadable or truncated: 400.
    `name` (the client's file name) stands for the file in error messages.
    """
    from pixelwise.data.io import to_float_chw

    suffix = image_suffix(data)
    with tempfile.TemporaryDirectory(prefix="pixelwise-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            height, width = read_size(path, max_pixels=NO_LIMIT)
            if height * width > max_pixels:
                raise RequestError(413, f"{name}: images must have at most {max_pixels} pixels "
                                        f"(the server's --max-pixels), got {height}x{width} = "
                                        f"{height * width}; try a smaller or downscaled image")
            array = read_image(path, max_pixels=max_pixels)
        except DataError as error:
            raise RequestError(400, str(error).replace(str(path), name)) from None
    try:
        return to_float_chw(array, channels)
    except DataError as error:
        raise RequestError(422, str(error).replace("image: ", f"{name}: ", 1)) from None
