r"""The geometry-aware sampler of Chadebec & Allassonnière 2022 ("A Geometric Perspective on Variational
Autoencoders", NeurIPS 2022, arXiv 2209.07370): the encoder of any trained VAE read as a Riemannian metric, and HMC
on the Riemannian uniform density of that metric.

**The metric** (their Eq. 7). For training images x₁ … x_N with codes cᵢ = μ(xᵢ) and encoder covariances
Σᵢ = diag σ²(xᵢ),

    G(z) = Σᵢ Σᵢ⁻¹ ωᵢ(z) + λ e^{−τ‖z‖²} I_d,    ωᵢ(z) = exp(−(z − cᵢ)ᵀ Σᵢ⁻¹ (z − cᵢ) / ρ²),

a Gaussian kernel in the Mahalanobis distance of Σᵢ⁻¹ around each code, of bandwidth ρ = maxᵢ minⱼ≠ᵢ ‖cᵢ − cⱼ‖
(the largest distance from a centroid to its nearest other centroid, so that every centroid's kernel reaches a
neighbour). Every Σᵢ is diagonal, so G(z) is diagonal: G(z) = diag g(z) with

    g_k(z) = Σᵢ ωᵢ(z)/σ²ᵢₖ + λ e^{−τ‖z‖²} > 0,

symmetric positive definite at every z. It is evaluated in the log domain (log g_k = logsumexp over the N + 1
terms), so log √det G(z) = ½ Σ_k log g_k(z) and its gradient stay finite wherever the kernels or e^{−τ‖z‖²}
underflow; only ``GeometricMetric.G`` itself, the matrix, exponentiates (it underflows to 0 for τ‖z‖² ≳ 700).

**The target** is the Riemannian uniform density π(z) ∝ √det G(z) on R^d. Far from the codes √det G ≈ λ^{d/2}
e^{−dτ‖z‖²/2}, so for τ > 0 π is normalisable on R^d (no box); for τ = 0 (the official code's metric) it is not,
and a chain is then only "what 100 steps from a training code give".

**The sampler** is HMC with unit mass: U(z) = −log √det G(z), H(z, p) = U(z) + ½‖p‖²; every MCMC step draws a fresh
p ~ N(0, I), runs ``n_lf`` leapfrog steps of size ε with the closed-form gradient

    ∇ log √det G(z) = ½ Σ_k ∇ log g_k(z),   ∇ log g_k = Σᵢ wᵢₖ (−2 Σᵢ⁻¹(z − cᵢ)/ρ²) + w₀ₖ (−2τ z),

(w the softmax weights of the N + 1 terms of g_k), and accepts with probability min(1, e^{H(z,p) − H(z′,p′)});
non-finite energies are rejected. All chains run as one batch (in chunks bounded in memory).

**Settings, one by one** (the official code is github.com/clementchadebec/geometric_perspective_on_vaes,
``sampling.py`` and ``generate_data.py``; read, not copied):

* ωᵢ with the Mahalanobis distance of Σᵢ⁻¹ divided by ρ², and ρ = maxᵢ minⱼ≠ᵢ ‖cᵢ − cⱼ‖ over the centroids:
  the paper's and the code's.
* centroids: the code keeps 100 k-medoids of the training codes on MNIST (``n_centroids=100``, the default);
  our k-medoids is our own (seeded k-means++-style start, then alternate assignment / medoid update, at most 100
  rounds, medoid candidates capped at 2,000 per cluster); with N ≤ ``n_centroids`` training images every code is
  a centroid; ``n_centroids=None`` sums over all N training images, Eq. 7 as written.
* λ = 0.01: the code's value for MNIST (and SVHN; 0.1 for CIFAR-10, 1 for CelebA and OASIS).
* τ: the paper's Eq. 7 has it; the code has no e^{−τ‖z‖²} term (τ = 0). Our default τ = 0.01 (``DEFAULT_TAU``):
  it leaves G within 10 % of the τ = 0 metric for ‖z‖ ≤ 3 (e^{−0.09} = 0.91 on the λ term only, which matters
  only far from the codes) and makes π proper: the tail beyond the codes holds of the order of (λ/(τρ²))^{d/2}/N
  of the mass (on the shipped generation_5 models 2e-4 to 5e-4 of it lies farther than 3ρ from every centroid).
* ε = 0.01, 10 leapfrog steps, 100 MCMC steps: the code's (MNIST).
* the momentum p ~ N(0, I): ours. The code draws p = 0.5 · N(0, I) but uses the kinetic energy ½‖p‖², a mismatch
  that makes its Metropolis–Hastings test not that of π; with unit-variance momenta the test is exact.
* chains start at training codes μ(xᵢ) drawn uniformly with replacement from all N training images (the code's
  start), by the seeded generator; ``start_indices`` records which.
* no clamp of det G (the code clamps det G to [0, 1e10] in log π); float64 throughout (ours).

Seeded by a local ``torch.Generator`` only (k-medoids start, chain starts, momenta, MH uniforms): the same seed gives
the same samples; the global RNG is never touched.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from rhvae.models import VAE, check_model
from rhvae.sampling.limits import MAX_LEAPFROG_STEPS
from rhvae.validation import ParameterError, check, check_bool, check_float, check_int

DEFAULT_REGULARIZATION = 0.01
"""λ: the official code's value for MNIST."""
DEFAULT_TAU = 0.01
"""τ: ours (the official code has no e^{−τ‖z‖²} term, i.e. τ = 0; module docstring)."""
DEFAULT_EPS = 0.01
"""Leapfrog step ε: the official code's."""
DEFAULT_N_LF = 10
"""Leapfrog steps per MCMC step: the official code's."""
DEFAULT_MCMC_STEPS = 100
"""MCMC steps per chain: the official code's."""
DEFAULT_N_CENTROIDS = 100
"""k-medoids centroids of the training codes: the official code's (MNIST, CIFAR-10, SVHN)."""
MAX_KERNEL_TERMS = 1e13
"""The most kernel evaluations (chain-leapfrog steps × centroids × d) one call may take: hours of CPU."""
SECONDS_PER_TERM = 2e-9
"""Rough cost of one kernel term on one thread (for the refusal's estimate)."""
MAX_TAU = 1e3
MAX_BANDWIDTH = 1e6
_CHUNK_ELEMENTS = 2**22  # (chains × (N + 1) × d) float64 elements per chunk: 32 MB
_MAX_MEDOID_CANDIDATES = 2000


