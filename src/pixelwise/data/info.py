"""`DatasetInfo`: what a model and its outputs need to know about a dataset's labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pixelwise.errors import ConfigError
from pixelwise.options import closest_hint


def background_by_name(classes: Sequence[str]) -> tuple[int, ...]:
    """Ids of the classes named "background" (any case): the background of a dataset that does
    not state one (a folder dataset) and of a checkpoint written before checkpoints recorded it."""
    return tuple(index for index, name in enumerate(classes) if name.lower() == "background")


def check_background(background: Sequence[int], num_classes: int) -> tuple[int, ...]:
    """`background` as a sorted tuple of distinct class ids; ConfigError for an id that is not a
    class id 0..num_classes-1."""
    ids = tuple(sorted(set(background)))
    wrong = [i for i in ids if not isinstance(i, int) or not 0 <= i < num_classes]
    if wrong:
        raise ConfigError(f"background must be class ids 0..{num_classes - 1}, got {wrong}; "
                          "try the id of the class that is not an object, or none")
    return ids


def class_ids_of(option: str, values: Sequence[int | str], classes: Sequence[str]
                 ) -> tuple[int, ...]:
    """``values`` (class ids or names, names in any case) as class ids of ``classes``, in the
    order given; ConfigError naming ``option`` and the valid names for one that is neither."""
    lower = [name.lower() for name in classes]
    ids = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(classes):
            ids.append(value)
        elif isinstance(value, str) and value.lower() in lower:
            ids.append(lower.index(value.lower()))
        else:
            hint = closest_hint(value, classes)
            raise ConfigError(f"{option} must hold class names {list(classes)} or ids 0.."
                              f"{len(classes) - 1}, got {value!r}" + (f"; {hint}" if hint else ""))
    return tuple(ids)


@dataclass(frozen=True)
class DatasetInfo:
    """Class names, colours, background and the ignore value of a dataset.

    `classes[i]` and `palette[i]` describe class id `i` in the masks; `ignore_index` marks
    unlabelled pixels that losses and metrics skip; `in_channels` is the image band count.
    `background` holds the ids of classes that are not objects: instance outputs (GeoJSON, COCO)
    skip them and overlays leave them untinted. None (the default) takes the classes named
    "background" (`background_by_name`); `()` says every class is an object (CamVid's Sky is a
    class like any other).
    """

    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = 255
    in_channels: int = 3
    background: tuple[int, ...] | None = None

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
        stated = background_by_name(self.classes) if self.background is None else self.background
        object.__setattr__(self, "background", check_background(stated, len(self.classes)))

    @property
    def num_classes(self) -> int:
        """Number of classes (ids 0..num_classes-1), not counting `ignore_index`."""
        return len(self.classes)
