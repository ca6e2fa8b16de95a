"""The RHVAE's training-scheme options: the release's gradient, the bounded metric scale, a learned step, warm-up
and a separate learning rate for the metric network (docs/stability.md)."""

import math

import pytest
import torch

import rhvae
from rhvae.models.metric import LearnedMetric, sym2_max_eigenvalue
from rhvae.training import train


def _leapfrog_objective(model, x, seed=0):
    g = torch.Generator().manual_seed(seed)
    return model(x, g).objective.mean()


def test_release_gradient_keeps_the_values_and_treats_earlier_iterates_as_constants():
    """Same forward values; the gradient is autograd of a reference whose iterates before the last are detached."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    centroids = torch.randn(7, 2, dtype=torch.float64, generator=g)
    L = torch.randn(7, 2, 2, dtype=torch.float64, generator=g).tril()
    M = (L @ L.transpose(1, 2)).requires_grad_()
    metric = LearnedMetric(centroids, M, 1.0, 0.1)
    z = torch.randn(4, 2, dtype=torch.float64, generator=g)
    rho = torch.randn(4, 2, dtype=torch.float64, generator=g)
    base = rho * 0.9
    scale = torch.tensor([[0.05]], dtype=torch.float64)

    exact, _ = metric.solve_momentum(metric.at(z), rho, base, scale, 4, exact_gradient=True)
    release, _ = metric.solve_momentum(metric.at(z), rho, base, scale, 4, exact_gradient=False)
    torch.testing.assert_close(release, exact, rtol=0, atol=1e-12)
    grad_release = torch.autograd.grad(release.sum(), M)[0]
    grad_exact = torch.autograd.grad(exact.sum(), M)[0]

    @torch.enable_grad()
    def quadratic_force(at, r):  # ∇_z rᵀ G⁻¹ r, plain autograd
        zz = at.detach().requires_grad_()
        G_inv = (torch.exp(-((zz[:, None] - centroids) ** 2).sum(-1))[:, :, None, None] * M).sum(1)
        G_inv = G_inv + 0.1 * torch.eye(2, dtype=torch.float64)
        q = (r[:, None, :] @ G_inv @ r[:, :, None]).sum()
        return torch.autograd.grad(q, zz, create_graph=True)[0]

    with torch.no_grad():
        previous = rho
        for _ in range(4):
            previous = base - scale * quadratic_force(z, previous)
    reference = base - scale * quadratic_force(z, previous.detach())
    grad_reference = torch.autograd.grad(reference.sum(), M)[0]
    torch.testing.assert_close(grad_release, grad_reference, rtol=1e-9, atol=1e-12)
    assert (grad_release - grad_exact).abs().max() > 1e-6  # the two gradients differ: the check can fail


def test_bounded_metric_never_exceeds_its_peak_even_for_coincident_centroids_and_huge_factors():
    model = rhvae.RHVAE(hidden_dim=16, metric_scale="bounded").double()
    with torch.no_grad():
        model.metric_diag.bias.fill_(8.0)  # exp(8)² ≈ 9e6 without the bound
        model.metric_lower.bias.fill_(50.0)
        model.enc_mu.weight.zero_()  # every centroid at the same point
        model.metric_hidden.weight.zero_()  # and every Mᵢ the same matrix
    x = rhvae.experiment_data("metric", n_per_class=10).train.x.double()
    model.freeze_metric(x)
    metric = model.metric()
    peak = model.metric_peak()
    assert float(metric.max_eigenvalue()) <= peak + 1e-12
    assert float(metric.max_eigenvalue()) > 0.99 * peak  # the bound is reached, not just respected
    z = torch.randn(100, 2, dtype=torch.float64)
    assert float(sym2_max_eigenvalue(metric.G_inv(z)).max()) <= peak + 1e-12
    # the paper's free metric at the same parameters runs away
    free = rhvae.RHVAE(hidden_dim=16).double()
    free.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("centroids", "M")}, strict=False)
    free.freeze_metric(x)
    assert float(free.metric().max_eigenvalue()) > 1e3 * peak


def test_bounded_metric_peak_is_where_the_wall_limit_allows_eps_lf():
    model = rhvae.RHVAE(eps_lf=0.1, temperature=1.0, regularization=0.1, beta_zero=0.3, metric_scale="bounded")
    assert model.metric_peak() == pytest.approx(0.5 * math.sqrt(0.1 * 0.3) / 0.1)
    with pytest.raises(rhvae.models.ConfigError, match="metric_scale='bounded'"):
        rhvae.RHVAE(eps_lf=1.0, metric_scale="bounded")


def test_scheme_options_are_validated_and_stay_out_of_the_default_config():
    assert set(rhvae.RHVAE().config()).isdisjoint({"gradient", "metric_scale", "learn_step"})
    config = rhvae.RHVAE(gradient="release", learn_step=True).config()
    assert config["gradient"] == "release" and config["learn_step"] is True
    assert rhvae.RHVAE(**config).config() == config
    for bad in ({"gradient": "exactly"}, {"metric_scale": "huge"}, {"learn_step": 1}):
        with pytest.raises(rhvae.models.ConfigError, match=next(iter(bad))):
            rhvae.RHVAE(**bad)


def test_learned_step_scales_each_leapfrog_step_and_gets_a_gradient():
    x = rhvae.experiment_data("metric", n_per_class=4).train.x.double()
    torch.manual_seed(0)
    model = rhvae.RHVAE(hidden_dim=16, n_lf=3, learn_step=True).double()
    with torch.no_grad():
        model.step_logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    assert float(model.step_of(1, 0.1).detach()) == pytest.approx(0.05)
    objective = _leapfrog_objective(model, x)
    (grad,) = torch.autograd.grad(objective, model.step_logits)
    h = 1e-6
    for k in range(3):
        with torch.no_grad():
            model.step_logits[k] += h
        up = _leapfrog_objective(model, x)
        with torch.no_grad():
            model.step_logits[k] -= 2 * h
        down = _leapfrog_objective(model, x)
        with torch.no_grad():
            model.step_logits[k] += h
        assert float(grad[k]) == pytest.approx(float(up - down) / (2 * h), rel=1e-4, abs=1e-7)


def test_warmup_trains_the_vae_part_only_and_metric_lr_sets_the_metric_networks_rate():
    data = rhvae.experiment_data("metric", n_per_class=4)
    torch.manual_seed(0)
    model = rhvae.RHVAE(hidden_dim=16, n_lf=2)
    metric_before = model.metric_diag.weight.detach().clone()
    decoder_before = model.dec_out.weight.detach().clone()
    train(model, data.train.x, epochs=2, warmup_epochs=2, progress=False)
    torch.testing.assert_close(model.metric_diag.weight, metric_before, rtol=0, atol=0)  # the flow was off
    assert (model.dec_out.weight - decoder_before).abs().max() > 0
    history = train(model, data.train.x, epochs=2, metric_lr=0.0 + 1e-12, progress=False)
    assert history.settings["metric_lr"] == 1e-12
    assert (model.metric_diag.weight - metric_before).abs().max() < 1e-9  # the metric network barely moves


def test_normalized_metric_has_a_fixed_scale_whatever_the_network_outputs():
    """Every Mᵢ has λmax = (κ_max − λ)/N, tiny or huge factors alike: the metric can neither collapse nor run away."""
    x = rhvae.experiment_data("metric", n_per_class=10).train.x.double()
    for diag_bias in (-20.0, 0.0, 20.0):
        torch.manual_seed(0)
        model = rhvae.RHVAE(hidden_dim=16, metric_scale="normalized").double()
        with torch.no_grad():
            model.metric_diag.bias.fill_(diag_bias)
        model.freeze_metric(x)
        expected = (model.metric_peak() - model.regularization) / len(x)
        torch.testing.assert_close(sym2_max_eigenvalue(model.M), torch.full((len(x),), expected, dtype=torch.float64))
        metric = model.metric()
        assert float(metric.max_eigenvalue()) <= model.metric_peak() + 1e-12
        # at the codes G⁻¹ − λI is the kernel average of the Mᵢ: never flat where codes are
        assert float((sym2_max_eigenvalue(metric.G_inv(model.centroids)) - model.regularization).min()) > expected


def test_authors_momentum_density_is_the_density_it_is_drawn_from():
    """With the release's ρ₀ = L(x)γ/√β₀ the importance weight divides by N(ρ₀; 0, L Lᵀ/β₀), so the true ELBO of
    a model trained with the release's objective is still a bound."""
    x = rhvae.experiment_data("metric", n_per_class=3).train.x.double()
    torch.manual_seed(0)
    model = rhvae.RHVAE(hidden_dim=16, objective="authors", beta_zero=0.3).double()
    rho0, log_density = model.authors_initial_momentum(x, torch.Generator().manual_seed(0))
    reference = torch.distributions.MultivariateNormal(
        torch.zeros(2, dtype=torch.float64), scale_tril=model.lower_factor(x) / math.sqrt(0.3)
    ).log_prob(rho0)
    torch.testing.assert_close(log_density, reference)


