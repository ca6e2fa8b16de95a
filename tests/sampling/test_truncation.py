"""The truncated metric (rhvae.sampling.truncation): error bounds against the full sum, the candidate blocks, and the
sampler that uses it."""

from __future__ import annotations

import math

import pytest
import torch

from rhvae.models.metric import LearnedMetric
from rhvae.sampling.hmc import riemannian_hmc
from rhvae.sampling.truncation import MIN_CENTROIDS, TruncatedMetric, error_bounds, truncation_radius
from rhvae.validation import ParameterError

LAMBDA = 0.1


def random_metric(n: int, temperature: float, spread: float = 6.0, seed: int = 0, dtype=torch.float64):
    """N centroids in clusters over [−spread, spread]² with PSD Mᵢ = LᵢLᵢᵀ of scales from 0.01 to 100."""
    gen = torch.Generator().manual_seed(seed)
    centres = (torch.rand(12, 2, generator=gen, dtype=dtype) * 2 - 1) * spread
    c = centres[torch.randint(12, (n,), generator=gen)] + 0.7 * torch.randn(n, 2, generator=gen, dtype=dtype)
    L = torch.randn(n, 2, 2, generator=gen, dtype=dtype).tril()
    scale = 10 ** (torch.rand(n, 1, 1, generator=gen, dtype=dtype) * 4 - 2)
    return LearnedMetric(c, scale * L @ L.transpose(-1, -2), temperature, LAMBDA)


def brute_force(metric: LearnedMetric, z: torch.Tensor, radius: float):
    """G_r⁻¹ and the force of the module docstring from every centroid, without blocks: w̃ᵢ = (wᵢ − e^{−r²/T²})₊."""
    t2 = metric.temperature**2
    w = torch.exp(-((z[:, None] - metric.centroids[None]) ** 2).sum(-1) / t2)
    w_cut = (w - math.exp(-(radius**2) / t2)).clamp_min(0.0)
    G_inv = torch.einsum("bn,nij->bij", w_cut, metric.M) + LAMBDA * torch.eye(2, dtype=z.dtype)
    G = torch.linalg.inv(G_inv)
    grad_w = -2.0 / t2 * w_cut[:, :, None] * (z[:, None] - metric.centroids[None])  # (B, N, d)
    force = torch.einsum("bij,nij,bnk->bk", G, metric.M, grad_w)
    return G_inv, torch.logdet(G_inv), force


def full(metric: LearnedMetric, z: torch.Tensor):
    at = metric.at(z)
    return at.G_inv, at.log_det_G_inv, metric.grad_log_det_G_inv(at)


