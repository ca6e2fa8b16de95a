"""Sweeps on a Dask cluster: each notebook of a ``run_all.sh`` run is one job of a ``dask.distributed`` cluster
(``run_all.sh --dask ADDRESS``), a ``LocalCluster`` on this machine or the workers of a scheduler elsewhere.

A job (``Job``) is what ``run_all.sh`` runs for one notebook: the notebook's bytes and its papermill parameters
(one job per notebook, with all its seeds: the notebook's tables and verdict are over its seeds, so a notebook is
not split). ``execute_job`` runs on a worker, which needs this package installed but not the client's disk: in a
temporary folder it writes the notebook and the client's cached models of the experiment (those the notebook may
reuse), runs ``python -m papermill`` there exactly as ``run_all.sh`` does (run folder and model cache are
sub-folders), and returns what the run wrote, as bytes (``JobOutcome``). ``deliver`` writes an outcome on the client
into the ``run_all.sh`` output folder as a local run would leave it, every file atomically:

* ``executed/NAME.ipynb``, ``logs/NAME.log`` and ``logs/NAME.rc`` ("EXIT_STATUS SECONDS", the papermill exit status
  and the job's time on the worker), which ``run_all.sh`` reads for its summary and exit status;
* ``NAME/``: the run folder (figures, results.json). In results.json the worker's temporary paths are replaced
  by the client's (run folder, model cache) and ``provenance.executed_on`` records the worker's host and folder;
* the models the job trained, into the client's model cache (``rhvae.experiments.runs.cache_folder``).

A job that raises, whose worker is lost, or whose outputs cannot be written is a failed notebook: exit status 1,
the reason at the end of its log.

The workers of ``local`` keep the client's environment (dask's nanny would set ``MALLOC_TRIM_THRESHOLD_`` and
``OMP_NUM_THREADS=1`` in theirs); the workers of a scheduler elsewhere run the notebooks in their own.

``run_all.sh`` calls ``python -m rhvae.experiments.sweep --dask ADDRESS --out DIR --notebooks DIR -- COMMON_ARGS`` with
the plan on stdin (a line ``NAME<TAB>papermill arguments`` per notebook), after checking every parameter.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rhvae import signals
from rhvae.experiments.notebook_command import STOP_SECONDS, execute, papermill_command, papermill_value, stop_running
from rhvae.experiments.registry import REGISTRY
from rhvae.experiments.runs import GIVEN_ENV, cache_folder, clear_earlier_run
from rhvae.files import atomic_write, atomic_write_text, writable_folder

#: Workers of ``--dask local`` (one thread each, one process each: a notebook pins its own torch threads).
LOCAL_WORKERS = 2
MAX_LOCAL_WORKERS = 256
#: Seconds to wait for a remote scheduler before giving up.
CONNECT_TIMEOUT = 20
#: Seconds between two progress lines while jobs run.
HEARTBEAT = 60.0
#: Seconds between two looks at Ctrl-C while waiting for the jobs (``_stop_signals_as_flag``), and how long the stopped
#: jobs may take to come back beyond their papermill's ``STOP_SECONDS`` before they are cancelled.
CTRL_C_POLL = 0.5
GRACE_SECONDS = 10
#: On a worker: the jobs (by tag) of sweeps that were stopped, with the signal's number (``_stop_jobs``).
_stopped: dict[str, int] = {}
ADDRESS_HELP = (
    f"'local' (a LocalCluster of {LOCAL_WORKERS} workers on this machine), 'local:N' (N workers, 1 to "
    f"{MAX_LOCAL_WORKERS}) or a scheduler address such as tcp://host:8786"
)


@dataclass(frozen=True)
class Job:
    """One notebook run: ``name`` (the experiment: run folder, log and model-cache sub-folder), the ``notebook``
    file's bytes, its papermill ``parameters`` (output_dir and cache_dir are set on the worker; a given cache_dir
    is the client's cache) and the names of the parameters given explicitly (``given``: with ``quick``
    they keep their values, ``rhvae.experiments.runs.validate_parameters``)."""

    name: str
    notebook: bytes
    parameters: Mapping = field(default_factory=dict)
    given: tuple[str, ...] = ()
    #: names the job's temporary folder on its worker (``job_folder``), so that the client can remove it when the
    #: worker is lost on this machine (a LocalCluster): a killed worker cannot clean up after itself
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


@dataclass
class JobOutcome:
    """What a job left: papermill's ``exit_status``, its ``seconds``, the worker's ``host`` and temporary
    ``folder``, and the files as bytes: the ``executed`` notebook (None if papermill wrote none), the ``log``,
    the run folder's files (``run_files``, by path relative to it) and the models trained into the model cache
    (``models``, by path relative to it)."""

    name: str
    exit_status: int
    seconds: float
    host: str = ""
    folder: str = ""
    executed: bytes | None = None
    log: bytes = b""
    run_files: dict[str, bytes] = field(default_factory=dict)
    models: dict[str, bytes] = field(default_factory=dict)


def local_workers(address: str) -> int | None:
    """The number of workers of a ``local`` / ``local:N`` address, None for a scheduler address; ``ValueError``
    naming --dask and what it accepts for anything else."""
    match = re.fullmatch(r"local(?::(\d+))?", address)
    if match:
        workers = int(match.group(1) or LOCAL_WORKERS)
        if 1 <= workers <= MAX_LOCAL_WORKERS:
            return workers
    elif re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+", address):
        return None
    raise ValueError(f"--dask must be {ADDRESS_HELP}, got {address!r}")


class SchedulerUnreachable(OSError):
    """The scheduler of a --dask address did not answer: nothing was run."""


def probe(address: str) -> None:
    """``SchedulerUnreachable`` at once when nothing accepts a TCP connection at a ``tcp://host:port`` address:
    distributed itself retries a refused connection for its whole timeout (a closed port took 46 s to refuse).
    A server that accepts the connection is left to the Dask handshake (``_connect``); other schemes too."""
    match = re.fullmatch(r"tcp://\[?([^\]/]+?)\]?:(\d+)/?", address)
    if match is None:
        return
    try:
        with socket.create_connection((match.group(1), int(match.group(2))), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise SchedulerUnreachable(
            f"cannot reach the Dask scheduler at {address}: nothing accepts a connection there ({why})"
        ) from None


@contextlib.contextmanager
def dask_client(address: str) -> Iterator:
    """A ``distributed.Client`` of a new LocalCluster (``local``, ``local:N``: processes of one thread each) or
    of the scheduler at ``address``; the cluster it started is closed on exit."""
    import dask
    from distributed import Client, LocalCluster

    workers = local_workers(address)
    if workers is None:
        client = _connect(Client, address)
        with client:
            yield client
        return
    quiet = _QuietWorkerShutdown()
    logging.getLogger("distributed.nanny").addFilter(quiet)
    try:
        # the workers, and the notebooks they run, keep this process's environment: by default the nanny sets
        # MALLOC_TRIM_THRESHOLD_ and OMP_NUM_THREADS=1 in theirs (torch training measured 10-20 % slower). SIGINT,
        # SIGTERM and SIGHUP are ignored while the cluster starts, so that its processes (nannies, workers,
        # multiprocessing's resource tracker) inherit them ignored: a signal to the whole group reaches them all, and
        # this client, which stops the jobs and closes the cluster, is the one to handle it (each of them printed a
        # traceback as it died). The notebooks' papermill processes reset the three to their defaults
        # (``notebook_command._child_setup``) and stop on them themselves.
        quiet = signals.handlers(signal.SIG_IGN)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}), quiet:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        with cluster, Client(cluster) as client:
            client.run(_quiet_worker_shutdown)
            yield client
    finally:
        logging.getLogger("distributed.nanny").removeFilter(quiet)


@contextlib.contextmanager
def _stop_signals_as_flag() -> Iterator[list]:
    """Ctrl-C, SIGTERM and SIGHUP append their number to the yielded list instead of raising wherever the main
    thread is: ``KeyboardInterrupt`` raised inside distributed's wait (a ``threading.Condition``) could leave the
    lock released twice and surface as ``RuntimeError: release unlocked lock`` with a traceback. ``run_sweep`` polls
    the list and raises itself (``signals.interrupt``), between two waits. Outside the main thread no handler can be
    set (nor is one needed: signals reach the main thread only)."""
    received: list[int] = []
    with signals.handlers(lambda signum, frame: received.append(signum)):
        yield received


def _connect(client_class, address: str):
    """A client of the scheduler at ``address``, or ``SchedulerUnreachable`` within ``CONNECT_TIMEOUT`` (plus a few
    seconds): distributed's own timeout does not cover a server that accepts the connection but is not a Dask
    scheduler (its dashboard port, any HTTP server), where the handshake would wait forever."""
    probe(address)
    outcome: dict = {}

    def connect():
        try:
            outcome["client"] = client_class(address, timeout=CONNECT_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - refused, timed out, unknown host, not a scheduler
            outcome["error"] = err

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT + 5)
    if "client" in outcome:
        return outcome["client"]
    why = (
        outcome.get("error")
        or f"no Dask scheduler answered within {CONNECT_TIMEOUT + 5} s (a dashboard or other port?)"
    )
    raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {address}: {why}")


class _QuietWorkerShutdown(logging.Filter):
    """Drops what a LocalCluster's processes log as it closes under them: the nanny's warning that a worker process
    was "still alive after 4.0 seconds, killing" (a worker that imported torch, every worker of a sweep, takes
    longer than that to exit, and killing it then, idle, is its normal end), and, after a stop signal, a worker's
    heartbeat that found the scheduler gone and its cancelled jobs' instructions."""

    NOISE = ("still alive after", "Failed to communicate with scheduler during heartbeat", "ended with CancelledError")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(noise in record.getMessage() for noise in self.NOISE)


