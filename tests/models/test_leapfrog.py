"""The generalized leapfrog: time reversibility, volume preservation, tempering, and the VAE limit."""

import math

import pytest
import torch

import rhvae
from tests.conftest import make_small_rhvae


def _step(model, x, z, rho):
    metric = model.metric()
    grad_U, _ = model.potential_grad(z, x)
    z_new, rho_new, *_ = model.leapfrog(z, rho, x, grad_U, metric.at(z), metric)
    return z_new, rho_new


def _start(model, x, seed=0):
    g = torch.Generator().manual_seed(seed)
    # start next to the (spread) centroids, where the metric varies most
    d = model.latent_dim
    z = model.centroids[: len(x)] + torch.randn(len(x), d, dtype=torch.float64, generator=g)
    rho = torch.randn(len(x), d, dtype=torch.float64, generator=g)
    return z, rho


@pytest.fixture(params=[2, 3, 8])
def rhvae_any_dim(request):
    """``make_small_rhvae`` at the paper's latent dimension 2 (compiled kernels where they build) and at 3 and 8
    (the PyTorch nodes)."""
    return make_small_rhvae(request.param)


def test_one_step_is_time_reversible(rhvae_any_dim):
    model, x = rhvae_any_dim
    z, rho = _start(model, x)
    z1, rho1 = _step(model, x, z, rho)
    assert (z1 - z).abs().max() > 1e-3  # the step really moves
    z2, rho2 = _step(model, x, z1, -rho1)
    torch.testing.assert_close(z2, z, rtol=0, atol=1e-9)
    torch.testing.assert_close(-rho2, rho, rtol=0, atol=1e-9)


def test_reversibility_fails_without_the_implicit_solve(small_rhvae):
    """The check can fail: with one fixed-point iteration the step is measurably irreversible."""
    model, x = small_rhvae
    model.n_fixed_point = 1
    z, rho = _start(model, x)
    z1, rho1 = _step(model, x, z, rho)
    z2, _ = _step(model, x, z1, -rho1)
    assert (z2 - z).abs().max() > 1e-7


def test_one_step_preserves_volume(rhvae_any_dim):
    model, x = rhvae_any_dim
    z, rho = _start(model, x[:1])
    d = model.latent_dim

    def flow(state):
        z_new, rho_new = _step(model, x[:1], state[None, :d], state[None, d:])
        return torch.cat([z_new[0], rho_new[0]])

    jac = torch.autograd.functional.jacobian(flow, torch.cat([z[0], rho[0]]))
    assert abs(float(torch.linalg.det(jac)) - 1.0) < 1e-8
    assert (jac - torch.eye(2 * d, dtype=torch.float64)).abs().max() > 1e-3  # not trivially the identity


def test_tempering_schedule_ends_at_one_and_matches_the_formula():
    model = rhvae.HVAE(n_lf=4, beta_zero=0.3)
    betas = model.tempering_schedule()
    assert betas[0] == pytest.approx(0.3) and betas[-1] == pytest.approx(1.0)
    k = 2
    assert 1 / math.sqrt(betas[k]) == pytest.approx((1 - 1 / math.sqrt(0.3)) * (k / 4) ** 2 + 1 / math.sqrt(0.3))
    assert all(a < b for a, b in zip(betas, betas[1:], strict=False))


def _same_weights(source, target):
    target.load_state_dict(source.state_dict(), strict=False)
    return target


