"""Parameter checks shared by the whole package: a bad value raises ``ParameterError`` naming the parameter and
its accepted range, never a traceback from deep inside torch."""

from __future__ import annotations

import math


class ParameterError(ValueError):
    """A parameter outside its accepted range (a ``ValueError``)."""


def check_int(name: str, value, minimum: int) -> int:
    """An integer (not a bool) ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_float(name: str, value, low: float, high: float = math.inf, low_inclusive: bool = False) -> float:
    """A finite number in (low, high] (or [low, high] with ``low_inclusive``); ints are accepted."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    above = numeric and (value >= low if low_inclusive else value > low)
    if not (numeric and math.isfinite(value) and above and value <= high):
        bounds = ("[" if low_inclusive else "(") + f"{low}, " + (f"{high}]" if math.isfinite(high) else "inf)")
        raise ParameterError(f"{name} must be a finite number in {bounds}, got {value!r}")
    return float(value)
