"""`DatasetInfo`: what a model and its outputs need to know about a dataset's labels."""

from __future__ import annotations

from dataclasses import dataclass

from pixelwise.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """Class names, colours and the ignore value of a dataset.

    `classes[i]` and `palette[i]` describe class id `i` in the masks; `ignore_index` marks
    unlabelled pixels that losses and metrics skip; `in_channels` is the image band count.
    """

    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = 255
    in_channels: int = 3

    def __post_init__(self) -> None:
        if len(self.classes) != len(self.palette):
            raise ConfigError(
                f"palette must have one colour per class ({len(self.classes)}), got "
                f"{len(self.palette)}; try pixelwise.data.palette.default_palette(num_classes)"
            )
        if 0 <= self.ignore_index < len(self.classes):
            raise ConfigError(
                f"ignore_index must not be a class id (0..{len(self.classes) - 1}), got "
                f"{self.ignore_index}; try 255"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes (ids 0..num_classes-1), not counting `ignore_index`."""
        return len(self.classes)
