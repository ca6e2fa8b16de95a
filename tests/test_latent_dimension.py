"""Every public function at latent dimension d = 3: it works (a real property is checked: shapes, finiteness, a
round trip, a known identity), or, where it is inherently 2-D, it refuses in one line that names latent_dim and
what to use instead.

``COVERAGE`` lists, module by module, every public callable with the test that checks it at d = 3 (or the reason
it has no latent input at all); ``test_coverage_is_complete`` fails when a module gains a public name that is not
listed, so the coverage cannot silently rot. The models are small (hidden width 16, 5 epochs on 24 real digits)
and trained once for the whole file (``d3``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from matplotlib import pyplot as plt

import rhvae
from rhvae import persistence, training
from rhvae.evaluation import diagnostics, geometry, likelihood
from rhvae.experiments import clustering, interpolation, quality
from rhvae.interfaces import cli, plotting, widgets
from rhvae.models.metric import LearnedMetric
from rhvae.sampling import grid_target, hmc, truncation
from rhvae.validation import ParameterError

D = 3


# ------------------------------------------------------------------------------------------------ fixtures
@dataclass
class Trained:
    data: rhvae.ExperimentData
    vae: rhvae.VAE
    hvae: rhvae.HVAE
    rhvae: rhvae.RHVAE
    histories: dict

    @property
    def models(self) -> dict:
        return {"VAE": self.vae, "HVAE": self.hvae, "RHVAE": self.rhvae}


@pytest.fixture(scope="session")
def d3():
    """A VAE, an HVAE and an RHVAE at latent_dim 3 (hidden width 16), each trained 5 epochs on 24 real digits of
    classes 1, 2, 3 (6 test digits, two per class)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = rhvae.experiment_data("reconstruction", n_per_class=10)
        models, histories = {}, {}
        for cls in (rhvae.VAE, rhvae.HVAE, rhvae.RHVAE):
            torch.manual_seed(0)
            model = cls(latent_dim=D, hidden_dim=16)
            histories[model.model_type] = rhvae.train(model, data.train.x, data.test.x, epochs=5, progress=False)
            model.eval()
            models[model.model_type] = model
    finally:
        torch.set_num_threads(threads)
    return Trained(data, models["VAE"], models["HVAE"], models["RHVAE"], histories)


@pytest.fixture(scope="session")
def classifier():
    return quality.load_classifier()


def one_line_refusal(call, *words):
    """``call()`` raises a one-line ``ParameterError`` (a ValueError) that names latent_dim, the dimension 3 and
    every one of ``words`` (the alternative); returns the message."""
    with pytest.raises(ParameterError) as err:
        call()
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "\n" not in message, message
    assert "latent_dim must be 2, got 3" in message, message
    for word in words:
        assert word in message, (word, message)
    return message


def in_unit_interval(images: torch.Tensor) -> bool:
    return bool(torch.isfinite(images).all() and (images >= 0).all() and (images <= 1).all())


def spd(matrices: torch.Tensor) -> bool:
    symmetric = torch.allclose(matrices, matrices.transpose(-1, -2), atol=1e-6)
    return symmetric and bool((torch.linalg.eigvalsh(matrices.double()) > 0).all())


def many_centroid_metric(n: int = 1001, seed: int = 0) -> LearnedMetric:
    """A synthetic 3-D metric of ``n`` centroids (above the grid target's 1,000) with random PSD matrices."""
    gen = torch.Generator().manual_seed(seed)
    centroids = torch.randn(n, D, generator=gen)
    L = 0.3 * torch.randn(n, D, D, generator=gen)
    return LearnedMetric(centroids, L @ L.transpose(-1, -2), temperature=0.5, regularization=0.1)


# ------------------------------------------------------------------------------------------------ models, training
def test_models_train_at_d3(d3):
    """VAE, HVAE and RHVAE train 5 finite epochs at d = 3; the codes are (n, 3); the RHVAE's frozen metric has one
    SPD (3, 3) matrix per training image and centroids that are the encoder means of those images."""
    n = len(d3.data.train)
    for name, model in d3.models.items():
        history = d3.histories[name]
        assert len(history.epochs) == 5
        assert all(math.isfinite(e.train_loss) and math.isfinite(e.test_loss) for e in history.epochs)
        mu, log_var = model.encode(d3.data.test.x)
        assert mu.shape == log_var.shape == (len(d3.data.test), D)
    r = d3.rhvae
    assert r.has_frozen_metric and r.M.shape == (n, D, D) and r.centroids.shape == (n, D)
    assert spd(r.M + 1e-6 * torch.eye(D))  # Mᵢ = LLᵀ is PSD: with a tiny shift SPD
    assert spd(r.metric().G_inv(r.centroids))
    with torch.no_grad():
        assert torch.allclose(r.centroids, r.encode(d3.data.train.x)[0], atol=1e-4)


def test_config_error_at_d3():
    """A bad option is still a ConfigError at d = 3 (not a shape error), and latent_dim 3 itself is accepted."""
    assert rhvae.RHVAE(latent_dim=D, hidden_dim=8).latent_dim == D
    with pytest.raises(rhvae.ConfigError, match="step_bound"):
        rhvae.RHVAE(latent_dim=D, hidden_dim=8, step_bound="sometimes")


def test_latent_dimension_range():
    """latent_dim is checked against rhvae.validation.RANGES (1 to 64): 0 and 65 are refused in one line."""
    for d in (1, 16, 64):
        assert rhvae.VAE(latent_dim=d, hidden_dim=4).latent_dim == d
    for d in (0, 65):
        with pytest.raises(ParameterError, match="latent_dim must be an integer >= 1 and <= 64"):
            rhvae.VAE(latent_dim=d)


def test_train_group_and_member_losses_at_d3(d3):
    """train_group trains two d = 3 models side by side to the same histories as training each alone;
    evaluate_member_losses gives one finite loss per member."""
    x = d3.data.train.x
    alone = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = rhvae.VAE(latent_dim=D, hidden_dim=8)
        alone.append((model, [e.train_loss for e in rhvae.train(model, x, epochs=2, seed=seed, progress=False).epochs]))
    group = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        group.append(rhvae.VAE(latent_dim=D, hidden_dim=8))
    histories = training.train_group(group, [x, x], seeds=[0, 1], epochs=2, progress=False)
    for history, (_, losses) in zip(histories, alone, strict=True):
        assert [e.train_loss for e in history.epochs] == pytest.approx(losses, rel=1e-4)
    losses = training.evaluate_member_losses(d3.hvae, d3.data.test.x)
    assert len(losses) == 1 and math.isfinite(losses[0]) and losses[0] > 0


