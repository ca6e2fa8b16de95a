r"""The sampler's target on a grid: log det G⁻¹ interpolated by bicubic Hermite patches (d = 2, many centroids).

The RHVAE sampler (``rhvae.sampling.hmc``) needs only the scalar field f(z) = log det G⁻¹(z) and its gradient, on a box
B = [x₀, x₁] × [y₀, y₁] it never leaves. With N centroids every evaluation of f costs O(N), and the sampler evaluates
it 100 × 90 × 10 times. The **grid target** evaluates f, ∂ₓf, ∂ᵧf and ∂ₓᵧf exactly once, at the nodes of a regular
grid over B, and replaces f by its bicubic Hermite interpolant f̃: on each cell a polynomial Σ_{i,j ≤ 3} C_ij sⁱ tʲ
of the cell's coordinates s, t ∈ [0, 1] that takes the four values and derivatives at its corners. f̃ is C¹ on B,
so the leapfrog uses its exact gradient, and the Metropolis–Hastings step uses f̃ too: the sampler targets
**exactly** π̃ ∝ exp(½ f̃) on B, at a cost per step that no longer depends on N.

**Nodes in O(N) products.** The kernel is separable, wᵢ(x, y) = aᵢ(x) bᵢ(y) with aᵢ(x) = exp(−(x − cᵢₓ)²/T²), so
each entry of G⁻¹ − λI and of its derivatives on the grid is one matrix product: for the n_x × n_y nodes,
Σᵢ (Mᵢ)_jk aᵢ⁽ᵏ⁾(x_a) bᵢ⁽ˡ⁾(y_b) = (A⁽ᵏ⁾ diag(m_jk)) B⁽ˡ⁾ᵀ with a⁽¹⁾ = ∂ₓa = −2(x − cₓ)/T² · a. All 3 entries
(p, q, r) of the symmetric G⁻¹ = [[p, q], [q, r]] and the 4 derivative orders (k, l) ∈ {0, 1}² are one product
of a (6 n_x, N) by an (N, 2 n_y) matrix, in float64, over chunks of centroids. Then with D = pr − q²:

    f = log D,  fₓ = Dₓ/D,  fᵧ = Dᵧ/D,  fₓᵧ = Dₓᵧ/D − DₓDᵧ/D²,
    Dₓ = pₓr + prₓ − 2qqₓ,   Dₓᵧ = pₓᵧr + pₓrᵧ + pᵧrₓ + prₓᵧ − 2qₓqᵧ − 2qqₓᵧ.

**Checked error.** The error of a bicubic Hermite patch is largest inside the cell, where its quartic terms
s²(1 − s)² t²(1 − t)² peak: at the centre. After building, f itself is evaluated exactly (float64, the same
separable products) at every cell centre and the grid is refined (spacing halved, from T/8 down to T/64) until
the largest difference max |f̃ − f| over all centres is at most ``tolerance`` (default 10⁻⁴ nats, so the
sampler's log-target ½ f moves by at most 5·10⁻⁵ nats there: a density ratio within 1 ± 10⁻⁴ once normalised).
This is an *a-posteriori check at the n_x n_y centres*, not a bound everywhere: tests/sampling/test_grid_target.py
compares f̃ with f at random points of trained and synthetic metrics. If no spacing meets the tolerance the
caller falls back to the truncated or the full sum (``interpolate_if_possible`` returns None).

Outside B (a leapfrog path may leave it; its end point is then rejected) the boundary cells' polynomials are
continued, which keeps the force a fixed function of position, so the sampler stays exact for π̃ · 1_B.
"""

from __future__ import annotations

import time

import torch

from rhvae.models.metric import LearnedMetric
from rhvae.validation import ParameterError, check, check_float

