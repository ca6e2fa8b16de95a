"""Careless arguments to every public function (tests/careless_calls.py) are refused with a TypeError or ValueError,
never an AttributeError, a RuntimeError or an allocation from deep inside torch; run in a subprocess whose address
space is limited to 8 GiB, so that a size with no upper bound fails the test instead of exhausting the machine."""

import json
import resource
import subprocess
import sys

import pytest
import torch

import rhvae
from rhvae.experiments import augmentation, clustering, data, model_cache, tables
from rhvae.paths import ROOT

DIGITS = (data.images_at(range(6)).x, data.images_at(range(6)).y)

MEMORY_LIMIT = 8 * 2**30


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_every_public_function_refuses_careless_arguments_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "careless_calls.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,  # a careless but valid relative path ("x") is written here
        preexec_fn=limit_memory,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    canary = [f for f in report["failures"] if f[0] == "canary"]
    assert canary, "the canary (x.shape on a careless x) was not caught: the script detects nothing"
    failures = [f for f in report["failures"] if f[0] != "canary"]
    assert not failures, "\n".join(" / ".join(map(str, f)) for f in failures)
    assert report["calls"] > 2500  # every argument of about 80 functions, 10 careless values each
    for name in (
        "train", "save_model", "load_model", "riemannian_hmc", "exact_log_likelihood", "quality.features",
        "model_cache.train_experiment_model", "model_cache.train_experiment_models",
        "augmentation.classic_augmentation", "augmentation.generated_images", "augmentation.train_classifier",
        "data.draw_subset", "tables.evaluate_model",
        "latent_paths.interpolations_over_seeds", "clustering.clustering_over_seeds",
    ):  # fmt: skip
        assert name not in report["skipped"], name


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: data.images_at([0, 10**12]), ValueError, "indices must be image indices in [0, 4999]"),
        (lambda: data.draw_subset(torch.tensor([[1, 2]]), 5), ValueError, "classes must be digits in 0..9"),
        (lambda: augmentation.classic_augmentation(*DIGITS, 10**12), ValueError, "n_per_class must be an integer"),
        (lambda: augmentation.classic_augmentation(DIGITS[0], DIGITS[0], 2), ValueError, "y must be integer labels"),
        (lambda: augmentation.gains([0.5]), TypeError, "accuracies must be a dict of arm -> accuracy"),
        (lambda: model_cache.build_model(7), ValueError, "model must be one of ('vae', 'hvae', 'rhvae'), got 7"),
        (lambda: tables.evaluate_model(rhvae.VAE(), "metric"), TypeError, "data must be an ExperimentData"),
        (lambda: clustering.clustering_over_seeds({"metric": {0: {}}}, {}), ValueError, "data has no subset 'metric'"),
        (
            lambda: model_cache.train_experiment_model("metric", "vae", 1, cache_dir=torch.zeros(2)),
            TypeError,
            "cache_dir must be a path",
        ),
    ],
)
def test_the_refusal_names_the_argument_and_its_range(call, error, words):
    with pytest.raises(error) as caught:
        call()
    assert words in str(caught.value) and "\n" not in str(caught.value)
