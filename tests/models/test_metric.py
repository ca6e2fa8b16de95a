"""The learned metric and the closed-form forces, checked against independent formulas and autograd."""

import math

import torch

from rhvae.models.metric import LearnedMetric, spd_inverse_logdet


def test_G_inv_matches_the_formula(small_rhvae):
    model, _ = small_rhvae
    torch.manual_seed(1)
    z = torch.randn(7, 2, dtype=torch.float64) * 10
    expected = torch.zeros(7, 2, 2, dtype=torch.float64)
    for b in range(7):
        for c, M in zip(model.centroids, model.M, strict=True):
            expected[b] += M * math.exp(-float(((z[b] - c) ** 2).sum()) / model.temperature**2)
        expected[b] += model.regularization * torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(model.G_inv(z), expected, rtol=1e-12, atol=1e-12)


def test_G_is_symmetric_positive_definite_and_inverts_G_inv(small_rhvae):
    model, _ = small_rhvae
    z = torch.cat([model.centroids, torch.randn(50, 2, dtype=torch.float64) * 30])
    G, G_inv = model.G(z), model.G_inv(z)
    torch.testing.assert_close(G, G.transpose(1, 2))
    assert (torch.linalg.eigvalsh(G) > 0).all()
    assert (torch.linalg.eigvalsh(G_inv) >= model.regularization * (1 - 1e-12)).all()
    eye = torch.eye(2, dtype=torch.float64).expand(len(z), 2, 2)
    torch.testing.assert_close(G @ G_inv, eye, rtol=0, atol=1e-10)


def test_spd_inverse_logdet_closed_form_and_cholesky_agree():
    torch.manual_seed(0)
    for d in (2, 3):
        A = torch.randn(5, d, d, dtype=torch.float64)
        A = A @ A.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
        inv, logdet = spd_inverse_logdet(A)
        torch.testing.assert_close(inv, torch.linalg.inv(A))
        torch.testing.assert_close(logdet, torch.logdet(A))


def _random_metric(d=3, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(n, d, d, dtype=torch.float64, generator=g).tril()
    return LearnedMetric(torch.randn(n, d, dtype=torch.float64, generator=g), L @ L.transpose(1, 2), 0.9, 0.1)


def test_closed_form_metric_forces_equal_autograd():
    """Tolerance: 1e-10 relative in float64."""
    for d in (2, 3):
        metric = _random_metric(d)
        z = torch.randn(8, d, dtype=torch.float64, requires_grad=True)
        rho = torch.randn(8, d, dtype=torch.float64)
        log_det = torch.logdet(metric.G_inv(z)).sum()
        quad = (rho[:, None, :] @ metric.G_inv(z) @ rho[:, :, None]).sum()
        (auto_logdet,) = torch.autograd.grad(log_det, z)
        (auto_quad,) = torch.autograd.grad(quad, z)
        at = metric.at(z.detach())
        torch.testing.assert_close(metric.grad_log_det_G_inv(at), auto_logdet, rtol=1e-10, atol=1e-12)
        jacobian = metric.jacobian(at).reshape(8, d, d, d)  # ∂(G⁻¹)_jk/∂z_l
        quadratic_force = torch.einsum("bj,bk,bjkl->bl", rho, rho, jacobian)  # ∇_z ρᵀ G⁻¹(z) ρ, ρ held fixed
        torch.testing.assert_close(quadratic_force, auto_quad, rtol=1e-10, atol=1e-12)
        (auto_sampler,) = torch.autograd.grad(metric.log_sqrt_det_G_inv(z).sum(), z)
        torch.testing.assert_close(metric.grad_log_sqrt_det_G_inv(z.detach()), auto_sampler, rtol=1e-10, atol=1e-12)


def test_closed_form_potential_gradient_equals_autograd(small_rhvae):
    from rhvae.models import bernoulli_log_likelihood, standard_normal_log_density

    model, x = small_rhvae
    z = torch.randn(len(x), 2, dtype=torch.float64, requires_grad=True)
    U = -(bernoulli_log_likelihood(model.decode_logits(z), x) + standard_normal_log_density(z)).sum()
    (auto,) = torch.autograd.grad(U, z)
    closed, logits = model.potential_grad(z.detach(), x)
    torch.testing.assert_close(closed, auto, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits, model.decode_logits(z.detach()))


def test_metric_is_the_training_points_after_freezing(metric_data):
    import rhvae

    torch.manual_seed(0)
    model = rhvae.RHVAE()
    model.freeze_metric(metric_data.train.x)
    assert model.centroids.shape == (120, 2) and model.M.shape == (120, 2, 2)
    torch.testing.assert_close(model.centroids, model.encode(metric_data.train.x)[0].detach())
    assert (torch.linalg.eigvalsh(model.M) > 0).all()
