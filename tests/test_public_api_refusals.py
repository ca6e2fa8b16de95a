"""Careless arguments to every public function (tests/careless_calls.py) are refused with a TypeError or ValueError,
never an AttributeError, a RuntimeError or an allocation from deep inside torch; run in a subprocess whose address
space is limited to 8 GiB, so that a size with no upper bound fails the test instead of exhausting the machine."""

import json
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch

import rhvae
from rhvae.experiments import augmentation, clustering, data, interpolation, model_cache, quality, tables
from rhvae.models.metric import LearnedMetric
from rhvae.paths import ROOT
from rhvae.training import train_group

DIGITS = (data.images_at(range(6)).x, data.images_at(range(6)).y)
METRIC = LearnedMetric(torch.randn(3, 2), torch.eye(2).expand(3, 2, 2), temperature=0.8, regularization=0.1)

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
        "interpolation.interpolations_over_seeds", "clustering.clustering_over_seeds",
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
        # issue 35's unclear cases, one line each (their own tests sit beside each module's)
        (lambda: interpolation.pair_indices(np.zeros(200_000, dtype=np.int64), 1, True), ValueError, "at most 10000"),
        (lambda: rhvae.riemannian_hmc(METRIC, n_samples=2, mcmc_steps=1, eps=1e300), ValueError, "eps must be > 0"),
        (lambda: train_group([], []), ValueError, "models must hold at least one model"),
        (lambda: rhvae.load_model("/dev/null"), ValueError, "not a regular file"),
        (lambda: rhvae.RHVAE(hidden_dim=8)(torch.empty(0, 784)), ValueError, "x must hold at least one image"),
        (
            lambda: rhvae.train(rhvae.VAE(hidden_dim=8), DIGITS[0], epochs=1, warmup_epochs=2, progress=False),
            ValueError,
            "warmup_epochs must be <= epochs",
        ),
        # issue 35: the quality metrics scored 0-255 pixels (confidence 1.0, an FID of 1.5e7) and negative ones
        (
            lambda: quality.quality_score(DIGITS[0] * 255, [5]),
            ValueError,
            "images must hold pixel values in [0, 1], got pixels in [0, 255]; they look like 0-255 pixels",
        ),
        (
            lambda: quality.generation_metrics(DIGITS[0] * 255, DIGITS[0]),
            ValueError,
            "generated_images must hold pixel values in [0, 1], got pixels in [0, 255]; they look like 0-255 pixels",
        ),
        (lambda: quality.generation_metrics(DIGITS[0], -DIGITS[0]), ValueError, "real_images must hold pixel values"),
        (
            lambda: augmentation.train_classifier("mlp", *DIGITS, DIGITS[0] * 255, DIGITS[1], 1),
            ValueError,
            "x_val must hold pixel values in [0, 1], got pixels in [0, 255]",
        ),
    ],
)
def test_the_refusal_names_the_argument_and_its_range(call, error, words):
    with pytest.raises(error) as caught:
        call()
    assert words in str(caught.value) and "\n" not in str(caught.value)
