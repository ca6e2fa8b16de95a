"""The grid target (rhvae.sampling.grid_target): the interpolant against log det G⁻¹ at points it was not checked at,
its gradient, continuity across cells, the adaptive spacing, and the sampler that uses it above MIN_CENTROIDS."""

from __future__ import annotations

import pytest
import torch
from test_truncation import LAMBDA, grid_density, histogram, random_metric

from rhvae.models.metric import LearnedMetric
from rhvae.sampling.grid_target import MIN_CENTROIDS as GRID_MIN_CENTROIDS
from rhvae.sampling.grid_target import GridTarget, exact_log_det, interpolate_if_possible, separable_sums
from rhvae.sampling.hmc import default_box, riemannian_hmc
from rhvae.sampling.truncation import MIN_CENTROIDS
from rhvae.validation import ParameterError


def float64(metric: LearnedMetric) -> LearnedMetric:
    return LearnedMetric(metric.centroids.double(), metric.M.double(), metric.temperature, metric.regularization)


def uniform(low, high, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, 2, generator=gen, dtype=torch.float64)


def test_separable_node_sums_equal_the_direct_sum_and_its_derivatives():
    """The products of ``separable_sums`` against G⁻¹ − λI and autograd's ∂ₓ, ∂ᵧ, ∂ₓ∂ᵧ of it, entry by entry."""
    metric = random_metric(300, 0.7, spread=2.0)
    xs, ys = torch.linspace(-2, 2, 5, dtype=torch.float64), torch.linspace(-1.5, 2.5, 4, dtype=torch.float64)
    sums = separable_sums(metric, xs, ys, derivatives=True)  # (3 entries, ∂ₓ order, n_x, ∂ᵧ order, n_y)
    for a, x in enumerate(xs):
        for b, y in enumerate(ys):
            for entry, (j, k) in enumerate(((0, 0), (0, 1), (1, 1))):
                z = torch.stack((x, y)).requires_grad_()
                value = metric.G_inv(z[None])[0, j, k] - (LAMBDA if j == k else 0.0)
                (gx, gy) = torch.autograd.grad(value, z, create_graph=True)[0]
                gxy = torch.autograd.grad(gx, z)[0][1]
                expected = torch.stack((value, gx, gy, gxy)).detach()
                got = torch.stack([sums[entry, i, a, j, b] for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))])
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("temperature, spacing", [(0.8, 1 / 8), (0.5, 1 / 16)])
def test_interpolant_matches_log_det_at_random_points(temperature, spacing):
    """At 20,000 random points of the box (none of them a node or a centre) |f̃ − f| stays within twice the
    error checked at the cell centres, and that error shrinks like the spacing⁴."""
    metric = random_metric(2000, temperature, spread=3.0)
    low, high = default_box(metric)
    grid = GridTarget(metric, low, high, spacing)
    z = uniform(low, high, 20_000)
    f, grad = metric.log_det_and_grad(z)
    f_grid, grad_grid = grid.log_det_and_grad(z)
    assert 0 < grid.max_centre_error < 1e-3
    assert float((f_grid - f).abs().max()) <= 2 * grid.max_centre_error
    assert float((grad_grid - grad).abs().max()) < 0.02 * float(grad.abs().max())
    finer = GridTarget(metric, low, high, spacing / 2)
    assert finer.max_centre_error < grid.max_centre_error / 8  # fourth order: about /16


def test_gradient_is_the_gradient_of_the_interpolant_and_continuous_across_cells():
    """The sampler's force must be ∇f̃ (energy conservation of its leapfrog): central differences of f̃, and
    f̃, ∇f̃ on both sides of grid lines agree (C¹ patches)."""
    metric = random_metric(500, 0.6, spread=2.0)
    low, high = default_box(metric)
    grid = GridTarget(metric, low, high, 1 / 8)
    z = uniform(low + 0.1, high - 0.1, 500, seed=1)
    h = 1e-6
    for axis in (0, 1):
        step = torch.zeros(2, dtype=torch.float64)
        step[axis] = h
        numeric = (grid._evaluate(z + step, False)[0] - grid._evaluate(z - step, False)[0]) / (2 * h)
        torch.testing.assert_close(grid._evaluate(z)[1][:, axis], numeric, rtol=1e-5, atol=1e-5)
    # points on the vertical grid lines x = x₀ + k hₓ, approached from either side
    k = torch.arange(3, int(grid.cells[0]) - 3, 7, dtype=torch.float64)
    lines = torch.stack((grid.low[0] + k * grid.step[0], torch.linspace(float(low[1]), float(high[1]), len(k))), 1)
    left, right = grid._evaluate(lines - torch.tensor([1e-9, 0.0])), grid._evaluate(lines + torch.tensor([1e-9, 0]))
    torch.testing.assert_close(left[0], right[0], rtol=0, atol=1e-7)
    torch.testing.assert_close(left[1], right[1], rtol=0, atol=1e-5)


