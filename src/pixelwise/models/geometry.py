"""What a model says about its own input and output sizes, so no other layer re-derives it.

Every model :func:`pixelwise.models.build` returns carries a :class:`Geometry` as
``model.geometry`` (like timm's ``feature_info``): tiling lays its tiles from it, ``Segmenter``
decides when to tile, export picks input sizes the model accepts, and evaluation mirror-extends
the models whose output is smaller than their input. There are two kinds of model:

* **same-size** (``border == 0``: FCN, ``unet`` with ``padding="same"``): any input size, output of
  the input's size;
* **valid** (``border > 0``: ``unet`` with ``padding="valid"``, U-Net §2): unpadded convolutions,
  so the output is the input's centre, ``border`` pixels smaller on each side, and only the sizes
  ``smallest_input + k * align`` (k >= 0) are accepted (every 2x2 pooling must see an even size).
"""

from __future__ import annotations

from dataclasses import dataclass

from pixelwise.errors import ConfigError


@dataclass(frozen=True)
class Geometry:
    """A model's size rules along each spatial axis (both axes follow the same rules).

    Attributes:
        align: the model's total downsampling: inputs shifted by a multiple of it see the same
            pooling grid, so tiles should start on multiples of it.
        border: input pixels lost on each side (0: the output has the input's size).
        smallest_input: for a valid model the smallest input size it accepts; it then accepts
            exactly ``smallest_input + k * align``. 1 for a same-size model (any size).
    """

    align: int = 1
    border: int = 0
    smallest_input: int = 1

    def __post_init__(self) -> None:
        if self.align < 1 or self.border < 0 or self.smallest_input <= 2 * self.border:
            raise ConfigError(
                f"geometry must have align >= 1, border >= 0 and smallest_input > 2 * border, "
                f"got {self}; try Geometry(align=1) for a model that keeps the input's size"
            )

    @property
    def same_size(self) -> bool:
        """True when the output has the input's size for every input size."""
        return self.border == 0

    def accepts(self, size: int) -> bool:
        """Whether the model takes an input of ``size`` pixels along an axis."""
        if self.same_size:
            return size >= 1
        return size >= self.smallest_input and (size - self.smallest_input) % self.align == 0

    def output_size(self, size: int) -> int:
        """Output pixels for an input of ``size`` pixels (``size - 2 * border``).

        Raises:
            ConfigError: the model does not accept ``size``; the message names the nearest size.
        """
        if not self.accepts(size):
            raise ConfigError(
                f"input size must be {self.smallest_input} + {self.align} * k for this model "
                f"(it loses {self.border} pixels on each side), got {size}; "
                f"try {self.nearest_input_size(size)}"
            )
        return size - 2 * self.border

    def input_size_at_least(self, size: int) -> int:
        """The smallest accepted input size that is at least ``size``."""
        if self.same_size:
            return max(size, 1)
        steps = max(0, -(-(size - self.smallest_input) // self.align))
        return self.smallest_input + steps * self.align

    def nearest_input_size(self, size: int) -> int:
        """The accepted input size closest to ``size`` (the larger one on a tie)."""
        above = self.input_size_at_least(size)
        below = above - self.align
        if not self.same_size and below >= self.smallest_input and size - below < above - size:
            return below
        return above


SAME_SIZE = Geometry()
"""The geometry of a module that states none: output of the input's size, alignment 1."""


def geometry_of(model: object) -> Geometry:
    """``model.geometry``, or :data:`SAME_SIZE` for a module (or callable) that states none, as
    a plain ``nn.Module`` handed to ``predict_tiled`` usually does."""
    geometry = getattr(model, "geometry", SAME_SIZE)
    if not isinstance(geometry, Geometry):
        raise ConfigError(
            f"model.geometry must be a pixelwise.models.Geometry, got {type(geometry).__name__}; "
            "try removing the attribute or setting Geometry(align=..., border=...)"
        )
    return geometry
