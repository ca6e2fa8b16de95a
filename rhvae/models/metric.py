r"""The learned Riemannian metric of the RHVAE and its closed-form derivatives (docs/design.md §2.1–2.2).

The inverse metric at a latent point z is

    G⁻¹(z) = Σᵢ Mᵢ wᵢ(z) + λ I,    wᵢ(z) = exp(−‖z − cᵢ‖² / T²),    Mᵢ = L(xᵢ) L(xᵢ)ᵀ,

with centroids cᵢ = μ(xᵢ), temperature T and regularization λ. Since every Mᵢ is positive semi-definite and
λ > 0, G⁻¹(z) ⪰ λ I is symmetric positive definite everywhere.

With ∂wᵢ/∂z = −2 wᵢ (z − cᵢ) / T² the two forces the generalized leapfrog needs have closed forms:

    ∇_z log det G⁻¹(z) = Σᵢ tr(G(z) Mᵢ) ∂wᵢ/∂z,
    ∇_z ρᵀ G⁻¹(z) ρ    = Σᵢ (ρᵀ Mᵢ ρ) ∂wᵢ/∂z          (ρ held fixed).

Both are contractions of the Jacobian ∂vec(G⁻¹)/∂z = Σᵢ vec(Mᵢ) (∂wᵢ/∂z)ᵀ, which one dense product over the
(batch × centroids) weight matrix gives, so autograd differentiates through them with a first-order backward (no
double backward). The metric at a point (``at``) and the fixed-point iterations of the implicit leapfrog steps
(``solve_momentum``, ``solve_position``) are single autograd nodes with a hand-written backward
(``rhvae.models.autograd_nodes``).

``EuclideanMetric`` is the constant metric G = I of the HVAE: only ``constant`` (True) and ``at``, since the models
test ``constant`` and run the ordinary leapfrog instead of asking it for forces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rhvae.models.autograd_nodes import MetricEvaluation, MomentumKick, MomentumSolve, PositionSolve, matmul_add
from rhvae.validation import check


def spd_inverse_logdet(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse and log-determinant of a batch of SPD matrices ``A`` (B, d, d).

    For d = 2 (the paper's latent dimension) the closed form ``[[a, b], [b, c]]⁻¹ = [[c, −b], [−b, a]] / det``
    avoids the per-call overhead of LAPACK on tiny matrices; other d use a Cholesky factorisation. Both read the
    symmetric part (A + Aᵀ)/2, so that the result and its gradient are those of the symmetric part whatever d (a
    Cholesky factorisation alone would read the lower triangle only).
    """
    if A.shape[-1] == 2:
        a, b, c = A[..., 0, 0], 0.5 * (A[..., 0, 1] + A[..., 1, 0]), A[..., 1, 1]
        det = a * c - b * b
        minus_b = -b
        inv = torch.stack((c, minus_b, minus_b, a), -1).reshape(A.shape) / det[..., None, None]
        return inv, torch.log(det)
    chol = cholesky(0.5 * (A + A.mT))
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
    #: ∂vec(G⁻¹)/∂z = Σᵢ vec(Mᵢ) (∂wᵢ/∂z)ᵀ, (B, d², d): every metric force at z is a contraction of it (see
    #: ``LearnedMetric.at``); None for the Euclidean metric.
    jacobian: torch.Tensor | None = None


