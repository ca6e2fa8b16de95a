"""The models and their maths: VAE, HVAE and RHVAE, the learned metric, and the autograd nodes of the leapfrog.

The bottom layer of the package: it imports nothing from ``rhvae.sampling``, ``rhvae.evaluation``, training,
persistence, ``rhvae.experiments`` or ``rhvae.interfaces`` (tests/test_layering.py).
"""

from collections.abc import Mapping

from rhvae.models.hvae import HVAE, OBJECTIVES
from rhvae.models.rhvae import RHVAE, STEP_BOUNDS
from rhvae.models.vae import VAE, ConfigError, FlowOutput, bernoulli_log_likelihood, standard_normal_log_density

#: Every model class by the name the CLI, the cache keys and the model files use.
MODELS = {"vae": VAE, "hvae": HVAE, "rhvae": RHVAE}


def check_model(model, name: str = "model") -> VAE:
    """``model`` itself if it is one of the package's models (a ``VAE``, ``HVAE`` or ``RHVAE``), else a ``TypeError``
    naming ``name`` and what it got."""
    if not isinstance(model, VAE):
        raise TypeError(f"{name} must be a rhvae VAE, HVAE or RHVAE, got {type(model).__name__}")
    return model


def check_models(models, name: str = "models", allow_empty: bool = False) -> Mapping[str, VAE]:
    """``models`` itself if it is a dict of display name → the package's models (``check_model`` for each): a
    ``TypeError`` for another type, a ``ValueError`` for an empty dict unless ``allow_empty`` (a seed whose every
    model diverged has none)."""
    if not isinstance(models, Mapping):
        raise TypeError(f"{name} must be a dict of name -> model, got {type(models).__name__}")
    if not models and not allow_empty:
        raise ValueError(f"{name} must hold at least one model")
    for key, model in models.items():
        check_model(model, f"{name}[{key!r}]")
    return models


def check_models_by_seed(models, name: str = "models") -> Mapping[int, Mapping[str, VAE]]:
    """``models`` itself if it is a non-empty dict of seed → (name → model) (``check_models`` for each; a seed whose
    every model diverged may hold an empty dict): a ``TypeError`` or ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(models, Mapping):
        raise TypeError(f"{name} must be a dict of seed -> (name -> model), got {type(models).__name__}")
    if not models:
        raise ValueError(f"{name} must hold at least one seed")
    for seed, by_name in models.items():
        check_models(by_name, f"{name}[{seed!r}]", allow_empty=True)
    return models


__all__ = [
    "HVAE",
    "MODELS",
    "OBJECTIVES",
    "RHVAE",
    "STEP_BOUNDS",
    "VAE",
    "ConfigError",
    "FlowOutput",
    "bernoulli_log_likelihood",
    "check_model",
    "check_models",
    "check_models_by_seed",
    "standard_normal_log_density",
]
