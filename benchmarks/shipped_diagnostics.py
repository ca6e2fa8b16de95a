"""Do the shipped RHVAEs use both their flow and their metric? The criteria of every shipped RHVAE on its own test
split, and why a model misses the flow-gain criterion.

Usage: python benchmarks/shipped_diagnostics.py [--draws 100] [--json OUT.json]

For every RHVAE in ``data/models`` (``rhvae.shipped_models()``), on the test split it was trained beside (redrawn
from its recorded provenance) and, for comparison, on its training split: the flow diagnostics of
``rhvae.evaluation.diagnostics`` with ``--draws`` draws per image (more than the notebooks' 20, to shrink the
noise of the gain). Prints, per experiment (and training-set size), the ranges of displacement, flow gain and
contrast, how many models meet displacement ≥ 1 σ, flow gain ≥ 1 nat and contrast ≥ 0.5, how many miss the gain
by more than two standard errors (a real miss) or by less (the test split is too small to tell), and the mean
gain on the training images. One thread; about a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

import torch

import rhvae
from rhvae.evaluation.diagnostics import flow_diagnostics
from rhvae.experiments.model_cache import data_of
from rhvae.experiments.report import RHVAE_CRITERIA
from rhvae.persistence import load_model


def measure(draws: int) -> list[dict]:
    rows = []
    for shipped in rhvae.shipped_models():
        if shipped.model != "rhvae":
            continue
        model, _, provenance = load_model(shipped.path, with_history=True)
        data = data_of(provenance)
        test = flow_diagnostics(model, data.test.x, n_draws=draws, seed=shipped.seed)
        train = flow_diagnostics(model, data.train.x, n_draws=draws, seed=shipped.seed)
        rows.append(
            {
                "experiment": shipped.experiment,
                "group": shipped.experiment
                + ("" if shipped.experiment != "augmentation" else f" (n = {shipped.n_per_class})"),
                "file": shipped.path.name,
                "seed": shipped.seed,
                "temperature": shipped.temperature,
                "classes": list(shipped.classes),
                "n_test": len(data.test.x),
                "test": test.to_dict(),
                "train_gain": train.flow_gain,
                "train_gain_sem": train.flow_gain_sem,
            }
        )
    return rows


def verdict(d: dict) -> str:
    missed = [key for key, low in RHVAE_CRITERIA.items() if d[key] < low]
    if not missed:
        return "meets"
    if missed == ["flow_gain"] and d["flow_gain"] + 2 * d["flow_gain_sem"] >= RHVAE_CRITERIA["flow_gain"]:
        return "undecided"
    return "misses " + ", ".join(missed)


def span(values: list[dict], key: str) -> str:
    return f"{min(v[key] for v in values):.2f} to {max(v[key] for v in values):.2f}"


def summary(rows: list[dict]) -> str:
    groups = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    lines = [
        "| experiment | models | test images each | displacement (σ) | flow gain on test (nats) | contrast "
        "| meet all three | undecided | miss | mean gain on train (nats) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    misses = []
    for group, members in groups.items():
        tests = [m["test"] for m in members]
        verdicts = [verdict(t) for t in tests]
        lines.append(
            f"| {group} | {len(members)} | {members[0]['n_test']} | {span(tests, 'displacement')} "
            f"| {span(tests, 'flow_gain')} "
            f"| {span(tests, 'contrast')} | {verdicts.count('meets')} | {verdicts.count('undecided')} "
            f"| {sum(v.startswith('misses') for v in verdicts)} "
            f"| {statistics.mean(m['train_gain'] for m in members):+.2f} |"
        )
        misses += [
            f"- {group}, classes {m['classes']}, seed {m['seed']}: {v} (gain {m['test']['flow_gain']:+.2f} ± "
            f"{m['test']['flow_gain_sem']:.2f} on test, {m['train_gain']:+.2f} ± {m['train_gain_sem']:.2f} on train)"
            for m, v in zip(members, verdicts, strict=True)
            if v.startswith("misses")
        ]
    return "\n".join(lines + ["", "Models that miss a criterion by more than two standard errors:", *misses])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = measure(args.draws)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(summary(rows))


if __name__ == "__main__":
    main()
