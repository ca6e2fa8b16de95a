"""AIS log-likelihood and BDMC (rhvae.evaluation.ais): against the exact 2-D quadrature, a known answer at d = 5,
closed-form limits, the HMC transition's invariance, determinism and refusals."""

import math
import re

import pytest
import torch

import rhvae
from rhvae.evaluation.ais import (
    MAX_AIS_PASSES,
    ais_log_likelihood,
    anneal,
    bdmc,
    hmc_transition,
    sigmoid_schedule,
)
from rhvae.evaluation.likelihood import log_likelihood_table
from rhvae.models import bernoulli_log_likelihood, standard_normal_log_density
from rhvae.validation import ParameterError

FAST = {"n_steps": 100, "n_chains": 8, "n_leapfrog": 2}


@pytest.fixture(scope="module")
def shipped_vae():
    return rhvae.load_shipped("reconstruction", "vae", seed=0)


@pytest.fixture(scope="module")
def test_images():
    return rhvae.experiment_data("reconstruction").test.x[:8]


@pytest.fixture(scope="module")
def exact(shipped_vae, test_images):
    return rhvae.exact_log_likelihood(shipped_vae, test_images).log_px


def embedded(model2, d):
    """``model2``'s decoder on the first two of d latent coordinates, zero decoder weights on the others."""
    big = rhvae.VAE(latent_dim=d, input_dim=model2.input_dim, hidden_dim=model2.hidden_dim)
    state = model2.state_dict()
    with torch.no_grad():
        for name, p in big.named_parameters():
            if name == "dec_hidden.weight":
                p.zero_()[:, :2] = state[name]
            elif name.startswith(("enc_mu", "enc_log_var")):
                p.zero_()[:2] = state[name]
            else:
                p.copy_(state[name])
    return big.eval()


def test_ais_matches_the_exact_quadrature_at_d2(shipped_vae, test_images, exact):
    result = ais_log_likelihood(shipped_vae, test_images, **FAST)
    diff = result.log_px - exact
    assert abs(float(diff.mean())) < 0.5
    assert float(diff.abs().max()) < 2.0
    assert result.log_weights.shape == (len(test_images), FAST["n_chains"])
    assert 0.3 < float(result.acceptance.mean()) < 0.95  # the adaptation reached its target region


@pytest.mark.parametrize("initial", ["prior", "encoder"])
def test_embedded_model_has_the_2d_log_likelihood(shipped_vae, test_images, exact, initial):
    model5 = embedded(shipped_vae, 5)
    z5 = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the extra coordinates do not reach the decoder
        assert torch.allclose(model5.decode_logits(z5), shipped_vae.decode_logits(z5[:, :2]), atol=1e-5)
    result = ais_log_likelihood(model5, test_images, **FAST, initial=initial)
    diff = result.log_px - exact
    assert abs(float(diff.mean())) < 0.5
    assert float(diff.abs().max()) < 2.0


def test_more_temperatures_narrow_the_bdmc_gap_on_a_tiny_model():
    torch.manual_seed(0)
    model = rhvae.VAE(latent_dim=3, hidden_dim=32)
    rhvae.train(model, rhvae.experiment_data("reconstruction").train.x, seed=0, epochs=30, progress=False)
    good = bdmc(model, n_images=6, n_steps=100, n_chains=8, n_leapfrog=2, seed=1)
    # the bounds hold in expectation: on this easy posterior the true gap is ~0, so allow Monte-Carlo noise below 0
    assert -0.25 < good.mean_gap < 1.0
    assert float(good.lower.mean()) < float(good.upper.mean()) + 0.25
    assert torch.allclose(good.gap, good.upper - good.lower)
    crude = bdmc(model, n_images=6, n_steps=3, n_chains=2, n_leapfrog=1, seed=1)
    assert torch.equal(crude.x, good.x)  # the same simulated images
    assert crude.mean_gap > good.mean_gap + 1.0


def test_a_seed_gives_one_result(shipped_vae, test_images):
    a = ais_log_likelihood(shipped_vae, test_images[:3], n_steps=20, n_chains=4, seed=5)
    b = ais_log_likelihood(shipped_vae, test_images[:3], n_steps=20, n_chains=4, seed=5)
    c = ais_log_likelihood(shipped_vae, test_images[:3], n_steps=20, n_chains=4, seed=6)
    assert torch.equal(a.log_weights, b.log_weights) and torch.equal(a.z, b.z)
    assert not torch.equal(a.log_weights, c.log_weights)
    state = torch.random.get_rng_state()
    ais_log_likelihood(shipped_vae, test_images[:2], n_steps=5, n_chains=2)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


@pytest.mark.parametrize("initial", ["prior", "encoder"])
def test_one_temperature_is_importance_sampling_from_q0(shipped_vae, test_images, initial):
    x = test_images[:4]
    result = ais_log_likelihood(shipped_vae, x, n_steps=1, n_chains=64, initial=initial, q0_scale=1.5)
    z = result.z.reshape(-1, 2).double()  # no transition at T = 1: the initial draws
    xs = x.double().repeat_interleave(64, 0)
    model = shipped_vae.double()
    try:
        log_joint = bernoulli_log_likelihood(model.decode_logits(z), xs) + standard_normal_log_density(z)
        if initial == "prior":
            log_q0 = standard_normal_log_density(z)
        else:
            mu, log_var = model.encode(xs)
            log_q0 = model.posterior_log_density(z, mu, log_var + 2.0 * math.log(1.5))
    finally:
        shipped_vae.float()
    expected = (log_joint - log_q0).reshape(4, 64)
    assert torch.allclose(result.log_weights, expected, atol=2e-3)
    assert torch.allclose(result.log_px, torch.logsumexp(expected, 1) - math.log(64), atol=2e-3)


