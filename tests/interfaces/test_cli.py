"""``python -m rhvae train`` end to end on a real subset, in a subprocess, like a user would run it."""

import json
import os
import subprocess
import sys

import pytest
import torch

from rhvae.persistence import load_model


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rhvae", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_train_writes_model_history_and_provenance(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "--model",
        "hvae",
        "--experiment",
        "reconstruction",
        "--epochs",
        "3",
        "--n-lf",
        "2",
        "--seed",
        "1",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    model = load_model(out / "model.pt", expected_type="HVAE")
    assert model.n_lf == 2
    history = json.loads((out / "history.json").read_text())
    assert history["status"] == "finished" and len(history["epochs"]) == 3
    run = json.loads((out / "run.json").read_text())
    assert run["arguments"]["seed"] == 1 and len(run["subset"]["train_indices"]) == 120
    assert run["environment"]["torch_threads"] == 1 and run["train_seconds"] > 0


def test_original_train_py_spellings(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "-n",
        "rhvae",
        "-spec",
        "metric",
        "-ne",
        "2",
        "-n_lf",
        "2",
        "-eps_lf",
        "0.001",
        "-temp",
        "0.8",
        "-reg",
        "0.05",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    model = load_model(out / "model.pt", expected_type="RHVAE")
    assert (model.n_lf, model.eps_lf, model.temperature, model.regularization) == (2, 0.001, 0.8, 0.05)
    assert model.centroids.shape == (120, 2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs/-ne: expected an integer in [1, 100,000]"),
        (["--temperature", "-1"], "--temperature/-temp: expected a finite number in [0.01, 100.0]"),
        (["--beta-zero", "2"], "--beta-zero: expected a finite number in [0.0001, 1.0]"),
        (["--model", "gan"], "--model/-n: invalid choice"),
        (["--classes", "1,12"], "--classes: expected digits 0..9"),
        (["--n-per-class", "800"], "more than the 500 images of class"),
        (["--bogus", "1"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_values_exit_nonzero_with_one_line(tmp_path, args, message):
    result = run_cli("train", "--out", str(tmp_path / "x"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_divergence_exits_3_and_keeps_no_broken_model(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "--model",
        "rhvae",
        "--eps-lf",
        "0.1",
        "--step-bound",
        "none",
        "--epochs",
        "3",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 3
    assert "diverged at epoch 1" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "model.pt").exists()
    assert json.loads((out / "history.json").read_text())["status"] == "diverged at epoch 1"


def test_help_lists_every_hyper_parameter():
    text = run_cli("train", "--help").stdout
    for flag in (
        "--n-lf",
        "--eps-lf",
        "--beta-zero",
        "--temperature",
        "--regularization",
        "--objective",
        "--n-fixed-point",
        "--batch-size",
        "--lr",
        "--seed",
        "--source",
        "--classes",
        "--threads",
        "--out",
    ):
        assert flag in text


def test_eval_reports_the_papers_numbers_for_a_trained_model(tmp_path):
    run = tmp_path / "run"
    assert (
        run_cli("train", "-n", "rhvae", "-spec", "reconstruction", "-ne", "3", "--out", str(run), "--quiet").returncode
        == 0
    )
    out = tmp_path / "eval"
    result = run_cli(
        "eval",
        "--model-file",
        str(run / "model.pt"),
        "--ll-samples",
        "20",
        "--n-samples",
        "12",
        "--mcmc-steps",
        "3",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "eval.json").read_text())
    ll = report["log_likelihood"]
    assert report["n_test"] == 30 and ll["ll_samples"] == 20
    assert ll["log_likelihood"] >= report["elbo"]["mean"] and ll["log_likelihood_is"] >= report["elbo"]["mean"] - 5.0
    assert ll["is_bias"] == pytest.approx(ll["log_likelihood_is"] - ll["log_likelihood"])
    assert "(exact;" in result.stdout and "bias" in result.stdout
    assert report["diagnostics"]["model_type"] == "RHVAE" and "flow: displacement" in result.stdout
    assert report["generation"]["sampler"] == "riemannian_hmc" and 0 <= report["generation"]["acceptance_rate"] <= 1
    quality = report["generation"]["quality"]
    assert quality["n"] == 12 and report["subset"]["test_indices"]
    assert quality["fid_classifier"] > 0 and 0 <= quality["precision"] <= 1 and 0 <= quality["recall"] <= 1
    assert f"classifier FID {quality['fid_classifier']:.3g}" in result.stdout
    assert (out / "samples.png").stat().st_size > 1000 and (out / "reconstructions.png").stat().st_size > 1000


def test_eval_refuses_a_missing_model(tmp_path):
    result = run_cli("eval", "--model-file", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_provenance_records_the_code_version():
    from rhvae.provenance import environment

    record = environment()
    assert record["git_commit"] is None or len(record["git_commit"]) >= 7
    assert record["torch_threads"] >= 1 and record["torch"]
    # the CPU: the same code and seed can round differently on another processor (docs/reproducing.md)
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert sys.platform != "linux" or (isinstance(record["cpu"], str) and record["cpu"])


def test_report_refuses_a_folder_without_results(tmp_path):
    proc = run_cli("report", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no NOTEBOOK/results.json" in proc.stderr


def test_eval_of_a_file_without_provenance_takes_experiment_and_refuses_too_much_work_first(tmp_path):
    """A model saved with rhvae.save_model alone records no subset: eval needs --experiment, and says so; a sampler
    request beyond the leapfrog-step limit is refused before the log-likelihood's work, in one line."""
    import time

    import rhvae

    model = rhvae.RHVAE(hidden_dim=16, n_lf=2)
    never = rhvae.save_model(model, tmp_path / "never.pt")
    refused = run_cli("eval", "--model-file", str(never), "--experiment", "metric", "--out", str(tmp_path / "n"))
    assert refused.returncode == 2 and "without a frozen metric" in refused.stderr, refused.stderr
    model.freeze_metric(rhvae.experiment_data("metric").train.x)
    path = rhvae.save_model(model, tmp_path / "m.pt")  # untrained networks, a frozen metric, no provenance
    plain = run_cli("eval", "--model-file", str(path), "--out", str(tmp_path / "a"))
    assert plain.returncode == 2 and "eval --experiment NAME" in plain.stderr, plain.stderr
    start = time.perf_counter()
    heavy = run_cli(
        "eval", "--model-file", str(path), "--experiment", "metric", "--n-samples", "100000",
        "--mcmc-steps", "100000", "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert heavy.returncode == 2 and "leapfrog steps" in heavy.stderr and "Traceback" not in heavy.stderr
    assert time.perf_counter() - start < 30  # refused before the log-likelihood (a minute or more)
    other = run_cli("eval", "--model-file", str(path), "--experiment", "metric", "--ll-samples", "5",
                    "--n-samples", "4", "--mcmc-steps", "2", "--out", str(tmp_path / "c"))  # fmt: skip
    assert other.returncode == 0, other.stderr


def test_data_prints_what_each_pool_can_serve_and_names_the_download_when_a_source_is_missing():
    from rhvae.experiments.data import class_counts
    from rhvae.paths import ROOT

    proc = run_cli("data")
    assert proc.returncode == 0, proc.stderr
    pool = class_counts("bundled", "quality_train")
    assert "bundled (all): 5000 digits; per class 0: 500" in proc.stdout
    assert f"bundled (quality_train): {sum(pool.values())} digits" in proc.stdout
    assert f"5: {pool[5]}" in proc.stdout and min(pool.values()) == pool[5] < 400  # what -p sizes can ask for
    if not (ROOT / "data" / "MNIST").exists():
        proc = run_cli("data", "--source", "torchvision")
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert "--source torchvision --download" in proc.stderr


def test_kernels_says_in_one_line_which_leapfrog_nodes_the_models_use():
    from rhvae.models import native

    compiled = "rhvae: compiled d = 2 leapfrog kernels in use"
    pytorch = "rhvae: compiled d = 2 leapfrog kernels not used: the pure-PyTorch nodes"
    proc = run_cli("kernels")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [compiled if native.implementation() == "compiled" else pytorch]
    switched_off = {**os.environ, native.ENVIRONMENT_SWITCH: "0"}
    proc = subprocess.run([sys.executable, "-m", "rhvae", "kernels"], capture_output=True, text=True, env=switched_off)
    assert proc.returncode == 0 and proc.stdout.splitlines() == [pytorch], proc.stdout
