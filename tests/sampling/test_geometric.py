"""The geometry-aware sampler (rhvae.sampling.geometric): the Eq. 7 metric against a direct formula, its gradient
against autograd, the chains against the density √det G on a grid, and ``generate(sampler=...)``."""

import math

import pytest
import torch

import rhvae
from rhvae.models import HVAE, RHVAE, VAE
from rhvae.sampling import hmc
from rhvae.sampling.geometric import (
    DEFAULT_EPS,
    DEFAULT_MCMC_STEPS,
    DEFAULT_N_LF,
    GeometricMetric,
    geometric_hmc,
    k_medoids,
    sample_metric,
)
from rhvae.validation import ParameterError

F64 = torch.float64


def random_metric(d, n=5, lam=0.05, tau=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, d, generator=g, dtype=F64)
    v = torch.rand(n, d, generator=g, dtype=F64) * 0.3 + 0.05
    return GeometricMetric(c, v, regularization=lam, tau=tau)


def direct_G(metric, z):
    """Eq. 7 term by term, one point and one centroid at a time (no shared code with the module)."""
    out = []
    for point in z:
        G = metric.regularization * math.exp(-metric.tau * float(point @ point)) * torch.eye(metric.dim, dtype=F64)
        for c, v in zip(metric.centroids, metric.variances, strict=True):
            sigma_inv = torch.diag(1.0 / v)
            dist2 = float((point - c) @ sigma_inv @ (point - c))
            G = G + sigma_inv * math.exp(-dist2 / metric.bandwidth**2)
        out.append(G)
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------------- the metric
@pytest.mark.parametrize("d", [2, 3, 8])
def test_metric_matches_the_direct_formula(d):
    metric = random_metric(d)
    z = torch.randn(9, d, generator=torch.Generator().manual_seed(1), dtype=F64) * 1.5
    G = direct_G(metric, z)
    torch.testing.assert_close(metric.G(z), G, rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(metric.log_sqrt_det(z), 0.5 * torch.logdet(G), rtol=1e-12, atol=1e-12)


def test_default_bandwidth_is_the_largest_nearest_neighbour_distance():
    c = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.5, 3.2]], dtype=F64)
    metric = GeometricMetric(c, torch.ones_like(c))
    # nearest-neighbour distances 1, 1, √0.29, √0.29 → ρ = 1
    assert metric.bandwidth == pytest.approx(1.0)
    assert GeometricMetric(c, torch.ones_like(c), bandwidth=0.3).bandwidth == 0.3


