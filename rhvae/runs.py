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
the status (``ok``, or ``diverged`` when a model's training diverged), and the provenance: seed, subset indices,
versions, thread count, timings, objective and sampler target of every number, and whether each model was
reused from the cache.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import torch

from .data import SOURCES, ExperimentData, experiment_data
from .experiments import MODEL_CONFIGS, PAPER_SETTINGS, QUICK_SETTINGS, Generated, generate, train_experiment_model
from .metric import LearnedMetric
from .models import RHVAE, VAE
from .paths import CACHE_DIR, FIGURES_DIR, ROOT, SHIPPED_DIR
from .persistence import atomic_write, atomic_write_text, writable_folder
from .provenance import environment, set_threads
from .training import TrainingDiverged
from .validation import RANGES, scalar

CACHE_ENV = "RHVAE_CACHE_DIR"
"""Environment variable that overrides the model cache folder when a notebook's ``cache_dir`` is None."""
GIVEN_ENV = "RHVAE_GIVEN_PARAMETERS"
"""Environment variable (comma-separated names) that ``run_all.sh`` sets to the parameters given with ``-p``:
``quick`` leaves them as given (explicit values win over the quick settings)."""

OBJECTIVES = ("elbo", "authors")


# ------------------------------------------------------------------------------------------- parameter checks
@dataclass(frozen=True)
class Param:
    """What one notebook parameter accepts.

    ``kind``: 'int', 'float', 'bool', 'choice', 'floats' (a non-empty list of floats), 'ints' (a non-empty list
    of distinct integers), 'path' (str or None).
    ``low``/``high`` bound numbers (``low_open`` makes the lower bound strict); ``optional`` allows None
    (for model hyper-parameters: None means the value of ``rhvae.experiments.MODEL_CONFIGS``)."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False
    choices: tuple = ()

    def describe(self) -> str:
        if self.kind == "bool":
            text = "True or False"
        elif self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind == "path":
            text = "a folder path (str) or None"
        else:
            what = {
                "int": "an integer",
                "float": "a number",
                "floats": "a number or a non-empty list of numbers",
                "ints": "an integer or a non-empty list of distinct integers",
            }[self.kind]
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {_number(self.low)}"
            hi = "" if self.high is None else f"<= {_number(self.high)}"
            bounds = " and ".join(b for b in (lo, hi) if b)
            text = f"{what}{' ' + bounds if bounds else ''}"
        return text + (" (or None for the default)" if self.optional and self.kind != "path" else "")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number_ok(value, spec: Param, integer: bool) -> bool:
    """A number (Python or NumPy; not a bool) of the right kind within the bounds of ``spec``."""
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        return False
    if not math.isfinite(value):
        return False
    if spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low):
        return False
    return spec.high is None or value <= spec.high


def check_parameter(name: str, value, spec: Param):
    """The value of one parameter, normalised (ints where floats are wanted become floats); ``ValueError``
    naming the parameter and what it accepts otherwise."""

    def fail():
        raise ValueError(f"parameter {name!r} must be {spec.describe()}, got {value!r} ({type(value).__name__})")

    value = scalar(value)
    if value is None:
        if spec.optional or spec.kind == "path":
            return None
        fail()
    if spec.kind == "int":
        if not _number_ok(value, spec, integer=True):
            fail()
        return int(value)
    if spec.kind == "float":
        if not _number_ok(value, spec, integer=False):
            fail()
        return float(value)
    if spec.kind == "bool":
        if not isinstance(value, bool):
            fail()
        return value
    if spec.kind == "choice":
        if value not in spec.choices:
            fail()
        return value
    if spec.kind == "path":
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            fail()
        return str(value)
    if spec.kind == "floats":
        if isinstance(value, (str, bytes, Mapping)):
            fail()
        items = [scalar(v) for v in value] if hasattr(value, "__iter__") else [value]  # one number: a list of one
        if not items or not all(_number_ok(v, spec, integer=False) for v in items):
            fail()
        return [float(v) for v in items]
    if spec.kind == "ints":
        if isinstance(value, (str, bytes, Mapping)):
            fail()
        items = [scalar(v) for v in value] if hasattr(value, "__iter__") else [value]
        if not items or len(set(items)) != len(items) or not all(_number_ok(v, spec, integer=True) for v in items):
            fail()
        return [int(v) for v in items]
    raise AssertionError(f"unknown parameter kind {spec.kind!r}")


def _ranged(name: str, kind: str | None = None, low: float | None = None, optional: bool = False) -> Param:
    """The notebook parameter of the number ``name`` of ``rhvae.validation.RANGES`` (one place for the limits);
    ``kind`` 'ints'/'floats' for a list of them, ``low`` a stricter lower bound."""
    spec = RANGES[name]
    kind = kind or ("int" if spec.kind is int else "float")
    low_open = spec.low_open and low is None
    return Param(kind, spec.low if low is None else low, spec.high, low_open=low_open, optional=optional)


_COMMON = {
    "epochs": _ranged("epochs"),
    "seeds": _ranged("seed", "ints"),
    "data_seed": _ranged("data_seed"),
    "data_source": Param("choice", choices=SOURCES),
    "lr": _ranged("lr"),
    "objective": Param("choice", choices=OBJECTIVES),
    "reuse_cache": Param("bool"),
    "interactive": Param("bool"),
    "quick": Param("bool"),
    "threads": _ranged("threads"),
    "output_dir": Param("path"),
    "cache_dir": Param("path"),
}
_RHVAE = {
    "n_lf": _ranged("n_lf", low=1, optional=True),  # 0 leapfrog steps: the RHVAE would be a VAE
    "eps_lf": _ranged("eps_lf", optional=True),
    "beta_zero": _ranged("beta_zero", optional=True),
    "regularization": _ranged("regularization", optional=True),
}
_HVAE = {
    "hvae_n_lf": _ranged("n_lf", low=1, optional=True),
    "hvae_eps_lf": _ranged("eps_lf", optional=True),
    "hvae_beta_zero": _ranged("beta_zero", optional=True),
}
_SAMPLING = {
    # 0 MCMC steps would show the decoded training codes as "samples": every generation check would be void
    "mcmc_steps": _ranged("mcmc_steps", low=1),
    "n_samples": _ranged("n_samples"),
}
_TEMPERATURE = {"temperature": _ranged("temperature", optional=True)}

#: The parameters of each notebook's ``parameters`` cell and what each accepts.
PARAMETERS: dict[str, dict[str, Param]] = {
    "metric": {
        **_COMMON,
        **_RHVAE,
        "temperatures": _ranged("temperature", "floats"),
        "grid_n": _ranged("grid_n", low=10),
    },
    "reconstruction": {
        **_COMMON,
        **_RHVAE,
        **_TEMPERATURE,
        **_HVAE,
        **_SAMPLING,
        "ll_samples": _ranged("ll_samples"),
        "n_show": Param("int", 1, 100),
    },
    "generation_5": {**_COMMON, **_RHVAE, **_TEMPERATURE, **_HVAE, **_SAMPLING},
    "generation_7_classes": {**_COMMON, **_RHVAE, **_TEMPERATURE, **_SAMPLING, "grid_n": _ranged("grid_n", low=10)},
}


def validate_parameters(experiment: str, namespace: Mapping) -> dict:
    """Check the parameters of ``experiment`` found in ``namespace`` (a notebook passes ``globals()``) and
    return them normalised, with ``quick`` applied: ``{"given": ..., **effective}``.

    Raises ``ValueError`` naming the parameter and its accepted range for a bad value, and for a missing one.
    With ``quick=True`` the keys of ``rhvae.experiments.QUICK_SETTINGS`` that the notebook has (epochs,
    mcmc_steps, n_samples, ll_samples) are replaced by their quick values, except those named in the environment
    variable ``RHVAE_GIVEN_PARAMETERS`` (``run_all.sh --quick -p epochs 2`` trains 2 epochs, not 5).
    """
    if experiment not in PARAMETERS:
        raise ValueError(f"experiment must be one of {tuple(PARAMETERS)}, got {experiment!r}")
    specs = PARAMETERS[experiment]
    missing = [name for name in specs if name not in namespace]
    if missing:
        raise ValueError(f"the {experiment} notebook's parameters cell does not define {', '.join(missing)}")
    given = {name: check_parameter(name, namespace[name], spec) for name, spec in specs.items()}
    params = dict(given)
    if params["quick"]:
        explicit = set(filter(None, os.environ.get(GIVEN_ENV, "").split(",")))
        params.update({k: v for k, v in QUICK_SETTINGS.items() if k in specs and k not in explicit})
    params["given"] = given
    return params


def model_configs(params: Mapping, experiment: str | None = None) -> dict[str, dict]:
    """The model keyword arguments for a run: ``MODEL_CONFIGS`` with the run's non-None overrides (and its
    objective for the HVAE and RHVAE). A None ``temperature`` takes the experiment's paper setting
    (``PAPER_SETTINGS[experiment]['temperature']``, e.g. 0.6 for generation_7_classes) when it has one."""
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
    objective = params.get("objective", "elbo")
    return {
        "vae": dict(MODEL_CONFIGS["vae"]),
        "hvae": {**hvae, "objective": objective},
        "rhvae": {**rhvae, "objective": objective},
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
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        return _jsonable(value.tolist())
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
    """One execution of an experiment notebook: its folder, parameters, numbers, figures and provenance."""

    def __init__(self, experiment: str, params: Mapping):
        self.experiment = experiment
        self.params = dict(params)
        self.threads = set_threads(self.params.get("threads"))
        self.dir = make_run_dir(experiment, self.params.get("output_dir"))
        clear_earlier_run(self.dir)
        self.cache_dir = cache_folder(self.params.get("cache_dir"))
        if self.params.get("reuse_cache", True):  # checked now: a trained model that cannot be saved is lost
            writable_folder(self.cache_dir, "cache_dir")
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
    def data(self, classes=None, n_per_class=None) -> ExperimentData:
        """The experiment subset (default classes and size of the experiment), recorded in the provenance."""
        key = (None if classes is None else tuple(classes), n_per_class)
        if key not in self._data:
            data = experiment_data(
                self.experiment, classes, n_per_class, seed=self.params["data_seed"], source=self.params["data_source"]
            )
            self._data[key] = data
            self.subsets[f"{'-'.join(map(str, data.classes))}x{data.n_per_class}"] = data.provenance()
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
        data = data or self.data()
        with self.timer(f"train_{label}"):
            try:
                trained = train_experiment_model(
                    self.experiment,
                    model,
                    epochs=self.params["epochs"],
                    seed=seed,
                    lr=self.params.get("lr", 1e-3),
                    threads=self.threads,
                    data=data,
                    use_cache=self.params["reuse_cache"],
                    cache_dir=self.cache_dir,
                    progress="notebook" if self.params.get("interactive") else True,
                    **config,
                )
            except TrainingDiverged as err:
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
                return None
        h = trained.history
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
            "train_seconds": trained.provenance.get("train_seconds"),
            "trained_with": trained.provenance.get("environment"),
        }
        where = f"reused from cache {trained.path}" if trained.reused else "trained"
        print(f"{label}: {where}; final train loss {self.models[label]['final_train_loss']}")
        return trained

    def train_over_seeds(self, specs: Mapping[str, tuple[str, Mapping]]) -> dict[int, dict[str, VAE]]:
        """Train (or reuse) every model of ``specs`` (display name → (model kind, config)) for every seed of the
        run's ``seeds``: ``{seed: {name: model}}``, without the models whose training diverged."""
        models: dict[int, dict[str, VAE]] = {}
        for seed in self.params["seeds"]:
            models[seed] = {}
            for name, (kind, config) in specs.items():
                label = f"{name.lower().replace(' ', '').replace('=', '')}_seed{seed}"
                trained = self.train(kind, config, seed, label=label)
                if trained is not None:
                    models[seed][name] = trained.model
        return models

    def generate_over_seeds(self, models: Mapping[int, Mapping[str, VAE]], classes) -> tuple[dict, dict]:
        """Samples of every model of ``train_over_seeds`` (``generate`` with the run's ``n_samples`` and
        ``mcmc_steps``, seeded with the model's seed) and their quality score against ``classes``, recorded as
        ``generation`` ({seed: {name: how they were made, quality}}). Returns ({seed: {name: Generated}},
        {seed: {name: quality score}})."""
        from .quality import quality_score

        with self.timer("generation"):
            generated = {
                seed: {
                    name: generate(model, self.params["n_samples"], self.params["mcmc_steps"], seed=seed)
                    for name, model in by_name.items()
                }
                for seed, by_name in models.items()
            }
        scores = {
            seed: {name: quality_score(g.images, classes) for name, g in by_name.items()}
            for seed, by_name in generated.items()
        }
        self.record(
            generation={
                seed: {name: {**g.info, "quality": scores[seed][name]} for name, g in by_name.items()}
                for seed, by_name in generated.items()
            }
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
                    "environment": environment(),
                    "cache_dir": self.cache_dir,
                    "started": self.started.isoformat(timespec="seconds"),
                    "timings_seconds": {**self.timings, "total": time.perf_counter() - self._t0},
                    "paper_settings": PAPER_SETTINGS.get(self.experiment),
                    "quick_settings": QUICK_SETTINGS,
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
                moves = info.get("acceptance_rate", 1.0) * info.get("mcmc_steps", 1)
                if info.get("sampler") == "riemannian_hmc" and moves < 1:
                    reasons.append(
                        f"{name} (seed {seed}): {moves:.2g} accepted MCMC moves per chain on average "
                        f"(mcmc_steps {info.get('mcmc_steps')}, acceptance {info.get('acceptance_rate', 0):.2f}): "
                        "its samples are essentially the decoded training codes"
                    )
        return reasons


__all__ = [
    "PARAMETERS",
    "compare_over_seeds",
    "over_seeds",
    "evaluation_table",
    "format_table",
    "metric_summary",
    "Generated",
    "Param",
    "Run",
    "all_finite",
    "cache_folder",
    "check_parameter",
    "generate",
    "make_run_dir",
    "model_configs",
    "resolve_path",
    "validate_parameters",
]


# ------------------------------------------------------------------------------------ numbers and figures
def metric_summary(metric: LearnedMetric, codes, grid_n: int = 80) -> dict:
    """Numbers behind a metric picture, on the grid around ``codes``: the floor (d/2) log λ of
    log √det G⁻¹ far from the data, its mean at the codes, its mean over the grid box's border, ``contrast``
    (the mean at the codes minus the larger of the floor and the border mean: 0 for a metric collapsed to λI),
    ``high_fraction``, the share of the box where it is above half-way between the floor and its maximum, and
    ``kappa``, the largest eigenvalue of G⁻¹ at the centroids."""
    from .geometry import latent_grid, metric_magnitude

    codes = torch.as_tensor(codes).detach().to(metric.centroids.dtype)
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
        "contrast": at_codes - max(floor, float(border.mean())),
        "kappa": float(metric.max_eigenvalue()),
        "high_fraction": float((values > floor + 0.5 * (peak - floor)).double().mean()),
        "grid_box": list(grid.extent),
    }


def evaluation_table(models: Mapping[str, VAE], x_test: torch.Tensor, ll_samples: int, seed: int = 0) -> dict:
    """Per model: mean test reconstruction error (BCE summed over pixels, MSE mean over pixels, BCE floor)
    and the importance-sampled log-likelihood with S = ``ll_samples`` (mean and standard error over images)."""
    from .evaluation import log_likelihood, reconstruction_error

    table = {}
    for name, model in models.items():
        start = time.perf_counter()
        rec = reconstruction_error(model, x_test).summary()
        ll = log_likelihood(model, x_test, n_samples=ll_samples, seed=seed).double()
        table[name] = {
            **rec,
            "log_likelihood": float(ll.mean()),
            "log_likelihood_sem": float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else float("nan"),
            "ll_samples": ll_samples,
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
