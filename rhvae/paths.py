"""Where the project's folders are, resolved from the package location (never from the working directory).

papermill runs a kernel in the caller's folder and nbconvert in the notebook's folder, so every path the
package writes or reads is anchored here. ``RHVAE_HOME`` overrides the root (e.g. for an installed package
used outside a checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("RHVAE_HOME", Path(__file__).resolve().parent.parent))
DATA_DIR = ROOT / "data"
FIGURES_DIR = ROOT / "figures"
CACHE_DIR = DATA_DIR / "cache"
#: The trained paper-mode models committed with the project (read-only; listed with checksums in SHA256SUMS).
SHIPPED_DIR = DATA_DIR / "models"