# ------------------------------------------------------------------------------------------------------ k-medoids
def k_medoids(points: torch.Tensor, k: int, generator: torch.Generator, max_iter: int = 100) -> torch.Tensor:
    """Indices (k,) of k medoids of ``points`` (n, d) in the Euclidean distance: a seeded k-means++-style start
    (each next medoid drawn with probability ∝ squared distance to the chosen ones), then alternate rounds of
    nearest-medoid assignment and, per cluster, the member with the least summed distance to its cluster (among at
    most 2,000 members drawn with the generator), until nothing changes or ``max_iter`` rounds. Our own."""
    n = len(points)
    k = check_int("n_centroids", k, 1, n)
    pts = points.to(torch.float64)
    first = int(torch.randint(n, (1,), generator=check_generator(generator)))
    chosen = [first]
    d2 = ((pts - pts[first]) ** 2).sum(-1)
    for _ in range(1, k):
        weights = d2.clone()
        weights[chosen] = 0.0
        if float(weights.sum()) <= 0.0:  # every remaining point coincides with a medoid: take any unused one
            unused = torch.ones(n, dtype=torch.bool)
            unused[chosen] = False
            weights = unused.to(torch.float64)
        nxt = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(nxt)
        d2 = torch.minimum(d2, ((pts - pts[nxt]) ** 2).sum(-1))
    medoids = torch.tensor(chosen, dtype=torch.long)
    for _ in range(max_iter):
        assign = torch.cdist(pts, pts[medoids]).argmin(1)
        new = medoids.clone()
        for j in range(k):
            members = torch.nonzero(assign == j).flatten()
            if len(members) == 0:
                continue
            candidates = members
            if len(members) > _MAX_MEDOID_CANDIDATES:
                candidates = members[torch.randperm(len(members), generator=generator)[:_MAX_MEDOID_CANDIDATES]]
            cost = torch.cdist(pts[candidates], pts[members]).sum(1)
            new[j] = candidates[cost.argmin()]
        if torch.equal(new, medoids):
            break
        medoids = new
    return medoids