def _quiet_worker_shutdown() -> None:
    """On a worker of our own LocalCluster (``client.run``): ``_QuietWorkerShutdown`` on its loggers."""
    for name in ("distributed.worker", "distributed.worker.state_machine", "distributed.nanny"):
        logging.getLogger(name).addFilter(_QuietWorkerShutdown())


# ------------------------------------------------------------------------------------------------- on a worker
def execute_job(job: Job, cached_models: Mapping[str, bytes]) -> JobOutcome:
    """Run ``job`` with papermill in a temporary folder of this machine, its model cache holding
    ``cached_models`` (path relative to the cache: bytes), and return everything it wrote. A job of a sweep that was
    stopped (``_stop_jobs``) before it started ends at once."""
    if job.tag in _stopped:
        stopped = b"the sweep was stopped before this job started\n"
        return JobOutcome(job.name, 128 + _stopped[job.tag], 0.0, log=stopped)
    folder = job_folder(job)
    folder.mkdir(parents=True)
    try:
        return _execute_in(job, folder, cached_models)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def job_folder(job: Job) -> Path:
    """The temporary folder ``job`` runs in, on its worker's machine."""
    return Path(tempfile.gettempdir()) / f"rhvae-{job.name}-{job.tag}"


def _execute_in(job: Job, folder: Path, cached_models: Mapping[str, bytes]) -> JobOutcome:
    """``execute_job`` in ``folder``."""
    run_dir, cache_dir = folder / "run", folder / "cache"
    for relative, data in cached_models.items():
        (cache_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (cache_dir / relative).write_bytes(data)
    seeded = _stamps(cache_dir)
    source, executed, log = folder / f"{job.name}.ipynb", folder / "executed" / f"{job.name}.ipynb", folder / "log"
    source.write_bytes(job.notebook)
    executed.parent.mkdir()
    parameters = folder / "parameters.yaml"
    parameters.write_text(yaml.safe_dump({**job.parameters, "output_dir": str(run_dir), "cache_dir": str(cache_dir)}))
    command = papermill_command(source, executed, ["-f", str(parameters)])
    start = time.perf_counter()
    environment = {**os.environ, GIVEN_ENV: ",".join(job.given)}
    exit_status = execute(command, log, cwd=folder, env=environment, key=job.tag)
    stamps = _stamps(cache_dir)
    return JobOutcome(
        name=job.name,
        exit_status=exit_status,
        seconds=time.perf_counter() - start,
        host=socket.gethostname(),
        folder=str(folder),
        executed=executed.read_bytes() if executed.is_file() else None,
        log=log.read_bytes(),
        run_files=_files(run_dir),
        models={name: data for name, data in _files(cache_dir).items() if stamps[name] != seeded.get(name)},
    )


def cache_subfolders(name: str) -> tuple[str, ...]:
    """The model-cache sub-folders the notebook ``name`` reads: its own, or for an analysis (registry ``analyses``:
    interpolation, clustering) those of the experiments whose models it judges."""
    entry = REGISTRY.get(name)
    return (entry.analyses if entry is not None else ()) or (name,)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its path relative to it (none if the folder does not exist)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, modification time in ns) of every file under ``folder``: a file whose stamp changed was written."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------------- on the client
