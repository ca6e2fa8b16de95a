"""The fast paths compute what a slow, plain-autograd reference computes (float64, to rounding).

The reference below is written independently of ``rhvae.models.metric``'s regrouped sums: the metric is an explicit
einsum over the centroids, every force ∇_z H is ``torch.autograd.grad`` of the Hamiltonian with
``create_graph=True`` (so parameter gradients go through a double backward), the stability bound uses
``torch.linalg.eigvalsh`` of the decoder's Hessian, and in training the centroids come from a second encoder
pass, as the previous implementation did. The leapfrog step, the forward objective and the gradient of the
objective with respect to every parameter must agree with the fast implementation.

Every test here runs twice: with the compiled d = 2 kernels (``rhvae.models.native``, where they build) and with the
pure-PyTorch nodes (``RHVAE_NATIVE=0``); the model-level ones also at latent dimensions 3 and 8, where only the
PyTorch nodes exist (the compiled kernels are d = 2 only, so at d ≠ 2 both runs take the PyTorch path).
"""

import math

import pytest
import torch

import rhvae
from rhvae.models import bernoulli_log_likelihood, native, standard_normal_log_density
from rhvae.models.metric import MetricAt, spd_inverse_logdet, sym2_max_eigenvalue


@pytest.fixture(params=["compiled", "pytorch"], autouse=True)
def node_implementation(request, monkeypatch):
    """The nodes of the leapfrog as compiled kernels or as pure-PyTorch code."""
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, "1" if request.param == "compiled" else "0")
    if request.param == "compiled" and native.kernels() is None:
        pytest.skip("the compiled kernels do not build here")
    return request.param


class ReferenceMetric:
    constant = False

    def __init__(self, centroids, M, temperature, regularization):
        self.centroids, self.M, self.T, self.lam = centroids, M, temperature, regularization

    def G_inv(self, z):
        w = torch.exp(-((z[:, None, :] - self.centroids[None]) ** 2).sum(-1) / self.T**2)
        eye = torch.eye(z.shape[1], dtype=z.dtype)
        return torch.einsum("bn,nij->bij", w, self.M) + self.lam * eye

    def at(self, z):
        G_inv = self.G_inv(z)
        return MetricAt(z, None, G_inv, torch.linalg.inv(G_inv), torch.logdet(G_inv))

    def max_eigenvalue(self):
        return torch.linalg.eigvalsh(self.G_inv(self.centroids))[:, -1].max()


class ReferenceRHVAE(rhvae.RHVAE):
    """The same model with the slow reference metric, forces, curvature and leapfrog."""

    def flow_metric(self, x, mu, factor=None):
        if self.training:  # L(x) from a pass of its own, not the forward's shared one (``metric_factor``)
            L = self.lower_factor(x)
            return ReferenceMetric(self.encode(x)[0], L @ L.transpose(-1, -2), self.temperature, self.regularization)
        return ReferenceMetric(self.centroids, self.M, self.temperature, self.regularization)

    def potential_curvature(self, z):
        hessians = []  # ∇²U = Jᵀ diag(σ(1 − σ)) J + I per point, from the previous broadcast formulation
        for b in range(len(z)):
            pre = self.dec_hidden(z[b : b + 1])
            sig = torch.sigmoid(self.dec_out(torch.relu(pre)))[0]
            jac = self.dec_out.weight @ ((pre[0] > 0).to(z.dtype)[:, None] * self.dec_hidden.weight)
            hessians.append(jac.T @ ((sig * (1 - sig))[:, None] * jac) + torch.eye(z.shape[1], dtype=z.dtype))
        return torch.linalg.eigvalsh(torch.stack(hessians))[:, -1]

    def hamiltonian(self, z, rho, x, metric):
        logits = self.decode_logits(z)
        U = -(bernoulli_log_likelihood(logits, x) + standard_normal_log_density(z))
        G_inv = metric.G_inv(z)
        quad = (rho[:, None, :] @ G_inv @ rho[:, :, None])[:, 0, 0]
        return U - 0.5 * torch.logdet(G_inv) + 0.5 * quad

    def grad_H(self, z, rho, x, metric):
        """∂H/∂z with ρ held fixed, differentiable (create_graph) in everything z and ρ depend on: the partial
        derivative is taken through a zero shift δ of z that nothing else depends on."""
        delta = torch.zeros_like(z, requires_grad=True)
        H = self.hamiltonian(z + delta, rho, x, metric).sum()
        return torch.autograd.grad(H, delta, create_graph=True)[0]

    def _leapfrog(self, z, rho, x, grad_U, at_z, metric, eps=None):
        half = 0.5 * (self.eps_lf if eps is None else eps)
        rho_half = rho - half * self.grad_H(z, rho, x, metric)
        for _ in range(self.n_fixed_point):
            rho_half = rho - half * self.grad_H(z, rho_half, x, metric)
        G_inv_z = metric.G_inv(z)
        z_new = z + 2 * half * (G_inv_z @ rho_half[:, :, None])[:, :, 0]
        for _ in range(self.n_fixed_point):
            z_new = z + half * ((G_inv_z + metric.G_inv(z_new)) @ rho_half[:, :, None])[:, :, 0]
        rho_new = rho_half - half * self.grad_H(z_new, rho_half, x, metric)
        return z_new, rho_new, None, self.decode_logits(z_new), metric.at(z_new), z.new_zeros(())