def test_training_diverged_at_d3(d3):
    """A latent code beyond max_latent_norm stops a d = 3 model as diverged (TrainingDiverged with its history)."""
    model = rhvae.VAE(latent_dim=D, hidden_dim=8)
    with pytest.raises(training.TrainingDiverged) as err:
        rhvae.train(model, d3.data.train.x, epochs=2, max_latent_norm=1e-9, progress=False)
    assert isinstance(err.value.history, training.History)


# ------------------------------------------------------------------------------------------------ sampling
def test_sample_prior_at_d3(d3):
    """Prior samples: z (n, 3), images (n, 784) in [0, 1]; the same seed gives the same samples."""
    first, again = rhvae.sample_prior(d3.vae, n=7, seed=3), rhvae.sample_prior(d3.vae, n=7, seed=3)
    assert first.z.shape == (7, D) and first.images.shape == (7, 784) and in_unit_interval(first.images)
    assert torch.equal(first.images, again.images)


def test_generate_at_d3(d3):
    """generate gives images in [0, 1] of shape (n, 784) and codes (n, 3) for every model (the RHVAE by
    Riemannian HMC, recorded in info)."""
    for name, model in d3.models.items():
        generated = rhvae.generate(model, n_samples=6, mcmc_steps=3, seed=0)
        assert generated.images.shape == (6, 784) and in_unit_interval(generated.images)
        assert generated.z.shape == (6, D)
        assert generated.info["sampler"] == ("riemannian_hmc" if name == "RHVAE" else "prior")


def test_riemannian_hmc_at_d3(d3):
    """Every state of every chain stays in the sampler's box (the box rule); some proposals are accepted; the
    trace is (steps + 1, n, 3) and starts at training centroids."""
    samples = rhvae.riemannian_hmc(d3.rhvae, n_samples=8, mcmc_steps=6, seed=1, keep_trace=True)
    low, high = hmc.default_box(d3.rhvae.metric())
    assert torch.equal(samples.box_low, low) and torch.equal(samples.box_high, high)
    assert samples.z.shape == (8, D) and samples.trace.shape == (7, 8, D)
    assert bool(((samples.trace >= low) & (samples.trace <= high)).all())
    assert 0 < samples.acceptance_rate <= 1
    assert torch.equal(samples.trace[0], d3.rhvae.centroids[samples.start_indices])
    assert samples.images.shape == (8, 784) and in_unit_interval(samples.images)


def test_default_box_at_d3(d3):
    """The default box is (3,)-dimensional and holds every centroid with the 3 T margin."""
    metric = d3.rhvae.metric()
    low, high = hmc.default_box(metric)
    assert low.shape == high.shape == (D,)
    margin = 3.0 * metric.temperature
    assert torch.allclose(low, metric.centroids.min(0).values - margin)
    assert torch.allclose(high, metric.centroids.max(0).values + margin)


def test_large_metric_target_falls_back_at_d3():
    """Above 1,000 centroids at d = 3 there is no grid target: interpolate_if_possible returns None and the
    sampler's target is the metric itself (below the truncation's 10,000); the sampler runs on it."""
    metric = many_centroid_metric()
    low, high = hmc.default_box(metric)
    assert grid_target.interpolate_if_possible(metric, low, high) is None
    target = hmc.large_metric_target(metric, low, high, grid_tolerance=1e-4, truncation_tolerance=1e-5)
    assert target is metric
    samples = rhvae.riemannian_hmc(metric, n_samples=4, mcmc_steps=2, seed=0)
    assert samples.params["grid"] is None and samples.params["truncation"] is None
    assert bool(((samples.z >= low) & (samples.z <= high)).all())


def test_truncated_metric_at_d3(d3):
    """The truncated 3-D metric is within its bound τ λ of the full one at the codes, SPD, with (B, 3) forces;
    truncate_if_large truncates above its threshold; the chains of the sampler on it stay in the box."""
    metric = d3.rhvae.metric()
    cut = truncation.truncate_if_large(metric, 1e-3, min_centroids=1)
    assert isinstance(cut, truncation.TruncatedMetric) and cut.dim == D
    z = metric.centroids + 0.1
    difference = torch.linalg.matrix_norm(cut.G_inv(z) - metric.G_inv(z), ord=2)
    assert float(difference.max()) <= cut.bounds["G_inv"] * 1.001 + 1e-6
    assert spd(cut.G_inv(z)) and spd(cut.G(z))
    log_det, force = cut.log_det_and_grad(z)
    assert log_det.shape == (len(z),) and force.shape == (len(z), D) and bool(torch.isfinite(force).all())
    samples = rhvae.riemannian_hmc(cut, n_samples=4, mcmc_steps=2, seed=0)
    assert bool(((samples.z >= samples.box_low) & (samples.z <= samples.box_high)).all())


def test_truncation_helpers_at_d3(d3):
    """norm_sum is the sum of the largest eigenvalues of the (N, 3, 3) matrices; error_bounds scale the
    log-determinant bound with d; kd_blocks partitions the 3-D centroids."""
    M = d3.rhvae.M
    assert truncation.norm_sum(M) == pytest.approx(float(torch.linalg.eigvalsh(M.double())[:, -1].sum()), rel=1e-6)
    bounds_2, bounds_3 = (truncation.error_bounds(1.0, 1.0, 0.1, 2.0, d) for d in (2, 3))
    assert bounds_3["log_det_G_inv"] == pytest.approx(1.5 * bounds_2["log_det_G_inv"])
    blocks = truncation.kd_blocks(many_centroid_metric(300).centroids, 64)
    assert sorted(torch.cat(blocks).tolist()) == list(range(300)) and max(len(b) for b in blocks) <= 64


def test_grid_target_refuses_d3():
    """The bicubic grid target is 2-D: GridTarget, separable_sums and exact_log_det refuse a 3-D metric in one
    line naming the metric itself and the truncated metric."""
    metric = many_centroid_metric(20)
    axis = torch.linspace(-1, 1, 4, dtype=torch.float64)
    for call in (
        lambda: grid_target.GridTarget(metric, -torch.ones(D), torch.ones(D), 0.125),
        lambda: grid_target.separable_sums(metric, axis, axis, True),
        lambda: grid_target.exact_log_det(metric, axis, axis),
        lambda: grid_target.require_2d_metric(metric, "this"),
    ):
        one_line_refusal(call, "TruncatedMetric")


# ------------------------------------------------------------------------------------------------ evaluation
def test_log_likelihood_at_d3(d3):
    """The importance-sampling log p(x) at d = 3 is finite and below 0 for every test image and model."""
    for model in d3.models.values():
        ll = rhvae.log_likelihood(model, d3.data.test.x, n_samples=50, seed=0)
        assert ll.shape == (len(d3.data.test),) and bool(torch.isfinite(ll).all()) and bool((ll < 0).all())