def run_sweep(jobs: Sequence[Job], out: str | os.PathLike, address: str, heartbeat: float = HEARTBEAT) -> dict:
    """Run ``jobs`` on the Dask cluster of ``address`` (``local``, ``local:N`` or a scheduler address) and
    ``deliver`` each outcome into the output folder ``out`` as soon as it arrives. Returns {name: exit status}.

    Every job runs to its end even if another one fails. A job whose model cache (the client's: its
    ``cache_dir`` parameter, else ``rhvae.experiments.runs.cache_folder()``) cannot be written fails at once, as its
    notebook would. ``ValueError`` for a bad address, ``SchedulerUnreachable`` when the scheduler does not
    answer (nothing was run)."""
    from distributed import CancelledError, wait

    out = Path(out)
    local_workers(address)  # a bad address is refused before anything starts
    statuses: dict[str, int] = {}
    with dask_client(address) as client, _stop_signals_as_flag() as received:
        workers = client.scheduler_info()["workers"].values()
        print(
            f"Dask cluster {client.scheduler.address}: {len(workers)} workers, "
            f"{sum(w['nthreads'] for w in workers)} threads"
        )
        submitted = {}
        for job in jobs:
            cache = cache_folder(job.parameters.get("cache_dir"))
            reuse = job.parameters.get("reuse_cache", True)
            announce = f"=== {job.name} -> {out / job.name} (log: {out / 'logs' / job.name}.log)"
            folders = cache_subfolders(job.name)
            if reuse:
                try:  # a trained model that cannot be saved at the end would be lost: refused before running
                    for folder in folders:
                        writable_folder(cache / folder, "cache_dir")
                except ValueError as err:
                    print(f"{announce}: not run")
                    statuses[job.name] = deliver(JobOutcome(job.name, 1, 0.0, log=f"{err}\n".encode()), out, cache)
                    continue
            models = {f"{f}/{k}": v for f in folders for k, v in _files(cache / f).items()} if reuse else {}
            (models_future,) = client.scatter([models], hash=False)
            future = client.submit(
                execute_job, job, models_future, key=f"rhvae-{job.name}-{uuid.uuid4().hex[:8]}", pure=False
            )
            submitted[future] = (job, cache, time.monotonic())
            print(f"{announce}, sent to the cluster {_dt.datetime.now():%H:%M:%S}", flush=True)
        pending = set(submitted)
        beat, stopping = time.monotonic(), None
        while pending:
            try:
                wait(list(pending), timeout=min(heartbeat, CTRL_C_POLL), return_when="FIRST_COMPLETED")
            except (CancelledError, TimeoutError):  # the futures of a lost worker (handled below), or nothing yet
                pass
            if received and stopping is None:  # each worker stops this sweep's notebooks as the signal would
                stopping = time.monotonic()
                client.run(_stop_jobs, [job.tag for job in jobs], received[0], on_error="return")
            if stopping is not None and time.monotonic() - stopping > STOP_SECONDS + GRACE_SECONDS:
                raise signals.interrupt(received[0])  # leaving the client's block cancels what is left
            finished = [f for f in pending if f.done() or f.cancelled()]
            if not finished and time.monotonic() - beat >= heartbeat:
                beat = time.monotonic()
                on_workers = {key for keys in client.run(_executing_keys).values() for key in keys}
                running = sorted(submitted[f][0].name for f in pending if f.key in on_workers)
                queued = sorted(submitted[f][0].name for f in pending if f.key not in on_workers)
                print(
                    f"{_dt.datetime.now():%H:%M:%S} running: {', '.join(running) or 'none'}; queued: "
                    f"{', '.join(queued) or 'none'}; {len(statuses)}/{len(jobs)} done",
                    flush=True,
                )
            for future in finished:
                pending.discard(future)
                job, cache, sent = submitted[future]
                outcome = _outcome(future, job, time.monotonic() - sent)
                if stopping is not None and outcome.exit_status != 0:  # stopped, or its worker, by the signal
                    outcome.exit_status = 128 + received[0]
                if not outcome.host:  # lost with its worker: its folder, if on this machine, goes too
                    shutil.rmtree(job_folder(job), ignore_errors=True)
                statuses[job.name] = deliver(outcome, out, cache)
                where = f" on {outcome.host}" if outcome.host else ""
                print(
                    f"=== {job.name} finished{where} in {outcome.seconds:.0f} s, exit status {statuses[job.name]}; "
                    f"{len(statuses)}/{len(jobs)} done",
                    flush=True,
                )
        if received:  # the stopped jobs are delivered (their .rc say so), or arrived while the last ones were
            raise signals.interrupt(received[0])
    return statuses


