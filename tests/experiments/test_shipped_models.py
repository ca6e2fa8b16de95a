"""The shipped paper-mode models (data/models): intact, safe to load, and enough for the default ./run_all.sh.

A default run (paper settings, seeds 0, 1, 2) must find every model it asks for among the shipped files, so that
it reproduces the report's figures and tables without training. ``tools/publish_run.py`` writes the files and
their checksums; these tests fail if a file is changed, added or removed by hand, or if a change of defaults
(epochs, seeds, hyper-parameters) makes the shipped models stale.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from rhvae.experiments import runs
from rhvae.experiments.augmentation import class_subsets, make_classifier
from rhvae.experiments.classifier_cache import FOLDER as CLASSIFIERS
from rhvae.experiments.classifier_cache import cached_classifier, classifier_name
from rhvae.experiments.data import experiment_data
from rhvae.experiments.model_cache import model_request
from rhvae.experiments.registry import PAPER_SETTINGS, REGISTRY
from rhvae.models import RHVAE
from rhvae.paths import ROOT, SHIPPED_DIR
from rhvae.persistence import cache_key, load_model, read_model_file

SUMS = SHIPPED_DIR / "SHA256SUMS"


def listed() -> dict[str, str]:
    entries = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split("  ", 1)
        entries[name] = digest
    return entries


def test_checksums_match_and_no_file_is_unlisted():
    entries = listed()
    assert entries, "no shipped model listed"
    on_disk = {p.relative_to(SHIPPED_DIR).as_posix() for p in SHIPPED_DIR.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert on_disk == set(entries)
    for name, digest in entries.items():
        assert hashlib.sha256((SHIPPED_DIR / name).read_bytes()).hexdigest() == digest, name


def listed_models() -> list[str]:
    return sorted(n for n in listed() if not n.startswith(CLASSIFIERS + "/") and n.endswith(".pt"))


def listed_classifiers() -> list[str]:
    return sorted(n for n in listed() if n.startswith(CLASSIFIERS + "/"))


@pytest.mark.parametrize("name", listed_models() if SUMS.is_file() else [])
def test_each_shipped_model_loads_safely_and_matches_its_name(name):
    path = SHIPPED_DIR / name
    provenance = json.loads(read_model_file(path)["provenance"])  # torch.load(weights_only=True)
    spec = provenance["spec"]
    assert path.name == f"{spec['model']}_{cache_key(spec)}.pt" and path.parent.name == spec["subset"]["experiment"]
    model, history, _ = load_model(path, expected_type=spec["model"], with_history=True)
    assert len(history.epochs) == spec["training"]["epochs"]
    assert model.config() == spec["config"]
    if isinstance(model, RHVAE):
        assert model.has_frozen_metric and len(model.centroids) == len(provenance["subset"]["train_indices"])


@pytest.mark.parametrize("name", listed_classifiers() if SUMS.is_file() else [])
def test_each_shipped_classifier_loads_safely_and_matches_its_name(name):
    payload = torch.load(SHIPPED_DIR / name, map_location="cpu", weights_only=True)
    spec = json.loads(payload["spec"])
    assert classifier_name(spec) == name
    found = cached_classifier(spec, lambda: make_classifier(spec["kind"]), SHIPPED_DIR / "no-cache")
    assert found is not None and found[2] == SHIPPED_DIR / name
    assert all(t.dtype == torch.float32 for t in found[0].state_dict().values())


def test_the_committed_augmentation_report_used_only_shipped_classifiers():
    results = json.loads((ROOT / "results" / "augmentation" / "results.json").read_text())
    records = [
        r
        for rows in results["results"]["classifier_training"].values()
        for arms in rows.values()
        for r in arms.values()
    ]
    assert len(records) == 72  # 3 seeds × 2 sizes × 2 classifiers × 6 arms
    assert {r["source"] for r in records} == {"shipped"}
    assert {f"{CLASSIFIERS}/{Path(r['file']).name}" for r in records} == set(listed_classifiers())


def parameters_cell(notebook: str) -> dict:
    """The default parameters of a notebook: its parameters cell executed."""
    cells = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)
    return namespace


def default_requests():
    """Every (notebook, seed, model, file name) that the default ./run_all.sh asks for."""
    for notebook, settings in PAPER_SETTINGS.items():
        if REGISTRY[notebook].analyses:  # an analysis asks for the models of the experiments it analyses
            continue
        params = runs.validate_parameters(notebook, {**parameters_cell(notebook), "interactive": False})
        configs = runs.model_configs(params, notebook)
        if notebook == "augmentation":  # one model of each kind per class and training size
            subsets = [one for _, _, one in class_subsets(params["sizes"], params["data_seed"], params["data_source"])]
        else:
            subsets = [experiment_data(notebook, seed=params["data_seed"], source=params["data_source"])]
        wanted = [(kind, configs[kind]) for kind in settings["models"]]
        if "temperatures" in settings:
            wanted = [("rhvae", {**configs["rhvae"], "temperature": t}) for t in params["temperatures"]]
        for seed in params["seeds"]:
            for data in subsets:
                for kind, config in wanted:
                    _, _, name = model_request(
                        data,
                        kind,
                        epochs=params["epochs"],
                        seed=seed,
                        lr=params["lr"],
                        batch_size=None,
                        threads=params["threads"],
                        **config,
                    )
                    yield notebook, seed, kind, name


def test_the_default_run_finds_every_model_it_needs_among_the_shipped_ones():
    requests = list(default_requests())
    # seeds × (3 temperatures, 3 models, 3 models, 1 model) + seeds × sizes × classes × (VAE, RHVAE)
    assert len(requests) == 3 * (3 + 3 + 3 + 1) + 3 * 2 * 10 * 2
    shipped = {name for name, entry in REGISTRY.items() if entry.shipped}
    missing = [r for r in requests if r[0] in shipped and not (SHIPPED_DIR / r[3]).is_file()]
    assert not missing, f"the default run would train: {missing}"
    unshipped = [r for r in requests if r[0] not in shipped and (SHIPPED_DIR / r[3]).is_file()]
    assert not unshipped, f"models are shipped for an experiment the registry says is not: {unshipped[:3]}"


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if e.shipped])
def test_the_committed_report_was_computed_from_the_shipped_files(name):
    """results/NAME must be what a clean clone's default run reproduces: every model it used came from
    data/models (a run from the cache's full-precision copies of half-precision shipped models does not)."""
    results = json.loads((ROOT / "results" / name / "results.json").read_text())
    assert results["models"], name
    owners = REGISTRY[name].analyses or (name,)  # an analysis judges the shipped models of the experiments it analyses
    for label, info in results["models"].items():
        assert info["source"] == "shipped", f"{name}/{label} came from {info['source']}"
        cache_file = Path(info["cache_file"])
        assert cache_file.parent.name in owners, label
        assert (SHIPPED_DIR / cache_file.parent.name / cache_file.name).is_file(), label


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if e.analyses and n != "latent_dimension"])
def test_an_analysis_judges_exactly_the_shipped_models_of_the_experiments_it_analyses(name, tmp_path):
    """interpolation and clustering train nothing in the default mode: they load the shipped models of the
    analysed experiments, with those experiments' model kinds and paper epochs."""
    params = runs.validate_parameters(
        name,
        {
            **parameters_cell(name),
            "interactive": False,
            "seeds": [0],
            "cache_dir": str(tmp_path / "cache"),
            "output_dir": str(tmp_path / "out"),
        },
    )
    run = runs.Run(name, params)
    models = run.analysed_models()
    assert list(models) == list(REGISTRY[name].analyses)
    for source, by_seed in models.items():
        assert list(by_seed) == [0]
        assert list(by_seed[0]) == [kind.upper() for kind in PAPER_SETTINGS[source]["models"]]
    assert len(run.models) == sum(len(PAPER_SETTINGS[s]["models"]) for s in REGISTRY[name].analyses)
    for label, info in run.models.items():
        source = label.split("_")[0] if label.startswith("reconstruction") else "generation_7_classes"
        assert info["source"] == "shipped" and Path(info["cache_file"]).parent.name == source, label
        assert info["epochs"] == PAPER_SETTINGS[source]["epochs"], label
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))