def gaussian_target(mean, std, log_z=0.0):
    """f_T(u) = Z N(u; mean, diag std²): its log and gradient."""

    def target(u):
        r = (u - mean) / std
        log_f = log_z - 0.5 * (r * r).sum(-1) - torch.log(std).sum() - 0.5 * u.shape[-1] * math.log(2 * math.pi)
        return log_f, -r / std

    return target


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_hmc_transition_leaves_the_tempered_gaussian_invariant(beta):
    gen = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.7, 1.3], dtype=torch.float64)
    target = gaussian_target(mean, std)
    # f_β ∝ N(0, I)^(1−β) N(mean, std²)^β is Gaussian with precision (1 − β) + β/std² and mean β (mean/std²)/precision
    precision = (1.0 - beta) + beta / std**2
    m, s = beta * mean / std**2 / precision, precision**-0.5
    n = 40_000
    u = m + s * torch.randn(n, 2, dtype=torch.float64, generator=gen)
    lt, gt = target(u)
    step = torch.full((n,), 1.2, dtype=torch.float64)  # a coarse step: the leapfrog alone would not keep f_β
    accepted = []
    for _ in range(8):
        u, lt, gt, a = hmc_transition(u, lt, gt, beta, target, step, 3, gen)
        accepted.append(float(a.mean()))
    assert 0.2 < sum(accepted) / len(accepted) < 0.95
    assert torch.allclose(u.mean(0), m, atol=4.5 * float(s.max()) / math.sqrt(n))
    assert torch.allclose(u.var(0), s**2, rtol=4.5 * math.sqrt(2.0 / n) * 1.5)


def test_anneal_recovers_a_known_normalising_constant_from_both_ends():
    gen = torch.Generator().manual_seed(1)
    mean, std = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.3, 0.5, 0.4])
    target = gaussian_target(mean, std, log_z=-7.0)
    n, betas = 2000, sigmoid_schedule(200)
    run = anneal(target, torch.randn(n, 3, generator=gen), betas, gen, n_leapfrog=2, record=True)
    lower = float(torch.logsumexp(run.log_weight, 0) - math.log(n))
    assert abs(lower + 7.0) < 0.06
    # reverse from exact samples with the forward run's step sizes, fixed: −logmeanexp of its weights ≈ log Z
    steps = run.schedule.log().mean(1).exp()[:, None].expand(-1, n)
    u_exact = mean + std * torch.randn(n, 3, generator=gen)
    back = anneal(target, u_exact, betas, gen, n_leapfrog=2, reverse=True, step_sizes=steps)
    upper = -float(torch.logsumexp(back.log_weight, 0) - math.log(n))
    assert abs(upper + 7.0) < 0.06
    assert float(back.step_size[0]) == pytest.approx(float(steps[1, 0]))  # the last transition used step β_1


def test_the_schedule_runs_from_0_to_1_increasing():
    b = sigmoid_schedule(50)
    assert b[0] == 0.0 and b[-1] == 1.0 and bool((b.diff() > 0).all())
    assert float(b.diff()[0]) < float(b.diff()[25])  # sigmoidal: finer at the ends


def test_log_likelihood_table_uses_ais_away_from_d2(shipped_vae, test_images):
    model = embedded(shipped_vae, 3)
    row = log_likelihood_table(model, test_images[:3], n_samples=50, ais_steps=40, ais_chains=4, ais_leapfrog=1)
    assert row["log_likelihood_method"] == "ais"
    assert row["ais_steps"] == 40 and row["ais_chains"] == 4 and row["ais_leapfrog"] == 1
    assert row["log_likelihood"] == pytest.approx(
        float(ais_log_likelihood(model, test_images[:3], n_steps=40, n_chains=4, n_leapfrog=1).log_px.mean())
    )
    row2 = log_likelihood_table(shipped_vae, test_images[:3], n_samples=50)
    assert row2["log_likelihood_method"] == "exact" and "ais_steps" not in row2


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_steps": 0}, "n_steps"),
        ({"n_chains": 0}, "n_chains"),
        ({"n_leapfrog": 0}, "n_leapfrog"),
        ({"step_size": -0.1}, "step_size"),
        ({"target_acceptance": 1.5}, "target_acceptance"),
        ({"adapt_rate": -1.0}, "adapt_rate"),
        ({"q0_scale": 0.0}, "q0_scale"),
        ({"initial": "uniform"}, "initial"),
        ({"seed": -1}, "seed"),
        ({"n_steps": 100_000, "n_chains": 100_000}, "n_chains"),
    ],
)
def test_bad_parameters_are_refused_by_name(shipped_vae, test_images, kwargs, name):
    with pytest.raises(ParameterError, match=name) as err:
        ais_log_likelihood(shipped_vae, test_images[:2], **kwargs)
    assert "\n" not in str(err.value)


def test_bdmc_refuses_bad_parameters(shipped_vae):
    with pytest.raises(ParameterError, match="n_images"):
        bdmc(shipped_vae, n_images=0)
    with pytest.raises(ParameterError, match=re.escape(f"at most {MAX_AIS_PASSES:.0e}")):
        bdmc(shipped_vae, n_images=100_000, n_steps=10_000)
    with pytest.raises(TypeError, match="model"):
        ais_log_likelihood("vae", torch.zeros(1, 784))