def _stop_jobs(tags: Sequence[str], signum: int) -> None:
    """On a worker (``client.run``): stop the running notebooks of the jobs ``tags`` as the signal ``signum`` would,
    and make those jobs that have not started yet end at once with its exit status."""
    _stopped.update(dict.fromkeys(tags, signum))
    stop_running(signum, tags)


def _executing_keys(dask_worker) -> list:
    """The keys of the tasks this worker is executing (not those waiting in its queue); run by ``client.run``."""
    return [key for key, task in dask_worker.state.tasks.items() if task.state == "executing"]


def _outcome(future, job: Job, seconds: float) -> JobOutcome:
    """The outcome of a finished future; a failed job (an exception, its worker lost) as exit status 1 with the
    reason as its log."""
    from distributed import CancelledError
    from distributed.scheduler import KilledWorker

    try:
        return future.result()
    except (KilledWorker, CancelledError) as err:  # its worker was lost; its futures are cancelled, then forgotten
        reason = (
            f"the Dask worker running {job.name} was lost (its process died, was killed or lost the scheduler) "
            f"before the job ended: {type(err).__name__}: {err}"
        )
    except Exception as err:  # noqa: BLE001 - whatever the job raised is its failure
        reason = f"the Dask job of {job.name} failed: {type(err).__name__}: {err}"
    print(reason, file=sys.stderr)
    return JobOutcome(job.name, 1, seconds, log=f"{reason}\n".encode())


