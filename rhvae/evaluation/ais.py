r"""Annealed importance sampling (AIS) of log p(x) at any latent dimension, checked by bidirectional Monte Carlo.

Notation (paper): x ∈ [0, 1]^D an image, p(z) = N(0, I_d) the prior, p(x|z) the Bernoulli decoder with logits π(z),
q(z|x) = N(μ(x), diag σ²(x)) the encoder. VAE, HVAE and RHVAE share this generative model; their flow and metric
are not part of p(x) = ∫ p(x|z) p(z) dz, so AIS uses only the decoder (and the encoder's q(z|x) as a starting point
with ``initial="encoder"``).

**AIS** (Neal 2001), as Wu, Burda, Salakhutdinov & Grosse (2017) use it for decoder-based models. With a schedule
0 = β₀ < β₁ < … < β_T = 1 and the intermediate targets

    f_t(z) = q₀(z)^(1−β_t) · p(x, z)^β_t,        f₀ = q₀ (normalised),  ∫ f_T = p(x),

one chain draws z₀ ~ q₀ and, for t = 1 … T, adds log f_t(z_{t−1}) − log f_{t−1}(z_{t−1}) = (β_t − β_{t−1})
[log p(x, z_{t−1}) − log q₀(z_{t−1})] to its log weight log w, then moves z_{t−1} → z_t by an HMC transition that
leaves f_t invariant (none after the last increment). E[w] = p(x) (without step-size adaptation, see below), so with
K chains per image

    log p̂(x) = logsumexp_k(log w_k) − log K,      E[log p̂(x)] ≤ log p(x)   (a stochastic lower bound).

*Initial distribution.* q₀ = p(z) = N(0, I) by default (``initial="prior"``, the path p(z) p(x|z)^β of Wu et al.);
``initial="encoder"`` starts from the encoder's Gaussian widened by ``q0_scale``, N(μ(x), diag (s σ(x))²). The
encoder start looks cheaper (it begins near the posterior), but on the real test digits the posterior often has
mass where q(z|x) has none (that is why importance sampling from it is 4.5–8.8 nats low at d = 2): at equal cost
(T = 200, K = 16, L = 2) the encoder start (s = 4) misses a mode on a few images of 5 of the 18 shipped d = 2 models
(errors down to −25 nats, mean error up to −0.97 nats), whereas the prior start meets both d = 2 targets on all 18
(benchmarks/ais_check.py). The prior-to-posterior gap is only Σ_j log(1/σ_j) + O(1) nats, which 200
temperatures bridge at d ≤ 16 (BDMC gap ≤ 0.4 nats). The chains run in whitened coordinates u = (z − μ₀)/σ₀ of q₀
= N(μ₀, diag σ₀²), where q₀ = N(0, I) and f_T(u) = p(x, μ₀ + σ₀ ⊙ u) ∏_j σ₀_j (the Jacobian, so that ∫ f_T du =
p(x)); for the prior u = z.

*Schedule.* Sigmoidal (Grosse et al. 2015, Wu et al. 2017): β̃_t = sigmoid(δ (2t/T − 1)), δ = 4, rescaled to
β_t = (β̃_t − β̃₀)/(β̃_T − β̃₀), so that β₀ = 0 and β_T = 1; it spends more temperatures near both ends.

*Transitions.* One HMC transition per temperature: ρ ~ N(0, I), ``n_leapfrog`` leapfrog steps of size ε_k on
H(u, ρ) = −log f_t(u) + ½‖ρ‖², then a Metropolis accept/reject. The gradient is exact: ∇_u log f_t(u) =
−(1 − β_t) u + β_t σ ⊙ ∇_z log p(x, z), with ∇_z log p(x, z) = −∇_z U from the model's ``potential_grad`` (which also
returns the logits, so each leapfrog step is one decoder pass for all images × chains at once).

*Step-size adaptation.* Like Wu et al. (after the HMC of their released code: each chain's step size goes up when
its acceptance is above the target of 0.65 and down otherwise), each chain's ε_k is multiplied after every
transition by exp(``adapt_rate`` · (a − ``target_acceptance``)), a the transition's Metropolis acceptance
probability, clamped to [1e-4, 10]. The transition at temperature t then depends on the chain's own past, which the
proof of E[w] = p(x) does not allow (it needs kernels fixed in advance): the adapted estimate is not exactly
unbiased, nor exactly a stochastic lower bound. ``adapt_rate=0`` (a fixed step) gives the exactly unbiased sampler,
and so does replaying adapted step sizes recorded in another run (``anneal(step_sizes=...)``). Measured: on 10
simulated images of a d = 10 VAE with K = 128 chains, the adapted forward estimate was 0.13 nats above the same
chains with the adapted steps replayed fixed (mean over images; per image −0.3 to +0.6): the adaptation bias is of
order 0.1 nats, small beside the targets, but it can make a BDMC gap slightly negative.

**BDMC** (Grosse, Ghahramani & Adams 2015). For simulated data (z*, x) ~ p(z) p(x|z), z* is an exact sample of
p(z|x) = f_T / p(x). Running the same chain backwards (β from 1 to 0, the same schedule and transitions) from z*
gives log weights whose logmeanexp estimates log(1/p(x)) without bias, so its negative is a stochastic *upper*
bound of log p(x). The reverse chains do not adapt: they replay, per image and temperature, the forward chains'
step sizes (their geometric mean), fixed, so that the upper bound is exactly valid (a reverse chain that adapted
from the narrow posterior outwards was measured 0.2 nats *below* log Z on a Gaussian with known Z). The gap
upper − lower bounds the error of the forward estimate on such data (in expectation).

Defaults (``AIS_STEPS``, ``AIS_CHAINS``, ``AIS_LEAPFROG``): chosen by benchmarks/ais_check.py, which measures the
d = 2 error against ``exact_log_likelihood`` on the 18 shipped models and the BDMC gaps at d = 5, 10, 16.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rhvae.models import VAE, bernoulli_log_likelihood, check_model, standard_normal_log_density
from rhvae.models.eval_mode import EvalMode
from rhvae.validation import ParameterError, check, check_float, check_int

#: Defaults of ``ais_log_likelihood`` and ``bdmc`` (and of ``log_likelihood_table`` at latent_dim ≠ 2).
AIS_STEPS = 200
AIS_CHAINS = 16
AIS_LEAPFROG = 2
AIS_STEP_SIZE = 1.0
AIS_TARGET_ACCEPTANCE = 0.65
AIS_ADAPT_RATE = 0.2
SIGMOID_DELTA = 4.0
AIS_INITIAL = "prior"
AIS_Q0_SCALE = 4.0
#: rows (image, chain) per decoder pass: bounds memory at a few tens of MB for D = 784
AIS_BATCH_SIZE = 4096
#: The most decoder passes (image × chain × temperature × leapfrog step) one run may take (about 25 µs each on
#: one core: under an hour and a half; the defaults take 6,400 per image).
MAX_AIS_PASSES = 2e8
STEP_SIZE_BOUNDS = (1e-4, 10.0)

#: A target in whitened coordinates: u (B, d) → (log f_T(u), ∇_u log f_T(u)), the end point of the path.
Target = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def sigmoid_schedule(n_steps: int, delta: float = SIGMOID_DELTA) -> torch.Tensor:
    r"""β₀ = 0 < β₁ < … < β_T = 1 (T = ``n_steps``), float64: β̃_t = sigmoid(δ (2t/T − 1)) rescaled to [0, 1]."""
    n_steps = check_int("n_steps", n_steps, 1, 1_000_000)
    t = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    b = torch.sigmoid(delta * (2.0 * t - 1.0))
    b = (b - b[0]) / (b[-1] - b[0])
    b[0], b[-1] = 0.0, 1.0
    return b


def _log_q0(u: torch.Tensor) -> torch.Tensor:
    return standard_normal_log_density(u)


def hmc_transition(
    u: torch.Tensor,
    log_target: torch.Tensor,
    grad_target: torch.Tensor,
    beta: float,
    target: Target,
    step_size: torch.Tensor,
    n_leapfrog: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""One HMC transition per row leaving f_β(u) ∝ N(u; 0, I)^(1−β) f_T(u)^β invariant.

    ``u`` (B, d) the current states, ``log_target`` / ``grad_target`` log f_T and ∇ log f_T there (so that no pass is
    repeated), ``step_size`` (B,) each row's ε, ``n_leapfrog`` L. Returns the new (u, log f_T, ∇ log f_T) and the
    Metropolis acceptance probability (B,). A proposal whose energy is not finite is rejected.
    """

    def log_f(v, lt):
        return (1.0 - beta) * _log_q0(v) + beta * lt

    def grad_f(v, gt):
        return beta * gt - (1.0 - beta) * v

    rho = torch.randn(u.shape, dtype=u.dtype, generator=generator).to(u.device)
    h0 = 0.5 * (rho * rho).sum(-1) - log_f(u, log_target)
    eps = step_size.to(u.dtype)[:, None]
    r = rho + 0.5 * eps * grad_f(u, grad_target)
    v, lt, gt = u, log_target, grad_target
    for step in range(n_leapfrog):
        v = v + eps * r
        lt, gt = target(v)
        r = r + (eps if step < n_leapfrog - 1 else 0.5 * eps) * grad_f(v, gt)
    h1 = 0.5 * (r * r).sum(-1) - log_f(v, lt)
    log_accept = (h0 - h1).clamp(max=0.0)
    log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf))
    uniform = torch.rand(len(u), dtype=u.dtype, generator=generator).to(u.device)
    accept = torch.log(uniform) < log_accept
    keep = accept[:, None]
    return (
        torch.where(keep, v, u),
        torch.where(accept, lt, log_target),
        torch.where(keep, gt, grad_target),
        log_accept.exp(),
    )


