"""Run folders, parameter checks, results.json and provenance for the experiment notebooks.

A notebook run goes like this::

    params = runs.validate_parameters("metric", globals())   # right after the papermill ``parameters`` cell
    run = runs.Run("metric", params)                           # figures/metric_MM_DD_YYYY_hh_mm_ss/
    trained = run.train("rhvae", config, label="rhvae_T0.6")   # cached or trained; divergence is recorded
    run.save_figure(fig, "metric_panels")                      # PNG, written atomically
    run.write()                                                # results.json, written atomically

Every path is resolved from the repository root (``rhvae.paths``), never from the working directory: papermill
runs the kernel in the caller's folder and nbconvert in the notebook's folder.

``results.json`` holds the parameters (as given and as in force after ``quick``), the numbers, the figures,
the status (``ok``, or ``diverged`` when a model's training diverged), the flow diagnostics of every HVAE/RHVAE
on the test split (``rhvae.evaluation.diagnostics``: displacement, flow gain, step, κ, metric contrast and their
plain-word flags, under ``models.LABEL.diagnostics``), and the provenance: seed, subset indices, versions, thread count,
timings, objective and sampler target of every number, and whether each model was reused from the cache.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from rhvae.evaluation.diagnostics import flow_diagnostics
from rhvae.experiments.data import ExperimentData, experiment_data
from rhvae.experiments.model_cache import MODEL_CONFIGS, train_experiment_models
from rhvae.experiments.parameters import check_parameter
from rhvae.experiments.quality import GENERATION_METRICS_NOTE, generation_score
from rhvae.experiments.registry import PAPER_SETTINGS
from rhvae.experiments.registry import experiment as experiment_entry
from rhvae.experiments.stored_evaluations import evaluation_key, stored_evaluation
from rhvae.files import atomic_write, atomic_write_text, writable_folder
from rhvae.models import HVAE, RHVAE, VAE, native
from rhvae.paths import CACHE_DIR, FIGURES_DIR, ROOT, SHIPPED_DIR
from rhvae.persistence import state_digest
from rhvae.provenance import environment, set_threads
from rhvae.sampling.hmc import generate
from rhvae.training import TrainingDiverged

CACHE_ENV = "RHVAE_CACHE_DIR"
"""Environment variable that overrides the model cache folder when a notebook's ``cache_dir`` is None."""
GIVEN_ENV = "RHVAE_GIVEN_PARAMETERS"
"""Environment variable (comma-separated names) that ``run_all.sh`` sets to the parameters given with ``-p``:
``quick`` leaves them as given (explicit values win over the quick settings)."""


# ------------------------------------------------------------------------------------------- parameter checks
def validate_parameters(experiment: str, namespace: Mapping) -> dict:
    """Check the parameters of ``experiment`` found in ``namespace`` (a notebook passes ``globals()``) and
    return them normalised, with ``quick`` applied: ``{"given": ..., **effective}``.

    Raises ``ValueError`` naming the parameter and its accepted range for a bad value, and for a missing one.
    With ``quick=True`` the keys of the experiment's quick settings (``rhvae.experiments.registry``: epochs, mcmc_steps,
    n_samples, …) that the notebook has are replaced by their quick values, except those named in the environment
    variable ``RHVAE_GIVEN_PARAMETERS`` (``run_all.sh --quick -p epochs 2`` trains 2 epochs, not 5).
    """
    entry = experiment_entry(experiment)
    specs = entry.parameters
    missing = [name for name in specs if name not in namespace]
    if missing:
        raise ValueError(f"the {experiment} notebook's parameters cell does not define {', '.join(missing)}")
    given = {name: check_parameter(name, namespace[name], spec) for name, spec in specs.items()}
    params = dict(given)
    if params["quick"]:
        explicit = set(filter(None, os.environ.get(GIVEN_ENV, "").split(",")))
        params.update({k: v for k, v in entry.quick.items() if k in specs and k not in explicit})
    params["given"] = given
    return params