def deliver(outcome: JobOutcome, out: Path, cache: Path) -> int:
    """Write ``outcome`` into the output folder ``out`` (run folder ``out/NAME``, ``executed/NAME.ipynb``,
    ``logs/NAME.log``, ``logs/NAME.rc`` last) and its trained models into ``cache``, each file atomically.
    Returns the exit status written (1 if a file could not be written: the reason ends the log)."""
    name, status, log = outcome.name, outcome.exit_status, outcome.log
    run_dir = out / name
    try:
        for relative, data in outcome.models.items():
            _write_bytes(cache / relative, data)
        if run_dir.is_dir():
            clear_earlier_run(run_dir)  # an earlier run's figures must not sit beside this run's
        moves = {f"{outcome.folder}/run": str(run_dir), f"{outcome.folder}/cache": str(cache)}
        for relative, data in outcome.run_files.items():
            if relative == "results.json":
                data = _relocated_results(data, moves, outcome)
            _write_bytes(run_dir / relative, data)
        if outcome.executed is not None:
            _write_bytes(out / "executed" / f"{name}.ipynb", outcome.executed)
    except (OSError, ValueError) as err:
        status = status or 1
        log += f"\nthe outputs of {name} could not be written on the client: {err}\n".encode()
    _write_bytes(out / "logs" / f"{name}.log", log)
    atomic_write_text(out / "logs" / f"{name}.rc", f"{status} {round(outcome.seconds)}\n")
    return status