def points(metric: LearnedMetric, n: int = 400, seed: int = 1) -> torch.Tensor:
    """Half at and near the centroids, half uniform over their box enlarged by 2 T (where G⁻¹ ≈ λ I)."""
    gen = torch.Generator().manual_seed(seed)
    c = metric.centroids
    near = c[torch.randint(len(c), (n // 2,), generator=gen)] + 0.3 * torch.randn(n // 2, 2, generator=gen)
    low, high = c.min(0).values - 2 * metric.temperature, c.max(0).values + 2 * metric.temperature
    far = low + (high - low) * torch.rand(n - n // 2, 2, generator=gen, dtype=c.dtype)
    return torch.cat((near, far))


def errors(metric: LearnedMetric, truncated: TruncatedMetric, z: torch.Tensor) -> dict:
    G_inv, log_det, grad = full(metric, z)
    G_inv_r = truncated.G_inv(z)
    log_det_r, force = truncated.log_det_and_grad(z)
    return {
        "G_inv": float(torch.linalg.matrix_norm(G_inv - G_inv_r, 2).max()),
        "log_det_G_inv": float((log_det - log_det_r).abs().max()),
        "log_det_min": float((log_det - log_det_r).min()),
        "grad_log_det_G_inv": float((grad - force).norm(dim=-1).max()),
    }


@pytest.mark.parametrize("temperature, tolerance", [(0.5, 1e-3), (1.0, 1e-2), (0.3, 1e-6)])
def test_truncated_metric_within_its_bounds(temperature, tolerance):
    metric = random_metric(3000, temperature)
    truncated = TruncatedMetric(metric, tolerance)
    z = points(metric)
    assert truncated.radius >= temperature / math.sqrt(2)
    assert truncated.bounds["tolerance"] == pytest.approx(tolerance)
    # the cut drops centroids (else the test would check nothing) and changes the metric
    assert float(truncated.scanned_blocks(z).double().mean()) < 1.0
    err = errors(metric, truncated, z)
    assert err["G_inv"] > 0
    assert err["log_det_min"] >= -1e-12  # the cut only removes positive terms: log det G⁻¹ ≥ log det G_r⁻¹
    for key in ("G_inv", "log_det_G_inv", "grad_log_det_G_inv"):
        assert err[key] <= truncated.bounds[key], key


def test_too_small_radius_breaks_the_bound():
    """Half the radius that a tolerance asks for: the errors exceed that tolerance's bounds (so the bound test can
    fail), and they stay within the bounds of the radius actually used."""
    metric = random_metric(3000, 0.5)
    needed = TruncatedMetric(metric, 1e-3)
    short = TruncatedMetric(metric, radius=0.5 * needed.radius)
    err = errors(metric, short, points(metric))
    assert err["G_inv"] > needed.bounds["G_inv"]
    assert err["log_det_G_inv"] > needed.bounds["log_det_G_inv"]
    assert err["grad_log_det_G_inv"] > needed.bounds["grad_log_det_G_inv"]
    assert short.tolerance > 1e-3
    for key in ("G_inv", "log_det_G_inv", "grad_log_det_G_inv"):
        assert err[key] <= short.bounds[key], key


def test_blocks_give_the_sum_over_every_centroid():
    """The value does not depend on which blocks are scanned: the same as the shifted, cut kernel summed over all
    centroids."""
    metric = random_metric(5000, 0.4)
    truncated = TruncatedMetric(metric, 1e-4)
    assert len(truncated.blocks) > 2
    z = points(metric, 300)
    G_inv, log_det, force = brute_force(metric, z, truncated.radius)
    torch.testing.assert_close(truncated.G_inv(z), G_inv, rtol=1e-10, atol=1e-12)
    log_det_r, force_r = truncated.log_det_and_grad(z)
    torch.testing.assert_close(log_det_r, log_det, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(force_r, force, rtol=1e-8, atol=1e-10)


def test_radius_from_tolerance():
    s, t = 1e5, 0.8
    r = truncation_radius(s, t, LAMBDA, 1e-5)
    assert r == pytest.approx(t * math.sqrt(math.log(s / (1e-5 * LAMBDA))))
    assert error_bounds(s, t, LAMBDA, r, 2)["tolerance"] == pytest.approx(1e-5)
    assert truncation_radius(1e-9, t, LAMBDA, 1e-5) == 0.0  # no centroid can matter


def grid_density(log_density, low, high, bins: int, fine: int = 20) -> torch.Tensor:
    """Probabilities of a bins × bins histogram of the box under exp(log_density), midpoint rule on fine sub-cells."""
    n = bins * fine
    axes = [low[k] + (torch.arange(n, dtype=torch.float64) + 0.5) * (high[k] - low[k]) / n for k in range(2)]
    gx, gy = torch.meshgrid(*axes, indexing="ij")
    values = log_density(torch.stack((gx.flatten(), gy.flatten()), 1)).reshape(n, n)
    p = torch.exp(values - values.max()).reshape(bins, fine, bins, fine).sum((1, 3))
    return p / p.sum()


def histogram(z: torch.Tensor, low, high, bins: int) -> torch.Tensor:
    cells = ((z - low) / (high - low) * bins).long().clamp(0, bins - 1)
    counts = torch.bincount(cells[:, 0] * bins + cells[:, 1], minlength=bins * bins).double()
    return (counts / counts.sum()).reshape(bins, bins)


def test_sampler_targets_the_truncated_density(one_thread):
    """A radius small enough to change the target visibly: the chains follow √det G_r⁻¹, not √det G⁻¹ (total
    variation over a 4 × 4 histogram of the box; 2,000 chains leave about 0.03 of sampling noise)."""
    gen = torch.Generator().manual_seed(0)
    c = torch.tensor([[-1.0, 0.0], [0.0, 0.8], [1.2, -0.4], [0.3, -1.1]], dtype=torch.float64)
    M = 30.0 * torch.eye(2, dtype=torch.float64) + torch.diag_embed(
        torch.rand(4, 2, generator=gen, dtype=torch.float64)
    )
    metric = LearnedMetric(c, M, 0.6, LAMBDA)
    truncated = TruncatedMetric(metric, radius=0.4)
    samples = riemannian_hmc(truncated, n_samples=2000, mcmc_steps=60, n_lf=10, eps=0.1, seed=3)
    assert samples.params["truncation"]["radius"] == 0.4
    low, high, bins = samples.box_low, samples.box_high, 4
    observed = histogram(samples.z, low, high, bins)
    target = grid_density(truncated.log_sqrt_det_G_inv, low, high, bins)
    untruncated = grid_density(metric.log_sqrt_det_G_inv, low, high, bins)
    separation = 0.5 * float((target - untruncated).abs().sum())
    assert separation > 0.15  # the cut matters here
    assert 0.5 * float((observed - target).abs().sum()) < separation / 4
    assert 0.5 * float((observed - untruncated).abs().sum()) > 0.75 * separation


def test_truncated_and_full_chains_agree_below_rounding(one_thread):
    """With τ = 1e-7 the log-target moves by at most 1e-7 nats: the truncated sampler makes the full sampler's
    accept decisions and its chains end within 1e-6 of the full ones."""
    metric = random_metric(MIN_CENTROIDS, 0.8, spread=3.0)
    truncated = TruncatedMetric(metric, 1e-7)
    a = riemannian_hmc(metric, n_samples=40, mcmc_steps=15, seed=4, grid_tolerance=None)
    b = riemannian_hmc(truncated, n_samples=40, mcmc_steps=15, seed=4)
    assert a.params["truncation"] is None and b.params["truncation"]["tolerance"] == 1e-7
    assert a.acceptance_per_chain.tolist() == b.acceptance_per_chain.tolist()
    torch.testing.assert_close(a.z, b.z, rtol=0, atol=1e-6)


def test_sampler_truncates_above_the_threshold():
    metric = random_metric(MIN_CENTROIDS + 1, 0.5, dtype=torch.float32)
    samples = riemannian_hmc(metric, n_samples=3, mcmc_steps=2, seed=0, truncation_tolerance=1e-4, grid_tolerance=None)
    record = samples.params["truncation"]
    assert record["n_centroids"] == MIN_CENTROIDS + 1 and record["tolerance"] == 1e-4
    assert record["bounds"]["G_inv"] == pytest.approx(1e-4 * LAMBDA)
    full_sum = riemannian_hmc(metric, n_samples=3, mcmc_steps=2, seed=0, truncation_tolerance=None)
    assert full_sum.params["truncation"] is None


@pytest.mark.parametrize("bad", [0, -1e-3, 0.5, float("nan"), "1e-3"])
def test_bad_tolerance_one_line(bad):
    metric = random_metric(50, 0.5)
    for call in (
        lambda: riemannian_hmc(metric, n_samples=2, mcmc_steps=1, truncation_tolerance=bad),
        lambda: TruncatedMetric(metric, bad),
    ):
        with pytest.raises(ParameterError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith("truncation_tolerance must be a finite number in (0.0, 0.1]")
