"""Saving and loading models safely, and a cache of trained models keyed by what produced them.

A model file is a ``torch.save`` of a plain dict — format tag, model type, JSON config, state dict (weights
and, for the RHVAE, the frozen centroids and Mᵢ), JSON history and JSON provenance — written to a temporary
file in the same folder and moved into place (atomic on POSIX) with the permissions of any file the user creates
(``0666`` less the umask), and read back with ``weights_only=True``. Loading refuses a file that is not a model
file (random bytes, a pickle of arbitrary objects: never unpickled), whose JSON fields do not parse, whose weights
are not finite, or, for a shipped model under ``data/models/``, whose bytes do not match ``data/models/SHA256SUMS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from rhvae.files import atomic_write
from rhvae.history import History
from rhvae.models import MODELS, VAE, check_model
from rhvae.paths import SHIPPED_DIR
from rhvae.validation import check_bool

FORMAT = "rhvae-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that is missing, unreadable, truncated, of another format, or of another model type."""


def save_model(model: VAE, path: str | Path, history: History | None = None, provenance: dict | None = None) -> Path:
    """Write ``model`` (config, weights, frozen metric), its ``history`` and ``provenance`` atomically to ``path``
    (``rhvae.files.WriteError`` naming it on a full disk: nothing is left behind)."""
    return atomic_write(path, model_writer(model, history, provenance))


def model_writer(model: VAE, history: History | None = None, provenance: dict | None = None):
    """The ``write(tmp_path)`` of a model file, for ``rhvae.files.atomic_write_set`` (a model written together
    with other files: all or none). The payload records ``state_sha256``, a digest of the weights, checked at load."""
    check_model(model)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a rhvae.history.History or None, got {type(history).__name__}")
    if provenance is not None and not isinstance(provenance, Mapping):
        raise TypeError(f"provenance must be a dict (JSON-ready) or None, got {type(provenance).__name__}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_type": model.model_type,
        "config": json.dumps(model.config()),
        "state_dict": state,
        "state_sha256": state_digest(state),
        "history": json.dumps(history.to_dict() if history is not None else None),
        "provenance": json.dumps(provenance or {}),
    }
    return lambda tmp: torch.save(payload, tmp)


