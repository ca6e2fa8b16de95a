"""Stored evaluations (rhvae.experiments.stored_evaluations): found by their key only, a shipped one only through its
checksum, and an evaluation read back equal to the one computed (tables.evaluation_tables on real digits)."""

import json

import pytest
import torch

import rhvae
from rhvae import persistence
from rhvae.experiments import stored_evaluations as se
from rhvae.experiments import tables
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


def test_evaluation_tables_computes_once_then_reads_the_same_numbers_back(tmp_path):
    """On real digits: the first call computes every seed's evaluation_table and caches it, the second reads exactly
    those numbers (seeds as ints again); other test images or another S are another evaluation."""
    data = rhvae.experiment_data("reconstruction", n_per_class=4)
    models = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        models[seed] = {"VAE": rhvae.VAE(hidden_dim=16), "HVAE": rhvae.HVAE(hidden_dim=16, n_lf=2)}
    x = data.test.x
    computed, source, path = tables.evaluation_tables(models, x, 20, experiment="reconstruction", cache_dir=tmp_path)
    assert source == "computed" and path.is_file() and path.parent == tmp_path / "reconstruction"
    assert sorted(computed) == [0, 1] and sorted(computed[0]) == ["HVAE", "VAE"]
    direct = tables.evaluation_table(models[1], x, 20, seed=1)
    for key in ("bce", "log_likelihood", "log_likelihood_is"):
        assert computed[1]["HVAE"][key] == direct["HVAE"][key]
    again, source, same = tables.evaluation_tables(models, x, 20, experiment="reconstruction", cache_dir=tmp_path)
    assert (again, source, same) == (computed, "cache", path)
    _, source, other = tables.evaluation_tables(models, x[:-1], 20, experiment="reconstruction", cache_dir=tmp_path)
    assert source == "computed" and other != path
    _, source, _ = tables.evaluation_tables(models, x, 21, experiment="reconstruction", cache_dir=tmp_path)
    assert source == "computed"
    with pytest.raises(ValueError, match="ll_samples"):
        tables.evaluation_tables(models, x, 0, experiment="reconstruction", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="x_test"):
        tables.evaluation_tables(models, x * 255, 20, experiment="reconstruction", cache_dir=tmp_path)
