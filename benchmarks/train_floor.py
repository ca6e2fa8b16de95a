"""What `./run_all.sh --train` costs, stack by stack, against the dense-product floor of its own training.

Usage: python benchmarks/train_floor.py [--repeats 3] [--workers 2]

``--train`` retrains every shipped model. This script rebuilds each stack that run trains (the models of one
experiment, one kind and one config, side by side: ``rhvae.training.train_group``), from the shipped files and
their recorded provenance (subset, config, epochs, stack), on one thread as run_all gives each notebook, and times:

* **epoch**: one epoch as the trainer runs it (the Adam step over the full batch, the frozen metric of the RHVAE,
  the test loss of every member), from the shipped weights (the end of training: where the codes have spread);
* **floor**: the dense-product floor of that epoch (``benchmarks/speed.py``'s ``dense_floor``: the epoch's own
  matrix products of at least 1 MFLOP, replayed alone with the same shapes, strides, dtype and thread);
* **recorded**: the seconds per epoch recorded in the shipped histories by the run that trained them (on whatever
  machine and load that was).

Each stack's time is per epoch × its epochs, summed per notebook. The notebooks then run on ``--workers`` workers,
longest first (run_all's order), which gives the training part of ``--train``: its prediction from the measured
epoch and its floor. ``--compare-pytorch`` also times each epoch with the pure-PyTorch leapfrog nodes
(``RHVAE_NATIVE=0``), alternating with the compiled d = 2 kernels in the same process, and prints their ratio. The
flow diagnostics every 50 epochs and everything the notebooks do after training (the log-likelihoods, samplers,
classifiers) are not included, so the whole run takes longer than the prediction.
"""

from __future__ import annotations

import argparse
import heapq
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import alternate, dense_floor  # noqa: E402  (the sibling benchmark's floor)

from rhvae.experiments.model_cache import data_of  # noqa: E402
from rhvae.models import RHVAE, native  # noqa: E402
from rhvae.persistence import load_model  # noqa: E402
from rhvae.shipped import shipped_models  # noqa: E402
from rhvae.training import TrainingSettings, _train_epoch, adam, evaluate_member_losses  # noqa: E402


def shipped_stack_members(rows=None) -> dict[tuple, list]:
    """The stacks ``--train`` trains, from the shipped files (``rows`` of ``shipped_models()``, default all): key
    (experiment, model, n_train, config) → the members' (model, history, provenance), in stack order. Models shipped
    before stacks existed were trained one by one; they are grouped as ``--train`` trains them now."""
    stacks = defaultdict(list)
    for row in shipped_models() if rows is None else rows:
        model, history, provenance = load_model(row.path, with_history=True)
        settings = history.settings
        index = settings.get("trained_in_stack", {}).get("index", settings["seed"])
        key = (row.experiment, row.model, settings["n_train"], repr(sorted(settings["model_config"].items())))
        stacks[key].append((index, model, history, provenance))
    return {key: [m[1:] for m in sorted(members, key=lambda m: m[0])] for key, members in stacks.items()}


def shipped_stacks() -> dict[tuple, list]:
    """``shipped_stack_members`` as this script times them: each member's (model, data, seed, epochs, recorded
    seconds per epoch of that member)."""
    stacks = {}
    for key, members in shipped_stack_members().items():
        stacks[key] = []
        for model, history, provenance in members:
            # a member of a stack records the group's epoch time / members; a model trained alone its own epoch time
            recorded = statistics.median(e.seconds for e in history.epochs)
            settings = history.settings
            stacks[key].append((model, data_of(provenance), settings["seed"], settings["epochs"], recorded))
    return stacks


def stack_epoch(members):
    """One epoch of the stack as ``rhvae.training._train_pinned`` runs it, as a function, from the shipped weights."""
    models = [m[0] for m in members]
    stack = type(models[0]).stack(models) if len(models) > 1 else models[0]
    x_trains = [m[1].train.x for m in members]
    x_train, x_test = torch.cat(x_trains), torch.cat([m[1].test.x for m in members])
    generators = [torch.Generator().manual_seed(m[2]) for m in members]
    generator = generators if stack.members is not None else generators[0]
    optimizer = adam(stack.parameters(), 1e-3)
    settings = TrainingSettings()
    state = {k: v.clone() for k, v in stack.state_dict().items()}

    def epoch():
        stack.load_state_dict(state)
        _train_epoch(stack, x_trains, optimizer, generators, generator, 1, settings)
        if isinstance(stack, RHVAE):
            stack.freeze_metric(x_train)
        evaluate_member_losses(stack, x_test, generator)

    return epoch


