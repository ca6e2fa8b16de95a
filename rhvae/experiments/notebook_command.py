"""How an experiment notebook is executed headless, in one place: the check of ``run_all.sh``'s ``-p`` parameters
(the plan), the papermill command, and running it with its log and exit status.

``run_all.sh`` is a thin wrapper around this module: ``python -m rhvae.experiments.notebook_command plan …``
checks every ``-p NAME VALUE`` before anything runs and prints one line ``NAME<TAB>papermill arguments`` per
notebook; ``python -m rhvae.experiments.notebook_command run … NAME`` executes one notebook into the output folder
(``executed/NAME.ipynb``, ``logs/NAME.log``, ``logs/NAME.rc``). The Dask sweep (``rhvae.experiments.sweep``) runs
the same command on its workers.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import papermill
import yaml
from papermill.cli import _resolve_type

from rhvae import signals
from rhvae.experiments.data import DataError, class_counts
from rhvae.experiments.parameters import check_parameter
from rhvae.experiments.registry import PARAMETERS, REGISTRY
from rhvae.experiments.runs import resolve_path
from rhvae.files import WriteError, atomic_write_text, writable_folder, write_error
from rhvae.paths import ROOT

#: The notebooks' folder and the kernel they run on (saved with kernelspec ``python3``).
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "python3"
#: Parameters that ``run_all.sh`` sets itself, with the option to use instead.
MANAGED = {
    "interactive": "always False in batch runs",
    "output_dir": "set per notebook (use --out)",
    "quick": "use --quick",
    "reuse_cache": "use --train",
}
#: How long an interrupted papermill may take to stop its kernel before it is killed.
STOP_SECONDS = 30
#: What jupyter_client says when a notebook's kernel never answered at start-up, before any cell ran. Seen when
#: another process took a TCP port of the kernel's connection file between jupyter_client choosing it and the kernel
#: binding it (``ZMQError: Address already in use``; Dask's own connections use such ports). ``execute`` then runs
#: the notebook once more.
KERNEL_NOT_STARTED = (b"Kernel didn't respond in", b"Kernel died before replying to kernel_info")


def papermill_command(source: str | os.PathLike, executed: str | os.PathLike, arguments: Sequence[str]) -> list[str]:
    """The command that executes the notebook ``source`` into ``executed`` with the papermill ``arguments``
    (``-p NAME VALUE``, ``-y YAML``, ``-f FILE``), cell outputs in its log."""
    return [sys.executable, "-m", "papermill", "-k", KERNEL, "--log-output", str(source), str(executed), *arguments]


def execute(command: Sequence[str], log: Path, echo: bool = False, cwd=None, env=None, key: str = "") -> int:
    """Run ``command`` with its output written to ``log`` (and, with ``echo``, to stdout as it comes); its exit
    status, or 128 + the signal's number after Ctrl-C (130), SIGTERM (143) or SIGHUP (129): the child, which starts
    with the default SIGINT even when this process was started in the background, is sent SIGINT (papermill's
    clean stop, which also stops its kernel) and waited for (killed after ``STOP_SECONDS``). A notebook
    whose kernel did not start (``KERNEL_NOT_STARTED`` in its output, exit status 1) is run once more, with a line
    saying so in the log. ``stop_running(signum, [key])`` stops it from another thread as the signal would."""
    with open(log, "wb") as log_file:
        status, kernel_not_started = _execute_once(command, log_file, echo, cwd, env, key)
        if status == 1 and kernel_not_started:
            _write_line(
                b"=== the notebook's kernel did not start (above): running the notebook once more\n", log_file, echo
            )
            status, _ = _execute_once(command, log_file, echo, cwd, env, key)
    return status


#: The stop functions of the notebooks this process is running, by the ``key`` given to ``execute``.
_running: dict[str, Callable[[int], None]] = {}


def stop_running(signum: int, keys) -> None:
    """Stop the notebooks this process runs under one of ``keys`` as the signal ``signum`` would (``execute`` then
    returns 128 + signum): how a Dask worker, which runs jobs in a thread where no signal handler can be set, is
    told to stop a sweep's jobs."""
    for key in keys:
        if key in _running:
            _running[key](signum)


