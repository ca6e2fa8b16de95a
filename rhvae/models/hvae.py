r"""The Hamiltonian VAE (Caterini et al. 2018) of docs/design.md §2.2–2.3: a tempered leapfrog flow on the latent code.

Notation (paper): x ∈ [0, 1]^D an image, z ∈ R^d a latent code, prior p(z) = N(0, I), Gaussian encoder
q(z|x) = N(μ(x), diag σ²(x)), Bernoulli decoder p(x|z) with logits π(z). Networks: encoder
Linear(D, h)–ReLU → (μ, log σ²) heads; decoder Linear(d, h)–ReLU–Linear(h, D); metric network (RHVAE)
Linear(D, h)–ReLU → ``diag`` head Linear(h, d) through exp, ``lower`` head Linear(h, d(d−1)/2).

**β₀.** ``beta_zero`` *is* β₀, the initial tempering factor, in every model and function of this package
(pythae uses √β₀ in its RHVAE and β₀ elsewhere). The initial momentum is ρ₀ ~ N(0, G(z₀)/β₀).

**Objectives** (HVAE and RHVAE, ``objective=``):

* ``"elbo"`` (the HVAE's default): the true ELBO of the flow, tempering included (docs/design.md §2.3),
  E[log p(x, z_K) + log N(ρ_K; 0, G(z_K)) − log q(z₀|x) − log N(ρ₀; 0, G(z₀)/β₀) + (d/2) log β₀].
  It is a lower bound of log p(x), so its value is comparable across models and with the log-likelihood.
* ``"authors"`` (the RHVAE's default): the variant the authors' release optimises: ρ₀ = L(x) γ / √β₀ (a factor
  of the metric network's Mᵢ, not of G(z₀)), and the ρ₀ density and the Jacobian terms dropped. Not a bound.

Whatever a model was trained with, evaluation uses the true ELBO and the exact log p(x). The RHVAE defaults to
the release's objective because it is the one under which both its flow and its metric work (docs/stability.md,
"Training schemes": with the true ELBO the metric flattens to λI or the flow freezes); the HVAE keeps the true
ELBO, the objective of Caterini et al.
"""

from __future__ import annotations

import math

import torch

from rhvae.models.metric import (
    EuclideanMetric,
    MetricAt,
    apply,
    cholesky,
    quadratic_form,
)
from rhvae.models.vae import (
    LOG_2PI,
    VAE,
    ConfigError,
    FlowOutput,
    bernoulli_log_likelihood,
    standard_normal_log_density,
)
from rhvae.validation import check

OBJECTIVES = ("elbo", "authors")


