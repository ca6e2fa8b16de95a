"""Does RHVAE train without diverging at given settings? Seeds × step sizes, one line per run, and a JSON.

Usage: python benchmarks/stability.py --experiment generation_5 --epochs 200 --eps 0.1 0.01 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import rhvae
from rhvae.training import TrainingDiverged, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="generation_5", choices=tuple(rhvae.EXPERIMENTS))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.01])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--objective", default="elbo", choices=("elbo", "authors"))
    parser.add_argument("--step-bound", default="stability", choices=("stability", "none"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    data = rhvae.experiment_data(args.experiment)
    results = []
    for eps in args.eps:
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = rhvae.RHVAE(
                eps_lf=eps, temperature=args.temperature, objective=args.objective, step_bound=args.step_bound
            )
            start = time.perf_counter()
            try:
                history = train(
                    model,
                    data.train.x,
                    data.test.x,
                    epochs=args.epochs,
                    seed=seed,
                    threads=args.threads,
                    progress=False,
                )
                status, epoch = "finished", args.epochs
            except TrainingDiverged as err:
                history, status, epoch = err.history, "diverged", err.epoch
            record = {
                "eps_lf": eps,
                "seed": seed,
                "status": status,
                "epoch": epoch,
                "last_train_loss": history.train_loss[-1] if history.epochs else None,
                "last_test_loss": history.test_loss[-1] if history.epochs else None,
                "max_train_loss": max(history.train_loss) if history.epochs else None,
                "max_fixed_point_residual": max((r.fixed_point_residual for r in history.epochs), default=None),
                "seconds": time.perf_counter() - start,
                "final_step_size": history.epochs[-1].step_size if history.epochs else None,
                "final_kappa": float(model.metric().max_eigenvalue()) if model.has_frozen_metric else None,
                "train_loss_curve": history.train_loss,
            }
            results.append(record)
            print(
                f"eps_lf={eps:<6} seed={seed} {status:9s} epoch={epoch:4d} "
                f"last train loss={record['last_train_loss']} test={record['last_test_loss']} "
                f"max residual={record['max_fixed_point_residual']} step={record['final_step_size']} "
                f"kappa={record['final_kappa']} ({record['seconds']:.0f} s)",
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
