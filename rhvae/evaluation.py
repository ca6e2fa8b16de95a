r"""Log-likelihood, ELBO and reconstruction error of a trained VAE, HVAE or RHVAE (DESIGN §2.4).

Notation (paper): x ∈ [0, 1]^D an image, q(z₀|x) = N(μ(x), diag σ²(x)) the encoder, p(x|z) the Bernoulli decoder
with logits π(z), p(z) = N(0, I). For the HVAE/RHVAE the flow maps (z₀, ρ₀), ρ₀ ~ N(0, G(z₀)/β₀), through K
tempered leapfrog steps to (z_K, ρ_K). One draw s gives the log importance weight

    log w_s = log p(x, z_K^s) + log N(ρ_K^s; 0, G(z_K^s)) − log q(z₀^s|x) − log N(ρ₀^s; 0, G(z₀^s)/β₀) + (d/2) log β₀

(VAE: log w_s = log p(x, z₀^s) − log q(z₀^s|x)). This is ``FlowOutput.log_weight`` of the models. Since
E[w_s] = p(x),

* ``elbo``:           ELBO(x) ≈ (1/S) Σ_s log w_s                       (a lower bound of log p(x));
* ``log_likelihood``: log p(x) ≈ log (1/S) Σ_s w_s = logsumexp_s(log w_s) − log S.

The importance-sampling estimate is itself a stochastic lower bound, E[log p̂_S(x)] ≤ log p(x), which increases
with S (Burda et al. 2016) and is ≥ the S-sample mean of log w_s for the same draws (Jensen). The RHVAE is
evaluated in eval mode, i.e. with its frozen metric (cᵢ, Mᵢ) of the training images.

``reconstruction_error``: the decoder mean x̂ = σ(π(μ(x))) at the encoder mean, per image

    BCE(x) = −Σ_j [x_j log x̂_j + (1 − x_j) log(1 − x̂_j)] = −log p(x | z = μ(x))    (summed over the D pixels),
    MSE(x) = (1/D) Σ_j (x̂_j − x_j)²                                               (mean over the D pixels).

For grey-level x the BCE is bounded below by the binary entropy Σ_j H(x_j) (reached iff x̂ = x), reported as
``bce_floor``; it is 0 for binary images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models import VAE
from .validation import check, check_int

DEFAULT_BATCH_SIZE = 4096  # (image, sample) rows per forward pass: bounds memory at a few tens of MB for D = 784


MAX_FLOW_PASSES = 5e7
"""The most (image, importance sample) pairs one estimate may take (about 90 µs each for an RHVAE on one core)."""


def _check_model(model) -> VAE:
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a rhvae VAE, HVAE or RHVAE, got {type(model).__name__}")
    return model


def _generator(seed, generator) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return generator
    return torch.Generator().manual_seed(check("seed", seed))


class EvalMode:
    """Eval mode and no autograd for the duration of a block; the previous training flag is restored after."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        self.no_grad.__exit__(*exc)
        return False


def log_weights(
    model: VAE,
    x: torch.Tensor,
    n_samples: int = 1000,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""The (n, S) matrix of log importance weights log w_s(xᵢ) (module docstring), S = ``n_samples`` draws per image.

    Each image is replicated S times and the (n·S) rows go through ``model`` (eval mode, no autograd) in chunks of
    at most ``batch_size`` rows, so memory stays bounded whatever S. Randomness comes from ``generator`` or, if it
    is None, from a fresh ``torch.Generator`` seeded with ``seed``; the result is deterministic given
    (seed, batch_size) — a different ``batch_size`` splits the random stream differently.
    """
    model = _check_model(model)
    x = model.check_input(x)
    n_samples = check("ll_samples", n_samples, "n_samples")
    batch_size = check_int("batch_size", batch_size, 1)
    gen = _generator(seed, generator)
    n = x.shape[0]
    total = n * n_samples
    if total > MAX_FLOW_PASSES:
        raise ValueError(
            f"{n} images × n_samples {n_samples} = {total:.2g} passes through the model: at most "
            f"{MAX_FLOW_PASSES:.0e} (about an hour of CPU for an RHVAE); lower n_samples or evaluate fewer images"
        )
    out = torch.empty(total, dtype=x.dtype)
    with EvalMode(model):
        for start in range(0, total, batch_size):
            rows = torch.arange(start, min(start + batch_size, total))
            out[start : start + len(rows)] = model(x[rows // n_samples], gen).log_weight
    return out.reshape(n, n_samples)


def log_likelihood(
    model: VAE,
    x: torch.Tensor,
    n_samples: int = 1000,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Importance-sampling estimate log p̂(xᵢ) = logsumexp_s(log w_s(xᵢ)) − log S, per image, shape (n,).

    S = ``n_samples`` (≥ 1; the paper-scale setting is S = 1000) draws through the model's flow (HVAE/RHVAE) or
    from the encoder (VAE); see ``log_weights`` for ``batch_size``, ``seed`` and ``generator``. With S = 1 it is a
    one-sample ELBO estimate; its expectation increases with S towards log p(x).
    """
    lw = log_weights(model, x, n_samples, batch_size, seed, generator)
    return torch.logsumexp(lw, dim=1) - math.log(n_samples)


def elbo(
    model: VAE,
    x: torch.Tensor,
    n_samples: int = 100,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Monte-Carlo estimate of the true ELBO (1/S) Σ_s log w_s(xᵢ), per image, shape (n,).

    For the HVAE/RHVAE this is the true ELBO of the tempered flow, Jacobian included (DESIGN §2.3), whatever
    ``objective`` the model was trained with. For the same draws it is ≤ ``log_likelihood``.
    """
    return log_weights(model, x, n_samples, batch_size, seed, generator).mean(dim=1)


def binary_entropy(x: torch.Tensor) -> torch.Tensor:
    """Σ_j H(x_j) = −Σ_j [x_j log x_j + (1 − x_j) log(1 − x_j)] (0 log 0 = 0), per image: the smallest BCE any
    reconstruction of x can reach."""
    return -(torch.xlogy(x, x) + torch.xlogy(1.0 - x, 1.0 - x)).sum(-1)


@dataclass
class ReconstructionError:
    """Per-image reconstruction errors (n,) of the decoder mean x̂ = σ(π(μ(x))).

    ``bce``: −Σ_j [x_j log x̂_j + (1 − x_j) log(1 − x̂_j)], summed over pixels (nats) = −log p(x | μ(x));
    ``mse``: (1/D) Σ_j (x̂_j − x_j)², the mean over pixels; ``bce_floor``: Σ_j H(x_j), the BCE of a perfect
    reconstruction (so ``bce − bce_floor`` ≥ 0 is the KL from x to x̂, summed over pixels).
    """

    bce: torch.Tensor
    mse: torch.Tensor
    bce_floor: torch.Tensor

    def summary(self) -> dict:
        """Means over the images, as floats."""
        return {
            "bce": float(self.bce.mean()),
            "mse": float(self.mse.mean()),
            "bce_floor": float(self.bce_floor.mean()),
        }


def reconstruction_error(model: VAE, x: torch.Tensor) -> ReconstructionError:
    """Per-image BCE (summed over pixels) and MSE (mean over pixels) of the decoder mean at z = μ(x)."""
    model = _check_model(model)
    x = model.check_input(x)
    with EvalMode(model):
        logits = model.decode_logits(model.encode(x)[0])
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        mse = ((torch.sigmoid(logits) - x) ** 2).mean(-1)
    return ReconstructionError(bce, mse, binary_entropy(x))