def test_adaptive_spacing_refines_until_the_tolerance_holds():
    metric = random_metric(1000, 0.7, spread=2.0)
    low, high = default_box(metric)
    coarse = interpolate_if_possible(metric, low, high, tolerance=1e-2)
    fine = interpolate_if_possible(metric, low, high, tolerance=1e-6)
    assert coarse.spacing > fine.spacing
    assert fine.max_centre_error <= 1e-6 < coarse.max_centre_error
    centres = [(v[:-1] + v[1:]) / 2 for v in (torch.linspace(0, 1, 3, dtype=torch.float64),) * 2]
    assert exact_log_det(metric, *centres).shape == (2, 2)
    assert interpolate_if_possible(metric, low, high, tolerance=1e-15) is None  # below float rounding: none meets it
    three_d = LearnedMetric(torch.zeros(3, 3), torch.eye(3).repeat(3, 1, 1), 1.0, LAMBDA)
    assert interpolate_if_possible(three_d, torch.full((3,), -1.0), torch.ones(3)) is None


def test_sampler_uses_the_grid_above_the_threshold_and_follows_the_full_chains(one_thread):
    """Above its threshold the 2-D sampler evaluates the grid (recorded in params). With a grid tolerance of 10⁻⁶
    nats the log-target moves by less than the accept thresholds' gaps: the same accept decisions as the full
    sum, and chains within 10⁻⁴ after 15 steps (the force differs by the interpolation error)."""
    metric = random_metric(MIN_CENTROIDS + 1, 0.8, spread=3.0, dtype=torch.float32)
    full = riemannian_hmc(metric, n_samples=40, mcmc_steps=15, seed=4, truncation_tolerance=None, grid_tolerance=None)
    grid = riemannian_hmc(metric, n_samples=40, mcmc_steps=15, seed=4, grid_tolerance=1e-6)
    assert full.params["grid"] is None and full.params["truncation"] is None
    record = grid.params["grid"]
    assert record["n_centroids"] == MIN_CENTROIDS + 1 and record["max_error_at_cell_centres"] <= 1e-6
    assert grid.params["truncation"] is None
    assert full.acceptance_per_chain.tolist() == grid.acceptance_per_chain.tolist()
    torch.testing.assert_close(full.z, grid.z, rtol=0, atol=1e-4)
    truncated = riemannian_hmc(metric, n_samples=3, mcmc_steps=2, seed=0, grid_tolerance=None)
    assert truncated.params["grid"] is None and truncated.params["truncation"]["n_centroids"] == MIN_CENTROIDS + 1
    below = riemannian_hmc(random_metric(GRID_MIN_CENTROIDS, 0.8), n_samples=3, mcmc_steps=2, seed=0)
    assert below.params["grid"] is None and below.params["truncation"] is None
    between = riemannian_hmc(random_metric(GRID_MIN_CENTROIDS + 1, 0.8), n_samples=3, mcmc_steps=2, seed=0)
    assert between.params["grid"]["n_centroids"] == GRID_MIN_CENTROIDS + 1
    no_grid = riemannian_hmc(random_metric(GRID_MIN_CENTROIDS + 1, 0.8), n_samples=3, mcmc_steps=2, grid_tolerance=None)
    assert no_grid.params["grid"] is None and no_grid.params["truncation"] is None  # the full sum below 10,000


def test_sampler_targets_the_interpolated_density(one_thread):
    """A deliberately coarse grid (spacing 4 T: 4 × 4 cells) changes the target visibly; 4,000 chains follow
    exp(½ f̃), the density they are corrected for, rather than √det G⁻¹ (total variation over a 4 × 4 histogram
    of the box; about 0.02 of it is sampling noise)."""
    gen = torch.Generator().manual_seed(0)
    c = torch.tensor([[-1.0, 0.0], [0.0, 0.8], [1.2, -0.4], [0.3, -1.1]], dtype=torch.float64)
    M = 30.0 * torch.eye(2, dtype=torch.float64) + torch.diag_embed(
        torch.rand(4, 2, generator=gen, dtype=torch.float64)
    )
    metric = LearnedMetric(c, M, 0.3, LAMBDA)
    low, high = default_box(metric)
    grid = GridTarget(metric, low, high, 4.0)
    samples = riemannian_hmc(grid, n_samples=4000, mcmc_steps=60, n_lf=10, eps=0.05, seed=3)
    assert samples.params["grid"]["spacing_per_temperature"] == 4.0
    observed = histogram(samples.z, low, high, 4)
    target = grid_density(grid.log_sqrt_det_G_inv, low, high, 4)
    exact = grid_density(metric.log_sqrt_det_G_inv, low, high, 4)
    separation = 0.5 * float((target - exact).abs().sum())
    assert separation > 0.08  # the coarse grid matters here
    assert 0.5 * float((observed - target).abs().sum()) < separation / 3
    assert 0.5 * float((observed - exact).abs().sum()) > 0.6 * separation


@pytest.mark.parametrize("bad", [0, -1e-3, 0.5, float("nan"), "1e-4"])
def test_bad_grid_tolerance_one_line(bad):
    metric = random_metric(50, 0.5)
    for call in (
        lambda: riemannian_hmc(metric, n_samples=2, mcmc_steps=1, grid_tolerance=bad),
        lambda: interpolate_if_possible(metric, (-1, -1), (1, 1), bad),
    ):
        with pytest.raises(ParameterError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and message.startswith("grid_tolerance must be a finite number in (0.0, 0.1]")
