"""What runs write about themselves: plain JSON data and the library versions that made it.

Every run record of the package (``generate``'s ``settings.json``, a benchmark's records,
a training run's log) goes through :func:`jsonable` and names its :func:`versions`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import __version__

#: How :func:`jsonable` writes a float JSON cannot hold (NaN, ±Infinity).
NON_FINITE_POLICIES = ("string", "null")


def jsonable(value: Any, non_finite: str = "string") -> Any:
    """``value`` as plain JSON data: tuples and sets to lists, dict keys to str, numpy / torch
    scalars to Python, paths to POSIX strings, anything else to its ``str``.

    JSON has no NaN or Infinity: ``non_finite="string"`` writes them as ``"nan"`` / ``"inf"``
    (the value stays visible in a record), ``"null"`` as ``None`` (a number that is undefined).
    """
    if non_finite not in NON_FINITE_POLICIES:
        raise ValueError(f"non_finite must be one of {', '.join(NON_FINITE_POLICIES)}, got {non_finite!r}")
    return _jsonable(value, non_finite)


def _jsonable(value: Any, non_finite: str) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v, non_finite) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, non_finite) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value) if non_finite == "string" else None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return value.as_posix()
    if hasattr(value, "item"):  # numpy / torch scalars
        try:
            return _jsonable(value.item(), non_finite)
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def versions(*extra: str) -> dict:
    """This package's version and those of torch, diffusers and transformers, plus the
    modules named in ``extra`` (e.g. ``"accelerate"``)."""
    import importlib

    names = ("torch", "diffusers", "transformers", *extra)
    return {"contrastive_diffusers": __version__, **{name: importlib.import_module(name).__version__ for name in names}}
