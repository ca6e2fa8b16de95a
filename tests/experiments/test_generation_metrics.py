"""Generation metrics in the quality classifier's feature space: Fréchet distance, k-NN precision and recall."""

import json

import numpy as np
import pytest
import torch

import rhvae
from rhvae.experiments.data import classifier_split, excluded_indices
from rhvae.experiments.quality import (
    HIDDEN,
    features,
    frechet_distance,
    generation_metrics,
    generation_score,
    held_out_digits,
    load_classifier,
    precision_recall,
    quality_score,
)

try:
    import scipy.linalg
except ImportError:  # pragma: no cover - scipy is optional
    scipy = None

# Bounds on the bundled digits (two disjoint random halves of 2,500, split seeds 0, 1, 2 measured):
# real-vs-real FID 1.05 / 1.14 / 1.30, precision 0.891 / 0.886 / 0.889, recall 0.888 / 0.884 / 0.885;
# uniform noise (2,500 images) vs a real half: FID ≈ 1150, precision 0.0, recall 0.0.
REAL_FID_BOUND = 3.0
REAL_PR_BOUND = 0.8
NOISE_FID_RATIO = 50.0  # measured ratio ≈ 1000
NOISE_PRECISION_BOUND = 0.01

N_GAUSS, D_GAUSS = 20_000, 4
MU_A = np.array([0.0, 1.0, -1.0, 2.0])
MU_B = np.array([0.5, 0.0, -1.0, 1.0])
# Over 300 independent draws (n = 20,000 each side) the sample FD minus its population value had mean +0.009 and
# sd 0.057 for the diagonal pair below, mean +0.004 and sd 0.092 for the non-diagonal pair (max |error| 0.18 and
# 0.31). The sd is mostly the mean term's, ≈ 2 √(Δμᵀ(Σa + Σb)Δμ / n); the bias (positive, O(d / n)) is far
# smaller. The tolerances are ≈ 5 of those sd.
TOL_DIAGONAL = 0.3
TOL_FULL = 0.46


@pytest.fixture(scope="module")
def clf():
    return load_classifier()


@pytest.fixture(scope="module")
def mnist():
    images, labels = rhvae.load_mnist()
    perm = np.random.default_rng(0).permutation(len(images))
    half = len(images) // 2
    return images, labels, perm[:half], perm[half:]


@pytest.fixture(scope="module")
def real_metrics(clf, mnist):
    images, _, a, b = mnist
    return generation_metrics(images[a], images[b], classifier=clf)


def _gaussian(generator, mean, cov, n=N_GAUSS):
    chol = torch.as_tensor(np.linalg.cholesky(cov))
    return torch.as_tensor(mean) + torch.randn(n, len(mean), generator=generator, dtype=torch.float64) @ chol.T


def _spd(seed):
    m = np.random.default_rng(seed).normal(size=(D_GAUSS, D_GAUSS))
    return m @ m.T + 0.5 * np.eye(D_GAUSS)


# --- features --------------------------------------------------------------------------------------------------


def test_features_are_the_hidden_relu_layer(clf, mnist):
    images = mnist[0][:200]
    feats = features(images, clf)
    assert feats.shape == (200, HIDDEN) and feats.dtype == torch.float64
    assert (feats >= 0).all() and (feats > 0).any()
    clf.net.eval()
    with torch.no_grad():
        reference = clf.net[:2](torch.as_tensor(images).float() / 255.0)
    torch.testing.assert_close(feats, reference.double(), rtol=1e-5, atol=1e-5)
    # uint8 0–255, float [0, 1] and (n, 28, 28) inputs give the same features; no dropout: repeatable
    torch.testing.assert_close(features(images.reshape(-1, 28, 28).astype(np.float32) / 255.0, clf), feats)
    assert torch.equal(features(images, clf), feats)


# --- Fréchet distance ------------------------------------------------------------------------------------------


