"""Does this machine retrain the shipped models bit for bit? The first epochs of each, against its shipped history.

Usage: python benchmarks/retrain_check.py [--epochs 20] [--experiment NAME ...] [--model KIND ...] [--default-adam]

Every shipped file holds its training history: per epoch the train and test loss, the largest latent norm and, for
the HVAE and RHVAE, the step size and the fixed-point residual. This script retrains the first ``--epochs`` epochs of
the shipped models as ``./run_all.sh --train`` trains them (the seeds of one experiment, kind and config side by
side as one stack, one thread, from the subset, seed and settings their provenance records) and prints, per model,
the first epoch whose record differs from the shipped one in any bit, or that every epoch is identical.

A model that retrains identically for its first epochs has been given the same initial weights, images, draws and
float rounding; one that differs from the first epoch on was trained by code or on a machine that rounds
differently (docs/reproducing.md says what was found: the package's Adam and the CPU). ``--default-adam`` trains
with torch's default Adam (the per-tensor loop) instead of the package's fused one, as the package did before
commit 5ae1698: the shipped VAEs and HVAEs were trained that way.

The augmentation experiment's 120 models (stacks of 30) are left out unless named with ``--experiment``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_floor import shipped_stack_members  # noqa: E402  (the stacks --train trains, from the shipped files)

import rhvae.training  # noqa: E402
from rhvae.experiments.model_cache import data_of, train_experiment_models  # noqa: E402
from rhvae.provenance import environment  # noqa: E402
from rhvae.shipped import shipped_models  # noqa: E402
from rhvae.training import TrainingDiverged  # noqa: E402

#: The fields of an epoch record compared bit for bit (the seconds and the flow diagnostics are not: the diagnostics
#: come every 50 epochs and at the last, which is another epoch in a shorter run).
COMPARED = ("train_loss", "test_loss", "max_latent_norm", "fixed_point_residual", "step_size")


def first_difference(mine, shipped) -> str | None:
    """The first epoch whose compared fields differ, as a line (field: retrained against shipped), or None."""
    for ours, theirs in zip(mine.epochs, shipped.epochs, strict=False):
        differing = [f for f in COMPARED if getattr(ours, f) != getattr(theirs, f)]
        if differing:
            f = differing[0]
            return f"epoch {ours.epoch}: {f} {getattr(ours, f)!r} against {getattr(theirs, f)!r} shipped"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs to retrain and compare (default 20)")
    parser.add_argument("--experiment", nargs="+", help="experiments (default: all but augmentation)")
    parser.add_argument("--model", nargs="+", help="model kinds, e.g. rhvae vae (default: all)")
    parser.add_argument("--default-adam", action="store_true", help="torch's default Adam, as before 5ae1698")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.default_adam:  # the package's trainer calls rhvae.training.adam: this script's run only
        rhvae.training.adam = lambda params, lr: torch.optim.Adam(params, lr=lr)
    rows = shipped_models()
    known = sorted({row.experiment for row in rows})
    experiments = args.experiment or [e for e in known if e != "augmentation"]
    unknown = sorted(set(experiments) - set(known))
    if unknown:
        parser.error(f"--experiment: no shipped models for {', '.join(unknown)} (shipped: {', '.join(known)})")
    kinds = sorted({row.model for row in rows})
    if args.model and not set(args.model) <= set(kinds):
        parser.error(f"--model: one of {', '.join(kinds)}, got {', '.join(args.model)}")
    here = environment()
    print(f"here: CPU {here['cpu']} ({here['cpu_capability']}), torch {here['torch']}, git {here['git_commit']}")
    print(f"Adam: {'torch default (per-tensor loop)' if args.default_adam else 'the package (fused)'}\n")
    identical = total = 0
    chosen = [row for row in rows if row.experiment in experiments and (not args.model or row.model in args.model)]
    for (experiment, model, _, _), members in sorted(shipped_stack_members(chosen).items()):
        settings = members[0][1].settings
        with tempfile.TemporaryDirectory() as cache:
            results = train_experiment_models(
                experiment,
                model,
                [(history.settings["seed"], data_of(provenance)) for _, history, provenance in members],
                epochs=args.epochs,
                lr=settings["lr"],
                batch_size=settings["batch_size"],
                threads=1,
                use_cache=False,
                cache_dir=cache,
                save=False,
                progress=False,
                **settings["model_config"],
            )
        for (_, shipped, provenance), result in zip(members, results, strict=True):
            env = provenance["environment"]
            trained = f"trained at {env.get('git_commit')} on {env.get('timestamp', '?')[:10]}"
            trained += f", CPU {env['cpu']}" if env.get("cpu") else ", CPU not recorded"
            if isinstance(result, TrainingDiverged):
                line = f"diverged: {result}"
            else:
                difference = first_difference(result.history, shipped)
                line = difference or f"identical for {args.epochs} epochs"
                identical += difference is None
            total += 1
            print(f"{experiment:22} {model:6} seed {shipped.settings['seed']}  {line}  ({trained})", flush=True)
    print(f"\n{identical} of {total} models retrain bit for bit over their first {args.epochs} epochs")


if __name__ == "__main__":
    main()
