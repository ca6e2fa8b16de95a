r"""The learned Riemannian metric of the RHVAE and its closed-form derivatives (DESIGN §2.1–2.2).

The inverse metric at a latent point z is

    G⁻¹(z) = Σᵢ Mᵢ wᵢ(z) + λ I,    wᵢ(z) = exp(−‖z − cᵢ‖² / T²),    Mᵢ = L(xᵢ) L(xᵢ)ᵀ,

with centroids cᵢ = μ(xᵢ), temperature T and regularization λ. Since every Mᵢ is positive semi-definite and
λ > 0, G⁻¹(z) ⪰ λ I is symmetric positive definite everywhere.

With ∂wᵢ/∂z = −2 wᵢ (z − cᵢ) / T² the two forces the generalized leapfrog needs have closed forms:

    ∇_z log det G⁻¹(z) = Σᵢ tr(G(z) Mᵢ) ∂wᵢ/∂z,
    ∇_z ρᵀ G⁻¹(z) ρ    = Σᵢ (ρᵀ Mᵢ ρ) ∂wᵢ/∂z          (ρ held fixed).

Both are written as a few dense products over the (batch × centroids) weight matrix, so autograd can
differentiate through them with a first-order backward (no double backward).

``EuclideanMetric`` is the constant metric G = I of the HVAE: the same interface, zero forces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def spd_inverse_logdet(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse and log-determinant of a batch of SPD matrices ``A`` (B, d, d).

    For d = 2 (the paper's latent dimension) the closed form ``[[a, b], [b, c]]⁻¹ = [[c, −b], [−b, a]] / det``
    avoids the per-call overhead of LAPACK on tiny matrices; other d use a Cholesky factorisation.
    """
    if A.shape[-1] == 2:
        a, b, c = A[..., 0, 0], 0.5 * (A[..., 0, 1] + A[..., 1, 0]), A[..., 1, 1]
        det = a * c - b * b
        inv = torch.stack((torch.stack((c, -b), -1), torch.stack((-b, a), -1)), -2) / det[..., None, None]
        return inv, torch.log(det)
    chol = cholesky(A)
    inv = torch.cholesky_inverse(chol)
    return inv, 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)


