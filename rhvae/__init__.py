"""rhvae: reference reproducibility package for the Riemannian Hamiltonian VAE (arXiv 2010.11518).

The sub-packages are the layers, lowest first (tests/test_layering.py): ``rhvae.models`` (the models and their
maths), ``rhvae.sampling`` and ``rhvae.evaluation``, then ``rhvae.training``, ``rhvae.persistence`` (model files)
and ``rhvae.shipped`` (the index of the shipped models), then ``rhvae.experiments``, and ``rhvae.interfaces`` (CLI,
widgets, figures) on top; ``files``, ``history``, ``paths``, ``provenance``, ``signals``, ``validation`` and
``version`` are used by all. This module gathers what a user needs most.
"""

from rhvae.evaluation.ais import ais_log_likelihood, bdmc
from rhvae.evaluation.likelihood import elbo, exact_log_likelihood, log_likelihood, reconstruction_error
from rhvae.experiments.data import EXPERIMENTS, DataError, ExperimentData, experiment_data, load_mnist
from rhvae.interfaces.pythae_bridge import from_pythae, to_pythae
from rhvae.models import HVAE, MODELS, RHVAE, VAE, ConfigError
from rhvae.persistence import ModelFileError, load_model, save_model
from rhvae.sampling.hmc import generate, riemannian_hmc, sample_prior
from rhvae.shipped import load_shipped, shipped_models
from rhvae.training import train
from rhvae.version import __version__

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
    "__version__",
    "ais_log_likelihood",
    "bdmc",
    "elbo",
    "exact_log_likelihood",
    "experiment_data",
    "from_pythae",
    "generate",
    "load_mnist",
    "load_model",
    "load_shipped",
    "log_likelihood",
    "reconstruction_error",
    "riemannian_hmc",
    "sample_prior",
    "save_model",
    "shipped_models",
    "to_pythae",
    "train",
]