@pytest.mark.parametrize("cls", [rhvae.HVAE, rhvae.RHVAE])
def test_without_flow_the_objective_is_the_vae_one(cls, metric_data):
    x = metric_data.train.x[:40].double()
    torch.manual_seed(0)
    vae = rhvae.VAE().double()
    model = _same_weights(vae, cls(n_lf=0, beta_zero=1.0, objective="elbo").double())  # the true ELBO's ρ₀ cancels
    if isinstance(model, rhvae.RHVAE):
        model.freeze_metric(x)
    model.eval()
    ref = vae(x, torch.Generator().manual_seed(5)).log_weight
    out = model(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(out.log_weight, ref, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out.objective, ref, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("cls", [rhvae.HVAE, rhvae.RHVAE])
def test_vanishing_step_size_tends_to_the_vae(cls, metric_data):
    x = metric_data.train.x[:40].double()
    torch.manual_seed(0)
    vae = rhvae.VAE().double()
    ref = vae(x, torch.Generator().manual_seed(5)).log_weight
    gaps = []
    for eps in (1e-3, 1e-5):
        model = _same_weights(vae, cls(n_lf=10, eps_lf=eps, beta_zero=1.0, objective="elbo").double())
        if isinstance(model, rhvae.RHVAE):
            model.freeze_metric(x)
        model.eval()
        gaps.append(float((model(x, torch.Generator().manual_seed(5)).log_weight - ref).detach().abs().max()))
    assert gaps[1] < 1e-3 and gaps[1] < gaps[0]


def test_tempering_jacobian_is_in_the_weight(metric_data):
    """n_lf=0 with beta_zero<1: rho0 ~ N(0, I/b0) and the d/2 log b0 Jacobian cancel against the rho density."""
    x = metric_data.train.x[:20].double()
    torch.manual_seed(0)
    vae = rhvae.VAE().double()
    model = _same_weights(vae, rhvae.HVAE(n_lf=0, beta_zero=0.3).double())
    out = model(x, torch.Generator().manual_seed(1))
    ref = vae(x, torch.Generator().manual_seed(1)).log_weight
    rho0 = out.rho0
    # log N(rho0; 0, I) - log N(rho0; 0, I/b0) + (d/2) log b0 = -(1 - b0)/2 |rho0|^2
    torch.testing.assert_close(out.log_weight - ref, -0.35 * (rho0**2).sum(-1), rtol=1e-10, atol=1e-10)


def test_the_flow_conserves_the_right_hamiltonian(small_rhvae):
    """H(z, ρ) = U(z) + ½ log det G(z) + ½ ρᵀG⁻¹(z)ρ is conserved to O(ε²): a wrong sign or a missing force in
    ∇_z H would still give a reversible, volume-preserving map, but not this."""
    from rhvae.models import bernoulli_log_likelihood, standard_normal_log_density
    from rhvae.models.metric import quadratic_form

    model, x = small_rhvae
    metric = model.metric()

    def hamiltonian(z, rho):
        at = metric.at(z)
        U = -(bernoulli_log_likelihood(model.decode_logits(z), x) + standard_normal_log_density(z))
        return U - 0.5 * at.log_det_G_inv + 0.5 * quadratic_form(at.G_inv, rho)

    z0, rho0 = _start(model, x)
    model.eps_lf = 0.005
    z, rho = z0, rho0
    for _ in range(40):
        z, rho = _step(model, x, z, rho)
    error = (hamiltonian(z, rho) - hamiltonian(z0, rho0)).abs().max()
    kinetic_change = (0.5 * quadratic_form(metric.G_inv(z), rho) - 0.5 * quadratic_form(metric.G_inv(z0), rho0)).abs()
    assert kinetic_change.max() > 0.5  # the energy really moves between its terms
    assert error < 0.02, float(error)


def test_fixed_point_iterations_converge(small_rhvae):
    model, x = small_rhvae
    z, rho = _start(model, x)
    metric = model.metric()
    grad_U, _ = model.potential_grad(z, x)
    *_, residual = model.leapfrog(z, rho, x, grad_U, metric.at(z), metric)
    assert residual < 1e-12
    model.n_fixed_point = 2
    *_, residual = model.leapfrog(z, rho, x, grad_U, metric.at(z), metric)
    assert residual > 1e-8


def test_decoder_curvature_equals_the_autograd_hessian(small_rhvae):
    from rhvae.models import bernoulli_log_likelihood, standard_normal_log_density

    model, x = small_rhvae
    z = torch.randn(4, 2, dtype=torch.float64)
    curvature = model.potential_curvature(z).detach()
    for b in range(4):

        def U(zb, b=b):
            logits = model.decode_logits(zb[None])
            return -(bernoulli_log_likelihood(logits, x[b : b + 1]) + standard_normal_log_density(zb[None])).sum()

        hessian = torch.autograd.functional.hessian(U, z[b])
        assert float(curvature[b]) == pytest.approx(float(torch.linalg.eigvalsh(hessian)[-1]), rel=1e-10)


def test_bounded_step_depends_on_each_image_only(small_rhvae):
    model, x = small_rhvae
    model.eps_lf = 10.0  # make the bound active
    metric = model.metric()
    mu = model.encode(x)[0]
    full = model.step_size(x, mu, metric)
    part = model.step_size(x[3:5], mu[3:5], metric)
    assert full.shape == (len(x), 1) and (full < 10.0).all()
    torch.testing.assert_close(part, full[3:5])
    kappa = float(metric.max_eigenvalue())
    wall = 0.5 * model.temperature * math.sqrt(model.regularization * model.beta_zero) / kappa
    assert float(full.detach().max()) <= wall * (1 + 1e-12)
    model.step_bound = "none"
    assert model.step_size(x, mu, metric) == 10.0
