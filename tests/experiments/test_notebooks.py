"""The experiment notebooks: committed clean, and executed headless (papermill and nbconvert) in quick mode.

Every notebook runs twice on real MNIST digits with its quick settings (rhvae.experiments.registry), interactive=False,
its run folder and the model cache in tmp (so nothing depends on leftover state): once through papermill's Python API
(the kernel in an unrelated working directory), once through ``jupyter nbconvert --execute`` on a copy prepared by
papermill (``prepare_only``; the kernel in the copy's folder). The second run reuses the models the first one cached.
An error in any cell fails the test.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest
from conftest import INJECTED_FAULT

from rhvae.experiments import runs
from rhvae.experiments.registry import PAPER_SETTINGS, PARAMETERS, REGISTRY, longest_first
from rhvae.models import native
from rhvae.paths import ROOT

NOTEBOOKS = list(REGISTRY)
SEEDS = [0, 1]  # two seeds: the tables over seeds are exercised at two thirds of the cost of the default three
#: Per notebook, quick-test parameters beyond quick mode (augmentation: one small training size, 20 models a seed).
EXTRA = {"augmentation": {"sizes": [10]}}


def expected_figures(name: str, params: dict) -> set[str]:
    """The figures a run writes: one per seed where the notebook draws every seed, else the first seed's."""
    seeds = params["seeds"]
    return {
        "metric": {f"metric_by_temperature_seed{s}.png" for s in seeds} | {"frozen_metric_reevaluated.png"},
        "reconstruction": {"reconstructions.png", "samples.png"},
        "generation_5": {"samples.png", "rhvae_latent_samples.png"},
        "generation_7_classes": {f"latent_space_seed{s}.png" for s in seeds} | {"samples.png"},
        "augmentation": {f"images_per_class_n{n}.png" for n in params.get("sizes", [])},
        "interpolation": {f"paths_{s}_{r}.png" for s in REGISTRY[name].analyses for r in ("same_class", "cross_class")},
        "clustering": {f"clusters_{s}.png" for s in REGISTRY[name].analyses},
        "latent_dimension": {"over_dimensions.png"},
    }[name]


pytestmark = pytest.mark.slow


def source(name: str) -> Path:
    return ROOT / "notebooks" / f"{name}.ipynb"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("model_cache")


def quick_parameters(output_dir: Path, cache: Path, name: str = "") -> dict:
    return {
        "quick": True,
        "interactive": False,
        "output_dir": str(output_dir),
        "cache_dir": str(cache),
        "seeds": SEEDS,
        **EXTRA.get(name, {}),
    }


def check_results(folder: Path, name: str, interactive: bool = False) -> dict:
    results = json.loads((folder / "results.json").read_text())
    assert results["experiment"] == name and results["status"] == "ok", results.get("problems")
    assert results["quick"] is True and results["parameters"]["interactive"] is interactive
    assert set(results["figures"]) == expected_figures(name, results["parameters"])
    for figure in results["figures"]:
        assert (folder / figure).read_bytes()[:4] == b"\x89PNG"
    assert results["results"] and runs.all_finite(results["results"])
    assert results["verdict"]["total"] >= 1 and "Paper:" in results["verdict"]["text"]
    assert results["verdict"]["verdict"] in ("holds", "partly", "does not hold")
    assert {m["seed"] for m in results["models"].values()} == set(results["parameters"]["seeds"])
    provenance = results["provenance"]
    assert provenance["subsets"] and all(s["train_indices"] for s in provenance["subsets"].values())
    assert provenance["threads"] == 1 and provenance["environment"]["torch"]
    assert provenance["leapfrog_kernels"] == native.implementation()  # compiled kernels or PyTorch: they round apart
    assert all(m["status"] == "ok" for m in results["models"].values())
    for m in results["models"].values():  # every flow model records what its flow and metric do
        if m["model"] in ("hvae", "rhvae") and name != "latent_dimension":  # there: in its evaluation
            assert runs.all_finite(m["diagnostics"]) and m["diagnostics"]["n_images"] > 0
            assert (m["diagnostics"]["contrast"] is None) == (m["model"] == "hvae")
    return results


