"""Parameter checks shared by the whole package: a bad value raises ``ParameterError`` naming the parameter and
its accepted range, never a traceback from deep inside torch.

Every number a user can set has a range here (``RANGES``), used by the models, the trainer, the sampler, the
command line and the notebooks' parameter checks alike. The upper limits refuse values that would overflow in
float32 (a step of 1e300, a temperature of 1e-300), not fit in memory (a latent dimension of 100,000) or run
for days (a billion MCMC steps); they are far above anything the paper or a reasonable study needs.
Python numbers, NumPy scalars and 0-d arrays or tensors are accepted alike and returned as Python numbers.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch


class ParameterError(ValueError):
    """A parameter outside its accepted range (a ``ValueError``)."""


def scalar(value):
    """A 0-d NumPy array or torch tensor as its Python number; anything else unchanged."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return value.item()
    return value


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """An integer (not a bool; NumPy integers accepted) in [minimum, maximum], as a Python int."""
    value = scalar(value)
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum:,}"
        raise ParameterError(f"{name} must be an integer >= {minimum}{upper}, got {value!r}")
    return int(value)


def check_float(name: str, value, low: float, high: float = math.inf, low_inclusive: bool = False) -> float:
    """A finite number in (low, high] (or [low, high] with ``low_inclusive``); ints and NumPy numbers accepted."""
    value = scalar(value)
    numeric = _is_real(value)
    above = numeric and (value >= low if low_inclusive else value > low)
    if not (numeric and math.isfinite(value) and above and value <= high):
        bounds = ("[" if low_inclusive else "(") + f"{low}, " + (f"{high}]" if math.isfinite(high) else "inf)")
        raise ParameterError(f"{name} must be a finite number in {bounds}, got {value!r}")
    return float(value)


