import pytest
import torch

import rhvae
from rhvae.models import ConfigError


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (rhvae.VAE, {"latent_dim": 0}, "latent_dim must be an integer >= 1"),
        (rhvae.VAE, {"input_dim": 2.5}, "input_dim must be an integer >= 1"),
        (rhvae.HVAE, {"n_lf": -1}, "n_lf must be an integer >= 0"),
        (rhvae.HVAE, {"eps_lf": 0}, r"eps_lf must be a finite number in \(0.0, 10.0\]"),
        (rhvae.HVAE, {"eps_lf": 1e300}, r"eps_lf must be a finite number in \(0.0, 10.0\]"),
        (rhvae.HVAE, {"beta_zero": 1.5}, r"beta_zero must be a finite number in \[0.0001, 1.0\]"),
        (rhvae.HVAE, {"beta_zero": 1e-300}, r"beta_zero must be a finite number in \[0.0001, 1.0\]"),
        (rhvae.HVAE, {"n_lf": 10_000_000}, r"n_lf must be an integer >= 0 and <= 1,000"),
        (rhvae.RHVAE, {"temperature": 1e300}, r"temperature must be a finite number in \[0.01, 100.0\]"),
        (rhvae.RHVAE, {"temperature": 1e-300}, r"temperature must be a finite number in \[0.01, 100.0\]"),
        (rhvae.RHVAE, {"regularization": 1e-300}, "regularization must be a finite number"),
        (rhvae.VAE, {"latent_dim": 100_000}, "latent_dim must be an integer >= 1 and <= 64"),
        (rhvae.VAE, {"input_dim": 100_000, "hidden_dim": 10_000}, "GB of weights"),
        (rhvae.HVAE, {"objective": "kl"}, "objective must be one of"),
        (rhvae.RHVAE, {"temperature": float("nan")}, "temperature must be a finite number"),
        (rhvae.RHVAE, {"regularization": -0.1}, "regularization must be a finite number"),
        (rhvae.RHVAE, {"n_fixed_point": 0}, "n_fixed_point must be an integer >= 1"),
    ],
)
def test_bad_hyper_parameters_name_the_parameter_and_range(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)


def test_seed_defaults():
    assert rhvae.HVAE().config()["eps_lf"] == 0.01 and rhvae.HVAE().beta_zero == 0.3
    cfg = rhvae.RHVAE().config()
    assert (cfg["n_lf"], cfg["beta_zero"], cfg["temperature"], cfg["regularization"]) == (10, 0.3, 1.0, 0.1)


def test_bad_input_shapes_are_clear():
    model = rhvae.RHVAE()
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(batch, 784\)"):
        model(torch.zeros(3, 10))
    with pytest.raises(RuntimeError, match="no frozen metric"):
        model.G_inv(torch.zeros(1, 2))
    model.freeze_metric(torch.rand(4, 784))
    with pytest.raises(ValueError, match=r"z must be a tensor of shape \(batch, 2\)"):
        model.G_inv(torch.zeros(1, 3))


@pytest.mark.parametrize("cls", [rhvae.VAE, rhvae.HVAE, rhvae.RHVAE])
def test_an_empty_batch_to_forward_is_one_clear_line(cls):
    model = cls(hidden_dim=8)
    with pytest.raises(ValueError) as caught:
        model(torch.empty(0, 784))
    assert str(caught.value) == "x must hold at least one image, got an empty batch of shape (0, 784)"
    assert model(torch.rand(2, 784)).log_weight.shape == (2,)


def test_authors_objective_differs_and_drops_the_momentum_terms(metric_data):
    torch.manual_seed(0)
    model = rhvae.RHVAE(eps_lf=0.001, objective="authors")
    model.freeze_metric(metric_data.train.x)
    model.eval()
    out = model(metric_data.test.x, torch.Generator().manual_seed(0))
    assert torch.isfinite(out.objective).all() and not torch.allclose(out.objective, out.log_weight)
