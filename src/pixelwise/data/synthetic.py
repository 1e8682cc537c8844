"""`SyntheticShapes`: built-in procedural data, so every command runs without a download.

Each image is a textured, noisy background with overlapping shapes of four classes drawn over it
in random order: filled circles, rotated rectangles, triangles and thin line segments, from
3-pixel specks to objects a quarter of the image wide. Masks are exact: the same inside-test
that paints a shape's pixels writes its class id, and later shapes cover earlier ones in both.
Each class has a characteristic (jittered) colour as well as its shape, so a small U-Net learns
it in a minute or two on a CPU, while shape and overlap still matter at the class boundaries.

Item `i` is a pure function of `(seed, i)`: no state is shared between items, so DataLoader
workers and repeated epochs see identical data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from pixelwise.data.info import DatasetInfo
from pixelwise.data.palette import default_palette
from pixelwise.errors import ConfigError
from pixelwise.options import check_int, is_integer

SHAPE_CLASSES = ["background", "circle", "rectangle", "triangle", "line"]
# Characteristic colour of each shape class (RGB in [0, 1]); jittered per shape.
_CLASS_COLOURS = np.array(
    [[0.85, 0.25, 0.2], [0.2, 0.75, 0.3], [0.25, 0.35, 0.9], [0.95, 0.9, 0.3]], dtype=np.float32
)

Transforms = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class SyntheticShapes(Dataset):
    """`n` procedural `(image (3, H, W) float32 in [0, 1], mask (H, W) int64)` pairs.

    `size` is `H = W` or `(H, W)`; `shapes` is the inclusive range of shapes per image;
    `noise` the standard deviation of the pixel noise added last. No pixel is unlabelled,
    but `info.ignore_index` (255) is still defined for the transforms' padding.
    """

    def __init__(
        self,
        n: int = 64,
        size: int | tuple[int, int] = 64,
        seed: int = 0,
        *,
        shapes: tuple[int, int] = (3, 8),
        noise: float = 0.08,
        transforms: Transforms | None = None,
    ) -> None:
        check_int("n", n, minimum=0)
        check_int("seed", seed, minimum=0)
        height, width = _image_size(size)
        _check_drawing(shapes, noise)
        self.n, self.height, self.width, self.seed = n, height, width, seed
        self.shapes, self.noise, self.transforms = shapes, noise, transforms
        self.info = DatasetInfo(
            classes=list(SHAPE_CLASSES), palette=default_palette(len(SHAPE_CLASSES)), in_channels=3
        )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.n:
            raise IndexError(f"index must lie in 0..{self.n - 1}, got {index}")
        image, mask = render_shapes(
            np.random.default_rng((self.seed, index)),
            self.height,
            self.width,
            self.shapes,
            self.noise,
        )
        image_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        mask_t = torch.from_numpy(mask).long()
        if self.transforms is not None:
            image_t, mask_t = self.transforms(image_t, mask_t)
        return image_t, mask_t


def _image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """`(H, W)` of `size` (`H = W` or `(H, W)`), each at least 16 pixels."""
    pair = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if len(pair) != 2 or not all(is_integer(side) and side >= 16 for side in pair):
        raise ConfigError(
            f"size must be H = W or (H, W), integers of at least 16 pixels, got {size!r}; "
            "try size=64"
        )
    return pair


def _check_drawing(shapes: tuple[int, int], noise: float) -> None:
    """Raise ConfigError unless `shapes` is a range `(low, high)`, `0 <= low <= high`, and
    `noise` a number >= 0."""
    pair = tuple(shapes) if isinstance(shapes, (tuple, list)) else ()
    if not (len(pair) == 2 and all(map(is_integer, pair)) and 0 <= pair[0] <= pair[1]):
        raise ConfigError(
            f"shapes must be a range (low, high) with 0 <= low <= high, got {shapes!r}; "
            "try shapes=[3, 8]"
        )
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ConfigError(f"noise must be a number >= 0, got {noise!r}; try noise=0.08")


def render_shapes(
    rng: np.random.Generator, height: int, width: int, shapes: tuple[int, int], noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """One image `(H, W, 3)` float32 in [0, 1] and its exact mask `(H, W)` uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    image = _textured_background(rng, height, width)
    mask = np.zeros((height, width), dtype=np.uint8)
    scale = min(height, width)
    for _ in range(rng.integers(shapes[0], shapes[1] + 1)):
        class_id = int(rng.integers(1, len(SHAPE_CLASSES)))
        inside = _SHAPE_TESTS[class_id](rng, x, y, height, width, scale)
        colour = np.clip(_CLASS_COLOURS[class_id - 1] + rng.normal(0, 0.08, 3), 0, 1)
        shading = 1.0 + 0.15 * np.sin(x * rng.uniform(0.1, 0.6) + y * rng.uniform(0.1, 0.6))
        image[inside] = colour * shading[inside, None]
        mask[inside] = class_id
    image += rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


def _textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random colour blobs (a few pixels across) around a random grey level."""
    blobs = ndimage.gaussian_filter(
        rng.normal(0.0, 1.0, (height, width, 3)), sigma=(rng.uniform(1.5, 5.0),) * 2 + (0,)
    )
    blobs /= blobs.std() + 1e-6
    return (rng.uniform(0.3, 0.6) + 0.12 * blobs).astype(np.float32)


def _object_size(rng: np.random.Generator, scale: int) -> float:
    """A radius from specks (3 px) to large objects (a quarter of the image), log-uniform."""
    return float(np.exp(rng.uniform(np.log(3.0), np.log(max(scale / 4, 4.0)))))


def _centre(rng: np.random.Generator, height: int, width: int) -> tuple[float, float]:
    return float(rng.uniform(0, width)), float(rng.uniform(0, height))


def _circle(rng, x, y, height, width, scale) -> np.ndarray:
    cx, cy = _centre(rng, height, width)
    return (x - cx) ** 2 + (y - cy) ** 2 <= _object_size(rng, scale) ** 2


def _rectangle(rng, x, y, height, width, scale) -> np.ndarray:
    cx, cy = _centre(rng, height, width)
    half_w, half_h = _object_size(rng, scale), _object_size(rng, scale)
    angle = rng.uniform(0, np.pi)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)


def _triangle(rng, x, y, height, width, scale) -> np.ndarray:
    cx, cy = _centre(rng, height, width)
    radius = _object_size(rng, scale) * 1.3
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
    px, py = cx + radius * np.cos(angles), cy + radius * np.sin(angles)
    # Inside a counter-clockwise triangle: left of (or on) all three edges.
    inside = np.ones(x.shape, dtype=bool)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        cross = (px[b] - px[a]) * (y - py[a]) - (py[b] - py[a]) * (x - px[a])
        inside &= cross >= 0
    return inside


def _line(rng, x, y, height, width, scale) -> np.ndarray:
    x0, y0 = _centre(rng, height, width)
    length, angle = rng.uniform(0.2, 0.8) * scale, rng.uniform(0, 2 * np.pi)
    dx, dy = length * np.cos(angle), length * np.sin(angle)
    # Distance from each pixel centre to the segment (x0, y0) + t (dx, dy), t in [0, 1].
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    distance = np.hypot(x - x0 - t * dx, y - y0 - t * dy)
    return distance <= rng.uniform(0.75, 1.75)


_SHAPE_TESTS = {1: _circle, 2: _rectangle, 3: _triangle, 4: _line}