MIN_CENTROIDS = 1_000
"""The sampler uses the grid target for metrics of more centroids than this (2-D): the 100 × 90 sampler took about
the same time either way at 500 centroids and 0.52 s on the grid against 0.72 s with the full sum at 1,000
(benchmarks/scaling.py, results/scaling). The paper's experiments (at most 350 centroids) keep the exact sum."""
DEFAULT_TOLERANCE = 1e-4
"""Largest accepted max |f̃ − f| over the cell centres, in nats (f = log det G⁻¹)."""
SPACINGS = (1 / 8, 1 / 16, 1 / 32, 1 / 64)
"""Grid spacings tried, in units of T, coarse to fine (the kernel varies on the length scale T)."""
MAX_NODES = 1_000_000
"""The most grid nodes built (a finer spacing on a wide box is skipped): memory O(nodes), time O(nodes · N)."""
CHUNK = 4096
"""Centroids per product (the (6 n_x, chunk) factor stays a few tens of MB)."""

# [c₀, c₁, c₂, c₃] of the cubic on [0, 1] from [v(0), v(1), v′(0), v′(1)] (derivatives in cell units)
_HERMITE = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [-3.0, 3.0, -2.0, -1.0], [2.0, -2.0, 1.0, 1.0]], dtype=torch.float64
)


def require_2d_metric(metric: LearnedMetric, what: str) -> None:
    """Refuse a metric whose latent space is not 2-D in one line (a ``ParameterError``): the separable products
    and the bicubic patches are written for two axes. The sampler never gets here at another d
    (``interpolate_if_possible`` returns None and it uses the metric or its truncation)."""
    if metric.dim != 2:
        raise ParameterError(
            f"{what}: the metric's latent_dim must be 2, got {metric.dim} (use the "
            "metric itself or rhvae.sampling.truncation.TruncatedMetric, which work at any latent_dim)"
        )


def _axis_factors(nodes: torch.Tensor, centres: torch.Tensor, temperature: float, derivative: bool) -> torch.Tensor:
    """a(x) = exp(−(x − c)²/T²) at ``nodes`` (n,) for ``centres`` (K,), and with ``derivative`` also ∂ₓa stacked
    below it: (n, K) or (2n, K)."""
    diff = nodes[:, None] - centres[None, :]
    a = torch.exp(diff * diff * (-1.0 / temperature**2))
    if not derivative:
        return a
    return torch.cat((a, (-2.0 / temperature**2) * diff * a), 0)


def separable_sums(metric: LearnedMetric, xs: torch.Tensor, ys: torch.Tensor, derivatives: bool) -> torch.Tensor:
    """Σᵢ (p, q, r)ᵢ aᵢ⁽ᵏ⁾(x_a) bᵢ⁽ˡ⁾(y_b) on the tensor grid xs × ys: shape (3, K, n_x, L, n_y) with K = L = 2
    derivative orders if ``derivatives`` (index 1: ∂ₓ along x, ∂ᵧ along y), else 1. The λ I term is not included.
    In float64, one product per chunk of ``CHUNK`` centroids (float32 products would be 1.5x faster but leave a
    rounding floor near 10⁻⁵ nats in log det G⁻¹ for strongly anisotropic metrics). 2-D metrics only."""
    require_2d_metric(metric, "separable_sums factors the kernel along the two axes of a 2-D latent space")
    c = metric.centroids.detach().double()
    M = metric.M.detach().double()
    m = torch.stack((M[:, 0, 0], 0.5 * (M[:, 0, 1] + M[:, 1, 0]), M[:, 1, 1]), 1)  # (N, 3)
    orders = 2 if derivatives else 1
    out = torch.zeros(3 * orders * len(xs), orders * len(ys), dtype=torch.float64)
    for begin in range(0, len(c), CHUNK):
        cc, mm = c[begin : begin + CHUNK], m[begin : begin + CHUNK]
        a = _axis_factors(xs, cc[:, 0], metric.temperature, derivatives)  # (orders n_x, K)
        b = _axis_factors(ys, cc[:, 1], metric.temperature, derivatives)  # (orders n_y, K)
        left = (mm.T[:, None, :] * a[None]).reshape(-1, len(cc))  # (3 orders n_x, K)
        out.addmm_(left, b.T)
    return out.reshape(3, orders, len(xs), orders, len(ys))


