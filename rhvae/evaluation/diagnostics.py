r"""Does a trained HVAE/RHVAE use its flow and its metric? Five numbers per model, and flags in plain words.

Notation (paper): q(z₀|x) = N(μ(x), diag σ²(x)) the encoder, (z₀, ρ₀) → (z_K, ρ_K) the K tempered leapfrog
steps of the flow, G⁻¹(z) = Σᵢ Mᵢ exp(−‖z − cᵢ‖²/T²) + λI the RHVAE's frozen metric (d = latent dimension).

* ``displacement``: how far the flow moves a code, in units of the encoder's posterior std: per image the mean
  over draws of ‖(z_K − z₀) ⊘ σ(x)‖₂ (the Euclidean norm of the per-coordinate ratio), then the median over the
  images. Below 1 the flow barely leaves the encoder's Gaussian: the model behaves like a VAE.
* ``flow_gain``: the mean one-sample true ELBO through the flow, log p(x, z_K) + log N(ρ_K; 0, G(z_K))
  − log q(z₀|x) − log N(ρ₀; 0, G(z₀)/β₀) + (d/2) log β₀, minus the encoder-only ELBO log p(x, z₀) − log q(z₀|x)
  of the same networks (``VAE.forward`` on the model), both on the same draws z₀ (nats per image), and
  ``flow_gain_sem``, its standard error over the images.
* ``step``: the leapfrog step actually used, the median over the images of ε(x) (RHVAE with the stability bound:
  the bounded step; otherwise eps_lf).
* ``kappa`` (RHVAE): κ = maxᵢ λmax G⁻¹(cᵢ), the largest eigenvalue of G⁻¹ at the centroids.
* ``contrast`` (RHVAE): the mean over the images' codes μ(x) of log √det G⁻¹(μ(x)) − (d/2) log λ, i.e. how much
  larger the metric's volume element is at the codes than for the flat metric λI (0 for a metric collapsed to
  λI). Below 0.5 (det G⁻¹ less than e times λ^d) the metric is flat and the RHVAE works as an HVAE.

``flow_diagnostics(model, x)`` computes them (eval mode, frozen metric, a private generator: the global random
state is left alone); ``FlowDiagnostics.flags()`` words the two failures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from rhvae.models import HVAE, RHVAE, VAE
from rhvae.models.eval_mode import EvalMode
from rhvae.validation import check_int

#: Below this median displacement (in posterior standard deviations) the flow "barely moves".
MIN_DISPLACEMENT = 1.0
#: Below this contrast (nats of log √det G⁻¹ above the flat metric's) the metric is "flat".
MIN_CONTRAST = 0.5


@dataclass
class FlowDiagnostics:
    """The diagnostics of one model on a set of images (see the module docstring); JSON-ready via ``to_dict``."""

    model_type: str
    displacement: float
    flow_gain: float
    flow_gain_sem: float
    step: float
    kappa: float | None
    contrast: float | None
    n_images: int
    n_draws: int

    def flags(self) -> list[str]:
        """One plain sentence per failure: a flow that does not move, a metric that is flat, a flow that costs
        ELBO (a gain below zero by more than twice its standard error over the images); empty when none applies."""
        flags = []
        if self.displacement < MIN_DISPLACEMENT:
            flags.append(
                f"the flow barely moves (median displacement {self.displacement:.2g} posterior σ < "
                f"{MIN_DISPLACEMENT:g}): this {self.model_type} behaves like a VAE"
            )
        if self.contrast is not None and self.contrast < MIN_CONTRAST:
            flags.append(
                f"the metric is flat (≈ λI: contrast {self.contrast:.2g} < {MIN_CONTRAST:g} at the codes): this "
                f"{self.model_type} behaves like an HVAE"
            )
        if self.flow_gain < -2.0 * self.flow_gain_sem:  # below zero by more than twice its standard error
            flags.append(f"the flow lowers the ELBO ({self.flow_gain:.2g} nats against the encoder alone)")
        return flags

    def to_dict(self) -> dict:
        return {**asdict(self), "flags": self.flags()}


@torch.no_grad()
def flow_diagnostics(model: HVAE, x: torch.Tensor, n_draws: int = 20, seed: int = 0) -> FlowDiagnostics:
    """Displacement, flow gain, step, κ and contrast (module docstring) of an HVAE or RHVAE on the images x,
    with ``n_draws`` draws (z₀, ρ₀) per image from a generator seeded with ``seed``."""
    if not isinstance(model, HVAE):
        raise TypeError(f"model must be a rhvae HVAE or RHVAE (a model with a flow), got {type(model).__name__}")
    x = model.check_input(x)
    n_draws = check_int("n_draws", n_draws, 1)
    check_int("seed", seed, 0)
    n = len(x)
    rows = x.repeat_interleave(n_draws, 0)
    with EvalMode(model):
        # the same generator state for both passes: z₀ is the first draw of each, so the two ELBOs share it
        flow = model(rows, torch.Generator().manual_seed(seed))
        encoder_only = VAE.forward(model, rows, torch.Generator().manual_seed(seed))
        sigma = torch.exp(0.5 * flow.log_var)
        moved = ((flow.zK - flow.z0) / sigma).norm(dim=-1).reshape(n, n_draws).mean(1)
        gain = (flow.log_weight - encoder_only.log_weight).double().reshape(n, n_draws).mean(1)
        kappa = contrast = None
        if isinstance(model, RHVAE):
            metric = model.metric()
            kappa = float(metric.max_eigenvalue())
            mu = flow.mu[::n_draws]
            floor = 0.5 * model.latent_dim * math.log(model.regularization)
            contrast = float(metric.log_sqrt_det_G_inv(mu).mean()) - floor
    return FlowDiagnostics(
        model_type=model.model_type,
        displacement=float(moved.median()),
        flow_gain=float(gain.mean()),
        flow_gain_sem=float(gain.std() / math.sqrt(n)) if n > 1 else 0.0,
        step=flow.step_size,
        kappa=kappa,
        contrast=contrast,
        n_images=n,
        n_draws=n_draws,
    )
