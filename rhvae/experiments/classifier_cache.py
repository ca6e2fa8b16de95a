"""The augmentation experiment's trained classifiers, cached and shipped like the generative models, so that the
default run evaluates them instead of retraining 72 classifiers (``run_all.sh --train`` retrains them).

A classifier is identified by its ``spec``: the classifier kind, the arm, the training-set size and seed, the
data, the training settings, and what its extra images were made from (the file names of the per-class
generative models, whose names hash their own training specs, with the sampler's settings). The file
``augmentation/classifiers/KIND_KEY.pt`` (``KEY`` hashes the spec) is a ``torch.save`` of a plain dict: format
tag, the spec and the training record as JSON, and the state dict. It is written atomically, read with
``weights_only=True``, checked against ``data/models/SHA256SUMS`` when shipped, and used only when its spec is
the requested one. ``tools/publish_run.py`` ships the files a run used, with half-precision weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from rhvae.files import atomic_write
from rhvae.paths import SHIPPED_DIR
from rhvae.persistence import ModelFileError, cache_key, verify_shipped

FORMAT = "rhvae-augmentation-classifier"
FORMAT_VERSION = 1
FOLDER = "augmentation/classifiers"


def classifier_name(spec: dict) -> str:
    """The file name of the classifier of ``spec``, relative to the model cache or ``data/models``."""
    return f"{FOLDER}/{spec['kind']}_{cache_key(spec)}.pt"


def save_classifier(path: str | Path, net: nn.Module, spec: dict, record: dict) -> Path:
    """Write ``net``'s weights with its ``spec`` and training ``record`` (JSON-ready) atomically to ``path``."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": json.dumps(spec, sort_keys=True),
        "record": json.dumps(record),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_classifier(path: str | Path, spec: dict) -> dict | None:
    """The payload at ``path`` when it is a classifier file of exactly ``spec`` (a shipped file must match its
    checksum, or ``ModelFileError``); None when it is missing, unreadable, foreign or of another spec (the caller
    trains instead)."""
    path = Path(path)
    if not path.is_file():
        return None
    verify_shipped(path)  # a tampered shipped classifier raises: it is never silently replaced
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable cache file is retrained, like a stale one
        return None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != FORMAT
        or payload.get("format_version") != FORMAT_VERSION
    ):
        return None
    if payload.get("spec") != json.dumps(spec, sort_keys=True):
        return None
    return payload


def cached_classifier(spec: dict, make, cache_dir: Path) -> tuple[nn.Module, dict, Path] | None:
    """The classifier of ``spec`` from the cache (first) or the shipped models: ``(net in eval mode and float32,
    its training record, its path)``, or None. ``make()`` builds the untrained network of the spec's kind."""
    name = classifier_name(spec)
    for path in (Path(cache_dir) / name, SHIPPED_DIR / name):
        payload = read_classifier(path, spec)
        if payload is None:
            continue
        net = make()
        try:
            net.load_state_dict(payload["state_dict"])  # float16 weights load into the float32 network
        except (RuntimeError, KeyError) as err:
            if SHIPPED_DIR.resolve() in path.resolve().parents:
                raise ModelFileError(f"{path} does not fit a {spec['kind']} classifier: {err}") from err
            continue
        return net.eval(), json.loads(payload["record"]), path
    return None
