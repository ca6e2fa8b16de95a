"""Numerical checks of the latent geometry: magnitude, orientation, path lengths and geodesics."""

import math

import pytest
import torch

from rhvae.evaluation.geometry import (
    ellipse_parameters,
    geodesic,
    latent_bounds,
    latent_grid,
    metric_magnitude,
    metric_orientation,
    path_energy,
    path_length,
    straight_line,
)
from rhvae.models.metric import LearnedMetric


def random_metric(n=15, d=2, seed=0, temperature=0.8, regularization=0.1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centroids = 2.0 * torch.randn(n, d, generator=g, dtype=dtype)
    L = torch.randn(n, d, d, generator=g, dtype=dtype).tril()
    return LearnedMetric(centroids, L @ L.transpose(1, 2), temperature, regularization)


def flat_metric(regularization=0.1, d=2):
    return LearnedMetric(torch.zeros(3, d), torch.zeros(3, d, d), 1.0, regularization)


def bump_metric(centre=(0.0, 0.8), strength=50.0, temperature=1.0, regularization=0.1):
    """One centroid with a large isotropic M: G⁻¹ is large (G small, moves cheap) near ``centre``."""
    return LearnedMetric(
        torch.tensor([centre], dtype=torch.float64),
        strength * torch.eye(2, dtype=torch.float64)[None],
        temperature,
        regularization,
    )


# ------------------------------------------------------------------------------------------------ grids
def test_latent_grid_covers_codes_with_margin():
    codes = torch.tensor([[-1.0, 0.0], [3.0, 2.0], [0.5, -1.0]])
    grid = latent_grid(codes, n=50, margin=0.25)
    assert grid.points.shape == (2500, 2) and grid.shape == (50, 50)
    x0, x1, y0, y1 = grid.extent
    assert x0 == pytest.approx(-1.0 - 0.25 * 4) and x1 == pytest.approx(3.0 + 0.25 * 4)
    assert y0 == pytest.approx(-1.0 - 0.25 * 3) and y1 == pytest.approx(2.0 + 0.25 * 3)
    # row-major (y, x): reshaping a per-point value gives an image with rows = y
    image = grid.reshape(grid.points[:, 1])
    assert torch.allclose(image[:, 0], grid.ys) and torch.allclose(image[0, :], torch.full((50,), grid.ys[0]))
    # a single code still gets a box of at least min_span
    box = latent_bounds(torch.tensor([[1.0, 1.0]]), margin=0.0, min_span=2.0)
    assert torch.allclose(box, torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
    with pytest.raises(ValueError):
        latent_grid(torch.zeros(4, 3))


# ------------------------------------------------------------------------------------ magnitude, orientation
def test_metric_magnitude_is_half_logdet_computed_independently():
    metric = random_metric()
    grid = latent_grid(metric.centroids, n=40)
    values = metric_magnitude(metric, grid)
    assert values.shape == (40, 40)
    # independent: explicit sum over centroids, then LAPACK logdet
    z = grid.points
    w = torch.exp(-((z[:, None, :] - metric.centroids[None]) ** 2).sum(-1) / metric.temperature**2)
    G_inv = torch.einsum("bn,nij->bij", w, metric.M) + metric.regularization * torch.eye(2, dtype=z.dtype)
    expected = 0.5 * torch.logdet(G_inv)
    assert torch.allclose(values.reshape(-1), expected, atol=1e-10)
    # far from the data it tends to (d/2) log λ
    far = metric_magnitude(metric, torch.tensor([[100.0, 100.0]], dtype=torch.float64))
    assert far.item() == pytest.approx(math.log(0.1), abs=1e-12)
    # small chunks give the same values (batched evaluation)
    assert torch.allclose(metric_magnitude(metric, grid.points, chunk=7), values.reshape(-1), atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_orientation_reconstructs_G_inv(d):
    metric = random_metric(d=d, seed=d)
    points = torch.randn(50, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    eigenvalues, eigenvectors = metric_orientation(metric, points)
    assert eigenvalues.shape == (50, d) and eigenvectors.shape == (50, d, d)
    rebuilt = eigenvectors @ torch.diag_embed(eigenvalues) @ eigenvectors.transpose(1, 2)
    assert torch.allclose(rebuilt, metric.G_inv(points), atol=1e-10)
    assert (eigenvalues >= metric.regularization - 1e-12).all()
    assert (eigenvalues[:, 1:] >= eigenvalues[:, :-1]).all()


def test_ellipse_parameters_follow_the_major_eigenvector():
    # G⁻¹ = diag(4, 1) rotated by 30°: major semi-axis 2·scale at 30°, minor 1·scale
    angle = math.radians(30.0)
    R = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    A = R @ torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64)) @ R.T
    e, V = torch.linalg.eigh(A[None])
    width, height, deg = ellipse_parameters(e, V, scale=0.5)
    assert width.item() == pytest.approx(2.0) and height.item() == pytest.approx(1.0)
    assert (deg.item() % 180.0) == pytest.approx(30.0)


# -------------------------------------------------------------------------------------------- path lengths
def test_path_length_of_a_straight_line_under_a_flat_metric():
    metric = flat_metric(regularization=0.25)  # G = I / 0.25 = 4 I: lengths are doubled
    line = straight_line(torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0]), 11)
    assert path_length(metric, line).item() == pytest.approx(10.0, rel=1e-6)
    assert path_length(metric, line, refine=5).item() == pytest.approx(10.0, rel=1e-6)
    # energy of a constant-speed curve on [0, 1] is length²
    assert path_energy(metric, line).item() == pytest.approx(100.0, rel=1e-6)


