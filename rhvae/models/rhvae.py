r"""The Riemannian Hamiltonian VAE (Chadebec et al.) of docs/design.md §2.1–2.3: the HVAE with a learned metric."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rhvae.models.hvae import HVAE
from rhvae.models.metric import (
    LearnedMetric,
    apply,
    sym2_max_eigenvalue,
)
from rhvae.models.vae import (
    LOG_2PI,
    ConfigError,
)
from rhvae.validation import check

STEP_BOUNDS = ("stability", "none")
GRADIENTS = ("exact", "release")
METRIC_SCALES = ("free", "bounded", "normalized")
#: Safety factors of the RHVAE's stability-bounded step (see ``RHVAE.step_size``).
WALL_SAFETY = 0.5
FREQUENCY_SAFETY = 1.0


class RHVAE(HVAE):
    """Riemannian Hamiltonian VAE (Chadebec et al.) with the learned metric of docs/design.md §2.1.

    ``objective`` defaults to ``"authors"``, the release's (``rhvae.models.hvae``): under the stability-bounded
    step it trains at the seed's settings with a moving flow and a structured metric (docs/stability.md).

    Parameters beyond the HVAE's: metric ``temperature`` T (> 0), ``regularization`` λ (> 0),
    ``n_fixed_point``, the number of fixed-point iterations of each implicit leapfrog step (≥ 1),
    ``metric_hidden_dim``, the width of the metric network's hidden layer (None: ``hidden_dim``), and
    ``step_bound``: ``"stability"`` (default) makes ``eps_lf`` the largest step and bounds it where the
    leapfrog would leave its stability region (see ``step_size``); ``"none"`` always steps ``eps_lf``, like the
    paper's code, which at the seed's settings diverges in the first epochs (docs/stability.md).

    In training mode the metric is built from the current batch (gradients flow into the metric network
    and, through the centroids cᵢ = μ(xᵢ), into the encoder). ``freeze_metric(x_train)`` stores (cᵢ, Mᵢ) of
    every training point; in eval mode, and in ``G_inv``/``G``/``metric``, the frozen metric is used. The
    trainer freezes it at the end of every epoch. ``centroids`` (N, d) and ``M`` (N, d, d) are saved with
    the model.
    """

    model_type = "RHVAE"

    def __init__(
        self,
        latent_dim: int = 2,
        input_dim: int = 784,
        hidden_dim: int = 400,
        n_lf: int = 10,
        eps_lf: float = 0.1,
        beta_zero: float = 0.3,
        temperature: float = 1.0,
        regularization: float = 0.1,
        objective: str = "authors",
        n_fixed_point: int = 5,
        step_bound: str = "stability",
        gradient: str = "exact",
        metric_scale: str = "free",
        learn_step: bool = False,
        metric_hidden_dim: int | None = None,
    ):
        super().__init__(latent_dim, input_dim, hidden_dim, n_lf, eps_lf, beta_zero, objective)
        self.temperature = check("temperature", temperature)
        self.regularization = check("regularization", regularization)
        self.n_fixed_point = check("n_fixed_point", n_fixed_point)
        if step_bound not in STEP_BOUNDS:
            raise ConfigError(f"step_bound must be one of {STEP_BOUNDS}, got {step_bound!r}")
        self.step_bound = step_bound
        if gradient not in GRADIENTS:
            raise ConfigError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        self.gradient = gradient
        if metric_scale not in METRIC_SCALES:
            raise ConfigError(f"metric_scale must be one of {METRIC_SCALES}, got {metric_scale!r}")
        self.metric_scale = metric_scale
        if metric_scale != "free" and self.metric_peak() <= self.regularization:
            raise ConfigError(
                f"metric_scale={metric_scale!r} needs a peak T√(λβ₀)/(2 eps_lf) = {self.metric_peak():.3g} above "
                f"regularization λ = {self.regularization:g}: lower eps_lf or regularization"
            )
        if not isinstance(learn_step, bool):
            raise ConfigError(f"learn_step must be True or False, got {learn_step!r}")
        self.learn_step = learn_step
        # learned multipliers sigmoid(θ_k) ∈ (0, 1) of the step of each leapfrog step, starting at 0.98
        self.step_logits = nn.Parameter(torch.full((self.n_lf,), 4.0)) if learn_step else None
        width = (
            self.hidden_dim
            if metric_hidden_dim is None
            else check("hidden_dim", metric_hidden_dim, "metric_hidden_dim")
        )
        self.metric_hidden_dim = (
            None if width == self.hidden_dim else width
        )  # None: the metric network is hidden_dim wide
        self.metric_hidden = nn.Linear(input_dim, width)
        self.metric_diag = nn.Linear(width, latent_dim)
        self.metric_lower = nn.Linear(width, latent_dim * (latent_dim - 1) // 2)
        self.register_buffer("centroids", torch.zeros(0, latent_dim))
        self.register_buffer("M", torch.zeros(0, latent_dim, latent_dim))

    def config(self) -> dict:
        return {
            **super().config(),
            "temperature": self.temperature,
            "regularization": self.regularization,
            "n_fixed_point": self.n_fixed_point,
            "step_bound": self.step_bound,
            # the training-scheme options appear only when set, so that models trained before they existed keep
            # their cache keys (``rhvae.experiments.model_cache.model_request``)
            **{k: v for k, v in self.scheme().items() if v != SCHEME_DEFAULTS[k]},
            # likewise the metric network's own width, only when it differs from hidden_dim's (pythae's 400 beside 512)
            **({} if self.metric_hidden_dim is None else {"metric_hidden_dim": self.metric_hidden_dim}),
        }

    def scheme(self) -> dict:
        """The training-scheme options (docs/stability.md): gradient, metric scale, learned step."""
        return {"gradient": self.gradient, "metric_scale": self.metric_scale, "learn_step": self.learn_step}

    def exact_gradient(self) -> bool:
        return self.gradient == "exact"

    def step_of(self, k: int, eps):
        """ε_k = ε(x) σ(θ_k) with a learned θ_k per leapfrog step (``learn_step``), else ε(x)."""
        if self.step_logits is None:
            return eps
        return eps * torch.sigmoid(self.step_logits[k - 1])

    def metric_peak(self) -> float:
        """κ_max = T √(λβ₀) / (2 ε_lf): the largest κ at which the wall limit of ``step_size`` still allows the
        full step ``eps_lf``; the cap of λmax G⁻¹ under ``metric_scale="bounded"``."""
        return WALL_SAFETY * self.temperature * math.sqrt(self.regularization * self.beta_zero) / self.eps_lf

    def n_implicit_iterations(self) -> int:
        return self.n_fixed_point

    def step_size(self, x: torch.Tensor, mu: torch.Tensor, metric, factor=None):
        """Per-image leapfrog step ε(x) = min(ε_lf, s_w T / (κ p(x)), s_ω / √(κ H(x))), shape (B, 1), with p(x) the
        momentum scale (``momentum_scale``: 1/√(λβ₀) for the true ELBO's ρ₀; ``factor`` is L(x) when the caller
        has it, see ``metric_factor``).

        κ = maxᵢ λmax G⁻¹(cᵢ) is the largest inverse metric (at the centroids) and H(x) = λmax ∇²U(μ(x)) the
        decoder's curvature at the encoder mean. Two stability limits of the generalized leapfrog:

        * the *wall*: a momentum drawn where the metric is flat (G⁻¹ ≈ λ I, so |ρ| ~ 1/√(λβ₀)) that enters the
          region where G⁻¹ ≈ κ moves by ε κ |ρ| in one step; keeping that below s_w T (the metric's length scale)
          keeps the implicit steps contractive;
        * the *frequency*: the linearised flow oscillates at ω² ≤ κ H, and a leapfrog is stable for ε ω < 2.

        ε(x) depends on the image and the parameters only, never on (z, ρ): for every image the flow stays a
        time-reversible, volume-preserving map, so the true ELBO remains a bound of log p(x). Gradients flow
        through ε(x): scaling the metric up no longer buys a larger effective step ε G⁻¹, which removes the
        drive that otherwise inflates G⁻¹ geometrically until training diverges (docs/stability.md).
        """
        if self.step_bound == "none":
            return self.eps_lf
        kappa = self.per_row(metric.max_eigenvalue(), len(mu))
        curvature = self.potential_curvature(mu)
        wall = WALL_SAFETY * self.temperature * math.sqrt(self.regularization * self.beta_zero) / kappa
        if self.objective == "authors":  # p(x) ≥ 1/√(λβ₀): the release's momentum can be larger
            wall = wall / (self.momentum_scale(x, factor) * math.sqrt(self.regularization * self.beta_zero))
        frequency = FREQUENCY_SAFETY / torch.sqrt(kappa * curvature)
        return torch.clamp(torch.minimum(wall, frequency), max=self.eps_lf)[:, None]

    def momentum_scale(self, x: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor | float:
        """The largest typical size of ρ₀ that the wall limit of ``step_size`` must allow, per image: 1/√(λβ₀) for
        ρ₀ ~ N(0, G(z₀)/β₀) (G ⪯ I/λ), and max(1/√λ, √λmax(L(x) L(x)ᵀ))/√β₀ for the release's ρ₀ = L(x)γ/√β₀,
        whose size is set by the metric network rather than by G (without it, a growing L(x) outruns the bound)."""
        flat = 1.0 / math.sqrt(self.regularization * self.beta_zero)
        if self.objective != "authors":
            return flat
        L = self.lower_factor(x) if factor is None else factor
        scale = torch.sqrt(sym2_max_eigenvalue(L @ L.transpose(-1, -2)) / self.beta_zero)
        return torch.clamp(scale, min=flat)

    # ---------------------------------------------------------------------------------------- the metric
    def metric_factor(self, x: torch.Tensor) -> torch.Tensor | None:
        """L(x) where this forward needs it, else None: in training (the batch's metric, ``flow_metric``) and under
        the release's objective (its ρ₀ and the step's momentum scale). One pass of the metric network serves all
        three uses, and one backward through it gets their gradients."""
        if self.training or self.objective == "authors":
            return self.lower_factor(x)
        return None

    def lower_factor(self, x: torch.Tensor) -> torch.Tensor:
        """L(x): lower triangular (B, d, d) with exp(diag head) on the diagonal and the lower head below."""
        h = F.relu(self.metric_hidden(self.grouped(x)))
        d = self.latent_dim
        L = torch.diag_embed(torch.exp(self.as_rows(self.metric_diag(h))))
        if d > 1:
            rows, cols = torch.tril_indices(d, d, offset=-1, device=x.device)
            index = (torch.arange(len(x), device=x.device)[:, None], rows, cols)
            L = L.index_put(index, self.as_rows(self.metric_lower(h)))
        return L

    def metric_matrices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cᵢ, Mᵢ) = (μ(xᵢ), L(xᵢ) L(xᵢ)ᵀ) for a batch x (for ``metric_scale="bounded"`` see
        ``_metric_matrices_from_factor``)."""
        return self.encode(x)[0], self._metric_matrices_from_factor(self.lower_factor(x))

    def _metric_matrices_from_factor(self, L: torch.Tensor) -> torch.Tensor:
        """Mᵢ = Lᵢ Lᵢᵀ (the paper's); with ``metric_scale="bounded"``

            Mᵢ = (κ_max − λ)/N · Lᵢ Lᵢᵀ / (1 + λmax(Lᵢ Lᵢᵀ))

        for the N images of the batch (or of the frozen training set): every Mᵢ ⪯ (κ_max − λ)/N · I and
        G⁻¹(z) = Σᵢ wᵢ(z) Mᵢ + λI ⪯ κ_max I everywhere (wᵢ ≤ 1): a kernel average of bounded matrices,
        the same family as the paper's (a PSD Mᵢ per centroid) with a scale that cannot run away. With
        ``metric_scale="normalized"``

            Mᵢ = (κ_max − λ)/N · Lᵢ Lᵢᵀ / λmax(Lᵢ Lᵢᵀ)

        every Mᵢ has the same largest eigenvalue (κ_max − λ)/N: the metric network learns the shape of each Mᵢ
        (its orientation and anisotropy) but not its scale, so G⁻¹ − λI is large exactly where the training codes
        are dense (the kernel average Σᵢ wᵢ(z)/N) and can neither collapse to λI nor run away.
        κ_max = ``metric_peak()`` is the largest κ at which the stability bound still allows ε_lf."""
        M = L @ L.transpose(-1, -2)
        if self.metric_scale == "free":
            return M
        scale = (self.metric_peak() - self.regularization) / (len(L) // (self.members or 1))  # N per member
        peak = sym2_max_eigenvalue(M)
        return M * (scale / (peak if self.metric_scale == "normalized" else 1.0 + peak))[:, None, None]

    @torch.no_grad()
    def freeze_metric(self, x_train: torch.Tensor) -> None:
        """Store (cᵢ, Mᵢ) of every training image: the metric used for evaluation, sampling and plots."""
        x_train = self.check_input(x_train, "x_train")
        if len(x_train) == 0:
            raise ValueError("freeze_metric needs at least one training image, got x_train with 0 rows")
        centroids, M = self.metric_matrices(x_train)
        self.centroids = self.grouped(centroids.detach().clone())  # a stack: (M, N, d), one metric per member
        self.M = self.grouped(M.detach().clone())

    @property
    def has_frozen_metric(self) -> bool:
        return self.centroids.shape[-2] > 0

    def metric(self, temperature: float | None = None) -> LearnedMetric:
        """The frozen metric (after training or ``freeze_metric``), evaluated with the kernel width ``temperature``
        (default: the model's own T). Another T re-evaluates G⁻¹(z) = Σᵢ Mᵢ exp(−‖z − cᵢ‖²/T²) + λI with the
        centroids cᵢ and matrices Mᵢ learned at the training temperature.

        The metric at the model's own T is kept between calls (an eval-mode forward, ``G_inv`` and ``G`` reuse its
        tables and its peak eigenvalue) until the frozen tensors or the hyper-parameters change."""
        if not self.has_frozen_metric:
            raise RuntimeError("this RHVAE has no frozen metric yet: train it or call model.freeze_metric(x_train)")
        if temperature is not None:
            return LearnedMetric(self.centroids, self.M, check("temperature", temperature), self.regularization)
        key = (
            self.centroids.data_ptr(),
            self.centroids._version,
            self.M.data_ptr(),
            self.M._version,
            self.temperature,
            self.regularization,
        )
        if getattr(self, "_frozen_metric_key", None) != key:
            self._frozen_metric = LearnedMetric(self.centroids, self.M, self.temperature, self.regularization)
            self._frozen_metric_key = key
        return self._frozen_metric

    def G_inv(self, z: torch.Tensor) -> torch.Tensor:
        """G⁻¹(z) of the frozen metric for z (B, d) → (B, d, d)."""
        return self.metric().G_inv(self.check_latent(z))

    def G(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) of the frozen metric for z (B, d) → (B, d, d)."""
        return self.metric().G(self.check_latent(z))

    def flow_metric(self, x: torch.Tensor, mu: torch.Tensor, factor: torch.Tensor | None = None):
        if self.training:
            # the centroids are μ(x): reuse the encoder output of the forward pass instead of encoding x again
            M = self._metric_matrices_from_factor(self.lower_factor(x) if factor is None else factor)
            return LearnedMetric(self.grouped(mu), self.grouped(M), self.temperature, self.regularization)
        return self.metric()

    def authors_initial_momentum(self, x, generator=None, factor=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The release's ρ₀ = L(x) γ / √β₀, γ ~ N(0, I) (covariance L Lᵀ/β₀ instead of G(z₀)/β₀), and its log
        density log N(ρ₀; 0, L Lᵀ/β₀) = −(d/2) log 2π − Σⱼ log Lⱼⱼ + (d/2) log β₀ − ½ ‖γ‖²."""
        d = self.latent_dim
        gamma = self.standard_normal((len(x), d), x, generator)
        L = self.lower_factor(x) if factor is None else factor  # one pass of the metric network for ρ₀ and its density
        rho0 = apply(L, gamma) / math.sqrt(self.beta_zero)
        log_diag = torch.log(torch.diagonal(L, dim1=-2, dim2=-1))  # log Lⱼⱼ
        log_density = (
            -0.5 * d * LOG_2PI - log_diag.sum(-1) + 0.5 * d * math.log(self.beta_zero) - 0.5 * (gamma * gamma).sum(-1)
        )
        return rho0, log_density


#: The training-scheme options of the RHVAE at their defaults (the paper's scheme), from the class's signature.
SCHEME_DEFAULTS = {k: RHVAE.defaults()[k] for k in ("gradient", "metric_scale", "learn_step")}
