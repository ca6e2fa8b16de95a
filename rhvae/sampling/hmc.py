r"""Generation (docs/design.md §2.5): prior sampling for any model, Riemannian HMC in the latent space of an RHVAE.

**Prior sampling** (VAE, HVAE): z ~ N(0, I), shown as the decoder mean σ(π(z)).

**RHVAE sampler** (the paper's "MCMC steps"). The target is the Riemannian volume of the learned metric

    π(z) ∝ √det G⁻¹(z) · 1_B(z),    G⁻¹(z) = Σᵢ Mᵢ exp(−‖z − cᵢ‖²/T²) + λ I,

which is high near the training codes cᵢ. Far from them π tends to the constant λ^{d/2}, so π is not normalisable
on R^d; it is restricted to an axis-aligned box B = [low, high], by default the bounding box of the centroids
enlarged by ``margin`` = 3 T on every side (T the metric temperature). On B it is a proper density.

HMC with unit mass: U(z) = −log √det G⁻¹(z), H(z, p) = U(z) + ½‖p‖². Every MCMC step draws a fresh p ~ N(0, I),
runs ``n_lf`` standard leapfrog steps of size ε with the exact gradient
∇U = −½ Σᵢ tr(G Mᵢ) ∂wᵢ/∂z (``LearnedMetric.log_det_and_grad``), and accepts the end point (z′, p′) with
probability min(1, exp(H(z, p) − H(z′, p′))). **Box rule: a proposal whose end point lies outside B is rejected**
(π(z′) = 0 there). The leapfrog map followed by a momentum flip is a volume-preserving involution whatever the
path does in between, so this is exactly the Metropolis–Hastings correction for the target π·1_B: detailed balance
holds. Non-finite energies are rejected as well. All chains run in parallel as one batch; chains start at training
centroids drawn with the seed (without replacement when ``n_samples`` ≤ the number of centroids inside B, with
replacement otherwise).

**Many centroids.** For a metric of many centroids every O(N) evaluation is replaced, and the sampler targets the
replacement exactly:

* above ``rhvae.sampling.grid_target.MIN_CENTROIDS`` (1,000) centroids in a 2-D latent space, by the **grid target**
  (``rhvae.sampling.grid_target``): log det G⁻¹ interpolated by bicubic
  Hermite patches on a grid over B, built once in O(nodes · N) and then O(1) per step; its largest difference to
  log det G⁻¹ over the cell centres is checked to be at most ``grid_tolerance`` (so log π moves by at most half of
  it there), and recorded with the grid in ``params["grid"]``;
* otherwise above ``rhvae.sampling.truncation.MIN_CENTROIDS`` (10,000) centroids (another d, no grid meets the
tolerance,
  or ``grid_tolerance=None``) by the **truncated metric** (``rhvae.sampling.truncation.TruncatedMetric``, tolerance
  ``truncation_tolerance``): π_r ∝ √det G_r⁻¹ with
  ‖G⁻¹ − G_r⁻¹‖ ≤ τ λ, so log π moves by at most (d/2) log(1 + τ) anywhere; its settings and error bounds are in
  ``params["truncation"]``.

Both records are None when not used; with both tolerances None the full sum is always used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from rhvae.models import RHVAE, VAE
from rhvae.models.metric import LearnedMetric
from rhvae.sampling.geometric import geometric_hmc
from rhvae.sampling.grid_target import DEFAULT_TOLERANCE as GRID_TOLERANCE
from rhvae.sampling.grid_target import MIN_CENTROIDS as GRID_MIN_CENTROIDS
from rhvae.sampling.grid_target import GridTarget, interpolate_if_possible
from rhvae.sampling.limits import MAX_LEAPFROG_STEPS
from rhvae.sampling.truncation import DEFAULT_TOLERANCE, TruncatedMetric, truncate_if_large
from rhvae.validation import RANGES, ParameterError, check, check_bool, check_float, check_int

DEFAULT_EPS_PER_TEMPERATURE = 0.05
"""Default leapfrog step ε = 0.05 · T: the target varies on the length scale T of the metric's kernel."""
SECONDS_PER_STEP = 6e-7
"""Measured cost of one chain's leapfrog step with ~100 centroids on 2 threads (for the refusal's estimate: 6e-6
with 6,400 centroids)."""
DEFAULT_MARGIN_PER_TEMPERATURE = 3.0
"""Default box: the centroids' bounding box enlarged by 3 T on each side (the kernel weight there is e^{-9})."""


