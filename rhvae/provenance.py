"""What every run records about itself: versions, thread count, machine, time."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
import sys

import numpy as np
import torch

from rhvae.paths import ROOT
from rhvae.validation import check
from rhvae.version import __version__


def set_threads(threads: int | None) -> int:
    """Pin torch's intra-op thread count (CPU results depend on it) and return the count in force. More threads
    than CPU cores only slows a run down (and changes its rounding): that is allowed, with a warning on stderr."""
    if threads is not None:
        threads = check("threads", threads)
        cores = os.cpu_count() or 1
        if threads > cores and threads != torch.get_num_threads():
            print(
                f"warning: threads={threads} is more than the {cores} CPU core(s) of this machine: "
                f"expect a slower run, not a faster one",
                file=sys.stderr,
            )
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@contextlib.contextmanager
def pinned_threads(threads: int | None):
    """torch's intra-op thread count set to ``threads`` for the block (None: left as it is) and restored after it,
    so that a library call leaves the process as it found it; yields the count in force."""
    before = torch.get_num_threads()
    try:
        yield set_threads(threads)
    finally:
        torch.set_num_threads(before)


def environment() -> dict:
    """Versions and machine facts that can change a result. The CPU is among them: torch and MKL pick their float32
    kernels for the processor they run on (``cpu_capability``: ATen's vector instruction set), so the same code,
    versions and seed can round differently on another machine, and a long training run then follows another path
    (docs/reproducing.md)."""
    return {
        "rhvae": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def cpu_model() -> str | None:
    """The processor's model name (``model name`` in /proc/cpuinfo on Linux, ``platform.processor()`` elsewhere), or
    at least its architecture (``platform.machine()``, e.g. on ARM Linux, whose /proc/cpuinfo has no model name)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when files differ from it), or None outside a git checkout: floating-
    point rounding differs between code versions, and a long training run can follow a different path."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