def test_frechet_distance_of_a_set_to_itself_is_zero_and_symmetric(clf, mnist):
    images, _, a, b = mnist
    fa, fb = features(images[a], clf), features(images[b], clf)
    assert frechet_distance(fa, fa) == pytest.approx(0.0, abs=1e-8)
    x = torch.randn(3000, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(fa, fb) == pytest.approx(frechet_distance(fb, fa), rel=1e-7)
    assert frechet_distance(fa, fb) > 0.1


@pytest.mark.parametrize("d", [1, 5])
def test_frechet_distance_of_an_affine_copy_is_exact(d):
    """For y = s x + c (scalar s > 0) the sample statistics give FD = ‖(s − 1) μ̂ + c‖² + (s − 1)² tr Σ̂ exactly."""
    g = torch.Generator().manual_seed(d)
    x = torch.randn(500, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    s, c = 2.5, torch.linspace(-1.0, 2.0, d, dtype=torch.float64)
    y = s * x + c
    expected = float(((s - 1) * x.mean(0) + c).square().sum() + (s - 1) ** 2 * torch.trace(torch.atleast_2d(x.T.cov())))
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(x.numpy(), y.numpy()) == pytest.approx(expected, rel=1e-9)  # numpy arrays accepted


def test_frechet_distance_matches_the_gaussian_closed_form_diagonal():
    """Commuting (diagonal) covariances: FD = ‖μa − μb‖² + Σᵢ (√aᵢ − √bᵢ)²."""
    var_a, var_b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 1.0, 0.5, 2.0])
    population = ((MU_A - MU_B) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()  # 4.815
    g = torch.Generator().manual_seed(0)
    sample = frechet_distance(_gaussian(g, MU_A, np.diag(var_a)), _gaussian(g, MU_B, np.diag(var_b)))
    assert abs(sample - population) < TOL_DIAGONAL  # measured error +0.004 for this seed


@pytest.mark.skipif(scipy is None, reason="needs scipy.linalg.sqrtm for the independent closed form")
def test_frechet_distance_matches_the_gaussian_closed_form_full():
    """Non-diagonal covariances: the population FD by scipy's general (non-symmetric) sqrtm of Σa Σb."""
    cov_a, cov_b = _spd(123), _spd(456)
    assert np.abs(cov_a - np.diag(np.diag(cov_a))).max() > 1.0  # really non-diagonal
    population = ((MU_A - MU_B) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(scipy.linalg.sqrtm(cov_a @ cov_b)))
    g = torch.Generator().manual_seed(0)
    sample = frechet_distance(_gaussian(g, MU_A, cov_a), _gaussian(g, MU_B, cov_b))
    assert abs(sample - population) < TOL_FULL


def test_frechet_distance_has_a_small_positive_bias_for_equal_gaussians():
    """Two samples of one Gaussian: population FD 0, sample FD ≥ ‖μ̂a − μ̂b‖² > 0, of order tr Σ · d / n (measured
    over 300 draws: mean 0.0025, sd 0.0012, max 0.0093; 2 tr Σ / n = 0.0012 from the means alone)."""
    cov = _spd(123)
    g = torch.Generator().manual_seed(1)
    sample = frechet_distance(_gaussian(g, MU_A, cov), _gaussian(g, MU_A, cov))
    assert 0 < sample < 0.02


# --- precision and recall --------------------------------------------------------------------------------------


def test_precision_recall_by_hand():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])  # k = 1: every real radius is 1
    out = precision_recall(real, torch.tensor([[0.5], [10.0]]), k=1)  # generated radii 9.5: covers all of real
    assert out == {"precision": 0.5, "recall": 1.0, "k": 1, "n_real": 4, "n_generated": 2}
    out = precision_recall(real, torch.tensor([[0.5], [1.5]]), k=1)  # generated radii 1: 3 is 1.5 away
    assert (out["precision"], out["recall"]) == (1.0, 0.75)
    # k = 2 on real: radii 2, 1, 1, 2 → 10 and 5.5 are outside, 5.0 is on the boundary of 3's ball (inside: ≤)
    out = precision_recall(real, torch.tensor([[10.0], [5.5], [5.0]]), k=2)
    assert out["precision"] == pytest.approx(1 / 3)


def test_precision_recall_of_a_set_against_itself_is_one(clf, mnist):
    feats = features(mnist[0][mnist[2]], clf)
    out = precision_recall(feats, feats, k=3)
    assert out["precision"] == 1.0 and out["recall"] == 1.0
    dup = torch.cat([feats[:100], feats[:100]])  # duplicated points: radius 0 still holds its own point
    assert precision_recall(dup, dup, k=1)["precision"] == 1.0


# --- on real digits --------------------------------------------------------------------------------------------


def test_two_halves_of_real_digits_are_close(real_metrics, mnist):
    m = real_metrics
    assert m["fid_classifier"] < REAL_FID_BOUND  # measured 1.05
    assert m["precision"] >= REAL_PR_BOUND and m["recall"] >= REAL_PR_BOUND  # measured 0.891, 0.888
    assert (m["k"], m["n_real"], m["n_generated"]) == (3, len(mnist[3]), len(mnist[2]))
    assert m["feature_layer"] == "quality classifier hidden ReLU (256)"
    assert json.loads(json.dumps(m)) == m
    assert all(type(m[key]) is float for key in ("fid_classifier", "precision", "recall"))
    assert all(type(m[key]) is int for key in ("k", "n_real", "n_generated"))


