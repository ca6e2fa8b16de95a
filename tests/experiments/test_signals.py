"""SIGTERM and SIGHUP stop a run as Ctrl-C does, and one output folder holds one run.

Each run gets a marker in its environment, which every process it starts inherits (runners, papermills, kernels,
Dask workers, even those in a session of their own): after the run no process of this machine may hold it. The
signal goes to the top process alone (``kill PID``: only run_all.sh gets it) or to its whole process group."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rhvae.files import FolderInUse, hold_folder
from rhvae.paths import ROOT

pytestmark = pytest.mark.slow

#: two notebooks that train for minutes (1000 epochs), one seed
LONG = ["--quick", "-p", "seeds", "[0]", "-p", "epochs", "1000"]


def _own_group():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as from a terminal, even when the suite runs in the background
    os.setsid()  # its own process group


def marked_processes(marker: str) -> list[str]:
    """The command lines of the processes whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160])
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return found


def start_run_all(tmp_path, *options, marker):
    return subprocess.Popen(
        ["bash", str(ROOT / "run_all.sh"), *LONG, *options, "--out", str(tmp_path / "out"),
         "-p", "cache_dir", str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CI": "true", "RHVAE_TEST_MARKER": marker}, preexec_fn=_own_group,
    )  # fmt: skip


def wait_until_started(proc, logs: Path, running: int) -> None:
    """Read run_all.sh's output until a notebook was started (or sent to the cluster); without Dask, wait until
    ``running`` notebooks write their logs (their runners are past their start-up, which takes many seconds on a
    loaded machine); then let them train."""
    for line in proc.stdout:
        if line.startswith("===") or "sent to the cluster" in line:
            break
    deadline = time.time() + 240
    while running and time.time() < deadline and sum(f.stat().st_size > 0 for f in logs.glob("*.log")) < running:
        time.sleep(0.5)
    time.sleep(8)


def assert_no_process_left(marker: str) -> None:
    deadline = time.time() + 15  # a kernel notices its papermill's end within a second or two
    while marked_processes(marker) and time.time() < deadline:
        time.sleep(0.5)
    assert marked_processes(marker) == []


@pytest.mark.parametrize(
    "signum, target, options",
    [
        (signal.SIGTERM, "top", ["--only", "generation_5,metric", "--jobs", "2"]),
        (signal.SIGTERM, "group", ["--only", "generation_5,metric", "--jobs", "2"]),
        (signal.SIGHUP, "top", ["--only", "generation_5,metric", "--jobs", "2"]),
        (signal.SIGHUP, "group", ["--only", "generation_5,metric", "--jobs", "2"]),
        (signal.SIGTERM, "top", ["--only", "metric", "--jobs", "1"]),
        (signal.SIGTERM, "top", ["--only", "generation_5,metric", "--dask", "local"]),
        (signal.SIGHUP, "group", ["--only", "generation_5,metric", "--dask", "local"]),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else (" ".join(v[2:]) if isinstance(v, list) else v),
)
def test_a_stop_signal_ends_every_process_removes_partial_files_and_says_terminated(tmp_path, signum, target, options):
    marker = uuid.uuid4().hex
    proc = start_run_all(tmp_path, *options, marker=marker)
    try:
        notebooks = options[options.index("--only") + 1].split(",")
        running = 0 if "--dask" in options else min(len(notebooks), int(options[options.index("--jobs") + 1]))
        wait_until_started(proc, tmp_path / "out" / "logs", running)
        (os.kill if target == "top" else os.killpg)(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, stdout[-2000:] + stderr[-3000:]
    assert "TERMINATED" in stdout and "run_all.sh: terminated" in stderr, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert_no_process_left(marker)
    out = tmp_path / "out"
    assert not list(out.rglob("*.partial")) and not list(out.rglob("*.tmp"))  # no half-written file stays
    statuses = {rc.read_text().split()[0] for rc in (out / "logs").glob("*.rc")}
    assert str(128 + signum) in statuses and statuses <= {"0", str(128 + signum)}, statuses


def test_a_second_run_into_a_live_runs_out_is_refused_and_a_dead_runs_lock_is_no_lock(tmp_path):
    """Two run_all.sh started at once into one --out: one runs, the other is refused in one line (exit 2), as is a
    training into that folder. Once the first has ended (SIGKILL: it cleans nothing up), both are accepted."""
    marker = uuid.uuid4().hex
    procs = [start_run_all(tmp_path, "--only", "metric", "--jobs", "1", marker=marker) for _ in range(2)]
    try:
        refused = None
        deadline = time.time() + 240
        while refused is None and time.time() < deadline:
            refused = next((p for p in procs if p.poll() is not None), None)
            time.sleep(0.5)
        assert refused is not None, "neither run was refused"
        stdout, stderr = refused.communicate(timeout=10)
        assert refused.returncode == 2, stdout[-2000:] + stderr[-2000:]
        line = stderr.splitlines()[0]
        assert f"--out {tmp_path / 'out'} is in use by run_all.sh (pid" in line and "choose another --out" in line
        (running,) = [p for p in procs if p is not refused]
        assert running.poll() is None
        out = str(tmp_path / "out")
        train = [sys.executable, "-m", "rhvae", "train", "--model", "vae", "--epochs", "1", "--out", out]
        training = subprocess.run(train, capture_output=True, text=True, timeout=300)
        assert training.returncode == 2 and "is in use by run_all.sh (pid" in training.stderr, training.stderr
        assert len(training.stderr.strip().splitlines()) == 1
        os.killpg(running.pid, signal.SIGKILL)  # no trap runs: the lock file stays, the lock goes with the run
        running.wait(timeout=30)
        assert_no_process_left(marker)
        assert (tmp_path / "out" / ".rhvae.lock").is_file()
        training = subprocess.run(train, capture_output=True, text=True, timeout=300)
        assert training.returncode == 0, training.stderr
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


def test_two_trainings_started_at_once_into_one_out_one_is_refused(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rhvae", "train", "--model", "vae", "--epochs", "100000", "--out", str(out)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_own_group)
        for _ in range(2)
    ]
    try:
        deadline = time.time() + 240
        while all(p.poll() is None for p in procs) and time.time() < deadline:
            time.sleep(0.5)
        (refused,) = [p for p in procs if p.poll() is not None]
        assert refused.returncode == 2
        line = refused.stderr.read().strip()
        assert line.startswith(f"python -m rhvae train: error: --out {out} is in use by python -m rhvae train (pid")
        assert "\n" not in line
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_hold_folder_tells_a_live_holder_from_a_dead_one(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rhvae.files import hold_folder\n"
         "with hold_folder(sys.argv[1], '--out', 'a test holder'):\n    print('held', flush=True); time.sleep(600)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        message = rf"--out {tmp_path} is in use by a test holder \(pid {holder.pid}, since"
        with pytest.raises(FolderInUse, match=message):
            with hold_folder(tmp_path, "--out", "me"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with hold_folder(tmp_path, "--out", "me") as lock:  # the killed holder's file is left, its lock is not
        assert lock.read_text().startswith(f"me (pid {os.getpid()}, since")