def cholesky(A: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of a batch of SPD matrices; NaN (never an exception) where A is not SPD, so that
    a diverging flow is reported by the trainer's finiteness check rather than by LAPACK."""
    if A.shape[-1] == 2:
        a, b, c = A[..., 0, 0], A[..., 1, 0], A[..., 1, 1]
        l11 = torch.sqrt(a)
        l21 = b / l11
        l22 = torch.sqrt(c - l21 * l21)
        zero = torch.zeros_like(a)
        return torch.stack((torch.stack((l11, zero), -1), torch.stack((l21, l22), -1)), -2)
    chol, info = torch.linalg.cholesky_ex(A)
    return torch.where((info == 0)[..., None, None], chol, torch.full_like(chol, float("nan")))


@dataclass
class MetricAt:
    """The metric evaluated at a batch of points ``z`` (B, d): reused by every force at those points."""

    z: torch.Tensor
    weights: torch.Tensor | None  # wᵢ(z), (B, N); None for the Euclidean metric
    G_inv: torch.Tensor  # (B, d, d)
    G: torch.Tensor  # (B, d, d)
    log_det_G_inv: torch.Tensor  # (B,)


class LearnedMetric:
    """G⁻¹(z) = Σᵢ Mᵢ exp(−‖z − cᵢ‖²/T²) + λ I for centroids ``centroids`` (N, d) and matrices ``M`` (N, d, d)."""

    constant = False

    def __init__(self, centroids: torch.Tensor, M: torch.Tensor, temperature: float, regularization: float):
        if centroids.ndim != 2 or M.shape != (centroids.shape[0], centroids.shape[1], centroids.shape[1]):
            raise ValueError(
                f"centroids must be (N, d) and M (N, d, d); got {tuple(centroids.shape)} and {tuple(M.shape)}"
            )
        self.centroids = centroids
        self.M = M
        self.temperature = float(temperature)
        self.regularization = float(regularization)
        self.dim = centroids.shape[1]
        self._M_flat = M.reshape(M.shape[0], -1)  # (N, d²)

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """wᵢ(z) = exp(−‖z − cᵢ‖² / T²), shape (B, N)."""
        sq_dist = (z * z).sum(-1, keepdim=True) - 2.0 * z @ self.centroids.T + (self.centroids**2).sum(-1)
        return torch.exp(-sq_dist.clamp_min(0.0) / self.temperature**2)

    def G_inv_from_weights(self, weights: torch.Tensor) -> torch.Tensor:
        d = self.dim
        eye = torch.eye(d, dtype=weights.dtype, device=weights.device)
        return (weights @ self._M_flat).reshape(-1, d, d) + self.regularization * eye

    def at(self, z: torch.Tensor) -> MetricAt:
        weights = self.weights(z)
        G_inv = self.G_inv_from_weights(weights)
        G, log_det_G_inv = spd_inverse_logdet(G_inv)
        return MetricAt(z, weights, G_inv, G, log_det_G_inv)

    def G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """G⁻¹(z) for z (B, d) → (B, d, d)."""
        return self.G_inv_from_weights(self.weights(z))

    def G(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) = (G⁻¹(z))⁻¹ for z (B, d) → (B, d, d)."""
        return self.at(z).G

    def _sum_weight_gradients(self, coeff: torch.Tensor, at: MetricAt) -> torch.Tensor:
        """Σᵢ coeff_bi ∂wᵢ/∂z at the points of ``at``: −(2/T²) [ (Σᵢ aᵢ) z − Σᵢ aᵢ cᵢ ] with aᵢ = coeff_bi wᵢ."""
        a = coeff * at.weights
        return (-2.0 / self.temperature**2) * (a.sum(-1, keepdim=True) * at.z - a @ self.centroids)

    def grad_log_det_G_inv(self, at: MetricAt) -> torch.Tensor:
        """∇_z log det G⁻¹(z) = Σᵢ tr(G Mᵢ) ∂wᵢ/∂z, shape (B, d)."""
        traces = at.G.reshape(at.G.shape[0], -1) @ self._M_flat.T  # tr(G Mᵢ) = Σ_jk G_jk (Mᵢ)_jk (Mᵢ symmetric)
        return self._sum_weight_gradients(traces, at)

    def grad_quadratic(self, at: MetricAt, rho: torch.Tensor) -> torch.Tensor:
        """∇_z ρᵀ G⁻¹(z) ρ = Σᵢ (ρᵀ Mᵢ ρ) ∂wᵢ/∂z with ρ (B, d) held fixed, shape (B, d)."""
        outer = (rho[:, :, None] * rho[:, None, :]).reshape(rho.shape[0], -1)
        return self._sum_weight_gradients(outer @ self._M_flat.T, at)

    def max_eigenvalue(self, chunk: int = 4096) -> torch.Tensor:
        """κ = maxᵢ λmax G⁻¹(cᵢ), the largest inverse metric over the centroids (where G⁻¹ peaks), a scalar."""
        peaks = [torch.linalg.eigvalsh(self.G_inv(c))[:, -1].max() for c in self.centroids.split(chunk)]
        return torch.stack(peaks).max()

    def log_sqrt_det_G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """log √det G⁻¹(z), the log of the (unnormalised) sampler target of DESIGN §2.5, shape (B,)."""
        return 0.5 * spd_inverse_logdet(self.G_inv(z))[1]

    def grad_log_sqrt_det_G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """∇_z log √det G⁻¹(z) = ½ Σᵢ tr(G Mᵢ) ∂wᵢ/∂z, shape (B, d)."""
        return 0.5 * self.grad_log_det_G_inv(self.at(z))


class EuclideanMetric:
    """The constant metric G = I of the HVAE (Caterini et al. 2018): same interface, zero metric forces."""

    constant = True

    def __init__(self, dim: int):
        self.dim = dim

    def at(self, z: torch.Tensor) -> MetricAt:
        eye = torch.eye(self.dim, dtype=z.dtype, device=z.device).expand(z.shape[0], -1, -1)
        return MetricAt(z, None, eye, eye, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device))

    def grad_log_det_G_inv(self, at: MetricAt) -> torch.Tensor:
        return torch.zeros_like(at.z)

    def grad_quadratic(self, at: MetricAt, rho: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(at.z)


def apply(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Batched matrix–vector product (B, d, d) × (B, d) → (B, d)."""
    return (matrix @ vector[:, :, None])[:, :, 0]


def quadratic_form(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """vᵀ A v for a batch, (B, d, d) × (B, d) → (B,)."""
    return (apply(matrix, vector) * vector).sum(-1)
