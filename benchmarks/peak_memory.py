"""Wall time and peak memory of a whole command and all its child processes (e.g. ``./run_all.sh --train``).

Usage: python benchmarks/peak_memory.py [--interval 0.5] -- COMMAND [ARG ...]

Every ``--interval`` seconds it sums, over the command's process tree (papermill, the notebook kernels, their
workers), the proportional set size (PSS: shared pages divided among the processes that share them, from
``/proc/PID/smaps_rollup``) and the resident set size (RSS: shared pages counted in every process, an upper
bound). It prints the peak of both sums, the wall time and the command's exit status, which it returns. Linux
only (``/proc``); psutil (a dependency of ipykernel) walks the process tree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil


def tree_memory(root: psutil.Process) -> tuple[int, int]:
    """(Σ PSS, Σ RSS) in bytes over ``root`` and its descendants that are still alive."""
    pss = rss = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for process in processes:
        try:
            rss += process.memory_info().rss
            with open(f"/proc/{process.pid}/smaps_rollup") as rollup:
                pss += next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError, StopIteration, PermissionError):
            continue
    return pss, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between two samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    if not args.interval > 0:
        parser.error(f"--interval must be > 0 seconds, got {args.interval}")
    start = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak_pss = peak_rss = 0
    while child.poll() is None:
        pss, rss = tree_memory(root)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        time.sleep(args.interval)
    seconds = time.perf_counter() - start
    print(
        f"\npeak_memory: {' '.join(command)}\n  wall {seconds:.0f} s ({seconds / 60:.1f} min), exit status "
        f"{child.returncode}\n  peak memory of the process tree: {peak_pss / 2**20:.0f} MiB PSS "
        f"({peak_rss / 2**20:.0f} MiB RSS, which counts shared pages in every process)",
        flush=True,
    )
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