def model_configs(params: Mapping, experiment: str | None = None) -> dict[str, dict]:
    """The model keyword arguments for a run: ``MODEL_CONFIGS`` with the run's non-None overrides (and its
    objective for the HVAE and RHVAE). A None ``temperature`` takes the experiment's paper setting
    (``PAPER_SETTINGS[experiment]['temperature']``, e.g. 0.6 for generation_7_classes) when it has one; a
    ``hidden_dim`` parameter (the augmentation experiment's per-class networks) sizes every model."""
    rhvae = dict(MODEL_CONFIGS["rhvae"])
    paper_t = PAPER_SETTINGS.get(experiment or "", {}).get("temperature")
    if paper_t is not None:
        rhvae["temperature"] = paper_t
    for key in ("n_lf", "eps_lf", "beta_zero", "regularization", "temperature"):
        if params.get(key) is not None:
            rhvae[key] = params[key]
    hvae = dict(MODEL_CONFIGS["hvae"])
    for key in ("n_lf", "eps_lf", "beta_zero"):
        if params.get(f"hvae_{key}") is not None:
            hvae[key] = params[f"hvae_{key}"]
    objective = {} if params.get("objective") is None else {"objective": params["objective"]}
    size = {} if params.get("hidden_dim") is None else {"hidden_dim": params["hidden_dim"]}
    return {
        "vae": {**MODEL_CONFIGS["vae"], **size},
        "hvae": {**hvae, **size, **objective},
        "rhvae": {**rhvae, **size, **objective},
    }


# ----------------------------------------------------------------------------------------------- run folders
def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path: relative paths are taken from the repository root (``rhvae.paths.ROOT``)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else ROOT / path


def run_dir_name(experiment: str, now: _dt.datetime | None = None) -> str:
    """``EXPERIMENT_MM_DD_YYYY_hh_mm_ss``."""
    return f"{experiment}_{(now or _dt.datetime.now()).strftime('%m_%d_%Y_%H_%M_%S')}"


def make_run_dir(experiment: str, output_dir: str | os.PathLike | None = None) -> Path:
    """Create and return the run folder: ``output_dir`` (relative to the repository root) if given, else a new
    ``figures/EXPERIMENT_MM_DD_YYYY_hh_mm_ss/`` (with a ``_2``, ``_3``… suffix if that second is taken)."""
    if output_dir is not None:
        return writable_folder(resolve_path(output_dir), "output_dir")
    base = FIGURES_DIR / run_dir_name(experiment)
    path, k = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            k += 1
            path = base.with_name(f"{base.name}_{k}")


def clear_earlier_run(folder: Path) -> None:
    """Remove what an earlier run wrote into ``folder`` (its results.json and the figures it lists, nothing
    else), so that a run into a reused ``output_dir`` never leaves stale figures beside its own results."""
    earlier = folder / "results.json"
    if not earlier.is_file():
        return
    try:
        figures = json.loads(earlier.read_text()).get("figures", [])
    except (ValueError, AttributeError):
        figures = []
    for name in figures:
        path = folder / str(name)
        if path.parent == folder and path.suffix == ".png" and path.is_file():
            path.unlink()
    earlier.unlink()


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The model cache: ``cache_dir`` if given, else ``$RHVAE_CACHE_DIR``, else ``rhvae.paths.CACHE_DIR``."""
    if cache_dir is not None:
        return resolve_path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return resolve_path(os.environ[CACHE_ENV])
    return CACHE_DIR


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf: keep it readable and visible
    if getattr(value, "ndim", 0) > 0 and callable(getattr(value, "tolist", None)):  # numpy arrays
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    return value


def all_finite(value) -> bool:
    """True when every number in a nested dict/list is finite (strings and bools are ignored)."""
    if isinstance(value, Mapping):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(v) for v in value)
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, str):
        return value.lower() not in ("nan", "inf", "-inf")
    return True


def _source(trained) -> str:
    """Where a notebook's model came from: 'trained', 'shipped' (data/models) or 'cache'."""
    if not trained.reused:
        return "trained"
    return "shipped" if SHIPPED_DIR in Path(trained.path).resolve().parents else "cache"


