r"""VAE, HVAE and RHVAE (DESIGN §2) as ``torch.nn.Module``\ s.

Notation (paper): x ∈ [0, 1]^D an image, z ∈ R^d a latent code, prior p(z) = N(0, I), Gaussian encoder
q(z|x) = N(μ(x), diag σ²(x)), Bernoulli decoder p(x|z) with logits π(z). Networks: encoder
Linear(D, h)–ReLU → (μ, log σ²) heads; decoder Linear(d, h)–ReLU–Linear(h, D); metric network (RHVAE)
Linear(D, h)–ReLU → ``diag`` head Linear(h, d) through exp, ``lower`` head Linear(h, d(d−1)/2).

**β₀.** ``beta_zero`` *is* β₀, the initial tempering factor, in every model and function of this package
(pythae uses √β₀ in its RHVAE and β₀ elsewhere). The initial momentum is ρ₀ ~ N(0, G(z₀)/β₀).

**Objectives** (HVAE and RHVAE, ``objective=``):

* ``"elbo"`` (default): the true ELBO of the flow, tempering included (DESIGN §2.3),
  E[log p(x, z_K) + log N(ρ_K; 0, G(z_K)) − log q(z₀|x) − log N(ρ₀; 0, G(z₀)/β₀) + (d/2) log β₀].
  It is a lower bound of log p(x), so its value is comparable across models and with the log-likelihood.
* ``"authors"``: the variant the authors' release optimises: ρ₀ = L(x) γ / √β₀ (a factor of the metric
  network's Mᵢ, not of G(z₀)), and the ρ₀ density and the Jacobian terms dropped. Not a bound; offered to
  reproduce the release.

The true ELBO is the default because it is the quantity the paper's log-likelihood claims are about, and
because it stays a valid bound whatever the metric learns.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fastforce import DecoderForce
from .metric import EuclideanMetric, LearnedMetric, MetricAt, apply, cholesky, quadratic_form, sym2_max_eigenvalue
from .validation import ParameterError, check

LOG_2PI = math.log(2.0 * math.pi)
OBJECTIVES = ("elbo", "authors")
STEP_BOUNDS = ("stability", "none")
GRADIENTS = ("exact", "release")
METRIC_SCALES = ("free", "bounded", "normalized")
#: Safety factors of the RHVAE's stability-bounded step (see ``RHVAE.step_size``).
WALL_SAFETY = 0.5
FREQUENCY_SAFETY = 1.0


#: A model hyper-parameter outside its accepted range.
ConfigError = ParameterError
#: The largest model accepted (in float32 weights, 0.5 GB): larger ones cannot be trained on a laptop CPU.
MAX_WEIGHTS = 125_000_000


@dataclass
class FlowOutput:
    """Everything one pass through a model computes for a batch x (B, D); per-image quantities are (B,)."""

    mu: torch.Tensor
    log_var: torch.Tensor
    z0: torch.Tensor
    zK: torch.Tensor
    rho0: torch.Tensor | None
    rhoK: torch.Tensor | None
    logits: torch.Tensor  # decoder logits at z_K, (B, D)
    log_weight: torch.Tensor  # one-sample integrand of the true ELBO (importance weight of log p(x))
    objective: torch.Tensor  # the per-image quantity that training maximises
    fixed_point_residual: float = 0.0  # largest last-iteration change of the implicit leapfrog steps
    #: median leapfrog step ε used for the batch (0 without a flow); for a stack of models, one per member
    step_size: float | list[float] = 0.0


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = Σ_j x_j log π_j + (1 − x_j) log(1 − π_j) with π = σ(logits), summed over pixels, (B,)."""
    return (x * logits - F.softplus(logits)).sum(-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


class StackedLinear(nn.Module):
    """M independent affine layers side by side: y_m = x_m W_mᵀ + b_m for x (M, B, in) → (M, B, out), one batched
    product. ``weight`` (M, out, in) and ``bias`` (M, out) hold member m's ``nn.Linear`` weights at index m (same
    names, so a member's state is the stack's state at index m)."""

    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.mT)


