"""The models and their maths: VAE, HVAE and RHVAE, the learned metric, and the autograd nodes of the leapfrog.

The bottom layer of the package: it imports nothing from ``rhvae.sampling``, ``rhvae.evaluation``, training,
persistence, ``rhvae.experiments`` or ``rhvae.interfaces`` (tests/test_layering.py).
"""

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
    "standard_normal_log_density",
]
