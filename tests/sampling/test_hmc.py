"""Prior sampling and the Riemannian HMC sampler (rhvae.sampling.hmc) against a target computed on a grid."""

import math

import pytest
import torch

import rhvae
from rhvae.models.metric import LearnedMetric
from rhvae.sampling.hmc import default_box, riemannian_hmc, sample_prior

N_BINS, SUB = 10, 20  # histogram bins per axis; quadrature sub-cells per bin and axis


@pytest.fixture(scope="module")
def metric():
    """Two centroids in 2-D with different M_i; T = 0.7, λ = 0.05: π varies by a factor ~30 inside the box."""
    c = torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    M = torch.tensor([[[4.0, 0.0], [0.0, 0.5]], [[1.0, 0.8], [0.8, 2.0]]], dtype=torch.float64)
    return LearnedMetric(c, M, temperature=0.7, regularization=0.05)


def target_bin_probabilities(metric, low, high):
    """∫_bin √det G⁻¹ / ∫_box √det G⁻¹ by the midpoint rule on SUB × SUB sub-cells per bin."""
    mids = []
    for k in range(2):
        edges = torch.linspace(float(low[k]), float(high[k]), N_BINS * SUB + 1, dtype=torch.float64)
        mids.append((edges[1:] + edges[:-1]) / 2)
    gx, gy = torch.meshgrid(*mids, indexing="ij")
    density = torch.exp(metric.log_sqrt_det_G_inv(torch.stack([gx.flatten(), gy.flatten()], -1)))
    p = density.reshape(N_BINS, SUB, N_BINS, SUB).sum((1, 3))
    return p / p.sum(), density


def histogram(z, low, high):
    idx = ((z - low) / (high - low) * N_BINS).floor().long().clamp(0, N_BINS - 1)
    h = torch.zeros(N_BINS, N_BINS, dtype=torch.float64)
    h.index_put_((idx[:, 0], idx[:, 1]), torch.ones(len(z), dtype=torch.float64), accumulate=True)
    return h / h.sum()


def total_variation(p, q):
    return 0.5 * float((p - q).abs().sum())


def test_default_box_is_the_centroid_bounding_box_plus_three_temperatures(metric):
    low, high = default_box(metric)
    torch.testing.assert_close(low, torch.tensor([-1.0 - 2.1, 0.0 - 2.1], dtype=torch.float64))
    torch.testing.assert_close(high, torch.tensor([1.0 + 2.1, 0.5 + 2.1], dtype=torch.float64))


@pytest.mark.parametrize("box", [None, ((-2.0, -1.0), (0.5, 1.5))])
def test_samples_follow_the_target_on_the_box(metric, box):
    """20 000 parallel chains, 30 MCMC steps: TV(histogram, π on 10×10 bins) < 0.045.

    The sampling noise alone gives TV ≈ 0.4·√(100/20000) ≈ 0.03 (measured 0.021); the starting distribution
    (all mass on the two centroids' bins) is at TV > 0.5, and the uniform density on the box at TV ≈ 0.48.
    The custom box cuts through the high-density region, so a sampler that ignored or mishandled the box (e.g.
    clamped to it) would pile mass on its edges.
    """
    result = riemannian_hmc(metric, n_samples=20_000, mcmc_steps=30, n_lf=10, eps=0.1, seed=0, box=box)
    low, high = result.box_low, result.box_high
    p, density = target_bin_probabilities(metric, low, high)
    assert float(density.max() / density.min()) > 5.0  # π really varies inside the box
    assert ((result.z >= low) & (result.z <= high)).all()
    tv = total_variation(histogram(result.z, low, high), p)
    assert tv < 0.045, tv
    start = riemannian_hmc(metric, n_samples=20_000, mcmc_steps=0, seed=0, box=box)
    assert total_variation(histogram(start.z, low, high), p) > 0.5
    assert 0.6 < result.acceptance_rate < 0.99


def test_acceptance_and_box_of_every_state(metric):
    r = riemannian_hmc(metric, n_samples=200, mcmc_steps=40, n_lf=10, eps=0.1, seed=1, keep_trace=True)
    assert r.trace.shape == (41, 200, 2)
    assert ((r.trace >= r.box_low) & (r.trace <= r.box_high)).all()
    torch.testing.assert_close(r.trace[-1], r.z)
    torch.testing.assert_close(r.trace[0], metric.centroids[r.start_indices])
    assert r.acceptance_per_chain.shape == (200,)
    assert r.acceptance_rate == pytest.approx(float(r.acceptance_per_chain.mean()))
    assert 0.7 < r.acceptance_rate < 0.99
    # moved states are exactly the accepted ones
    moved = (r.trace[1:] != r.trace[:-1]).any(-1).double().mean(0)
    torch.testing.assert_close(moved, r.acceptance_per_chain)
    # a tiny step conserves H: acceptance ≈ 1; a huge step is mostly rejected (MH is active)
    assert riemannian_hmc(metric, n_samples=200, mcmc_steps=10, eps=1e-3, seed=1).acceptance_rate > 0.99
    assert riemannian_hmc(metric, n_samples=200, mcmc_steps=10, eps=1.5, seed=1).acceptance_rate < 0.4