# ------------------------------------------------------------------------------------------------- prior sampling
@dataclass
class PriorSamples:
    """z ~ N(0, I) (n, d) and the decoder means σ(π(z)) (n, D)."""

    z: torch.Tensor
    images: torch.Tensor
    seed: int


def sample_prior(model: VAE, n: int = 100, seed: int = 0) -> PriorSamples:
    """Draw n latent codes z ~ N(0, I) from a seeded ``torch.Generator`` and decode them (any model)."""
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a rhvae VAE, HVAE or RHVAE, got {type(model).__name__}")
    n = check("n_samples", n, "n")
    seed = check("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    dtype = model.dec_hidden.weight.dtype
    z = torch.randn(n, model.latent_dim, generator=gen, dtype=dtype).to(model.dec_hidden.weight.device)
    with torch.no_grad():
        images = model.decode(z)
    return PriorSamples(z, images, seed)


# ------------------------------------------------------------------------------------------------ Riemannian HMC
@dataclass
class HMCSamples:
    """Result of ``riemannian_hmc``.

    ``z`` (n, d): the chains' states after the last MCMC step; ``images`` (n, D): their decoder means (None when
    the sampler was given a bare metric); ``acceptance_rate``: accepted / (n · mcmc_steps); ``acceptance_per_chain``
    (n,): each chain's accepted fraction; ``box_low``/``box_high`` (d,): the box B; ``start_indices`` (n,): the
    centroid each chain started from; ``trace`` ((mcmc_steps + 1), n, d) if requested; ``params``: the settings.
    """

    z: torch.Tensor
    images: torch.Tensor | None
    acceptance_rate: float
    acceptance_per_chain: torch.Tensor
    box_low: torch.Tensor
    box_high: torch.Tensor
    start_indices: torch.Tensor
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    trace: torch.Tensor | None = None


def default_box(
    metric: LearnedMetric | TruncatedMetric, margin: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The centroids' bounding box enlarged by ``margin`` (default 3 T) on every side: (low, high), each (d,)."""
    if margin is None:
        margin = DEFAULT_MARGIN_PER_TEMPERATURE * metric.temperature
    margin = check_float("margin", margin, 0.0, low_inclusive=True)
    if metric.centroids.shape[0] == 0:
        raise ValueError("the metric has no centroids")
    return metric.centroids.min(0).values - margin, metric.centroids.max(0).values + margin


def _resolve_box(box, metric: LearnedMetric | TruncatedMetric, margin) -> tuple[torch.Tensor, torch.Tensor]:
    if box is None:
        return default_box(metric, margin)
    if margin is not None:
        raise ValueError("give either box or margin, not both")
    d, dtype = metric.dim, metric.centroids.dtype
    try:
        low, high = box
        low = torch.as_tensor(low, dtype=dtype, device=metric.centroids.device).reshape(-1)
        high = torch.as_tensor(high, dtype=dtype, device=metric.centroids.device).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"box must be a pair (low, high) of length-{d} sequences, got {box!r}") from err
    if low.shape != (d,) or high.shape != (d,):
        raise ValueError(
            f"box must be a pair (low, high) of length-{d} sequences, got shapes {low.shape}, {high.shape}"
        )
    if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (low < high).all()):
        raise ValueError(f"box must have finite bounds with low < high in every coordinate, got {box!r}")
    return low, high


