r"""The learned metric with its kernel truncated at a radius: only centroids whose weight can matter are summed.

The frozen metric of N training images, G⁻¹(z) = Σᵢ Mᵢ wᵢ(z) + λ I with wᵢ(z) = exp(−‖z − cᵢ‖²/T²), costs O(N)
per point; the sampler evaluates it 100 × 90 × 10 times, so at N = 60,000 it is no longer interactive. The
**truncated metric** replaces each weight by the kernel shifted down to reach 0 at a radius r and cut there,

    w̃ᵢ(z) = (wᵢ(z) − w_r)₊,  w_r = e^{−r²/T²},    G_r⁻¹(z) = Σᵢ Mᵢ w̃ᵢ(z) + λ I,

so a centroid at distance ≥ r contributes exactly nothing and the metric stays continuous in z (no jump at the
spheres ‖z − cᵢ‖ = r). It is a deterministic function of z (≥ λ I, so SPD everywhere), the same whatever set of
candidates is scanned as long as it holds every centroid within r: the sampler that uses it targets *exactly*
π_r ∝ √det G_r⁻¹ on its box (see 3. below for its force).

**Error bounds.** Let S = Σᵢ ‖Mᵢ‖₂ (spectral norms, over all N centroids), E = G⁻¹ − G_r⁻¹ = Σᵢ Mᵢ (wᵢ − w̃ᵢ) ⪰ 0
(0 ≤ wᵢ − w̃ᵢ ≤ w_r) and

    τ = e^{−r²/T²} S / λ,    so that    ‖E‖₂ ≤ e^{−r²/T²} S = τ λ ≤ τ λmin(G⁻¹)    (G⁻¹, G_r⁻¹ ⪰ λ I).

1. *Inverse metric*: ‖G⁻¹(z) − G_r⁻¹(z)‖₂ ≤ τ λ everywhere (relative error ≤ τ).
2. *Log-determinant*: log det G⁻¹ − log det G_r⁻¹ = log det(I + G_r^{½} E G_r^{½}) ∈ [0, d log(1 + τ)]
   (‖G_r^{½} E G_r^{½}‖ ≤ ‖E‖/λ ≤ τ). The sampler's log-target log √det G⁻¹ moves by at most (d/2) log(1 + τ), so
   the normalised targets on the box differ by a density ratio within (1 + τ)^{±d/2}.
3. *Force*: the full metric's ∇ log det G⁻¹ = Σᵢ tr(G Mᵢ) ∇wᵢ, ∇wᵢ = −(2/T²) wᵢ (z − cᵢ), is replaced by
   F = Σᵢ tr(G_r Mᵢ) ∇̃ᵢ with ∇̃ᵢ = −(2/T²) w̃ᵢ (z − cᵢ) (the same closed form with the truncated weights; it needs
   no other sum than G_r⁻¹'s). F − ∇ log det G⁻¹ = Σᵢ tr((G_r − G) Mᵢ) ∇̃ᵢ + Σᵢ tr(G Mᵢ)(∇̃ᵢ − ∇wᵢ). First sum:
   G − G_r = −G E G_r and, for PSD Mᵢ, |tr(G E G_r Mᵢ)| = |tr(P G_r^{½} Mᵢ G_r^{½})| ≤ ‖P‖ tr(G_r Mᵢ) with
   P = G_r^{−½} G E G_r^{½}, ‖P‖ ≤ ‖G_r^{−½} G G_r^{−½}‖ ‖G_r^{½} E G_r^{½}‖ ≤ τ (G ⪯ G_r); ∇̃ᵢ = 0 beyond r
   and |∇̃ᵢ| ≤ (2r/T²) w̃ᵢ inside, and Σᵢ tr(G_r Mᵢ) w̃ᵢ = tr(G_r (G_r⁻¹ − λ I)) ≤ d: at most d τ 2r/T². Second
   sum: |∇̃ᵢ − ∇wᵢ| = (2sᵢ/T²)(wᵢ − w̃ᵢ), sᵢ = ‖z − cᵢ‖, equals (2sᵢ/T²) w_r inside r and (2sᵢ/T²) wᵢ beyond,
   both ≤ (2r̃/T²) e^{−r̃²/T²} with r̃ = max(r, T/√2) (s e^{−s²/T²} decreases beyond T/√2), and
   tr(G Mᵢ) ≤ d ‖Mᵢ‖/λ: at most (d S/λ)(2r̃/T²) e^{−r̃²/T²}. For r ≥ T/√2 the total is

       |F − ∇ log det G⁻¹| ≤ 4 d r τ / T²     (half of it for the sampler's force ∇ log √det G⁻¹).

   F is not exactly the gradient of log det G_r⁻¹ (that would need a second, unshifted sum over the centroids
   within r); the sampler stays exact for π_r all the same, since its Metropolis–Hastings step uses the
   truncated energy and the leapfrog with any position-dependent force is a volume-preserving involution after
   a momentum flip.

Given a tolerance τ, the radius is r = T √log(S/(τλ)) (at least T/√2; 0 when S ≤ τλ, where no centroid can
matter). r grows only like √log(N): at T = 1, λ = 0.1, S = 10⁵ and τ = 10⁻⁵, r = 5.0 T. The cut saves work only
where the codes spread over more than a few r, i.e. for small T or widely spread codes (docs/speed.md, "How cost
grows").

**Candidates.** The centroids are cut into blocks of at most ``BLOCK_SIZE`` neighbours by median splits along the
wider axis (a k-d tree's leaves), each with its bounding box. A point scans only the blocks whose box lies within
1.01 r (the slack covers the rounding of the expanded exponent). Inside a scanned block the exponent is clamped to
[−r²/T², 0], so that exp gives max(wᵢ, w_r); with the rows tᵢ = [vec(Mᵢ), vec(Mᵢ) ⊗ cᵢ] of the block's table,
Σ (max(wᵢ, w_r) − w_r) tᵢ = Σ max(wᵢ, w_r) tᵢ − w_r Σ tᵢ with the column sum Σ tᵢ stored. So the truncation costs
no extra pass over the (points × block) weights, a skipped block would have added 0 (up to rounding), and weights
below w_r (denormal floats at large N, which are slow) are never formed. Blocks of ~2,000 centroids keep each
weight matrix in cache.
"""