# ------------------------------------------------------------------------------------------ committed state
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean(name):
    nb = nbformat.read(source(name), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "committed notebooks carry no outputs"
        assert "papermill" not in cell.metadata and "execution" not in cell.metadata
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert f'validate_parameters("{name}", globals())' in nb.cells[tagged[0] + 1].source
    assert "papermill" not in nb.metadata


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_matches_the_checks(name):
    declared = pm.inspect_notebook(str(source(name)))
    assert set(declared) == set(PARAMETERS[name])
    assert all(p["help"] for p in declared.values()), "every parameter carries a comment"
    assert declared["interactive"]["default"] == "True" and declared["output_dir"]["default"] == "None"
    paper = PAPER_SETTINGS[name]
    if REGISTRY[name].analyses:  # the epochs of the analysed experiments' models
        assert declared["epochs"]["default"] == "None"
    else:
        assert int(declared["epochs"]["default"]) == paper["epochs"]
    for key in (
        "mcmc_steps",
        "n_samples",
        "hidden_dim",
        "n_generated",
        "classifier_steps",
        "n_pairs",
        "n_points",
        "n_init",
        "radius",
        "bdmc_images",
        "ais_steps",
        "ll_samples",
    ):
        if key in paper:
            assert int(declared[key]["default"]) == paper[key]
    for key in ("temperatures", "sizes", "latent_dims"):
        if key in paper:
            assert json.loads(declared[key]["default"]) == list(paper[key])


# --------------------------------------------------------------------------------------------- execution
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_executes_notebook(name, tmp_path, cache_dir, monkeypatch):
    workdir = tmp_path / "elsewhere"  # papermill runs the kernel here: paths must not depend on it
    workdir.mkdir()
    out = tmp_path / "run"
    pm.execute_notebook(
        str(source(name)),
        str(tmp_path / f"{name}.ipynb"),
        parameters=quick_parameters(out, cache_dir, name),
        kernel_name="python3",
        cwd=str(workdir),
        progress_bar=False,
    )
    check_results(out, name)
    assert not list(workdir.iterdir()), "nothing is written to the kernel's working directory"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_nbconvert_executes_notebook(name, tmp_path, cache_dir):
    cached_before = (cache_dir / name).is_dir()  # the papermill test of this notebook cached its models
    prepared = tmp_path / "prepared" / f"{name}.ipynb"
    prepared.parent.mkdir()
    out = tmp_path / "run"
    pm.execute_notebook(
        str(source(name)), str(prepared), parameters=quick_parameters(out, cache_dir, name), prepare_only=True
    )
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", str(prepared),
         "--output", f"{name}_executed.ipynb", "--ExecutePreprocessor.kernel_name=python3",
         "--ExecutePreprocessor.timeout=600"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = check_results(out, name)
    executed = nbformat.read(prepared.parent / f"{name}_executed.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    if cached_before:
        assert all(m["reused_from_cache"] for m in results["models"].values())


def test_bad_parameter_fails_the_notebook_naming_it(tmp_path, cache_dir):
    params = {**quick_parameters(tmp_path / "run", cache_dir), "epochs": "ten"}
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(
            str(source("metric")), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3",
            progress_bar=False,
        )  # fmt: skip
    assert "'epochs' must be an integer >= 1" in str(info.value)


# ----------------------------------------------------------------------------------------------- run_all.sh
def run_all(*args, cwd=None, env=None):
    return subprocess.run(
        ["bash", str(ROOT / "run_all.sh"), *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env={**os.environ, "CI": "true", **(env or {})},
        timeout=900,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quick", "--no-such-option"], "unknown option '--no-such-option'"),
        (["--quick", "-p", "epoch", "3"], "unknown parameter 'epoch'"),
        (["--quick", "-p", "epochs", "many"], "'epochs' must be an integer"),
        (["--quick", "-p", "interactive", "True"], "managed by run_all.sh"),
        (["--quick", "--only", "mnist"], "unknown notebook 'mnist'"),
        (["--quick", "-p", "epochs"], "needs a NAME and a VALUE"),
        (["--quick", "--jobs", "0"], "--jobs needs a whole number >= 1"),
        (["--quick", "-p", "seeds", "[0, 0]"], "'seeds' must be"),
        (["--quick", "--only", ""], "--only needs one or more notebook names"),
        (["--quick", "--only", ","], "--only needs one or more notebook names"),
        (["--quick", "--only", "metric,,metric"], "empty notebook name"),
        (["--quick", "--only", "metric,metric"], "named twice"),
        (["--quick", "-p", "mcmc_steps", "0"], "'mcmc_steps' must be an integer >= 1"),
        (["--quick", "-p", "epochs", "10000000"], "'epochs' must be an integer >= 1 and <= 100000"),
        (["--quick", "-p", "temperature", "1e-300"], "'temperature' must be a number >= 0.01"),
        (["--quick", "-p", "lr", "1e300"], "'lr' must be"),
        (["--quick", "-p", "", "3"], "needs a NAME and a VALUE"),
        (["--quick", "-p", "cache_dir", "/proc/rhvae_cannot_exist"], "cache_dir /proc/rhvae_cannot_exist cannot be"),
        # in range, but more than the data holds: refused before anything runs, not in the notebook
        (["--only", "augmentation", "-p", "sizes", "[50, 300]"], "more than the 217 images of class 5"),
    ],
)
def test_run_all_rejects_bad_usage(args, message, tmp_path):
    proc = run_all("--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing runs on bad usage"


ANALYSES = [name for name, entry in REGISTRY.items() if entry.analyses]


@pytest.mark.parametrize(
    "name, how",
    [(name, ["--jobs", "2"]) for name in REGISTRY]
    + [(name, how) for name in ANALYSES for how in (["--jobs", "1"], ["--dask", "local"])],
)
def test_run_all_orders_every_notebook_alone_under_every_jobs(name, how, tmp_path):
    """--only with one notebook, an analysis alone included (no experiment notebook to sort: it printed one empty
    line and the run stopped with 'cannot order the notebooks'): --plan prints the start order and runs nothing."""
    proc = run_all("--out", str(tmp_path / "out"), "--plan", "--only", name, *how)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [name], proc.stdout
    assert "cannot order" not in proc.stderr and not (tmp_path / "out").exists()


def test_analyses_start_among_the_others_only_where_the_run_trains_nothing(tmp_path):
    """The default run loads every model from data/models, so an analysis has nothing to wait for and starts in the
    longest-first order with the others; where the run may train (--quick, --train, any -p) the analyses start
    last, after the experiments whose models they load."""
    shipped = [name for name, entry in REGISTRY.items() if entry.shipped]
    default = run_all("--out", str(tmp_path / "a"), "--plan").stdout.splitlines()
    assert default == longest_first(shipped, "default"), default
    for how in (["--quick"], ["-p", "seeds", "[0]"]):
        order = run_all("--out", str(tmp_path / "b"), "--plan", "--only", ",".join(shipped), *how).stdout.splitlines()
        experiments = [n for n in shipped if not REGISTRY[n].analyses]
        assert order == longest_first(experiments, "default") + ANALYSES, (how, order)


@pytest.mark.skipif((ROOT / "data" / "MNIST").exists(), reason="full MNIST is on this disk")
def test_run_all_refuses_a_data_source_that_is_not_on_disk_before_anything_runs(tmp_path):
    proc = run_all(
        "--out", str(tmp_path / "out"), "--only", "reconstruction,clustering", "-p", "data_source", "torchvision"
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for name in ("reconstruction", "clustering"):  # an analysis is checked on the subsets it analyses
        assert f"{name}: data_source 'torchvision': full MNIST is not in" in proc.stderr
    assert "python -m rhvae data --source torchvision --download" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_default_run_all_skips_experiments_whose_models_are_not_shipped(tmp_path):
    """The default mode reproduces from shipped models: an unshipped experiment is named and skipped (the bad -p
    stops the run after the selection, before anything runs); --quick keeps every notebook."""
    unshipped = [name for name, entry in REGISTRY.items() if not entry.shipped]
    if not unshipped:
        pytest.skip("every experiment's models are shipped")
    proc = run_all("--out", str(tmp_path / "out"), "-p", "no_such_parameter", "1")
    assert proc.returncode == 2
    for name in unshipped:
        assert f"skipping '{name}': its models are not shipped" in proc.stdout
    assert unshipped[0] not in proc.stderr.split("not in the parameters cell of", 1)[1]
    quick = run_all("--out", str(tmp_path / "out"), "--quick", "-p", "no_such_parameter", "1")
    assert unshipped[0] in quick.stderr and "skipping" not in quick.stdout


def test_under_train_an_analysis_runs_last_and_judges_the_models_this_run_trained(tmp_path):
    out, cache = tmp_path / "all", tmp_path / "cache"
    proc = run_all(
        "--train", "--quick", "--jobs", "2", "--only", "clustering,reconstruction,generation_7_classes",
        "--out", str(out), "-p", "cache_dir", str(cache), "-p", "seeds", "[0]", "-p", "epochs", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    starts = {nb: proc.stdout.index(f"=== {nb} ") for nb in ("clustering", "reconstruction", "generation_7_classes")}
    assert starts["clustering"] > max(starts["reconstruction"], starts["generation_7_classes"])
    trained = set()
    for name in ("reconstruction", "generation_7_classes"):
        models = json.loads((out / name / "results.json").read_text())["models"]
        assert {m["source"] for m in models.values()} == {"trained"}  # --train: reuse_cache False
        trained |= {m["cache_file"] for m in models.values()}
    judged = json.loads((out / "clustering" / "results.json").read_text())["models"]
    assert len(judged) == 4 and {m["source"] for m in judged.values()} == {"cache"}  # VAE, HVAE, RHVAE; RHVAE
    assert {m["cache_file"] for m in judged.values()} == trained and {m["epochs"] for m in judged.values()} == {2}


def test_run_all_runs_one_notebook_end_to_end(tmp_path, cache_dir):
    out = tmp_path / "all"
    proc = run_all(
        "--quick", "--only", "generation_7_classes", "--out", str(out), "-p", "cache_dir", str(cache_dir),
        "-p", "seeds", "[1, 2]", "-p", "epochs", "4", "-p", "mcmc_steps", "3", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "generation_7_classes" in proc.stdout and "notebook" in proc.stdout and "duration" in proc.stdout
    results = check_results(out / "generation_7_classes", "generation_7_classes")
    assert results["parameters"]["seeds"] == [1, 2]  # a list given on the command line
    # explicit -p values win over --quick (epochs 5, mcmc_steps 5); the others take the quick values
    parameters = results["parameters"]
    assert (parameters["epochs"], parameters["mcmc_steps"], parameters["n_samples"]) == (4, 3, 16)
    assert all(m["epochs"] == 4 for m in results["models"].values())
    executed = nbformat.read(out / "executed" / "generation_7_classes.ipynb", as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    assert (out / "logs" / "generation_7_classes.log").stat().st_size > 0
    report = (out / "README.md").read_text()  # the results report of the run (python -m rhvae report)
    assert "| generation_7_classes (quick) |" in report and "**Verdict:" in report
    assert "(generation_7_classes/latent_space_seed2.png)" in report and "seeds [1, 2]" in report
    assert source("generation_7_classes").read_bytes().count(b'"outputs": []') > 0, "sources untouched"


def test_run_all_jobs_runs_notebooks_concurrently_and_reports_every_failure(tmp_path, failing_kernels):
    # each notebook fails inside when its run starts (a fault the pre-check cannot see)
    out = tmp_path / "all"
    proc = run_all(
        "--quick", "--jobs", "2", "--only", "generation_5,generation_7_classes", "--out", str(out),
        "-p", "seeds", "0", env=failing_kernels,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "notebook 'generation_5' FAILED" in proc.stderr and "notebook 'generation_7_classes' FAILED" in proc.stderr
    assert proc.stdout.count("FAILED") == 2  # both rows of the summary: one failure does not stop the other
    assert INJECTED_FAULT in (out / "logs" / "generation_5.log").read_text()
    # started longest first (registry ``minutes``), summarised in report order
    started = proc.stdout.index("=== generation_7_classes"), proc.stdout.index("=== generation_5")
    assert started[0] < started[1]
    summary = proc.stdout[proc.stdout.index("notebook  ") :]
    assert summary.index("generation_5") < summary.index("generation_7_classes")


def test_interactive_mode_builds_widgets_without_errors(tmp_path, cache_dir):
    """interactive=True (the default for a person): the widget cell runs and displays controls; the figures of
    the batch cells are still drawn by direct calls."""
    executed = tmp_path / "interactive.ipynb"
    params = {**quick_parameters(tmp_path / "run", cache_dir), "interactive": True}
    pm.execute_notebook(
        str(source("generation_7_classes")), str(executed), parameters=params, kernel_name="python3",
        progress_bar=False,
    )  # fmt: skip
    check_results(tmp_path / "run", "generation_7_classes", interactive=True)
    nb = nbformat.read(executed, as_version=4)
    widget_outputs = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widget_outputs, "the controls are displayed"


def test_the_plan_says_which_parameters_do_not_reach_an_analysis(capsys):
    from rhvae.experiments.notebook_command import plan

    planned = plan(["reconstruction", "interpolation"], [("n_lf", "5"), ("seeds", "[0]")])
    assert planned["reconstruction"][:3] == ["-p", "n_lf", "5"] and "n_lf" not in planned["interpolation"]
    note = capsys.readouterr().err
    assert "note: interpolation judges the models of reconstruction, generation_7_classes" in note
    assert "-p n_lf does not reach it" in note and "seeds" not in note
    plan(["reconstruction", "interpolation"], [("seeds", "[0]")])
    assert capsys.readouterr().err == ""