@pytest.mark.parametrize("d", [2, 3, 16])
def test_gradient_matches_autograd(d):
    metric = random_metric(d, n=7)
    z = (torch.randn(11, d, generator=torch.Generator().manual_seed(2), dtype=F64) * 2).requires_grad_()
    G = (
        torch.exp(-((z[:, None] - metric.centroids) ** 2 / metric.variances).sum(-1) / metric.bandwidth**2)[..., None]
        / metric.variances
    ).sum(1) + metric.regularization * torch.exp(-metric.tau * (z * z).sum(-1))[:, None]
    (grad,) = torch.autograd.grad(0.5 * torch.log(G).sum(), z)
    value, closed = metric.log_sqrt_det_and_grad(z.detach())
    torch.testing.assert_close(value, 0.5 * torch.log(G).sum(-1).detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(closed, grad, rtol=1e-9, atol=1e-12)


def test_gradient_matches_finite_differences_far_from_the_codes():
    """Where every kernel underflows in float64 (‖z‖ ~ 40, so ωᵢ < e^-1000) the log-domain gradient is −τ d z."""
    metric = random_metric(3)
    z = torch.tensor([[40.0, -3.0, 1.0], [0.3, 0.2, -0.1], [2.0, 2.0, 2.0]], dtype=F64)
    _, grad = metric.log_sqrt_det_and_grad(z)
    h = 1e-6
    for k in range(3):
        e = torch.zeros(3, dtype=F64)
        e[k] = h
        fd = (metric.log_sqrt_det(z + e) - metric.log_sqrt_det(z - e)) / (2 * h)
        torch.testing.assert_close(grad[:, k], fd, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad[0], -metric.tau * 3 * z[0], rtol=1e-9, atol=1e-12)


def test_metric_is_symmetric_positive_definite_everywhere():
    metric = random_metric(4, tau=0.01)
    g = torch.Generator().manual_seed(3)
    z = torch.cat([torch.randn(200, 4, generator=g, dtype=F64) * s for s in (0.5, 3.0, 30.0)])
    G = metric.G(z)
    torch.testing.assert_close(G, G.transpose(1, 2), rtol=0, atol=0)
    assert (torch.linalg.eigvalsh(G) > 0).all()
    # far beyond where G itself underflows, log √det G and its gradient stay finite (the log domain)
    far = torch.full((2, 4), 1e3, dtype=F64)
    value, grad = metric.log_sqrt_det_and_grad(far)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------- the chains against √det G
def grid_probabilities(metric, low, high, bins, sub=8):
    """∫_bin √det G by the midpoint rule on a d-dimensional grid of bins × sub cells per axis over [low, high]^d,
    normalised over the box: (bins,)*d."""
    d = metric.dim
    edges = torch.linspace(low, high, bins * sub + 1, dtype=F64)
    mids = (edges[1:] + edges[:-1]) / 2
    grid = torch.stack(torch.meshgrid(*([mids] * d), indexing="ij"), -1).reshape(-1, d)
    dens = torch.exp(metric.log_sqrt_det(grid))
    dens = dens.reshape(*([bins, sub] * d)).sum(tuple(range(1, 2 * d, 2)))
    return dens / dens.sum()


def histogram(z, low, high, bins):
    idx = ((z - low) / (high - low) * bins).floor().long()
    inside = ((idx >= 0) & (idx < bins)).all(-1)
    flat = torch.zeros(bins ** z.shape[1], dtype=F64)
    lin = torch.zeros(int(inside.sum()), dtype=torch.long)
    for k in range(z.shape[1]):
        lin = lin * bins + idx[inside, k]
    flat.index_add_(0, lin, torch.ones(len(lin), dtype=F64))
    return flat / len(z), float((~inside).float().mean())


def tv(p, q):
    return 0.5 * float((p.flatten() - q.flatten()).abs().sum())


def iid_tv(p, n, seed=0):
    draws = torch.multinomial(p.flatten(), n, replacement=True, generator=torch.Generator().manual_seed(seed))
    return tv(torch.bincount(draws, minlength=p.numel()).to(F64) / n, p)


def test_chains_follow_sqrt_det_G_in_2d():
    """Three centroids with different Σᵢ, λ = 0.1, τ = 0.3: 20 000 chains × 40 MCMC steps against the grid density.

    The box [−4, 4]² holds all but 3.4e-4 of the mass (quadrature on [−8, 8]²). Measured: TV 0.019 against 0.020
    for 20 000 i.i.d. draws from the grid; the starting point (three centroids) is at TV 0.79 and the uniform
    density on the box at 0.76. Broken samplers fail the bound: momenta drawn as 0.5 · N(0, I) (the official
    code's draw with a unit-mass kinetic energy) reach TV 0.32, a sampler of det G instead of √det G 0.17.
    """
    c = torch.tensor([[-1.2, 0.0], [1.0, 0.6], [0.3, -1.4]], dtype=F64)
    v = torch.tensor([[0.2, 0.05], [0.1, 0.1], [0.03, 0.3]], dtype=F64)
    metric = GeometricMetric(c, v, regularization=0.1, tau=0.3)
    low, high, bins, n = -4.0, 4.0, 12, 20_000
    p = grid_probabilities(metric, low, high, bins)
    out = sample_metric(metric, n_samples=n, mcmc_steps=40, n_lf=10, eps=0.12, seed=0)
    h, outside = histogram(out.z, low, high, bins)
    start, _ = histogram(metric.centroids[out.start_indices], low, high, bins)
    reference = iid_tv(p, n)
    assert outside < 1e-3
    assert tv(start, p) > 0.5
    assert 0.2 < out.acceptance_rate < 1.0
    assert tv(h, p) < 1.5 * reference + 0.01, (tv(h, p), reference)


def test_chains_follow_sqrt_det_G_in_3d_marginal_and_moments():
    """d = 3, four centroids: the histogram of z₁ (16 bins) against its marginal by quadrature on a 3-D grid, and
    E‖z‖² against the quadrature's. Measured TV 0.008 (i.i.d. draws 0.007; the starting centroids 0.34)."""
    c = torch.tensor([[-1.0, 0.0, 0.5], [1.0, 0.5, 0.0], [0.0, -1.0, -0.5], [0.5, 1.0, 1.0]], dtype=F64)
    v = torch.full_like(c, 0.1)
    v[0] = torch.tensor([0.3, 0.05, 0.1])
    metric = GeometricMetric(c, v, regularization=0.1, tau=0.3)
    low, high, bins, n = -3.5, 3.5, 16, 10_000
    p3 = grid_probabilities(metric, low, high, bins, sub=4)
    p1 = p3.sum((1, 2))
    out = sample_metric(metric, n_samples=n, mcmc_steps=40, n_lf=10, eps=0.12, seed=1)
    h1, outside = histogram(out.z[:, :1], low, high, bins)
    start, _ = histogram(metric.centroids[out.start_indices][:, :1], low, high, bins)
    reference = iid_tv(p1, n)
    assert outside < 2e-3 and tv(start, p1) > 0.2
    assert tv(h1, p1) < 1.5 * reference + 0.01, (tv(h1, p1), reference)
    # second moment: the grid's (midpoints of the 4-fold finer cells) against the chains' (std error ~1.5 %)
    edges = torch.linspace(low, high, bins * 4 + 1, dtype=F64)
    mids = (edges[1:] + edges[:-1]) / 2
    grid = torch.stack(torch.meshgrid(mids, mids, mids, indexing="ij"), -1).reshape(-1, 3)
    w = torch.exp(metric.log_sqrt_det(grid))
    m2 = float((w * (grid * grid).sum(-1)).sum() / w.sum())
    assert float((out.z * out.z).sum(-1).mean()) == pytest.approx(m2, rel=0.05)


def test_same_seed_same_samples_other_seed_other_samples():
    metric = random_metric(3)
    a = sample_metric(metric, n_samples=50, mcmc_steps=5, seed=7)
    b = sample_metric(metric, n_samples=50, mcmc_steps=5, seed=7)
    c = sample_metric(metric, n_samples=50, mcmc_steps=5, seed=8)
    assert torch.equal(a.z, b.z) and torch.equal(a.acceptance_per_chain, b.acceptance_per_chain)
    assert not torch.equal(a.z, c.z)


def test_global_rng_untouched():
    metric = random_metric(2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample_metric(metric, n_samples=10, mcmc_steps=3, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_k_medoids_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=F64)
    pts = torch.cat([c + 0.3 * torch.randn(30, 2, generator=g, dtype=F64) for c in centres])
    medoids = k_medoids(pts, 3, torch.Generator().manual_seed(1))
    assert sorted((pts[medoids] / 10).round().abs().sum(-1).tolist()) == [0.0, 1.0, 1.0]
    assert sorted((medoids // 30).tolist()) == [0, 1, 2]


# ------------------------------------------------------------------------------------------------ on the models
def tiny_data(n=40, seed=0):
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cls", [VAE, HVAE, RHVAE])
def test_works_for_every_model_type_at_d3(cls):
    torch.manual_seed(0)
    model = cls(latent_dim=3)
    x = tiny_data()
    out = geometric_hmc(model, x, n_samples=12, mcmc_steps=6, seed=0, n_centroids=10)
    assert out.z.shape == (12, 3) and out.images.shape == (12, 784)
    assert torch.isfinite(out.z).all() and 0 < out.acceptance_rate <= 1
    assert len(out.metric.centroids) == 10 and out.params["model"] == cls.__name__
    # the metric is the encoder's: centroids are codes μ(xᵢ), variances exp(log σ²(xᵢ))
    mu, log_var = model.encode(x)
    idx = out.metric.centroid_indices
    torch.testing.assert_close(out.metric.centroids, mu.detach().to(F64)[idx])
    torch.testing.assert_close(out.metric.variances, log_var.detach().to(F64).exp()[idx])
    assert out.params["eps"] == DEFAULT_EPS and out.params["n_lf"] == DEFAULT_N_LF


def test_all_codes_when_few_images_or_n_centroids_none():
    model = VAE(latent_dim=2)
    x = tiny_data(20)
    assert len(GeometricMetric.from_encoder(model, x).centroids) == 20  # 20 ≤ 100 centroids
    assert len(GeometricMetric.from_encoder(model, x, n_centroids=None).centroids) == 20
    assert len(GeometricMetric.from_encoder(model, x, n_centroids=5).centroids) == 5


@pytest.fixture(scope="module")
def shipped():
    models = {t: rhvae.load_shipped("generation_5", t, seed=0) for t in ("vae", "hvae", "rhvae")}
    return models, rhvae.experiment_data("generation_5").train.x


def test_generate_paper_default_unchanged(shipped):
    models, _ = shipped
    for name, model in models.items():
        gen = rhvae.generate(model, 6, 4, seed=3)
        same = rhvae.generate(model, 6, 4, seed=3, sampler="paper")
        assert torch.equal(gen.images, same.images) and torch.equal(gen.z, same.z)
        if name == "rhvae":
            direct = hmc.riemannian_hmc(model.metric(), n_samples=6, mcmc_steps=4, seed=3)
            assert torch.equal(gen.z, direct.z) and gen.info["sampler"] == "riemannian_hmc"
            assert gen.info["acceptance_rate"] == direct.acceptance_rate
            with torch.no_grad():
                assert torch.equal(gen.images, model.decode(direct.z.to(model.dec_hidden.weight.dtype)))
        else:
            direct = hmc.sample_prior(model, n=6, seed=3)
            assert torch.equal(gen.z, direct.z) and torch.equal(gen.images, direct.images)
            assert gen.info["sampler"] == "prior"


def test_generate_prior_and_geometric_for_every_model(shipped):
    models, x = shipped
    for model in models.values():
        prior = rhvae.generate(model, 5, 4, seed=1, sampler="prior")
        assert torch.equal(prior.z, hmc.sample_prior(model, n=5, seed=1).z) and prior.info["sampler"] == "prior"
        geo = rhvae.generate(model, 5, 4, seed=1, sampler="geometric", x_train=x)
        direct = geometric_hmc(model, x, n_samples=5, mcmc_steps=4, seed=1)
        assert torch.equal(geo.z, direct.z) and torch.equal(geo.images, direct.images)
        info = geo.info
        assert info["sampler"] == "geometric_hmc" and info["model"] == type(model).__name__
        for key in ("mcmc_steps", "n_lf", "eps", "regularization", "tau", "bandwidth", "n_centroids", "seed"):
            assert key in info
        assert info["mcmc_steps"] == 4 and info["n_centroids"] == 100 and 0 <= info["acceptance_rate"] <= 1


def test_defaults_are_the_official_codes():
    assert (DEFAULT_EPS, DEFAULT_N_LF, DEFAULT_MCMC_STEPS) == (0.01, 10, 100)
    from rhvae.sampling import geometric

    assert geometric.DEFAULT_REGULARIZATION == 0.01 and geometric.DEFAULT_N_CENTROIDS == 100
    assert geometric.MAX_LEAPFROG_STEPS == hmc.MAX_LEAPFROG_STEPS


# --------------------------------------------------------------------------------------------------- refusals
def test_generate_refusals(shipped):
    models, x = shipped
    vae = models["vae"]
    with pytest.raises(ParameterError, match="x_train"):
        rhvae.generate(vae, 4, 2, sampler="geometric")
    with pytest.raises(ParameterError, match="sampler must be one of"):
        rhvae.generate(vae, 4, 2, sampler="gmm")
    with pytest.raises(ParameterError, match="x_train is used by sampler='geometric' only"):
        rhvae.generate(vae, 4, 2, x_train=x)
    with pytest.raises(ParameterError, match="temperature"):
        rhvae.generate(models["rhvae"], 4, 2, temperature=0.8, sampler="prior")
    with pytest.raises(ParameterError, match="mcmc_steps"):
        rhvae.generate(vae, 4, -1, sampler="geometric", x_train=x)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"regularization": 0.0}, "regularization"),
        ({"regularization": -1.0}, "regularization"),
        ({"tau": -0.1}, "tau"),
        ({"tau": math.nan}, "tau"),
        ({"eps": 0.0}, "eps"),
        ({"n_lf": 0}, "n_lf"),
        ({"mcmc_steps": -3}, "mcmc_steps"),
        ({"n_samples": 0}, "n_samples"),
        ({"n_centroids": 0}, "n_centroids"),
        ({"bandwidth": -1.0}, "bandwidth"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs, name):
    model = VAE(latent_dim=2)
    with pytest.raises(ParameterError, match=f"^{name} must be"):
        geometric_hmc(model, tiny_data(10), **({"n_samples": 2, "mcmc_steps": 1} | kwargs))


def test_bad_x_train_and_too_much_work_refused_before_work():
    model = VAE(latent_dim=2)
    with pytest.raises(ValueError, match="x_train must"):
        geometric_hmc(model, torch.rand(5, 10))
    with pytest.raises(ValueError, match="x_train must hold pixel values"):
        geometric_hmc(model, tiny_data(5) * 255)
    with pytest.raises(ParameterError, match="leapfrog steps"):
        geometric_hmc(model, tiny_data(5), n_samples=100_000, mcmc_steps=100_000, n_lf=1000)
    with pytest.raises(TypeError, match="model must be"):
        geometric_hmc("a model", tiny_data(5))