class Run:
    """One execution of an experiment notebook: its folder, parameters, numbers, figures and provenance.

    ``diagnose_models``: record the flow diagnostics of every HVAE/RHVAE it trains or loads (``models.LABEL``); the
    latent_dimension notebook passes False, since its evaluation holds the same diagnostics (its "mechanism"
    table) and computing them again for its 48 flow models would double the default run's time there."""

    def __init__(self, experiment: str, params: Mapping, diagnose_models: bool = True):
        self.experiment = experiment
        self.diagnose_models = diagnose_models
        self.params = dict(params)
        self.threads = set_threads(self.params.get("threads"))
        self.dir = make_run_dir(experiment, self.params.get("output_dir"))
        clear_earlier_run(self.dir)
        self.cache_dir = cache_folder(self.params.get("cache_dir"))
        writable_folder(self.cache_dir, "cache_dir")  # checked now: a trained model that cannot be saved is lost
        self.started = _dt.datetime.now()
        self._t0 = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.results: dict = {}
        self.models: dict[str, dict] = {}
        self.figures: list[str] = []
        self.problems: list[str] = []
        self.subsets: dict[str, dict] = {}
        self.verdict: dict = {}
        self._data: dict[tuple, ExperimentData] = {}
        print(f"run folder: {self.dir}")

    # ---------------------------------------------------------------------------------------------- data
    def data(self, classes=None, n_per_class=None, experiment: str | None = None) -> ExperimentData:
        """The subset of this run's experiment, or of ``experiment`` (an analysis notebook reads the subsets of the
        experiments it analyses), with its default classes and size unless given; recorded in the provenance."""
        experiment = experiment or self.experiment
        key = (experiment, None if classes is None else tuple(classes), n_per_class)
        if key not in self._data:
            data = experiment_data(
                experiment, classes, n_per_class, seed=self.params["data_seed"], source=self.params["data_source"]
            )
            self._data[key] = data
            prefix = "" if experiment == self.experiment else f"{experiment}:"
            self.subsets[f"{prefix}{'-'.join(map(str, data.classes))}x{data.n_per_class}"] = data.provenance()
        return self._data[key]

    # ------------------------------------------------------------------------------------------ training
    def train(
        self, model: str, config: Mapping, seed: int, label: str | None = None, data: ExperimentData | None = None
    ):
        """Train ``model`` with ``config`` and ``seed`` on the run's subset (or reuse a cached or shipped model
        trained with exactly these settings when ``reuse_cache``).

        Returns the ``TrainedModel``, or None when training diverged: the divergence is printed, recorded in
        ``results.json`` (``status: diverged``) and the notebook carries on with the other models."""
        label = label or f"{model}_seed{seed}"
        return self.train_many(model, config, [(label, seed, data or self.data())])[label]

    def train_many(
        self,
        model: str,
        config: Mapping,
        requests: Sequence[tuple[str, int, ExperimentData]],
        epochs: int | None = None,
    ) -> dict:
        """``train`` for several (label, seed, subset) ``requests`` of one model kind and config, for ``epochs``
        (default: the run's ``epochs`` parameter): the ones that cannot be reused are trained side by side as one
        stack (``rhvae.experiments.model_cache.train_experiment_models``). Returns {label: TrainedModel, or None
        when its training diverged}."""
        with self.timer(f"train_{model}_x{len(requests)}" if len(requests) > 1 else f"train_{requests[0][0]}"):
            results = train_experiment_models(
                self.experiment,
                model,
                [(seed, data) for _, seed, data in requests],
                epochs=self.params["epochs"] if epochs is None else epochs,
                lr=self.params.get("lr", 1e-3),
                threads=self.threads,
                device=self.params.get("device") or "cpu",
                use_cache=self.params["reuse_cache"],
                save=True,  # also with --train (reuse_cache=False): the retrained models replace the cached ones
                cache_dir=self.cache_dir,
                progress="notebook" if self.params.get("interactive") else True,
                **config,
            )
        trained = {}
        for (label, seed, data), result in zip(requests, results, strict=True):
            if isinstance(result, TrainingDiverged):
                self._record_divergence(label, model, seed, config, result)
                trained[label] = None
            else:
                self._record_model(label, model, seed, result, data)
                trained[label] = result
        return trained

    def _record_divergence(self, label: str, model: str, seed: int, config: Mapping, err: TrainingDiverged) -> None:
        message = f"{label}: training DIVERGED at epoch {err.epoch}: {err}"
        print("!" * 100 + f"\n{message}\n" + "!" * 100)
        self.problems.append(message)
        self.models[label] = {
            "model": model,
            "seed": seed,
            "config": dict(config),
            "status": "diverged",
            "diverged_epoch": err.epoch,
            "message": str(err),
            "train_loss": err.history.train_loss if err.history else [],
        }

    def _record_model(self, label: str, model: str, seed: int, trained, data: ExperimentData) -> None:
        h = trained.history
        diagnostics = None
        if self.diagnose_models and isinstance(trained.model, HVAE) and len(data.test):
            with self.timer("diagnostics"):
                diagnostics = flow_diagnostics(trained.model, data.test.x, seed=seed).to_dict()
        self.models[label] = {
            "model": model,
            "seed": seed,
            "config": trained.model.config(),
            "objective": getattr(trained.model, "objective", "elbo (VAE)"),
            "status": "ok",
            "reused_from_cache": trained.reused,
            "source": _source(trained),
            "cache_file": None if trained.path is None else str(trained.path),
            "epochs": len(h.epochs) if h else None,
            "final_train_loss": h.train_loss[-1] if h and h.epochs else None,
            "final_test_loss": h.test_loss[-1] if h and h.epochs else None,
            "final_step_size": h.epochs[-1].step_size if h and h.epochs else None,
            "max_fixed_point_residual": max((r.fixed_point_residual for r in h.epochs), default=None) if h else None,
            "kappa": float(trained.model.metric().max_eigenvalue()) if isinstance(trained.model, RHVAE) else None,
            "diagnostics": diagnostics,
            "train_seconds": trained.provenance.get("train_seconds"),
            "trained_side_by_side": trained.provenance.get("trained_side_by_side", 1),
            "trained_with": trained.provenance.get("environment"),
        }
        where = f"reused from cache {trained.path}" if trained.reused else "trained"
        print(f"{label}: {where}; final train loss {self.models[label]['final_train_loss']}")
        if diagnostics:
            flags = "; ".join(diagnostics["flags"]) or "the flow moves"
            print(
                f"{label}: flow displacement {diagnostics['displacement']:.2g} posterior σ, ELBO gain "
                f"{diagnostics['flow_gain']:+.2g} nats, step {diagnostics['step']:.2g}: {flags}"
            )

    def train_over_seeds(
        self, specs: Mapping[str, tuple[str, Mapping]], experiment: str | None = None
    ) -> dict[int, dict[str, VAE]]:
        """Train (or reuse) every model of ``specs`` (display name → (model kind, config)) for every seed of the
        run's ``seeds``: ``{seed: {name: model}}``, without the models whose training diverged. The seeds of one
        model train side by side (``train_many``).

        ``experiment``: the models of another experiment, on its subset and, when the run's ``epochs`` is None, for
        its paper epochs (an analysis notebook: exactly the models that experiment trained or shipped)."""
        epochs = None
        if experiment is not None and self.params.get("epochs") is None:
            epochs = PAPER_SETTINGS[experiment]["epochs"]
        data = self.data(experiment=experiment)
        prefix = "" if experiment in (None, self.experiment) else f"{experiment}_"
        models: dict[int, dict[str, VAE]] = {seed: {} for seed in self.params["seeds"]}
        for name, (kind, config) in specs.items():
            tag = prefix + name.lower().replace(" ", "").replace("=", "")
            requests = [(f"{tag}_seed{seed}", seed, data) for seed in self.params["seeds"]]
            trained = self.train_many(kind, config, requests, epochs=epochs)
            for label, seed, _ in requests:
                if trained[label] is not None:
                    models[seed][name] = trained[label].model
        return models

    def analysed_models(self) -> dict[str, dict[int, dict[str, VAE]]]:
        """For an analysis notebook (registry ``analyses``): the models of every analysed experiment, exactly as
        it trains or ships them (its model kinds, configs, subset and paper epochs; ``train_over_seeds``), for the
        run's seeds: ``{experiment: {seed: {name: model}}}``, names as the experiment's tables give them (VAE,
        HVAE, RHVAE)."""
        analysed = {}
        for source in experiment_entry(self.experiment).analyses:
            configs = model_configs(self.params, source)
            kinds = PAPER_SETTINGS[source]["models"]
            analysed[source] = self.train_over_seeds({k.upper(): (k, configs[k]) for k in kinds}, experiment=source)
        return analysed

    def generate_over_seeds(self, models: Mapping[int, Mapping[str, VAE]], classes) -> tuple[dict, dict]:
        """Samples of every model of ``train_over_seeds`` (``generate`` with the run's ``n_samples`` and
        ``mcmc_steps``, seeded with the model's seed) and their score against ``classes`` (``generation_score``:
        the quality score, the classifier FID and k-NN precision/recall against held-out real digits), recorded as
        ``generation`` ({seed: {name: how they were made, quality}}). Returns ({seed: {name: Generated}},
        {seed: {name: score}})."""

        with self.timer("generation"):
            generated = {
                seed: {
                    name: generate(model, self.params["n_samples"], self.params["mcmc_steps"], seed=seed)
                    for name, model in by_name.items()
                }
                for seed, by_name in models.items()
            }
        with self.timer("generation_scores"):
            scores = {
                seed: {name: generation_score(g.images, classes) for name, g in by_name.items()}
                for seed, by_name in generated.items()
            }
        self.record(
            generation_metrics_note=GENERATION_METRICS_NOTE,
            generation={
                seed: {name: {**g.info, "quality": scores[seed][name]} for name, g in by_name.items()}
                for seed, by_name in generated.items()
            },
        )
        return generated, scores

    # ------------------------------------------------------------------------------------------- outputs
    @contextlib.contextmanager
    def timer(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        """Write ``fig`` as ``NAME.png`` in the run folder, atomically."""
        path = self.dir / f"{name}.png"
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)

        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(buffer.getvalue())

        atomic_write(path, write)
        if path.name not in self.figures:
            self.figures.append(path.name)
        return path

    @property
    def status(self) -> str:
        return "diverged" if any(m.get("status") == "diverged" for m in self.models.values()) else "ok"

    def record(self, **numbers) -> None:
        self.results.update(numbers)

    def stored_evaluation(
        self,
        name: str,
        compute: Callable[[], Mapping],
        *,
        models: Mapping | None = None,
        inputs: Mapping[str, torch.Tensor] | None = None,
        settings: Mapping | None = None,
    ) -> dict:
        """``compute()`` (JSON-ready numbers from fixed models or images), or the stored result of exactly the same
        evaluation (``rhvae.experiments.stored_evaluations``: shipped with this experiment's models in
        ``data/models/EXPERIMENT/``, else cached, else computed now and cached). Identified by ``name``, the weights of
        ``models`` ({label: model}, or {seed: {label: model}}), the tensors ``inputs`` ({label: tensor}) and
        ``settings`` (JSON-ready). Records its source and file (results ``evaluation_sources`` and
        ``evaluation_files``, which tools/publish_run.py ships). Returns the numbers as JSON gives them back, but for
        top-level whole-number keys (seeds), which are ints again; the same numbers whichever source they came
        from."""
        flat = {}
        for label, value in (models or {}).items():
            members = value.items() if isinstance(value, Mapping) else [("", value)]
            flat.update({f"{label}/{member}".rstrip("/"): model for member, model in members})
        identity = {
            "evaluation": name,
            "inputs": state_digest(dict(inputs or {})),
            "settings": _jsonable(dict(settings or {})),
        }
        key = evaluation_key(flat, identity)
        evaluation, source, path = stored_evaluation(self.experiment, key, self.cache_dir, compute)
        self.results.setdefault("evaluation_sources", {})[name] = source
        self.results.setdefault("evaluation_files", []).append(str(path))
        return {int(k) if k.isdigit() else k: v for k, v in evaluation.items()}

    def summary(self) -> dict:
        params = {k: v for k, v in self.params.items() if k != "given"}
        return _jsonable(
            {
                "experiment": self.experiment,
                "status": self.status,
                "problems": self.problems,
                "run_dir": self.dir,
                "parameters": params,
                "parameters_given": self.params.get("given", params),
                "quick": params.get("quick", False),
                "results": self.results,
                "verdict": self.verdict,
                "models": self.models,
                "figures": self.figures,
                "provenance": {
                    "seeds": params.get("seeds"),
                    "data_seed": params.get("data_seed"),
                    "subsets": self.subsets,
                    "threads": self.threads,
                    "leapfrog_kernels": native.implementation(),
                    "environment": environment(),
                    "cache_dir": self.cache_dir,
                    "started": self.started.isoformat(timespec="seconds"),
                    "timings_seconds": {**self.timings, "total": time.perf_counter() - self._t0},
                    "paper_settings": PAPER_SETTINGS.get(self.experiment),
                    "quick_settings": experiment_entry(self.experiment).quick,
                },
            }
        )

    def write(self) -> Path:
        """Write ``results.json`` atomically and return its path."""
        path = atomic_write_text(self.dir / "results.json", json.dumps(self.summary(), indent=2) + "\n")
        print(f"wrote {path} (status: {self.status}; figures: {', '.join(self.figures) or 'none'})")
        return path

    def conclude(self, claim: str, checks: Mapping[str, bool], details: str = "") -> str:
        """Record and return the verdict on the paper's ``claim``: which ``checks`` this run's numbers pass, and
        ``holds`` (all pass), ``partly`` (some) or ``does not hold`` (none). A check that every model trained
        is added in front and does not count towards the verdict. Quick runs and runs with a diverged model are
        flagged as not meaningful."""
        passed = sum(bool(v) for v in checks.values())
        verdict = "holds" if passed == len(checks) else ("does not hold" if passed == 0 else "partly")
        void = self.void_checks()
        if void:
            verdict = "not meaningful"
        trained = self.status == "ok"
        seeds = self.params.get("seeds") or []
        lines = [
            f"Paper: {claim}",
            f"This run ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}): the claim "
            f"{'holds partly' if verdict == 'partly' else verdict} "
            f"({passed}/{len(checks)} checks agree with the paper).",
            f"  [{'yes' if trained else 'NO '}] every model trained (none diverged)",
        ]
        lines += [f"  [{'yes' if ok else 'NO '}] {name}" for name, ok in checks.items()]
        if details:
            lines.append(details)
        lines += [f"NOT MEANINGFUL: {reason}" for reason in void]
        if self.params.get("quick"):
            lines.append("NOTE: quick mode (a few epochs): these numbers test the pipeline, not the paper's claim.")
        if not trained:
            lines.append("NOTE: a model diverged during training: " + "; ".join(self.problems))
        text = "\n".join(lines)
        self.verdict = {
            "claim": claim,
            "verdict": verdict,
            "checks": {k: bool(v) for k, v in checks.items()},
            "agree": passed,
            "total": len(checks),
            "every_model_trained": trained,
            "not_meaningful": void,
            "text": text,
        }
        return text

    def void_checks(self) -> list[str]:
        """Why this run's checks say nothing about the paper's claim, if they do not: RHVAE "samples" whose chains
        made less than one accepted MCMC move each on average are (nearly) the decoded training codes the
        chains start from, so no comparison of sample quality means anything."""
        reasons = []
        for seed, by_name in self.results.get("generation", {}).items():
            for name, info in by_name.items():
                if info.get("sampler") != "riemannian_hmc":
                    continue
                # one acceptance rate, or one per class (the augmentation experiment): the worst one counts
                rates = info.get("acceptance_rate_per_class") or {"all": info.get("acceptance_rate")}
                rate = min((r for r in rates.values() if r is not None), default=0.0)
                moves = rate * (info.get("mcmc_steps") or 0)
                if moves < 1:
                    reasons.append(
                        f"{name} (seed {seed}): {moves:.2g} accepted MCMC moves per chain on average "
                        f"(mcmc_steps {info.get('mcmc_steps')}, acceptance {rate:.2f}): "
                        "its samples are essentially the decoded training codes"
                    )
        return reasons