def test_a_small_box_rejects_proposals_that_leave_it(metric):
    box = ((-1.2, -0.2), (-0.8, 0.2))
    r = riemannian_hmc(metric, n_samples=50, mcmc_steps=20, eps=0.1, seed=0, box=box, keep_trace=True)
    assert (r.start_indices == 0).all()  # only the first centroid lies inside
    assert ((r.trace >= r.box_low) & (r.trace <= r.box_high)).all()
    assert r.acceptance_rate < 0.5  # trajectories of length ~1 mostly end outside a 0.4-wide box


def test_same_seed_same_samples(metric):
    a = riemannian_hmc(metric, n_samples=30, mcmc_steps=15, seed=4)
    b = riemannian_hmc(metric, n_samples=30, mcmc_steps=15, seed=4)
    c = riemannian_hmc(metric, n_samples=30, mcmc_steps=15, seed=5)
    assert torch.equal(a.z, b.z) and torch.equal(a.acceptance_per_chain, b.acceptance_per_chain)
    assert not torch.equal(a.z, c.z)
    assert a.params["eps"] == pytest.approx(0.05 * 0.7) and a.params["seed"] == 4


@pytest.mark.parametrize("d", [2, 3])
def test_sampler_gradient_equals_autograd(d):
    """The force the sampler uses, ∇ log √det G⁻¹ in closed form, against autograd (float64)."""
    g = torch.Generator().manual_seed(d)
    c = torch.randn(7, d, generator=g, dtype=torch.float64)
    L = torch.randn(7, d, d, generator=g, dtype=torch.float64).tril()
    metric = LearnedMetric(c, L @ L.transpose(-1, -2), temperature=0.8, regularization=0.02)
    z = (1.5 * torch.randn(25, d, generator=g, dtype=torch.float64)).requires_grad_(True)
    (auto,) = torch.autograd.grad(metric.log_sqrt_det_G_inv(z).sum(), z)
    torch.testing.assert_close(metric.grad_log_sqrt_det_G_inv(z.detach()), auto, rtol=1e-10, atol=1e-12)
    assert float(auto.abs().max()) > 0.1


def test_sampler_on_an_rhvae_decodes_its_samples(small_rhvae):
    model, x = small_rhvae
    r = riemannian_hmc(model, n_samples=8, mcmc_steps=5, seed=0)
    assert r.images.shape == (8, 784) and ((r.images >= 0) & (r.images <= 1)).all()
    torch.testing.assert_close(r.images, model.decode(r.z).detach())
    assert len(set(r.start_indices.tolist())) == 8  # without replacement: 8 ≤ 15 centroids
    r = riemannian_hmc(model, n_samples=40, mcmc_steps=2, seed=0)
    assert len(set(r.start_indices.tolist())) < 40  # with replacement
    assert r.params["eps"] == pytest.approx(0.05 * model.temperature)


def test_invalid_sampler_arguments(metric, small_rhvae):
    for kwargs, match in [
        ({"n_samples": 0}, "n_samples must be an integer >= 1"),
        ({"mcmc_steps": -1}, "mcmc_steps must be an integer >= 0"),
        ({"n_lf": 0}, "n_lf must be an integer >= 1"),
        ({"eps": 0.0}, r"eps must be a finite number in \(0.0, inf\)"),
        ({"eps": math.nan}, "eps"),
        ({"seed": 1.5}, "seed"),
        ({"margin": -1.0}, "margin"),
        ({"box": ((0.0,), (1.0,))}, "box"),
        ({"box": ((1.0, 1.0), (0.0, 2.0))}, "low < high"),
        ({"box": ((5.0, 5.0), (6.0, 6.0))}, "no training centroid"),
        ({"box": ((-5.0, -5.0), (6.0, 6.0)), "margin": 1.0}, "either box or margin"),
    ]:
        with pytest.raises(ValueError, match=match):
            riemannian_hmc(metric, **kwargs)
    with pytest.raises(TypeError, match="RHVAE or a LearnedMetric"):
        riemannian_hmc(rhvae.VAE())
    with pytest.raises(RuntimeError, match="no frozen metric"):
        riemannian_hmc(rhvae.RHVAE(hidden_dim=8))


def test_sample_prior():
    torch.manual_seed(0)
    model = rhvae.HVAE(hidden_dim=16)
    s = sample_prior(model, n=4000, seed=3)
    assert s.z.shape == (4000, 2) and s.images.shape == (4000, 784)
    assert float(s.z.mean(0).abs().max()) < 0.06 and float((s.z.std(0) - 1).abs().max()) < 0.05
    torch.testing.assert_close(s.images, model.decode(s.z).detach())
    assert torch.equal(sample_prior(model, n=4000, seed=3).z, s.z)
    assert not torch.equal(sample_prior(model, n=4000, seed=4).z, s.z)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        sample_prior(model, n=0)


def test_a_step_longer_than_the_box_is_refused_naming_eps_and_the_bound(metric):
    low, high = default_box(metric)
    diagonal = float(torch.linalg.vector_norm(high - low))
    for eps in (1e300, 2 * diagonal):
        with pytest.raises(ValueError) as caught:
            riemannian_hmc(metric, n_samples=4, mcmc_steps=1, eps=eps, seed=0)
        assert str(caught.value) == f"eps must be > 0 and <= the box's diagonal {diagonal:.4g}, got {eps:g}"
    assert riemannian_hmc(metric, n_samples=4, mcmc_steps=1, eps=0.9 * diagonal, seed=0).z.shape == (4, 2)
