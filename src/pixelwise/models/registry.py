"""The one registry of model names: ``build(name, num_classes, **options)`` and ``available()``.

A builder is a plain function with keyword-only options (torchvision style). ``build`` checks the
name and every option against the builder's signature before calling it, so a misspelled option is
an error listing the valid ones instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.models.geometry import Geometry
from pixelwise.options import check_choice, check_int, check_options, signature_options

__all__ = ["available", "build", "check_choice", "check_int", "model_geometry", "model_options", "register"]

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding ``builder`` to the registry under ``name``; a duplicate name raises."""

    def add(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ConfigError(
                f"model name must be unique, got {name!r} twice "
                f"({_BUILDERS[name].__module__} and {builder.__module__}); try another name"
            )
        _BUILDERS[name] = builder
        return builder

    return add


def available() -> list[str]:
    """Sorted names accepted by :func:`build`."""
    return sorted(_BUILDERS)


def model_options(name: str) -> dict[str, Any]:
    """The options ``name`` accepts, with their defaults (``num_classes`` excluded)."""
    return signature_options(_builder(name), exclude={"num_classes"}, keyword_only=True)


def build(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build model ``name`` predicting ``num_classes`` classes.

    The model maps a float ``(N, in_channels, H, W)`` batch of any H, W to logits
    ``(N, num_classes, H, W)`` (``unet`` with ``padding="valid"`` returns the centre crop given by
    :func:`pixelwise.models.unet_valid_output_size`); ``model.geometry`` (a
    :class:`~pixelwise.models.Geometry`) states which. ``(name, num_classes, options)`` fully
    describes the model, so checkpoints store exactly that.

    Raises:
        ConfigError: unknown name, unknown option, or a bad ``num_classes``.
    """
    check_options(f"model {name!r}", options, model_options(name))
    check_int("num_classes", num_classes, minimum=1)
    return _builder(name)(num_classes=int(num_classes), **options)


def model_geometry(name: str, num_classes: int, **options: Any) -> Geometry:
    """The ``geometry`` of ``build(name, num_classes, **options)``, for a model known only by its
    spec (an exported ONNX file's metadata).

    The model is built on the meta device (shapes only, no memory, no compute) and without
    pretrained weights, which change no shape and may not be on this machine.
    """
    if options.get("pretrained_backbone"):
        options = {**options, "pretrained_backbone": False}
    with torch.device("meta"):
        return build(name, num_classes, **options).geometry



def _builder(name: str) -> Builder:
    check_choice("model name", name, available())
    return _BUILDERS[name]
