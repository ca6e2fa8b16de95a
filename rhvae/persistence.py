"""Saving and loading models safely, and a cache of trained models keyed by what produced them.

A model file is a ``torch.save`` of a plain dict — format tag, model type, JSON config, state dict (weights
and, for the RHVAE, the frozen centroids and Mᵢ), JSON history and JSON provenance — written to a temporary
file in the same folder and moved into place (atomic on POSIX), and read back with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from .models import MODELS, VAE
from .training import History

FORMAT = "rhvae-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that is missing, unreadable, truncated, of another format, or of another model type."""


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path``: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def save_model(model: VAE, path: str | Path, history: History | None = None, provenance: dict | None = None) -> Path:
    """Write ``model`` (config, weights, frozen metric), its ``history`` and ``provenance`` atomically to ``path``."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_type": model.model_type,
        "config": json.dumps(model.config()),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "history": json.dumps(history.to_dict() if history is not None else None),
        "provenance": json.dumps(provenance or {}),
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_model_file(path: str | Path) -> dict:
    """The raw payload of a model file, checked for format; raises ``ModelFileError`` with the reason."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, random bytes
        raise ModelFileError(f"{path} is not a readable rhvae model file (truncated or corrupted?): {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not an rhvae model file (no '{FORMAT}' format tag)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format version {payload.get('format_version')}, this package reads {FORMAT_VERSION}"
        )
    return payload


def load_model(path: str | Path, expected_type: str | None = None, with_history: bool = False):
    """Load a model saved by ``save_model`` (eval mode). With ``with_history=True`` return
    ``(model, history, provenance)``. ``expected_type`` ('VAE', 'HVAE', 'RHVAE') refuses any other type."""
    payload = read_model_file(path)
    model_type = payload.get("model_type")
    classes = {cls.model_type: cls for cls in MODELS.values()}
    if model_type not in classes:
        raise ModelFileError(f"{path} holds an unknown model type {model_type!r}")
    if expected_type is not None and model_type.lower() != expected_type.lower():
        raise ModelFileError(f"{path} holds a {model_type}, expected a {expected_type}")
    try:
        config = json.loads(payload["config"])
        model = classes[model_type](**config)
        state = payload["state_dict"]
        for name in ("centroids", "M"):  # the frozen metric's size is the number of training points
            if name in state and hasattr(model, name):
                setattr(model, name, torch.empty_like(state[name]))
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path} does not match a {model_type} of its own config: {err}") from err
    model.eval()
    if not with_history:
        return model
    history = json.loads(payload.get("history", "null"))
    return model, (History.from_dict(history) if history else None), json.loads(payload.get("provenance", "{}"))


def cache_key(spec: dict) -> str:
    """A stable hash of everything that determines a trained model (experiment subset, model, training)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
