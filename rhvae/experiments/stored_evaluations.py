"""Stored evaluations: the numbers an experiment computes from fixed models, kept so that a run from the same models
reads them instead of computing them again.

An evaluation is named by a key that says exactly what was evaluated (``evaluation_key``: the digest of every model's
weights and frozen metric, and whatever else decides the numbers: settings, data). It is looked for first among the
shipped files (``data/models/EXPERIMENT/evaluation_KEY.json``, each checked against ``data/models/SHA256SUMS``: a
shipped file that fails its checksum is refused), then in the run's cache, where a computed one is saved atomically.
A file is used only when it records the key it is named by. So a default ``run_all.sh`` reads the shipped
evaluations of the shipped models, and a run whose models or settings differ computes its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

from rhvae.files import atomic_write_text
from rhvae.models import VAE
from rhvae.paths import SHIPPED_DIR
from rhvae.persistence import ModelFileError, state_digest, verify_shipped


def evaluation_key(models: Mapping[str, VAE], identity: Mapping) -> str:
    """What identifies an evaluation: the digest of each of ``models``' weights and frozen metric (by label) and
    ``identity`` (JSON-ready: the settings and anything else the numbers depend on). 16 hex digits of a SHA-256."""
    digests = {label: state_digest(model.state_dict()) for label, model in sorted(models.items())}
    text = json.dumps({"models": digests, **identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluation_path(folder: Path, experiment: str, key: str) -> Path:
    """Where an evaluation of ``experiment`` with ``key`` lies under ``folder`` (the shipped models' or a cache)."""
    return Path(folder) / experiment / f"evaluation_{key}.json"


def load_evaluation(experiment: str, key: str, cache_dir: Path) -> tuple[dict | None, str | None, Path | None]:
    """A stored evaluation of ``key``: the shipped one (``data/models/EXPERIMENT``, checked against ``SHA256SUMS``; a
    file that fails it raises ``ModelFileError``) or a cached one (``cache_dir``, used only if it parses and records
    the same key). Returns (evaluation, "shipped" or "cache", its file), or (None, None, None)."""
    for folder, source in ((SHIPPED_DIR, "shipped"), (cache_dir, "cache")):
        path = evaluation_path(folder, experiment, key)
        if not path.is_file():
            continue
        if source == "shipped":
            verify_shipped(path)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            if source == "shipped":
                raise ModelFileError(f"{path}: not a readable evaluation ({err})") from err
            continue
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["evaluation"], source, path
    return None, None, None


def save_evaluation(experiment: str, key: str, evaluation: Mapping, cache_dir: Path) -> Path:
    """Write an evaluation to ``cache_dir/EXPERIMENT/evaluation_KEY.json`` atomically."""
    path = evaluation_path(cache_dir, experiment, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps({"key": key, "evaluation": evaluation}, indent=1) + "\n")


def stored_evaluation(
    experiment: str, key: str, cache_dir: Path, compute: Callable[[], Mapping]
) -> tuple[dict, str, Path]:
    """The evaluation of ``key``: the stored one (``load_evaluation``) or ``compute()``, saved to ``cache_dir``.
    Returns it as JSON gives it back (string keys, plain floats), whichever it came from, its source ("shipped",
    "cache" or "computed") and its file."""
    evaluation, source, path = load_evaluation(experiment, key, cache_dir)
    if evaluation is None:
        evaluation = json.loads(json.dumps(compute(), default=float))  # as it is stored and read back
        source, path = "computed", save_evaluation(experiment, key, evaluation, cache_dir)
    return evaluation, source, path
