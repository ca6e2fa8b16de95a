"""Sweeps on Dask (rhvae.experiments.sweep, run_all.sh --dask): real LocalClusters of worker processes, real papermill.

Two quick experiment notebooks run as jobs of a two-worker LocalCluster through run_all.sh; a failing notebook
is reported as FAILED with exit status 1. Small synthetic notebooks check the transfer itself through the Python
API: the client's cached models reach the worker's temporary cache, the models a job writes, its run folder,
log and executed notebook come back, the worker's paths in results.json become the client's, and a job that
raises or whose worker dies is a failed notebook.
"""

import json
import os
import subprocess
import sys
import time

import dask
import nbformat
import pytest
from conftest import INJECTED_FAULT
from nbformat.v4 import new_code_cell, new_notebook

import rhvae
from rhvae.experiments import sweep
from rhvae.paths import ROOT

pytestmark = pytest.mark.slow


def run_all(*args, env=None):
    return subprocess.run(
        ["bash", str(ROOT / "run_all.sh"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "CI": "true", **(env or {})},
        timeout=900,
    )


def notebook(*sources: str) -> bytes:
    """A notebook whose first cell is the papermill parameters cell, then one cell per source."""
    parameters = new_code_cell("output_dir = None\ncache_dir = None", metadata={"tags": ["parameters"]})
    nb = new_notebook(cells=[parameters, *(new_code_cell(s) for s in sources)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb).encode()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dask", "lokal"], "--dask must be 'local'"),
        (["--dask", "local:0"], "'local:N' (N workers, 1 to 256)"),
        (["--dask", "host:8786"], "a scheduler address such as tcp://host:8786, got 'host:8786'"),
        (["--dask"], "--dask needs an ADDRESS"),
        (["--dask", "local", "--jobs", "2"], "--jobs and --dask do not combine"),
    ],
)
def test_run_all_rejects_a_bad_dask_address(args, message, tmp_path):
    proc = run_all("--quick", "--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing runs on bad usage"


def test_run_all_dask_runs_two_quick_notebooks_on_a_local_cluster(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    names = ["metric", "generation_5"]
    proc = run_all(
        "--quick", "--only", ",".join(names), "--dask", "local", "--out", str(out),
        "-p", "seeds", "0", "-p", "cache_dir", str(cache),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Dask cluster tcp://127.0.0.1:" in proc.stdout and ": 2 workers, 2 threads" in proc.stdout
    for name in names:
        results = json.loads((out / name / "results.json").read_text())
        assert results["status"] == "ok" and results["quick"] and results["parameters"]["seeds"] == [0]
        assert results["figures"] and all((out / name / f).stat().st_size > 0 for f in results["figures"])
        # the worker's temporary folders became the client's run folder and model cache
        assert results["run_dir"] == str(out / name) and results["provenance"]["cache_dir"] == str(cache)
        worker_folder = results["provenance"]["executed_on"]["worker_folder"]
        assert worker_folder not in json.dumps({k: v for k, v in results.items() if k != "provenance"})
        assert not os.path.exists(worker_folder), "the worker's temporary folder is removed"
        for label, model in results["models"].items():  # trained on the worker, saved into the client's cache
            assert model["source"] == "trained" and model["cache_file"].startswith(f"{cache}/{name}/")
            assert rhvae.load_model(model["cache_file"]).config() == model["config"], label
        executed = nbformat.read(out / "executed" / f"{name}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
        assert (out / "logs" / f"{name}.rc").read_text().split()[0] == "0"
        assert "Executing notebook with kernel" in (out / "logs" / f"{name}.log").read_text()
        row = next(line for line in proc.stdout.splitlines() if line.startswith(f"{name} "))
        assert row.split()[1] == "ok" and row.split()[-1] == str(out / name)
    report = (out / "README.md").read_text()
    assert "| metric (quick) |" in report and "| generation_5 (quick) |" in report
    assert "(generation_5/samples.png)" in report


def test_run_all_dask_reports_a_failing_notebook_like_a_local_run(tmp_path, failing_kernels):
    # the notebooks fail inside, on the worker, when their run starts
    out = tmp_path / "out"
    proc = run_all(
        "--quick", "--only", "metric,generation_5", "--dask", "local", "--out", str(out), "-p", "seeds", "0",
        "-p", "cache_dir", str(tmp_path / "cache"), env=failing_kernels,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "notebook 'metric' FAILED (papermill exit 1)" in proc.stderr
    assert "notebook 'generation_5' FAILED (papermill exit 1)" in proc.stderr
    assert proc.stdout.count("FAILED") == 2  # both rows of the summary: one failure does not stop the other
    for name in ("metric", "generation_5"):
        assert INJECTED_FAULT in (out / "logs" / f"{name}.log").read_text()
        assert (out / "logs" / f"{name}.rc").read_text().split()[0] == "1"
        assert INJECTED_FAULT in (out / "executed" / f"{name}.ipynb").read_text()
    assert not (out / "README.md").exists()


@pytest.fixture(scope="module")
def cluster_address():
    """A two-worker LocalCluster shared by the API tests; a worker that dies fails its job at once."""
    from distributed import LocalCluster

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
    ):
        yield cluster.scheduler_address


def test_jobs_take_the_clients_models_and_bring_back_their_outputs(tmp_path, cluster_address):
    out, cache = tmp_path / "out", tmp_path / "cache"
    (cache / "echo").mkdir(parents=True)
    (cache / "echo" / "old.pt").write_bytes(b"a model the client trained earlier")
    (out / "echo").mkdir(parents=True)
    (out / "echo" / "results.json").write_text(json.dumps({"figures": ["stale.png"]}))
    (out / "echo" / "stale.png").write_bytes(b"an earlier run's figure")
    echo = notebook(
        "import json, os\n"
        "from pathlib import Path\n"
        "old = Path(cache_dir, 'echo', 'old.pt').read_bytes()\n"
        "Path(cache_dir, 'echo', 'new.pt').write_bytes(old[::-1])\n"
        "Path(output_dir).mkdir(parents=True, exist_ok=True)\n"
        "Path(output_dir, 'fig.png').write_bytes(b'png')\n"
        "results = {'figures': ['fig.png'], 'epochs': epochs, 'given': os.environ['RHVAE_GIVEN_PARAMETERS'],\n"
        "           'model': str(Path(cache_dir, 'echo', 'new.pt')), 'provenance': {}}\n"
        "Path(output_dir, 'results.json').write_text(json.dumps(results))\n"
        "print('echo done')"
    )
    raises = notebook(
        "from pathlib import Path\n"
        "Path(output_dir).mkdir(parents=True, exist_ok=True)\n"
        "Path(output_dir, 'partial.png').write_bytes(b'png')",
        "raise RuntimeError('this notebook fails on purpose')",
    )
    jobs = [
        sweep.Job("echo", echo, {"epochs": 3, "cache_dir": str(cache)}, given=("epochs",)),
        sweep.Job("raises", raises, {"cache_dir": str(cache)}),
    ]
    assert sweep.run_sweep(jobs, out, cluster_address) == {"echo": 0, "raises": 1}

    assert (cache / "echo" / "new.pt").read_bytes() == b"a model the client trained earlier"[::-1]
    assert (cache / "echo" / "old.pt").read_bytes() == b"a model the client trained earlier"
    results = json.loads((out / "echo" / "results.json").read_text())
    assert results["epochs"] == 3 and results["given"] == "epochs"
    assert results["model"] == str(cache / "echo" / "new.pt")  # the worker's path, relocated
    assert results["provenance"]["executed_on"]["host"]
    assert (out / "echo" / "fig.png").read_bytes() == b"png"
    assert not (out / "echo" / "stale.png").exists(), "an earlier run's figures are removed"
    assert "echo done" in (out / "logs" / "echo.log").read_text()
    status, seconds = (out / "logs" / "echo.rc").read_text().split()
    assert status == "0" and int(seconds) >= 0

    assert (out / "logs" / "raises.rc").read_text().split()[0] == "1"
    assert "this notebook fails on purpose" in (out / "logs" / "raises.log").read_text()
    assert "this notebook fails on purpose" in (out / "executed" / "raises.ipynb").read_text()
    assert (out / "raises" / "partial.png").read_bytes() == b"png"  # the figures written before the failure


def test_a_job_whose_worker_dies_is_a_failed_notebook_and_leaves_nothing_behind(tmp_path, cluster_address):
    # the kernel's parent is papermill, whose parent is the Dask worker process: kill that worker, then keep the
    # kernel busy; it must not outlive the worker (nor papermill), and the job's folder must not stay behind
    pid_file = tmp_path / "kernel.pid"
    dies = notebook(
        f"import os, psutil, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "psutil.Process(os.getppid()).parent().kill()\ntime.sleep(120)"
    )
    fine = notebook("print('still fine')")
    jobs = [sweep.Job("dies", dies, {"reuse_cache": False}), sweep.Job("fine", fine, {"reuse_cache": False})]
    assert sweep.run_sweep(jobs, tmp_path, cluster_address) == {"dies": 1, "fine": 0}
    log = (tmp_path / "logs" / "dies.log").read_text()
    assert "the Dask worker running dies was lost" in log and "KilledWorker" in log, log
    assert (tmp_path / "logs" / "dies.rc").read_text().split()[0] == "1"
    assert "still fine" in (tmp_path / "logs" / "fine.log").read_text()
    import psutil

    kernel = int(pid_file.read_text())
    deadline = time.time() + 20
    while psutil.pid_exists(kernel) and psutil.Process(kernel).status() != psutil.STATUS_ZOMBIE:
        assert time.time() < deadline, "the kernel of the lost worker's notebook is still running"
        time.sleep(0.5)
    assert not sweep.job_folder(jobs[0]).exists(), "the lost job's temporary folder is removed"


def test_a_cache_that_cannot_be_written_fails_the_job_before_it_runs(tmp_path, cluster_address):
    job = sweep.Job("echo", notebook("print('ran')"), {"cache_dir": "/proc/rhvae_cannot_exist"})
    assert sweep.run_sweep([job], tmp_path, cluster_address) == {"echo": 1}
    assert "cache_dir /proc/rhvae_cannot_exist" in (tmp_path / "logs" / "echo.log").read_text()
    assert (tmp_path / "logs" / "echo.rc").read_text() == "1 0\n"


def test_unknown_papermill_arguments_are_refused():
    assert sweep.papermill_parameters(["-p", "epochs", "3", "-y", "{seeds: [1, 2]}", "-p", "lr", "1e-3"]) == {
        "epochs": 3,
        "seeds": [1, 2],
        "lr": 0.001,
    }
    with pytest.raises(ValueError, match="unexpected papermill argument '-r'"):
        sweep.papermill_parameters(["-r", "epochs", "3"])


def test_a_local_cluster_runs_notebooks_in_the_clients_environment(tmp_path, monkeypatch):
    # dask's nanny would set MALLOC_TRIM_THRESHOLD_ and OMP_NUM_THREADS=1 in its workers (slower torch training)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv("RHVAE_SWEEP_TEST", "from the client")
    show = notebook("import os\nprint([os.environ.get(k) for k in ('MALLOC_TRIM_THRESHOLD_', 'RHVAE_SWEEP_TEST')])")
    assert sweep.run_sweep([sweep.Job("env", show, {"reuse_cache": False})], tmp_path, "local:1") == {"env": 0}
    assert "[None, 'from the client']" in (tmp_path / "logs" / "env.log").read_text()


@pytest.fixture
def separate_cluster(tmp_path):
    """A Dask scheduler and two one-thread workers started as their own processes by the ``dask`` command line, as
    on other machines: the client reaches them over TCP only, and each worker runs in its own folder. Yields the
    scheduler's address."""
    import time

    scheduler_file = tmp_path / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(scheduler_file),
            ],
            **quiet,
        )  # fmt: skip
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for k in range(2):
            folder = tmp_path / f"worker{k}"
            folder.mkdir()
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "dask",
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--local-directory",
                        str(folder),
                        "--dashboard-address",
                        ":0",
                    ],
                    cwd=folder,
                    **quiet,
                )  # fmt: skip
            )
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def test_a_scheduler_address_gets_the_jobs_and_an_analysis_reuses_the_models_they_trained(tmp_path, separate_cluster):
    """``--dask tcp://host:port``: the scheduler and workers were started apart (``dask scheduler``, ``dask
    worker``). Two quick experiments run on them and their outputs and trained models come back; the analysis that
    judges them starts after them and is sent their cached models (the workers start with an empty folder), so it
    does not train them again."""
    assert sweep.cache_subfolders("clustering") == ("reconstruction", "generation_7_classes")
    assert sweep.cache_subfolders("metric") == ("metric",) and sweep.cache_subfolders("custom") == ("custom",)
    out, cache = tmp_path / "out", tmp_path / "cache"
    names = ["reconstruction", "generation_7_classes"]
    proc = run_all(
        "--quick", "--only", ",".join(["clustering", *names]), "--dask", separate_cluster, "--out", str(out),
        "-p", "seeds", "[0]", "-p", "epochs", "2", "-p", "cache_dir", str(cache),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Dask cluster {separate_cluster}: 2 workers, 2 threads" in proc.stdout
    trained = {}
    for name in names:
        results = json.loads((out / name / "results.json").read_text())
        assert results["status"] == "ok" and results["run_dir"] == str(out / name)
        assert not os.path.exists(results["provenance"]["executed_on"]["worker_folder"])  # removed by the job
        for label, model in results["models"].items():
            assert model["source"] == "trained" and model["cache_file"].startswith(f"{cache}/{name}/")
            assert rhvae.load_model(model["cache_file"]).config() == model["config"], label
            trained[model["cache_file"]] = model["config"]
        assert all((out / name / f).stat().st_size > 0 for f in results["figures"])
    assert proc.stdout.index("=== clustering ->") > max(proc.stdout.index(f"=== {n} finished") for n in names)
    judged = json.loads((out / "clustering" / "results.json").read_text())["models"]
    assert len(judged) == 4 and {m["source"] for m in judged.values()} == {"cache"}  # not trained again
    assert {m["cache_file"] for m in judged.values()} <= set(trained)
    assert "| reconstruction (quick) |" in (out / "README.md").read_text()


@pytest.mark.slow
def test_run_all_dask_at_a_server_that_is_not_a_scheduler_exits_2(tmp_path):
    """An HTTP server (say the dashboard's port instead of the scheduler's) accepts the connection but never
    answers as a scheduler: one line and exit 2 after the connect timeout, not a hang."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        proc = subprocess.run(
            ["bash", str(ROOT / "run_all.sh"), "--quick", "--only", "generation_5", "-p", "seeds", "[0]",
             "--out", str(tmp_path / "out"), "--dask", f"tcp://127.0.0.1:{port}"],
            capture_output=True, text=True, env={**os.environ, "CI": "true"}, timeout=sweep.CONNECT_TIMEOUT + 150,
        )  # fmt: skip
    finally:
        server.kill()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_all_dask_at_a_closed_port_is_refused_with_the_options(tmp_path):
    """Nothing listens at the address: run_all.sh refuses it in one line while it checks its options (distributed
    retried the refused connection for its whole 20 s timeout, 46 s in all), before any folder is made."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(ROOT / "run_all.sh"), "--out", str(tmp_path / "out"), "--dask", f"tcp://127.0.0.1:{port}"],
        capture_output=True, text=True, env={**os.environ, "CI": "true"}, timeout=120,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first = proc.stderr.splitlines()[0]
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}: nothing accepts a connection" in first
    assert seconds < sweep.CONNECT_TIMEOUT, f"{seconds:.1f} s: the refusal waited for distributed's timeout"
    assert not (tmp_path / "out").exists()
    with pytest.raises(sweep.SchedulerUnreachable, match="nothing accepts a connection"):
        sweep.probe(f"tcp://127.0.0.1:{port}")
    sweep.probe("local:2")  # no address to probe


def _terminal_sigint():
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as from a terminal, even when the suite runs in the background
    os.setsid()  # its own process group: Ctrl-C reaches the shell and everything it started


def test_ctrl_c_under_dask_local_exits_130_in_one_line_and_leaves_no_process(tmp_path):
    """Ctrl-C reaches every process of the group: the client cancels the jobs and says so in one line, the
    LocalCluster's workers (started with SIGINT ignored) print no KeyboardInterrupt traceback of their own."""
    import signal

    proc = subprocess.Popen(
        ["bash", str(ROOT / "run_all.sh"), "--quick", "--only", "metric", "-p", "seeds", "[0]",
         "-p", "epochs", "1000", "--dask", "local:1", "--out", str(tmp_path / "out"),
         "-p", "cache_dir", str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": "true"},
        preexec_fn=_terminal_sigint,
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if "sent to the cluster" in line:
                break
        time.sleep(20)  # the job is training (1000 epochs: minutes)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "interrupted: the jobs were cancelled" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    time.sleep(2)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no process of the run is left (client, workers, papermill, kernel)