def test_uniform_noise_is_far_from_real_digits(clf, mnist, real_metrics):
    images, _, _, b = mnist
    noise = torch.rand(len(b), 784, generator=torch.Generator().manual_seed(0))
    m = generation_metrics(noise, images[b], classifier=clf)
    assert m["fid_classifier"] > NOISE_FID_RATIO * real_metrics["fid_classifier"]  # measured ≈ 1150 vs 1.05
    assert m["precision"] <= NOISE_PRECISION_BOUND  # measured 0.0


def test_a_single_digit_class_is_precise_but_has_low_recall(clf, mnist, real_metrics):
    """Only zeros: each looks real (high precision) but they cover a tenth of the real digits (low recall).
    Measured (265 zeros of one half vs the other half): precision 0.917, recall 0.114, FID 142.8."""
    images, labels, a, b = mnist
    zeros = a[labels[a] == 0]
    m = generation_metrics(images[zeros], images[b], classifier=clf)
    assert m["precision"] > 0.8
    assert m["recall"] < 0.4
    assert m["fid_classifier"] > 20 * real_metrics["fid_classifier"]


# --- refusals --------------------------------------------------------------------------------------------------


def test_refusals_name_the_parameter(clf, mnist):
    x = torch.randn(10, 4, dtype=torch.float64)
    for k in (0, -1, 10, 11, 2.5, True):
        with pytest.raises(ValueError, match="k must"):
            precision_recall(x, x, k=k)
    with pytest.raises(ValueError, match="k must be smaller"):
        precision_recall(x, x[:3], k=3)  # k ≥ n_generated
    with pytest.raises(ValueError, match="real_features and generated_features"):
        precision_recall(x, x[:, :3])
    with pytest.raises(ValueError, match="features_a needs at least 2 rows"):
        frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match="features_b needs at least 2 rows"):
        frechet_distance(x, x[:1])
    with pytest.raises(ValueError, match="features_a and features_b"):
        frechet_distance(x, x[:, :3])
    with pytest.raises(ValueError, match="features_a must be a 2-D"):
        frechet_distance(x[0], x)
    images = mnist[0]
    with pytest.raises(ValueError, match="generated_images needs at least 2"):
        generation_metrics(images[:1], images[:10], classifier=clf)
    with pytest.raises(ValueError, match="real_images needs at least 2"):
        generation_metrics(images[:10], images[:1], classifier=clf)
    with pytest.raises(ValueError, match="k must"):
        generation_metrics(images[:10], images[10:20], classifier=clf, k=10)
    with pytest.raises(TypeError, match="classifier must be a QualityClassifier"):
        quality_score(images[:10], classifier="classifier")
    with pytest.raises(TypeError, match="images must be a tensor or an array of numbers, got NoneType"):
        generation_score(None)
    with pytest.raises(ValueError, match="images needs at least 2 images, got 0"):
        generation_score(torch.empty(0, 784), classifier=clf)


def test_held_out_digits_are_the_classifiers_held_out_split_of_the_classes():
    images, labels = rhvae.load_mnist()
    train, test = classifier_split()
    expected = test[np.isin(labels[test], (5, 7))]
    x = held_out_digits((5, 7))
    np.testing.assert_array_equal(x.numpy(), images[expected].astype(np.float32) / 255.0)
    assert len(expected) > 100 and not np.intersect1d(expected, train).size
    assert not np.intersect1d(expected, excluded_indices()).size  # in no experiment's subset
    assert len(held_out_digits()) == len(test)


def test_generation_score_adds_the_distribution_metrics_to_the_quality_score(clf):
    real = held_out_digits((5,))
    score = generation_score(real, (5,), clf)  # the reference set against itself
    assert score["fid_classifier"] == pytest.approx(0.0, abs=1e-6)
    assert score["precision"] == score["recall"] == 1.0 and score["n_real"] == len(real)
    assert score["in_class_fraction"] > 0.8  # the quality score is there too (0.889 for held-out fives)
    noise = torch.rand(200, 784, generator=torch.Generator().manual_seed(0))
    far = generation_score(noise, (5,), clf)
    assert far["fid_classifier"] > NOISE_FID_RATIO * REAL_FID_BOUND and far["precision"] < NOISE_PRECISION_BOUND