def state_digest(state: dict) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes, in name order: a bit flip in any weight of a
    file outside ``data/models`` (which SHA256SUMS guards) changes it."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_checksums() -> dict[str, str]:
    """``data/models/SHA256SUMS`` as {path relative to data/models: sha256} ({} when the folder has no model);
    ``ModelFileError`` naming the file, and the line, when it is missing beside shipped models or a line is not
    "SHA256  NAME"."""
    sums = SHIPPED_DIR / "SHA256SUMS"
    if not sums.is_file():
        if any(SHIPPED_DIR.rglob("*.pt")):
            raise ModelFileError(f"{sums} is missing: the shipped models cannot be verified (git checkout -- {sums})")
        return {}
    entries = {}
    for number, line in enumerate(sums.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name.strip():
            raise ModelFileError(f"{sums}, line {number}: not a 'SHA256  NAME' line: {line[:80]!r}")
        entries[name.strip()] = digest
    return entries


def verify_shipped(path: str | Path) -> None:
    """For a file under ``data/models/``: raise ``ModelFileError`` unless its SHA-256 is the one listed in
    ``data/models/SHA256SUMS`` (a shipped model that was modified, corrupted or added by hand is never used).
    A file counts as shipped when it is under ``data/models/`` as named or after following symbolic links, so a
    link into or out of the folder does not bypass the check; the bytes checked are the file's content."""
    shipped, resolved = SHIPPED_DIR.resolve(), Path(path).resolve()
    roots = {shipped, Path(os.path.abspath(SHIPPED_DIR))}
    names = [
        p.relative_to(root).as_posix()
        for p in (Path(os.path.abspath(path)), resolved)
        for root in roots
        if root in p.parents
    ]
    if not names:
        return
    name = names[0]
    expected = shipped_checksums().get(name)
    if expected is None:
        raise ModelFileError(f"{path} is under {shipped} but not listed in its SHA256SUMS: refusing an unlisted model")
    if sha256(resolved) != expected:
        raise ModelFileError(
            f"{path} does not match its checksum in {shipped / 'SHA256SUMS'} (modified or corrupted): restore it "
            f"with 'git checkout -- data/models/{name}' or retrain (reuse_cache=False)"
        )


def read_model_file(path: str | Path) -> dict:
    """The raw payload of a model file, checked for format (and, for a shipped model, its checksum); raises
    ``ModelFileError`` with the reason."""
    path = Path(path)
    if not path.is_file():
        if path.exists() and not path.is_dir():  # /dev/null, a pipe, a socket
            raise ModelFileError(f"{path} is not an rhvae model file (not a regular file: a device, pipe or socket)")
        raise ModelFileError(f"model file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path} is not an rhvae model file (it is empty: 0 bytes)")
    verify_shipped(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # random bytes, a truncated or empty file, a pickle of arbitrary objects
        why = "truncated or corrupted, or not a torch file"
        if isinstance(err, pickle.UnpicklingError) and "unsupported global" in str(err).lower():
            why = "it holds pickled objects other than tensors and plain data, refused unread (they could run code)"
        raise ModelFileError(f"{path} is not an rhvae model file ({why})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not an rhvae model file (no '{FORMAT}' format tag)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format version {payload.get('format_version')}, this package reads {FORMAT_VERSION}"
        )
    recorded = payload.get("state_sha256")  # files written before it was recorded are checked by SHA256SUMS only
    if recorded is not None and (
        not isinstance(payload.get("state_dict"), dict) or state_digest(payload["state_dict"]) != recorded
    ):
        raise ModelFileError(f"{path}: its weights do not match the digest recorded when it was saved (corrupted)")
    return payload


def _non_floating_weights(state_dict: dict, model) -> list[str]:
    """The entries of a file's ``state_dict`` that hold integer or boolean tensors where the model's own are floating
    (``name (dtype)``); a buffer the model itself holds as integer is not one."""
    own = model.state_dict()
    return [
        f"{name} ({str(tensor.dtype).removeprefix('torch.')})"
        for name, tensor in state_dict.items()
        if isinstance(tensor, torch.Tensor)
        and not tensor.is_floating_point()
        and (name not in own or own[name].is_floating_point())
    ]


def load_model(path: str | Path, expected_type: str | None = None, with_history: bool = False):
    """Load a model saved by ``save_model`` (eval mode). With ``with_history=True`` return
    ``(model, history, provenance)``. ``expected_type`` ('VAE', 'HVAE', 'RHVAE') refuses any other type."""
    classes = {cls.model_type: cls for cls in MODELS.values()}
    if expected_type is not None and (not isinstance(expected_type, str) or expected_type.upper() not in classes):
        raise ValueError(f"expected_type must be one of {tuple(classes)} or None, got {expected_type!r}")
    with_history = check_bool("with_history", with_history)
    payload = read_model_file(path)
    model_type = payload.get("model_type")
    if model_type not in classes:
        raise ModelFileError(f"{path} holds an unknown model type {model_type!r}")
    if expected_type is not None and model_type.lower() != expected_type.lower():
        raise ModelFileError(f"{path} holds a {model_type}, expected a {expected_type}")
    config = json_field(payload, "config", path)
    try:
        model = classes[model_type](**config)
        not_floating = _non_floating_weights(payload["state_dict"], model)
        if not not_floating:
            model.load_trained_state(payload["state_dict"])  # the frozen metric's size: the number of training points
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise ModelFileError(f"{path} does not match a {model_type} of its own config: {err}") from err
    if not_floating:  # load_state_dict would cast them to float silently
        raise ModelFileError(f"{path} holds non-floating weights in {', '.join(not_floating)}: refusing it")
    bad = [name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()]
    if bad:
        raise ModelFileError(f"{path} holds non-finite weights (NaN or inf) in {', '.join(bad)}: refusing it")
    model.eval()
    if not with_history:
        return model
    history = json_field(payload, "history", path, default="null")
    try:
        history = History.from_dict(history) if history else None
    except (KeyError, TypeError, AttributeError) as err:
        raise ModelFileError(f"{path}: field 'history' is not a training history ({err!r})") from None
    return model, history, json_field(payload, "provenance", path, default="{}")


def json_field(payload: dict, field: str, path, default: str | None = None):
    """``payload[field]`` parsed as JSON; ``ModelFileError`` naming the file and the field otherwise."""
    text = payload.get(field, default)
    if text is None:
        raise ModelFileError(f"{path} has no field '{field}'")
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: field '{field}' is not valid JSON ({err})") from None
    if field in ("config", "provenance") and not isinstance(value, dict):
        raise ModelFileError(f"{path}: field '{field}' must be a JSON object, got {type(value).__name__}")
    return value


def cache_key(spec: dict) -> str:
    """A stable hash of everything that determines a trained model (experiment subset, model, training)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