def test_wall_limit_shrinks_with_the_release_momentum_scale():
    """ε κ p(x) ≤ s_w T: a metric network whose L(x) grows cannot buy a larger step for the release's momentum."""
    x = rhvae.experiment_data("metric", n_per_class=4).train.x
    torch.manual_seed(0)
    model = rhvae.RHVAE(hidden_dim=16, objective="authors", eps_lf=10.0)  # eps_lf high: only the bound acts
    model.freeze_metric(x)
    model.eval()
    mu = model.encode(x)[0]
    metric = model.metric()
    small = model.step_size(x, mu, metric)
    with torch.no_grad():
        model.metric_diag.bias += 3.0  # L(x) × e³: the momentum 20× larger (the frozen metric is unchanged)
    large = model.step_size(x, mu, metric)
    flat = 1.0 / math.sqrt(model.regularization * model.beta_zero)
    scale = model.momentum_scale(x)
    assert float(scale.min()) > flat  # the release's momentum outgrew the flat-metric scale
    kappa = float(metric.max_eigenvalue())
    wall = 0.5 * model.temperature / (kappa * scale)
    # the frequency limit does not depend on L(x): where the wall is the smaller limit, ε(x) is the wall
    wall_binds = wall < large[:, 0] * (1 + 1e-5)
    assert bool(wall_binds.any())
    torch.testing.assert_close(large[wall_binds, 0], wall[wall_binds], rtol=1e-5, atol=0)
    assert float(large.max()) < float(small.max())


def test_release_objective_with_the_stability_bound_trains_at_the_seeds_settings():
    """The seed's RHVAE setting (eps_lf 0.1, n_lf 10, β₀ 0.3, T 1, λ 0.1, full batch) on real digits: 40 epochs
    without divergence, and the flow moves (the plain step diverges in epoch 1 here)."""
    data = rhvae.experiment_data("metric")
    torch.manual_seed(0)
    model = rhvae.RHVAE(objective="authors")
    history = train(model, data.train.x, data.test.x, epochs=40, seed=0, threads=1, progress=False)
    assert history.status == "finished" and all(math.isfinite(r.train_loss) for r in history.epochs)
    assert max(r.fixed_point_residual for r in history.epochs) < 1.0
    torch.manual_seed(0)
    with pytest.raises(rhvae.training.TrainingDiverged):
        train(rhvae.RHVAE(objective="authors", step_bound="none"), data.train.x, epochs=2, progress=False)