def sym2_max_eigenvalue(A: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue of a batch of symmetric matrices (B, d, d) → (B,).

    For d = 2, the closed form (a + c)/2 + √(((a − c)/2)² + b²) (with b the mean of the off-diagonal entries)
    replaces the batched LAPACK call, whose per-call overhead dominates for 2 × 2 matrices; other d use
    ``torch.linalg.eigvalsh``. The two agree to rounding, gradients included (tests/models/test_speed_equivalence.py).
    """
    if A.shape[-1] == 2:
        a, c = A[..., 0, 0], A[..., 1, 1]
        b = 0.5 * (A[..., 0, 1] + A[..., 1, 0])
        half_diff = 0.5 * (a - c)
        return 0.5 * (a + c) + torch.sqrt(half_diff * half_diff + b * b)
    return torch.linalg.eigvalsh(A)[..., -1]


class LearnedMetric:
    """G⁻¹(z) = Σᵢ Mᵢ exp(−‖z − cᵢ‖²/T²) + λ I for centroids ``centroids`` (N, d) and matrices ``M`` (N, d, d).

    Speed: everything that depends on the N centroids goes through two dense products per batch of points, the
    squared distances (B, d) × (d, N) and one (B, N) × (N, d² + d³) product of the weights with the fixed table
    [vec(Mᵢ), (2/T²) vec(Mᵢ) ⊗ cᵢ]. It gives G⁻¹(z) and its Jacobian

        J = ∂vec(G⁻¹)/∂z = Σᵢ vec(Mᵢ) (∂wᵢ/∂z)ᵀ = (2/T²) [Σᵢ wᵢ vec(Mᵢ) cᵢᵀ − (Σᵢ wᵢ vec(Mᵢ)) zᵀ],  (B, d², d),

    from which both forces, for any momentum ρ, are contractions of size d³ that do not depend on N:

        ∇_z log det G⁻¹ = Σ_jk G_jk J_jk,    ∇_z ρᵀ G⁻¹ ρ = Σ_jk ρ_j ρ_k J_jk.

    This is the same sum as Σᵢ coeffᵢ ∂wᵢ/∂z regrouped, so the values agree with the term-by-term form to
    rounding; the momentum fixed-point iterations of the leapfrog then cost O(B d³) each instead of O(B N d²).
    """

    constant = False

    def __init__(self, centroids: torch.Tensor, M: torch.Tensor, temperature: float, regularization: float):
        n, d = centroids.shape[-2:]
        if centroids.ndim not in (2, 3) or M.shape != (*centroids.shape, d):
            raise ValueError(
                f"centroids must be (N, d) and M (N, d, d) (or (members, N, d) and (members, N, d, d)); got "
                f"{tuple(centroids.shape)} and {tuple(M.shape)}"
            )
        self.centroids = centroids
        self.M = M
        #: the number of members of a stack of models (``rhvae.models.VAE.stack``) whose metrics this one holds side
        #: by side, or None for one model's metric. Grouped, the B rows of every z are ``groups`` consecutive
        #: blocks of B/groups rows, block m evaluated against member m's centroids and matrices only.
        self.groups = centroids.shape[0] if centroids.ndim == 3 else None
        self.temperature = check("temperature", temperature)  # e.g. T = 1e-300 would overflow 1/T²
        self.regularization = check("regularization", regularization)
        self.dim = d
        self._M_flat = M.reshape(*M.shape[:-2], -1)  # (…, N, d²)
        # the (N, k) tables are stored transposed, (k, N) contiguous: MKL's (B, N) × (N, k) product is up to 2–3×
        # faster with that layout for large N
        self._M_flat_T = self._M_flat.mT.contiguous()
        self._centroids_T = None  # (…, d, N), built on first use (``centroids_T``)
        self._table = None  # [vec(Mᵢ), (2/T²) vec(Mᵢ) ⊗ cᵢ]ᵀ, (d² + d³, N), built on first use
        self._sym2 = None  # the sampler's d = 2 table, built on first use
        self._max_eigenvalue = None  # κ, computed on first use
        inv_t2 = 1.0 / self.temperature**2
        # the kernel's exponent −‖z − cᵢ‖²/T² = [z, ‖z‖²] · [2cᵢ/T², −1/T²] − ‖cᵢ‖²/T²
        self._exponent_bias = -(centroids * centroids).sum(-1)[..., None, :] * inv_t2  # (…, 1, N)
        minus_inv_t2 = torch.full(
            (*centroids.shape[:-2], 1, n), -inv_t2, dtype=centroids.dtype, device=centroids.device
        )
        self._exponent_matrix = torch.cat(((2.0 * inv_t2) * centroids.mT, minus_inv_t2), -2)  # (…, d + 1, N)
        self.jacobian_scale = 2.0 / self.temperature**2  # J = (2/T²)[…] (see the class docstring)
        self._reg_eye = self.regularization * torch.eye(d, dtype=M.dtype, device=M.device)  # λ I

    def group(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows (B, …) as (members, B/members, …) for a grouped metric; unchanged otherwise."""
        return rows if self.groups is None else rows.reshape(self.groups, -1, *rows.shape[1:])

    def ungroup(self, grouped: torch.Tensor) -> torch.Tensor:
        """The inverse of ``group``: (members, B/members, …) back to rows (B, …)."""
        return grouped if self.groups is None else grouped.reshape(-1, *grouped.shape[2:])

    def centroids_T(self) -> torch.Tensor:
        """The centroids transposed, (d, N) (grouped: (members, d, N)), contiguous: the compiled kernels' layout."""
        if self._centroids_T is None:
            self._centroids_T = self.centroids.mT.contiguous()
        return self._centroids_T

    def matrices_T(self) -> torch.Tensor:
        """vec(Mᵢ) transposed, (d², N) (grouped: (members, d², N)), contiguous."""
        return self._M_flat_T

    def jacobian_table(self) -> torch.Tensor:
        """[vec(Mᵢ), (2/T²) vec(Mᵢ) ⊗ cᵢ]ᵀ, (d² + d³, N): the weights times it give Σᵢ wᵢ vec(Mᵢ) and the moment part
        of J (see ``at``)."""
        if self._table is None:
            d = self.dim
            outer = self._M_flat[..., :, None] * (self.jacobian_scale * self.centroids)[..., None, :]
            outer = outer.reshape(*self._M_flat.shape[:-1], d**3)
            self._table = torch.cat((self._M_flat, outer), -1).mT.contiguous()
        return self._table

    def exponent(self, z: torch.Tensor) -> torch.Tensor:
        """−‖z − cᵢ‖² / T² = −‖z‖²/T² + 2 z·cᵢ/T² − ‖cᵢ‖²/T², shape (B, N): one (B, d + 1) × (d + 1, N) product plus
        a bias (rounding can make it slightly positive). Grouped: (members, B/members, N)."""
        z_aug = self.group(torch.cat((z, (z * z).sum(-1, keepdim=True)), 1))
        return matmul_add(self._exponent_bias, z_aug, self._exponent_matrix)

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """wᵢ(z) = exp(−‖z − cᵢ‖² / T²), shape (B, N), with the exponent clamped at 0 (where rounding makes the
        squared distance negative): three passes over the (B, N) matrix."""
        exponent = self.exponent(z)
        if exponent.requires_grad:
            return torch.exp(exponent.clamp_max(0.0))
        return exponent.clamp_max_(0.0).exp_()

    def weights_and_clamped(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights without autograd and 1(exponent > 0), where the clamp is active (its gradient is zero
        there): what the hand-written backwards of ``rhvae.models.autograd_nodes`` need."""
        exponent = self.exponent(z)
        clamped = exponent > 0
        return exponent.clamp_max_(0.0).exp_(), clamped

    def G_inv_from_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Σᵢ wᵢ Mᵢ + λ I from the weights (B, N) (or grouped), as rows (B, d, d)."""
        d = self.dim
        return (weights @ self._M_flat_T.mT).reshape(-1, d, d) + self._reg_eye

    def at(self, z: torch.Tensor) -> MetricAt:
        """G⁻¹, G, log det G⁻¹ and J = ∂vec(G⁻¹)/∂z at z (B, d), as one autograd node
        (``rhvae.models.autograd_nodes``)."""
        G_inv, G, log_det_G_inv, jacobian, weights = MetricEvaluation.apply(z, self.centroids, self.M, self)
        return MetricAt(z, weights, G_inv, G, log_det_G_inv, jacobian)

    def evaluate(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What ``at`` computes, without the autograd node: the weights, 1(exponent > 0) (where the clamp is
        active), Σᵢ wᵢ vec(Mᵢ) (B, d²), G⁻¹, G, log det G⁻¹ and J."""
        d = self.dim
        weights, outside = self.weights_and_clamped(z)
        sums = (weights @ self.jacobian_table().mT).reshape(len(z), -1)
        M_sum, moment = sums.split((d * d, d**3), 1)
        G_inv = M_sum.reshape(-1, d, d) + self._reg_eye
        G, log_det_G_inv = spd_inverse_logdet(G_inv)
        return weights, outside, M_sum, G_inv, G, log_det_G_inv, self._jacobian(M_sum, moment, z)

    def _jacobian(self, M_sum: torch.Tensor, moment: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """J = (2/T²)[Σᵢ wᵢ vec(Mᵢ) cᵢᵀ − (Σᵢ wᵢ vec(Mᵢ)) zᵀ] from the sums Σᵢ wᵢ vec(Mᵢ) (B, d²) and
        (2/T²) Σᵢ wᵢ vec(Mᵢ) ⊗ cᵢ (B, d³) over the table, (B, d², d)."""
        d = self.dim
        moment = moment.reshape(-1, d * d, d)
        return torch.addcmul(moment, M_sum[:, :, None], z[:, None, :], value=-self.jacobian_scale)

    def G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """G⁻¹(z) for z (B, d) → (B, d, d)."""
        return self.G_inv_from_weights(self.weights(z))

    def G(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) = (G⁻¹(z))⁻¹ for z (B, d) → (B, d, d)."""
        return spd_inverse_logdet(self.G_inv(z))[0]

    def jacobian(self, at: MetricAt) -> torch.Tensor:
        """J = ∂vec(G⁻¹)/∂z at ``at.z``, (B, d², d) (from the weights if ``at`` was built by hand without it)."""
        if at.jacobian is None:
            d = self.dim
            sums = (at.weights @ self.jacobian_table().mT).reshape(len(at.z), -1)
            at.jacobian = self._jacobian(*sums.split((d * d, d**3), 1), at.z)
        return at.jacobian

    def grad_log_det_G_inv(self, at: MetricAt) -> torch.Tensor:
        """∇_z log det G⁻¹(z) = Σᵢ tr(G Mᵢ) ∂wᵢ/∂z = Σ_jk G_jk J_jk, shape (B, d) (the leapfrog's momentum updates
        contract G with J themselves, in ``kick``)."""
        # tr(G Mᵢ) = Σ_jk G_jk (Mᵢ)_jk (Mᵢ symmetric)
        return torch.bmm(at.G.reshape(at.G.shape[0], 1, -1), self.jacobian(at)).squeeze(1)

    def kick(self, at: MetricAt, base, half, grad_U, rho=None) -> torch.Tensor:
        """base − (ε/2) [∇U + ½ ∇_z ρᵀG⁻¹(z)ρ − ½ ∇_z log det G⁻¹(z)] at ``at.z`` with ρ held fixed (without the ρ
        term when ``rho`` is None), ``half`` = ε/2 a (1, 1) or (B, 1) tensor: the explicit momentum updates of the
        leapfrog (the part of step 1 that does not depend on ρ½, and step 3) as one autograd node."""
        return MomentumKick.apply(base, half, grad_U, rho, self.jacobian(at), at.G)

    def solve_momentum(
        self, at: MetricAt, rho, base, scale, n_iter: int, exact_gradient: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1 of the generalized leapfrog: ρ_{k+1} = base − scale · ∇_z ρ_kᵀ G⁻¹(z) ρ_k for k = 0 … n_iter,
        from ρ₀ = ``rho``, with ``scale`` a (1, 1) or (B, 1) tensor. Returns ρ_{n_iter + 1} and the change of the
        last iteration max |ρ_{n_iter + 1} − ρ_{n_iter}| (0 without iterations), as one autograd node.

        ``exact_gradient=False`` is the released code's gradient: the same values, but the iterate ρ_{n_iter} fed
        to the last iteration is treated as a constant, so only the last force is differentiated."""
        scaled = self.jacobian(at) * scale[:, :, None]
        if exact_gradient or n_iter == 0:
            return MomentumSolve.apply(rho, base, scaled, n_iter)
        with torch.no_grad():
            previous, _ = MomentumSolve.apply(rho, base, scaled, n_iter - 1)
        rho_new, _ = MomentumSolve.apply(previous, base, scaled, 0)
        return rho_new, (rho_new.detach() - previous).abs().max()

    def solve_position(
        self, z_start, z_half, u, n_iter: int, exact_gradient: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2 of the generalized leapfrog: z_{k+1} = z_half + G⁻¹(z_k) u for k = 0 … n_iter − 1, from
        z₀ = ``z_start``. Returns z_{n_iter} and max |z_{n_iter} − z_{n_iter − 1}| (0 without iterations), as one
        autograd node that differentiates through the centroids and the matrices Mᵢ too.

        ``exact_gradient=False``: the released code's gradient (z_{n_iter − 1} treated as a constant)."""
        if exact_gradient or n_iter <= 1:
            return PositionSolve.apply(z_start, z_half, u, self.centroids, self.M, self, n_iter)
        with torch.no_grad():
            previous, _ = PositionSolve.apply(z_start, z_half, u, self.centroids, self.M, self, n_iter - 1)
        z_new, _ = PositionSolve.apply(previous, z_half, u, self.centroids, self.M, self, 1)
        return z_new, (z_new.detach() - previous).abs().max()

    def max_eigenvalue(self, chunk: int = 4096) -> torch.Tensor:
        """κ = maxᵢ λmax G⁻¹(cᵢ), the largest inverse metric over the centroids (where G⁻¹ peaks), a scalar, or one
        per member (members,) for a grouped metric (computed once per metric: O(N²))."""
        if self._max_eigenvalue is None:
            grouped = self.centroids if self.groups else self.centroids[None]  # (groups or 1, N, d)
            peaks = [
                sym2_max_eigenvalue(self.G_inv(c.reshape(-1, self.dim))).reshape(len(c), -1).amax(1)
                for c in grouped.split(chunk, dim=1)
            ]
            kappa = torch.stack(peaks).amax(0)
            self._max_eigenvalue = kappa if self.groups else kappa[0]
        return self._max_eigenvalue

    def log_det_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log det G⁻¹(z), ∇_z log det G⁻¹(z)), shapes (B,) and (B, d): what the sampler needs at every step.

        For d = 2 it never forms G: with G⁻¹ = [[a, b], [b, c]] and det = ac − b², tr(G Mᵢ) = q · (Mᵢ₀₀, Mᵢ₀₁, Mᵢ₁₁)
        for q = (c, −2b, a)/det, so ∇ log det G⁻¹ = −(2/T²)[(q · Σᵢ wᵢ mᵢ) z − Σᵢ wᵢ (q · mᵢ) cᵢ], every sum over i
        coming from one (B, N) × (N, 9) product. Other d use ``at``.
        """
        if self.dim != 2:
            at = self.at(z)
            return at.log_det_G_inv, self.grad_log_det_G_inv(at)
        table, bias = self._sym2_table()
        sums = torch.addmm(bias, self.weights(z), table.T)  # (B, 9): G⁻¹ entries (a, b, c), then Σᵢ wᵢ mᵢ ⊗ cᵢ
        a, b, c = sums[:, :3].unbind(1)
        det = torch.addcmul(a * c, b, b, value=-1.0)
        q = torch.stack((c, -2.0 * b, a), 1) / det[:, None]
        first = (q * (sums[:, :3] - bias[:3])).sum(-1, keepdim=True)
        second = (q[:, None, :] @ sums[:, 3:].reshape(-1, 3, 2))[:, 0]
        return torch.log(det), -self.jacobian_scale * (first * z - second)

    def _sym2_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For d = 2: mᵢ = (Mᵢ₀₀, (Mᵢ₀₁ + Mᵢ₁₀)/2, Mᵢ₁₁) and mᵢ ⊗ cᵢ as an (N, 9) table, and the bias (λ, 0, λ, 0…)."""
        if self._sym2 is None:
            M, c = self.M, self.centroids
            m = torch.stack((M[:, 0, 0], 0.5 * (M[:, 0, 1] + M[:, 1, 0]), M[:, 1, 1]), 1)
            table = torch.cat((m, (m[:, :, None] * c[:, None, :]).reshape(-1, 6)), 1).T.contiguous()
            bias = torch.zeros(9, dtype=M.dtype, device=M.device)
            bias[0] = bias[2] = self.regularization
            self._sym2 = (table, bias)
        return self._sym2

    def log_sqrt_det_G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """log √det G⁻¹(z), the log of the (unnormalised) sampler target of docs/design.md §2.5, shape (B,)."""
        return 0.5 * spd_inverse_logdet(self.G_inv(z))[1]

    def grad_log_sqrt_det_G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """∇_z log √det G⁻¹(z) = ½ Σᵢ tr(G Mᵢ) ∂wᵢ/∂z, shape (B, d): the sampler's force (``log_det_and_grad``)."""
        return 0.5 * self.log_det_and_grad(z)[1]


class EuclideanMetric:
    """The constant metric G = I of the HVAE (Caterini et al. 2018). It has ``at`` only, not ``LearnedMetric``'s
    forces and solves: a model whose metric is ``constant`` runs the ordinary leapfrog, where they are zero."""

    constant = True

    def __init__(self, dim: int):
        self.dim = dim

    def at(self, z: torch.Tensor) -> MetricAt:
        eye = torch.eye(self.dim, dtype=z.dtype, device=z.device).expand(z.shape[0], -1, -1)
        return MetricAt(z, None, eye, eye, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device))


def apply(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Batched matrix–vector product (B, d, d) × (B, d) → (B, d)."""
    return torch.bmm(matrix, vector[:, :, None]).squeeze(2)


def quadratic_form(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """vᵀ A v for a batch, (B, d, d) × (B, d) → (B,)."""
    return (apply(matrix, vector) * vector).sum(-1)
