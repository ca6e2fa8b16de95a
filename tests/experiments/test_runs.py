"""rhvae.experiments.runs (parameter checks, run folders, results.json) and rhvae.interfaces.widgets (built without a
kernel)."""

import html
import json
import math

import pytest
import torch

from rhvae.experiments import runs, tables
from rhvae.experiments.model_cache import MODEL_CONFIGS, train_experiment_model
from rhvae.experiments.registry import PARAMETERS, REGISTRY
from rhvae.interfaces import plotting
from rhvae.models import RHVAE
from rhvae.paths import FIGURES_DIR, ROOT
from rhvae.sampling.hmc import generate


def defaults(experiment, **overrides):
    """A namespace like a notebook's after its parameters cell (quick settings, batch mode)."""
    ns = {
        "epochs": 500,
        "seeds": [0],
        "data_seed": 0,
        "data_source": "bundled",
        "lr": 1e-3,
        "objective": None,
        "reuse_cache": True,
        "interactive": False,
        "quick": False,
        "threads": 1,
        "device": "cpu",
        "output_dir": None,
        "cache_dir": None,
        "n_lf": None,
        "eps_lf": None,
        "beta_zero": None,
        "regularization": None,
        "temperature": None,
        "temperatures": [0.6, 0.8, 1.0],
        "grid_n": 80,
        "hvae_n_lf": None,
        "hvae_eps_lf": None,
        "hvae_beta_zero": None,
        "mcmc_steps": 90,
        "n_samples": 100,
        "ll_samples": 1000,
        "n_show": 10,
        "hidden_dim": 64,
        "sizes": [20, 50],
        "n_generated": 500,
        "classifier_steps": 1500,
        "coverage_samples": 2000,
        "n_pairs": 5,
        "n_points": 16,
        "n_init": 10,
        "radius": 3,
        "latent_dims": [2, 4, 16],
        "bdmc_images": 10,
        "ais_steps": 200,
        "unrelated": object(),  # globals() holds much more than the parameters
    }
    ns.update(overrides)
    return ns


@pytest.mark.parametrize("experiment", list(PARAMETERS))
def test_defaults_validate(experiment):
    params = runs.validate_parameters(experiment, defaults(experiment))
    assert set(params) == set(PARAMETERS[experiment]) | {"given"}
    assert params["epochs"] == 500


def test_quick_applies_quick_settings_and_keeps_what_was_given():
    params = runs.validate_parameters("reconstruction", defaults("reconstruction", quick=True))
    quick = {k: v for k, v in REGISTRY["reconstruction"].quick.items() if k in PARAMETERS["reconstruction"]}
    assert quick and "grid_n" not in quick  # only the quick settings the notebook declares apply
    for key, value in quick.items():
        assert params[key] == value
    assert params["given"]["epochs"] == 500


def test_int_where_float_is_wanted_is_accepted_and_converted():
    params = runs.validate_parameters("metric", defaults("metric", temperatures=[1, 0.5], lr=1, eps_lf=1))
    assert params["temperatures"] == [1.0, 0.5] and isinstance(params["temperatures"][0], float)
    assert isinstance(params["lr"], float) and isinstance(params["eps_lf"], float)
    assert runs.validate_parameters("metric", defaults("metric", temperatures=0.6))["temperatures"] == [0.6]
    assert runs.validate_parameters("metric", defaults("metric", seeds=2))["seeds"] == [2]