def test_log_weights_and_elbo_at_d3(d3):
    """log_weights is (n, S) finite; the ELBO is the mean of the log-weights of the encoder (finite, < 0) and
    below the importance-sampling estimate of the same draws (Jensen: mean ≤ log-mean-exp)."""
    x = d3.data.test.x
    weights = likelihood.log_weights(d3.rhvae, x, n_samples=40, seed=0)
    assert weights.shape == (len(x), 40) and bool(torch.isfinite(weights).all())
    mean, logmeanexp = weights.mean(1), torch.logsumexp(weights, 1) - math.log(40)
    assert bool((mean <= logmeanexp + 1e-6).all())
    bound = rhvae.elbo(d3.vae, x, n_samples=20, seed=0)
    assert bound.shape == (len(x),) and bool(torch.isfinite(bound).all()) and bool((bound < 0).all())


def test_reconstruction_error_at_d3(d3):
    """Per-image BCE > 0 and MSE in [0, 1] for a d = 3 model; its summary is JSON-ready."""
    error = rhvae.reconstruction_error(d3.rhvae, d3.data.test.x)
    assert isinstance(error, likelihood.ReconstructionError)
    summary = error.summary()
    json.dumps(summary)
    assert summary["bce"] > 0 and 0 <= summary["mse"] <= 1


def test_exact_log_likelihood_refuses_d3(d3):
    """The exact quadrature is 2-D: one line naming latent_dim and log_likelihood."""
    one_line_refusal(lambda: rhvae.exact_log_likelihood(d3.vae, d3.data.test.x), "log_likelihood")


def test_log_likelihood_table_at_d3(d3):
    """log_likelihood_table at d = 3 has no exact quadrature but a finite importance-sampling estimate below 0."""
    row = likelihood.log_likelihood_table(d3.hvae, d3.data.test.x, n_samples=20, seed=0)
    json.dumps(row)
    assert "exact_converged" not in row
    assert math.isfinite(row["log_likelihood_is"]) and row["log_likelihood_is"] < 0


def test_ais_at_d3(d3):
    """AIS (rhvae.evaluation.ais) at d = 3, for every model kind: finite per-image values below 0, one per image."""
    for model in (d3.vae, d3.hvae, d3.rhvae):
        result = rhvae.ais_log_likelihood(model, d3.data.test.x[:2], n_steps=10, n_chains=2, n_leapfrog=2)
        assert result.log_px.shape == (2,)
        assert bool(torch.isfinite(result.log_px).all()) and bool((result.log_px < 0).all())


def test_bdmc_at_d3(d3):
    """BDMC at d = 3: simulated images of the model's own latent dimension, a finite gap per image."""
    result = rhvae.bdmc(d3.rhvae, 3, n_steps=10, n_chains=2, n_leapfrog=2, seed=1)
    assert result.z.shape == (3, 3) and result.x.shape == (3, 784)
    assert bool(torch.isfinite(result.gap).all()) and result.summary()["n_images"] == 3


def test_flow_diagnostics_at_d3(d3):
    """Flow diagnostics of a d = 3 HVAE and RHVAE: every number finite, κ ≥ λ and a contrast for the RHVAE only,
    JSON-ready with its flags."""
    for model in (d3.hvae, d3.rhvae):
        result = diagnostics.flow_diagnostics(model, d3.data.test.x, n_draws=3, seed=0)
        assert isinstance(result, diagnostics.FlowDiagnostics) and result.n_images == len(d3.data.test)
        numbers = [result.displacement, result.flow_gain, result.flow_gain_sem, result.step]
        assert all(math.isfinite(v) for v in numbers) and result.displacement >= 0
        record = json.loads(json.dumps(result.to_dict()))
        assert isinstance(record["flags"], list)
    assert result.kappa >= d3.rhvae.regularization and math.isfinite(result.contrast)
    hvae = diagnostics.flow_diagnostics(d3.hvae, d3.data.test.x, n_draws=2)
    assert hvae.kappa is None and hvae.contrast is None


# ------------------------------------------------------------------------------------------------ geometry
def test_latent_bounds_at_d3(d3):
    """A (2, 3) box holding every code, widened by the margin."""
    codes = d3.rhvae.centroids
    box = geometry.latent_bounds(codes, margin=0.2)
    assert box.shape == (2, D)
    assert bool((box[0] < codes.min(0).values).all() and (box[1] > codes.max(0).values).all())


def test_metric_magnitude_and_orientation_at_d3(d3):
    """log √det G⁻¹ at d = 3 is ½ log det G⁻¹ and at least (3/2) log λ; the eigen-decomposition reproduces G⁻¹,
    with eigenvalues ≥ λ; points of another dimension than the metric's are refused."""
    metric, z = d3.rhvae.metric(), d3.rhvae.centroids
    magnitude = geometry.metric_magnitude(metric, z)
    assert magnitude.shape == (len(z),)
    assert torch.allclose(magnitude, 0.5 * torch.logdet(metric.G_inv(z)), atol=1e-4)
    assert bool((magnitude >= 1.5 * math.log(metric.regularization) - 1e-5).all())
    e, V = geometry.metric_orientation(metric, z)
    assert e.shape == (len(z), D) and V.shape == (len(z), D, D)
    assert torch.allclose(V @ torch.diag_embed(e) @ V.transpose(-1, -2), metric.G_inv(z), atol=1e-4)
    assert bool((e >= metric.regularization * (1 - 1e-5)).all())
    with pytest.raises(ValueError, match="latent_dim"):
        geometry.metric_magnitude(metric, torch.zeros(4, 2))


def test_geodesic_at_d3(d3):
    """A geodesic between two 3-D codes by path optimisation: end points fixed, no longer than the straight line,
    L² ≤ E; path_length / path_energy of the line agree with the result; straight_line is the line."""
    metric = d3.rhvae.metric()
    z0, z1 = d3.rhvae.centroids[0], d3.rhvae.centroids[-1]
    result = geometry.geodesic(metric, z0, z1, n_points=10, steps=50)
    assert isinstance(result, geometry.GeodesicResult)
    assert result.path.shape == (10, D)
    assert torch.equal(result.path[0], z0.double()) and torch.equal(result.path[-1], z1.double())
    assert result.length <= result.line_length * (1 + 1e-6)
    assert result.length**2 <= result.energy * (1 + 1e-9)
    line = geometry.straight_line(z0.double(), z1.double(), 10)
    assert torch.allclose(line, result.line)
    double = interpolation.as_double_metric(metric)
    assert float(geometry.path_length(double, line, refine=4)) == pytest.approx(result.line_length, rel=1e-9)
    assert float(geometry.path_energy(double, line, refine=4)) == pytest.approx(result.line_energy, rel=1e-9)