@dataclass
class Annealing:
    """What ``anneal`` returns, per chain (B,): log weights (float64), mean acceptance, final step size, final u,
    and the step used at each temperature, (T + 1, B) (``record``; else None)."""

    log_weight: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    u: torch.Tensor
    schedule: torch.Tensor | None = None


def anneal(
    target: Target,
    u: torch.Tensor,
    betas: torch.Tensor,
    generator: torch.Generator,
    step_size: float = AIS_STEP_SIZE,
    n_leapfrog: int = AIS_LEAPFROG,
    target_acceptance: float = AIS_TARGET_ACCEPTANCE,
    adapt_rate: float = AIS_ADAPT_RATE,
    reverse: bool = False,
    step_sizes: torch.Tensor | None = None,
    record: bool = False,
) -> Annealing:
    r"""AIS along f_t ∝ N(u; 0, I)^(1−β_t) f_T(u)^β_t from the states ``u`` (B, d), one chain per row.

    Forward (``reverse=False``): u ~ N(0, I) given; log w = Σ_{t=1}^{T} (β_t − β_{t−1}) [log f_T − log N(·; 0, I)]
    at z_{t−1}, with an HMC transition at β_t after each increment but the last: E[w] = ∫ f_T.
    Reverse: u ~ f_T / ∫ f_T given; t runs from T down to 1, the increments are (β_{t−1} − β_t) [...] and the
    transitions at β_{t−1} (t > 1): the same kernels in the opposite order, E[w] = 1 / ∫ f_T.

    The step sizes start at ``step_size`` and adapt per row (module docstring), unless ``step_sizes`` (T + 1, B)
    fixes the step of the transition at β_t to ``step_sizes[t]`` (no adaptation: the kernels are then fixed in
    advance and the weights exactly valid). ``record`` returns the steps used, (T + 1, B) (``Annealing.schedule``).
    """
    betas = betas.tolist()
    n_steps = len(betas) - 1
    lt, gt = target(u)
    log_w = torch.zeros(len(u), dtype=torch.float64, device=u.device)
    eps = torch.full((len(u),), float(step_size), dtype=torch.float64, device=u.device)
    accepted = torch.zeros(len(u), dtype=torch.float64, device=u.device)
    used = torch.full((n_steps + 1, len(u)), float(step_size), device=u.device) if record else None
    order = range(n_steps, 0, -1) if reverse else range(1, n_steps + 1)
    low, high = STEP_SIZE_BOUNDS
    for t in order:
        sign = -1.0 if reverse else 1.0
        log_w += sign * (betas[t] - betas[t - 1]) * (lt - _log_q0(u)).double()
        nxt = t - 1 if reverse else t
        if (reverse and nxt == 0) or (not reverse and t == n_steps):
            continue
        if step_sizes is not None:
            eps = step_sizes[nxt].double()
        if used is not None:
            used[nxt] = eps
        u, lt, gt, a = hmc_transition(u, lt, gt, betas[nxt], target, eps, n_leapfrog, generator)
        a = a.double()
        accepted += a
        if adapt_rate and step_sizes is None:
            eps = (eps * torch.exp(adapt_rate * (a - target_acceptance))).clamp(low, high)
    return Annealing(log_w, accepted / max(n_steps - 1, 1), eps, u, used)


