"""The issue-10 ablation table from ``benchmarks/ablation.py``'s JSON lines, with the default's criteria per seed.

Criteria (each seed of each target): trains to the end; median displacement ≥ 1 posterior σ; flow gain ≥ 1 nat
and ≥ the HVAE's on the same subset and seed; metric contrast ≥ 0.5 at the codes. With ``--exact``, the exact
test log p(x) of every saved model is added (``rhvae.evaluation.likelihood.exact_log_likelihood``; slow: ~30 s a model).

Usage: python benchmarks/ablation_table.py figures/ablation/*.jsonl [--exact] [--markdown OUT]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

MIN_DISPLACEMENT, MIN_GAIN, MIN_CONTRAST = 1.0, 1.0, 0.5


def load(paths: list[str]) -> list[dict]:
    records = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            records[(r["scheme"], r["target"], r["seed"])] = r  # a later file wins
    return list(records.values())


def add_exact(records: list[dict]) -> None:
    import rhvae
    from rhvae.evaluation.likelihood import exact_log_likelihood
    from rhvae.persistence import load_model

    for r in records:
        if r.get("model_file") and "exact_log_px" not in r:
            model = load_model(r["model_file"])
            data = rhvae.experiment_data(r["config"].get("experiment", _experiment(r["target"])))
            r["exact_log_px"] = float(exact_log_likelihood(model, data.test.x).log_px.mean())


def _experiment(target: str) -> str:
    return {"metric_T0.6": "metric"}.get(target, target)


def criteria(r: dict, hvae_gain: float | None) -> list[str]:
    """The criteria this run fails (empty: it meets them all)."""
    if r["status"] != "finished":
        return [f"diverged (epoch {r['epoch']})"]
    failed = []
    if r["displacement"] < MIN_DISPLACEMENT:
        failed.append("flow does not move")
    if r["flow_gain"] < MIN_GAIN or (hvae_gain is not None and r["flow_gain"] < hvae_gain):
        failed.append("gain below 1 nat or the HVAE's")
    if r.get("contrast") is not None and r["contrast"] < MIN_CONTRAST:
        failed.append("metric flat")
    return failed


def _order(r: dict) -> tuple:
    """The order of ``benchmarks/ablation.py``'s schemes and targets."""
    from ablation import SCHEMES, TARGETS  # the sibling script (benchmarks/ is on sys.path when run)

    return list(SCHEMES).index(r["scheme"]), list(TARGETS).index(r["target"]), r["seed"]


def _span(values: list[float], fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    low, high = min(values), max(values)
    return format(low, fmt) if low == high else f"{format(low, fmt)} – {format(high, fmt)}"


def table(records: list[dict]) -> str:
    hvae = {(r["target"], r["seed"]): r["flow_gain"] for r in records if r["scheme"] == "hvae" and "flow_gain" in r}
    hvae.update({("metric_T0.6", s): g for (t, s), g in list(hvae.items()) if t == "reconstruction"})
    groups = defaultdict(list)
    for r in sorted(records, key=_order):
        groups[(r["scheme"], r["target"])].append(r)
    lines = [
        "| scheme | subset | trained | displacement (σ) | flow gain (nats) | contrast | κ | step | test ELBO | "
        "exact log p(x) | meets the criteria |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (scheme, target), runs in groups.items():
        runs.sort(key=lambda r: r["seed"])
        done = [r for r in runs if r["status"] == "finished"]
        met = [not criteria(r, None if scheme == "hvae" else hvae.get((target, r["seed"]))) for r in runs]
        failures = sorted({f for r in runs for f in criteria(r, hvae.get((target, r["seed"])))})
        verdict = f"{sum(met)}/{len(runs)}" + (f" ({'; '.join(failures)})" if failures else "")
        lines.append(
            f"| {scheme} | {target} | {len(done)}/{len(runs)} | "
            f"{_span([r['displacement'] for r in done], '.2f')} | {_span([r['flow_gain'] for r in done], '.1f')} | "
            f"{_span([r.get('contrast') for r in done], '.2f')} | {_span([r.get('kappa') for r in done], '.3g')} | "
            f"{_span([r['step'] for r in done], '.2g')} | {_span([r['test_elbo'] for r in done], '.1f')} | "
            f"{_span([r.get('exact_log_px') for r in done], '.1f')} | {verdict if scheme != 'hvae' else '—'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--exact", action="store_true", help="add the exact test log p(x) of every saved model")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()
    records = load(args.files)
    if args.exact:
        add_exact(records)
    text = table(records)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