def test_latent_grid_and_ellipses_refuse_d3(d3):
    """The n × n grid (and its LatentGrid) and the ellipses are 2-D: one line naming what works at any d."""
    one_line_refusal(lambda: geometry.latent_grid(d3.rhvae.centroids), "latent_bounds", "metric_magnitude")
    e, V = geometry.metric_orientation(d3.rhvae.metric(), d3.rhvae.centroids)
    one_line_refusal(lambda: geometry.ellipse_parameters(e, V), "metric_orientation")
    assert geometry.latent_grid(d3.rhvae.centroids[:, :2], n=3).points.shape == (9, 2)  # a 2-D projection works


def test_require_2d_latent():
    """Nothing at latent_dim 2; one line with the owner, the dimension and the alternative otherwise."""
    geometry.require_2d_latent(2, "x", "the model's", "y")
    message = one_line_refusal(lambda: geometry.require_2d_latent(3, "f draws a plane", "the model's", "g"), "g")
    assert message == "f draws a plane: the model's latent_dim must be 2, got 3 (use g)"


# ------------------------------------------------------------------------------------------------ persistence
def test_save_load_round_trip_at_d3(d3, tmp_path):
    """save → load gives a d = 3 model with identical outputs (codes, decoded images, frozen metric) and state
    digest; the file records latent_dim 3; a wrong expected type is a ModelFileError."""
    z = torch.randn(5, D, generator=torch.Generator().manual_seed(0))
    for name, model in d3.models.items():
        path = rhvae.save_model(model, tmp_path / f"{name}.pt", d3.histories[name])
        loaded, history, _ = rhvae.load_model(path, with_history=True)
        assert type(loaded) is type(model) and loaded.latent_dim == D
        assert len(history.epochs) == 5
        with torch.no_grad():
            assert torch.equal(loaded.decode(z), model.decode(z))
            assert torch.equal(loaded.encode(d3.data.test.x)[0], model.encode(d3.data.test.x)[0])
        assert persistence.state_digest(loaded.state_dict()) == persistence.state_digest(model.state_dict())
        payload = persistence.read_model_file(path)
        assert json.loads(payload["config"])["latent_dim"] == D
    loaded = rhvae.load_model(tmp_path / "RHVAE.pt")
    assert torch.equal(loaded.M, d3.rhvae.M) and torch.equal(loaded.centroids, d3.rhvae.centroids)
    with pytest.raises(rhvae.ModelFileError):
        rhvae.load_model(tmp_path / "RHVAE.pt", expected_type="vae")


def test_model_writer_at_d3(d3, tmp_path):
    """model_writer writes the same file content as save_model (the CLI's atomic set uses it)."""
    writer = persistence.model_writer(d3.vae)
    writer(tmp_path / "written.pt")
    assert rhvae.load_model(tmp_path / "written.pt").latent_dim == D


def test_shipped_models_at_d3():
    """A shipped model loads with the latent dimension its index row records (2 for the paper's models, which is
    all an index without a latent_dim field holds); none is shipped at latent_dim 3, and asking for one is refused
    with an error that names latent_dim."""
    rows = rhvae.shipped_models()
    assert len(rows) > 0
    row = rows[0]
    recorded = getattr(row, "latent_dim", 2)
    fields = {"latent_dim": recorded} if hasattr(row, "latent_dim") else {}
    assert rhvae.load_shipped(row.experiment, row.model, row.seed, path=row.path, **fields).latent_dim == recorded
    assert all(getattr(r, "latent_dim", 2) != D for r in rows)
    with pytest.raises((TypeError, ValueError), match="latent_dim"):
        rhvae.load_shipped("reconstruction", "rhvae", latent_dim=D)


# ------------------------------------------------------------------------------------------------ quality, paths
def test_quality_of_d3_samples(d3, classifier):
    """quality_score and generation_metrics of d = 3 samples: shares in [0, 1], finite FID."""
    images = rhvae.generate(d3.rhvae, n_samples=12, mcmc_steps=2).images
    score = quality.quality_score(images, classes=d3.data.classes, classifier=classifier)
    assert 0 <= score["in_class_fraction"] <= 1 and 0 <= score["mean_confidence"] <= 1
    metrics = quality.generation_metrics(images, d3.data.train.x, classifier=classifier)
    assert math.isfinite(metrics["fid_classifier"]) and metrics["fid_classifier"] >= 0
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1


def test_path_lengths_at_d3(d3):
    """Lengths of a 3-D polyline: the Riemannian length is the sum of the segment lengths and the last
    cumulative length; a path resampled at equal arc length keeps its end points and its segments are equal."""
    metric = interpolation.as_double_metric(d3.rhvae.metric())
    assert metric.centroids.dtype == torch.float64 and metric.dim == D
    path = interpolation.straight_line(d3.rhvae.centroids[0], d3.rhvae.centroids[1], 9)
    assert path.shape == (9, D)
    segments = interpolation.segment_lengths(metric, path)
    assert interpolation.riemannian_length(metric, path) == pytest.approx(float(segments.sum()))
    assert float(interpolation.cumulative_length(metric, path)[-1]) == pytest.approx(float(segments.sum()))
    assert interpolation.euclidean_length(path) == pytest.approx(float((path[-1] - path[0]).norm()))
    resampled = interpolation.resample_equal(None, path, 5)
    assert torch.equal(resampled[0], path[0]) and torch.equal(resampled[-1], path[-1])
    steps = (resampled[1:] - resampled[:-1]).norm(dim=-1)
    assert torch.allclose(steps, steps.mean().expand(4))


def test_geodesic_path_and_measures_at_d3(d3, classifier):
    """geodesic_path: n points with the exact end points, no longer under G than the line; path_measures of it:
    finite numbers, confidences in [0, 1]."""
    metric = interpolation.as_double_metric(d3.rhvae.metric())
    z0, z1 = d3.rhvae.centroids[0], d3.rhvae.centroids[-1]
    path = interpolation.geodesic_path(metric, z0, z1, 8, resolution=12, steps=30)
    assert path.shape == (8, D) and torch.equal(path[0], z0.double()) and torch.equal(path[-1], z1.double())
    line = interpolation.straight_line(z0, z1, 64)
    assert interpolation.riemannian_length(metric, path) <= interpolation.riemannian_length(metric, line) * 1.01
    measures = interpolation.path_measures(d3.rhvae, path, classifier, d3.rhvae.centroids, metric)
    assert 0 <= measures["confidence_min"] <= measures["confidence_mean"] <= 1
    assert all(math.isfinite(measures[m]) for m in interpolation.MEASURES)


