"""What every run records about itself: versions, thread count, machine, time."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys

import numpy as np
import torch


def set_threads(threads: int | None) -> int:
    """Pin torch's intra-op thread count (CPU results depend on it) and return the count in force."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def environment() -> dict:
    """Versions and machine facts that can change a result."""
    from . import __version__

    return {
        "rhvae": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
    }
