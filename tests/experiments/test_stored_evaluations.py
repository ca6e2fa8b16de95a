"""Stored evaluations (rhvae.experiments.stored_evaluations): found by their key only, a shipped one only through its
checksum, and an evaluation read back equal to the one computed (Run.stored_evaluation on real digits)."""

import json
from pathlib import Path

import nbformat
import pytest
import torch

import rhvae
from rhvae import persistence
from rhvae.experiments import runs, tables
from rhvae.experiments import stored_evaluations as se
from rhvae.paths import ROOT
from rhvae.persistence import ModelFileError


def test_a_stored_evaluation_is_found_by_its_key_and_a_foreign_one_is_not(tmp_path):
    models = {"a": rhvae.VAE(latent_dim=3, hidden_dim=8)}
    key = se.evaluation_key(models, {"n_samples": 10})
    assert se.evaluation_key(models, {"n_samples": 11}) != key  # the settings are part of the key
    with torch.no_grad():
        models["a"].dec_out.bias.add_(1.0)
    assert se.evaluation_key(models, {"n_samples": 10}) != key  # and so are the weights
    assert se.load_evaluation("x", key, tmp_path) == (None, None, None)
    saved = se.save_evaluation("x", key, {"x": 1}, tmp_path)
    assert se.load_evaluation("x", key, tmp_path) == ({"x": 1}, "cache", saved)
    assert se.load_evaluation("y", key, tmp_path) == (None, None, None)  # another experiment's folder
    path = se.evaluation_path(tmp_path, "x", key)
    path.write_text(json.dumps({"key": "another", "evaluation": {"x": 2}}))
    assert se.load_evaluation("x", key, tmp_path) == (None, None, None)  # a file that records another key is not used
    path.write_text("{not json")
    assert se.load_evaluation("x", key, tmp_path) == (None, None, None)  # nor an unreadable one


def test_a_shipped_evaluation_that_fails_its_checksum_is_refused(tmp_path, monkeypatch):
    shipped = tmp_path / "models"
    (shipped / "latent_dimension").mkdir(parents=True)
    monkeypatch.setattr(se, "SHIPPED_DIR", shipped)
    monkeypatch.setattr(persistence, "SHIPPED_DIR", shipped)
    key = "0123456789abcdef"
    path = se.evaluation_path(shipped, "latent_dimension", key)
    path.write_text(json.dumps({"key": key, "evaluation": {"x": 1}}))
    with pytest.raises(ModelFileError, match="not listed"):
        se.load_evaluation("latent_dimension", key, tmp_path / "cache")
    (shipped / "SHA256SUMS").write_text(f"{persistence.sha256(path)}  latent_dimension/{path.name}\n")
    assert se.load_evaluation("latent_dimension", key, tmp_path / "cache") == ({"x": 1}, "shipped", path)
    path.write_text(json.dumps({"key": key, "evaluation": {"x": 2}}))  # changed after shipping
    with pytest.raises(ModelFileError, match="checksum"):
        se.load_evaluation("latent_dimension", key, tmp_path / "cache")


def _run(tmp_path, experiment="reconstruction"):
    params = runs.validate_parameters(experiment, parameter_defaults(experiment, tmp_path))
    return runs.Run(experiment, params)


def parameter_defaults(experiment, tmp_path):
    """A notebook's namespace after its parameters cell, batch mode, with this test's folders."""
    cell = nbformat.read(ROOT / "notebooks" / f"{experiment}.ipynb", as_version=4).cells[1].source
    namespace: dict = {}
    exec(cell, namespace)
    del namespace["__builtins__"], namespace["Optional"]
    return {**namespace, "interactive": False, "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "c")}


def test_a_run_computes_an_evaluation_once_then_reads_the_same_numbers_back(tmp_path):
    """On real digits: the first run computes every seed's evaluation_table and caches it (its source and file are
    recorded for tools/publish_run.py), a second run reads exactly those numbers (seeds as ints again); other test
    images, another setting or other weights are another evaluation."""
    data = rhvae.experiment_data("reconstruction", n_per_class=4)
    models = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        models[seed] = {"VAE": rhvae.VAE(hidden_dim=16), "HVAE": rhvae.HVAE(hidden_dim=16, n_lf=2)}
    calls = []

    def evaluate(x, samples):
        def compute():
            calls.append(1)
            return {s: tables.evaluation_table(m, x, samples, seed=s) for s, m in models.items()}

        run = _run(tmp_path)
        numbers = run.stored_evaluation(
            "evaluation_table", compute, models=models, inputs={"x": x}, settings={"ll_samples": samples}
        )
        return numbers, run.results["evaluation_sources"]["evaluation_table"], run.results["evaluation_files"]

    first, source, files = evaluate(data.test.x, 20)
    assert source == "computed" and len(calls) == 1 and len(files) == 1
    assert Path(files[0]).parent == tmp_path / "c" / "reconstruction"
    assert sorted(first) == [0, 1] and sorted(first[0]) == ["HVAE", "VAE"]
    direct = tables.evaluation_table(models[1], data.test.x, 20, seed=1)
    for key in ("bce", "log_likelihood", "log_likelihood_is"):
        assert first[1]["HVAE"][key] == direct["HVAE"][key]
    again, source, files_again = evaluate(data.test.x, 20)
    assert (again, source, files_again) == (first, "cache", files) and len(calls) == 1
    assert evaluate(data.test.x[:-1], 20)[1] == "computed"  # other images
    assert evaluate(data.test.x, 21)[1] == "computed"  # another setting
    with torch.no_grad():
        models[0]["VAE"].dec_out.bias.add_(1.0)
    assert evaluate(data.test.x, 20)[1] == "computed"  # other weights
    assert len(calls) == 4
