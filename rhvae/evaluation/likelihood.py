r"""Log-likelihood, ELBO and reconstruction error of a trained VAE, HVAE or RHVAE (docs/design.md §2.4).

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

``exact_log_likelihood`` (d = 2 only): log p(x) = log ∫ p(x|z) N(z; 0, I) dz by adaptive quadrature, without
sampling; it does not depend on the encoder or the flow, only on the decoder. It is the reference the
importance-sampling estimate is judged by: on real test digits the S = 1000 estimate falls several nats below
it (the test posteriors are far from the encoder's Gaussian). ``log_likelihood_table`` reports both: the exact
value as THE log p(x), the estimate and its bias beside it.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rhvae.evaluation.ais import AIS_CHAINS, AIS_LEAPFROG, AIS_STEPS, ais_log_likelihood
from rhvae.models import VAE, check_model, standard_normal_log_density
from rhvae.models.eval_mode import EvalMode
from rhvae.validation import ParameterError, check, check_bool, check_float, check_int

DEFAULT_BATCH_SIZE = 4096  # (image, sample) rows per forward pass: bounds memory at a few tens of MB for D = 784


MAX_FLOW_PASSES = 5e7
"""The most (image, importance sample) pairs one estimate may take (about 90 µs each for an RHVAE on one core)."""


def _generator(seed, generator) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return generator
    return torch.Generator().manual_seed(check("seed", seed))


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
    model = check_model(model)
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
    out = torch.empty(total, dtype=x.dtype, device=x.device)
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

    For the HVAE/RHVAE this is the true ELBO of the tempered flow, Jacobian included (docs/design.md §2.3), whatever
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
    model = check_model(model)
    x = model.check_input(x)
    with EvalMode(model):
        logits = model.decode_logits(model.encode(x)[0])
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        mse = ((torch.sigmoid(logits) - x) ** 2).mean(-1)
    return ReconstructionError(bce, mse, binary_entropy(x))


# ------------------------------------------------------------------------------------ exact log-likelihood (d = 2)
#: The prior mass outside the quadrature box [−box, box]² must stay below e^TAIL_LOG_MASS_LIMIT.
TAIL_LOG_MASS_LIMIT = -50.0
#: The most coarse cells per side of the box (their log-densities for a chunk of images are held in memory).
MAX_COARSE_SIDE = 2000


class NotConverged(UserWarning):
    """``exact_log_likelihood``: an image's value moved by more than the tolerance between the two finest
    resolutions, or its mass reaches the border of the box."""


@dataclass
class ExactLogLikelihood:
    r"""Per-image results (n,) of ``exact_log_likelihood``, float64.

    ``log_px``: log p(x) at the finest resolution reached (the value to report); ``log_px_half``: the same sum
    with the refined cells at half that resolution; ``error`` = |log_px − log_px_half| (nats), the convergence
    check; ``refine``: the split m × m of the refined cells at which the image stopped; ``converged``: ``error``
    ≤ ``tolerance`` and the mass inside the box; ``border_gap``: max of log p(x, z) over the box minus its max on
    the box's border cells (≥ ``window`` means the mass lies inside the box); ``refined_cells``: how many coarse
    cells were refined for each image. ``tail_log_mass``: log of the prior mass outside the box. ``settings``
    and ``seconds`` describe the run.
    """

    log_px: torch.Tensor
    log_px_half: torch.Tensor
    error: torch.Tensor
    refine: torch.Tensor
    converged: torch.Tensor
    border_gap: torch.Tensor
    refined_cells: torch.Tensor
    tail_log_mass: float
    settings: dict
    seconds: float

    def summary(self) -> dict:
        """Means over the images and the checks, JSON-ready."""
        n = len(self.log_px)
        return {
            "mean": float(self.log_px.mean()),
            "std": float(self.log_px.std()) if n > 1 else None,
            "max_error": float(self.error.max()),
            "converged": int(self.converged.sum()),
            "n_images": n,
            "max_refine": int(self.refine.max()),
            "min_border_gap": float(self.border_gap.min()),
            "mean_refined_cells": float(self.refined_cells.double().mean()),
            "tail_log_mass": self.tail_log_mass,
            **self.settings,
            "seconds": self.seconds,
            "seconds_per_image": self.seconds / max(n, 1),
        }


def prior_tail_log_mass(box: float) -> float:
    """log P(z ∉ [−box, box]²) for z ~ N(0, I₂): with p = 2Φ(−box), 1 − (1 − p)² = p (2 − p)."""
    log_p = math.log(2.0) + float(torch.special.log_ndtr(torch.tensor(-box, dtype=torch.float64)))
    return log_p + math.log(2.0 - math.exp(log_p))


def _cell_offsets(step: float, m: int) -> torch.Tensor:
    """The m² midpoints of an m × m split of a cell of side ``step`` centred at 0, (m², 2), float64."""
    t = (torch.arange(m, dtype=torch.float64) + 0.5) * (step / m) - 0.5 * step
    a, b = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], -1)


def _log_joint(model: VAE, z: torch.Tensor, x64: torch.Tensor, chunk: int) -> torch.Tensor:
    """log p(x, z) = x·π(z) − Σ_j softplus(π_j(z)) + log N(z; 0, I) for every point z (P, 2) and image x (n, D),
    (P, n) float64: the decoder runs once per point (in the model's dtype) and all images share it through one
    product π(z) xᵀ; the sums are float64."""
    dtype = model.dec_hidden.weight.dtype
    out = torch.empty(len(z), len(x64), dtype=torch.float64)
    for start in range(0, len(z), chunk):
        zc = z[start : start + chunk]
        # the decoder runs on the model's device; the quadrature's sums stay on the CPU
        logits = model.decode_logits(zc.to(dtype=dtype, device=model.dec_hidden.weight.device)).double().cpu()
        prior = standard_normal_log_density(zc)
        out[start : start + chunk] = logits @ x64.T - (F.softplus(logits).sum(-1) - prior)[:, None]
    return out


def exact_log_likelihood(
    model: VAE,
    x: torch.Tensor,
    box: float = 10.0,
    coarse_step: float = 0.2,
    max_refine: int = 16,
    window: float = 20.0,
    tolerance: float = 0.01,
    chunk: int = 8192,
    warn: bool = True,
) -> ExactLogLikelihood:
    r"""log p(x) = log ∫ p(x|z) N(z; 0, I) dz for a model with a 2-D latent space, by adaptive quadrature.

    1. *Coarse grid.* The box [−box, box]² is cut into square cells of side h = ``coarse_step``; f(z) =
       log p(x|z) + log N(z; 0, I) is evaluated at every cell centre, and each cell's mass is f + log h² (midpoint
       rule). The box must hold the prior: its mass outside, ``prior_tail_log_mass(box)``, must be < e^-50
       (box ≥ 9.8); and the mass must lie inside the box: the border cells must be ``window`` nats below the
       peak (``border_gap``), else the image is flagged.
    2. *Refinement where the mass lies.* The cells within ``window`` nats of the image's coarse maximum, and their
       8 neighbours, are split into m × m sub-cells, each such cell's mass being the midpoint sum of its
       sub-cells; every other cell keeps its coarse mass. log p(x) is the logsumexp of the cell masses, in
       float64. For a Gaussian posterior the cells left coarse hold a fraction e^-window of the mass (20 nats:
       2·10⁻⁹), so their coarse error cannot show at any reported precision.
    3. *Convergence check.* m doubles from 2 up to ``max_refine`` (a power of 2; the default finest sub-cell,
       0.2/16 = 0.0125, is a fraction of the narrowest posterior std of the shipped models, 0.03); an image stops
       at the first m
       whose value differs from the value at m/2 (m = 1: the coarse grid) by at most ``tolerance`` nats. An image
       that does not get there, or whose mass reaches the box's border, is flagged (``converged`` False) and a
       ``NotConverged`` warning says how many (``warn=False`` silences it): use a smaller ``coarse_step``.

    The decoder runs once per grid point for all images together (``chunk`` points at a time); p(x|z) of every
    image at those points is one product logits · xᵀ. The result does not use the encoder or the flow: it is
    the likelihood of the generative model p(z) p(x|z) that VAE, HVAE and RHVAE share.
    """
    model = check_model(model)
    if model.latent_dim != 2:
        raise ParameterError(
            f"exact_log_likelihood integrates over a 2-D latent space: the model's latent_dim must be 2, got "
            f"{model.latent_dim} (use log_likelihood, the importance-sampling estimate)"
        )
    x = model.check_input(x)
    if not len(x):
        raise ValueError("x must hold at least one image, got none")
    box = check_float("box", box, 0.0)
    coarse_step = check_float("coarse_step", coarse_step, 0.0, box)
    warn = check_bool("warn", warn)
    max_refine = check_int("max_refine", max_refine, 2)
    if max_refine & (max_refine - 1):
        raise ParameterError(f"max_refine must be a power of 2 (2, 4, 8, ...), got {max_refine}")
    window = check_float("window", window, 0.0)
    tolerance = check_float("tolerance", tolerance, 0.0)
    chunk = check_int("chunk", chunk, 1)
    tail = prior_tail_log_mass(box)
    if tail >= TAIL_LOG_MASS_LIMIT:
        raise ParameterError(
            f"box must leave less than e^{TAIL_LOG_MASS_LIMIT:g} of the prior outside [-box, box]^2 (box >= 9.8), "
            f"got box={box} (e^{tail:.1f} outside)"
        )
    n_side = max(1, round(2.0 * box / coarse_step))
    if n_side > MAX_COARSE_SIDE:  # the coarse grid is held in memory: refuse it before allocating
        raise ParameterError(
            f"box / coarse_step must give at most {MAX_COARSE_SIDE} coarse cells per side (2·box/coarse_step), "
            f"got box={box}, coarse_step={coarse_step}: {n_side} per side"
        )
    start_time = time.perf_counter()
    h = 2.0 * box / n_side  # the cells tile the box exactly
    centres = (torch.arange(n_side, dtype=torch.float64) + 0.5) * h - box
    cx, cy = torch.meshgrid(centres, centres, indexing="ij")
    cells = torch.stack([cx.flatten(), cy.flatten()], -1)  # (C, 2), row-major over the (n_side, n_side) grid
    x64 = x.double().cpu()
    n = len(x)
    with EvalMode(model):
        coarse = _log_joint(model, cells, x64, chunk) + 2.0 * math.log(h)  # (C, n) coarse cell masses
        peak = coarse.max(0).values
        grid = coarse.T.reshape(n, 1, n_side, n_side)
        border = torch.cat([grid[:, 0, 0], grid[:, 0, -1], grid[:, 0, :, 0], grid[:, 0, :, -1]], -1).max(-1).values
        near = (grid >= peak[:, None, None, None] - window).double()
        marked = F.max_pool2d(near, 3, stride=1, padding=1).reshape(n, -1).T.bool()  # (C, n) cells to refine
        value = torch.logsumexp(coarse, 0)
        previous = value.clone()
        refine = torch.ones(n, dtype=torch.long)
        active = torch.ones(n, dtype=torch.bool)
        m = 1
        while m < max_refine and bool(active.any()):
            m *= 2
            union = marked[:, active].any(1).nonzero().squeeze(1)
            offsets = _cell_offsets(h, m)
            refined = torch.empty(len(union), int(active.sum()), dtype=torch.float64)
            per_chunk = max(1, chunk // (m * m))
            for s in range(0, len(union), per_chunk):
                idx = union[s : s + per_chunk]
                points = (cells[idx][:, None, :] + offsets[None]).reshape(-1, 2)
                f = _log_joint(model, points, x64[active], chunk).reshape(len(idx), m * m, -1)
                refined[s : s + per_chunk] = torch.logsumexp(f, 1) + 2.0 * math.log(h / m)
            mass = coarse[:, active].clone()
            mass[union] = torch.where(marked[union][:, active], refined, mass[union])
            previous[active], value[active] = value[active], torch.logsumexp(mass, 0)
            refine[active] = m
            active = active & ((value - previous).abs() > tolerance)
    error = (value - previous).abs()
    gap = peak - border
    converged = (error <= tolerance) & (gap >= window)
    if warn and not bool(converged.all()):
        warnings.warn(
            f"exact_log_likelihood: {int((~converged).sum())} of {n} images not converged (largest change between "
            f"the two finest resolutions {float(error.max()):.3g} nats > tolerance {tolerance:g}, or mass at the box "
            f"border): use a smaller coarse_step or a larger max_refine",
            NotConverged,
            stacklevel=2,
        )
    settings = {"box": box, "coarse_step": h, "max_refine": max_refine, "window": window, "tolerance": tolerance}
    return ExactLogLikelihood(
        value, previous, error, refine, converged, gap, marked.sum(0), tail, settings, time.perf_counter() - start_time
    )


def log_likelihood_table(
    model: VAE,
    x: torch.Tensor,
    n_samples: int = 1000,
    seed: int = 0,
    *,
    ais_steps: int = AIS_STEPS,
    ais_chains: int = AIS_CHAINS,
    ais_leapfrog: int = AIS_LEAPFROG,
) -> dict:
    r"""The test log-likelihood as the package reports it, JSON-ready (means over the images of x):

    * ``log_likelihood``: the exact log p(x) (``exact_log_likelihood``; None when latent_dim ≠ 2), the value
      every claim uses, with ``log_likelihood_sem`` (standard error over images), ``exact_converged`` (images
      that passed the convergence check), ``exact_max_error`` (nats) and ``exact_seconds_per_image``;
    * ``log_likelihood_is``: the importance-sampling estimate with S = ``n_samples`` (``ll_samples``) draws
      through the model's flow, and ``is_bias`` = mean of (IS − exact) (< 0: the estimate is a stochastic lower
      bound), ``is_bias_min`` its most negative value over the images;
    * ``log_likelihood_method``: ``"exact"`` at latent_dim 2; ``"ais"`` otherwise, where ``log_likelihood`` is the
      AIS estimate (``rhvae.evaluation.ais.ais_log_likelihood`` with ``ais_steps`` temperatures, ``ais_chains``
      chains, ``ais_leapfrog`` leapfrog steps, seeded with ``seed``; the defaults are the AIS function's) with
      its settings (``ais_*``), ``ais_acceptance`` and ``ais_seconds_per_image``, and ``is_bias`` = mean of
      (IS − AIS). The rows at latent_dim 2 hold the same numbers as before AIS existed, plus the method.
    """
    n = len(x)

    def sem(v: torch.Tensor) -> float | None:
        return float(v.std() / math.sqrt(n)) if n > 1 else None

    start = time.perf_counter()
    estimate = log_likelihood(model, x, n_samples=n_samples, seed=seed).double()
    row = {
        "log_likelihood": None,
        "log_likelihood_sem": None,
        "log_likelihood_is": float(estimate.mean()),
        "log_likelihood_is_sem": sem(estimate),
        "ll_samples": n_samples,
        "is_seconds": time.perf_counter() - start,
    }
    if model.latent_dim == 2:
        exact = exact_log_likelihood(model, x)
        bias = estimate - exact.log_px
        row.update(
            log_likelihood=float(exact.log_px.mean()),
            log_likelihood_sem=sem(exact.log_px),
            is_bias=float(bias.mean()),
            is_bias_min=float(bias.min()),
            exact_converged=int(exact.converged.sum()),
            exact_max_error=float(exact.error.max()),
            exact_seconds_per_image=exact.seconds / n,
            log_likelihood_method="exact",
        )
    else:
        ais = ais_log_likelihood(model, x, n_steps=ais_steps, n_chains=ais_chains, n_leapfrog=ais_leapfrog, seed=seed)
        bias = estimate - ais.log_px
        row.update(
            log_likelihood=float(ais.log_px.mean()),
            log_likelihood_sem=sem(ais.log_px),
            log_likelihood_method="ais",
            is_bias=float(bias.mean()),
            is_bias_min=float(bias.min()),
            **ais.settings,
            ais_acceptance=float(ais.acceptance.mean()),
            ais_seconds_per_image=ais.seconds / n,
        )
    return row
