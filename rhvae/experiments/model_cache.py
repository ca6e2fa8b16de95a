"""Train (or reuse) the model of one experiment: data subset + model + training + cache, in one call.

The cache lives in ``data/cache/EXPERIMENT/MODEL_KEY.pt``; ``KEY`` hashes everything that determines the
trained weights: the subset (experiment, classes, images per class, data seed, source), the model type and
config, and the training settings (epochs, lr, batch size, seed, thread count). A cached file is reused only
when it loads cleanly and its stored spec equals the requested one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from rhvae.experiments.data import ExperimentData, check_data, experiment_data
from rhvae.files import as_path, writable_folder
from rhvae.history import History
from rhvae.models import MODELS, VAE
from rhvae.paths import CACHE_DIR, SHIPPED_DIR
from rhvae.persistence import (
    ModelFileError,
    cache_key,
    json_field,
    load_model,
    read_model_file,
    save_model,
)
from rhvae.provenance import environment
from rhvae.training import TrainingDiverged, TrainingSettings, train_group
from rhvae.validation import check, check_bool, check_device


@dataclass
class TrainedModel:
    model: VAE
    history: History
    data: ExperimentData
    path: Path | None
    reused: bool
    provenance: dict


def build_model(name: str, seed: int = 0, **config) -> VAE:
    """Construct ``MODELS[name]`` (vae, hvae, rhvae) with its weights initialised from ``seed``."""
    key = name.lower() if isinstance(name, str) else None
    if key not in MODELS:
        raise ValueError(f"model must be one of {tuple(MODELS)}, got {name!r}")
    with torch.random.fork_rng(devices=[]):  # the caller's global random state is left as it was
        torch.manual_seed(seed)
        return MODELS[key](**config)


def model_spec(
    data: ExperimentData, name: str, *, config: dict, epochs: int, lr: float, batch_size, seed: int, threads: int
) -> dict:
    return {
        "subset": {k: v for k, v in data.provenance().items() if not k.endswith("_indices")},
        "model": name.lower(),
        "config": config,
        "training": {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "threads": threads},
    }


def model_request(
    data: ExperimentData,
    model: str,
    *,
    epochs: int,
    seed: int,
    lr: float,
    batch_size,
    threads: int,
    device: torch.device | str = "cpu",
    **config,
) -> tuple[VAE, dict, str]:
    """What identifies a trained model: the untrained network (its weights drawn from ``seed``), the spec (subset,
    model, normalised config, training settings) and the file name ``EXPERIMENT/MODEL_KEY.pt`` under which the
    trained result is cached (``data/cache``) or shipped (``data/models``)."""
    net = build_model(model, seed=seed, **config)
    spec = model_spec(
        data, model, config=net.config(), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, threads=threads
    )
    if torch.device(device).type != "cpu":  # CPU-trained models keep the cache keys they always had
        spec["training"]["device"] = str(device)
    return net, spec, f"{data.experiment}/{model.lower()}_{cache_key(spec)}.pt"


def train_experiment_model(
    experiment: str,
    model: str,
    epochs: int,
    seed: int = 0,
    lr: float = TrainingSettings.lr,
    batch_size: int | None = None,
    threads: int | None = None,
    data: ExperimentData | None = None,
    data_seed: int = 0,
    source: str = "bundled",
    classes=None,
    n_per_class: int | None = None,
    use_cache: bool = True,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    device: str = "cpu",
    **config,
) -> TrainedModel:
    """Train ``model`` on the subset of ``experiment``, or, with ``use_cache``, reuse a model trained with exactly
    the same request: first from ``cache_dir`` (default ``data/cache``), then from the shipped models
    (``data/models``, committed with the project). A trained model is saved in ``cache_dir``.

    ``config`` holds the model's keyword arguments (n_lf, eps_lf, beta_zero, temperature, regularization, …).
    ``threads``: torch threads for the training (None: the process's count; part of the cache key: CPU results depend on
    it). ``device``: where the model trains ('cpu', or 'cuda' where torch sees a GPU; part of the cache key when not
    'cpu'); the trained model is returned on the CPU, like a cached one. Raises ``TrainingDiverged`` when training
    diverges. Several seeds or subsets at once: ``train_experiment_models``.
    """
    if data is None:
        data = experiment_data(experiment, classes, n_per_class, seed=check("data_seed", data_seed), source=source)
    check_data(data)
    (result,) = train_experiment_models(
        experiment,
        model,
        [(seed, data)],
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        threads=threads,
        use_cache=use_cache,
        cache_dir=cache_dir,
        progress=progress,
        device=device,
        **config,
    )
    if isinstance(result, TrainingDiverged):
        raise result
    return result


def train_experiment_models(
    experiment: str,
    model: str,
    requests: Sequence[tuple[int, ExperimentData]],
    epochs: int,
    lr: float = TrainingSettings.lr,
    batch_size: int | None = None,
    threads: int | None = None,
    use_cache: bool = True,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    device: str = "cpu",
    save: bool | None = None,
    **config,
) -> list[TrainedModel | TrainingDiverged]:
    """``train_experiment_model`` for several (seed, subset) ``requests`` of one model kind and config (the seeds of
    an experiment, the classes of the augmentation experiment): each is reused from the cache or the shipped models
    when it can be, and the others are trained side by side as stacks (``rhvae.training.train_group``; one stack
    per training-set size), each member matching a separate run to rounding. One result per request, in order: a
    ``TrainedModel``, or the ``TrainingDiverged`` of a model whose training diverged (the others are kept).

    ``save`` (default: ``use_cache``) writes every trained model to ``cache_dir``, replacing a cached one: a run
    that retrains everything (``use_cache=False, save=True``, i.e. ``run_all.sh --train``) leaves its models there
    for ``tools/publish_run.py``."""
    # NumPy numbers become Python numbers here: they go into the cache key and the saved provenance (JSON)
    epochs, lr = check("epochs", epochs), check("lr", lr)
    batch_size = None if batch_size is None else check("batch_size", batch_size)
    threads = torch.get_num_threads() if threads is None else check("threads", threads)  # pinned by train_group
    device = check_device(device)
    use_cache = check_bool("use_cache", use_cache)
    save = use_cache if save is None else check_bool("save", save)
    folder = CACHE_DIR if cache_dir is None else as_path(cache_dir, "cache_dir")
    if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
        raise TypeError(f"requests must be a list of (seed, ExperimentData), got {type(requests).__name__}")
    for k, request in enumerate(requests):
        if not isinstance(request, tuple) or len(request) != 2:
            raise TypeError(f"requests[{k}] must be a (seed, ExperimentData) pair, got {request!r:.80}")
        check_data(request[1], f"requests[{k}]'s data")
    requested = [
        (
            data,
            *model_request(
                data,
                model,
                epochs=epochs,
                seed=check("seed", seed),
                lr=lr,
                batch_size=batch_size,
                threads=threads,
                device=device,
                **config,
            ),
        )
        for seed, data in requests
    ]
    if save:  # before training: a model that cannot be saved at the end would be lost
        for *_, name in requested:
            writable_folder((folder / name).parent, "cache_dir")
    results: list = [None] * len(requested)
    for i, (data, _, spec, name) in enumerate(requested):
        if use_cache:
            for candidate, shipped in ((folder / name, False), (SHIPPED_DIR / name, True)):
                results[i] = results[i] or _reuse(candidate, model, spec, data, shipped)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (data, *_) in enumerate(requested):
        if results[i] is None:
            by_size.setdefault((len(data.train), len(data.test)), []).append(i)
    for group in by_size.values():
        start = time.perf_counter()
        histories = train_group(
            [requested[i][1].to(device) for i in group],
            [requested[i][0].train.x for i in group],
            [requested[i][0].test.x for i in group],
            seeds=[requested[i][2]["training"]["seed"] for i in group],
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            threads=threads,
            progress=progress,
            desc=f"{experiment}/{model}" + (f" x{len(group)}" if len(group) > 1 else ""),
        )
        seconds = (time.perf_counter() - start) / len(group)
        for i, history in zip(group, histories, strict=True):
            data, net, spec, name = requested[i]
            net.cpu()
            if isinstance(history, TrainingDiverged):
                results[i] = history
                continue
            provenance = {
                "spec": spec,
                "subset": data.provenance(),
                "environment": environment(),
                "train_seconds": seconds,
                "trained_side_by_side": len(group),  # a stack of that many models (train_seconds: its time / that)
            }
            if save:
                save_model(net, folder / name, history, provenance)
            results[i] = TrainedModel(net, history, data, folder / name if save else None, False, provenance)
    return results


def _reuse(path: Path, model: str, spec: dict, data: ExperimentData, shipped: bool) -> TrainedModel | None:
    """The model saved at ``path`` if it was trained with exactly ``spec``, else None. Missing, unreadable,
    foreign or stale cache files are ignored (the caller trains instead); a shipped model (``shipped``) that
    fails its checksum or does not load raises ``ModelFileError``: it is never silently replaced."""
    if not path.is_file():
        return None
    try:
        if json_field(read_model_file(path), "provenance", path).get("spec") != spec:
            return None
        cached, history, provenance = load_model(path, expected_type=model, with_history=True)
    except ModelFileError:
        if shipped:
            raise
        return None
    return TrainedModel(cached, history, data, path, True, provenance)


#: The default keyword arguments of each model, read from the class signatures (``VAE.defaults``: the one place
#: they are written), for every notebook, ``run_all.sh`` and the CLI; the settings of each experiment are in
#: ``rhvae.experiments.registry``. Training the RHVAE at the seed's eps_lf = 0.1 relies on the stability-bounded
#: step (``step_bound="stability"``, docs/stability.md): with the plain step it diverges in the first epoch.
MODEL_CONFIGS = MappingProxyType({name: MappingProxyType(cls.defaults()) for name, cls in MODELS.items()})
RHVAE_CONFIG = MODEL_CONFIGS["rhvae"]
HVAE_CONFIG = MODEL_CONFIGS["hvae"]


def data_of(provenance: dict) -> ExperimentData:
    """Redraw the experiment subset a saved model was trained on, from its recorded provenance, and check that
    the images are the recorded ones."""
    subset = provenance.get("subset")
    if not subset:
        raise ValueError("the model file records no data subset: name its experiment (CLI: eval --experiment NAME)")
    data = experiment_data(
        subset["experiment"], subset["classes"], subset["n_per_class"], seed=subset["seed"], source=subset["source"]
    )
    if data.train.indices.tolist() != subset["train_indices"] or data.test.indices.tolist() != subset["test_indices"]:
        raise ValueError("the recorded subset indices do not match the images drawn now (different MNIST source?)")
    return data
