"""The library's own exception types.

Every failure a user can cause (bad data, bad config, bad checkpoint) raises one of these with a
message of the form "X must be Y, got Z; try W", naming the file involved. The CLI turns them into
a one-line error and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class PixelwiseError(Exception):
    """Base class of every error pixelwise raises on purpose."""


class DataError(PixelwiseError, ValueError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


class ConfigError(PixelwiseError, ValueError):
    """A configuration key or option is unknown, or a value (of a setting, or an argument of a
    call such as a loss's logits) has the wrong type, shape or range."""


class CheckpointError(PixelwiseError, ValueError):
    """A checkpoint is missing, corrupt, untrusted, or does not match the configuration."""


class WeightsNotFoundError(PixelwiseError, FileNotFoundError):
    """Pretrained weights are not in the local cache and cannot be downloaded."""


class DivergenceError(PixelwiseError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


class MissingExtraError(PixelwiseError, ImportError):
    """An optional extra (export, geo, vector, ...) is needed but not installed."""


def import_extra(name: str, extra: str) -> ModuleType:
    """Import module ``name`` of the optional extra ``extra`` (an optional dependency group such
    as ``geo`` or ``export``), or raise MissingExtraError saying which extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise MissingExtraError(
            f"{name} must be installed for this feature, got ImportError; "
            f"try pip install 'pixelwise[{extra}]'"
        ) from error