from __future__ import annotations

import math

import torch

from rhvae.models.metric import LearnedMetric, spd_inverse_logdet, sym2_max_eigenvalue
from rhvae.validation import check, check_float

DEFAULT_TOLERANCE = 1e-5
"""Default τ: ‖G⁻¹ − G_r⁻¹‖ ≤ 10⁻⁵ λ; the log-target moves by at most 10⁻⁵ nats (d = 2)."""
MIN_CENTROIDS = 10_000
"""The sampler and the widgets truncate metrics with more centroids than this: below, the dense sum is cheaper
than the block bookkeeping (benchmarks/scaling.py: the truncated sampler was slower at 5,000 centroids, 6.0 s
against 4.6 s, and faster at 20,000, 18.3 s against 21.4 s, at T = 1)."""
BLOCK_SIZE = 2048
CANDIDATE_SLACK = 1.01
"""A block is scanned for a point when its box lies within 1.01 r: the slack covers the rounding of the exponent."""


def norm_sum(M: torch.Tensor) -> float:
    """S = Σᵢ ‖Mᵢ‖₂ for PSD matrices M (N, d, d): the sum of their largest eigenvalues, in float64."""
    if len(M) == 0:
        return 0.0
    return float(sym2_max_eigenvalue(M.detach().double()).clamp_min(0.0).sum())


def truncation_radius(norm_sum: float, temperature: float, regularization: float, tolerance: float) -> float:
    """r = T √log(S / (τ λ)), at least T/√2 (where the gradient bound holds); 0 when S ≤ τ λ."""
    ratio = norm_sum / (tolerance * regularization)
    if ratio <= 1.0:
        return 0.0
    return temperature * max(math.sqrt(math.log(ratio)), 1.0 / math.sqrt(2.0))


def error_bounds(norm_sum: float, temperature: float, regularization: float, radius: float, dim: int) -> dict:
    """The bounds of the module docstring for a radius r: τ = e^{−r²/T²} S/λ and the largest differences between the
    full and the truncated G⁻¹ (spectral norm) and log det G⁻¹, and between ∇ log det G⁻¹ and the truncated
    metric's force (Euclidean norm), anywhere."""
    t2 = temperature**2
    tau = math.exp(-(radius**2) / t2) * norm_sum / regularization
    r_tilde = max(radius, temperature / math.sqrt(2.0))
    outside = dim * norm_sum / regularization * (2.0 * r_tilde / t2) * math.exp(-(r_tilde**2) / t2)
    return {
        "tolerance": tau,
        "G_inv": tau * regularization,
        "log_det_G_inv": dim * math.log1p(tau),
        "grad_log_det_G_inv": dim * tau * 2.0 * radius / t2 + outside,
    }