def as_array_tensor(value, name: str) -> torch.Tensor:
    """``value`` (a tensor, a NumPy array or a nested list of numbers) as a tensor, detached and on the CPU; a
    ``TypeError`` naming ``name`` for anything else (None, a string, an object)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a tensor or an array of numbers, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nesting
        raise TypeError(f"{name} must be a tensor or an array of numbers: {err}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a tensor or an array of numbers, got an array of {array.dtype}")
    return torch.from_numpy(array)


#: The side of an MNIST digit: images are (n, 784) rows, or (n, 28, 28) / (n, 1, 28, 28) where a function says so.
IMAGE_SIDE = 28


def check_pixels(
    x,
    name: str = "images",
    dim: int = IMAGE_SIDE * IMAGE_SIDE,
    *,
    square: bool = False,
    min_images: int = 1,
    uint8: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    why: str = "",
) -> torch.Tensor:
    """Images ``x`` as an (n, ``dim``) tensor of finite pixel values in [0, 1]: the one pixel check of the package
    (the models' forward, training and evaluation, the quality classifier and its metrics, the augmentation
    classifiers, the latent-path and clustering tables). One ``TypeError`` or ``ValueError`` line naming ``name``
    otherwise, saying so when the pixels look like 0–255 ones.

    ``x`` is a tensor (kept on its device, not detached), a NumPy array or a nested list of numbers; its shape is
    (n, dim), or with ``square`` also (n, 28, 28) or (n, 1, 28, 28) (flattened to rows); n >= ``min_images``.
    ``uint8``: a uint8 tensor is taken as 0–255 pixels and divided by 255 (else it must hold 0 and 1 only, like any
    integer tensor). The result is cast to ``dtype`` and moved to ``device`` when given, before the range is
    checked (one ``aminmax`` reduction: NaN and ±inf fall outside [0, 1]). ``why`` is added after the range in the
    message (e.g. " (a Bernoulli likelihood)").
    """
    if not isinstance(x, torch.Tensor):
        x = as_array_tensor(x, name)
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real pixel values in [0, 1], got dtype {x.dtype}")
    side = math.isqrt(dim)
    squares = [(side, side), (1, side, side)] if square and side * side == dim else []
    if not (x.ndim == 2 and x.shape[1] == dim) and not (x.ndim >= 3 and tuple(x.shape[1:]) in squares):
        accepted = " or ".join(f"(batch, {', '.join(map(str, s))})" for s in [(dim,), *squares])
        raise ValueError(f"{name} must be a tensor of shape {accepted}, got {tuple(x.shape)}")
    if len(x) < min_images:
        if min_images == 1:
            raise ValueError(f"{name} must hold at least one image, got an empty batch of shape {tuple(x.shape)}")
        raise ValueError(f"{name} needs at least {min_images} images, got {len(x)}")
    x = x.reshape(len(x), dim)
    if uint8 and x.dtype == torch.uint8:
        x = x.float() / 255.0
    if dtype is not None or device is not None:
        x = x.to(dtype=dtype or (x.dtype if x.is_floating_point() else torch.float32), device=device)
    if not len(x):
        return x
    low, high = (float(v) for v in torch.aminmax(x))
    if not (low >= 0.0 and high <= 1.0):  # false for NaN too
        bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
        what = f"{bad} non-finite pixel(s)" if bad else f"pixels in [{low:g}, {high:g}]"
        hint = ""
        if not bad and low >= 0.0 and high <= 255.0:
            hint = "; they look like 0-255 pixels: divide 0-255 images by 255"
        raise ValueError(f"{name} must hold pixel values in [0, 1]{why}, got {what}{hint}")
    return x


def check_bool(name: str, value) -> bool:
    """``True`` or ``False`` (NumPy booleans accepted; not 0/1, not a tensor): ``TypeError`` naming it otherwise."""
    value = scalar(value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


@dataclass(frozen=True)
class Range:
    """The accepted values of one number: an int or float in [low, high] (``low_open``: (low, high])."""

    kind: type
    low: float
    high: float
    low_open: bool = False

    def check(self, name: str, value):
        if self.kind is int:
            return check_int(name, value, int(self.low), int(self.high))
        return check_float(name, value, self.low, self.high, low_inclusive=not self.low_open)

    def describe(self) -> str:
        if self.kind is int:
            return f"an integer in [{int(self.low)}, {int(self.high):,}]"
        return f"a finite number in {'(' if self.low_open else '['}{self.low}, {self.high}]"


MAX_SEED = 2**32 - 1
"""Seeds are drawn into NumPy's and torch's generators: 32 bits are portable to both."""

#: The range of every number a user can set, by parameter name (the one place these limits live).
RANGES: dict[str, Range] = {
    # model architecture: 784–400–2 in the paper; the limits keep a model under ~0.5 GB of float32 weights
    "latent_dim": Range(int, 1, 64),
    "input_dim": Range(int, 1, 100_000),
    "hidden_dim": Range(int, 1, 10_000),
    # the flow: the paper uses n_lf 10, eps_lf 0.01 / 0.1, β₀ 0.3, T 0.6–1, λ 0.1
    "n_lf": Range(int, 0, 1000),
    "eps_lf": Range(float, 0.0, 10.0, low_open=True),
    "beta_zero": Range(float, 1e-4, 1.0),  # ρ₀ ~ N(0, G/β₀): its scale is 1/√β₀
    "temperature": Range(float, 0.01, 100.0),  # the kernel is exp(−‖z − c‖²/T²)
    "regularization": Range(float, 1e-6, 1e6),  # G⁻¹ ≥ λI and G ≤ I/λ
    "n_fixed_point": Range(int, 1, 100),
    # training
    "epochs": Range(int, 1, 100_000),
    "warmup_epochs": Range(int, 0, 100_000),
    "lr": Range(float, 0.0, 1.0, low_open=True),
    "batch_size": Range(int, 1, 10_000_000),
    "max_latent_norm": Range(float, 0.0, 1e30, low_open=True),
    "seed": Range(int, 0, MAX_SEED),
    "data_seed": Range(int, 0, MAX_SEED),
    "n_per_class": Range(int, 2, 100_000),  # one train and one test image at least
    "threads": Range(int, 1, 256),
    # evaluation and sampling (the paper: 90 or 150 MCMC steps, 100 samples, S in the hundreds or thousands)
    "mcmc_steps": Range(int, 0, 100_000),
    "n_samples": Range(int, 1, 100_000),
    "ll_samples": Range(int, 1, 100_000),
    # the truncated metric (rhvae.sampling.truncation): ‖G⁻¹ − G_r⁻¹‖ ≤ τ λ; above 0.1 the cut would change the metric
    # visibly
    "truncation_tolerance": Range(float, 0.0, 0.1, low_open=True),
    # the grid target (rhvae.sampling.grid_target): max |f̃ − log det G⁻¹| at the cell centres, in nats
    "grid_tolerance": Range(float, 0.0, 0.1, low_open=True),
    # pictures: an n × n grid of latent points
    "grid_n": Range(int, 2, 2000),
}


def check(name: str, value, as_name: str | None = None):
    """``value`` checked against ``RANGES[name]`` (named ``as_name`` in the error, default ``name``)."""
    return RANGES[name].check(as_name or name, value)


#: The devices a model can train and run on: the CPU (the default, and all this package's results), or a CUDA GPU.
DEVICES = ("cpu", "cuda")


def check_device(value, name: str = "device") -> torch.device:
    """``value`` ('cpu', 'cuda', 'cuda:N' or a ``torch.device``) as a ``torch.device`` that exists on this machine;
    one ``ParameterError`` line otherwise (e.g. 'cuda' where torch sees no GPU)."""
    try:
        device = torch.device(value) if isinstance(value, (str, torch.device)) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICES:
        raise ParameterError(f"{name} must be one of {DEVICES} (or 'cuda:N'), got {value!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ParameterError(f"{name}={str(value)!r} is not available: torch sees no CUDA GPU here; use 'cpu'")
        if device.index is not None and device.index >= count:
            raise ParameterError(f"{name}={str(value)!r} is not available: torch sees {count} CUDA GPU(s)")
    return device
