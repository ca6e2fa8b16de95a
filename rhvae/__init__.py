"""rhvae: reference reproducibility package for the Riemannian Hamiltonian VAE (arXiv 2010.11518)."""

from .data import EXPERIMENTS, DataError, ExperimentData, experiment_data, load_mnist
from .models import HVAE, MODELS, RHVAE, VAE, ConfigError
from .persistence import ModelFileError, load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "EXPERIMENTS",
    "HVAE",
    "MODELS",
    "RHVAE",
    "VAE",
    "ConfigError",
    "DataError",
    "ExperimentData",
    "ModelFileError",
    "experiment_data",
    "load_mnist",
    "load_model",
    "save_model",
]