class VAE(nn.Module):
    """The vanilla VAE (Kingma & Welling) with the paper's 784–400–d MLPs and a Bernoulli decoder.

    Training maximises the ELBO with the analytic KL term; ``forward`` also returns the one-sample integrand
    log p(x, z₀) − log q(z₀|x) used by the importance-sampling log-likelihood.

    **Stacks.** ``VAE.stack(models)`` (any of the three classes) makes one model out of M models of the same class
    and config, e.g. the seeds of one experiment: every weight gains a leading member dimension, and a batch is M
    consecutive blocks of rows, block m going through member m's weights only (batched products). One optimizer
    step on the stack's summed loss is one step of each member on its own loss (the members share no weight), so
    training a stack trains every member as a separate run would, to rounding (``rhvae.training.train_group``).
    ``member(m)``/``unstack()`` give the members back as separate models.
    """

    model_type = "VAE"
    #: None for one model; the number of members M of a stack (``stack``)
    members: int | None = None

    def __init__(self, latent_dim: int = 2, input_dim: int = 784, hidden_dim: int = 400):
        super().__init__()
        self.latent_dim = latent_dim = check("latent_dim", latent_dim)
        self.input_dim = input_dim = check("input_dim", input_dim)
        self.hidden_dim = hidden_dim = check("hidden_dim", hidden_dim)
        # encoder, decoder and (RHVAE) metric network: about 3 D h + d² h weights; refuse what cannot be allocated
        weights = 3 * input_dim * hidden_dim + (latent_dim * latent_dim + 4 * latent_dim) * hidden_dim
        if weights > MAX_WEIGHTS:
            raise ConfigError(
                f"input_dim={input_dim}, hidden_dim={hidden_dim}, latent_dim={latent_dim} make a model of about "
                f"{weights * 4 / 1e9:.1f} GB of weights; at most {MAX_WEIGHTS * 4 / 1e9:.1f} GB is accepted"
            )
        self.enc_hidden = nn.Linear(input_dim, hidden_dim)
        self.enc_mu = nn.Linear(hidden_dim, latent_dim)
        self.enc_log_var = nn.Linear(hidden_dim, latent_dim)
        self.dec_hidden = nn.Linear(latent_dim, hidden_dim)
        self.dec_out = nn.Linear(hidden_dim, input_dim)

    # ----------------------------------------------------------------------------------------------- config
    def config(self) -> dict:
        """Constructor keyword arguments: ``type(self)(**model.config())`` rebuilds the architecture."""
        return {"latent_dim": self.latent_dim, "input_dim": self.input_dim, "hidden_dim": self.hidden_dim}

    # ------------------------------------------------------------------------------------------------ stacks
    @classmethod
    def stack(cls, models: Sequence[VAE]) -> VAE:
        """One model holding ``models`` (≥ 2, one class, one config, unstacked) side by side; see the class
        docstring. The weights are copied: training the stack does not change ``models``."""
        models = list(models)
        if len(models) < 2:
            raise ValueError(f"stack needs at least 2 models, got {len(models)}")
        first = models[0]
        for other in models[1:]:
            if type(other) is not type(first) or other.config() != first.config() or other.members or first.members:
                raise ValueError("stack needs unstacked models of one class and one config")
        if getattr(first, "learn_step", False):
            raise ValueError("models with learn_step=True are trained one at a time: they cannot be stacked")
        stacked = copy.deepcopy(first)
        stacked.members = len(models)
        for name, layer in first.named_children():
            if isinstance(layer, nn.Linear):
                setattr(stacked, name, StackedLinear([getattr(m, name) for m in models]))
        for name, _ in first.named_buffers(recurse=False):  # an RHVAE's frozen metric: (M, N, d), (M, N, d, d)
            if len({getattr(m, name).shape for m in models}) != 1:
                raise ValueError("stack needs models whose frozen metrics have one number of centroids")
            setattr(stacked, name, torch.stack([getattr(m, name) for m in models]))
        return stacked

    def member(self, index: int) -> VAE:
        """Member ``index`` of a stack as a separate model (a copy of its weights and buffers)."""
        if self.members is None or not 0 <= index < self.members:
            raise ValueError(f"index must be a member of the stack, 0 to {(self.members or 1) - 1}, got {index}")
        with torch.random.fork_rng(devices=[]):  # the throw-away initialisation leaves the global RNG alone
            single = type(self)(**self.config())
        single.load_trained_state({k: v[index].clone() for k, v in self.state_dict().items()})
        single.train(self.training)
        return single.to(next(self.parameters()).device)

    def load_trained_state(self, state: dict) -> None:
        """``load_state_dict(state)`` (strict) after giving the buffers the shapes they have in ``state``: an RHVAE's
        frozen metric holds one row per training image, so its size is known from the state only."""
        for name, _ in self.named_buffers(recurse=False):
            if name in state:
                setattr(self, name, torch.empty_like(state[name]))
        self.load_state_dict(state)

    def unstack(self) -> list[VAE]:
        """The members of a stack as separate models."""
        return [self.member(m) for m in range(self.members or 0)]

    def grouped(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows (M·B, …) of a stack as (M, B, …), block m for member m; unchanged for one model."""
        if self.members is None:
            return rows
        if len(rows) % self.members:
            raise ValueError(
                f"a stack of {self.members} models needs a multiple of {self.members} rows, got {len(rows)}"
            )
        return rows.reshape(self.members, -1, *rows.shape[1:])

    def as_rows(self, grouped: torch.Tensor) -> torch.Tensor:
        """The inverse of ``grouped``."""
        return grouped if self.members is None else grouped.reshape(-1, *grouped.shape[2:])

    def per_row(self, per_member: torch.Tensor, n_rows: int) -> torch.Tensor:
        """A value per member (M,) as one per row (n_rows,) of a stack; unchanged for one model."""
        return per_member if self.members is None else per_member.repeat_interleave(n_rows // self.members)

    def standard_normal(self, shape: tuple, like: torch.Tensor, generator=None) -> torch.Tensor:
        """N(0, I) draws of ``shape`` (rows, …) in ``like``'s dtype, on ``like``'s device. A generator draws on its own
        device (a CPU generator gives the same numbers whatever device the model is on). For a stack, ``generator``
        may be a sequence of M generators: block m of the rows is then drawn from generator m, exactly what a
        separate run of member m with that generator draws."""
        if generator is None:
            return torch.randn(shape, dtype=like.dtype, device=like.device)
        if isinstance(generator, torch.Generator):
            return torch.randn(shape, dtype=like.dtype, device=generator.device, generator=generator).to(like.device)
        if self.members is None or len(generator) != self.members:
            raise ValueError("generator must be a torch.Generator, None or one generator per member of a stack")
        block = (shape[0] // self.members, *shape[1:])
        draws = [torch.randn(block, dtype=like.dtype, device=g.device, generator=g) for g in generator]
        return torch.cat(draws).to(like.device)

    # --------------------------------------------------------------------------------------------- networks
    def check_input(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """``x`` (a tensor or NumPy array) as a (batch, D) tensor of the model's dtype; refuses another shape and
        pixels that are not finite numbers in [0, 1] (the Bernoulli likelihood is defined there only: uint8 pixels
        0–255 must be divided by 255 first). ``name`` names the data in the error (e.g. ``x_train``)."""
        if isinstance(x, np.ndarray) and x.dtype.kind in "biuf":
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.input_dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a tensor of shape (batch, {self.input_dim}), got {shape}")
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} must hold real pixel values in [0, 1], got dtype {x.dtype}")
        weight = self.enc_hidden.weight
        x = x.to(dtype=weight.dtype, device=weight.device)
        if len(x) and not (torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            bad = int((~torch.isfinite(x)).sum())
            what = f"{bad} non-finite pixel(s)" if bad else f"pixels in [{float(x.min()):g}, {float(x.max()):g}]"
            raise ValueError(
                f"{name} must hold pixel values in [0, 1] (a Bernoulli likelihood), got {what}"
                + ("; divide 0-255 images by 255" if not bad and float(x.max()) > 1 else "")
            )
        return x

    def check_latent(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor of shape (batch, {self.latent_dim}), got {shape}")
        z = z.to(dtype=self.enc_hidden.weight.dtype, device=self.enc_hidden.weight.device)
        if not torch.isfinite(z).all():
            bad = int((~torch.isfinite(z)).sum())
            raise ValueError(f"z must hold finite latent codes, got {bad} non-finite value(s)")
        return z

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ(x) and log σ²(x), each (B, d)."""
        h = F.relu(self.enc_hidden(self.grouped(x)))
        return self.as_rows(self.enc_mu(h)), self.as_rows(self.enc_log_var(h))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder logits π(z), (B, D)."""
        return self.as_rows(self.dec_out(F.relu(self.dec_hidden(self.grouped(z)))))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean σ(π(z)) in [0, 1], (B, D): what reconstructions and samples show."""
        return torch.sigmoid(self.decode_logits(self.check_latent(z)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the encoder mean μ(x)."""
        return self.decode(self.encode(self.check_input(x))[0])

    def potential_grad(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """∇_z U(z) for U(z) = −log p(x|z) − log p(z), in closed form, and the decoder logits at z.

        For h = ReLU(W₁ z + b₁) and π = W₂ h + b₂: ∇_z(−log p(x|z)) = W₁ᵀ[(W₂ᵀ(σ(π) − x)) ⊙ 1(W₁ z + b₁ > 0)],
        and ∇_z(−log p(z)) = z. One autograd node with a hand-written backward (``rhvae.fastforce``).
        """
        hidden, out = self.dec_hidden, self.dec_out
        grad, logits = DecoderForce.apply(
            self.grouped(z), self.grouped(x), hidden.weight, hidden.bias, out.weight, out.bias
        )
        return self.as_rows(grad), self.as_rows(logits)

    def potential_curvature(self, z: torch.Tensor) -> torch.Tensor:
        """λmax(∇²_z U(z)), (B,): for the ReLU decoder the Hessian is exactly Jᵀ diag(σ(π)(1 − σ(π))) J + I with
        J = W₂ diag(1(W₁ z + b₁ > 0)) W₁ the logits' Jacobian (piecewise constant; it does not depend on x)."""
        zg = self.grouped(z)  # (…, B, d): a leading member dimension for a stack
        pre = self.dec_hidden(zg)
        sig = torch.sigmoid(self.dec_out(F.relu(pre)))
        *lead, B, d = zg.shape
        W1, W2 = self.dec_hidden.weight, self.dec_out.weight
        # J_b = W₂ (1(pre_b > 0) ⊙ W₁) for the whole batch as one (D, h) × (h, B·d) product, laid out (D, B, d)
        masked = (pre > 0).to(z.dtype)[..., None] * W1.unsqueeze(-3)  # (…, B, h, d)
        flat = masked.transpose(-3, -2).reshape(*lead, self.hidden_dim, B * d)
        jac = (W2 @ flat).reshape(*lead, -1, B, d)
        weighted = jac * (sig * (1.0 - sig)).mT[..., None]
        hessian = (jac.movedim(-3, -1) @ weighted.transpose(-3, -2)).reshape(-1, d, d)  # (rows, d, d)
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        return sym2_max_eigenvalue(hessian + eye)

    # ------------------------------------------------------------------------------------------- objective
    def sample_posterior(self, mu, log_var, generator=None) -> torch.Tensor:
        return mu + torch.exp(0.5 * log_var) * self.standard_normal(mu.shape, mu, generator)

    @staticmethod
    def posterior_log_density(z, mu, log_var) -> torch.Tensor:
        """log q(z|x) = log N(z; μ, diag σ²), (B,)."""
        return -0.5 * (((z - mu) ** 2) / torch.exp(log_var) + log_var + LOG_2PI).sum(-1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> FlowOutput:
        x = self.check_input(x)
        mu, log_var = self.encode(x)
        z0 = self.sample_posterior(mu, log_var, generator)
        logits = self.decode_logits(z0)
        log_px_z = bernoulli_log_likelihood(logits, x)
        log_weight = log_px_z + standard_normal_log_density(z0) - self.posterior_log_density(z0, mu, log_var)
        kl = -0.5 * (1.0 + log_var - mu**2 - torch.exp(log_var)).sum(-1)
        return FlowOutput(mu, log_var, z0, z0, None, None, logits, log_weight, log_px_z - kl)

    def save(self, path, history=None, provenance: dict | None = None):
        """Write the model (config, weights, frozen metric) atomically to ``path``: ``rhvae.persistence.save_model``;
        read it back with ``rhvae.load_model(path)``."""
        from .persistence import save_model

        return save_model(self, path, history, provenance)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss: the negative objective averaged over the batch."""
        return -self(x, generator).objective.mean()


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
    def flow_metric(self, x: torch.Tensor, mu: torch.Tensor):
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

    def step_size(self, x: torch.Tensor, mu: torch.Tensor, metric):
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
        base = torch.addcmul(rho, half, grad_U.sub(metric.grad_log_det_G_inv(at_z), alpha=0.5), value=-1.0)
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
        metric_force = metric.grad_quadratic(at_new, rho_half) - metric.grad_log_det_G_inv(at_new)
        rho_new = torch.addcmul(rho_half, half, grad_U_new.add(metric_force, alpha=0.5), value=-1.0)
        residual = torch.maximum(residual_rho, residual_z)
        return z_new, rho_new, grad_U_new, logits_new, at_new, residual

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> FlowOutput:
        x = self.check_input(x)
        mu, log_var = self.encode(x)
        z0 = self.sample_posterior(mu, log_var, generator)
        metric = self.flow_metric(x, mu)
        eps = self.step_size(x, mu, metric)
        at = metric.at(z0)
        d = self.latent_dim
        if self.objective == "authors" and not metric.constant:
            rho0, log_rho0 = self.authors_initial_momentum(x, generator)
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

    def authors_initial_momentum(self, x, generator=None):  # pragma: no cover - overridden by RHVAE
        raise NotImplementedError


class RHVAE(HVAE):
    """Riemannian Hamiltonian VAE (Chadebec et al.) with the learned metric of DESIGN §2.1.

    Parameters beyond the HVAE's: metric ``temperature`` T (> 0), ``regularization`` λ (> 0),
    ``n_fixed_point``, the number of fixed-point iterations of each implicit leapfrog step (≥ 1), and
    ``step_bound``: ``"stability"`` (default) makes ``eps_lf`` the largest step and bounds it where the
    leapfrog would leave its stability region (see ``step_size``); ``"none"`` always steps ``eps_lf``, like the
    paper's code, which at the seed's settings diverges in the first epochs (README, "Stability").

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
        self.metric_hidden = nn.Linear(input_dim, hidden_dim)
        self.metric_diag = nn.Linear(hidden_dim, latent_dim)
        self.metric_lower = nn.Linear(hidden_dim, latent_dim * (latent_dim - 1) // 2)
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
            # their cache keys (``rhvae.experiments.model_request``)
            **{k: v for k, v in self.scheme().items() if v != SCHEME_DEFAULTS[k]},
        }

    def scheme(self) -> dict:
        """The training-scheme options (README, "Stability"): gradient, metric scale, learned step."""
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

    def step_size(self, x: torch.Tensor, mu: torch.Tensor, metric):
        """Per-image leapfrog step ε(x) = min(ε_lf, s_w T / (κ p(x)), s_ω / √(κ H(x))), shape (B, 1), with p(x) the
        momentum scale (``momentum_scale``: 1/√(λβ₀) for the true ELBO's ρ₀).

        κ = maxᵢ λmax G⁻¹(cᵢ) is the largest inverse metric (at the centroids) and H(x) = λmax ∇²U(μ(x)) the
        decoder's curvature at the encoder mean. Two stability limits of the generalized leapfrog:

        * the *wall*: a momentum drawn where the metric is flat (G⁻¹ ≈ λ I, so |ρ| ~ 1/√(λβ₀)) that enters the
          region where G⁻¹ ≈ κ moves by ε κ |ρ| in one step; keeping that below s_w T (the metric's length scale)
          keeps the implicit steps contractive;
        * the *frequency*: the linearised flow oscillates at ω² ≤ κ H, and a leapfrog is stable for ε ω < 2.

        ε(x) depends on the image and the parameters only, never on (z, ρ): for every image the flow stays a
        time-reversible, volume-preserving map, so the true ELBO remains a bound of log p(x). Gradients flow
        through ε(x): scaling the metric up no longer buys a larger effective step ε G⁻¹, which removes the
        drive that otherwise inflates G⁻¹ geometrically until training diverges (README, "Stability").
        """
        if self.step_bound == "none":
            return self.eps_lf
        kappa = self.per_row(metric.max_eigenvalue(), len(mu))
        curvature = self.potential_curvature(mu)
        wall = WALL_SAFETY * self.temperature * math.sqrt(self.regularization * self.beta_zero) / kappa
        if self.objective == "authors":  # p(x) ≥ 1/√(λβ₀): the release's momentum can be larger
            wall = wall / (self.momentum_scale(x) * math.sqrt(self.regularization * self.beta_zero))
        frequency = FREQUENCY_SAFETY / torch.sqrt(kappa * curvature)
        return torch.clamp(torch.minimum(wall, frequency), max=self.eps_lf)[:, None]

    def momentum_scale(self, x: torch.Tensor) -> torch.Tensor | float:
        """The largest typical size of ρ₀ that the wall limit of ``step_size`` must allow, per image: 1/√(λβ₀) for
        ρ₀ ~ N(0, G(z₀)/β₀) (G ⪯ I/λ), and max(1/√λ, √λmax(L(x) L(x)ᵀ))/√β₀ for the release's ρ₀ = L(x)γ/√β₀,
        whose size is set by the metric network rather than by G (without it, a growing L(x) outruns the bound)."""
        flat = 1.0 / math.sqrt(self.regularization * self.beta_zero)
        if self.objective != "authors":
            return flat
        L = self.lower_factor(x)
        factor = torch.sqrt(sym2_max_eigenvalue(L @ L.transpose(-1, -2)) / self.beta_zero)
        return torch.clamp(factor, min=flat)

    # ---------------------------------------------------------------------------------------- the metric
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

    def flow_metric(self, x: torch.Tensor, mu: torch.Tensor):
        if self.training:
            # the centroids are μ(x): reuse the encoder output of the forward pass instead of encoding x again
            M = self._metric_matrices_from_factor(self.lower_factor(x))
            return LearnedMetric(self.grouped(mu), self.grouped(M), self.temperature, self.regularization)
        return self.metric()

    def authors_initial_momentum(self, x, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The release's ρ₀ = L(x) γ / √β₀, γ ~ N(0, I) (covariance L Lᵀ/β₀ instead of G(z₀)/β₀), and its log
        density log N(ρ₀; 0, L Lᵀ/β₀) = −(d/2) log 2π − Σⱼ log Lⱼⱼ + (d/2) log β₀ − ½ ‖γ‖²."""
        d = self.latent_dim
        gamma = self.standard_normal((len(x), d), x, generator)
        L = self.lower_factor(x)  # one pass of the metric network for ρ₀ and its density
        rho0 = apply(L, gamma) / math.sqrt(self.beta_zero)
        log_diag = torch.log(torch.diagonal(L, dim1=-2, dim2=-1))  # log Lⱼⱼ
        log_density = (
            -0.5 * d * LOG_2PI - log_diag.sum(-1) + 0.5 * d * math.log(self.beta_zero) - 0.5 * (gamma * gamma).sum(-1)
        )
        return rho0, log_density


MODELS = {"vae": VAE, "hvae": HVAE, "rhvae": RHVAE}
#: The training-scheme options of the RHVAE at their defaults (the paper's scheme).
SCHEME_DEFAULTS = {"gradient": "exact", "metric_scale": "free", "learn_step": False}