def _execute_once(command: Sequence[str], log_file, echo: bool, cwd, env, key: str) -> tuple[int, bool]:
    """One run of ``execute``: its exit status, and whether its output says the kernel did not start."""
    received: list[int] = []
    kernel_not_started = False
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env, preexec_fn=_child_setup
    )

    def stop(signum, frame=None):  # whenever one arrives: stop the child (once), report the run as stopped by it
        received.append(signum)
        if len(received) == 1 and child.poll() is None:
            child.send_signal(signal.SIGINT)

    key = key or f"pid {child.pid}"
    _running[key] = stop
    try:
        with signals.handlers(stop):
            for line in child.stdout:
                try:
                    _write_line(line, log_file, echo)
                except OSError:  # a full disk: papermill could not write its notebook either
                    child.terminate()
                    child.wait()
                    raise
                kernel_not_started = kernel_not_started or any(message in line for message in KERNEL_NOT_STARTED)
            try:
                status = child.wait(timeout=STOP_SECONDS if received else None)
            except subprocess.TimeoutExpired:
                child.kill()
                status = child.wait()
    finally:
        del _running[key]
    if received:
        return 128 + received[0], kernel_not_started
    return (128 - status if status < 0 else status), kernel_not_started  # killed by signal n: 128 + n, as a shell


def _write_line(line: bytes, log_file, echo: bool) -> None:
    log_file.write(line)
    if echo:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


def _child_setup() -> None:
    """In the child, before papermill starts: the default dispositions of SIGINT, SIGTERM and SIGHUP (a process
    started with ``&`` inherits SIGINT ignored, a worker of our LocalCluster all three), and on Linux SIGTERM when
    this process dies (a killed Dask worker or runner leaves no papermill
    behind; the kernel exits with its parent, ipykernel watches it)."""
    for signum in (signal.SIGINT, *signals.STOP_SIGNALS):
        signal.signal(signum, signal.SIG_DFL)
    signals.stop_with_parent()


# ------------------------------------------------------------------------------------------------- the plan
def papermill_value(raw: str):
    """A ``-p`` value as papermill's command line parses it (its private ``_resolve_type``, imported here only)."""
    return _resolve_type(raw)


def value_of(raw: str):
    """papermill's ``-p`` parsing, and a YAML list for a value that starts with '[' (e.g. seeds "[0, 1]")."""
    if raw.lstrip().startswith("["):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
    return papermill_value(raw)


def arguments(name: str, raw: str) -> list[str]:
    """The papermill arguments that pass ``-p name raw`` (a list as one-line YAML, which papermill's -p cannot)."""
    value = value_of(raw)
    flow = yaml.safe_dump({name: value}, default_flow_style=True).strip()  # one line: "{seeds: [1, 2]}"
    return ["-y", flow] if isinstance(value, list) else ["-p", name, raw]


def _defaults(inspected: Mapping[str, Mapping]) -> dict:
    """The default values of a parameters cell (``papermill.inspect_notebook``): name → value (the source text
    where it is not a literal)."""
    values = {}
    for name, parameter in inspected.items():
        try:
            values[name] = ast.literal_eval(parameter["default"])
        except (ValueError, SyntaxError):
            values[name] = parameter["default"]
    return values


