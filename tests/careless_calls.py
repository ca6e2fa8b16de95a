"""Call the public functions of the package with careless arguments, one argument at a time, and write to
FOLDER/report.json (``python tests/careless_calls.py FOLDER``) every call that failed with something other than a
``TypeError`` or ``ValueError``: an ``AttributeError``, a ``RuntimeError`` or an allocation failure from deep inside
torch. Run by tests/test_public_api_refusals.py in a subprocess with a memory limit (an unbounded size fails there,
instead of taking the machine's memory).

Covered: every function and class of ``rhvae.__all__`` and the public functions of the ``rhvae.experiments`` modules
a researcher reuses: ``quality``, ``interpolation``, ``clustering``, ``data``, ``model_cache``, ``augmentation`` and
``tables``. A call that does not return within ``SECONDS_PER_CALL`` (a size with no upper bound on time) is reported
too. The other arguments of a call take good
values (a real RHVAE and VAE trained on real digits, their codes, the shipped quality classifier); a function that
needs an argument with no good value here is listed as skipped. Files are written in FOLDER only. ``canary`` is a
function that fails the way this script looks for: it must be reported, or the script finds nothing.
"""

from __future__ import annotations

import inspect
import json
import math
import signal
import sys
import warnings
from pathlib import Path

import torch

import rhvae
from rhvae.experiments import augmentation, clustering, data, interpolation, model_cache, quality, tables
from rhvae.training import TrainingSettings

CARELESS = {
    "None": None,
    "a string": "x",
    "-1": -1,
    "nan": math.nan,
    "1e12": 10**12,
    "an empty tensor": torch.empty(0, 784),
    "a (3, 5) tensor": torch.rand(3, 5),
    "a list": [1, 2],
    "True": True,
    "an integer (2, 2, 2) tensor": torch.zeros(2, 2, 2, dtype=torch.long),
}


SECONDS_PER_CALL = 60  # a size with no upper bound shows as a call that does not return


class TookTooLong(Exception):
    pass


def stop_the_call(signum, frame):
    raise TookTooLong(f"no answer within {SECONDS_PER_CALL} s")


def canary(x):
    return x.shape[1]


def good_values(folder: Path) -> tuple[dict, dict]:
    """Good values by argument name, and per function the ones that differ (a model file's path)."""
    torch.manual_seed(0)
    subset = rhvae.experiment_data("metric", n_per_class=5)
    settings = TrainingSettings(epochs=1, progress=False)
    model, vae = rhvae.RHVAE(hidden_dim=16, n_lf=2), rhvae.VAE(hidden_dim=16)
    for m in (model, vae):
        rhvae.train(m, subset.train.x, settings=settings)
    saved = rhvae.save_model(model, folder / "saved.pt")
    codes = model.encode(subset.train.x)[0].detach()
    classifier = quality.load_classifier()
    images, labels = subset.test.x, subset.test.y
    good = {
        "model": model, "model_or_metric": model, "models": {"VAE": vae, "RHVAE": model}, "classifier": classifier,
        "settings": settings,
        "x": images[:4], "x_train": subset.train.x, "x_test": images, "y": labels[:4], "y_test": labels,
        "images": images, "generated_images": images, "real_images": subset.train.x, "x_a": images[0], "x_b": images[1],
        "real_features": torch.rand(10, 4), "generated_features": torch.rand(10, 4),
        "features_a": torch.rand(10, 4), "features_b": torch.rand(10, 4),
        "metric": model.metric(), "rhvae_metric": model.metric(), "codes": codes, "train_codes": codes,
        "train_codes_by_name": {"VAE": vae.encode(subset.train.x)[0].detach(), "RHVAE": codes},
        "path": torch.rand(5, 2), "z0": codes[0], "z1": codes[1], "z": codes[:3], "n": 5, "k": 2, "n_pairs": 1,
        "n_points": 5, "same_class": True, "labels": subset.train.y, "labels_a": subset.train.y,
        "labels_b": subset.train.y, "predicted": subset.train.y, "truth": subset.train.y,
        "partitions": [subset.train.y, subset.train.y], "distance": clustering.euclidean_distance_matrix(codes),
        "n_samples": 4, "mcmc_steps": 2, "experiment": "metric", "seed": 0,
        "data": subset, "classes": (1, 2, 3), "n_per_class": 3, "indices": [0, 1, 2], "sizes": [5], "kind": "mlp",
        "sampler": "hmc", "x_val": images, "y_val": labels, "steps": 2, "epochs": 1, "ll_samples": 10,
        "name": "RHVAE", "accuracies": {"real": 0.5, "rhvae_hmc": 0.6},
    }  # fmt: skip
    per_function = {  # files are written in the test's folder only, never over the repository's
        "save_model": {"path": folder / "written.pt"},
        "load_model": {"path": saved},
        "quality.load_classifier": {"path": folder / "classifier.pt"},
        "model_cache.train_experiment_model": {"model": "RHVAE", "cache_dir": folder / "cache", "progress": False},
        "model_cache.build_model": {"name": "RHVAE"},
        "model_cache.train_experiment_models": {
            "model": "RHVAE",
            "requests": [(0, subset)],
            "cache_dir": folder / "cache",
            "progress": False,
        },
        "augmentation.generated_images": {"models": {1: model}},
        "tables.class_shares": {"models": {0: {"RHVAE": model}}},
        "tables.evaluate_model": {"ll_samples": 10, "n_samples": 4, "mcmc_steps": 2},
        "interpolation.interpolations_over_seeds": {
            "models": {"metric": {0: {"RHVAE": model}}},
            "data": {"metric": subset},
            "n_pairs": 1,
            "n_points": 5,
        },
        "clustering.clustering_over_seeds": {"models": {"metric": {0: {"RHVAE": model}}}, "data": {"metric": subset}},
    }
    return good, per_function


def targets() -> dict:
    found = {name: getattr(rhvae, name) for name in rhvae.__all__ if callable(getattr(rhvae, name))}
    found = {n: f for n, f in found.items() if not (isinstance(f, type) and issubclass(f, BaseException))}
    for module in (quality, interpolation, clustering, data, model_cache, augmentation, tables):
        for name in getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]:
            function = getattr(module, name)
            if inspect.isfunction(function) and function.__module__ == module.__name__:
                found[f"{module.__name__.rsplit('.', 1)[-1]}.{name}"] = function
    found["canary"] = canary
    return found


def main() -> None:
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, stop_the_call)
    good, per_function = good_values(Path(sys.argv[1]))
    failures, skipped, calls = [], [], 0
    for name, function in targets().items():
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            continue
        parameters = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        values = {**good, **per_function.get(name, {})}
        required = [p.name for p in parameters if p.default is inspect.Parameter.empty]
        if any(p not in values for p in required):
            skipped.append(name)
            continue
        for tried in parameters:
            for label, careless in CARELESS.items():
                kwargs = {p: values[p] for p in required} | per_function.get(name, {})
                if "settings" in signature.parameters:  # one epoch, no progress bar
                    kwargs["settings"] = good["settings"]
                kwargs[tried.name] = careless
                calls += 1
                signal.alarm(SECONDS_PER_CALL)
                try:
                    function(**kwargs)
                except (TypeError, ValueError):
                    pass
                except Exception as err:  # what this script looks for
                    failures.append([name, tried.name, label, type(err).__name__, str(err)[:160]])
                finally:
                    signal.alarm(0)
    report = {"failures": failures, "skipped": skipped, "calls": calls}
    (Path(sys.argv[1]) / "report.json").write_text(json.dumps(report))  # stdout holds what the calls print


if __name__ == "__main__":
    main()
