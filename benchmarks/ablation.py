"""Which RHVAE training scheme makes both the learned metric and the flow work? (issue 10, docs/stability.md)

For every scheme × experiment subset × seed: train at the paper's epochs, then record divergence, the median flow
displacement ‖(z_K − z₀)/σ(x)‖ on the test images, the flow's ELBO gain over the encoder-only ELBO of the same
networks, the metric's contrast at the test codes (mean log √det G⁻¹(μ) − (d/2) log λ), κ, the step used and the
test ELBO; every trained model is saved (``--models``) so that its exact log-likelihood can be added later. One
JSON line per run goes to ``--out``; runs already there are skipped, so the script can be resumed.

Usage: python benchmarks/ablation.py --schemes bounded_metric plain --targets metric_T0.6 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import rhvae
from rhvae.evaluation.diagnostics import flow_diagnostics
from rhvae.evaluation.likelihood import elbo
from rhvae.experiments.model_cache import HVAE_CONFIG, RHVAE_CONFIG, build_model, train_experiment_model
from rhvae.experiments.registry import PAPER_SETTINGS
from rhvae.models import RHVAE, VAE
from rhvae.persistence import load_model, save_model
from rhvae.training import TrainingDiverged, train

#: scheme name → (model, model config overrides of the paper-mode RHVAE, training options, what it is)
SCHEMES = {
    "hvae": ("hvae", {}, {}, "HVAE, the reference flow (eps 0.01)"),
    "bounded_step": ("rhvae", {}, {}, "today's default: stability-bounded step, free metric"),
    "plain": ("rhvae", {"step_bound": "none"}, {}, "the paper's plain step, true ELBO"),
    "release": (
        "rhvae",
        {"step_bound": "none", "objective": "authors", "gradient": "release"},
        {},
        "plain step, the release's objective and gradient",
    ),
    "dali": (
        "rhvae",
        {"step_bound": "none", "n_lf": 3, "eps_lf": 0.01, "temperature": 0.8, "regularization": 1e-3},
        {},
        "the authors' later settings (n_lf 3, eps 0.01, T 0.8, λ 1e-3), plain step",
    ),
    "release_gradient_bounded_step": (
        "rhvae",
        {"gradient": "release"},
        {},
        "the true ELBO with the release's gradient, stability-bounded step",
    ),
    "learned_step": ("rhvae", {"learn_step": True}, {}, "a learned step per leapfrog step inside the bound"),
    "warmup_metric_lr": (
        "rhvae",
        {},
        {"warmup_epochs": 100, "metric_lr": 1e-4},
        "100 VAE epochs first, metric network at lr 1e-4",
    ),
    "bounded_metric": ("rhvae", {"metric_scale": "bounded"}, {}, "metric scale capped at κ_max, bounded step"),
    "normalized_metric": (
        "rhvae",
        {"metric_scale": "normalized"},
        {},
        "metric scale fixed at κ_max (the network learns each Mᵢ's shape), bounded step",
    ),
    "release_bounded_step": (
        "rhvae",
        {"objective": "authors", "gradient": "release"},
        {},
        "the release's objective and gradient under the stability-bounded step",
    ),
    "authors_objective_bounded_step": (
        "rhvae",
        {"objective": "authors"},
        {},
        "the release's objective with the exact gradient, stability-bounded step",
    ),
    "authors_bounded_metric": (
        "rhvae",
        {"objective": "authors", "metric_scale": "bounded"},
        {},
        "the release's objective, metric scale capped at κ_max, stability-bounded step",
    ),
    "authors_momentum_bound": (
        "rhvae",
        {"objective": "authors"},
        {},
        "the release's objective, exact gradient, stability bound with the release momentum's scale in the wall",
    ),
    "bounded_metric_learned_step": (
        "rhvae",
        {"metric_scale": "bounded", "learn_step": True},
        {},
        "metric scale capped at κ_max, learned step inside the bound",
    ),
}
#: ablation target → (experiment subset, metric temperature T). The metric and reconstruction subsets are the same
#: 120 digits (1, 2, 3 × 40), so at T = 1 they train identical models: the metric subset is run at its T = 0.6.
TARGETS = {
    "reconstruction": ("reconstruction", 1.0),
    "metric_T0.6": ("metric", 0.6),
    "generation_5": ("generation_5", 1.0),
}


def diagnostics(model: VAE, x: torch.Tensor, seed: int) -> dict:
    """``rhvae.evaluation.diagnostics.flow_diagnostics`` (100 draws per image) and the test ELBO (the true-ELBO
    integrand's mean over 100 draws per image)."""
    result = flow_diagnostics(model, x, n_draws=100, seed=seed).to_dict()
    result["test_elbo"] = float(elbo(model, x, n_samples=100, seed=seed).mean())
    if isinstance(model, RHVAE) and model.step_logits is not None:
        result["step_multipliers"] = torch.sigmoid(model.step_logits).tolist()
    return result


def run_one(scheme: str, target: str, seed: int, models_dir: Path, threads: int, epochs: int | None) -> dict:
    model_name, overrides, training, _ = SCHEMES[scheme]
    experiment, temperature = TARGETS[target]
    data = rhvae.experiment_data(experiment)
    epochs = epochs or PAPER_SETTINGS[experiment]["epochs"]
    config = dict(HVAE_CONFIG) if model_name == "hvae" else {**RHVAE_CONFIG, **overrides}
    if model_name == "rhvae" and "temperature" not in overrides:
        config["temperature"] = temperature
    model = build_model(model_name, seed=seed, **config)
    start = time.perf_counter()
    record = {"scheme": scheme, "target": target, "seed": seed, "epochs": epochs, "config": model.config()}
    try:
        if not training:  # through the model cache: a shipped or cached model is reused, a trained one is cached
            run = train_experiment_model(
                experiment, model_name, epochs, seed, threads=threads, progress=False, **config
            )
            model, history = run.model, run.history
            record["reused"] = run.reused
        else:
            history = train(
                model, data.train.x, data.test.x, epochs=epochs, seed=seed, threads=threads, progress=False, **training
            )
        record.update(status="finished", epoch=epochs)
    except TrainingDiverged as err:
        history = err.history
        record.update(status="diverged", epoch=err.epoch)
    record["train_seconds"] = time.perf_counter() - start
    record["max_fixed_point_residual"] = max((r.fixed_point_residual for r in history.epochs), default=None)
    if record["status"] == "finished":
        record["test_loss_last_epoch"] = history.test_loss[-1]
        record.update(diagnostics(model, data.test.x, seed=seed))
        path = models_dir / f"{scheme}_{target}_{seed}.pt"
        save_model(model, path, history, {"scheme": scheme, "target": target, "experiment": experiment, "seed": seed})
        record["model_file"] = str(path)
    return record


def rediagnose(path: Path) -> None:
    """Recompute the diagnostics of every saved model listed in ``path`` (after a fix to the evaluation)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        if r.get("model_file"):
            model = load_model(r["model_file"])
            data = rhvae.experiment_data(TARGETS[r["target"]][0])
            r.update(diagnostics(model, data.test.x, seed=r["seed"]))
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=tuple(SCHEMES))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=tuple(TARGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the paper's epochs of each experiment")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="figures/ablation/ablation.jsonl")
    parser.add_argument("--models", default="data/cache/ablation")
    parser.add_argument(
        "--rediagnose", action="store_true", help="recompute the diagnostics of the saved models in --out, then stop"
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.rediagnose:
        rediagnose(out)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["scheme"], r["target"], r["seed"], r["epochs"]))
    torch.set_num_threads(args.threads)
    for scheme in args.schemes:
        for target in args.targets:
            for seed in args.seeds:
                epochs = args.epochs or PAPER_SETTINGS[TARGETS[target][0]]["epochs"]
                if (scheme, target, seed, epochs) in done:
                    continue
                record = run_one(scheme, target, seed, Path(args.models), args.threads, args.epochs)
                with out.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                keys = ("status", "epoch", "displacement", "flow_gain", "contrast", "kappa", "step", "test_elbo")
                print(
                    scheme,
                    target,
                    seed,
                    {k: record.get(k) for k in keys},
                    f"{record['train_seconds']:.0f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