def test_decoded_paths_at_d3(d3):
    """Decoded frames of every d = 3 model's straight line and of the RHVAE's geodesic, in [0, 1]."""
    strips = interpolation.decoded_paths(d3.models, d3.data.test.x[0], d3.data.test.x[2], n_points=5, resolution=8)
    assert set(strips) == {"VAE line", "HVAE line", "RHVAE line", "RHVAE geodesic"}
    assert all(frames.shape == (5, 784) and in_unit_interval(frames) for frames in strips.values())


def test_interpolation_table_at_d3(d3, classifier):
    """interpolation_table, interpolations_over_seeds, interpolation_rows and interpolation_checks on d = 3 models:
    a geodesic no longer than its line, every row finite, one check per claim."""
    data = d3.data
    codes = {name: model.encode(data.train.x)[0].detach() for name, model in d3.models.items()}
    table = interpolation.interpolation_table(
        d3.models, None, data.test.x, data.test.y, codes, classifier, n_pairs=1, n_points=5, resolution=8
    )
    ratio = table["geodesic_vs_line"]["same_class"]["mean_ratio"]
    assert ratio is not None and ratio <= 1.01
    rows = interpolation.interpolation_rows(table, "d3")
    assert rows and all(math.isfinite(v) for row in rows.values() for v in row.values())
    tables, per_seed = interpolation.interpolations_over_seeds(
        {"d3": {0: d3.models}}, {"d3": data}, classifier, n_pairs=1, n_points=5, resolution=8
    )
    assert set(tables["d3"]) == {0} and per_seed[0] == rows
    checks, notes = interpolation.interpolation_checks(per_seed, {"d3": list(d3.models)})
    assert checks and all(isinstance(v, bool) for v in checks.values()) and isinstance(notes, list)


# ------------------------------------------------------------------------------------------------ clustering
def test_clustering_at_d3(d3):
    """clustering_table of d = 3 models: Euclidean k-medoids for every model, the RHVAE's geodesic one skipped with
    the reason in the protocol; rows, agreement, summary and checks follow from it; over seeds it is the same."""
    data = d3.data
    x, y = torch.cat([data.train.x, data.test.x]), torch.cat([data.train.y, data.test.y])
    table = clustering.clustering_table(d3.models, x, y, n_init=3)
    assert set(table["results"]) == {"VAE/euclidean", "HVAE/euclidean", "RHVAE/euclidean"}
    assert "latent_dim 3" in table["protocol"]["geodesic_skipped"]["RHVAE"]
    for result in table["results"].values():
        assert -1 <= result["ari"] <= 1 and 0 <= result["purity"] <= 1 and len(result["partition"]) == len(y)
    tables, per_seed, agreement = clustering.clustering_over_seeds({"d3": {0: d3.models}}, {"d3": data}, n_init=3)
    assert tables["d3"][0]["results"] == table["results"]
    assert per_seed[0] == clustering.clustering_rows(table, "d3")
    assert agreement["d3"] == clustering.seed_agreement({0: table}) and set(agreement["d3"]) == set(table["results"])
    summary = clustering.clustering_summary(per_seed, agreement)
    assert summary["d3 · RHVAE euclidean"]["ari"]["mean"] == pytest.approx(table["results"]["RHVAE/euclidean"]["ari"])
    checks = clustering.clustering_checks(per_seed, agreement, {"d3": list(d3.models)})
    assert checks and not any(checks.values())  # no geodesic rows at d = 3: no claim about them holds


def test_clustering_distances_at_d3(d3):
    """Euclidean distances of 3-D codes are cdist's; the grid graph (geodesic_distance_matrix, square_grid)
    refuses 3-D codes and a 3-D metric in one line naming euclidean_distance_matrix."""
    codes = d3.rhvae.centroids.double()
    distance = clustering.euclidean_distance_matrix(codes)
    assert np.allclose(distance, torch.cdist(codes, codes).numpy())
    one_line_refusal(lambda: clustering.geodesic_distance_matrix(d3.rhvae.metric(), codes), "euclidean_distance_matrix")
    one_line_refusal(
        lambda: clustering.geodesic_distance_matrix(d3.rhvae.metric(), codes[:, :2]), "the metric's latent_dim"
    )
    one_line_refusal(lambda: clustering.square_grid(codes.numpy(), 8, 0.1), "euclidean_distance_matrix")


# ------------------------------------------------------------------------------------------------ pictures
def test_latent_pictures_refuse_d3(d3):
    """Every picture of the latent plane refuses a d = 3 metric, model or codes in one line naming the function
    and what to use instead."""
    metric, model = d3.rhvae.metric(), d3.rhvae
    result = geometry.geodesic(metric, model.centroids[0], model.centroids[1], n_points=5, steps=5)
    generated = rhvae.generate(model, 4, 1)
    calls = {
        "plot_metric_magnitude": (lambda: plotting.plot_metric_magnitude(metric), "metric_magnitude"),
        "plot_metric_orientation": (lambda: plotting.plot_metric_orientation(metric), "metric_orientation"),
        "plot_metric_panels": (lambda: plotting.plot_metric_panels({1.0: metric}, model.centroids), "metric_"),
        "plot_metric_models": (lambda: plotting.plot_metric_models({"RHVAE": model}), "metric_magnitude"),
        "plot_latent_samples": (lambda: plotting.plot_latent_samples(model, None, generated), "plot_image_grid"),
        "plot_geodesic": (lambda: plotting.plot_geodesic(metric, result), "plot_interpolations"),
        "plot_partitions": (lambda: plotting.plot_partitions(model.centroids, {"y": d3.data.train.y}), "project"),
        "MetricExplorer": (lambda: widgets.MetricExplorer(model), "metric_magnitude"),
    }
    before = plt.get_fignums()
    for name, (call, alternative) in calls.items():
        assert one_line_refusal(call, alternative).startswith(f"{name} draws a 2-D latent space")
    assert plt.get_fignums() == before  # refused before any figure was made
    plotting.require_2d_picture("plot_x", 2, "the model's")
    one_line_refusal(lambda: plotting.require_2d_picture("plot_x", 3, "the model's"), "metric_magnitude")