def test_over_seeds_gives_mean_and_sample_std_and_compares_rows():
    per_seed = {0: {"A": {"x": 1.0}, "B": {"x": 2.0}}, 1: {"A": {"x": 3.0}, "B": {"x": 1.0}}, 2: {"A": {"x": 5.0}}}
    summary = tables.over_seeds(per_seed, ("x",))
    assert summary["A"]["x"]["mean"] == pytest.approx(3.0) and summary["A"]["x"]["std"] == pytest.approx(2.0)
    assert summary["B"]["x"]["values"] == {0: 2.0, 1: 1.0} and summary["B"]["x"]["std"] == pytest.approx(0.5**0.5)
    assert tables.over_seeds({0: per_seed[0]}, ("x",))["A"]["x"]["std"] is None
    # A vs B on the seeds that have both: differences -1 and +2, mean +0.5; A is higher in 1 of 2 seeds
    assert tables.compare_over_seeds(per_seed, "x", "A", "B") == (True, "1/2 seeds")
    assert tables.compare_over_seeds(per_seed, "x", "A", "B", higher=False) == (False, "1/2 seeds")
    assert tables.compare_over_seeds(per_seed, "x", "A", "C") == (False, "0/0 seeds")
    assert "3 ± 2" in tables.format_table(summary, {"x": "x"})


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("epochs", "500", "'epochs' must be an integer >= 1"),
        ("epochs", 0, "'epochs' must be an integer >= 1"),
        ("epochs", 2.5, "'epochs'"),
        ("temperatures", [], "'temperatures' must be"),
        ("temperatures", [0.6, "hot"], "'temperatures'"),
        ("temperatures", [0.6, -1.0], ">= 0.01 and <= 100"),
        ("temperatures", "0.6", "'temperatures'"),
        ("seeds", [], "'seeds' must be an integer or a non-empty list of distinct integers"),
        ("seeds", [0, 0], "'seeds'"),
        ("seeds", [0, -1], ">= 0"),
        ("seeds", [0.5], "'seeds'"),
        ("eps_lf", "0.01", "'eps_lf' must be a number > 0"),
        ("beta_zero", 1.5, "'beta_zero' must be a number >= 0.0001 and <= 1"),
        ("reuse_cache", 1, "'reuse_cache' must be True or False"),
        ("data_source", "web", "'data_source' must be one of 'bundled', 'torchvision'"),
        ("threads", 0, "'threads'"),
        ("lr", float("nan"), "'lr'"),
        ("objective", "fast", "'objective' must be one of 'elbo', 'authors'"),
    ],
)
def test_bad_parameters_name_the_parameter_and_range(name, value, fragment):
    with pytest.raises(ValueError) as info:
        runs.validate_parameters("metric", defaults("metric", **{name: value}))
    assert fragment in str(info.value)


def test_missing_parameter_is_named():
    ns = defaults("metric")
    del ns["grid_n"]
    with pytest.raises(ValueError, match="grid_n"):
        runs.validate_parameters("metric", ns)


def test_model_configs_read_model_configs_and_overrides():
    params = runs.validate_parameters("generation_7_classes", defaults("generation_7_classes"))
    configs = runs.model_configs(params, "generation_7_classes")
    for key, value in MODEL_CONFIGS["rhvae"].items():
        if key != "temperature":
            assert configs["rhvae"][key] == value
    assert configs["rhvae"]["temperature"] == 0.6  # the paper's setting of this experiment
    params = runs.validate_parameters("reconstruction", defaults("reconstruction", eps_lf=0.02, hvae_n_lf=3))
    configs = runs.model_configs(params, "reconstruction")
    assert configs["rhvae"]["eps_lf"] == 0.02 and configs["hvae"]["n_lf"] == 3
    assert configs["rhvae"]["temperature"] == MODEL_CONFIGS["rhvae"]["temperature"]


def test_run_dir_defaults_to_figures_and_relative_paths_resolve_from_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    assert runs.resolve_path("figures/x") == ROOT / "figures" / "x"
    name = runs.run_dir_name("metric")
    assert name.startswith("metric_") and len(name.split("_")) == 7
    monkeypatch.setattr(runs, "FIGURES_DIR", tmp_path / "figs")
    a = runs.make_run_dir("metric")
    b = runs.make_run_dir("metric")
    assert a != b and a.parent == b.parent == tmp_path / "figs"
    assert FIGURES_DIR == ROOT / "figures"


def test_cache_folder_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(runs.CACHE_ENV, raising=False)
    assert runs.cache_folder(None) == runs.CACHE_DIR
    monkeypatch.setenv(runs.CACHE_ENV, str(tmp_path / "env"))
    assert runs.cache_folder(None) == tmp_path / "env"
    assert runs.cache_folder(str(tmp_path / "arg")) == tmp_path / "arg"


@pytest.fixture(scope="module")
def tiny_rhvae():
    """A real RHVAE trained for 2 epochs on 24 real digits (metric subset, 1/2/3 x 10)."""
    trained = train_experiment_model(
        "metric", "rhvae", epochs=2, n_per_class=10, use_cache=False, progress=False, **MODEL_CONFIGS["rhvae"]
    )
    return trained