def check_generator(generator) -> torch.Generator:
    """``generator`` itself if it is a ``torch.Generator``; a TypeError naming it otherwise."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def max_min_distance(centroids: torch.Tensor) -> float:
    """ρ = maxᵢ minⱼ≠ᵢ ‖cᵢ − cⱼ‖ (the paper's bandwidth) of centroids (N ≥ 2, d)."""
    dist = torch.cdist(centroids, centroids)
    dist.fill_diagonal_(math.inf)
    return float(dist.min(1).values.max())


# ------------------------------------------------------------------------------------------------------ the metric
class GeometricMetric:
    r"""G(z) = Σᵢ Σᵢ⁻¹ ωᵢ(z) + λ e^{−τ‖z‖²} I_d, ωᵢ(z) = exp(−(z − cᵢ)ᵀ Σᵢ⁻¹ (z − cᵢ)/ρ²) (module docstring).

    ``centroids`` (N, d): the codes cᵢ; ``variances`` (N, d): the diagonals σ²ᵢ of Σᵢ (> 0); ``regularization``:
    λ > 0; ``tau``: τ ≥ 0; ``bandwidth``: ρ > 0, default maxᵢ minⱼ≠ᵢ ‖cᵢ − cⱼ‖ (needs N ≥ 2 distinct centroids).
    Everything is held in float64; methods take z of shape (B, d) (any float dtype) and return float64.
    """

    def __init__(
        self,
        centroids,
        variances,
        regularization: float = DEFAULT_REGULARIZATION,
        tau: float = DEFAULT_TAU,
        bandwidth: float | None = None,
    ):
        c = torch.as_tensor(centroids).detach().to("cpu", torch.float64)
        v = torch.as_tensor(variances).detach().to("cpu", torch.float64)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"centroids must be a tensor of shape (N, d) with N, d >= 1, got {tuple(c.shape)}")
        if v.shape != c.shape:
            raise ValueError(f"variances must have the centroids' shape {tuple(c.shape)}, got {tuple(v.shape)}")
        if not torch.isfinite(c).all():
            raise ValueError("centroids must be finite")
        if not (torch.isfinite(v).all() and (v > 0).all()):
            raise ValueError("variances must be finite and > 0 (σ² of the encoder)")
        self.regularization = check("regularization", regularization)
        self.tau = check_float("tau", tau, 0.0, MAX_TAU, low_inclusive=True)
        if bandwidth is None:
            if len(c) < 2:
                raise ParameterError("bandwidth must be given (a finite number > 0) when there is one centroid")
            bandwidth = max_min_distance(c)
            if not bandwidth > 0:
                raise ParameterError(
                    "bandwidth: the centroids coincide, so maxᵢ minⱼ≠ᵢ ‖cᵢ − cⱼ‖ = 0; give bandwidth > 0"
                )
            self.bandwidth_rule = "max_i min_j!=i ||c_i - c_j|| (the paper's)"
        else:
            self.bandwidth_rule = "given"
        self.bandwidth = check_float("bandwidth", bandwidth, 0.0, MAX_BANDWIDTH)
        self.centroids, self.variances = c, v
        self.inv_var = 1.0 / v  # Σᵢ⁻¹ diagonals, (N, d)
        self.log_inv_var = -torch.log(v)
        self.dim = c.shape[1]
        self.centroid_indices: torch.Tensor | None = None  # set by from_encoder: rows of x_train

    # --------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_encoder(
        cls,
        model: VAE,
        x_train,
        n_centroids: int | None = DEFAULT_N_CENTROIDS,
        regularization: float = DEFAULT_REGULARIZATION,
        tau: float = DEFAULT_TAU,
        bandwidth: float | None = None,
        seed: int = 0,
    ) -> GeometricMetric:
        """The metric of a trained model's encoder (VAE, HVAE or RHVAE: its μ and log σ² heads; an RHVAE's own
        metric is not used) on its training images ``x_train`` (N, D) in [0, 1]: the centroids are
        ``n_centroids`` k-medoids of the codes μ(xᵢ) (all codes when N ≤ ``n_centroids`` or ``n_centroids`` is
        None), seeded by ``seed``. ``metric.codes`` keeps every code μ(xᵢ), ``metric.centroid_indices`` the rows
        of x_train used as centroids."""
        model = _check_single_model(model)
        x = model.check_input(x_train, "x_train")
        _check_metric_options(len(x), n_centroids, regularization, tau, bandwidth, seed)
        return cls._from_checked(model, x, n_centroids, regularization, tau, bandwidth, seed)

    @classmethod
    def _from_checked(cls, model, x, n_centroids, regularization, tau, bandwidth, seed) -> GeometricMetric:
        if len(x) == 0:
            raise ValueError("x_train must hold at least one image")
        with torch.no_grad():
            mu, log_var = model.encode(x)
        mu, var = mu.detach().to("cpu", torch.float64), log_var.detach().to("cpu", torch.float64).exp()
        if not (torch.isfinite(mu).all() and torch.isfinite(var).all() and (var > 0).all()):
            raise ValueError("the encoder gives non-finite codes or variances on x_train")
        n = len(mu)
        if n_centroids is None or n <= n_centroids:
            indices = torch.arange(n)
        else:
            indices = k_medoids(mu, n_centroids, torch.Generator().manual_seed(seed))
        metric = cls(mu[indices], var[indices], regularization=regularization, tau=tau, bandwidth=bandwidth)
        metric.centroid_indices = indices
        metric.codes = mu
        metric.centroid_rule = "all training codes" if len(indices) == n else f"{len(indices)} k-medoids (seed {seed})"
        return metric

    # --------------------------------------------------------------------------------------------- evaluation
    def _z(self, z) -> torch.Tensor:
        z = torch.as_tensor(z).detach().to("cpu", torch.float64) if not isinstance(z, torch.Tensor) else z
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must be a tensor of shape (batch, {self.dim}), got {tuple(z.shape)}")
        return z.to(torch.float64)

    def _terms(self, z: torch.Tensor) -> torch.Tensor:
        """The N + 1 log terms of every g_k: (B, N + 1, d); row 0 is log λ − τ‖z‖²."""
        diff = z[:, None, :] - self.centroids[None]  # (B, N, d)
        maha = (diff * diff * self.inv_var[None]).sum(-1)  # (B, N): (z − cᵢ)ᵀ Σᵢ⁻¹ (z − cᵢ)
        kern = self.log_inv_var[None] - (maha / self.bandwidth**2)[..., None]  # log(ωᵢ/σ²ᵢₖ)
        reg = (math.log(self.regularization) - self.tau * (z * z).sum(-1))[:, None, None].expand(-1, 1, self.dim)
        return torch.cat([reg, kern], 1)

    def _chunks(self, z: torch.Tensor):
        size = max(1, _CHUNK_ELEMENTS // ((len(self.centroids) + 1) * self.dim))
        return z.split(size) if len(z) else [z]

    def log_diagonal(self, z) -> torch.Tensor:
        """log g(z) (B, d): the logs of G(z)'s diagonal entries."""
        z = self._z(z)
        return torch.cat([torch.logsumexp(self._terms(part), 1) for part in self._chunks(z)])

    def G(self, z) -> torch.Tensor:
        """G(z) (B, d, d), diagonal (underflows to 0 where every term does: τ‖z‖² ≳ 700 far from the codes)."""
        return torch.diag_embed(self.log_diagonal(z).exp())

    def log_sqrt_det(self, z) -> torch.Tensor:
        """log √det G(z) = ½ Σ_k log g_k(z), (B,): the log of the (unnormalised) target π."""
        return 0.5 * self.log_diagonal(z).sum(-1)

    def log_sqrt_det_and_grad(self, z) -> tuple[torch.Tensor, torch.Tensor]:
        """(log √det G(z) (B,), its gradient ∇_z (B, d)) in closed form (module docstring)."""
        z = self._z(z)
        values, grads = [], []
        scale = 1.0 / self.bandwidth**2
        for part in self._chunks(z):
            terms = self._terms(part)  # (B, N + 1, d)
            log_g = torch.logsumexp(terms, 1)  # (B, d)
            W = torch.exp(terms - log_g[:, None, :]).sum(-1)  # Σ_k w_ik, (B, N + 1)
            Wc = W[:, 1:]
            # ½ Σ_i W_i (−2 Σᵢ⁻¹ (z − cᵢ)/ρ²) + ½ W₀ (−2τ z)
            grad_kern = -scale * (part * (Wc @ self.inv_var) - Wc @ (self.inv_var * self.centroids))
            grads.append(grad_kern - self.tau * W[:, :1] * part)
            values.append(0.5 * log_g.sum(-1))
        return torch.cat(values), torch.cat(grads)

    def describe(self) -> dict:
        """The metric's settings, JSON-ready."""
        return {
            "n_centroids": len(self.centroids),
            "latent_dim": self.dim,
            "regularization": self.regularization,
            "tau": self.tau,
            "bandwidth": self.bandwidth,
            "bandwidth_rule": self.bandwidth_rule,
            "centroids": getattr(self, "centroid_rule", "given"),
        }


# ------------------------------------------------------------------------------------------------------ the sampler
@dataclass
class GeometricSamples:
    """Result of ``geometric_hmc`` / ``sample_metric``.

    ``z`` (n, d) float64: the chains' states after the last MCMC step; ``images`` (n, D): their decoder means
    (None from ``sample_metric``); ``acceptance_rate``: accepted / (n · mcmc_steps); ``acceptance_per_chain`` (n,);
    ``start_indices`` (n,): the training image (``geometric_hmc``) or centroid (``sample_metric`` without ``start``)
    each chain started from; ``metric``: the ``GeometricMetric``; ``params``: every setting (JSON-ready);
    ``seconds``: wall time; ``trace`` ((mcmc_steps + 1), n, d) if requested.
    """

    z: torch.Tensor
    images: torch.Tensor | None
    acceptance_rate: float
    acceptance_per_chain: torch.Tensor
    start_indices: torch.Tensor | None
    metric: GeometricMetric
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    trace: torch.Tensor | None = None


def check_work(n_samples: int, mcmc_steps: int, n_lf: int, n_centroids: int, dim: int) -> None:
    """Refuse, before any work, more than ``MAX_LEAPFROG_STEPS`` chain-leapfrog steps or ``MAX_KERNEL_TERMS``
    kernel evaluations (steps × centroids × d)."""
    steps = n_samples * mcmc_steps * n_lf
    if steps > MAX_LEAPFROG_STEPS:
        raise ParameterError(
            f"n_samples × mcmc_steps × n_lf = {n_samples} × {mcmc_steps} × {n_lf} = {steps:.2g} leapfrog steps: "
            f"at most {MAX_LEAPFROG_STEPS:.0e}; lower one of them"
        )
    terms = steps * (n_centroids + 1) * dim
    if terms > MAX_KERNEL_TERMS:
        raise ParameterError(
            f"n_samples × mcmc_steps × n_lf × (n_centroids + 1) × d = {terms:.2g} kernel terms, about "
            f"{terms * SECONDS_PER_TERM / 3600:.1f} h of CPU: at most {MAX_KERNEL_TERMS:.0e}; lower one of them "
            "(or n_centroids)"
        )


def _check_single_model(model) -> VAE:
    model = check_model(model)
    if getattr(model, "members", None):
        raise ValueError("model must be one model, not a stack (use model.member(m))")
    return model


def _check_metric_options(n_train: int, n_centroids, regularization, tau, bandwidth, seed) -> None:
    if n_centroids is not None:
        check_int("n_centroids", n_centroids, 1, 10_000_000)
    check("regularization", regularization)
    check_float("tau", tau, 0.0, MAX_TAU, low_inclusive=True)
    if bandwidth is not None:
        check_float("bandwidth", bandwidth, 0.0, MAX_BANDWIDTH)
    check("seed", seed)


def _check_chain_options(n_samples, mcmc_steps, n_lf, eps, seed, keep_trace):
    return (
        check("n_samples", n_samples),
        check("mcmc_steps", mcmc_steps),
        check_int("n_lf", n_lf, 1, 1000),
        check_float("eps", eps, 0.0, 10.0),
        check("seed", seed),
        check_bool("keep_trace", keep_trace),
    )


def _run_chains(metric: GeometricMetric, z, mcmc_steps: int, n_lf: int, eps: float, gen, keep_trace: bool):
    """HMC on π ∝ √det G from the states z (n, d): (z, accepted counts (n,), trace or None)."""
    n = len(z)
    log_pi, grad = metric.log_sqrt_det_and_grad(z)
    U, dU = -log_pi, -grad
    accepted = torch.zeros(n, dtype=torch.long)
    trace = [z.clone()] if keep_trace else None
    for _ in range(mcmc_steps):
        p = torch.randn(z.shape, generator=gen, dtype=torch.float64)
        H0 = U + 0.5 * (p * p).sum(-1)
        z_new, dU_new = z, dU
        p_new = p - 0.5 * eps * dU_new
        for step in range(n_lf):
            z_new = z_new + eps * p_new
            log_pi_new, grad_new = metric.log_sqrt_det_and_grad(z_new)
            dU_new = -grad_new
            p_new = p_new - (eps if step < n_lf - 1 else 0.5 * eps) * dU_new
        U_new = -log_pi_new
        H1 = U_new + 0.5 * (p_new * p_new).sum(-1)
        log_u = torch.log(torch.rand(n, generator=gen, dtype=torch.float64))
        accept = torch.isfinite(H1) & torch.isfinite(z_new).all(-1) & (log_u < H0 - H1)
        z = torch.where(accept[:, None], z_new, z)
        U = torch.where(accept, U_new, U)
        dU = torch.where(accept[:, None], dU_new, dU)
        accepted += accept.long()
        if keep_trace:
            trace.append(z.clone())
    return z, accepted, (torch.stack(trace) if keep_trace else None)


def _chain_params(n_samples, mcmc_steps, n_lf, eps, seed, metric: GeometricMetric) -> dict:
    return {
        "n_samples": n_samples,
        "mcmc_steps": mcmc_steps,
        "n_lf": n_lf,
        "eps": eps,
        "seed": seed,
        **metric.describe(),
        "momentum": "p ~ N(0, I), kinetic energy |p|^2/2 (ours; the official code draws 0.5 N(0, I))",
        "target": "pi(z) ∝ sqrt(det G(z)) on R^d, G of Chadebec & Allassonniere 2022 Eq. 7",
    }


def _samples(z, images, accepted, mcmc_steps: int, start_indices, metric, params: dict, begin: float, trace):
    """The ``GeometricSamples`` of chains that accepted ``accepted`` (n,) of their ``mcmc_steps`` moves."""
    return GeometricSamples(
        z=z,
        images=images,
        acceptance_rate=float(accepted.sum()) / max(len(z) * mcmc_steps, 1),
        acceptance_per_chain=accepted.to(torch.float64) / max(mcmc_steps, 1),
        start_indices=start_indices,
        metric=metric,
        params=params,
        seconds=time.perf_counter() - begin,
        trace=trace,
    )


def sample_metric(
    metric: GeometricMetric,
    n_samples: int = 100,
    mcmc_steps: int = DEFAULT_MCMC_STEPS,
    n_lf: int = DEFAULT_N_LF,
    eps: float = DEFAULT_EPS,
    seed: int = 0,
    start=None,
    keep_trace: bool = False,
) -> GeometricSamples:
    """HMC on π(z) ∝ √det G(z) of a given ``GeometricMetric`` (no decoding). The chains start at ``start`` (n, d)
    if given, else at centroids drawn uniformly with replacement by the seeded generator."""
    if not isinstance(metric, GeometricMetric):
        raise TypeError(f"metric must be a GeometricMetric, got {type(metric).__name__}")
    n_samples, mcmc_steps, n_lf, eps, seed, keep_trace = _check_chain_options(
        n_samples, mcmc_steps, n_lf, eps, seed, keep_trace
    )
    check_work(n_samples, mcmc_steps, n_lf, len(metric.centroids), metric.dim)
    begin = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    if start is None:
        start_indices = torch.randint(len(metric.centroids), (n_samples,), generator=gen)
        z0 = metric.centroids[start_indices].clone()
        start_rule = "centroids drawn uniformly with replacement"
    else:
        start_indices = None
        z0 = torch.as_tensor(start).detach().to("cpu", torch.float64)
        if z0.shape != (n_samples, metric.dim) or not torch.isfinite(z0).all():
            raise ValueError(
                f"start must be a finite tensor of shape ({n_samples}, {metric.dim}), got {tuple(z0.shape)}"
            )
        start_rule = "given"
    with torch.no_grad():
        z, accepted, trace = _run_chains(metric, z0, mcmc_steps, n_lf, eps, gen, keep_trace)
    params = _chain_params(n_samples, mcmc_steps, n_lf, eps, seed, metric) | {"start": start_rule}
    return _samples(z, None, accepted, mcmc_steps, start_indices, metric, params, begin, trace)


def geometric_hmc(
    model: VAE,
    x_train,
    n_samples: int = 100,
    mcmc_steps: int = DEFAULT_MCMC_STEPS,
    n_lf: int = DEFAULT_N_LF,
    eps: float = DEFAULT_EPS,
    seed: int = 0,
    *,
    n_centroids: int | None = DEFAULT_N_CENTROIDS,
    regularization: float = DEFAULT_REGULARIZATION,
    tau: float = DEFAULT_TAU,
    bandwidth: float | None = None,
    keep_trace: bool = False,
) -> GeometricSamples:
    r"""Samples of a trained VAE, HVAE or RHVAE by the geometry-aware sampler of Chadebec & Allassonnière 2022:
    HMC on π(z) ∝ √det G(z), G their Eq. 7 built from the model's encoder on ``x_train``, decoded (decoder mean).

    Parameters (the module docstring says which defaults are the paper's / official code's and which are ours)
    ----------
    model: a trained VAE, HVAE or RHVAE (one model, not a stack); an RHVAE's encoder is used, not its metric.
    x_train: its training images (N, D) in [0, 1] (``model.check_input``).
    n_samples: chains = samples (≥ 1). mcmc_steps: MCMC steps per chain (≥ 0; default 100, the code's).
    n_lf: leapfrog steps per MCMC step (1 … 1000; default 10, the code's). eps: leapfrog step ε (in (0, 10];
    default 0.01, the code's). seed: seeds the one ``torch.Generator`` of the k-medoids start, the chain starts,
    the momenta and the MH uniforms.
    n_centroids: k-medoids centroids of the codes (default 100, the code's; None: all N codes, Eq. 7 as written).
    regularization: λ (default 0.01, the code's for MNIST). tau: τ ≥ 0 (default 0.01, ours; 0 is the code's,
    improper target). bandwidth: ρ > 0 (default maxᵢ minⱼ≠ᵢ ‖cᵢ − cⱼ‖, the paper's).
    keep_trace: also return every state, (mcmc_steps + 1, n_samples, d).

    The chains start at training codes μ(xᵢ) drawn uniformly with replacement (the code's start).
    """
    model = _check_single_model(model)
    n_samples, mcmc_steps, n_lf, eps, seed, keep_trace = _check_chain_options(
        n_samples, mcmc_steps, n_lf, eps, seed, keep_trace
    )
    x = model.check_input(x_train, "x_train")
    if len(x) == 0:
        raise ValueError("x_train must hold at least one image")
    _check_metric_options(len(x), n_centroids, regularization, tau, bandwidth, seed)
    n_c = len(x) if n_centroids is None else min(len(x), n_centroids)
    check_work(n_samples, mcmc_steps, n_lf, n_c, model.latent_dim)

    begin = time.perf_counter()
    metric = GeometricMetric._from_checked(model, x, n_centroids, regularization, tau, bandwidth, seed)
    gen = torch.Generator().manual_seed(seed)
    start_indices = torch.randint(len(metric.codes), (n_samples,), generator=gen)
    with torch.no_grad():
        z, accepted, trace = _run_chains(
            metric, metric.codes[start_indices].clone(), mcmc_steps, n_lf, eps, gen, keep_trace
        )
        weight = model.dec_hidden.weight
        images = model.decode(z.to(dtype=weight.dtype, device=weight.device))
    params = _chain_params(n_samples, mcmc_steps, n_lf, eps, seed, metric) | {
        "start": "training codes mu(x_i) drawn uniformly with replacement (the official code's)",
        "n_train": len(x),
        "model": type(model).__name__,
    }
    return _samples(z, images, accepted, mcmc_steps, start_indices, metric, params, begin, trace)
