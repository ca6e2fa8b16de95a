"""The paper's numbers for one experiment over seeds: train (or reuse cached) models, evaluate them on the test
split, print a table of mean ± std over seeds, and write a JSON.

Usage: python benchmarks/paper_numbers.py --experiment reconstruction --seeds 0 1 2 [--epochs 500] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rhvae.experiments import MODEL_CONFIGS, PAPER_SETTINGS, evaluate_model, train_experiment_model
from rhvae.training import TrainingDiverged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="reconstruction", choices=tuple(PAPER_SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the paper's")
    parser.add_argument("--models", nargs="+", default=None, help="default: the experiment's")
    parser.add_argument("--ll-samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    settings = PAPER_SETTINGS[args.experiment]
    epochs = args.epochs or settings["epochs"]
    rows = []
    for name in args.models or settings["models"]:
        config = dict(MODEL_CONFIGS[name])
        if name == "rhvae" and "temperature" in settings:
            config["temperature"] = settings["temperature"]
        for seed in args.seeds:
            start = time.perf_counter()
            try:
                run = train_experiment_model(
                    args.experiment, name, epochs=epochs, seed=seed, threads=args.threads, progress=False, **config
                )
            except TrainingDiverged as err:
                rows.append({"model": name, "seed": seed, "status": str(err)})
                print(f"{name} seed {seed}: DIVERGED {err}", flush=True)
                continue
            numbers, _ = evaluate_model(
                run.model,
                run.data,
                ll_samples=args.ll_samples,
                n_samples=settings.get("n_samples", 100),
                mcmc_steps=settings.get("mcmc_steps", 90),
                seed=seed,
            )
            numbers.update(
                model=name,
                seed=seed,
                status="finished",
                reused=run.reused,
                train_seconds=run.provenance.get("train_seconds"),
                seconds=time.perf_counter() - start,
            )
            rows.append(numbers)
            q = numbers["generation"]["quality"]
            print(
                f"{name:5s} seed {seed}: log p(x) {numbers['log_likelihood']['mean']:8.2f}  "
                f"ELBO {numbers['elbo']['mean']:8.2f}  BCE {numbers['reconstruction']['bce']:7.2f}  "
                f"MSE {numbers['reconstruction']['mse']:.4f}  confidence {q['mean_confidence']:.3f}  "
                f"coverage {q['coverage']:.2f}  ({numbers['seconds']:.0f} s, reused={run.reused})",
                flush=True,
            )
    print(f"\n{args.experiment}: mean ± std over seeds {args.seeds} (test split, S={args.ll_samples})")
    for name in args.models or settings["models"]:
        done = [r for r in rows if r["model"] == name and r["status"] == "finished"]
        if not done:
            print(f"{name:5s} no finished run")
            continue

        def stat(get, rows=done):
            values = np.array([get(r) for r in rows])
            return f"{values.mean():8.2f} ± {values.std():5.2f}"

        print(
            f"{name:5s} log p(x) {stat(lambda r: r['log_likelihood']['mean'])}  "
            f"BCE {stat(lambda r: r['reconstruction']['bce'])}  "
            f"confidence {stat(lambda r: r['generation']['quality']['mean_confidence'])}  "
            f"({len(done)}/{len(args.seeds)} finished)"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