def _inside(z: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return ((z >= low) & (z <= high)).all(-1)


def large_metric_target(metric, low, high, grid_tolerance: float | None, truncation_tolerance: float | None):
    """What the sampler evaluates for ``metric`` on the box [low, high] (module docstring, "Many centroids"): above
    1,000 centroids the grid target if ``grid_tolerance`` is given and met, else ``truncate_if_large`` (the
    truncated metric above 10,000 centroids if ``truncation_tolerance`` is given, else the metric itself; a
    ``TruncatedMetric`` or a ``GridTarget`` given as the metric is used as it is)."""
    if grid_tolerance is not None and isinstance(metric, LearnedMetric) and len(metric.centroids) > GRID_MIN_CENTROIDS:
        grid = interpolate_if_possible(metric, low, high, grid_tolerance)
        if grid is not None:
            return grid
    return truncate_if_large(metric, truncation_tolerance)


#: Leapfrog steps per MCMC step of the sampler (the paper's).
DEFAULT_N_LF = 10
#: The paper's sampler settings, the defaults of every sampler call, widget and CLI option: MCMC steps per chain (90;
#: the 7-class experiment uses 150) and samples per model (100).
DEFAULT_MCMC_STEPS = 90
DEFAULT_N_SAMPLES = 100


def _model_and_metric(model_or_metric) -> tuple[RHVAE | None, LearnedMetric | TruncatedMetric | GridTarget]:
    """(the RHVAE to decode with or None, the target's metric) of the sampler's first argument."""
    if isinstance(model_or_metric, RHVAE):
        return model_or_metric, model_or_metric.metric()
    if isinstance(model_or_metric, (LearnedMetric, TruncatedMetric, GridTarget)):
        return None, model_or_metric
    raise TypeError(
        "model_or_metric must be an RHVAE or a LearnedMetric (or a TruncatedMetric or GridTarget), "
        f"got {type(model_or_metric).__name__}"
    )


def check_work(n_samples: int, mcmc_steps: int, n_lf: int = DEFAULT_N_LF) -> None:
    """Refuse, before any work, a run of more than ``MAX_LEAPFROG_STEPS`` leapfrog steps (also called by callers
    that do other work first, such as ``rhvae.experiments.tables.evaluate_model``)."""
    steps = n_samples * mcmc_steps * n_lf
    if steps > MAX_LEAPFROG_STEPS:
        raise ValueError(
            f"n_samples × mcmc_steps × n_lf = {n_samples} × {mcmc_steps} × {n_lf} = {steps:.2g} leapfrog steps, "
            f"about {steps * SECONDS_PER_STEP / 3600:.1f} h of CPU or more: at most {MAX_LEAPFROG_STEPS:.0e}; "
            "lower one of them"
        )


def _starting_centroids(centroids, low, high, n_samples: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of the chains' starting centroids: ``n_samples`` distinct centroids inside the box when there are
    enough, else drawn with replacement."""
    candidates = torch.nonzero(_inside(centroids, low, high)).flatten()
    if len(candidates) == 0:
        raise ValueError("no training centroid lies inside the box: the chains need a starting point inside it")
    if n_samples <= len(candidates):
        return candidates[torch.randperm(len(candidates), generator=gen)[:n_samples]]
    return candidates[torch.randint(len(candidates), (n_samples,), generator=gen)]


def _mcmc_step(target, z, U, grad, eps: float, n_lf: int, low, high, gen: torch.Generator):
    """One MCMC step of every chain: a fresh momentum p ~ N(0, I), ``n_lf`` leapfrog steps of size ``eps`` on
    U = −½ log det G⁻¹, and the Metropolis–Hastings test (a proposal outside the box is rejected). Returns the new
    (z, U, ∇U) and which chains accepted."""
    dtype = z.dtype
    p = torch.randn(z.shape, generator=gen, dtype=dtype).to(z.device)  # CPU draws: the same on any device
    H0 = U + 0.5 * (p * p).sum(-1)
    z_new = z
    p_new = p - 0.5 * eps * grad
    for step in range(n_lf):
        z_new = torch.add(z_new, p_new, alpha=eps)
        log_det, grad_log_det = target.log_det_and_grad(z_new)
        # p − ε ∇U with ∇U = −½ ∇ log det G⁻¹ (a half step at the end)
        p_new = torch.add(p_new, grad_log_det, alpha=0.5 * (eps if step < n_lf - 1 else 0.5 * eps))
    U_new, g = -0.5 * log_det, -0.5 * grad_log_det
    H1 = U_new + 0.5 * (p_new * p_new).sum(-1)
    log_u = torch.log(torch.rand(len(z), generator=gen, dtype=dtype)).to(z.device)
    accept = _inside(z_new, low, high) & torch.isfinite(H1) & (log_u < H0 - H1)
    z = torch.where(accept[:, None], z_new, z)
    U = torch.where(accept, U_new, U)
    grad = torch.where(accept[:, None], g, grad)
    return z, U, grad, accept


def riemannian_hmc(
    model_or_metric: RHVAE | LearnedMetric,
    n_samples: int = DEFAULT_N_SAMPLES,
    mcmc_steps: int = DEFAULT_MCMC_STEPS,
    n_lf: int = DEFAULT_N_LF,
    eps: float | None = None,
    seed: int = 0,
    box=None,
    margin: float | None = None,
    keep_trace: bool = False,
    truncation_tolerance: float | None = DEFAULT_TOLERANCE,
    grid_tolerance: float | None = GRID_TOLERANCE,
) -> HMCSamples:
    r"""HMC targeting π(z) ∝ √det G⁻¹(z) on a box B (module docstring), ``n_samples`` chains in parallel.

    Parameters
    ----------
    model_or_metric: a trained RHVAE (its frozen metric is used and the samples are decoded), a ``LearnedMetric``
        or a ``TruncatedMetric`` or ``GridTarget`` (used as it is).
    n_samples: number of chains = number of samples (≥ 1).
    mcmc_steps: MCMC steps per chain (≥ 0; the paper uses 90, or 150 for the 7-class experiment).
    n_lf: leapfrog steps per MCMC step (≥ 1).
    eps: leapfrog step size (> 0); default 0.05 · T.
    seed: seeds the ``torch.Generator`` that picks the starting centroids, momenta and MH uniforms: the same seed
        gives identical samples.
    box: (low, high), each of length d, or None for the default box (centroid bounding box ± ``margin``).
    margin: enlargement of the default box on every side (≥ 0); default 3 · T. Only with ``box=None``.
    keep_trace: also return every state, shape (mcmc_steps + 1, n_samples, d).
    truncation_tolerance: τ in (0, 0.1] of the truncated metric used above 10,000 centroids when the grid target is
        not (module docstring): ‖G⁻¹ − G_r⁻¹‖ ≤ τ λ. None: the full sum instead.
    grid_tolerance: in (0, 0.1], the largest accepted |f̃ − log det G⁻¹| at the grid's cell centres (in nats) of
        the grid target used above 1,000 centroids in 2-D (module docstring). None: never the grid.
    """
    model, metric = _model_and_metric(model_or_metric)
    if truncation_tolerance is not None:
        truncation_tolerance = check("truncation_tolerance", truncation_tolerance)
    if grid_tolerance is not None:
        grid_tolerance = check("grid_tolerance", grid_tolerance)
    n_samples, mcmc_steps = check("n_samples", n_samples), check("mcmc_steps", mcmc_steps)
    n_lf = check_int("n_lf", n_lf, 1, RANGES["n_lf"].high)
    seed, keep_trace = check("seed", seed), check_bool("keep_trace", keep_trace)
    given_eps = eps is not None
    eps = DEFAULT_EPS_PER_TEMPERATURE * metric.temperature if eps is None else check_float("eps", eps, 0.0)
    check_work(n_samples, mcmc_steps, n_lf)
    low, high = _resolve_box(box, metric, margin)
    diagonal = float(torch.linalg.vector_norm(high - low))
    if given_eps and eps > diagonal:  # a step across the whole box only proposes states outside it (or overflows)
        raise ValueError(f"eps must be > 0 and <= the box's diagonal {diagonal:.4g}, got {eps:g}")

    start = time.perf_counter()
    target = large_metric_target(metric, low, high, grid_tolerance, truncation_tolerance)
    gen = torch.Generator().manual_seed(seed)
    dtype = metric.centroids.dtype
    start_indices = _starting_centroids(metric.centroids.detach(), low, high, n_samples, gen)
    with torch.no_grad():
        z = metric.centroids.detach()[start_indices].clone()
        log_det, grad_log_det = target.log_det_and_grad(z)
        U, grad = -0.5 * log_det, -0.5 * grad_log_det  # U = −½ log det G⁻¹, ∇U = −½ ∇ log det G⁻¹
        accepted = torch.zeros(n_samples, dtype=torch.long, device=z.device)
        trace = [z.clone()] if keep_trace else None
        for _ in range(mcmc_steps):
            z, U, grad, accept = _mcmc_step(target, z, U, grad, eps, n_lf, low, high, gen)
            accepted += accept.long()
            if keep_trace:
                trace.append(z.clone())
        images = model.decode(z) if model is not None else None

    per_chain = accepted.to(dtype) / max(mcmc_steps, 1)
    params = {
        "n_samples": n_samples,
        "mcmc_steps": mcmc_steps,
        "n_lf": n_lf,
        "eps": eps,
        "seed": seed,
        "box_low": low.tolist(),
        "box_high": high.tolist(),
        "temperature": metric.temperature,
        "regularization": metric.regularization,
        "box_rule": "reject proposals whose end point leaves the box",
        "truncation": target.describe() if isinstance(target, TruncatedMetric) else None,
        "grid": target.describe() if isinstance(target, GridTarget) else None,
    }
    return HMCSamples(
        z=z,
        images=images,
        acceptance_rate=float(accepted.sum()) / max(n_samples * mcmc_steps, 1),
        acceptance_per_chain=per_chain,
        box_low=low,
        box_high=high,
        start_indices=start_indices,
        params=params,
        seconds=time.perf_counter() - start,
        trace=torch.stack(trace) if keep_trace else None,
    )


PRIOR_TARGET = "z ~ N(0, I) (prior), decoded (decoder mean)"
HMC_TARGET = "HMC on pi(z) ∝ sqrt(det G^-1(z)) restricted to a box around the centroids, decoded (decoder mean)"


@dataclass
class Generated:
    """Generated images (n, D), their latent codes z (n, d) and how they were made (JSON-ready ``info``)."""

    images: torch.Tensor
    z: torch.Tensor
    info: dict


GEOMETRIC_TARGET = (
    "HMC on pi(z) ∝ sqrt(det G(z)), G(z) = sum_i Sigma_i^-1 omega_i(z) + lambda exp(-tau |z|^2) I of the encoder on "
    "x_train (Chadebec & Allassonniere 2022, Eq. 7), decoded (decoder mean)"
)
#: The values of ``generate``'s ``sampler`` option.
SAMPLERS = ("paper", "prior", "geometric")


def generate(
    model: VAE,
    n_samples: int,
    mcmc_steps: int,
    seed: int = 0,
    temperature: float | None = None,
    *,
    sampler: str = "paper",
    x_train=None,
) -> Generated:
    """Samples of a trained model.

    ``sampler="paper"`` (the default): as the paper makes them, the RHVAE by Riemannian HMC on its (frozen,
    possibly re-evaluated at ``temperature``) metric with ``mcmc_steps`` steps, the VAE and HVAE from the prior.
    ``sampler="prior"``: z ~ N(0, I) for any model, the RHVAE included (``mcmc_steps`` unused).
    ``sampler="geometric"``: the geometry-aware sampler of Chadebec & Allassonnière 2022
    (``rhvae.sampling.geometric.geometric_hmc`` with its defaults and ``mcmc_steps``) on the model's encoder and
    its training images ``x_train``, for any model. ``temperature`` applies to ``"paper"`` only, ``x_train`` to
    ``"geometric"`` only. ``info`` records the sampler and its settings.
    """
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ParameterError(f"sampler must be one of {', '.join(map(repr, SAMPLERS))}, got {sampler!r}")
    if sampler != "paper" and temperature is not None:
        raise ParameterError(f"temperature applies to sampler='paper' (an RHVAE's metric) only, not {sampler!r}")
    if sampler == "geometric" and x_train is None:
        raise ParameterError("x_train (the model's training images, (N, D) in [0, 1]) is needed by sampler='geometric'")
    if sampler != "geometric" and x_train is not None:
        raise ParameterError(f"x_train is used by sampler='geometric' only, not {sampler!r}")
    start = time.perf_counter()
    if sampler == "geometric":
        samples = geometric_hmc(model, x_train, n_samples=n_samples, mcmc_steps=mcmc_steps, seed=seed)
        images, z = samples.images, samples.z
        info = {
            "sampler": "geometric_hmc",
            "target": GEOMETRIC_TARGET,
            "acceptance_rate": samples.acceptance_rate,
            **samples.params,
        }
    elif sampler == "paper" and isinstance(model, RHVAE):
        samples = riemannian_hmc(model.metric(temperature), n_samples=n_samples, mcmc_steps=mcmc_steps, seed=seed)
        with torch.no_grad():
            images = model.decode(samples.z.to(model.dec_hidden.weight.dtype))
        info = {
            "sampler": "riemannian_hmc",
            "target": HMC_TARGET,
            "acceptance_rate": samples.acceptance_rate,
            **samples.params,
            "metric_temperature_trained": model.temperature,
        }
        z = samples.z
    else:
        prior = sample_prior(model, n=n_samples, seed=seed)
        images, z = prior.images, prior.z
        info = {"sampler": "prior", "target": PRIOR_TARGET, "n_samples": n_samples, "seed": seed}
    info["seconds"] = time.perf_counter() - start
    return Generated(images, z, info)
