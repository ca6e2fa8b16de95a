"""Numbers of the notebooks as tables: summaries of a metric, evaluation tables, numbers over seeds (mean and
sample standard deviation with the per-seed values) and their comparison, and a plain-text table printer."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch

from rhvae.evaluation.diagnostics import flow_diagnostics
from rhvae.evaluation.geometry import latent_grid, metric_magnitude
from rhvae.evaluation.likelihood import elbo, log_likelihood_table, reconstruction_error
from rhvae.experiments.data import ExperimentData, check_data
from rhvae.experiments.quality import coverage_threshold, generation_score, quality_score
from rhvae.models import HVAE, RHVAE, VAE, check_model, check_models, check_models_by_seed
from rhvae.models.metric import LearnedMetric
from rhvae.sampling.hmc import DEFAULT_MCMC_STEPS, DEFAULT_N_SAMPLES, check_work, generate
from rhvae.validation import as_array_tensor, check


# ------------------------------------------------------------------------------------ numbers and figures
def metric_summary(metric: LearnedMetric, codes, grid_n: int = 80) -> dict:
    """Numbers behind a metric picture, on the grid around ``codes``: the floor (d/2) log λ of
    log √det G⁻¹ far from the data, its mean at the codes, its mean over the grid box's border, ``codes_minus_far``
    (the mean at the codes minus the larger of the floor and the border mean: 0 for a metric collapsed to λI; not the
    flow diagnostics' ``contrast``, which is measured against the floor alone), ``high_fraction``, the share of the box
    where it is above half-way between the floor and its maximum, and ``kappa``, the largest eigenvalue of G⁻¹ at the
    centroids."""

    if not isinstance(metric, LearnedMetric):
        raise TypeError(f"metric must be a LearnedMetric (model.metric()), got {type(metric).__name__}")
    codes = as_array_tensor(codes, "codes").to(metric.centroids.dtype)
    if codes.ndim != 2 or codes.shape[1] != metric.dim or not len(codes) or not torch.isfinite(codes).all():
        raise ValueError(f"codes must be finite latent points (n >= 1, {metric.dim}), got shape {tuple(codes.shape)}")
    grid = latent_grid(codes, n=grid_n)
    values = metric_magnitude(metric, grid)
    values = values if values.ndim == 2 else grid.reshape(values)
    floor = 0.5 * metric.dim * math.log(metric.regularization)
    border = torch.cat([values[0], values[-1], values[:, 0], values[:, -1]])
    peak = float(values.max())
    at_codes = float(metric.log_sqrt_det_G_inv(codes).mean())
    return {
        "temperature": metric.temperature,
        "floor": floor,
        "max": peak,
        "mean_at_codes": at_codes,
        "mean_on_border": float(border.mean()),
        "codes_minus_far": at_codes - max(floor, float(border.mean())),
        "kappa": float(metric.max_eigenvalue()),
        "high_fraction": float((values > floor + 0.5 * (peak - floor)).double().mean()),
        "grid_box": list(grid.extent),
    }


def evaluation_table(models: Mapping[str, VAE], x_test: torch.Tensor, ll_samples: int, seed: int = 0) -> dict:
    """Per model: mean test reconstruction error (BCE summed over pixels, MSE mean over pixels, BCE floor) and the
    log-likelihood of ``rhvae.evaluation.likelihood.log_likelihood_table``: the exact log p(x) (d = 2) as
    ``log_likelihood``, the importance-sampling estimate with S = ``ll_samples`` and its bias beside it."""

    check_models(models, allow_empty=True)  # a seed whose every model diverged has none
    table = {}
    for name, model in models.items():
        start = time.perf_counter()
        table[name] = {
            **reconstruction_error(model, x_test).summary(),
            **log_likelihood_table(model, x_test, n_samples=ll_samples, seed=seed),
            "n_test": len(x_test),
            "seconds": time.perf_counter() - start,
        }
    return table


def format_table(rows: Mapping[str, Mapping], columns: Mapping[str, str]) -> str:
    """A plain-text table: one row per key of ``rows``, ``columns`` maps a field to its header. A field that
    holds a number over seeds (a dict from ``over_seeds``) is shown as mean ± std."""
    header = ["model"] + list(columns.values())
    body = []
    for name, row in rows.items():
        cells = [name]
        for key in columns:
            v = row.get(key)
            if isinstance(v, Mapping) and "mean" in v:  # a number over seeds (``over_seeds``)
                cells.append(f"{v['mean']:.4g}" + ("" if v["std"] is None else f" ± {v['std']:.2g}"))
            else:
                cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ numbers over seeds
def check_models_over_subsets(models, data) -> None:
    """The inputs of the analyses over seeds (``interpolations_over_seeds``, ``clustering_over_seeds``): ``models``
    a non-empty dict of subset → seed → (name → model), and ``data`` a dict holding the ``ExperimentData`` of every
    subset of ``models``; a ``TypeError`` or ``ValueError`` naming what is wrong otherwise."""
    if not isinstance(models, Mapping) or not isinstance(data, Mapping):
        wrong, value = ("models", models) if not isinstance(models, Mapping) else ("data", data)
        raise TypeError(f"{wrong} must be a dict by subset name, got {type(value).__name__}")
    if not models:
        raise ValueError("models must hold at least one subset")
    for subset, by_seed in models.items():
        if subset not in data:
            raise ValueError(f"data has no subset {subset!r} (it has {sorted(map(str, data))})")
        check_data(data[subset], f"data[{subset!r}]")
        check_models_by_seed(by_seed, f"models[{subset!r}]")


def over_seeds(per_seed: Mapping[int, Mapping[str, Mapping]], keys) -> dict:
    """Mean and sample standard deviation over seeds of the numbers ``keys`` of every row.

    ``per_seed`` is ``{seed: {row: {key: number}}}`` (a row is a model, say); the result is
    ``{row: {key: {"mean", "std", "values": {seed: number}}}}`` over the seeds that have the row, with ``std``
    None for a single seed and None-valued numbers (e.g. an undefined entropy) left out."""
    rows: dict[str, dict] = {}
    for seed, table in per_seed.items():
        for row, numbers in table.items():
            for key in keys:
                value = numbers.get(key)
                if value is not None:
                    rows.setdefault(row, {}).setdefault(key, {})[seed] = float(value)
    summary = {}
    for row, by_key in rows.items():
        summary[row] = {}
        for key, values in by_key.items():
            v = torch.tensor(list(values.values()), dtype=torch.float64)
            std = float(v.std()) if len(v) > 1 else None
            summary[row][key] = {"mean": float(v.mean()), "std": std, "values": values}
    return summary


def compare_over_seeds(
    per_seed: Mapping[int, Mapping[str, Mapping]], key: str, row: str, other: str, higher: bool = True
) -> tuple[bool, str]:
    """Is ``row`` at least as good as ``other`` on ``key`` (higher or lower is better), on the mean over the seeds
    that have both? Returns (answer, "k/n seeds") where k counts the seeds in which it also holds."""
    pairs = [
        (table[row][key], table[other][key])
        for table in per_seed.values()
        if row in table and other in table and table[row].get(key) is not None and table[other].get(key) is not None
    ]
    if not pairs:
        return False, "0/0 seeds"
    sign = 1.0 if higher else -1.0
    wins = sum(sign * (a - b) >= 0 for a, b in pairs)
    mean_diff = sum(sign * (a - b) for a, b in pairs) / len(pairs)
    return mean_diff >= 0, f"{wins}/{len(pairs)} seeds"


def evaluate_model(
    model: VAE,
    data: ExperimentData,
    ll_samples: int = 1000,
    n_samples: int = DEFAULT_N_SAMPLES,
    mcmc_steps: int = DEFAULT_MCMC_STEPS,
    seed: int = 0,
) -> tuple[dict, torch.Tensor]:
    """The paper's numbers for one trained model on its test split: log-likelihood (exact for d = 2, with the
    importance-sampling estimate with ``ll_samples`` draws through the flow and its bias beside it, see
    ``rhvae.evaluation.likelihood.log_likelihood_table``), true ELBO, reconstruction error, ``n_samples`` images
    generated by the model's own sampler with their quality score, classifier FID and precision/recall against
    held-out real digits of the same classes (``rhvae.experiments.quality.generation_score``) and, for an
    HVAE/RHVAE, the flow diagnostics (``rhvae.evaluation.diagnostics``). Returns (JSON-ready dict, generated
    images)."""

    check_model(model)
    x = check_data(data).test.x
    if isinstance(model, RHVAE):  # refused now, not after the log-likelihood's half minute
        check_work(check("n_samples", n_samples), check("mcmc_steps", mcmc_steps))
    ll = log_likelihood_table(model, x, n_samples=ll_samples, seed=seed)
    bound = elbo(model, x, n_samples=min(ll_samples, 100), seed=seed + 1)
    recon = reconstruction_error(model, x)
    generated = generate(model, n_samples, mcmc_steps, seed)
    results = {
        "model_type": model.model_type,
        "n_test": len(x),
        "log_likelihood": ll,
        "elbo": {"mean": float(bound.mean()), "std": float(bound.std())},
        "reconstruction": recon.summary(),
        "generation": {**generated.info, "quality": generation_score(generated.images, data.classes)},
        "diagnostics": flow_diagnostics(model, x, seed=seed).to_dict() if isinstance(model, HVAE) else None,
    }
    return results, generated.images


def class_shares(models: Mapping[int, Mapping[str, VAE]], name: str, classes, n_samples: int, mcmc_steps: int) -> dict:
    """Per seed, the quality classifier's share of each of ``classes`` among ``n_samples`` samples of
    ``models[seed][name]`` (the notebook's sampler and steps): with many samples, a class the sampler misses is
    told apart from one that a small sample under-counts."""
    shares = {}
    for seed, by_name in check_models_by_seed(models).items():
        if name in by_name:
            images = generate(by_name[name], n_samples, mcmc_steps, seed).images
            shares[seed] = [quality_score(images, classes)["shares"][c] for c in classes]
    return shares


def coverage_explanation(shares: Mapping[int, list], classes, n_samples: int, n_checked: int) -> str:
    """In words, from ``class_shares``: which classes fall below the coverage check's threshold share with
    ``n_samples`` samples per seed (the check itself counts ``n_checked``; ``quality.coverage_threshold``)."""
    threshold = coverage_threshold(len(classes))
    parts = []
    for seed, values in shares.items():
        listed = ", ".join(f"{c}: {s:.3f}" for c, s in zip(classes, values, strict=True))
        low = [str(c) for c, s in zip(classes, values, strict=True) if s < threshold]
        verdict = f"below {threshold:.3f}: class {', '.join(low)}" if low else f"every class at least {threshold:.3f}"
        parts.append(f"seed {seed}: {listed} (min {min(values):.3f}; {verdict})")
    never = sorted({str(c) for values in shares.values() for c, s in zip(classes, values, strict=True) if s == 0})
    reading = (
        f"class {', '.join(never)} is never sampled in some seed"
        if never
        else "every class is visited, but the sampler's target √det G⁻¹ weights the classes unevenly: a class whose "
        f"share is near {threshold:.3f} can fall below it in {n_checked} samples by chance, one below it stays below"
    )
    return (
        f"Each class's share of {n_samples} samples per seed (the check counts {n_checked}): "
        + "; ".join(parts)
        + (f". Reading: {reading}.")
    )