def test_image_pictures_at_d3(d3):
    """The pictures of images work at any d: sample grids, reconstructions, interpolation strips of d = 3 models;
    ellipse_scale is a positive scale from 3-D eigenvalues."""
    generated = {name: rhvae.generate(model, 4, 1) for name, model in d3.models.items()}
    x = d3.data.test.x[:4]
    strips = interpolation.decoded_paths(d3.models, x[0], x[1], n_points=4, resolution=6)
    mosaic = plotting.image_mosaic(generated["VAE"].images, n_cols=2)
    assert mosaic.shape == (2 * 29 - 1, 2 * 29 - 1) and 0 <= mosaic.min() and mosaic.max() <= 1
    figures = [
        plotting.plot_image_grid(generated["RHVAE"].images),
        plotting.plot_samples(generated),
        plotting.plot_reconstructions(x, {name: m.reconstruct(x).detach() for name, m in d3.models.items()}),
        plotting.plot_interpolations(strips),
    ]
    try:
        assert [len(f.axes) for f in figures] == [1, 3, 4, 4]
    finally:
        for figure in figures:
            plt.close(figure)
    scale = plotting.ellipse_scale(d3.rhvae.metric(), d3.rhvae.centroids, (0.0, 1.0, 0.0, 1.0))
    assert math.isfinite(scale) and scale > 0


def test_explorers_at_d3(d3):
    """SamplerExplorer, InterpolationExplorer and AugmentationExplorer draw d = 3 models without an error."""
    sampler = widgets.SamplerExplorer(d3.models, mcmc_steps=2, n_samples=4)
    interpolation = widgets.InterpolationExplorer(d3.models, d3.data.test, n_points=4)
    for explorer in (sampler, interpolation):
        assert explorer.error is None and explorer.redraws == 1 and explorer.image.value[:4] == b"\x89PNG"
    assert set(sampler.last) == set(d3.models) and sampler.last["RHVAE"].z.shape == (4, D)
    data = d3.data
    per_class = {int(c): d3.rhvae for c in data.classes}  # one d = 3 RHVAE stands in for every class
    augmentation = widgets.AugmentationExplorer(per_class, data.train, data.test, data.test, mcmc_steps=1, steps=5)
    augmentation.n_generated.value = 2
    assert augmentation.on_click() and augmentation.error is None, augmentation.error
    assert 0 <= augmentation.accuracies[2] <= 1


# ------------------------------------------------------------------------------------------------ other d
@pytest.mark.parametrize("latent_dim", [5, 16])
def test_end_to_end_at_other_latent_dims(d3, latent_dim, tmp_path):
    """The d = 3 chain once more at d = 5 and d = 16 (the ends of what the models must handle beside 2): an RHVAE
    trains, samples in its box, is diagnosed, saved and loaded with identical outputs, and evaluated."""
    x, x_test = d3.data.train.x, d3.data.test.x
    torch.manual_seed(0)
    model = rhvae.RHVAE(latent_dim=latent_dim, hidden_dim=8)
    history = rhvae.train(model, x, x_test, epochs=2, progress=False)
    assert all(math.isfinite(e.train_loss) for e in history.epochs)
    assert model.M.shape == (len(x), latent_dim, latent_dim) and spd(model.metric().G_inv(model.centroids))
    samples = rhvae.riemannian_hmc(model, n_samples=4, mcmc_steps=2, seed=0)
    assert bool(((samples.z >= samples.box_low) & (samples.z <= samples.box_high)).all())
    assert samples.images.shape == (4, 784) and in_unit_interval(samples.images)
    found = diagnostics.flow_diagnostics(model, x_test, n_draws=2)
    assert math.isfinite(found.displacement) and math.isfinite(found.contrast)
    loaded = rhvae.load_model(rhvae.save_model(model, tmp_path / "model.pt"))
    z = torch.randn(3, latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.decode(z))
    ll = rhvae.log_likelihood(loaded, x_test, n_samples=10)
    assert bool(torch.isfinite(ll).all()) and bool((ll < 0).all())


# ------------------------------------------------------------------------------------------------ command line
def test_pythae_bridge_and_score_pythae_at_d3(d3, tmp_path, capsys):
    """The d = 3 RHVAE to a pythae folder and back (zero-padded to pythae's 512 hidden units: the same function);
    score-pythae of that folder evaluates it at d = 3 (no exact value there)."""
    folder = rhvae.to_pythae(d3.rhvae, tmp_path / "pythae", pythae_flow=True)
    back = rhvae.from_pythae(folder)
    x = d3.data.test.x
    assert back.latent_dim == D and torch.allclose(back.reconstruct(x), d3.rhvae.reconstruct(x), atol=1e-6)
    z = d3.rhvae.centroids
    assert torch.allclose(back.metric().G_inv(z), d3.rhvae.metric().G_inv(z), rtol=1e-5, atol=1e-6)
    command = ["score-pythae", str(folder), "--experiment", "reconstruction", "--ll-samples", "20"]
    assert cli.main([*command, "--n-samples", "6", "--mcmc-steps", "2", "--out", str(tmp_path / "score")]) == 0
    results = json.loads((tmp_path / "score" / "eval.json").read_text())
    assert results["model_config"]["latent_dim"] == D and "exact_converged" not in results["log_likelihood"]
    assert "latent_dim 3" in capsys.readouterr().out


def test_cli_train_and_eval_at_d3(tmp_path, capsys):
    """python -m rhvae train --latent-dim 3 writes a d = 3 model; eval of it writes eval.json with the
    importance-sampling log-likelihood (no exact value at d = 3), samples and reconstructions; a latent dimension
    out of range is one line with exit status 2."""
    out, evaluated = tmp_path / "train", tmp_path / "eval"
    arguments = ["--experiment", "reconstruction", "--n-per-class", "5", "--epochs", "3", "--hidden-dim", "16"]
    assert cli.main(["train", "--model", "rhvae", "--latent-dim", "3", *arguments, "--quiet", "--out", str(out)]) == 0
    assert rhvae.load_model(out / "model.pt").latent_dim == D
    assert json.loads((out / "run.json").read_text())["model_config"]["latent_dim"] == D
    command = ["eval", "-m", str(out / "model.pt"), "--ll-samples", "20", "--n-samples", "6", "--mcmc-steps", "2"]
    assert cli.main([*command, "--out", str(evaluated)]) == 0
    results = json.loads((evaluated / "eval.json").read_text())
    assert results["model_config"]["latent_dim"] == D and "exact_converged" not in results["log_likelihood"]
    assert math.isfinite(results["log_likelihood"]["log_likelihood_is"]) and results["diagnostics"] is not None
    assert (evaluated / "samples.png").is_file() and (evaluated / "reconstructions.png").is_file()
    assert "latent_dim 3" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_status:  # argparse's usage error, one line (OneLineParser)
        cli.main(["train", "--latent-dim", "65", "--out", str(tmp_path / "never")])
    assert exit_status.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--latent-dim" in error
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------------------ coverage
NO_LATENT = "no latent input"  # prefix of the reason of a name that takes no model, metric or codes