#: The latent dimensions every model-level equivalence runs at: the paper's 2 (compiled kernels) and two others.
DIMS = [2, 3, 8]


def _pair(step_bound, eps_lf=0.05, d=2):
    data = rhvae.experiment_data("metric", n_per_class=4)
    x = data.train.x.double()
    torch.manual_seed(0)
    config = dict(latent_dim=d, hidden_dim=24, n_lf=3, eps_lf=eps_lf, n_fixed_point=4, step_bound=step_bound)
    fast = rhvae.RHVAE(**config).double()
    with torch.no_grad():  # a metric that varies on the scale of T, with some strength
        fast.metric_diag.bias.add_(0.5)
        fast.enc_mu.weight.mul_(20.0)
    fast.freeze_metric(x)
    ref = ReferenceRHVAE(**config).double()
    ref.centroids, ref.M = fast.centroids.clone(), fast.M.clone()
    ref.load_state_dict(fast.state_dict())
    return fast, ref, x


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("step_bound", ["none", "stability"])
@pytest.mark.parametrize("training", [True, False])
def test_forward_objective_and_parameter_gradients_equal_the_autograd_reference(step_bound, training, d):
    fast, ref, x = _pair(step_bound, eps_lf=0.05 if step_bound == "none" else 1.0, d=d)
    results = []
    for model in (fast, ref):
        model.train(training)
        out = model(x, torch.Generator().manual_seed(3))
        model.zero_grad()
        (-out.objective.mean()).backward()
        grads = {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
        results.append((out, grads))
    (a, ga), (b, gb) = results
    assert (a.zK - a.z0).abs().max() > 1e-3  # the flow really moves
    for field in ("z0", "zK", "rhoK", "log_weight", "objective"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-9, atol=1e-9)
    assert a.step_size == pytest.approx(b.step_size, rel=1e-10)
    if step_bound == "stability":
        assert a.step_size < fast.eps_lf  # the bound is active, so its gradient is checked too
    for name in ga:
        scale = gb[name].abs().max().clamp_min(1e-12)
        assert (ga[name] - gb[name]).abs().max() / scale < 1e-8, name
        if training or not name.startswith("metric"):
            assert gb[name].abs().max() > 0, name  # the check is not vacuous


@pytest.mark.parametrize("d", DIMS)
def test_leapfrog_step_equals_the_autograd_reference(d):
    fast, ref, x = _pair("none", d=d)
    fast.eval()
    metric = fast.metric()
    g = torch.Generator().manual_seed(1)
    z = fast.centroids + 0.3 * torch.randn(fast.centroids.shape, dtype=torch.float64, generator=g)
    rho = torch.randn(z.shape, dtype=torch.float64, generator=g)
    grad_U, _ = fast.potential_grad(z, x)
    z1, rho1, grad_U1, logits1, at1, residual = fast.leapfrog(z, rho, x, grad_U, metric.at(z), metric)
    ref.eval()
    ref_metric = ref.flow_metric(x, None)
    z2, rho2, _, logits2, at2, _ = ref._leapfrog(z.clone(), rho, x, None, None, ref_metric)
    assert isinstance(residual, float)
    torch.testing.assert_close(z1, z2.detach(), rtol=0, atol=1e-11)
    torch.testing.assert_close(rho1, rho2.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(logits1, logits2.detach(), rtol=1e-11, atol=1e-10)
    torch.testing.assert_close(at1.G_inv, at2.G_inv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(at1.log_det_G_inv, at2.log_det_G_inv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", DIMS)
def test_metric_jacobian_gives_the_term_by_term_forces(d):
    fast, _, _ = _pair("none", d=d)
    metric = fast.metric()
    g = torch.Generator().manual_seed(2)
    z = fast.centroids[:5] + torch.randn(5, d, dtype=torch.float64, generator=g)
    rho = torch.randn(5, d, dtype=torch.float64, generator=g)
    at = metric.at(z)
    w = torch.exp(-((z[:, None] - metric.centroids[None]) ** 2).sum(-1) / metric.temperature**2)
    dw = -2 * w[:, :, None] * (z[:, None] - metric.centroids[None]) / metric.temperature**2  # (B, N, d)
    traces = torch.einsum("bjk,nkj->bn", at.G, metric.M)
    quads = torch.einsum("bj,njk,bk->bn", rho, metric.M, rho)
    torch.testing.assert_close(metric.grad_log_det_G_inv(at), (traces[:, :, None] * dw).sum(1), rtol=1e-10, atol=1e-12)
    quadratic_force = torch.einsum("bj,bk,bjkl->bl", rho, rho, metric.jacobian(at).reshape(5, d, d, d))
    torch.testing.assert_close(quadratic_force, (quads[:, :, None] * dw).sum(1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(at.weights, w, rtol=1e-12, atol=1e-14)
    # a MetricAt built without the Jacobian (by hand) gets it from its weights
    bare = MetricAt(z, w, at.G_inv, at.G, at.log_det_G_inv)
    torch.testing.assert_close(metric.jacobian(bare), metric.jacobian(at))


@pytest.mark.parametrize("d", [2, 3, 8])
def test_closed_form_eigenvalue_inverse_and_logdet_equal_linalg(d):
    g = torch.Generator().manual_seed(d)
    A = torch.randn(50, d, d, dtype=torch.float64, generator=g)
    A = (A @ A.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)).requires_grad_()
    lam = sym2_max_eigenvalue(A)
    ref = torch.linalg.eigvalsh(A)[:, -1]
    torch.testing.assert_close(lam, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn(50, dtype=torch.float64, generator=g)
    (g1,) = torch.autograd.grad((lam * weights).sum(), A)
    (g2,) = torch.autograd.grad((ref * weights).sum(), A)
    sym = lambda t: 0.5 * (t + t.transpose(1, 2))  # noqa: E731 - eigvalsh's gradient is the symmetric part
    torch.testing.assert_close(sym(g1), sym(g2), rtol=1e-9, atol=1e-10)
    inv, logdet = spd_inverse_logdet(A)
    torch.testing.assert_close(inv, torch.linalg.inv(A), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logdet, torch.logdet(A), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", DIMS)
def test_max_eigenvalue_equals_eigvalsh_over_the_centroids(d):
    fast, _, _ = _pair("none", d=d)
    metric = fast.metric()
    expected = torch.linalg.eigvalsh(metric.G_inv(metric.centroids))[:, -1].max()
    assert float(metric.max_eigenvalue()) == pytest.approx(float(expected), rel=1e-12)
    assert math.isfinite(float(metric.max_eigenvalue(chunk=3)))
    assert float(metric.max_eigenvalue(chunk=3)) == pytest.approx(float(expected), rel=1e-12)


def _gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("d", DIMS)
def test_decoder_force_node_gradcheck(d):
    """DecoderForce's hand-written backward against finite differences, with either output used alone too."""
    from rhvae.models.autograd_nodes import DecoderForce

    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=g).requires_grad_()

    z, W1, b1, W2, b2 = rand(5, d), rand(6, d), rand(6), rand(7, 6), rand(7)
    x = torch.rand(5, 7, dtype=torch.float64, generator=g)
    _gradcheck(lambda *p: DecoderForce.apply(p[0], x, *p[1:]), z, W1, b1, W2, b2)
    _gradcheck(lambda *p: DecoderForce.apply(p[0], x, *p[1:])[0], z, W1, b1, W2, b2)
    _gradcheck(lambda *p: DecoderForce.apply(p[0], x, *p[1:])[1], z, W1, b1, W2, b2)


@pytest.mark.parametrize("d", DIMS)
def test_fixed_point_and_metric_nodes_gradcheck(d):
    """MomentumSolve and PositionSolve (the implicit leapfrog iterations), MomentumKick (the explicit momentum
    updates) and MetricEvaluation (the metric at z) against finite differences, through the centroids and matrices
    of the metric too. G is also given transposed (column-major, as LAPACK's inverse returns it at d > 2): the
    backward must not assume contiguous inputs."""
    from rhvae.models.autograd_nodes import MetricEvaluation, MomentumKick, MomentumSolve, PositionSolve
    from rhvae.models.metric import LearnedMetric

    g = torch.Generator().manual_seed(1)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, dtype=torch.float64, generator=g)).requires_grad_()

    rho, base, J = rand(4, d), rand(4, d), rand(4, d * d, d, scale=0.3 / d)
    for n in (0, 3):
        _gradcheck(lambda *a, n=n: MomentumSolve.apply(*a, n)[0], rho, base, J)
    grad_U = rand(4, d)
    G_column_major = rand(4, d, d).detach().mT.requires_grad_()
    for G in (rand(4, d, d), G_column_major):
        for half in (rand(4, 1, scale=0.1), rand(1, 1, scale=0.1)):  # a step per row, or one for all
            _gradcheck(lambda *a: MomentumKick.apply(*a), base, half, grad_U, rho, J, G)
            _gradcheck(lambda b, h, g, j, m: MomentumKick.apply(b, h, g, None, j, m), base, half, grad_U, J, G)

    L = torch.randn(6, d, d, dtype=torch.float64, generator=g).tril()
    M = (L @ L.transpose(1, 2) / d).requires_grad_()
    centroids, z_start, z_half, u = rand(6, d), rand(4, d), rand(4, d), rand(4, d, scale=0.1)

    def position(z_start, z_half, u, centroids, M, n=3):
        metric = LearnedMetric(centroids, M, temperature=1.3, regularization=0.1)
        return PositionSolve.apply(z_start, z_half, u, centroids, M, metric, n)[0]

    _gradcheck(position, z_start, z_half, u, centroids, M)

    def evaluation(z, centroids, M):
        metric = LearnedMetric(centroids, M, temperature=1.3, regularization=0.1)
        return MetricEvaluation.apply(z, centroids, M, metric)[:4]

    _gradcheck(evaluation, z_start, centroids, M)