def plan(names: Sequence[str], pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Each notebook's papermill arguments for the ``-p NAME VALUE`` ``pairs``: a name goes to the notebooks that
    declare it. ``ValueError`` listing every problem (a managed name, a name no notebook declares, a value out of
    its range) before anything runs: papermill itself only warns about an unknown name."""
    declared = {nb: _defaults(papermill.inspect_notebook(str(NOTEBOOKS / f"{nb}.ipynb"))) for nb in names}
    errors = []
    for name, raw in pairs:
        if name in MANAGED:
            errors.append(f"parameter '{name}' is managed by run_all.sh: {MANAGED[name]}")
            continue
        having = [nb for nb in names if name in declared[nb]]
        if not having:
            errors.append(f"unknown parameter '{name}': not in the parameters cell of {', '.join(names)}")
            continue
        for nb in having:
            spec = PARAMETERS[nb].get(name)
            if spec is not None:
                try:
                    value = check_parameter(name, value_of(raw), spec)
                    if name == "cache_dir" and value is not None:  # a model that cannot be saved would be lost
                        writable_folder(resolve_path(value), "cache_dir")
                except ValueError as err:
                    errors.append(f"{nb}: {err}")
                    break
    if not errors:  # every value in range: can the data serve them?
        for nb in names:
            given = {name: value_of(raw) for name, raw in pairs if name in declared[nb]}
            problem = data_problem(nb, {**declared[nb], **given})
            if problem:
                errors.append(f"{nb}: {problem}")
    if errors:
        raise ValueError("\n".join(errors))
    for nb in names:  # an analysis judges the analysed experiments' default models: say what it does not get
        analysed = [e for e in REGISTRY[nb].analyses if e in declared]
        skipped = sorted({n for n, _ in pairs if n not in declared[nb] and any(n in declared[e] for e in analysed)})
        if skipped:
            print(
                f"note: {nb} judges the models of {', '.join(REGISTRY[nb].analyses)} with their default settings: "
                f"-p {', '.join(skipped)} does not reach it (it has no such parameter)",
                file=sys.stderr,
            )
    return {nb: [a for name, raw in pairs if name in declared[nb] for a in arguments(name, raw)] for nb in names}


def data_problem(name: str, values: Mapping) -> str | None:
    """What the data cannot serve among the notebook's ``values`` (its parameters: data_source, sizes …), as one
    line, or None: a source that is not on disk, more images per class than a class has in the subset's pool
    (``rhvae.experiments.data.class_counts``). An analysis is checked on the subsets of the experiments it analyses.
    Counts only: nothing is drawn or trained."""
    source = values["data_source"]
    try:
        for experiment in REGISTRY[name].analyses or (name,):
            subset = REGISTRY[experiment].subset
            counts = class_counts(source, subset.pool)
            scarcest = min(subset.classes, key=lambda c: counts[c])
            wanted = list(values["sizes"]) if "sizes" in values else [subset.n_per_class]
            too_many = [n for n in wanted if n > counts[scarcest]]
            if too_many:
                parameter = "sizes" if "sizes" in values else "data_source"
                return (
                    f"{parameter}: {too_many[0]} images per class is more than the {counts[scarcest]} images of class "
                    f"{scarcest} in the {subset.pool!r} pool of data_source {source!r}; use at most {counts[scarcest]}"
                )
    except DataError as err:
        return f"data_source {source!r}: {err}"
    return None


# --------------------------------------------------------------------------------------------- one notebook
def run_notebook(name: str, out: Path, common: Sequence[str], own: Sequence[str], echo: bool = False) -> int:
    """Execute ``notebooks/NAME.ipynb`` into the output folder ``out`` of ``run_all.sh`` with the ``common`` then
    its ``own`` papermill arguments, its run folder ``out/NAME``; write ``logs/NAME.log`` and ``logs/NAME.rc``
    ("EXIT_STATUS SECONDS"). Returns the exit status."""
    executed = out / "executed" / f"{name}.ipynb"
    partial = executed.with_name(f".{name}.ipynb.partial")  # renamed when papermill has written it whole
    arguments = [*common, "-p", "output_dir", str(out / name), *own]
    command = papermill_command(NOTEBOOKS / f"{name}.ipynb", partial, arguments)
    log = out / "logs" / f"{name}.log"
    start = time.perf_counter()
    try:
        for folder in (executed.parent, log.parent):
            folder.mkdir(parents=True, exist_ok=True)
        status = execute(command, log, echo=echo)
    except OSError as err:  # the log cannot be written (a full disk): papermill was stopped
        print(f"run_all.sh: notebook {name!r}: {write_error(log, err)}", file=sys.stderr)
        status = 1
    if partial.is_file():
        if _is_json(partial):
            os.replace(partial, executed)
        else:  # cut short (a full disk, a kill): never left as the executed notebook; it would only hold the space
            partial.unlink()
            status = status or 1
    try:
        atomic_write_text(out / "logs" / f"{name}.rc", f"{status} {round(time.perf_counter() - start)}\n")
    except WriteError as err:  # run_all.sh reports a notebook without its .rc as FAILED
        print(f"run_all.sh: notebook {name!r}: {err}", file=sys.stderr)
        status = status or 1
    return status


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``plan NOTEBOOK … [-p NAME VALUE …]``: print the plan (exit 2 with the problems on stderr);
    ``run --out DIR [--echo] [--own=ARGS] NAME -- COMMON``: execute one notebook (exit: papermill's status)."""
    parser = argparse.ArgumentParser(prog="python -m rhvae.experiments.notebook_command", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("notebooks", nargs="+")
    p.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    r = sub.add_parser("run")
    r.add_argument("name")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--echo", action="store_true", help="also show the cell outputs on stdout")
    r.add_argument("--own", default="", help="the notebook's own papermill arguments, as one shell-quoted string")
    r.add_argument("common", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when run_all.sh started this with &
    signals.stop_with_parent()  # run_all.sh killed by SIGKILL: this runner stops its notebook as on SIGTERM
    with signals.stop_signals_as_interrupts():
        try:
            return _command(args)
        except KeyboardInterrupt as err:  # between two notebook runs, or while planning: nothing half-written
            return signals.exit_status(err)


def _command(args) -> int:
    if args.command == "plan":
        try:
            planned = plan(args.notebooks, [tuple(pair) for pair in args.p])
        except ValueError as err:
            print(err, file=sys.stderr)
            return 2
        print("\n".join(f"{nb}\t{shlex.join(own)}" for nb, own in planned.items()))
        return 0
    common = args.common[1:] if args.common[:1] == ["--"] else args.common
    return run_notebook(args.name, args.out, common, shlex.split(args.own), echo=args.echo)


if __name__ == "__main__":
    sys.exit(main())
