"""Compiled kernels for the implicit leapfrog steps at d = 2 (``leapfrog_d2.cpp``), with the pure-PyTorch nodes
as the fallback.

At d = 2 (the paper's latent dimension) every quantity of a fixed-point iteration is a 2 × 2 matrix or a pair per
row, so the pure-PyTorch nodes of ``rhvae.models.autograd_nodes`` spend most of their time in the per-call cost of
a few dozen tiny tensor operations per iteration. ``leapfrog_d2.cpp`` computes the same iterations and the same
hand-written backwards in loops (docs/speed.md). It is compiled on first use with the machine's C++ compiler
through ``torch.utils.cpp_extension`` (``install.sh`` does it once: ``python -m rhvae kernels``) and cached in
torch's extension folder (``TORCH_EXTENSIONS_DIR``, by default under ``~/.cache``), under a name that changes with
the source, the torch version and the processor. Where it cannot be built (no compiler, no ``ninja``: one warning,
and the failure is remembered so that later processes do not build again) or where ``RHVAE_NATIVE=0`` (or no,
false, off) is set, the pure-PyTorch nodes are used: the same values to rounding (tests/models/test_native.py and
tests/models/test_speed_equivalence.py check both). Another value of ``RHVAE_NATIVE`` is refused at the first use.

``python -m rhvae kernels`` builds the kernels and prints one line saying whether they are used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path

import torch

from rhvae.files import atomic_write_text
from rhvae.provenance import cpu_model

SOURCE = Path(__file__).with_name("leapfrog_d2.cpp")
#: Set to 0 (or no, false, off) to use the pure-PyTorch nodes even where the kernels build.
ENVIRONMENT_SWITCH = "RHVAE_NATIVE"
_SWITCH_ON = ("", "1", "yes", "true", "on")
_SWITCH_OFF = ("0", "no", "false", "off")
DTYPES = (torch.float32, torch.float64)
#: -march=native: the build is for this processor (its name is part of the build's name, see ``_build_name``).
_FLAGS = ("-O3", "-march=native", "-fopenmp-simd")

_kernels = None
_tried = False


def enabled() -> bool:
    """Whether the environment variable ``RHVAE_NATIVE`` allows the kernels: unset or empty, 1, yes, true or on
    (any case) allow them; 0, no, false or off choose the pure-PyTorch nodes; any other value is a ``ValueError``
    (a misspelt "off" must not leave the kernels on)."""
    value = os.environ.get(ENVIRONMENT_SWITCH, "").strip().lower()
    if value in _SWITCH_ON:
        return True
    if value in _SWITCH_OFF:
        return False
    raise ValueError(
        f"{ENVIRONMENT_SWITCH} must be one of 1, yes, true, on (the compiled kernels) or 0, no, false, off (the "
        f"pure-PyTorch nodes), any case, or unset; got {os.environ[ENVIRONMENT_SWITCH]!r}"
    )


def _build_name() -> str:
    """The extension's name: a hash of the source and its path, the compiler flags, torch's version and the processor
    (its name and ATen's instruction set), so that a changed source, another torch or another machine sharing the
    cache folder never loads a stale build, and two checkouts of the package each keep their own build (torch
    rebuilds a build whose source path changed: two checkouts sharing one name rebuilt each other's, 30-60 s a time)."""
    processor = (platform.machine(), str(cpu_model()), torch.backends.cpu.get_cpu_capability())
    source = (str(SOURCE.resolve()), SOURCE.read_text())
    key = "|".join((*source, " ".join(_FLAGS), torch.__version__, *processor)).encode()
    return "rhvae_leapfrog_d2_" + hashlib.sha256(key).hexdigest()[:16]


def kernels(retry: bool = False):
    """The compiled module, built or loaded on the first call of the process; None where it is disabled or cannot
    be built. A failed build says why in one warning, once per process, and is remembered beside the builds
    (``<name>.failed`` in torch's extension folder) so that later processes fall back at once instead of building
    again; ``retry=True`` (``python -m rhvae kernels``) forgets it and builds."""
    global _kernels, _tried
    if not enabled():
        return None
    if retry:
        _tried = False
    if _tried:
        return _kernels
    _tried = True
    with _quiet_torch_logger():  # torch logs CUDA and compiler notes at import and build: not ours to show
        from torch.utils import cpp_extension

        name = _build_name()
        root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
        failed = Path(root) / f"{name}.failed"
        if failed.exists() and not retry:
            _fall_back(failed.read_text().strip() + f"; remembered in {failed}")
            return None
        _say_if_another_process_builds(Path(root) / name / "lock")
        try:
            _kernels = cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=list(_FLAGS), verbose=False)
            failed.unlink(missing_ok=True)
        except Exception as error:  # no compiler, no ninja, a failed build: fall back, say so once
            reason = _build_failure(error)
            with contextlib.suppress(OSError):  # a read-only cache only costs the next process another try
                atomic_write_text(failed, reason + "\n")
            _fall_back(reason)
    return _kernels


def _say_if_another_process_builds(lock: Path) -> None:
    """One line on stderr when another process holds torch's build lock of these kernels (an flock on ``lock``,
    which ``cpp_extension.load`` then waits for, silently, as long as that build takes: a minute or two)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:  # no build folder yet, or not ours to open: nobody is building, or load will say why
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        print(
            f"rhvae: waiting for another process that is building the compiled d = 2 kernels (lock {lock}); "
            f"{ENVIRONMENT_SWITCH}=0 uses the PyTorch nodes instead",
            file=sys.stderr,
            flush=True,
        )
    finally:
        os.close(fd)


@contextlib.contextmanager
def _quiet_torch_logger():
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _build_failure(error: Exception) -> str:
    """Why the build failed, in a few words: the compiler or ninja missing, else the error's first line."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler: {compiler!r} is not on the PATH"
    if shutil.which("ninja") is None:
        return "no ninja (pip install ninja)"
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"the build failed: {first_line[:160]}"


def _fall_back(reason: str) -> None:
    warnings.warn(
        f"rhvae: compiled d = 2 leapfrog kernels not built ({reason}); the models use their pure-PyTorch nodes (the "
        "same values, slower). python -m rhvae kernels retries; RHVAE_NATIVE=0 silences this.",
        RuntimeWarning,
        stacklevel=3,
    )


def implementation() -> str:
    """What the leapfrog nodes of this process run at d = 2 (recorded with every training history and notebook run,
    since the two round differently in the last bits): ``"compiled"`` or ``"pytorch"``."""
    return "compiled" if kernels() is not None else "pytorch"


def for_tensors(*tensors: torch.Tensor):
    """The compiled module if it applies to these tensors (CPU, float32 or float64, latent dimension 2 in the last
    axis of the first), else None."""
    first = tensors[0]
    if first.shape[-1] != 2 or first.device.type != "cpu" or first.dtype not in DTYPES:
        return None
    if any(t.dtype != first.dtype for t in tensors):
        return None
    return kernels()