def with_nodes(implementation: str, fn):
    """``fn`` run with the compiled d = 2 kernels (``"compiled"``) or the pure-PyTorch nodes (``"pytorch"``)."""

    def run():
        before = os.environ.get(native.ENVIRONMENT_SWITCH)
        os.environ[native.ENVIRONMENT_SWITCH] = "1" if implementation == "compiled" else "0"
        try:
            fn()
        finally:  # the caller's setting back
            if before is None:
                os.environ.pop(native.ENVIRONMENT_SWITCH)
            else:
                os.environ[native.ENVIRONMENT_SWITCH] = before

    return run


def schedule(seconds: dict[str, float], workers: int) -> float:
    """The end time of ``seconds`` (one per notebook) run on ``workers`` workers, longest first."""
    ends = [0.0] * workers
    for length in sorted(seconds.values(), reverse=True):
        heapq.heappush(ends, heapq.heappop(ends) + length)
    return max(ends)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per stack (median)")
    parser.add_argument("--workers", type=int, default=2, help="notebooks run at once (run_all --jobs)")
    parser.add_argument(
        "--compare-pytorch", action="store_true", help="also time each epoch with the pure-PyTorch leapfrog nodes"
    )
    args = parser.parse_args()
    if args.compare_pytorch and native.kernels() is None:
        parser.error(
            "--compare-pytorch needs the compiled kernels (python -m rhvae kernels says why they are not used)"
        )
    torch.set_num_threads(1)  # run_all gives each of its notebooks one thread (--jobs 2 on 2 cores)
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, 1 thread")
    header = f"{'experiment':<21} {'model':<5} {'members':>7} {'rows':>5} {'epochs':>6}"
    header += f" {'epoch ms':>9} {'floor ms':>9} {'ratio':>6} {'recorded ms':>11} {'epoch min':>9} {'floor min':>9}"
    print(
        f"{header} {'GFLOP/s':>7}" + (f" {'pytorch ms':>10} {'pytorch / compiled':>18}" if args.compare_pytorch else "")
    )
    totals = {"epoch": defaultdict(float), "floor": defaultdict(float), "recorded": defaultdict(float)}
    if args.compare_pytorch:
        totals["pytorch"] = defaultdict(float)
    start = time.perf_counter()
    for (experiment, model, n_train, _), members in shipped_stacks().items():
        fn = stack_epoch(members)
        variants = {"epoch": fn}
        if args.compare_pytorch:
            variants = {"epoch": with_nodes("compiled", fn), "pytorch": with_nodes("pytorch", fn)}
        times = alternate(variants, args.repeats)
        epoch = times["epoch"]
        measured = dense_floor(fn, args.repeats)
        floor = measured["floor"]
        epochs, recorded = members[0][3], sum(m[4] for m in members)  # the stack's epoch as the members recorded it
        for name, value in (
            ("epoch", epoch),
            ("floor", floor),
            ("recorded", recorded),
            ("pytorch", times.get("pytorch")),
        ):
            if value is not None:
                totals[name][experiment] += value * epochs
        line = (
            f"{experiment:<21} {model:<5} {len(members):>7} {n_train:>5} {epochs:>6} {epoch * 1e3:>9.1f} "
            f"{floor * 1e3:>9.1f} {epoch / floor:>5.2f}x {recorded * 1e3:>11.1f} {epoch * epochs / 60:>9.1f} "
            f"{floor * epochs / 60:>9.1f} {measured['gflop'] / floor:>7.0f}"
        )
        if args.compare_pytorch:
            line += f" {times['pytorch'] * 1e3:>10.1f} {times['pytorch'] / epoch:>17.2f}x"
        print(line, flush=True)
    print("\ntraining per notebook, minutes (one thread): epoch-predicted / dense floor / recorded")
    for experiment in totals["epoch"]:
        print(
            f"  {experiment:<21} {totals['epoch'][experiment] / 60:6.1f} / {totals['floor'][experiment] / 60:6.1f} / "
            f"{totals['recorded'][experiment] / 60:6.1f}"
        )
    run = {name: schedule(per_notebook, args.workers) / 60 for name, per_notebook in totals.items()}
    print(
        f"\nthe training of --train on {args.workers} workers, longest first: {run['epoch']:.1f} min predicted from "
        f"the measured epochs, {run['floor']:.1f} min at the dense floor, {run['recorded']:.1f} min as recorded "
        f"(epoch / floor {run['epoch'] / run['floor']:.2f}x)"
    )
    if args.compare_pytorch:
        print(
            f"  with the pure-PyTorch leapfrog nodes: {run['pytorch']:.1f} min ({run['pytorch'] / run['epoch']:.2f}x)"
        )
    print(f"measured in {time.perf_counter() - start:.0f} s; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