def test_the_latent_dimension_experiment_finds_every_model_among_the_shipped_ones(tmp_path):
    """Its default run trains nothing: at every latent dimension, for every seed, VAE, HVAE and RHVAE on the
    reconstruction and generation_5 subsets are shipped files (at d = 2 those experiments' own), and so is the
    evaluation of exactly those files with the notebook's default settings."""
    from rhvae.experiments import latent_dimension as ld

    params = runs.validate_parameters(
        "latent_dimension",
        {**parameters_cell("latent_dimension"), "interactive": False, "cache_dir": str(tmp_path / "cache")},
    )
    run = runs.Run("latent_dimension", {**params, "output_dir": str(tmp_path / "out")}, diagnose_models=False)
    models = ld.dimension_models(run, ld.check_dims(params["latent_dims"]))
    assert sorted(models) == sorted(ld.SUBSETS)
    for by_dim in models.values():
        assert sorted(by_dim) == sorted(params["latent_dims"])
        for d, by_seed in by_dim.items():
            assert sorted(by_seed) == sorted(params["seeds"])
            assert all(sorted(m) == ["HVAE", "RHVAE", "VAE"] for m in by_seed.values())
            assert all(m.latent_dim == d for by_name in by_seed.values() for m in by_name.values())
    assert len(run.models) == len(ld.SUBSETS) * len(params["latent_dims"]) * len(params["seeds"]) * 3
    assert {info["source"] for info in run.models.values()} == {"shipped"}
    _, sources, _ = ld.evaluate_all(run, models, ld.evaluation_settings(params))
    assert set(sources.values()) == {"shipped"}