def test_run_writes_results_json_with_provenance(tmp_path, tiny_rhvae):
    params = runs.validate_parameters(
        "metric", defaults("metric", quick=True, output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "c"))
    )
    run = runs.Run("metric", params)
    data = run.data(n_per_class=10)
    trained = run.train("rhvae", MODEL_CONFIGS["rhvae"], 0, label="rhvae_T1", data=data)
    again = run.train("rhvae", MODEL_CONFIGS["rhvae"], 0, label="rhvae_T1_again", data=data)
    assert not run.models["rhvae_T1"]["reused_from_cache"] and run.models["rhvae_T1_again"]["reused_from_cache"]
    run.record(metric=tables.metric_summary(trained.model.metric(), trained.model.centroids, grid_n=20))
    gen = generate(again.model, n_samples=4, mcmc_steps=2, seed=0)
    fig = plotting.plot_samples({"RHVAE": gen})
    run.save_figure(fig, "samples")
    print(run.conclude("claim", {"a": True, "b": False}))
    path = run.write()
    result = json.loads(path.read_text())
    assert result["status"] == "ok" and result["verdict"]["agree"] == 1 and result["verdict"]["verdict"] == "partly"
    assert result["provenance"]["subsets"]["1-2-3x10"]["train_indices"] == data.train.indices.tolist()
    assert result["provenance"]["threads"] == 1 and "torch" in result["provenance"]["environment"]
    assert result["figures"] == ["samples.png"] and (tmp_path / "out" / "samples.png").stat().st_size > 0
    assert (
        result["parameters"]["epochs"] == REGISTRY["metric"].quick["epochs"]
        and result["parameters_given"]["epochs"] == 500
    )
    assert runs.all_finite(result["results"])
    assert gen.info["sampler"] == "riemannian_hmc" and gen.images.shape == (4, 784)


def test_divergence_is_recorded_not_raised(tmp_path, monkeypatch):
    from rhvae.training import History, TrainingDiverged

    def diverge(experiment, model, requests, *args, **kwargs):  # one model of the group diverges
        return [TrainingDiverged("loss is nan at epoch 3", 3, History()) for _ in requests]

    monkeypatch.setattr(runs, "train_experiment_models", diverge)
    params = runs.validate_parameters("metric", defaults("metric", output_dir=str(tmp_path)))
    run = runs.Run("metric", params)
    assert run.train("rhvae", MODEL_CONFIGS["rhvae"], 0) is None
    result = json.loads(run.write().read_text())
    assert result["status"] == "diverged" and "DIVERGED" in result["problems"][0]
    assert "diverged" in run.conclude("claim", {"x": True})


def test_metric_at_reevaluates_frozen_metric(tiny_rhvae):
    model = tiny_rhvae.model
    m = model.metric(0.5)
    assert m.temperature == 0.5 and torch.equal(m.centroids, model.centroids) and torch.equal(m.M, model.M)
    z = model.centroids[:3]
    assert not torch.allclose(m.G_inv(z), model.metric().G_inv(z))


def test_all_finite():
    assert runs.all_finite({"a": [1.0, 2], "b": {"c": "text", "d": True}})
    assert not runs.all_finite({"a": [1.0, math.nan]})
    assert not runs.all_finite({"a": "inf"})


# ------------------------------------------------------------------------------------------------ widgets
def test_metric_explorer_redraws_on_temperature_change(tiny_rhvae):
    from rhvae.interfaces import widgets as rw

    model, data = tiny_rhvae.model, tiny_rhvae.data
    explorer = rw.MetricExplorer(model, model.centroids, data.train.y, grid_n=15)
    assert explorer.error is None and explorer.redraws == 1
    first = explorer.image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert "re-evaluated" in explorer.label.value
    explorer.temperature.value = 0.5  # the observer redraws
    assert explorer.redraws == 2 and explorer.image.value != first
    assert "T = 0.5" in explorer.message.value
    explorer.temperature.value = 500.0  # out of range: the red error, the value kept as typed (not clamped)
    assert explorer.redraws == 2 and explorer.temperature.value == 500.0
    assert "temperature must be" in explorer.message.value and "Error" in explorer.message.value