def _write_bytes(path: Path, data: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def _relocated_results(data: bytes, moves: Mapping[str, str], outcome: JobOutcome) -> bytes:
    """A results.json with the worker's temporary paths (keys of ``moves``) replaced by the client's, and
    ``provenance.executed_on`` (host and folder of the worker)."""

    def relocate(value):
        if isinstance(value, dict):
            return {k: relocate(v) for k, v in value.items()}
        if isinstance(value, list):
            return [relocate(v) for v in value]
        if isinstance(value, str):
            for old, new in moves.items():
                if value == old or value.startswith(old + "/"):
                    return new + value[len(old) :]
        return value

    results = relocate(json.loads(data))
    if isinstance(results.get("provenance"), dict):
        results["provenance"]["executed_on"] = {"host": outcome.host, "worker_folder": outcome.folder}
    return (json.dumps(results, indent=2) + "\n").encode()


# ------------------------------------------------------------------------------------------ run_all.sh's entry
def papermill_parameters(arguments: Sequence[str]) -> dict:
    """The parameters of papermill command-line arguments as ``run_all.sh`` writes them: ``-p NAME VALUE`` (the
    value parsed as papermill's -p parses it) and ``-y YAML`` (a YAML mapping), later ones winning."""
    parameters, rest = {}, list(arguments)
    while rest:
        flag = rest.pop(0)
        if flag in ("-p", "--parameters") and len(rest) >= 2:
            name, raw = rest.pop(0), rest.pop(0)
            parameters[name] = papermill_value(raw)
        elif flag in ("-y", "--parameters_yaml") and rest:
            parameters.update(yaml.safe_load(rest.pop(0)))
        else:
            raise ValueError(f"unexpected papermill argument {flag!r} in {shlex.join(arguments)!r}")
    return parameters


def plan_jobs(plan: str, notebooks: Path, common: Sequence[str], given: Sequence[str]) -> list[Job]:
    """The jobs of a ``run_all.sh`` plan (a line ``NAME<TAB>papermill arguments`` per notebook): the notebook
    ``notebooks/NAME.ipynb`` with the ``common`` arguments, then its own."""
    jobs = []
    for line in filter(None, plan.splitlines()):
        name, _, arguments = line.partition("\t")
        parameters = papermill_parameters([*common, *shlex.split(arguments)])
        jobs.append(Job(name, (notebooks / f"{name}.ipynb").read_bytes(), parameters, tuple(given)))
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rhvae.experiments.sweep``: run ``run_all.sh``'s plan (stdin) on a Dask cluster. Exit status 0 when
    every job's outputs were written (failed or not: ``run_all.sh`` reads logs/NAME.rc), 2 when the address is bad or
    the cluster cannot be reached (nothing was run), 128 + the signal's number when stopped by one (130 Ctrl-C,
    143 SIGTERM, 129 SIGHUP)."""
    parser = argparse.ArgumentParser(prog="python -m rhvae.experiments.sweep", allow_abbrev=False)
    parser.add_argument("--dask", required=True, help=ADDRESS_HELP)
    parser.add_argument("--check", action="store_true", help="only check the address")
    parser.add_argument("--out", type=Path, help="the run_all.sh output folder")
    parser.add_argument("--notebooks", type=Path, help="the folder of the notebooks")
    parser.add_argument("common", nargs=argparse.REMAINDER, help="-- papermill arguments of every notebook")
    args = parser.parse_args(argv)
    try:
        local_workers(args.dask)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    if args.check:  # the address's form, and, for a scheduler address, that something listens there
        try:
            probe(args.dask)
        except SchedulerUnreachable as err:
            print(err, file=sys.stderr)
            return 2
        return 0
    common = args.common[1:] if args.common[:1] == ["--"] else args.common
    given = [name for name in os.environ.get(GIVEN_ENV, "").split(",") if name]
    jobs = plan_jobs(sys.stdin.read(), args.notebooks, common, given)
    signals.stop_with_parent()  # run_all.sh killed by SIGKILL: the jobs are cancelled as on SIGTERM
    try:
        with signals.stop_signals_as_interrupts():  # while the cluster starts; run_sweep then takes them over
            run_sweep(jobs, args.out, args.dask)
    except SchedulerUnreachable as err:
        print(" ".join(str(err).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        status = signals.exit_status(err)
        print(f"{signals.signal_word(status).lower()}: the jobs were cancelled", file=sys.stderr)
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