class HVAE(VAE):
    """Hamiltonian VAE (Caterini et al. 2018): z₀ ~ q(z|x), ρ₀ ~ N(0, I/β₀), n_lf tempered leapfrog steps.

    Parameters: ``n_lf`` leapfrog steps K (≥ 0), step size ``eps_lf`` ε (> 0), initial tempering factor
    ``beta_zero`` β₀ ∈ (0, 1] (β₀ itself, not √β₀), ``objective`` ``"elbo"`` or ``"authors"``.

    Tempering after step k of K: ρ ← √(β_{k−1}/β_k) ρ, 1/√β_k = (1 − 1/√β₀)(k/K)² + 1/√β₀, so β_K = 1 and the
    whole flow has Jacobian β₀^{d/2}.
    """

    model_type = "HVAE"

    def __init__(
        self,
        latent_dim: int = 2,
        input_dim: int = 784,
        hidden_dim: int = 400,
        n_lf: int = 10,
        eps_lf: float = 0.01,
        beta_zero: float = 0.3,
        objective: str = "elbo",
    ):
        super().__init__(latent_dim, input_dim, hidden_dim)
        self.n_lf = check("n_lf", n_lf)
        self.eps_lf = check("eps_lf", eps_lf)
        self.beta_zero = check("beta_zero", beta_zero)
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective

    def config(self) -> dict:
        return {
            **super().config(),
            "n_lf": self.n_lf,
            "eps_lf": self.eps_lf,
            "beta_zero": self.beta_zero,
            "objective": self.objective,
        }

    def tempering_schedule(self) -> list[float]:
        """[β₀, β₁, …, β_K] with 1/√β_k = (1 − 1/√β₀)(k/K)² + 1/√β₀ (so β_K = 1)."""
        K = self.n_lf
        inv_sqrt_b0 = 1.0 / math.sqrt(self.beta_zero)
        if K == 0:
            return [self.beta_zero]
        return [((1.0 - inv_sqrt_b0) * (k / K) ** 2 + inv_sqrt_b0) ** -2 for k in range(K + 1)]

    # ------------------------------------------------------------------------------------ metric interface
    def metric_factor(self, x: torch.Tensor):
        """What the flow needs of the metric network for this batch, computed once per forward and passed to
        ``flow_metric``, ``step_size`` and ``authors_initial_momentum`` (HVAE: nothing, None)."""
        return None

    def flow_metric(self, x: torch.Tensor, mu: torch.Tensor, factor=None):
        """The metric the flow uses for this batch (HVAE: Euclidean)."""
        return EuclideanMetric(self.latent_dim)

    def initial_momentum(self, at0: MetricAt, x, metric, generator=None) -> torch.Tensor:
        """ρ₀ ~ N(0, G(z₀)/β₀) (for G = I: γ/√β₀)."""
        gamma = self.standard_normal(at0.z.shape, at0.z, generator)
        if metric.constant:
            return gamma / math.sqrt(self.beta_zero)
        return apply(cholesky(at0.G), gamma) / math.sqrt(self.beta_zero)

    # -------------------------------------------------------------------------------------------- leapfrog
    def n_implicit_iterations(self) -> int:
        return 0

    def exact_gradient(self) -> bool:
        """Whether the implicit leapfrog steps are differentiated through every fixed-point iteration."""
        return True

    def step_size(self, x: torch.Tensor, mu: torch.Tensor, metric, factor=None):
        """The leapfrog step ε of the flow for this batch (HVAE: ``eps_lf``)."""
        return self.eps_lf

    def leapfrog(self, z, rho, x, grad_U, at_z: MetricAt, metric, eps=None):
        """One generalized leapfrog step for H(z, ρ) = U(z) + ½ log det G(z) + ½ ρᵀ G⁻¹(z) ρ, of size ε = ``eps``
        (a float or a (B, 1) tensor; default ``eps_lf``):

        1. ρ½ = ρ − (ε/2) ∇_z H(z, ρ½)                       (implicit in ρ½: fixed-point iterations)
        2. z′ = z + (ε/2) [G⁻¹(z) + G⁻¹(z′)] ρ½              (implicit in z′: fixed-point iterations)
        3. ρ′ = ρ½ − (ε/2) ∇_z H(z′, ρ½)

        with ∇_z H = ∇U − ½ ∇ log det G⁻¹ + ½ ∇(ρᵀ G⁻¹ ρ). The parts of step 1 that do not depend on ρ (the
        decoder, the prior and the log-determinant) are evaluated once. For the Euclidean metric the implicit
        steps are explicit and the step is the ordinary leapfrog.

        Returns z′, ρ′, ∇U(z′), the logits at z′, the metric at z′ and the change made by the last fixed-point
        iteration of either implicit step (≈ 0 when the iterations converged).
        """
        *out, residual = self._leapfrog(z, rho, x, grad_U, at_z, metric, eps)
        return (*out, float(residual))

    def _leapfrog(self, z, rho, x, grad_U, at_z: MetricAt, metric, eps=None):
        """``leapfrog`` with the fixed-point residual as a 0-d tensor (no host sync inside the flow)."""
        half = 0.5 * (self.eps_lf if eps is None else eps)
        if metric.constant:  # G = I: the ordinary leapfrog (the metric forces are exactly zero)
            rho_half = rho - half * grad_U
            z_new = z + 2.0 * half * rho_half
            grad_U_new, logits_new = self.potential_grad(z_new, x)
            at_new = metric.at(z_new)
            return z_new, rho_half - half * grad_U_new, grad_U_new, logits_new, at_new, z.new_zeros(())
        n_iter = self.n_implicit_iterations()
        # ε/2 as a (1, 1) or (B, 1) tensor, so that every update a ± (ε/2) b is one fused addcmul
        half = torch.as_tensor(half, dtype=z.dtype, device=z.device).reshape(-1, 1)
        # ρ½ = ρ − (ε/2)(∇U − ½ ∇ log det G⁻¹) − (ε/4) ∇(ρ½ᵀ G⁻¹ ρ½): the first two terms do not change
        base = metric.kick(at_z, rho, half, grad_U)
        exact = self.exact_gradient()
        rho_half, residual_rho = metric.solve_momentum(at_z, rho, base, 0.5 * half, n_iter, exact)
        # z′ = [z + (ε/2) G⁻¹(z) ρ½] + G⁻¹(z′) (ε/2) ρ½, from the explicit Euler step z + ε G⁻¹(z) ρ½
        velocity_z = apply(at_z.G_inv, rho_half)
        z_start = torch.addcmul(z, half, velocity_z, value=2.0)
        z_half = torch.addcmul(z, half, velocity_z)
        z_new, residual_z = metric.solve_position(z_start, z_half, half * rho_half, n_iter, exact)
        # ρ′ = ρ½ − (ε/2)(∇U(z′) + ½ [∇(ρ½ᵀ G⁻¹ ρ½) − ∇ log det G⁻¹](z′))
        grad_U_new, logits_new = self.potential_grad(z_new, x)
        at_new = metric.at(z_new)
        rho_new = metric.kick(at_new, rho_half, half, grad_U_new, rho_half)
        residual = torch.maximum(residual_rho, residual_z)
        return z_new, rho_new, grad_U_new, logits_new, at_new, residual

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> FlowOutput:
        x = self.check_batch(x)
        mu, log_var = self.encode(x)
        z0 = self.sample_posterior(mu, log_var, generator)
        factor = self.metric_factor(x)
        metric = self.flow_metric(x, mu, factor)
        eps = self.step_size(x, mu, metric, factor)
        at = metric.at(z0)
        d = self.latent_dim
        if self.objective == "authors" and not metric.constant:
            rho0, log_rho0 = self.authors_initial_momentum(x, generator, factor)
        else:
            rho0 = self.initial_momentum(at, x, metric, generator)
            # log N(ρ; 0, G/β) = −(d/2) log 2π + ½ log det G⁻¹ + (d/2) log β − (β/2) ρᵀ G⁻¹ ρ
            log_rho0 = (
                -0.5 * d * LOG_2PI
                + 0.5 * at.log_det_G_inv
                + 0.5 * d * math.log(self.beta_zero)
                - 0.5 * self.beta_zero * quadratic_form(at.G_inv, rho0)
            )
        betas = self.tempering_schedule()
        z, rho = z0, rho0
        grad_U, logits = self.potential_grad(z0, x)
        residuals = []
        for k in range(1, self.n_lf + 1):
            eps_k = self.step_of(k, eps)
            z, rho, grad_U, logits, at, step_residual = self._leapfrog(z, rho, x, grad_U, at, metric, eps_k)
            rho = rho * math.sqrt(betas[k - 1] / betas[k])
            residuals.append(step_residual)
        residual = float(torch.stack(residuals).max()) if residuals else 0.0
        log_pxz = bernoulli_log_likelihood(logits, x) + standard_normal_log_density(z)
        log_q_z0 = self.posterior_log_density(z0, mu, log_var)
        log_rhoK = -0.5 * d * LOG_2PI + 0.5 * at.log_det_G_inv - 0.5 * quadratic_form(at.G_inv, rho)
        # the importance weight divides by the density ρ₀ was drawn from, so it is a valid weight (and the true
        # ELBO a bound) under either objective's momentum
        log_weight = log_pxz + log_rhoK - log_q_z0 - log_rho0 + 0.5 * d * math.log(self.beta_zero)
        if self.objective == "elbo":
            objective = log_weight
        else:
            objective = log_pxz + log_rhoK - log_q_z0
        step = self.median_step(eps)
        return FlowOutput(mu, log_var, z0, z, rho0, rho, logits, log_weight, objective, residual, step)

    def step_of(self, k: int, eps):
        """The step of leapfrog step k (1 … K) given the flow's step ε (HVAE: ε itself)."""
        return eps

    def median_step(self, eps) -> float | list[float]:
        """The median of the step ε (a float or one per row) over the batch, or over each member's rows."""
        if not isinstance(eps, torch.Tensor):
            return float(eps) if self.members is None else [float(eps)] * self.members
        if self.members is None:
            return float(eps.detach().median())
        return self.grouped(eps.detach()).reshape(self.members, -1).median(1).values.tolist()

    def authors_initial_momentum(self, x, generator=None, factor=None):  # pragma: no cover - overridden by RHVAE
        raise NotImplementedError