def test_sampler_explorer_button_resamples_and_shows_errors(tiny_rhvae, monkeypatch):
    from rhvae.interfaces import widgets as rw
    from rhvae.models import VAE

    torch.manual_seed(0)
    models = {"VAE": VAE(hidden_dim=16), "RHVAE": tiny_rhvae.model}
    explorer = rw.SamplerExplorer(models, mcmc_steps=2, n_samples=4, seed=0, score=lambda images: len(images))
    assert explorer.error is None and explorer.redraws == 1
    first = explorer.image.value
    assert explorer.last["RHVAE"].info["sampler"] == "riemannian_hmc"
    assert explorer.last["VAE"].info["sampler"] == "prior"
    # moving a slider does not re-sample; the button does
    explorer.mcmc_steps.value = 4
    explorer.seed.value = 3
    assert explorer.redraws == 1
    explorer.on_click(explorer.button)
    assert explorer.redraws == 2 and explorer.image.value != first
    assert explorer.last["RHVAE"].info["mcmc_steps"] == 4 and not explorer.button.disabled
    # an exception in the callback is shown, not swallowed
    explorer.seed.value = -1
    assert explorer.on_click(explorer.button) is False
    assert "seed must be an integer" in explorer.message.value and "Error" in explorer.message.value
    assert "ParameterError" in explorer.error and not explorer.button.disabled
    explorer.seed.value = 0
    assert explorer.on_click(explorer.button) and explorer.error is None
    for control, bad, fragment in (
        (explorer.mcmc_steps, 0, "'mcmc_steps' must be an integer >= 1"),  # 0 steps would show the codes as samples
        (explorer.n_samples, 10**7, "'n_samples' must be an integer >= 1 and <= "),
        (explorer.temperature, 0.0, "temperature must be"),
    ):
        good = control.value
        control.value = bad
        assert explorer.on_click(explorer.button) is False and control.value == bad
        assert fragment in html.unescape(explorer.message.value)
        control.value = good
    assert explorer.on_click(explorer.button) and explorer.error is None


def test_interpolation_explorer_redraws_and_refuses_an_index_outside_the_test_split(tiny_rhvae):
    from rhvae.interfaces import widgets as rw
    from rhvae.models import VAE

    torch.manual_seed(0)
    test = tiny_rhvae.data.test
    explorer = rw.InterpolationExplorer({"VAE": VAE(hidden_dim=16), "RHVAE": tiny_rhvae.model}, test, n_points=5)
    assert explorer.error is None and explorer.redraws == 1
    assert (explorer.first.value, explorer.second.value) == (0, len(test) - 1)
    first = explorer.image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    explorer.second.value = 1  # the observer redraws
    assert explorer.redraws == 2 and explorer.image.value != first
    explorer.first.value = len(test)  # out of range: refused in the red line, not clamped
    assert explorer.first.value == len(test)
    assert f"digit A must be a test-digit index in 0..{len(test) - 1}" in explorer.message.value
    assert "Error" in explorer.message.value and "ValueError" in explorer.error
    explorer.first.value = 0
    assert explorer.error is None and "paths between test digits 0 and 1" in explorer.message.value
    explorer.n_points.value = 2  # fewer frames than a path needs: refused, not clamped
    assert explorer.n_points.value == 2 and "'frames' must be an integer >= 3 and <= 200" in html.unescape(
        explorer.message.value
    )


def test_interpolation_explorer_refuses_a_starting_index_outside_the_test_split_instead_of_wrapping(tiny_rhvae):
    from rhvae.interfaces import widgets as rw

    test, models = tiny_rhvae.data.test, {"RHVAE": tiny_rhvae.model}
    n = len(test)
    for kwargs, name, value in (({"first": 999}, "first", 999), ({"second": -n - 1}, "second", -n - 1)):
        with pytest.raises(ValueError) as caught:
            rw.InterpolationExplorer(models, test, n_points=5, **kwargs)
        assert str(caught.value) == (
            f"{name} must be a test-digit index in -{n}..{n - 1} (negative counts from the end), got {value}"
        )
    explorer = rw.InterpolationExplorer(models, test, n_points=5, first=n - 1, second=-n)
    assert (explorer.first.value, explorer.second.value) == (n - 1, 0)


def test_metric_explorer_needs_rhvae():
    from rhvae.interfaces import widgets as rw
    from rhvae.models import VAE

    with pytest.raises(TypeError):
        rw.MetricExplorer(VAE(hidden_dim=8))
    assert isinstance(RHVAE, type)


def test_concurrent_runs_start_the_longest_notebook_first():
    from rhvae.experiments.registry import longest_first

    names = list(REGISTRY)
    for mode in ("default", "train"):
        order = longest_first(names, mode)
        assert sorted(order) == sorted(names)
        minutes = [REGISTRY[name].minutes[mode] for name in order]
        assert minutes == sorted(minutes, reverse=True)
    # with its classifiers and the scores of its added images shipped, augmentation still generates the images of its
    # 120 per-class models: the longest default notebook since reconstruction's evaluation is shipped too
    assert longest_first(names, "default")[0] == "augmentation"
    assert longest_first(["metric"], "train") == ["metric"]
    with pytest.raises(ValueError, match="mode must be 'default' or 'train', got 'quick'"):
        longest_first(names, "quick")