def test_energy_bounds_length_squared():
    metric = random_metric()
    g = torch.Generator().manual_seed(4)
    path = torch.cumsum(torch.rand(20, 2, generator=g, dtype=torch.float64), 0)
    for refine in (1, 3):
        assert path_energy(metric, path, refine) >= path_length(metric, path, refine) ** 2 - 1e-9


# -------------------------------------------------------------------------------------------- geodesics
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_geodesic_of_flat_metric_is_the_straight_line(optimizer):
    metric = flat_metric(regularization=0.1)
    z0, z1 = torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 1.5])
    result = geodesic(metric, z0, z1, n_points=20, optimizer=optimizer)
    euclid = math.dist(z0.tolist(), z1.tolist())
    assert result.max_deviation < 1e-6
    assert result.length == pytest.approx(result.line_length, rel=1e-9)
    assert result.length == pytest.approx(euclid / math.sqrt(0.1), rel=1e-9)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_geodesic_bends_towards_cheap_region_and_is_shorter(optimizer):
    metric = bump_metric(centre=(0.0, 0.8))
    z0, z1 = torch.tensor([-3.0, 0.0]), torch.tensor([3.0, 0.0])
    result = geodesic(metric, z0, z1, n_points=32, optimizer=optimizer)
    assert result.length < 0.97 * result.line_length  # strictly, clearly shorter
    assert result.max_distance_to_line > 0.5
    # it bends towards the bump (positive z₂), end points fixed
    assert result.path[1:-1, 1].min() > 0 and result.path[1:-1, 1].max() > 0.5
    assert torch.equal(result.path[0], z0.double()) and torch.equal(result.path[-1], z1.double())
    # the reported numbers are the path_length of the returned curves
    assert result.length == pytest.approx(path_length(metric, result.path, result.refine).item(), rel=1e-12)
    assert result.line_length == pytest.approx(path_length(metric, result.line, result.refine).item(), rel=1e-12)
    # local optimality: random small perturbations of the interior never shorten it noticeably
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        bumped = result.path.clone()
        bumped[1:-1] += 0.02 * torch.randn(30, 2, generator=g, dtype=torch.float64)
        assert path_length(metric, bumped, result.refine).item() >= result.length * (1 - 1e-3)


def test_geodesic_never_longer_than_line_on_random_metrics():
    for seed in range(3):
        metric = random_metric(seed=seed)
        z0, z1 = metric.centroids[0], metric.centroids[1]
        result = geodesic(metric, z0, z1, n_points=24, steps=200)
        assert result.length <= result.line_length * (1 + 1e-6)
        assert result.length >= 0


def test_geodesic_in_higher_dimension_and_float32_metric():
    metric = random_metric(d=3, seed=5, dtype=torch.float32)
    result = geodesic(metric, metric.centroids[0], metric.centroids[2], n_points=16, steps=100)
    assert result.path.shape == (16, 3) and result.path.dtype == torch.float64
    assert result.length <= result.line_length * (1 + 1e-6)


def test_geodesic_rejects_bad_input():
    metric = flat_metric()
    with pytest.raises(ValueError):
        geodesic(metric, torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError):
        geodesic(metric, torch.zeros(2), torch.ones(2), n_points=2)
    with pytest.raises(ValueError):
        geodesic(metric, torch.zeros(2), torch.ones(2), optimizer="sgd")
