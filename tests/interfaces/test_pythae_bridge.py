"""The pythae bridge against the real pythae 0.1.2, on real MNIST digits: pythae's VAE, HVAE and RHVAE with its
default MLPs, saved by pythae and read by ``rhvae.from_pythae``, compute our encoder outputs, decoder means and
G⁻¹(z); ours written by ``rhvae.to_pythae`` and loaded by pythae's ``AutoModel`` compute theirs; the round trip is
the identity; every mismatch is refused in one line; ``python -m rhvae score-pythae`` scores a pythae folder.

pythae is in the ``test`` extra. Outside CI a test that needs it is skipped when it is missing; under ``CI=true``
it fails instead. The refusals of files written by ``to_pythae`` need no pythae.
"""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import rhvae
from rhvae.interfaces import pythae_bridge
from rhvae.persistence import ModelFileError

TOL = 1e-6
CLASSES = ("VAE", "HVAE", "RHVAE")


def _requirements():
    try:
        import pythae  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the pythae bridge tests: pip install -e '.[test]' installs pythae 0.1.2")
        pytest.skip("pythae 0.1.2 is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def digits():
    """Real MNIST digits: 64 training and the 30 test images of the reconstruction subset."""
    data = rhvae.experiment_data("reconstruction")
    return data.train.x[:64], data.test.x


def pythae_model(kind: str, latent_dim: int, x_train: torch.Tensor, **config):
    """pythae's ``kind`` with its default MLPs, after one Adam step on real digits and (RHVAE) its ``update()``,
    which pythae's trainer calls at the end of every epoch to freeze the metric (M_tens, centroids_tens). The digits
    are binarised: pythae's HVAE under 'bce' reads its decoder's output as Bernoulli logits and torch's Bernoulli
    refuses grey pixels."""
    _requirements()
    import pythae.models as pm

    torch.manual_seed(latent_dim)
    model = getattr(pm, kind)(getattr(pm, f"{kind}Config")(input_dim=(1, 28, 28), latent_dim=latent_dim, **config))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model({"data": (x_train > 0.5).float().reshape(-1, 1, 28, 28)}).loss.backward()
    optimizer.step()
    model.update()
    return model.eval()


def saved(model, folder):
    model.save(str(folder))
    return folder


def differences(theirs, ours, x: torch.Tensor, z: torch.Tensor) -> dict:
    """Max abs differences of the encoder's (μ, log σ²), the decoder means and (RHVAE) G⁻¹(z), pythae vs ours."""
    with torch.no_grad():
        out = theirs.encoder(x.reshape(-1, 1, 28, 28))
        mu, log_var = ours.encode(x)
        found = {
            "mu": float((out.embedding - mu).abs().max()),
            "log_var": float((out.log_covariance - log_var).abs().max()),
            "decoder": float((theirs.decoder(z).reconstruction.reshape(len(z), -1) - ours.decode(z)).abs().max()),
        }
        if hasattr(theirs, "G_inv"):
            G_inv = theirs.G_inv(z)
            found["G_inv (relative)"] = float((G_inv - ours.G_inv(z)).abs().max() / G_inv.abs().max())
    return found


def random_points(latent_dim: int, ours) -> torch.Tensor:
    """Points around the frozen centroids (where G⁻¹ varies) and far from them (where it is λI)."""
    g = torch.Generator().manual_seed(1)
    centroids = getattr(ours, "centroids", torch.zeros(1, latent_dim))
    picked = centroids[torch.randint(len(centroids), (100,), generator=g)]
    near = picked + 0.5 * torch.randn(100, latent_dim, generator=g)
    return torch.cat([near, 4.0 * torch.randn(100, latent_dim, generator=g)])


# ------------------------------------------------------------------------------------------------ import
@pytest.mark.parametrize("kind", CLASSES)
@pytest.mark.parametrize("latent_dim", [2, 3])
def test_imported_model_computes_pythaes_values(kind, latent_dim, digits, tmp_path):
    x_train, x_test = digits
    theirs = pythae_model(kind, latent_dim, x_train, reconstruction_loss="bce")
    ours = rhvae.from_pythae(saved(theirs, tmp_path / "pythae"))
    assert ours.model_type == kind and ours.latent_dim == latent_dim and not ours.training
    found = differences(theirs, ours, x_test, random_points(latent_dim, ours))
    print(kind, latent_dim, found)
    assert max(found.values()) <= TOL, found
    if kind == "RHVAE":  # its frozen metric is pythae's, not a fresh one
        assert torch.equal(ours.M, theirs.M_tens) and torch.equal(ours.centroids, theirs.centroids_tens)


@pytest.mark.parametrize("kind", CLASSES)
def test_pythaes_default_config_imports_with_mse_as_bernoulli(kind, digits, tmp_path):
    """pythae's defaults (latent_dim 10, reconstruction_loss 'mse'): refused by default, read with the opt-in."""
    x_train, x_test = digits
    theirs = pythae_model(kind, 10, x_train)
    folder = saved(theirs, tmp_path / "pythae")
    with pytest.raises(ModelFileError, match="reconstruction_loss='mse'.*mse_as_bernoulli=True"):
        rhvae.from_pythae(folder)
    ours = rhvae.from_pythae(folder, mse_as_bernoulli=True)
    found = differences(theirs, ours, x_test, random_points(10, ours))
    print(kind, 10, found)
    assert max(found.values()) <= TOL, found


def test_settings_are_mapped_with_pythaes_beta_zero_conventions(digits, tmp_path):
    """pythae's RHVAE config holds √β₀ (its HVAE's β₀); ε, K, T, λ are copied; a learned ε and √β₀ come from the
    weights; pythae's RHVAE flow is the plain step with 3 fixed-point iterations on the release's objective."""
    x_train, _ = digits
    settings = {"n_lf": 4, "eps_lf": 0.02, "beta_zero": 0.5, "reconstruction_loss": "bce"}
    rh = rhvae.from_pythae(
        saved(pythae_model("RHVAE", 2, x_train, temperature=0.8, regularization=0.05, **settings), tmp_path / "r")
    )
    assert (rh.n_lf, rh.eps_lf, rh.beta_zero, rh.temperature, rh.regularization) == (4, 0.02, 0.25, 0.8, 0.05)
    assert (rh.step_bound, rh.n_fixed_point, rh.objective) == ("none", 3, "authors")
    assert (rh.hidden_dim, rh.metric_hidden.out_features) == (512, 400)
    h = rhvae.from_pythae(saved(pythae_model("HVAE", 2, x_train, **settings), tmp_path / "h"))
    assert (h.n_lf, h.eps_lf, h.beta_zero) == (4, 0.02, 0.5)
    learned = pythae_model("HVAE", 2, x_train, learn_eps_lf=True, learn_beta_zero=True, **settings)
    h = rhvae.from_pythae(saved(learned, tmp_path / "learned"))
    assert h.eps_lf == pytest.approx(float(learned.eps_lf.detach())) and h.eps_lf != 0.02  # one Adam step moved them
    assert h.beta_zero == pytest.approx(float(learned.beta_zero_sqrt.detach()) ** 2) and h.beta_zero != 0.5


# ------------------------------------------------------------------------------------------------ export
def our_models(x_train: torch.Tensor) -> dict:
    """Our three models at pythae's widths (512, metric 400) and the shipped reconstruction RHVAE (400 wide)."""
    torch.manual_seed(0)
    rh = rhvae.RHVAE(
        latent_dim=3, hidden_dim=512, metric_hidden_dim=400, n_lf=3, eps_lf=0.01, step_bound="none", n_fixed_point=3
    )
    rh.freeze_metric(x_train)
    return {
        "VAE": rhvae.VAE(latent_dim=2, hidden_dim=512).eval(),
        "HVAE": rhvae.HVAE(latent_dim=3, hidden_dim=512, n_lf=3, beta_zero=0.5).eval(),
        "RHVAE": rh.eval(),
        "shipped RHVAE": rhvae.load_shipped("reconstruction", "rhvae", seed=0),
    }


@pytest.mark.parametrize("name", ["VAE", "HVAE", "RHVAE", "shipped RHVAE"])
def test_pythae_loads_the_export_and_computes_our_values(name, digits, tmp_path):
    _requirements()
    from pythae.data.datasets import DatasetOutput
    from pythae.models import AutoModel

    x_train, x_test = digits
    ours = our_models(x_train)[name]
    folder = rhvae.to_pythae(ours, tmp_path / "out", input_shape=(1, 28, 28), pythae_flow=name == "shipped RHVAE")
    theirs = AutoModel.load_from_folder(str(folder)).eval()
    assert type(theirs).__name__ == ours.model_type
    found = differences(theirs, ours, x_test, random_points(ours.latent_dim, ours))
    print(name, found)
    assert max(found.values()) <= TOL, found
    # pythae's own forward (on binarised digits: its HVAE's Bernoulli refuses grey pixels): the same (μ, log σ²)
    # and, for the VAE, the same z from the same random draws; its recon_x is our decoder mean at its final z
    x = (x_test > 0.5).float()
    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = theirs(DatasetOutput(data=x.reshape(-1, 1, 28, 28)))
    torch.manual_seed(5)
    flow = ours(x)
    with torch.no_grad():
        recon = out.recon_x.reshape(len(x), -1)
        assert float((recon - ours.decode(out.z.detach())).abs().max()) <= TOL
        if name == "VAE":
            assert float((out.z - flow.z0).abs().max()) <= TOL
        else:
            assert float((out.mu - flow.mu).abs().max()) <= TOL
            assert float((out.log_var - flow.log_var).abs().max()) <= TOL
    assert theirs.model_config.reconstruction_loss == "bce" and tuple(theirs.model_config.input_dim) == (1, 28, 28)
    if ours.model_type != "VAE":
        assert float(theirs.beta_zero_sqrt) ** 2 == pytest.approx(ours.beta_zero)


@pytest.mark.parametrize("name", ["VAE", "HVAE", "RHVAE"])
def test_round_trip_is_the_identity(name, digits, tmp_path):
    ours = our_models(digits[0])[name]
    back = rhvae.from_pythae(rhvae.to_pythae(ours, tmp_path / "out"))
    assert type(back) is type(ours)
    assert back.state_dict().keys() == ours.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert back.config() == pytest.approx(ours.config(), rel=1e-12)


def test_a_narrower_model_is_exported_zero_padded_to_the_same_function(digits, tmp_path):
    shipped = our_models(digits[0])["shipped RHVAE"]
    back = rhvae.from_pythae(rhvae.to_pythae(shipped, tmp_path / "out", pythae_flow=True))
    assert (shipped.hidden_dim, back.hidden_dim, back.metric_hidden.out_features) == (400, 512, 400)
    x = digits[1]
    with torch.no_grad():
        assert torch.allclose(back.encode(x)[0], shipped.encode(x)[0], atol=TOL, rtol=0)
        assert torch.allclose(back.lower_factor(x), shipped.lower_factor(x), atol=TOL, rtol=0)
        z = random_points(2, shipped)
        assert torch.allclose(back.decode(z), shipped.decode(z), atol=TOL, rtol=0)
        assert torch.equal(back.G_inv(z), shipped.G_inv(z))


# ----------------------------------------------------------------------------------------------- refusals
@pytest.fixture
def folder(digits, tmp_path):
    """A valid RHVAE folder in pythae's format (written by to_pythae)."""
    return rhvae.to_pythae(our_models(digits[0])["RHVAE"], tmp_path / "pythae")


def rewrite_config(folder, **changes):
    config = json.loads((folder / "model_config.json").read_text())
    (folder / "model_config.json").write_text(json.dumps({**config, **changes}))


def rewrite_weights(folder, change):
    payload = torch.load(folder / "model.pt", weights_only=True)
    change(payload)
    torch.save(payload, folder / "model.pt")


def _not_a_tensor_payload(payload):
    payload["model_state_dict"]["encoder.embedding.weight"] = torch.nn.Linear(2, 2)  # a pickled module


REFUSALS = {
    "missing config": (lambda f: (f / "model_config.json").unlink(), "holds no model_config.json"),
    "missing weights": (lambda f: (f / "model.pt").unlink(), "holds no model.pt"),
    "pickled encoder": (lambda f: (f / "encoder.pkl").write_bytes(b"\x80\x04."), "encoder.pkl: custom pythae networks"),
    "custom decoder flag": (lambda f: rewrite_config(f, uses_default_decoder=False), "uses_default_decoder=false"),
    "unknown class": (lambda f: rewrite_config(f, name="BetaVAEConfig"), "'BetaVAEConfig'; from_pythae reads"),
    "mse": (lambda f: rewrite_config(f, reconstruction_loss="mse"), "reconstruction_loss='mse'"),
    "no input_dim": (lambda f: rewrite_config(f, input_dim=None), "input_dim=None"),
    "out of range": (lambda f: rewrite_config(f, temperature=1000.0), "temperature must be"),
    "beta_zero above 1": (lambda f: rewrite_config(f, beta_zero=1.5), "beta_zero must be"),
    "other latent_dim": (lambda f: rewrite_config(f, latent_dim=4), r"encoder.layers.0.0.weight|has shape"),
    "not JSON": (lambda f: (f / "model_config.json").write_text("{"), "not readable JSON"),
    "corrupted weights": (lambda f: (f / "model.pt").write_bytes(b"PK\x03\x04garbage"), "not a pythae weights file"),
    "pickled object": (
        lambda f: rewrite_weights(f, _not_a_tensor_payload),
        "pickled objects other than tensors|not a pythae weights file",
    ),
    "shape mismatch": (
        lambda f: rewrite_weights(f, lambda p: p["model_state_dict"].update({"metric.diag.weight": torch.zeros(3, 7)})),
        r"metric.diag.weight has shape \(3, 7\)",
    ),
    "missing layer": (
        lambda f: rewrite_weights(f, lambda p: p["model_state_dict"].pop("decoder.layers.1.0.bias")),
        "no floating-point weight 'decoder.layers.1.0.bias'",
    ),
    "unknown weight": (
        lambda f: rewrite_weights(f, lambda p: p["model_state_dict"].update({"extra.weight": torch.zeros(1)})),
        "lacks: extra.weight",
    ),
    "non-finite": (
        lambda f: rewrite_weights(f, lambda p: p["model_state_dict"]["encoder.embedding.bias"].fill_(float("nan"))),
        "non-finite",
    ),
    "metric never updated": (
        lambda f: rewrite_weights(f, lambda p: p.update(M=-torch.eye(3)[None], centroids=torch.zeros(1, 3))),
        "never trained",
    ),
    "no metric": (lambda f: rewrite_weights(f, lambda p: p.pop("M")), "no frozen metric"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_every_mismatch_is_one_clear_line(case, folder):
    rhvae.from_pythae(folder)  # valid before the change
    change, message = REFUSALS[case]
    change(folder)
    with pytest.raises(ModelFileError, match=message) as caught:
        rhvae.from_pythae(folder)
    assert "\n" not in str(caught.value)


def test_a_pythae_rhvae_never_updated_is_refused(tmp_path):
    _requirements()
    from pythae.models import RHVAE, RHVAEConfig

    fresh = RHVAE(RHVAEConfig(input_dim=(1, 28, 28), latent_dim=3, reconstruction_loss="bce"))
    if torch.linalg.eigvalsh(fresh.M_tens).min() >= 0:  # its constructor's M is torch.randn: not PSD but by chance
        pytest.skip("pythae drew a positive semi-definite random M")
    with pytest.raises(ModelFileError, match="never trained"):
        rhvae.from_pythae(saved(fresh, tmp_path / "fresh"))


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="is not a folder"):
        rhvae.from_pythae(tmp_path / "nowhere")


def test_what_pythae_cannot_express_is_refused_in_one_line(digits, tmp_path):
    x_train = digits[0]
    torch.manual_seed(0)
    wide = rhvae.VAE(hidden_dim=600)
    wide_metric = rhvae.RHVAE(hidden_dim=512, metric_hidden_dim=401, step_bound="none", n_fixed_point=3)
    wide_metric.freeze_metric(x_train)
    bounded = rhvae.RHVAE(step_bound="none", n_fixed_point=3, eps_lf=0.01, metric_scale="bounded")
    bounded.freeze_metric(x_train)
    stepped = rhvae.RHVAE(step_bound="none", n_fixed_point=3, learn_step=True)
    stepped.freeze_metric(x_train)
    cases = [
        (wide, {}, "hidden_dim=600 is wider than pythae's default MLP"),
        (wide_metric, {}, "metric_hidden_dim=401 is wider"),
        (rhvae.RHVAE(), {}, "no frozen metric"),
        (bounded, {"pythae_flow": True}, "no metric_scale='bounded'"),
        (stepped, {"pythae_flow": True}, "no learn_step=True"),
        (our_models(x_train)["shipped RHVAE"], {}, "no step_bound='stability', n_fixed_point=5.*pythae_flow=True"),
        (rhvae.VAE.stack([rhvae.VAE(), rhvae.VAE()]), {}, "stack of 2 models"),
        (rhvae.VAE(), {"input_shape": (1, 28, 27)}, "input_shape must be"),
        ("model", {}, "must be a rhvae VAE"),
    ]
    for model, keywords, message in cases:
        with pytest.raises((ValueError, TypeError), match=message) as caught:
            rhvae.to_pythae(model, tmp_path / "out", **keywords)
        assert "\n" not in str(caught.value)
        assert not (tmp_path / "out" / "model.pt").exists()


def test_the_bridge_does_not_import_pythae():
    code = "import sys, rhvae; rhvae.from_pythae, rhvae.to_pythae; assert 'pythae' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert pythae_bridge.from_pythae is rhvae.from_pythae


# -------------------------------------------------------------------------------------------------- the CLI
def test_score_pythae_scores_a_pythae_folder_and_refuses_a_bad_one(digits, tmp_path):
    folder = saved(pythae_model("RHVAE", 2, digits[0], reconstruction_loss="bce", eps_lf=0.01), tmp_path / "pythae")
    command = [sys.executable, "-m", "rhvae", "score-pythae", str(folder), "--experiment", "reconstruction"]
    small = ["--ll-samples", "10", "--n-samples", "10", "--mcmc-steps", "3", "--out", str(tmp_path / "eval")]
    result = subprocess.run(command + small, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert results["model_type"] == "RHVAE" and results["model_file"] == str(folder)
    assert results["model_config"]["metric_hidden_dim"] == 400 and results["log_likelihood"]["exact_converged"] == 30
    quality = results["generation"]["quality"]  # samples of the correct sampler, scored against real digits
    assert results["generation"]["sampler"] == "riemannian_hmc" and quality["fid_classifier"] > 0
    assert 0 <= quality["precision"] <= 1 and 0 <= quality["recall"] <= 1 and "classifier FID" in result.stdout
    assert (tmp_path / "eval" / "samples.png").is_file() and (tmp_path / "eval" / "reconstructions.png").is_file()
    (folder / "decoder.pkl").write_bytes(b"\x80\x04.")
    bad = subprocess.run(command + small, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "decoder.pkl" in bad.stderr, bad.stderr
