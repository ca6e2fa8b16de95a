"""How cost grows with the number of training images / centroids N (issue 11, "How cost grows").

Usage: python benchmarks/scaling.py [--threads 2] [--out results/scaling] [--sizes 120 500 1000 5000 20000 60000]

For every N it times, in one process:

* one training epoch of the default RHVAE (``rhvae.experiments.model_cache.RHVAE_CONFIG``: n_lf 10, eps_lf 0.1, β₀ 0.3,
T 1,
  λ 0.1, stability-bounded step, 5 fixed-point iterations), full batch for N ≤ ``FULL_BATCH_MAX`` (the batch
  metric is N × N: O(N²) per leapfrog step) and with minibatches of ``BATCH`` images for every N. The minibatch
  epoch is measured for N ≤ 5,000; above, it is the 5,000-image epoch × N/5,000 (N/100 batches of the same size
  and one freeze pass over the N images: linear in N, which the measured sizes check);
* the exact log-likelihood (``rhvae.evaluation.likelihood.exact_log_likelihood``, d = 2) and the importance-sampling
estimate
  (``rhvae.evaluation.likelihood.log_likelihood``, S = ``IS_SAMPLES`` draws through the flow) per image, with the frozen
  metric of the N centroids; apart, κ = maxᵢ λmax G⁻¹(cᵢ), which the flow's stability-bounded step needs once per
  frozen metric (O(N²));
* the Riemannian HMC sampler, 100 samples × 90 MCMC steps (``rhvae.sampling.hmc.riemannian_hmc``), with the full sum,
  with the grid target (``rhvae.sampling.grid_target``, the default tolerance; its build included), and above
  ``rhvae.sampling.truncation.MIN_CENTROIDS`` centroids with the truncated metric (the default tolerance); at the
  largest N also at T = 0.5 (the widgets' temperature slider), truncated and on the grid.

``--only-grid`` measures only the grid sampler columns and merges them into the rows of an existing
``scaling.json`` in ``--out`` (the other columns and their load figures are kept).

The model: the default RHVAE trained for ``EPOCHS`` epochs (batch ``BATCH``) on the 5,000 bundled real MNIST
digits. Its frozen metric at N: the centroids cᵢ = μ(xᵢ) and matrices Mᵢ = L(xᵢ)L(xᵢ)ᵀ of N images: the first N
real digits of a seeded permutation for N ≤ 5,000; above, the 5,000 real digits and copies of them shifted by
one or two pixels (``SHIFTS``, zero fill), i.e. synthetic digits, run through the trained encoder and metric
network. Writes ``scaling.json`` (numbers, settings, load, environment) and ``scaling.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from rhvae.evaluation.likelihood import exact_log_likelihood, log_likelihood  # noqa: E402
from rhvae.experiments.data import load_mnist  # noqa: E402
from rhvae.experiments.model_cache import RHVAE_CONFIG, build_model  # noqa: E402
from rhvae.files import atomic_write, atomic_write_text, writable_folder  # noqa: E402
from rhvae.provenance import environment, set_threads  # noqa: E402
from rhvae.sampling.grid_target import DEFAULT_TOLERANCE as GRID_TOLERANCE  # noqa: E402
from rhvae.sampling.grid_target import interpolate_if_possible  # noqa: E402
from rhvae.sampling.hmc import default_box, riemannian_hmc  # noqa: E402
from rhvae.sampling.truncation import DEFAULT_TOLERANCE, MIN_CENTROIDS, TruncatedMetric  # noqa: E402
from rhvae.training import train  # noqa: E402

SIZES = (120, 500, 1000, 5000, 20000, 60000)
N_REAL = 5000
BATCH = 100
EPOCHS = 3
FULL_BATCH_MAX = 1000
EVAL_IMAGES = 4
IS_SAMPLES = 100
SAMPLES, MCMC_STEPS = 100, 90
WIDGET_TEMPERATURE = 0.5
SHIFTS = ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1), (2, 0), (0, 2), (-2, 0))
"""(rows, columns) pixel shifts of the synthetic copies: copy k of every real digit is shifted by SHIFTS[k − 1]."""


def shifted(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """28 × 28 digits (n, 784) moved by (rows, cols) pixels, zero fill (no wrap-around)."""
    grid = images.reshape(-1, 28, 28)
    out = torch.zeros_like(grid)
    r0, r1 = max(rows, 0), 28 + min(rows, 0)
    c0, c1 = max(cols, 0), 28 + min(cols, 0)
    out[:, r0:r1, c0:c1] = grid[:, r0 - rows : r1 - rows, c0 - cols : c1 - cols]
    return out.reshape(-1, 784)


def images_for(real: torch.Tensor, n: int) -> torch.Tensor:
    """The first n real digits, or all of them and shifted copies (``SHIFTS``) up to n images."""
    if n <= len(real):
        return real[:n]
    copies = [real] + [shifted(real, *shift) for shift in SHIFTS[: -(-n // len(real)) - 1]]
    if len(copies) - 1 > len(SHIFTS):
        raise ValueError(f"at most {len(real) * (len(SHIFTS) + 1)} images, asked for {n}")
    return torch.cat(copies)[:n]


def timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def say(text: str) -> None:
    print(text, flush=True)


def epoch_seconds(model, x: torch.Tensor, batch_size: int | None, threads: int) -> float:
    """Wall time of one training epoch of a copy of ``model`` on x (as ``train`` runs it: no test set)."""
    net = copy.deepcopy(model)
    history = train(net, x, None, epochs=1, batch_size=batch_size, seed=0, threads=threads, progress=False)
    return history.epochs[0].seconds


def grid_sampler(metric, suffix: str = "") -> dict:
    """The sampler on the grid target of ``metric`` (build + 100 × 90 steps), keys suffixed with ``suffix``."""
    build, grid = timed(lambda: interpolate_if_possible(metric, *default_box(metric), GRID_TOLERANCE))
    if grid is None:
        return {f"sampler_grid{suffix}": None}
    samples = riemannian_hmc(grid, SAMPLES, MCMC_STEPS, seed=0)
    return {
        f"sampler_grid{suffix}": build + samples.seconds,
        f"grid_build{suffix}": build,
        f"acceptance_grid{suffix}": samples.acceptance_rate,
        f"grid{suffix}": grid.describe(),
        f"load_grid{suffix}": load(),
    }


def frozen_metric(model, real: torch.Tensor, n: int):
    """A copy of ``model`` with its metric frozen on the n images of ``images_for`` (eval mode), and x."""
    x = images_for(real, n)
    frozen = copy.deepcopy(model).eval()
    frozen.freeze_metric(x)
    return frozen, x


def measure(model, real: torch.Tensor, n: int, threads: int, minibatch_5000: float | None, sizes) -> dict:
    row = {"n": n, "synthetic": max(0, n - len(real)), "load_before": load()}
    x = images_for(real, n)
    if n <= FULL_BATCH_MAX:
        row["epoch_full_batch"] = epoch_seconds(model, x, None, threads)
    if n <= len(real):
        row["epoch_minibatch"] = epoch_seconds(model, x, BATCH, threads)
        row["epoch_minibatch_measured"] = True
    else:
        row["epoch_minibatch"] = minibatch_5000 * n / len(real)
        row["epoch_minibatch_measured"] = False
    frozen, _ = frozen_metric(model, real, n)
    x_eval = real[-EVAL_IMAGES:]
    seconds, _ = timed(lambda: exact_log_likelihood(frozen, x_eval, warn=False))
    row["exact_ll_per_image"] = seconds / EVAL_IMAGES
    metric = frozen.metric()
    row["kappa"], _ = timed(metric.max_eigenvalue)  # κ of the stability-bounded step: once per metric, O(N²)
    seconds, _ = timed(lambda: log_likelihood(frozen, x_eval, n_samples=IS_SAMPLES, seed=0))
    row["is_ll_per_image"] = seconds / EVAL_IMAGES
    samples = riemannian_hmc(metric, SAMPLES, MCMC_STEPS, seed=0, truncation_tolerance=None, grid_tolerance=None)
    row["sampler_full"], row["acceptance_full"] = samples.seconds, samples.acceptance_rate
    row.update(grid_sampler(metric))
    if n == max(sizes):
        row.update(grid_sampler(frozen.metric(WIDGET_TEMPERATURE), "_T0.5"))
    if n > MIN_CENTROIDS:
        setup, truncated = timed(lambda: TruncatedMetric(metric, DEFAULT_TOLERANCE))
        samples = riemannian_hmc(truncated, SAMPLES, MCMC_STEPS, seed=0)
        row["sampler_truncated"] = setup + samples.seconds
        row["truncation_setup"], row["acceptance_truncated"] = setup, samples.acceptance_rate
        row["truncation"] = truncated.describe()
        row["scanned_blocks"] = float(truncated.scanned_blocks(samples.z).double().mean())
        if n == max(sizes):
            setup, cold = timed(lambda: TruncatedMetric(frozen.metric(WIDGET_TEMPERATURE), DEFAULT_TOLERANCE))
            samples = riemannian_hmc(cold, SAMPLES, MCMC_STEPS, seed=0)
            row["sampler_truncated_T0.5"] = setup + samples.seconds
            row["truncation_T0.5"] = cold.describe()
    row["load_after"] = load()
    return row


def fmt(value, unit: str = "s") -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} {unit}"


def table(rows: list[dict]) -> str:
    lines = [
        "| N (centroids) | epoch, full batch | epoch, batch 100 | exact log p(x) / image "
        "| IS log p(x) / image (S = 100) | κ, once per metric | sampler 100 × 90, full sum | sampler, truncated "
        "| sampler, grid (build) | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = f"{r['n']:,}" + (f" ({r['synthetic']:,} synthetic)" if r["synthetic"] else "")
        minibatch = fmt(r["epoch_minibatch"]) + ("" if r["epoch_minibatch_measured"] else " (×N/5,000)")
        truncated = fmt(r.get("sampler_truncated"))
        if "sampler_truncated" in r:
            truncated += f" (r = {r['truncation']['radius']:.2f})"
        grid = fmt(r.get("sampler_grid"))
        if r.get("sampler_grid") is not None:
            grid += f" ({fmt(r['grid_build'])}, spacing T/{round(1 / r['grid']['spacing_per_temperature'])})"
        lines.append(
            f"| {n} | {fmt(r.get('epoch_full_batch'))} | {minibatch} | {fmt(r['exact_ll_per_image'])} "
            f"| {fmt(r['is_ll_per_image'])} | {fmt(r['kappa'])} | {fmt(r['sampler_full'])} | {truncated} | {grid} "
            f"| {r['load_before'][0]}–{r['load_after'][0]} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    series = [
        ("epoch_full_batch", "training epoch, full batch", "o-"),
        ("epoch_minibatch", "training epoch, batch 100", "s-"),
        ("exact_ll_per_image", "exact log p(x), per image", "^-"),
        ("is_ll_per_image", "IS log p(x), per image (S = 100)", "v-"),
        ("kappa", "κ of the frozen metric (once, O(N²))", "x:"),
        ("sampler_full", "sampler 100 × 90, full sum", "D-"),
        ("sampler_truncated", "sampler, truncated (τ = 1e-5)", "D--"),
        ("sampler_grid", "sampler, grid target (build included)", "P-"),
    ]
    for key, label, style in series:
        points = [(r["n"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=label)
    big = rows[-1]
    if "sampler_truncated_T0.5" in big:
        ax.plot([big["n"]], [big["sampler_truncated_T0.5"]], "*", ms=12, label="sampler, truncated, T = 0.5")
    if big.get("sampler_grid_T0.5") is not None:
        ax.plot([big["n"]], [big["sampler_grid_T0.5"]], "X", ms=10, label="sampler, grid, T = 0.5")
    ax.axvline(N_REAL, color="grey", lw=0.8, ls=":")
    ax.text(N_REAL * 1.1, ax.get_ylim()[0] * 2, "synthetic →", color="grey", fontsize=8)
    ax.axhline(5.0, color="red", lw=0.6, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="training images = centroids N", ylabel="seconds (wall)")
    ax.set_title("How cost grows (default RHVAE, real MNIST, 2-D latent)", fontsize=10)
    ax.legend(fontsize=7)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/scaling")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of the timing model")
    parser.add_argument("--only-grid", action="store_true", help="measure the grid sampler only, merged into --out")
    args = parser.parse_args(argv)
    out = writable_folder(args.out, "--out")
    threads = set_threads(args.threads)
    pixels, _ = load_mnist()
    real = torch.as_tensor(pixels, dtype=torch.float32)[
        torch.randperm(N_REAL, generator=torch.Generator().manual_seed(0))
    ]
    real = real / 255.0
    model = build_model("rhvae", seed=0, **RHVAE_CONFIG)
    say(f"training the timing model: {args.epochs} epochs, batch {BATCH}, {N_REAL} real digits, {threads} threads")
    history = train(model, real, None, epochs=args.epochs, batch_size=BATCH, seed=0, threads=threads, progress=True)
    if args.only_grid:
        return merge_grid_columns(out, model, real, args.sizes)
    minibatch_5000 = None
    rows = []
    for n in sorted(args.sizes):
        say(f"N = {n:,}: load {load()}")
        if n > N_REAL and minibatch_5000 is None:
            raise SystemExit("--sizes must include 5000 to extrapolate the minibatch epoch above it")
        row = measure(model, real, n, threads, minibatch_5000, args.sizes)
        if n == N_REAL:
            minibatch_5000 = row["epoch_minibatch"]
        rows.append(row)
        say(json.dumps(row))
    record = {
        "rows": rows,
        "settings": {
            "model": RHVAE_CONFIG,
            "timing_model_epochs": args.epochs,
            "timing_model_train_loss": history.train_loss,
            "batch": BATCH,
            "full_batch_max": FULL_BATCH_MAX,
            "eval_images": EVAL_IMAGES,
            "is_samples": IS_SAMPLES,
            "sampler": {"n_samples": SAMPLES, "mcmc_steps": MCMC_STEPS},
            "truncation_tolerance": DEFAULT_TOLERANCE,
            "truncation_min_centroids": MIN_CENTROIDS,
            "grid_tolerance": GRID_TOLERANCE,
            "shifts": SHIFTS,
            "threads": threads,
        },
        "environment": environment(),
        "command": " ".join(sys.argv),
    }
    return write(out, record)


def write(out: Path, record: dict) -> int:
    text = table(record["rows"])
    say(text)
    atomic_write_text(out / "scaling.json", json.dumps(record, indent=1))
    atomic_write_text(out / "scaling.md", text + "\n")
    plot(record["rows"], out / "scaling.png")
    say(f"wrote {out / 'scaling.json'}, {out / 'scaling.md'} and {out / 'scaling.png'}")
    return 0


def merge_grid_columns(out: Path, model, real: torch.Tensor, sizes) -> int:
    """``--only-grid``: the grid sampler columns of ``sizes`` measured now, merged into ``out``/scaling.json."""
    path = out / "scaling.json"
    if not path.is_file():
        raise SystemExit(f"--only-grid merges into an existing {path}: run the whole benchmark first")
    record = json.loads(path.read_text())
    rows = {r["n"]: r for r in record["rows"]}
    missing = sorted(set(sizes) - set(rows))
    if missing:
        raise SystemExit(f"--only-grid: {path} has no row for N = {missing}")
    for n in sorted(sizes):
        frozen, _ = frozen_metric(model, real, n)
        rows[n].update(grid_sampler(frozen.metric()))
        if n == max(rows):
            rows[n].update(grid_sampler(frozen.metric(WIDGET_TEMPERATURE), "_T0.5"))
        say(f"N = {n:,}: grid sampler {rows[n]['sampler_grid']}")
    record["settings"]["grid_tolerance"] = GRID_TOLERANCE
    record["grid_command"] = " ".join(sys.argv)
    record["grid_environment"] = environment()
    return write(out, record)


if __name__ == "__main__":
    raise SystemExit(main())
