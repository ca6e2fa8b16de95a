"""Hostile or careless input: every case is refused with one clear line naming the parameter (or the file and
field), never silently accepted, and no work is lost. Real models, real digits, real files."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import rhvae
from rhvae import files, persistence
from rhvae.experiments import model_cache as experiments
from rhvae.experiments import registry, runs
from rhvae.experiments.model_cache import model_request, train_experiment_model
from rhvae.interfaces import cli
from rhvae.paths import ROOT, SHIPPED_DIR
from rhvae.persistence import ModelFileError, load_model, save_model
from rhvae.shipped import shipped_path
from rhvae.training import train
from rhvae.validation import RANGES


@pytest.fixture(scope="module")
def tiny():
    """A real RHVAE trained 2 epochs on 12 real digits (hidden 16) and its data."""
    data = rhvae.experiment_data("metric", n_per_class=5)
    torch.manual_seed(0)
    model = rhvae.RHVAE(hidden_dim=16, n_lf=2)
    history = train(model, data.train.x, data.test.x, epochs=2, progress=False)
    return model, history, data


def run_main(capsys, *argv):
    """``python -m rhvae ARGV`` in process: (exit status, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the CLI
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "1e300"], "argument --lr: expected a finite number in (0.0, 1.0], got 1e300"),
        (["--eps-lf", "1e300"], "argument --eps-lf/-eps_lf: expected a finite number in (0.0, 10.0]"),
        (["--temperature", "1e300"], "argument --temperature/-temp: expected a finite number in [0.01, 100.0]"),
        (["--temperature", "1e-300"], "argument --temperature/-temp: expected a finite number in [0.01, 100.0]"),
        (["--beta-zero", "1e-300"], "argument --beta-zero: expected a finite number in [0.0001, 1.0]"),
        (["--regularization", "1e-300"], "argument --regularization/-reg: expected a finite number"),
        (["--latent-dim", "100000"], "argument --latent-dim: expected an integer in [1, 64]"),
        (["--hidden-dim", "10000000"], "argument --hidden-dim: expected an integer in [1, 10,000]"),
        (["--n-lf", "10000000"], "argument --n-lf/-n_lf: expected an integer in [1, 1,000]"),
        (["--n-fixed-point", "1000000"], "argument --n-fixed-point: expected an integer in [1, 100]"),
        (["--epochs", "10000000000"], "argument --epochs/-ne: expected an integer in [1, 100,000]"),
        (["--seed", str(2**64)], "argument --seed: expected an integer in [0, 4,294,967,295]"),
        (["--threads", "100000"], "argument --threads: expected an integer in [1, 256]"),
        (["--batch-size", "1e3"], "argument --batch-size: expected an integer"),
        (["--max-latent-norm", "inf"], "argument --max-latent-norm: expected a finite number"),
        (["--out", ""], "argument --out: expected a folder path, got an empty string"),
    ],
)
def test_train_refuses_values_that_overflow_or_cannot_be_allocated(capsys, tmp_path, argv, message):
    code, err = run_main(capsys, "train", "--out", str(tmp_path / "run"), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mcmc-steps", "1000000000"], "argument --mcmc-steps: expected an integer in [1, 100,000]"),
        (["--mcmc-steps", "0"], "argument --mcmc-steps: expected an integer in [1, 100,000]"),
        (["--ll-samples", str(10**12)], "argument --ll-samples: expected an integer in [1, 100,000]"),
        (["--n-samples", "10000000"], "argument --n-samples: expected an integer in [1, 100,000]"),
    ],
)
def test_eval_refuses_absurd_counts(capsys, tmp_path, tiny, argv, message):
    model_file = save_model(tiny[0], tmp_path / "m.pt")
    code, err = run_main(capsys, "eval", "-m", str(model_file), "--out", str(tmp_path / "ev"), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_out_at_a_file_or_an_unwritable_place_is_refused_before_any_work(capsys, tmp_path, tiny):
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    model_file = save_model(tiny[0], tmp_path / "m.pt")
    for command in (["train", "--epochs", "100000"], ["eval", "-m", str(model_file), "--ll-samples", "100000"]):
        start = time.perf_counter()
        code, err = run_main(capsys, *command, "--out", str(existing))
        assert code == 2 and "is an existing file, not a folder" in err, err
        code, err = run_main(capsys, *command, "--out", str(existing / "sub"))
        assert code == 2 and "cannot be written" in err, err
        code, err = run_main(capsys, *command, "--out", "/proc/rhvae_no_such/run")
        assert code == 2 and "cannot be written" in err, err
        assert time.perf_counter() - start < 10, "refused before training or evaluating"
    assert existing.read_text() == "keep me"


def test_a_diverged_run_into_an_earlier_run_folder_leaves_no_stale_model(capsys, tmp_path):
    out = tmp_path / "run"
    common = ["train", "--model", "vae", "--experiment", "metric", "--n-per-class", "5", "--hidden-dim", "16"]
    code, err = run_main(capsys, *common, "--epochs", "1", "--out", str(out), "--quiet")
    assert code == 0 and (out / "model.pt").is_file(), err
    # every latent code has a norm above 1e-9: training diverges in the first epoch
    code, err = run_main(capsys, *common, "--epochs", "2", "--max-latent-norm", "1e-9", "--out", str(out), "--quiet")
    assert code == 3 and "diverged at epoch 1" in err, err
    assert not (out / "model.pt").exists(), "the earlier run's model must not sit beside this run's failure"
    assert json.loads((out / "run.json").read_text())["status"] == "diverged at epoch 1"


def test_report_latest_never_overwrites_a_foreign_file(capsys, tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes")
    results = ROOT / "results"
    code, err = run_main(capsys, "report", str(results), "--latest", str(precious))
    assert code == 2 and "is not a results report: refusing to overwrite it" in err, err
    assert precious.read_text() == "my notes"


def test_threads_above_the_core_count_warn(capsys):
    before = torch.get_num_threads()
    try:
        rhvae.provenance.set_threads((os.cpu_count() or 1) + 3)
        assert "more than the" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_during_training_is_one_line_and_writes_nothing(tmp_path, signum):
    """Ctrl-C, SIGTERM and SIGHUP stop a training the same way: one line, exit 128 + the signal's number, and no
    file or folder left (the lock of --out included)."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rhvae", "train", "--model", "vae", "--epochs", "100000", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # a suite started in the background (nohup, `cmd &`, many CI runners) inherits SIGINT as ignored, and
        # Python keeps an ignored SIGINT ignored: the child gets the default disposition, as from a terminal
        preexec_fn=_default_sigint,
    )
    try:
        # the text bar's first line is printed when the first epoch starts: signal a little after it
        started = threading.Thread(target=proc.stdout.read, args=(1,), daemon=True)
        started.start()
        started.join(timeout=120)
        time.sleep(2)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, stderr
    lines = stderr.strip().splitlines()
    stopped = "interrupted" if signum == signal.SIGINT else f"terminated by {signum.name}"
    assert len(lines) == 1 and lines[0].startswith(f"python -m rhvae train: {stopped} at epoch "), stderr
    assert lines[0].endswith(", nothing written") and "Traceback" not in stderr
    assert not out.exists()


# ------------------------------------------------------------------------------------------------- data
def test_forward_and_train_refuse_pixels_outside_0_1_naming_the_data(tiny):
    model, _, data = tiny
    uint8 = (data.train.x * 255).round().to(torch.uint8)
    with pytest.raises(ValueError, match=r"x must hold pixel values in \[0, 1\].*divide 0-255 images by 255"):
        model(uint8)
    nan = data.train.x.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x must hold pixel values in \[0, 1\].*1 non-finite pixel"):
        model(nan)
    with pytest.raises(ValueError, match="x_train must hold pixel values"):
        train(rhvae.VAE(hidden_dim=8), uint8, epochs=1, progress=False)
    with pytest.raises(ValueError, match="x_test must hold pixel values"):
        train(rhvae.VAE(hidden_dim=8), data.train.x, nan, epochs=1, progress=False)
    with pytest.raises(ValueError, match="z must hold finite latent codes"):
        model.decode(torch.tensor([[float("inf"), 0.0]]))


def test_freeze_metric_on_zero_images_is_refused_and_keeps_the_metric(tiny):
    model, _, data = tiny
    centroids = model.centroids.clone()
    with pytest.raises(ValueError, match="at least one training image"):
        model.freeze_metric(data.train.x[:0])
    assert torch.equal(model.centroids, centroids)


# ----------------------------------------------------------------------------------------------- files
def test_model_files_are_written_with_the_users_umask(tmp_path, tiny):
    old = os.umask(0o022)
    try:
        path = save_model(tiny[0], tmp_path / "m.pt")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o027)
        path = files.atomic_write_text(tmp_path / "t.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    loaded = rhvae.load_model(tmp_path / "m.pt")
    assert torch.equal(loaded.centroids, tiny[0].centroids)


def test_nan_weights_are_refused_at_load(tmp_path, tiny):
    path = save_model(tiny[0], tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["dec_out.bias"][3] = float("nan")
    payload["state_sha256"] = persistence.state_digest(payload["state_dict"])  # a file saved with NaN weights
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(ModelFileError, match=r"non-finite weights \(NaN or inf\) in dec_out.bias"):
        load_model(tmp_path / "nan.pt")


@pytest.mark.parametrize("field", ["config", "history", "provenance"])
def test_a_field_that_is_not_json_names_the_file_and_the_field(tmp_path, tiny, field):
    model, history, _ = tiny
    path = save_model(model, tmp_path / "m.pt", history, {"a": 1})
    payload = torch.load(path, weights_only=True)
    payload[field] = "{not json"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match=rf"bad.pt: field '{field}' is not valid JSON"):
        load_model(tmp_path / "bad.pt", with_history=True)


def test_random_bytes_are_not_a_model_file_and_no_unsafe_advice_is_given(tmp_path, capsys):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="is not an rhvae model file") as info:
        load_model(tmp_path / "random.pt")
    assert "weights_only" not in str(info.value)
    code, err = run_main(capsys, "eval", "-m", str(tmp_path / "random.pt"), "--out", str(tmp_path / "ev"))
    assert code == 2 and "is not an rhvae model file" in err and "weights_only" not in err
    assert not (tmp_path / "ev").exists()


def test_a_tampered_shipped_model_is_refused_not_silently_reused(tmp_path, monkeypatch):
    """A shipped model whose bytes no longer match data/models/SHA256SUMS raises instead of being reused (or
    silently retrained); the intact copy is reused."""
    name = shipped_path("reconstruction", "vae", seed=0).relative_to(SHIPPED_DIR).as_posix()  # d = 2
    shipped = tmp_path / "models"
    (shipped / "reconstruction").mkdir(parents=True)
    shutil.copy(SHIPPED_DIR / name, shipped / name)
    (shipped / "SHA256SUMS").write_text(f"{persistence.shipped_checksums()[name]}  {name}\n")
    monkeypatch.setattr(persistence, "SHIPPED_DIR", shipped)
    monkeypatch.setattr(experiments, "SHIPPED_DIR", shipped)
    spec = json.loads(persistence.read_model_file(shipped / name)["provenance"])["spec"]
    subset, training = spec["subset"], spec["training"]
    request = dict(
        epochs=training["epochs"], seed=training["seed"], lr=training["lr"], batch_size=training["batch_size"],
        threads=training["threads"], classes=subset["classes"], n_per_class=subset["n_per_class"],
        data_seed=subset["seed"], source=subset["source"], cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip
    data = rhvae.experiment_data("reconstruction", subset["classes"], subset["n_per_class"], seed=subset["seed"])
    _, _, wanted = model_request(
        data, "vae", epochs=training["epochs"], seed=training["seed"], lr=training["lr"], batch_size=None, threads=1
    )
    assert wanted == name  # the request below asks for exactly this file (so nothing would train for 500 epochs)
    assert train_experiment_model("reconstruction", "vae", **request).reused
    with open(shipped / name, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelFileError, match="does not match its checksum"):
        train_experiment_model("reconstruction", "vae", **request)
    with pytest.raises(ModelFileError, match="does not match its checksum"):
        load_model(shipped / name)


# ------------------------------------------------------------------------------------------ NumPy numbers
def test_numpy_numbers_and_arrays_are_accepted_everywhere(tmp_path):
    run = train_experiment_model(
        "metric", "rhvae", epochs=np.int64(1), seed=np.int32(0), lr=np.float32(1e-3), classes=np.array([1, 2]),
        n_per_class=np.int64(4), data_seed=np.int64(0), n_lf=np.int64(2), eps_lf=np.float64(0.05),
        temperature=np.float32(0.8), hidden_dim=np.int16(16), cache_dir=tmp_path, progress=False,
    )  # fmt: skip
    assert run.path.is_file(), "trained AND saved"
    again = train_experiment_model(
        "metric", "rhvae", epochs=1, seed=0, lr=float(np.float32(1e-3)), classes=[1, 2], n_per_class=4, n_lf=2,
        eps_lf=0.05, temperature=float(np.float32(0.8)), hidden_dim=16, cache_dir=tmp_path, progress=False,
    )  # fmt: skip
    assert again.reused and again.path == run.path, "the same cache key as with Python numbers"
    assert run.data.classes == (1, 2) and type(run.data.classes[0]) is int
    params = runs.validate_parameters(
        "generation_5",
        {
            **{name: None for name in registry.PARAMETERS["generation_5"]},
            "epochs": np.int64(3), "seeds": np.array([0, 1]), "data_seed": np.int64(0), "data_source": "bundled",
            "lr": np.float64(1e-3), "objective": "elbo", "reuse_cache": True, "interactive": False, "quick": False,
            "threads": np.int64(1), "mcmc_steps": np.int64(5), "n_samples": np.int64(4), "n_lf": np.int64(3),
            "temperature": np.float32(0.5),
        },
    )  # fmt: skip
    assert params["seeds"] == [0, 1] and type(params["epochs"]) is int and params["temperature"] == 0.5
    json.dumps({k: v for k, v in params.items() if k != "given"})


# ------------------------------------------------------------------------------------- notebook parameters
def test_quick_keeps_the_parameters_given_explicitly(monkeypatch):
    namespace = {name: None for name in registry.PARAMETERS["reconstruction"]}
    namespace.update(
        epochs=500, seeds=[0], data_seed=0, data_source="bundled", lr=1e-3, objective="elbo", reuse_cache=True,
        interactive=False, quick=True, threads=1, mcmc_steps=2, n_samples=100, ll_samples=1000, n_show=5,
    )  # fmt: skip
    params = runs.validate_parameters("reconstruction", namespace)
    assert (params["epochs"], params["mcmc_steps"], params["ll_samples"]) == (5, 5, 20)
    monkeypatch.setenv(runs.GIVEN_ENV, "epochs,mcmc_steps")
    params = runs.validate_parameters("reconstruction", namespace)
    assert (params["epochs"], params["mcmc_steps"], params["ll_samples"]) == (500, 2, 20)


@pytest.mark.parametrize(
    "name, value",
    [("mcmc_steps", 0), ("n_lf", 10_000_000), ("temperature", 1e-300), ("eps_lf", 1e300), ("beta_zero", 1e-300),
     ("regularization", 1e-300), ("ll_samples", 10**12), ("epochs", 10**9), ("seeds", [2**40]), ("lr", 1e300),
     ("hvae_n_lf", 10**7), ("n_samples", 10**9)],
)  # fmt: skip
def test_notebook_parameters_refuse_void_or_absurd_values(name, value):
    with pytest.raises(ValueError, match=f"parameter '{name}' must be"):
        runs.check_parameter(name, value, registry.PARAMETERS["reconstruction"][name])


def test_a_verdict_on_samples_that_never_moved_says_it_is_not_meaningful(tmp_path):
    run = runs.Run("generation_5", {"threads": 1, "output_dir": str(tmp_path), "seeds": [0], "quick": False})
    info = {"sampler": "riemannian_hmc", "mcmc_steps": 1, "acceptance_rate": 0.4}
    run.record(generation={0: {"RHVAE": info, "VAE": {"sampler": "prior"}}})
    text = run.conclude("RHVAE samples are better", {"better": True})
    assert run.verdict["verdict"] == "not meaningful" and "essentially the decoded training codes" in text
    run.record(generation={0: {"RHVAE": {**info, "mcmc_steps": 90}}})
    run.conclude("RHVAE samples are better", {"better": True})
    assert run.verdict["verdict"] == "holds" and not run.verdict["not_meaningful"]


def test_ranges_cover_every_count_of_the_cli():
    parser = cli.build_parser()
    for action in parser._subparsers._group_actions[0].choices["train"]._actions:
        if action.type is not None and getattr(action.type, "__name__", "") == "parse":
            assert action.dest in RANGES, action.dest


def test_work_that_would_run_for_hours_is_refused_with_an_estimate(tiny):
    from rhvae.evaluation.likelihood import log_likelihood
    from rhvae.sampling.hmc import riemannian_hmc

    model, _, data = tiny
    with pytest.raises(ValueError, match=r"leapfrog steps, about .* h of CPU"):
        riemannian_hmc(model, n_samples=100_000, mcmc_steps=100_000, n_lf=10)
    many = data.train.x.repeat(1000, 1)  # 12,000 images
    with pytest.raises(ValueError, match=r"passes through the model: at most"):
        log_likelihood(model, many, n_samples=100_000)


def test_an_output_or_cache_folder_that_cannot_be_written_is_refused_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="cache_dir .* cannot be written: Not a directory"):
        train_experiment_model("metric", "vae", epochs=100_000, cache_dir=blocker, progress=False)
    with pytest.raises(ValueError, match="output_dir .* cannot be written"):
        runs.Run("metric", {"threads": 1, "output_dir": str(blocker / "run")})
    with pytest.raises(ValueError, match="cache_dir .* cannot be written"):
        runs.Run("metric", {"threads": 1, "output_dir": str(tmp_path / "run"), "cache_dir": str(blocker / "c")})
    assert time.perf_counter() - start < 10, "refused before any training"


def test_numpy_images_are_accepted_and_a_broken_results_json_is_named(tmp_path, tiny, capsys):
    model, _, data = tiny
    out = model(data.test.x.numpy())
    assert torch.isfinite(out.objective).all()
    (tmp_path / "metric").mkdir()
    (tmp_path / "metric" / "results.json").write_text("{truncated")
    code, err = run_main(capsys, "report", str(tmp_path))
    assert code == 2 and "metric/results.json is not valid JSON" in err, err


def test_the_metric_and_the_grids_share_the_ranges(tiny):
    from rhvae.evaluation.geometry import latent_grid
    from rhvae.models.metric import LearnedMetric

    model = tiny[0]
    with pytest.raises(ValueError, match=r"temperature must be a finite number in \[0.01, 100.0\], got 1e-300"):
        LearnedMetric(model.centroids, model.M, 1e-300, 0.1)
    with pytest.raises(ValueError, match="temperature must be"):
        model.metric(temperature=1e300)
    with pytest.raises(ValueError, match=r"n must be an integer >= 2 and <= 2,000"):
        latent_grid(model.centroids, n=10**6)
    assert latent_grid(model.centroids, n=np.int64(20)).points.shape == (400, 2)


def test_a_run_into_a_reused_output_dir_leaves_no_stale_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    params = {"threads": 1, "output_dir": str(tmp_path / "run"), "reuse_cache": False}
    first = runs.Run("metric", params)
    first.save_figure(plt.figure(), "old_figure")
    first.write()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    second = runs.Run("metric", params)
    assert not (tmp_path / "run" / "old_figure.png").exists() and not (tmp_path / "run" / "results.json").exists()
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine" and second.dir == first.dir


# ------------------------------------------------------------------------------------ the Python API, by type
@pytest.mark.parametrize("bad", [None, "model", 3, torch.zeros(2, 784), [1, 2]])
def test_the_api_refuses_a_model_that_is_not_one_with_a_type_error_naming_it(bad, tiny, tmp_path):
    _, history, data = tiny
    for call in (
        lambda: rhvae.train(bad, data.train.x, epochs=1, progress=False),
        lambda: rhvae.save_model(bad, tmp_path / "m.pt"),
        lambda: rhvae.exact_log_likelihood(bad, data.test.x),
    ):
        with pytest.raises(TypeError, match="model must be a rhvae VAE, HVAE or RHVAE"):
            call()
    assert not (tmp_path / "m.pt").exists()


def test_the_api_refuses_bad_history_provenance_flags_and_types_in_one_line(tiny, tmp_path):
    model, history, data = tiny
    path = tmp_path / "m.pt"
    with pytest.raises(TypeError, match="history must be a rhvae.history.History or None, got str"):
        rhvae.save_model(model, path, history="history")
    with pytest.raises(TypeError, match="provenance must be a dict"):
        rhvae.save_model(model, path, provenance=torch.zeros(3))
    assert not path.exists()
    rhvae.save_model(model, path, history)
    with pytest.raises(ValueError, match="expected_type must be one of .*'RHVAE'.* or None, got 3"):
        rhvae.load_model(path, expected_type=3)
    with pytest.raises(TypeError, match="with_history must be True or False, got tensor"):
        rhvae.load_model(path, with_history=torch.zeros(2))
    with pytest.raises(TypeError, match="keep_trace must be True or False"):
        rhvae.riemannian_hmc(model, 4, 2, keep_trace=torch.zeros(2))
    with pytest.raises(TypeError, match="warn must be True or False"):
        rhvae.exact_log_likelihood(model, data.test.x[:1], warn=torch.zeros(2))
    with pytest.raises(ValueError, match="x must hold at least one image"):
        rhvae.exact_log_likelihood(model, torch.empty(0, 784))
    # a size that sets memory is bounded before any allocation
    with pytest.raises(ValueError, match="at most 2000 coarse cells per side"):
        rhvae.exact_log_likelihood(model, data.test.x[:1], box=1e12)
    assert rhvae.load_model(path, expected_type="rhvae").config() == model.config()