def _log_det_and_derivatives(sums: torch.Tensor, regularization: float) -> tuple[torch.Tensor, ...]:
    """f, fₓ, fᵧ, fₓᵧ (each (n_x, n_y)) of f = log det G⁻¹ from ``separable_sums(..., derivatives=True)``."""
    (p, px, py, pxy), (q, qx, qy, qxy), (r, rx, ry, rxy) = (
        (s[0, :, 0], s[1, :, 0], s[0, :, 1], s[1, :, 1]) for s in sums
    )
    p, r = p + regularization, r + regularization
    D = p * r - q * q
    Dx = px * r + p * rx - 2.0 * q * qx
    Dy = py * r + p * ry - 2.0 * q * qy
    Dxy = pxy * r + px * ry + py * rx + p * rxy - 2.0 * qx * qy - 2.0 * q * qxy
    return torch.log(D), Dx / D, Dy / D, Dxy / D - Dx * Dy / (D * D)


def exact_log_det(metric: LearnedMetric, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """log det G⁻¹ on the tensor grid xs × ys, (n_x, n_y), in float64 (the reference of the check); 2-D only."""
    require_2d_metric(metric, "exact_log_det evaluates a 2-D tensor grid")
    (p,), (q,), (r,) = (s[:, :, 0] for s in separable_sums(metric, xs, ys, derivatives=False))
    lam = metric.regularization
    return torch.log((p + lam) * (r + lam) - q * q)


class GridTarget:
    """f̃ ≈ log det G⁻¹ on the box [low, high] of a 2-D ``LearnedMetric``, bicubic Hermite on a grid of spacing
    ``spacing`` · T (module docstring). ``log_det_and_grad(z)`` gives (f̃(z), ∇f̃(z)) like the metric's, at a cost
    independent of the number of centroids; ``max_centre_error`` is max |f̃ − f| over the cell centres."""

    constant = False

    def __init__(self, metric: LearnedMetric, low, high, spacing: float):
        if not isinstance(metric, LearnedMetric):
            raise ValueError(
                f"the grid target needs a LearnedMetric of a 2-D latent space, got {type(metric).__name__}"
            )
        require_2d_metric(metric, "GridTarget interpolates a 2-D latent space")
        start = time.perf_counter()
        self.centroids, self.M = metric.centroids.detach(), metric.M.detach()
        self.temperature, self.regularization, self.dim = metric.temperature, metric.regularization, 2
        self.spacing = check_float("spacing", spacing, 0.0)
        low, high = (torch.as_tensor(v, dtype=torch.float64).reshape(2) for v in (low, high))
        cells = torch.ceil((high - low) / (spacing * self.temperature)).clamp_min(1).long()
        self.low, self.cells = low, cells
        self.step = (high - low) / cells  # ≤ spacing · T
        xs, ys = (torch.linspace(float(low[i]), float(high[i]), int(cells[i]) + 1, dtype=torch.float64) for i in (0, 1))
        f, fx, fy, fxy = _log_det_and_derivatives(separable_sums(metric, xs, ys, True), self.regularization)
        self.coefficients = self._patches(f, fx, fy, fxy)  # (n_x − 1, n_y − 1, 4, 4)
        self.build_seconds = time.perf_counter() - start
        centres = [(v[:-1] + v[1:]) / 2 for v in (xs, ys)]
        zc = torch.cartesian_prod(*centres)
        interpolated = self._evaluate(zc, gradient=False)[0].reshape(len(centres[0]), len(centres[1]))
        self.max_centre_error = float((interpolated - exact_log_det(metric, *centres)).abs().max())
        self.seconds = time.perf_counter() - start

    def _patches(self, f, fx, fy, fxy) -> torch.Tensor:
        """C = H K Hᵀ per cell, K the 4 × 4 table of corner values and derivatives scaled to cell units."""
        hx, hy = (float(h) for h in self.step)
        fx, fy, fxy = hx * fx, hy * fy, hx * hy * fxy

        def corners(g):  # (n_x − 1, n_y − 1, 2, 2): [x corner, y corner]
            return torch.stack(
                (torch.stack((g[:-1, :-1], g[:-1, 1:]), -1), torch.stack((g[1:, :-1], g[1:, 1:]), -1)), -2
            )

        top = torch.cat((corners(f), corners(fy)), -1)  # rows v(0), v(1) along x; columns v, v, d, d along y
        bottom = torch.cat((corners(fx), corners(fxy)), -1)  # rows d(0), d(1) along x
        K = torch.cat((top, bottom), -2)
        return (_HERMITE @ K @ _HERMITE.T).contiguous()

    def _evaluate(self, z: torch.Tensor, gradient: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        u = (z.double() - self.low) / self.step  # grid coordinates
        cell = u.floor().long()
        cell = torch.minimum(cell.clamp_min(0), self.cells - 1)  # beyond B: the boundary cell continued
        s, t = (u - cell).unbind(1)
        C = self.coefficients[cell[:, 0], cell[:, 1]]  # (B, 4, 4)
        ones, zeros = torch.ones_like(s), torch.zeros_like(s)
        S = torch.stack((ones, s, s * s, s * s * s), 1)
        T = torch.stack((ones, t, t * t, t * t * t), 1)
        CT = (C @ T[:, :, None]).squeeze(2)  # (B, 4)
        value = (S * CT).sum(1)
        if not gradient:
            return value, None
        dS = torch.stack((zeros, ones, 2.0 * s, 3.0 * s * s), 1)
        dT = torch.stack((zeros, ones, 2.0 * t, 3.0 * t * t), 1)
        d_s = (dS * CT).sum(1)
        d_t = (S[:, None, :] @ C @ dT[:, :, None]).reshape(-1)
        return value, torch.stack((d_s, d_t), 1) / self.step

    def log_det_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f̃(z), ∇f̃(z)), shapes (B,) and (B, 2), in z's dtype."""
        value, grad = self._evaluate(z)
        return value.to(z.dtype), grad.to(z.dtype)

    def log_sqrt_det_G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """½ f̃(z): the sampler's (unnormalised) log-target, shape (B,)."""
        return 0.5 * self.log_det_and_grad(z)[0]

    def describe(self) -> dict:
        """JSON-ready: the spacing, the grid, the checked error and the build time."""
        return {
            "method": "bicubic Hermite grid of log det G⁻¹",
            "spacing_per_temperature": self.spacing,
            "nodes": [int(c) + 1 for c in self.cells],
            "max_error_at_cell_centres": self.max_centre_error,
            "n_centroids": len(self.centroids),
            "seconds": self.seconds,
        }


def interpolate_if_possible(
    metric: LearnedMetric, low, high, tolerance: float = DEFAULT_TOLERANCE
) -> GridTarget | None:
    """The coarsest ``GridTarget`` of ``SPACINGS`` whose checked error is at most ``tolerance``; None for a metric
    that is not 2-D or when no spacing (within ``MAX_NODES``) meets it."""
    tolerance = check("grid_tolerance", tolerance)
    if not isinstance(metric, LearnedMetric) or metric.dim != 2:
        return None
    width = (torch.as_tensor(high, dtype=torch.float64) - torch.as_tensor(low, dtype=torch.float64)).reshape(2)
    for spacing in SPACINGS:
        nodes = torch.prod(torch.ceil(width / (spacing * metric.temperature)) + 1)
        if nodes > MAX_NODES:
            break
        target = GridTarget(metric, low, high, spacing)
        if target.max_centre_error <= tolerance:
            return target
    return None