COVERAGE: dict[str, dict[str, str]] = {
    "rhvae": {
        "from_pythae": "test_pythae_bridge_and_score_pythae_at_d3",
        "to_pythae": "test_pythae_bridge_and_score_pythae_at_d3",
        "VAE": "test_models_train_at_d3",
        "HVAE": "test_models_train_at_d3",
        "RHVAE": "test_models_train_at_d3",
        "train": "test_models_train_at_d3",
        "ConfigError": "test_config_error_at_d3",
        "ModelFileError": "test_save_load_round_trip_at_d3",
        "save_model": "test_save_load_round_trip_at_d3",
        "load_model": "test_save_load_round_trip_at_d3",
        "shipped_models": "test_shipped_models_at_d3",
        "load_shipped": "test_shipped_models_at_d3",
        "sample_prior": "test_sample_prior_at_d3",
        "generate": "test_generate_at_d3",
        "riemannian_hmc": "test_riemannian_hmc_at_d3",
        "log_likelihood": "test_log_likelihood_at_d3",
        "elbo": "test_log_weights_and_elbo_at_d3",
        "reconstruction_error": "test_reconstruction_error_at_d3",
        "exact_log_likelihood": "test_exact_log_likelihood_refuses_d3",
        "ais_log_likelihood": "test_ais_at_d3",
        "bdmc": "test_bdmc_at_d3",
        "experiment_data": "test_models_train_at_d3",
        "ExperimentData": "test_models_train_at_d3",
        "DataError": f"{NO_LATENT}: a bad subset of digits",
        "load_mnist": f"{NO_LATENT}: the digits",
    },
    "rhvae.evaluation.geometry": {
        "encoder_means": "test_interpolation_table_at_d3",
        "GeodesicResult": "test_geodesic_at_d3",
        "geodesic": "test_geodesic_at_d3",
        "path_length": "test_geodesic_at_d3",
        "path_energy": "test_geodesic_at_d3",
        "straight_line": "test_geodesic_at_d3",
        "latent_bounds": "test_latent_bounds_at_d3",
        "metric_magnitude": "test_metric_magnitude_and_orientation_at_d3",
        "metric_orientation": "test_metric_magnitude_and_orientation_at_d3",
        "latent_grid": "test_latent_grid_and_ellipses_refuse_d3",
        "LatentGrid": "test_latent_grid_and_ellipses_refuse_d3",
        "ellipse_parameters": "test_latent_grid_and_ellipses_refuse_d3",
        "require_2d_latent": "test_require_2d_latent",
    },
    "rhvae.evaluation.diagnostics": {
        "flow_diagnostics": "test_flow_diagnostics_at_d3",
        "FlowDiagnostics": "test_flow_diagnostics_at_d3",
    },
    "rhvae.evaluation.likelihood": {
        "log_likelihood": "test_log_likelihood_at_d3",
        "log_weights": "test_log_weights_and_elbo_at_d3",
        "elbo": "test_log_weights_and_elbo_at_d3",
        "reconstruction_error": "test_reconstruction_error_at_d3",
        "ReconstructionError": "test_reconstruction_error_at_d3",
        "exact_log_likelihood": "test_exact_log_likelihood_refuses_d3",
        "ExactLogLikelihood": "test_exact_log_likelihood_refuses_d3",
        "NotConverged": "test_exact_log_likelihood_refuses_d3",
        "log_likelihood_table": "test_log_likelihood_table_at_d3",
        "binary_entropy": f"{NO_LATENT}: pixels",
        "prior_tail_log_mass": f"{NO_LATENT}: a number of the 2-D quadrature's box",
    },
    "rhvae.sampling.hmc": {
        "sample_prior": "test_sample_prior_at_d3",
        "PriorSamples": "test_sample_prior_at_d3",
        "generate": "test_generate_at_d3",
        "Generated": "test_generate_at_d3",
        "riemannian_hmc": "test_riemannian_hmc_at_d3",
        "HMCSamples": "test_riemannian_hmc_at_d3",
        "default_box": "test_default_box_at_d3",
        "large_metric_target": "test_large_metric_target_falls_back_at_d3",
        "check_work": f"{NO_LATENT}: counts of steps",
    },
    "rhvae.sampling.truncation": {
        "TruncatedMetric": "test_truncated_metric_at_d3",
        "truncate_if_large": "test_truncated_metric_at_d3",
        "norm_sum": "test_truncation_helpers_at_d3",
        "error_bounds": "test_truncation_helpers_at_d3",
        "kd_blocks": "test_truncation_helpers_at_d3",
        "truncation_radius": f"{NO_LATENT}: numbers (S, T, λ, τ)",
    },
    "rhvae.sampling.grid_target": {
        "GridTarget": "test_grid_target_refuses_d3",
        "separable_sums": "test_grid_target_refuses_d3",
        "exact_log_det": "test_grid_target_refuses_d3",
        "require_2d_metric": "test_grid_target_refuses_d3",
        "interpolate_if_possible": "test_large_metric_target_falls_back_at_d3",
    },
    "rhvae.persistence": {
        "save_model": "test_save_load_round_trip_at_d3",
        "load_model": "test_save_load_round_trip_at_d3",
        "read_model_file": "test_save_load_round_trip_at_d3",
        "state_digest": "test_save_load_round_trip_at_d3",
        "ModelFileError": "test_save_load_round_trip_at_d3",
        "model_writer": "test_model_writer_at_d3",
        "cache_key": f"{NO_LATENT}: a settings dict",
        "json_field": f"{NO_LATENT}: a file's JSON field",
        "sha256": f"{NO_LATENT}: a file's checksum",
        "shipped_checksums": f"{NO_LATENT}: the SHA256SUMS file",
        "verify_shipped": f"{NO_LATENT}: a file's checksum",
    },
    "rhvae.shipped": {
        "shipped_models": "test_shipped_models_at_d3",
        "load_shipped": "test_shipped_models_at_d3",
        "shipped_path": "test_shipped_models_at_d3",
        "ShippedModel": "test_shipped_models_at_d3",
        "ShippedModels": "test_shipped_models_at_d3",
    },
    "rhvae.history": {
        "History": "test_models_train_at_d3",
        "EpochRecord": "test_models_train_at_d3",
    },
    "rhvae.training": {
        "train": "test_models_train_at_d3",
        "TrainingSettings": "test_models_train_at_d3",
        "train_group": "test_train_group_and_member_losses_at_d3",
        "evaluate_member_losses": "test_train_group_and_member_losses_at_d3",
        "TrainingDiverged": "test_training_diverged_at_d3",
        "TrainingInterrupted": f"{NO_LATENT}: Ctrl-C",
        "adam": f"{NO_LATENT}: an optimiser of parameters",
    },
    "rhvae.experiments.quality": {
        "quality_score": "test_quality_of_d3_samples",
        "generation_metrics": "test_quality_of_d3_samples",
        "load_classifier": "test_quality_of_d3_samples",
        "QualityClassifier": "test_quality_of_d3_samples",
        "ClassifierFileError": f"{NO_LATENT}: the classifier's file",
        "classifier_accuracy": f"{NO_LATENT}: the classifier on real digits",
        "features": f"{NO_LATENT}: images",
        "frechet_distance": f"{NO_LATENT}: features",
        "precision_recall": f"{NO_LATENT}: features",
        "generation_score": f"{NO_LATENT}: images",
        "held_out_digits": f"{NO_LATENT}: real digits",
    },
    "rhvae.experiments.interpolation": {
        "as_double_metric": "test_path_lengths_at_d3",
        "straight_line": "test_path_lengths_at_d3",
        "segment_lengths": "test_path_lengths_at_d3",
        "cumulative_length": "test_path_lengths_at_d3",
        "riemannian_length": "test_path_lengths_at_d3",
        "euclidean_length": "test_path_lengths_at_d3",
        "resample_equal": "test_path_lengths_at_d3",
        "geodesic_path": "test_geodesic_path_and_measures_at_d3",
        "path_measures": "test_geodesic_path_and_measures_at_d3",
        "decoded_paths": "test_decoded_paths_at_d3",
        "interpolation_table": "test_interpolation_table_at_d3",
        "interpolations_over_seeds": "test_interpolation_table_at_d3",
        "interpolation_rows": "test_interpolation_table_at_d3",
        "interpolation_checks": "test_interpolation_table_at_d3",
        "pair_indices": f"{NO_LATENT}: labels",
    },
    "rhvae.experiments.clustering": {
        "clustering_table": "test_clustering_at_d3",
        "clustering_over_seeds": "test_clustering_at_d3",
        "clustering_rows": "test_clustering_at_d3",
        "clustering_summary": "test_clustering_at_d3",
        "clustering_checks": "test_clustering_at_d3",
        "seed_agreement": "test_clustering_at_d3",
        "euclidean_distance_matrix": "test_clustering_distances_at_d3",
        "geodesic_distance_matrix": "test_clustering_distances_at_d3",
        "square_grid": "test_clustering_distances_at_d3",
        "KMedoidsResult": f"{NO_LATENT}: a partition",
        "k_medoids": f"{NO_LATENT}: a distance matrix",
        "grid_offsets": f"{NO_LATENT}: integer offsets",
        "adjusted_rand_index": f"{NO_LATENT}: labels",
        "contingency_table": f"{NO_LATENT}: labels",
        "normalized_mutual_information": f"{NO_LATENT}: labels",
        "purity": f"{NO_LATENT}: labels",
        "reliability": f"{NO_LATENT}: labels",
        "scores": f"{NO_LATENT}: a partition and labels",
    },
    "rhvae.interfaces.plotting": {
        "plot_metric_magnitude": "test_latent_pictures_refuse_d3",
        "plot_metric_orientation": "test_latent_pictures_refuse_d3",
        "plot_metric_panels": "test_latent_pictures_refuse_d3",
        "plot_metric_models": "test_latent_pictures_refuse_d3",
        "plot_latent_samples": "test_latent_pictures_refuse_d3",
        "plot_geodesic": "test_latent_pictures_refuse_d3",
        "plot_partitions": "test_latent_pictures_refuse_d3",
        "require_2d_picture": "test_latent_pictures_refuse_d3",
        "ellipse_scale": "test_image_pictures_at_d3",
        "image_mosaic": "test_image_pictures_at_d3",
        "plot_image_grid": "test_image_pictures_at_d3",
        "plot_samples": "test_image_pictures_at_d3",
        "plot_reconstructions": "test_image_pictures_at_d3",
        "plot_interpolations": "test_image_pictures_at_d3",
    },
    "rhvae.interfaces.widgets": {
        "MetricExplorer": "test_latent_pictures_refuse_d3",
        "SamplerExplorer": "test_explorers_at_d3",
        "InterpolationExplorer": "test_explorers_at_d3",
        "AugmentationExplorer": "test_explorers_at_d3",
        "controls": f"{NO_LATENT}: widgets",
        "figure_png": f"{NO_LATENT}: a figure",
        "sampler_figsize": f"{NO_LATENT}: counts of images",
    },
    "rhvae.interfaces.cli": {
        "main": "test_cli_train_and_eval_at_d3",
        "run_train": "test_cli_train_and_eval_at_d3",
        "run_eval": "test_cli_train_and_eval_at_d3",
        "build_parser": "test_cli_train_and_eval_at_d3",
        "model_config": "test_cli_train_and_eval_at_d3",
        "OneLineParser": "test_cli_train_and_eval_at_d3",
        "prepare_out_folder": "test_cli_train_and_eval_at_d3",
        "remove_created": "test_cli_train_and_eval_at_d3",
        "run_score_pythae": "test_pythae_bridge_and_score_pythae_at_d3",
        "write_evaluation": "test_cli_train_and_eval_at_d3",
        "run_report": f"{NO_LATENT}: a run folder's results.json",
        "run_data": f"{NO_LATENT}: a data source",
        "run_kernels": f"{NO_LATENT}: the compiled d = 2 kernels",
    },
}


def public_callables(module_name: str) -> set[str]:
    """The module's ``__all__`` (or, without one, the names it defines that do not start with "_"), callables only
    (classes, functions): constants such as ``rhvae.EXPERIMENTS`` have no latent dimension."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        names = module.__all__
    else:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and inspect.getmodule(v) is module]
    return {name for name in names if callable(getattr(module, name))}


@pytest.mark.parametrize("module_name", sorted(COVERAGE))
def test_coverage_is_complete(module_name):
    """Every public callable of the module has a d = 3 test here (or a stated reason that it takes no latent
    input), and every listed test exists: a new public name fails this test until it is covered."""
    listed = COVERAGE[module_name]
    public = public_callables(module_name)
    assert set(listed) == public, f"not covered: {sorted(public - set(listed))}; gone: {sorted(set(listed) - public)}"
    for name, entry in listed.items():
        assert entry.startswith(f"{NO_LATENT}: ") or callable(globals().get(entry)), (name, entry)
    if module_name == "rhvae":  # the top-level API: at most the data helpers go without a model
        exempt = {name for name, entry in listed.items() if entry.startswith(NO_LATENT)}
        assert exempt <= {"DataError", "load_mnist"}