def _model_target(model: VAE, x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> Target:
    """log f_T(u) = log p(x, μ + σ ⊙ u) + Σ_j log σ_j and its gradient σ ⊙ ∇_z log p(x, z), one decoder pass."""
    log_jacobian = torch.log(sigma).sum(-1)

    def target(u):
        z = mu + sigma * u
        grad_u, logits = model.potential_grad(z, x)  # ∇_z U, U = −log p(x|z) − log p(z)
        log_joint = bernoulli_log_likelihood(logits, x) + standard_normal_log_density(z)
        return log_joint + log_jacobian, -sigma * grad_u

    return target


def _settings(
    n_steps, n_chains, n_leapfrog, step_size, initial, q0_scale, target_acceptance, adapt_rate, batch_size, seed
) -> dict:
    return {
        "ais_steps": n_steps,
        "ais_chains": n_chains,
        "ais_leapfrog": n_leapfrog,
        "ais_step_size": step_size,
        "ais_q0_scale": q0_scale,
        "ais_target_acceptance": target_acceptance,
        "ais_adapt_rate": adapt_rate,
        "ais_schedule": f"sigmoid(delta={SIGMOID_DELTA:g})",
        "ais_initial": initial,
        "ais_batch_size": batch_size,
        "ais_seed": seed,
    }


INITIALS = ("prior", "encoder")


def _check_initial(initial) -> str:
    if initial not in INITIALS:
        raise ParameterError(f"initial must be one of {', '.join(map(repr, INITIALS))}, got {initial!r}")
    return initial


def _check_settings(
    n_steps, n_chains, n_leapfrog, step_size, initial, q0_scale, target_acceptance, adapt_rate, batch_size
):
    return (
        check_int("n_steps", n_steps, 1, 1_000_000),
        check_int("n_chains", n_chains, 1, 100_000),
        check_int("n_leapfrog", n_leapfrog, 1, 1000),
        check_float("step_size", step_size, STEP_SIZE_BOUNDS[0], STEP_SIZE_BOUNDS[1], low_inclusive=True),
        _check_initial(initial),
        check_float("q0_scale", q0_scale, 0.0, 1000.0),
        check_float("target_acceptance", target_acceptance, 0.0, 1.0),
        check_float("adapt_rate", adapt_rate, 0.0, 10.0, low_inclusive=True),
        check_int("batch_size", batch_size, 1, 10_000_000),
    )


def _check_work(n_images: int, n_chains: int, n_steps: int, n_leapfrog: int, directions: int = 1) -> None:
    passes = directions * n_images * n_chains * max(n_steps - 1, 1) * n_leapfrog
    if passes > MAX_AIS_PASSES:
        both = " × 2 directions" if directions == 2 else ""
        raise ParameterError(
            f"{n_images} images{both} × n_chains {n_chains} × n_steps {n_steps} × n_leapfrog {n_leapfrog} = "
            f"{passes:.2g} decoder passes: at most {MAX_AIS_PASSES:.0e} (hours of CPU): lower n_chains or n_steps, "
            f"or use fewer images"
        )


def _single(model) -> VAE:
    model = check_model(model)
    if model.members is not None:
        raise ParameterError("model must be a single model, not a stack of models (VAE.stack): use model.member(i)")
    return model


@dataclass
class AISLogLikelihood:
    r"""Per-image results of ``ais_log_likelihood`` (n images, K chains).

    ``log_px`` (n,) float64: log p̂(x) = logsumexp_k(log w_k) − log K; ``log_weights`` (n, K) float64: the chains'
    log w_k; ``acceptance`` (n, K): each chain's mean Metropolis acceptance probability over its transitions;
    ``step_size`` (n, K): each chain's final (adapted) step size in whitened units; ``z`` (n, K, d): the chains'
    final states (approximate posterior samples); ``settings`` and ``seconds`` describe the run.
    """

    log_px: torch.Tensor
    log_weights: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    z: torch.Tensor
    settings: dict
    seconds: float

    def summary(self) -> dict:
        """Means over the images, JSON-ready."""
        n = len(self.log_px)
        return {
            "mean": float(self.log_px.mean()),
            "std": float(self.log_px.std()) if n > 1 else None,
            "n_images": n,
            "acceptance": float(self.acceptance.mean()),
            **self.settings,
            "seconds": self.seconds,
            "seconds_per_image": self.seconds / max(n, 1),
        }


def _run(
    model,
    x,
    n_steps,
    n_chains,
    n_leapfrog,
    step_size,
    initial,
    q0_scale,
    target_acceptance,
    adapt_rate,
    batch_size,
    gen,
    z0=None,
    step_sizes=None,
    record=False,
):
    """Forward (``z0`` None) or reverse (``z0`` (n, d) exact posterior samples) AIS over images × chains, in chunks
    of whole images of at most ``batch_size`` rows; returns (log w (n, K), acceptance, step size, z (n, K, d),
    per-image step sizes (n, T + 1) or None). ``record``: return each image's steps (the geometric mean over its
    chains at each temperature); ``step_sizes`` (n, T + 1): use these, fixed, for every chain of an image."""
    n, d = len(x), model.latent_dim
    betas = sigmoid_schedule(n_steps)
    per_chunk = max(1, batch_size // n_chains)
    out_w = torch.empty(n, n_chains, dtype=torch.float64)
    out_a = torch.empty(n, n_chains, dtype=torch.float64)
    out_e = torch.empty(n, n_chains, dtype=torch.float64)
    out_z = torch.empty(n, n_chains, d, dtype=x.dtype)
    out_s = torch.empty(n, n_steps + 1, dtype=torch.float32) if record else None
    for start in range(0, n, per_chunk):
        stop = min(start + per_chunk, n)
        xs = x[start:stop].repeat_interleave(n_chains, 0)
        if initial == "prior":
            mu = torch.zeros(len(xs), d, dtype=x.dtype, device=x.device)
            sigma = torch.ones(len(xs), d, dtype=x.dtype, device=x.device)
        else:
            mu, log_var = model.encode(x[start:stop])
            mu = mu.repeat_interleave(n_chains, 0)
            sigma = torch.exp(0.5 * log_var).repeat_interleave(n_chains, 0) * q0_scale
        if z0 is None:
            u = torch.randn(len(xs), d, dtype=x.dtype, generator=gen).to(x.device)
        else:
            u = (z0[start:stop].to(x.device).repeat_interleave(n_chains, 0) - mu) / sigma
        fixed = None if step_sizes is None else step_sizes[start:stop].T.repeat_interleave(n_chains, 1).to(x.device)
        run = anneal(
            _model_target(model, xs, mu, sigma),
            u,
            betas,
            gen,
            step_size,
            n_leapfrog,
            target_acceptance,
            adapt_rate,
            reverse=z0 is not None,
            step_sizes=fixed,
            record=record,
        )
        out_w[start:stop] = run.log_weight.reshape(-1, n_chains)
        out_a[start:stop] = run.acceptance.reshape(-1, n_chains)
        out_e[start:stop] = run.step_size.reshape(-1, n_chains)
        out_z[start:stop] = (mu + sigma * run.u).reshape(-1, n_chains, d)
        if record:
            out_s[start:stop] = run.schedule.T.reshape(-1, n_chains, n_steps + 1).log().mean(1).exp()
    return out_w, out_a, out_e, out_z, out_s


def ais_log_likelihood(
    model: VAE,
    x: torch.Tensor,
    n_steps: int = AIS_STEPS,
    n_chains: int = AIS_CHAINS,
    n_leapfrog: int = AIS_LEAPFROG,
    step_size: float = AIS_STEP_SIZE,
    initial: str = AIS_INITIAL,
    q0_scale: float = AIS_Q0_SCALE,
    target_acceptance: float = AIS_TARGET_ACCEPTANCE,
    adapt_rate: float = AIS_ADAPT_RATE,
    batch_size: int = AIS_BATCH_SIZE,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> AISLogLikelihood:
    r"""log p(x) by AIS from q₀ (the prior by default) to p(z|x) (module docstring), per image, any latent_dim.

    ``n_steps`` T temperatures of the sigmoidal schedule, ``n_chains`` K independent chains per image,
    ``n_leapfrog`` L leapfrog steps per HMC transition with the initial step size ``step_size`` (in q₀'s whitened
    units), adapted per chain toward ``target_acceptance`` at ``adapt_rate`` (0: fixed, exactly unbiased);
    ``initial`` q₀: ``"prior"`` N(0, I) or ``"encoder"`` N(μ(x), diag (``q0_scale`` σ(x))²).
    The cost is n·K·(T − 1)·L decoder passes (refused above ``MAX_AIS_PASSES``), ``batch_size`` rows (whole images
    × their K chains) at a time. Randomness comes from ``generator`` or a fresh ``torch.Generator`` seeded with
    ``seed`` (the global RNG is untouched); the result is deterministic given (seed, batch_size).
    The model runs in eval mode without autograd; only its decoder is used (and its encoder if ``initial`` is
    ``"encoder"``).
    """
    model = _single(model)
    x = model.check_input(x)
    settings = _check_settings(
        n_steps, n_chains, n_leapfrog, step_size, initial, q0_scale, target_acceptance, adapt_rate, batch_size
    )
    n_steps, n_chains, n_leapfrog, step_size, initial, q0_scale, target_acceptance, adapt_rate, batch_size = settings
    if generator is None:
        seed = check("seed", seed)
        generator = torch.Generator().manual_seed(seed)
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not len(x):
        raise ValueError("x must hold at least one image, got none")
    _check_work(len(x), n_chains, n_steps, n_leapfrog)
    start = time.perf_counter()
    with EvalMode(model):
        log_w, acc, eps, z, _ = _run(model, x, *settings, generator)
    log_px = torch.logsumexp(log_w, 1) - math.log(n_chains)
    return AISLogLikelihood(log_px, log_w, acc, eps, z, _settings(*settings, seed), time.perf_counter() - start)


@dataclass
class BDMC:
    r"""Results of ``bdmc`` on n simulated images (K chains each way).

    ``x`` (n, D) the binary images and ``z`` (n, d) the codes they were drawn from (exact posterior samples);
    ``lower`` (n,): the forward AIS estimate logmeanexp_k(log w_k), a stochastic lower bound of log p(x);
    ``upper`` (n,): −logmeanexp_k(log w'_k) of the reverse chains, a stochastic upper bound; ``gap`` = upper − lower
    and ``mean_gap`` its mean (nats); ``forward`` the forward ``AISLogLikelihood``, ``reverse_log_weights`` (n, K),
    ``reverse_acceptance`` (n, K); ``settings`` and ``seconds`` (both directions).
    """

    x: torch.Tensor
    z: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    gap: torch.Tensor
    mean_gap: float
    forward: AISLogLikelihood
    reverse_log_weights: torch.Tensor
    reverse_acceptance: torch.Tensor
    settings: dict
    seconds: float

    def summary(self) -> dict:
        """Means over the images, JSON-ready."""
        n = len(self.gap)
        return {
            "mean_gap": self.mean_gap,
            "max_gap": float(self.gap.max()),
            "mean_lower": float(self.lower.mean()),
            "mean_upper": float(self.upper.mean()),
            "n_images": n,
            "acceptance": float(self.forward.acceptance.mean()),
            **self.settings,
            "seconds": self.seconds,
            "seconds_per_image": self.seconds / max(n, 1),
        }


def simulate(model: VAE, n_images: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, x) ~ p(z) p(x|z): z ~ N(0, I_d), x ~ Bernoulli(sigmoid(π(z))) binary images, (n, d) and (n, D)."""
    dtype = model.dec_hidden.weight.dtype
    z = torch.randn(n_images, model.latent_dim, dtype=dtype, generator=generator)
    with EvalMode(model):
        probs = torch.sigmoid(model.decode_logits(z.to(model.dec_hidden.weight.device))).cpu()
    return z, torch.bernoulli(probs, generator=generator)


def bdmc(
    model: VAE,
    n_images: int = 20,
    n_steps: int = AIS_STEPS,
    n_chains: int = AIS_CHAINS,
    n_leapfrog: int = AIS_LEAPFROG,
    step_size: float = AIS_STEP_SIZE,
    initial: str = AIS_INITIAL,
    q0_scale: float = AIS_Q0_SCALE,
    target_acceptance: float = AIS_TARGET_ACCEPTANCE,
    adapt_rate: float = AIS_ADAPT_RATE,
    batch_size: int = AIS_BATCH_SIZE,
    seed: int = 0,
) -> BDMC:
    r"""Bidirectional Monte Carlo (Grosse et al. 2015): sandwich log p(x) of ``n_images`` simulated images.

    (z*, x) ~ p(z) p(x|z) (``simulate``); forward AIS from q(z|x) gives the lower bound, and the same schedule and
    transitions run from z* (β from 1 to 0) give the upper bound (module docstring). Both directions use the
    settings of ``ais_log_likelihood``; the gap upper − lower (≥ 0 in expectation) bounds the error of the forward
    estimate on data from the model. One ``torch.Generator`` seeded with ``seed`` draws everything.
    """
    model = _single(model)
    n_images = check_int("n_images", n_images, 1, 100_000)
    settings = _check_settings(
        n_steps, n_chains, n_leapfrog, step_size, initial, q0_scale, target_acceptance, adapt_rate, batch_size
    )
    n_steps, n_chains, n_leapfrog, step_size, initial, q0_scale, target_acceptance, adapt_rate, batch_size = settings
    seed = check("seed", seed)
    _check_work(n_images, n_chains, n_steps, n_leapfrog, directions=2)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    z, x = simulate(model, n_images, gen)
    with EvalMode(model):
        log_w, acc, eps, z_end, schedule = _run(model, x, *settings, gen, record=True)
        forward = AISLogLikelihood(
            torch.logsumexp(log_w, 1) - math.log(n_chains),
            log_w,
            acc,
            eps,
            z_end,
            _settings(*settings, seed),
            time.perf_counter() - start,
        )
        # the reverse chains replay the forward chains' step sizes (per image and temperature), fixed
        rev_w, rev_a, _, _, _ = _run(model, x, *settings, gen, z0=z, step_sizes=schedule)
    upper = -(torch.logsumexp(rev_w, 1) - math.log(n_chains))
    gap = upper - forward.log_px
    return BDMC(
        x,
        z,
        forward.log_px,
        upper,
        gap,
        float(gap.mean()),
        forward,
        rev_w,
        rev_a,
        {**_settings(*settings, seed), "n_images": n_images},
        time.perf_counter() - start,
    )
