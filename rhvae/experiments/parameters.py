"""What a notebook parameter accepts (``Param``) and the check of one value against it (``check_parameter``).

The parameters of each experiment are declared in ``rhvae.experiments.registry``;
``rhvae.experiments.runs.validate_parameters`` checks a notebook's whole ``parameters`` cell with them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real

from rhvae.validation import DEVICES, RANGES, check_device, scalar


@dataclass(frozen=True)
class Param:
    """What one notebook parameter accepts.

    ``kind``: 'int', 'float', 'bool', 'choice', 'floats' (a non-empty list of floats), 'ints' (a non-empty list
    of distinct integers), 'path' (str or None), 'device' ('cpu', or 'cuda' where torch sees a GPU).
    ``low``/``high`` bound numbers (``low_open`` makes the lower bound strict); ``optional`` allows None
    (for model hyper-parameters: None means the value of ``rhvae.experiments.model_cache.MODEL_CONFIGS``)."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False
    choices: tuple = ()

    def describe(self) -> str:
        if self.kind == "bool":
            text = "True or False"
        elif self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind == "path":
            text = "a folder path (str) or None"
        elif self.kind == "device":
            text = "'cpu' or 'cuda' (a CUDA GPU that torch sees)"
        else:
            what = {
                "int": "an integer",
                "float": "a number",
                "floats": "a number or a non-empty list of numbers",
                "ints": "an integer or a non-empty list of distinct integers",
            }[self.kind]
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {_number(self.low)}"
            hi = "" if self.high is None else f"<= {_number(self.high)}"
            bounds = " and ".join(b for b in (lo, hi) if b)
            text = f"{what}{' ' + bounds if bounds else ''}"
        return text + (" (or None for the default)" if self.optional and self.kind != "path" else "")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number_ok(value, spec: Param, integer: bool) -> bool:
    """A number (Python or NumPy; not a bool) of the right kind within the bounds of ``spec``."""
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        return False
    if not math.isfinite(value):
        return False
    if spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low):
        return False
    return spec.high is None or value <= spec.high


def check_parameter(name: str, value, spec: Param):
    """The value of one parameter, normalised (ints where floats are wanted become floats); ``ValueError``
    naming the parameter and what it accepts otherwise."""

    def fail():
        raise ValueError(f"parameter {name!r} must be {spec.describe()}, got {value!r} ({type(value).__name__})")

    value = scalar(value)
    if value is None:
        if spec.optional or spec.kind == "path":
            return None
        fail()
    if spec.kind == "int":
        if not _number_ok(value, spec, integer=True):
            fail()
        return int(value)
    if spec.kind == "float":
        if not _number_ok(value, spec, integer=False):
            fail()
        return float(value)
    if spec.kind == "bool":
        if not isinstance(value, bool):
            fail()
        return value
    if spec.kind == "choice":
        if value not in spec.choices:
            fail()
        return value
    if spec.kind == "device":
        if value not in DEVICES:
            fail()
        check_device(value, name)  # 'cuda' without a GPU: one line saying so
        return value
    if spec.kind == "path":
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            fail()
        return str(value)
    if spec.kind == "floats":
        if isinstance(value, (str, bytes, Mapping)):
            fail()
        items = [scalar(v) for v in value] if hasattr(value, "__iter__") else [value]  # one number: a list of one
        if not items or not all(_number_ok(v, spec, integer=False) for v in items):
            fail()
        return [float(v) for v in items]
    if spec.kind == "ints":
        if isinstance(value, (str, bytes, Mapping)):
            fail()
        items = [scalar(v) for v in value] if hasattr(value, "__iter__") else [value]
        if not items or len(set(items)) != len(items) or not all(_number_ok(v, spec, integer=True) for v in items):
            fail()
        return [int(v) for v in items]
    raise AssertionError(f"unknown parameter kind {spec.kind!r}")


def ranged(name: str, kind: str | None = None, low: float | None = None, optional: bool = False) -> Param:
    """The notebook parameter of the number ``name`` of ``rhvae.validation.RANGES`` (one place for the limits);
    ``kind`` 'ints'/'floats' for a list of them, ``low`` a stricter lower bound."""
    spec = RANGES[name]
    kind = kind or ("int" if spec.kind is int else "float")
    low_open = spec.low_open and low is None
    return Param(kind, spec.low if low is None else low, spec.high, low_open=low_open, optional=optional)
