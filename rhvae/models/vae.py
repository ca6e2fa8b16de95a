r"""The VAE (Kingma & Welling) of docs/design.md §2, the base class of the HVAE and RHVAE, and what they share.

Notation (paper): x ∈ [0, 1]^D an image, z ∈ R^d a latent code, prior p(z) = N(0, I), Gaussian encoder
q(z|x) = N(μ(x), diag σ²(x)), Bernoulli decoder p(x|z) with logits π(z). Networks: encoder
Linear(D, h)–ReLU → (μ, log σ²) heads; decoder Linear(d, h)–ReLU–Linear(h, D).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rhvae.models.autograd_nodes import DecoderForce
from rhvae.models.metric import (
    sym2_max_eigenvalue,
)
from rhvae.validation import ParameterError, check, check_pixels

LOG_2PI = math.log(2.0 * math.pi)

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
    @classmethod
    def defaults(cls) -> dict:
        """The keyword arguments of the class with their defaults: the one place a model's defaults are written
        (``rhvae.experiments.model_cache.MODEL_CONFIGS``, the CLI and the docs derive from it)."""
        parameters = inspect.signature(cls.__init__).parameters
        return {name: p.default for name, p in parameters.items() if name != "self"}

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
        frozen metric holds one row per training image, so its size is known from the state only. Weights and
        buffers keep the model's dtype (``load_state_dict`` casts)."""
        for name, buffer in self.named_buffers(recurse=False):
            if name in state:  # the model's own dtype: a state saved in float16 or float64 loads into it
                setattr(self, name, torch.empty(state[name].shape, dtype=buffer.dtype, device=buffer.device))
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
        0–255 must be divided by 255 first), by ``rhvae.validation.check_pixels``. ``name`` names the data in the
        error (e.g. ``x_train``)."""
        weight = self.enc_hidden.weight
        why = " (a Bernoulli likelihood)"
        return check_pixels(x, name, self.input_dim, min_images=0, dtype=weight.dtype, device=weight.device, why=why)

    def check_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``check_input`` for a forward pass, which needs at least one image (the flow's reshapes cannot size an
        empty batch)."""
        x = self.check_input(x)
        if not len(x):
            raise ValueError(f"x must hold at least one image, got an empty batch of shape {tuple(x.shape)}")
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
        and ∇_z(−log p(z)) = z. One autograd node with a hand-written backward (``rhvae.models.autograd_nodes``).
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
        x = self.check_batch(x)
        mu, log_var = self.encode(x)
        z0 = self.sample_posterior(mu, log_var, generator)
        logits = self.decode_logits(z0)
        log_px_z = bernoulli_log_likelihood(logits, x)
        log_weight = log_px_z + standard_normal_log_density(z0) - self.posterior_log_density(z0, mu, log_var)
        kl = -0.5 * (1.0 + log_var - mu**2 - torch.exp(log_var)).sum(-1)
        return FlowOutput(mu, log_var, z0, z0, None, None, logits, log_weight, log_px_z - kl)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss: the negative objective averaged over the batch."""
        return -self(x, generator).objective.mean()
