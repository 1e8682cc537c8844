"""Checking the keyword options a user passes to a model builder or a dataset constructor.

Options arrive from YAML files and ``key=value`` strings as plain names and values. They are
checked against the signature of the function that takes them, so a misspelled or missing
option is a :class:`~pixelwise.errors.ConfigError` listing the valid ones (instead of a
``TypeError``, or being silently ignored), and a value of the wrong type or range names its
option.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from pixelwise.errors import ConfigError

REQUIRED = inspect.Parameter.empty  # the "default" of an option that has none


def signature_options(
    function: Callable, exclude: Collection[str] = (), keyword_only: bool = False
) -> dict[str, Any]:
    """The parameters of ``function`` a caller may pass as options, with their defaults
    (``REQUIRED`` where there is none), leaving out ``exclude``, ``*args`` and ``**kwargs``;
    with ``keyword_only`` only the parameters after ``*``."""
    kinds = (
        (inspect.Parameter.KEYWORD_ONLY,)
        if keyword_only
        else (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )
    return {
        param.name: param.default
        for param in inspect.signature(function).parameters.values()
        if param.kind in kinds and param.name not in exclude
    }


def check_options(owner: str, options: Mapping[str, Any], accepted: Mapping[str, Any]) -> None:
    """Raise ConfigError naming ``owner`` (e.g. ``"model 'unet'"``) when ``options`` has a name
    that ``accepted`` (from :func:`signature_options`) lacks, or lacks a ``REQUIRED`` one."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"options of {owner} must be among {sorted(accepted)}, got unknown {unknown}; "
            "check the spelling"
        )
    missing = [name for name, default in accepted.items()
               if default is REQUIRED and name not in options]
    if missing:
        raise ConfigError(
            f"{owner} needs the option(s) {', '.join(missing)}, got none; try adding "
            f"{missing[0]}=... to its options"
        )


def check_choice(option: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{option} must be one of {choices}, got {value!r}")


def check_int(option: str, value: Any, minimum: int) -> None:
    """Raise ConfigError unless ``value`` is an integer (Python or NumPy, not a bool) of at least
    ``minimum``."""
    if not is_integer(value) or value < minimum:
        raise ConfigError(f"{option} must be an integer >= {minimum}, got {value!r}")


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer, Python or NumPy (a bool is not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
