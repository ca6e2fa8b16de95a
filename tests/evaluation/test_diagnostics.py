"""rhvae.evaluation.diagnostics: does a flow move, gain ELBO, and is the metric more than λI — on hand-built models."""

import math

import pytest
import torch

import rhvae
from rhvae.evaluation.diagnostics import MIN_CONTRAST, MIN_DISPLACEMENT, FlowDiagnostics, flow_diagnostics
from rhvae.models import VAE
from rhvae.training import History, train


@pytest.fixture(scope="module")
def data():
    return rhvae.experiment_data("reconstruction")


@pytest.fixture(scope="module")
def vae_weights(data):
    """A float64 VAE (hidden 32) trained for 60 epochs on the real training digits: sensible encoder σ(x)."""
    torch.manual_seed(0)
    vae = rhvae.VAE(hidden_dim=32).double()
    train(vae, data.train.x.double(), None, epochs=60, seed=0, progress=False)
    return vae.state_dict()


def flow_model(name, vae_weights, data, **config):
    model = rhvae.MODELS[name](hidden_dim=32, **config).double()
    model.load_state_dict(vae_weights, strict=False)
    if name == "rhvae":
        model.freeze_metric(data.train.x.double())
    return model.eval()


@pytest.mark.parametrize("name", ["hvae", "rhvae"])
def test_a_flow_without_steps_moves_nothing_and_gains_nothing(name, vae_weights, data):
    """n_lf = 0 and β₀ = 1: z_K = z₀ and the flow's weight equals the encoder-only weight on the same draw (under the
    true ELBO's momentum ρ₀ ~ N(0, G(z₀)); the release's ρ₀ = L(x)γ is another proposal, whose weight differs)."""
    model = flow_model(name, vae_weights, data, n_lf=0, beta_zero=1.0, objective="elbo")
    d = flow_diagnostics(model, data.test.x.double(), n_draws=5)
    assert d.displacement == 0.0 and abs(d.flow_gain) < 1e-12  # the ρ terms cancel up to rounding
    assert d.n_images == 30 and d.n_draws == 5
    assert "the flow barely moves" in " ".join(d.flags())


def test_a_metric_with_no_learned_part_has_zero_contrast(vae_weights, data):
    model = flow_model("rhvae", vae_weights, data, regularization=0.1)
    model.M = torch.zeros_like(model.M)  # G⁻¹ = λI everywhere
    d = flow_diagnostics(model, data.test.x.double(), n_draws=2)
    assert abs(d.contrast) < 1e-12 and d.kappa == pytest.approx(0.1, rel=1e-12)
    assert any("the metric is flat" in f and "behaves like an HVAE" in f for f in d.flags())


def test_displacement_and_gain_follow_the_leapfrog(vae_weights, data):
    """For a small step, z_K − z₀ ≈ K ε ρ̄: doubling ε doubles the displacement; the numbers are those of one
    forward pass with the same draws."""
    x = data.test.x.double()
    small, double = (
        flow_diagnostics(flow_model("hvae", vae_weights, data, n_lf=5, eps_lf=eps), x, n_draws=20)
        for eps in (1e-3, 2e-3)
    )
    assert 0.0 < small.displacement < MIN_DISPLACEMENT
    assert double.displacement / small.displacement == pytest.approx(2.0, rel=0.02)
    model = flow_model("hvae", vae_weights, data, n_lf=10, eps_lf=0.01)
    d = flow_diagnostics(model, x, n_draws=8, seed=3)
    rows = x.repeat_interleave(8, 0)
    with torch.no_grad():
        flow = model(rows, torch.Generator().manual_seed(3))
        encoder = VAE.forward(model, rows, torch.Generator().manual_seed(3))
    moved = ((flow.zK - flow.z0) / torch.exp(0.5 * flow.log_var)).norm(dim=-1).reshape(30, 8).mean(1)
    assert d.displacement == pytest.approx(float(moved.median()), rel=1e-12)
    assert d.flow_gain == pytest.approx(float((flow.log_weight - encoder.log_weight).mean()), rel=1e-9, abs=1e-9)
    assert d.step == 0.01 and d.kappa is None and d.contrast is None


def test_diagnostics_leave_the_global_random_state_alone(vae_weights, data):
    model = flow_model("rhvae", vae_weights, data, eps_lf=0.01)
    state = torch.get_rng_state()
    first = flow_diagnostics(model, data.test.x.double(), n_draws=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert flow_diagnostics(model, data.test.x.double(), n_draws=3) == first


def test_flags_in_plain_words():
    def make(displacement, gain, contrast):
        return FlowDiagnostics("RHVAE", displacement, gain, 0.1, 0.01, 10.0, contrast, 30, 20)

    assert make(3.0, 5.0, 2.0).flags() == []
    frozen = make(0.05, -0.3, 2.0).flags()
    assert frozen[0] == (
        "the flow barely moves (median displacement 0.05 posterior σ < 1): this RHVAE behaves like a VAE"
    )
    assert frozen[1] == "the flow lowers the ELBO (-0.3 nats against the encoder alone)"
    flat = make(4.0, 9.0, 0.03).flags()
    assert flat == ["the metric is flat (≈ λI: contrast 0.03 < 0.5 at the codes): this RHVAE behaves like an HVAE"]
    assert make(MIN_DISPLACEMENT, 0.0, MIN_CONTRAST).flags() == []  # the thresholds themselves pass
    assert make(0.5, 1.0, 0.1).to_dict()["flags"] == make(0.5, 1.0, 0.1).flags()
    assert make(3.0, -0.15, 2.0).flags() == []  # a loss within twice its standard error (0.1) is noise


def test_diagnostics_refuse_a_model_without_a_flow(data):
    with pytest.raises(TypeError, match="HVAE or RHVAE"):
        flow_diagnostics(rhvae.VAE(), data.test.x)
    with pytest.raises(ValueError, match="n_draws must be an integer >= 1"):
        flow_diagnostics(rhvae.HVAE(), data.test.x, n_draws=0)


def test_training_history_records_the_diagnostics(data, monkeypatch):
    from rhvae import training

    assert training.DIAGNOSTICS_EVERY == 50
    monkeypatch.setattr(training, "DIAGNOSTICS_EVERY", 2)  # every 2 epochs, so that 3 epochs show both cases
    torch.manual_seed(0)
    model = rhvae.RHVAE(hidden_dim=16, n_lf=2)
    history = train(model, data.train.x[:40], data.test.x[:10], epochs=3, seed=0, progress=False)
    recorded = [r.epoch for r in history.epochs if r.diagnostics is not None]
    assert recorded == [2, 3]
    final = history.diagnostics
    assert final == history.epochs[-1].diagnostics and final["n_images"] == 10
    assert math.isfinite(final["displacement"]) and final["kappa"] > 0 and isinstance(final["flags"], list)
    assert History.from_dict(history.to_dict()).diagnostics == final
