"""Checking the keyword options a user passes to a model builder or a dataset constructor.

Options arrive from YAML files and ``key=value`` strings as plain names and values. They are
checked against the signature of the function that takes them, so a misspelled or missing
option is a :class:`~pixelwise.errors.ConfigError` listing the valid ones (instead of a
``TypeError``, or being silently ignored), and a value of the wrong type or range names its
option.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pixelwise.errors import ConfigError

REQUIRED = inspect.Parameter.empty  # the "default" of an option that has none


@dataclass(frozen=True)
class Spelling:
    """How the user writes an option where it is checked, for the "try ..." of a message: as a
    keyword argument in Python (the default), a key of a config (``data.options.{name}=...``) or
    a flag of a command (``--option {name}=...``). ``root`` spells a dataset's folder."""

    option: str = "{name}={value}"
    root: str = "root={value}"

    def set(self, name: str, value: Any = "...") -> str:
        """How to set option ``name`` to ``value`` here, e.g. ``data.options.classes=3``."""
        return self.option.format(name=name, value=value)


PYTHON = Spelling()


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


def check_options(owner: str, options: Mapping[str, Any], accepted: Mapping[str, Any],
                  spelling: Spelling = PYTHON, examples: Mapping[str, Any] | None = None) -> None:
    """Raise ConfigError naming ``owner`` (e.g. ``"model 'unet'"``) when ``options`` has a name
    that ``accepted`` (from :func:`signature_options`) lacks, or lacks a ``REQUIRED`` one.

    The "try ..." of the message is spelled as ``spelling`` says, with the value from
    ``examples`` (e.g. ``{"classes": 3}``) where there is one."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"options of {owner} must be among {sorted(accepted)}, got unknown {unknown}; "
            f"{closest_hint(unknown[0], accepted) or 'check the spelling'}"
        )
    missing = [name for name, default in accepted.items()
               if default is REQUIRED and name not in options]
    if missing:
        example = (examples or {}).get(missing[0], "...")
        raise ConfigError(
            f"{owner} needs the option(s) {', '.join(missing)}, got none; try "
            f"{spelling.set(missing[0], example)}"
        )


def check_choice(option: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``; a misspelled name gets the
    closest choice as its "try ..." (``'miou'`` -> ``try 'mean_iou'``)."""
    choices = list(choices)
    if value not in choices:
        hint = closest_hint(value, choices)
        raise ConfigError(f"{option} must be one of {choices}, got {value!r}"
                          + (f"; {hint}" if hint else ""))


def closest_hint(value: Any, choices: Iterable[Any]) -> str:
    """``"try 'mean_iou'"`` for the choice closest to a misspelled ``value`` (difflib's
    similarity), or "" when ``value`` is not text or nothing is close."""
    names = [choice for choice in choices if isinstance(choice, str)]
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    if not close:  # "miou" -> "mean_iou": a close name that gained letters in between
        close = [name for name in names if _is_subsequence(value.lower(), name.lower())][:1]
    return f"try {close[0]!r}" if close else ""


def _is_subsequence(short: str, long: str) -> bool:
    letters = iter(long)
    return len(short) >= 3 and all(letter in letters for letter in short)


def check_int(option: str, value: Any, minimum: int) -> None:
    """Raise ConfigError unless ``value`` is an integer (Python or NumPy, not a bool) of at least
    ``minimum``."""
    if not is_integer(value) or value < minimum:
        raise ConfigError(f"{option} must be an integer >= {minimum}, got {value!r}")


def check_real(option: str, value: Any, minimum: float, inclusive: bool = True) -> None:
    """Raise ConfigError unless ``value`` is a finite real number (not a bool) of at least
    ``minimum`` (above it when not ``inclusive``)."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < minimum or \
            (not inclusive and value == minimum):
        bound = ">=" if inclusive else ">"
        raise ConfigError(f"{option} must be a finite number {bound} {minimum:g}, got {value!r}")


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer, Python or NumPy (a bool is not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