def kd_blocks(points: torch.Tensor, block_size: int) -> list[torch.Tensor]:
    """Indices of ``points`` (N, d) cut into blocks of at most ``block_size`` by median splits along the axis of
    largest extent (the leaves of a k-d tree), in a fixed order."""
    pending, blocks = [torch.arange(len(points))], []
    while pending:
        index = pending.pop()
        if len(index) <= block_size:
            blocks.append(index)
            continue
        part = points[index]
        axis = int((part.max(0).values - part.min(0).values).argmax())
        order = index[torch.argsort(part[:, axis], stable=True)]
        half = len(order) // 2
        pending += [order[half:], order[:half]]
    return blocks


class TruncatedMetric:
    """G_r⁻¹(z) = Σᵢ Mᵢ (wᵢ(z) − e^{−r²/T²})₊ + λ I for a ``LearnedMetric`` (module docstring), with r set by
    ``tolerance`` τ (‖G⁻¹ − G_r⁻¹‖ ≤ τ λ) or given as ``radius`` (τ then follows from it).

    Offers what the sampler and the metric pictures use: ``G_inv``, ``G``, ``log_det_and_grad``,
    ``log_sqrt_det_G_inv``, ``grad_log_sqrt_det_G_inv``, and the metric's ``centroids``, ``M``, ``temperature``,
    ``regularization``, ``dim``. ``bounds`` holds the error bounds; ``describe()`` a JSON-ready record. Default:
    ``tolerance=DEFAULT_TOLERANCE``.
    """

    constant = False

    def __init__(self, metric: LearnedMetric, tolerance: float | None = None, radius: float | None = None):
        if not isinstance(metric, LearnedMetric):
            raise TypeError(f"metric must be a LearnedMetric, got {type(metric).__name__}")
        if len(metric.centroids) == 0:
            raise ValueError("the metric has no centroids")
        self.centroids, self.M = metric.centroids.detach(), metric.M.detach()
        self.temperature, self.regularization, self.dim = metric.temperature, metric.regularization, metric.dim
        self.norm_sum = norm_sum(self.M)
        if tolerance is not None and radius is not None:
            raise ValueError("give either tolerance or radius, not both")
        if radius is None:
            tolerance = check("truncation_tolerance", DEFAULT_TOLERANCE if tolerance is None else tolerance)
            radius = truncation_radius(self.norm_sum, self.temperature, self.regularization, tolerance)
        self.radius = check_float("radius", radius, 0.0, low_inclusive=True)
        self.bounds = error_bounds(self.norm_sum, self.temperature, self.regularization, self.radius, self.dim)
        self.tolerance = self.bounds["tolerance"] if tolerance is None else tolerance
        self._floor = -((self.radius / self.temperature) ** 2)  # exponents are clamped to [−r²/T², 0]
        self._cut = math.exp(self._floor)  # w_r
        self._build_blocks()

    def _build_blocks(self) -> None:
        """Per block: its box, the exponent's factors (as ``LearnedMetric.exponent``) and the table
        [vec(Mᵢ), vec(Mᵢ) ⊗ cᵢ] (K, d² + d³) whose weighted sum gives G⁻¹ and its Jacobian."""
        c, d = self.centroids, self.dim
        n = len(c)
        inv_t2 = 1.0 / self.temperature**2
        M_flat = self.M.reshape(n, d * d)
        table = torch.cat((M_flat, (M_flat[:, :, None] * c[:, None, :]).reshape(n, d**3)), 1)
        exponent_matrix = torch.cat(((2.0 * inv_t2) * c, torch.full((n, 1), -inv_t2, dtype=c.dtype)), 1)
        bias = -(c * c).sum(-1) * inv_t2
        blocks = kd_blocks(c, BLOCK_SIZE)
        self.blocks = [
            (exponent_matrix[i].T.contiguous(), bias[i], table[i].contiguous(), table[i].double().sum(0).to(c.dtype))
            for i in blocks
        ]
        self.box_low = torch.stack([c[i].min(0).values for i in blocks])
        self.box_high = torch.stack([c[i].max(0).values for i in blocks])

    def scanned_blocks(self, z: torch.Tensor) -> torch.Tensor:
        """(B, n_blocks) booleans: the blocks whose box lies within 1.01 r of each point (every centroid within r
        of a point is in one of its scanned blocks)."""
        gap = (self.box_low[None] - z[:, None]).clamp_min(0.0) + (z[:, None] - self.box_high[None]).clamp_min(0.0)
        return (gap * gap).sum(-1) < (CANDIDATE_SLACK * self.radius) ** 2

    def sums(self, z: torch.Tensor) -> torch.Tensor:
        """Σᵢ w̃ᵢ(z) [vec(Mᵢ), vec(Mᵢ) ⊗ cᵢ], shape (B, d² + d³), block by block (module docstring)."""
        d = self.dim
        out = z.new_zeros(len(z), d * d + d**3)
        z_aug = torch.cat((z, (z * z).sum(-1, keepdim=True)), 1)
        scanned = self.scanned_blocks(z)
        for (exponent_matrix, bias, table, column_sum), rows in zip(self.blocks, scanned.T, strict=True):
            rows = rows.nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            everyone = len(rows) == len(z)
            exponent = torch.addmm(bias, z_aug if everyone else z_aug[rows], exponent_matrix)
            weights = exponent.clamp_(self._floor, 0.0).exp_()  # max(wᵢ, w_r)
            if everyone:
                out.addmm_(weights, table).sub_(column_sum, alpha=self._cut)
            else:
                out.index_add_(0, rows, torch.addmm(column_sum, weights, table, beta=-self._cut))
        return out

    def _metric_and_jacobian(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """G_r⁻¹ (B, d, d) and J̃ = (2/T²)[Σᵢ w̃ᵢ vec(Mᵢ) cᵢᵀ − (Σᵢ w̃ᵢ vec(Mᵢ)) zᵀ] (B, d², d): the Jacobian formula
        of the full metric with the truncated weights (module docstring, "Force")."""
        d = self.dim
        M_sum, moment = self.sums(z).split((d * d, d**3), 1)
        G_inv = M_sum.reshape(-1, d, d) + self.regularization * torch.eye(d, dtype=z.dtype)
        J = (2.0 / self.temperature**2) * (moment.reshape(-1, d * d, d) - M_sum[:, :, None] * z[:, None, :])
        return G_inv, J

    def G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """G_r⁻¹(z) for z (B, d) → (B, d, d)."""
        return self._metric_and_jacobian(z)[0]

    def G(self, z: torch.Tensor) -> torch.Tensor:
        """G_r(z) = (G_r⁻¹(z))⁻¹, (B, d, d)."""
        return spd_inverse_logdet(self.G_inv(z))[0]

    def log_det_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log det G_r⁻¹(z), the force Σ_jk (G_r)_jk J̃_jk), shapes (B,) and (B, d): the force is within
        ``bounds["grad_log_det_G_inv"]`` of the full metric's ∇ log det G⁻¹ (module docstring, "Force")."""
        G_inv, J = self._metric_and_jacobian(z)
        G, log_det = spd_inverse_logdet(G_inv)
        return log_det, torch.bmm(G.reshape(len(z), 1, -1), J).squeeze(1)

    def log_sqrt_det_G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """log √det G_r⁻¹(z), shape (B,)."""
        return 0.5 * self.log_det_and_grad(z)[0]

    def grad_log_sqrt_det_G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """Half the force of ``log_det_and_grad``: ∇_z log √det G⁻¹(z) within half the gradient bound, (B, d)."""
        return 0.5 * self.log_det_and_grad(z)[1]

    def describe(self) -> dict:
        """JSON-ready: τ, r, S, the number of centroids and blocks, and the error bounds."""
        return {
            "tolerance": self.tolerance,
            "radius": self.radius,
            "norm_sum": self.norm_sum,
            "n_centroids": len(self.centroids),
            "n_blocks": len(self.blocks),
            "bounds": self.bounds,
        }


def truncate_if_large(
    metric, tolerance: float | None = DEFAULT_TOLERANCE, min_centroids: int = MIN_CENTROIDS
) -> LearnedMetric | TruncatedMetric:
    """``TruncatedMetric(metric, tolerance)`` for a ``LearnedMetric`` of more than ``min_centroids`` centroids, else
    ``metric`` itself (a ``TruncatedMetric`` is returned as it is). ``tolerance=None``: never truncate (the full
    sum); any other tolerance is checked in every case."""
    if tolerance is None:
        return metric
    tolerance = check("truncation_tolerance", tolerance)
    if isinstance(metric, LearnedMetric) and len(metric.centroids) > min_centroids:
        return TruncatedMetric(metric, tolerance)
    return metric
