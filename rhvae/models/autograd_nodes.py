r"""Autograd nodes with hand-written backwards for the generalized leapfrog (docs/design.md §2.2).

Each replaces a chain of small tensor operations that autograd would otherwise record node by node (written
with plain tensor ops, an RHVAE training forward with 10 leapfrog steps and 3 fixed-point iterations recorded
about 2,300 autograd nodes; with these, under 400). The forward runs without recording and the backward is the
chain rule of the same computation written out, so values and gradients are those of the plain formulation to
rounding (tests/models/test_speed_equivalence.py checks both against autograd in float64, and each node against finite
differences). None of these backwards is itself differentiable (``once_differentiable``): nothing in the package
takes second derivatives through the flow.

**DecoderForce**: the decoder part of the leapfrog force.

For the ReLU MLP decoder h = ReLU(W₁ z + b₁), π = W₂ h + b₂ (logits), Bernoulli likelihood and prior N(0, I),
U(z) = −log p(x|z) − log p(z) has the closed-form gradient

    ∇_z U = W₁ᵀ a + z,    a = m ⊙ (W₂ᵀ r),    r = σ(π) − x,    m = 1(W₁ z + b₁ > 0).

``potential_grad`` returns (∇_z U, π) as one node instead of about ten; its backward is the chain rule of the
formula above written out (m is piecewise constant, so it has no derivative). For output cotangents ḡ (of ∇_z U,
(B, d)) and ℓ̄ (of π, (B, D)):

    ā = m ⊙ (ḡ W₁ᵀ),    r̄ = ā W₂ᵀ,    π̄ = ℓ̄ + r̄ ⊙ σ(π)(1 − σ(π)),    p̄ = m ⊙ (π̄ W₂),
    z̄ = ḡ + p̄ W₁,    W̄₁ = aᵀ ḡ + p̄ᵀ z,    b̄₁ = Σ_b p̄,    W̄₂ = rᵀ ā + π̄ᵀ h,    b̄₂ = Σ_b π̄.

A cotangent that autograd does not provide (the output is unused, e.g. the logits of every step but the last)
is skipped rather than filled with zeros.

**MetricEvaluation**: the learned metric at z, G⁻¹ = Σᵢ wᵢ Mᵢ + λI (wᵢ = exp(min(eᵢ, 0)), eᵢ = −‖z − cᵢ‖²/T²),
G = (G⁻¹)⁻¹, l = log det G⁻¹ and J = ∂vec(G⁻¹)/∂z = (2/T²)[Σᵢ wᵢ vec(Mᵢ) cᵢᵀ − S zᵀ] with S = Σᵢ wᵢ vec(Mᵢ).
For cotangents (Ā, Ḡ, l̄, J̄) of (G⁻¹, G, l, J) and s = 2/T²:

    S̄ = vec(Ā − sym(Gᵀ Ḡ Gᵀ) + l̄ Gᵀ) − s J̄ z,    z̄ = −s J̄ᵀ S + s Σᵢ ēᵢ (cᵢ − z),
    w̄ᵢ = S̄ · vec(Mᵢ) + s Σ_(jk)l J̄_(jk)l (Mᵢ)_jk cᵢ_l,    ēᵢ = w̄ᵢ wᵢ 1(eᵢ ≤ 0),
    M̄ᵢ = Σ_b w_bi (S̄_b + s J̄_b cᵢ),    c̄ᵢ = s Σ_b w_bi J̄_bᵀ vec(Mᵢ) + s Σ_b ē_bi (z_b − cᵢ),

where sym(X) = (X + Xᵀ)/2: G is computed from the symmetric part of G⁻¹ (``spd_inverse_logdet``).

**MomentumSolve**: the fixed-point iterations of leapfrog step 1, ρ_{k+1} = base − Q(ρ_k) for k = 0 … n, with
Q(ρ)_l = Σ_jk ρ_j ρ_k J_(jk)l and J = scale · ∂vec(G⁻¹)/∂z (B, d², d) at the step's start (so Q(ρ) = scale ·
∇_z ρᵀG⁻¹ρ). With K_jk = Σ_l J_(jk)l ḡ_l, one iteration's backward for the cotangent ḡ of ρ_{k+1} is

    bāse += ḡ,    J̄_(jk)l −= ρ_j ρ_k ḡ_l,    ρ̄_k = −(K + Kᵀ) ρ_k.

**MomentumKick**: the explicit momentum updates of the leapfrog (the constant part of step 1, and step 3),
out = base − h f with f = ∇U + ½ Σ_jk ρ_j ρ_k J_(jk) − ½ Σ_jk G_jk J_(jk) (the ρ term only where ρ is given), h the
half step (one per row or one for all), J = ∂vec(G⁻¹)/∂z and G at the same z. With K_jk = Σ_l J_(jk)l ḡ_l:

    bāse = ḡ,    h̄ = −ḡ · f,    ∇̄U = −h ḡ,    ρ̄ = −(h/2)(K + Kᵀ) ρ,    J̄_(jk)l = −(h/2)(ρ_j ρ_k − G_jk) ḡ_l,
    Ḡ = (h/2) K.

**PositionSolve**: the fixed-point iterations of leapfrog step 2, z_{k+1} = z_half + G⁻¹(z_k) u for k = 0 … n − 1,
with G⁻¹(z) = Σᵢ wᵢ(z) Mᵢ + λI, wᵢ(z) = exp(min(eᵢ(z), 0)), eᵢ(z) = −‖z − cᵢ‖²/T². With Ū = ḡ uᵀ for the
cotangent ḡ of z_{k+1}, w̄ᵢ = Σ_jk Ū_jk (Mᵢ)_jk and ēᵢ = w̄ᵢ wᵢ 1(eᵢ ≤ 0):

    z̄_half += ḡ,    ū += G⁻¹(z_k)ᵀ ḡ,    M̄ᵢ += Σ_b w_bi Ū_b,
    z̄_k = (2/T²) Σᵢ ēᵢ (cᵢ − z_k),    c̄ᵢ += (2/T²) Σ_b ē_bi (z_b − cᵢ).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from rhvae.models import native


class DecoderForce(torch.autograd.Function):
    """(∇_z U(z), π(z)) for the ReLU MLP decoder; see the module docstring for the maths.

    Shapes: z (B, d), x (B, D), W₁ (h, d), b₁ (h,), W₂ (D, h), b₂ (D,) for one model, or with a leading member
    dimension M on every input (z (M, B, d), W₁ (M, h, d), b₁ (M, h), …) for a stack of models trained side by
    side (``rhvae.models.VAE.stack``): one product per member, the same formulas."""

    @staticmethod
    def forward(ctx, z, x, W1, b1, W2, b2):
        h = matmul_add(b1.unsqueeze(-2), z, W1.mT).clamp_min_(0.0)
        logits = matmul_add(b2.unsqueeze(-2), h, W2.mT)
        sig = torch.sigmoid(logits)
        r = sig - x
        a = relu_backward(r @ W2, h)
        grad = matmul_add(z, a, W1)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(z, W1, W2, h, sig, r, a)
        return grad, logits

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_bar, logits_bar):
        z, W1, W2, h, sig, r, a = ctx.saved_tensors
        z_bar = W1_bar_T = W2_bar = None
        if grad_bar is not None:
            a_bar = relu_backward(grad_bar @ W1.mT, h)
            W2_bar = r.mT @ a_bar
            W1_bar_T = grad_bar.mT @ a  # W̄₁ is formed transposed, (d, h): the faster layout for a skinny product
            z_bar = grad_bar
            from_r = torch.ops.aten.sigmoid_backward(a_bar @ W2.mT, sig)  # r̄ ⊙ σ(π)(1 − σ(π))
            logits_bar = from_r if logits_bar is None else from_r.add_(logits_bar)
        b2_bar = b1_bar = None
        if logits_bar is not None:
            pre_bar = relu_backward(logits_bar @ W2, h)
            W2_bar = logits_bar.mT @ h if W2_bar is None else matmul_add_(W2_bar, logits_bar.mT, h)
            b2_bar = logits_bar.sum(-2)
            b1_bar = pre_bar.sum(-2)
            z_bar = pre_bar @ W1 if z_bar is None else matmul_add(z_bar, pre_bar, W1)
            W1_bar_T = z.mT @ pre_bar if W1_bar_T is None else matmul_add_(W1_bar_T, z.mT, pre_bar)
        return z_bar, None, None if W1_bar_T is None else W1_bar_T.mT, b1_bar, W2_bar, b2_bar


def matmul_add(input: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """input + α a b for matrices, or for stacks of matrices (3-D: one product per leading index), in one call."""
    if a.ndim == 2:
        return torch.addmm(input, a, b, alpha=alpha)
    return torch.baddbmm(input, a, b, alpha=alpha)


def matmul_add_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``out += α a b`` in place (``matmul_add``'s in-place twin for accumulators)."""
    if a.ndim == 2:
        return out.addmm_(a, b, alpha=alpha)
    return out.baddbmm_(a, b, alpha=alpha)


def relu_backward(grad: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """grad ⊙ 1(h > 0) for h = ReLU(pre) (1(h > 0) = 1(pre > 0)), in one pass."""
    return torch.ops.aten.threshold_backward(grad, h, 0.0)


class MetricEvaluation(torch.autograd.Function):
    """(G⁻¹, G, log det G⁻¹, J, weights) at z for the ``LearnedMetric`` ``metric`` built from ``centroids`` (N, d)
    and ``M`` (N, d, d) (``metric.evaluate``); the weights (B, N) are returned without a gradient. For a metric
    of a stack of models (centroids (M, N, d), ``metric.grouped``) the B rows of z are M groups, one per member,
    each against its own centroids (weights (M, B/M, N))."""

    @staticmethod
    def forward(ctx, z, centroids, M, metric):
        kernels = native.for_tensors(z, centroids)
        ctx.native, ctx.metric = kernels, metric
        if kernels is not None:  # the same quantities with one compiled loop over the centroids (rhvae.models.native)
            z = z.contiguous()
            cT, MT = metric.centroids_T(), metric.matrices_T()
            G_inv, G, log_det, J, weights, M_sum = kernels.metric_forward(
                z, cT, MT, 1.0 / metric.temperature**2, metric.regularization
            )
            ctx.save_for_backward(z, cT, MT, weights, G, M_sum)
            weights = metric.group(weights)
            ctx.mark_non_differentiable(weights)
            return G_inv, G, log_det, J, weights
        weights, outside, M_sum, G_inv, G, log_det, J = metric.evaluate(z)
        ctx.mark_non_differentiable(weights)
        ctx.save_for_backward(z, centroids, M, weights, outside, M_sum, G)
        return G_inv, G, log_det, J, weights

    @staticmethod
    @once_differentiable
    def backward(ctx, G_inv_bar, G_bar, log_det_bar, J_bar, _weights_bar):
        metric = ctx.metric
        if ctx.native is not None:
            metric_grads = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
            bars = (G_inv_bar.contiguous(), G_bar.contiguous(), log_det_bar.contiguous(), J_bar.contiguous())
            z_bar, cT_bar, MT_bar = ctx.native.metric_backward(
                *bars, *ctx.saved_tensors, metric.jacobian_scale, metric_grads
            )
            if not metric_grads:
                return z_bar, None, None, None
            return z_bar, cT_bar.mT, MT_bar.mT.reshape(metric.M.shape), None
        z, centroids, M, w, outside, M_sum, G = ctx.saved_tensors
        B, d = z.shape
        s = metric.jacobian_scale
        G_T = G.transpose(1, 2)
        inverse_bar = G_T @ G_bar @ G_T  # G is computed from the symmetric part of G⁻¹: its gradient is symmetrised
        A_bar = G_inv_bar - 0.5 * (inverse_bar + inverse_bar.transpose(1, 2)) + log_det_bar[:, None, None] * G_T
        # J = moment − s S ⊗ z
        S_bar = torch.sub(A_bar.reshape(B, d * d), (J_bar @ z[:, :, None]).squeeze(2), alpha=s)
        z_bar = (M_sum[:, None, :] @ J_bar).squeeze(1).mul_(-s)
        # of the sums over the table [S, s vec(M) ⊗ c], grouped by member like the weights
        sums_bar = metric.group(torch.cat((S_bar, J_bar.reshape(B, d**3)), 1))
        z_grouped = metric.group(z)
        e_bar = (sums_bar @ metric.jacobian_table()).mul_(w).masked_fill_(outside, 0.0)
        z_bar += metric.ungroup(s * (e_bar @ centroids - e_bar.sum(-1, keepdim=True) * z_grouped))
        c_bar = M_bar = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            table_bar = w.mT @ sums_bar  # (…, N, d² + d³)
            outer_bar = table_bar[..., d * d :].reshape(*table_bar.shape[:-1], d * d, d)
            M_bar = torch.add(table_bar[..., : d * d], (outer_bar @ centroids[..., None]).squeeze(-1), alpha=s)
            c_bar = (M.reshape(*M.shape[:-2], 1, d * d) @ outer_bar).squeeze(-2).mul_(s)
            c_bar += s * (e_bar.mT @ z_grouped - e_bar.sum(-2)[..., None] * centroids)
            M_bar = M_bar.reshape(M.shape)
        return z_bar, c_bar, M_bar, None


class MomentumSolve(torch.autograd.Function):
    """(ρ_{n+1}, max |ρ_{n+1} − ρ_n|) of ρ_{k+1} = base − Q(ρ_k), k = 0 … n, from ρ₀ = rho; see the module
    docstring. Inputs: rho and base (B, d), J (B, d², d), n ≥ 0.

    Q(ρ) is one batched product per iteration, vec(ρρᵀ) J, and the backward's K + Kᵀ is one product with the
    symmetrised table J + Jᵀ (transposed in (j, k)); the n + 1 contributions to J̄ and bāse are summed in one
    product after the loop. Few, larger operations: at d = 2 every tensor here is tiny and the cost is per call."""

    @staticmethod
    def forward(ctx, rho, base, J, n):
        kernels = native.for_tensors(rho, base, J)
        ctx.native = kernels
        if kernels is not None:  # the same iterations in one compiled loop per row (rhvae.models.native)
            J = J.contiguous()
            rho_new, residual, states = kernels.momentum_forward(rho.contiguous(), base.contiguous(), J, n)
            ctx.mark_non_differentiable(residual)
            ctx.save_for_backward(J, states)
            return rho_new, residual
        B, d = rho.shape
        base_row = base[:, None, :]
        states, outers = [rho], []
        for _ in range(n + 1):
            outers.append((states[-1][:, :, None] * states[-1][:, None, :]).reshape(B, 1, d * d))  # vec(ρ_k ρ_kᵀ)
            states.append(torch.baddbmm(base_row, outers[-1], J, alpha=-1.0).reshape(B, d))
        residual = (states[-1] - states[-2]).abs().max() if n > 0 else rho.new_zeros(())
        ctx.mark_non_differentiable(residual)
        ctx.save_for_backward(J, *states[:-1], *outers)
        return states[-1], residual

    @staticmethod
    @once_differentiable
    def backward(ctx, rho_bar, _residual_bar):
        if ctx.native is not None:
            J, states = ctx.saved_tensors
            rho_bar, base_bar, J_bar = ctx.native.momentum_backward(rho_bar.contiguous(), J, states)
            return rho_bar, base_bar, J_bar, None
        J, *saved = ctx.saved_tensors
        states, outers = saved[: len(saved) // 2], saved[len(saved) // 2 :]
        B, d = rho_bar.shape
        # −(J_(jk)l + J_(kj)l): its product with ρ̄ is −(K + Kᵀ) in one call
        J_sym_neg = J.reshape(B, d, d, d).transpose(1, 2).reshape(B, d * d, d).add(J).neg_()
        rho_bars = []  # ρ̄_{k+1}, k = n … 0
        for rho in reversed(states):
            rho_bars.append(rho_bar)
            K_sym_neg = torch.bmm(J_sym_neg, rho_bar[:, :, None]).reshape(B, d, d)
            rho_bar = torch.bmm(K_sym_neg, rho[:, :, None]).reshape(B, d)
        bars = torch.stack(rho_bars[::-1], 1)  # (B, n + 1, d), in iteration order like the outers
        base_bar = bars.sum(1)
        J_bar = torch.bmm(torch.cat(outers, 1).mT, bars).neg_()  # −Σ_k vec(ρ_k ρ_kᵀ) ρ̄_{k+1}ᵀ
        return rho_bar, base_bar, J_bar, None


class MomentumKick(torch.autograd.Function):
    """base − h [∇U + ½ (Q(ρ) − Σ_jk G_jk J_(jk))] with Q(ρ)_l = Σ_jk ρ_j ρ_k J_(jk)l (``rho`` None: no Q); see the
    module docstring. Inputs: base, grad_U, rho (B, d), half (B, 1) or (1, 1), J (B, d², d), G (B, d, d)."""

    @staticmethod
    def forward(ctx, base, half, grad_U, rho, J, G):
        with_rho = rho is not None
        kernels = native.for_tensors(base, half, grad_U, J, G, *([rho] if with_rho else []))
        rows = half.expand(len(base), 1)
        ctx.native, ctx.with_rho, ctx.half_shape = kernels, with_rho, half.shape
        if kernels is not None:  # one compiled loop over the rows (rhvae.models.native)
            # without ρ the kernel never reads its ρ argument: grad_U stands in for it
            inputs = [t.contiguous() for t in (rows, grad_U, rho if with_rho else grad_U, J, G)]
            ctx.save_for_backward(*inputs)
            return kernels.kick_forward(base.contiguous(), *inputs, with_rho)
        B, d = base.shape
        force = grad_U - 0.5 * torch.bmm(G.reshape(B, 1, d * d), J).reshape(B, d)
        if with_rho:
            force = force + 0.5 * torch.bmm((rho[:, :, None] * rho[:, None, :]).reshape(B, 1, d * d), J).reshape(B, d)
        ctx.save_for_backward(rows, force, rho if with_rho else force, J, G)
        return base - rows * force

    @staticmethod
    @once_differentiable
    def backward(ctx, out_bar):
        if ctx.native is not None:
            base_bar, half_bar, grad_U_bar, rho_bar, J_bar, G_bar = ctx.native.kick_backward(
                out_bar.contiguous(), *ctx.saved_tensors, ctx.with_rho
            )
            return base_bar, half_bar.sum_to_size(ctx.half_shape), grad_U_bar, rho_bar, J_bar, G_bar
        rows, force, rho, J, G = ctx.saved_tensors
        B, d = out_bar.shape
        half_bar = -(out_bar * force).sum(1, keepdim=True).sum_to_size(ctx.half_shape)
        K = torch.bmm(J, out_bar[:, :, None]).reshape(B, d, d)  # K_jk = Σ_l J_(jk)l ḡ_l
        half_half = 0.5 * rows[:, :, None]
        coefficient = -G if not ctx.with_rho else rho[:, :, None] * rho[:, None, :] - G  # ρ_j ρ_k − G_jk
        J_bar = (-half_half * coefficient).reshape(B, d * d, 1) * out_bar[:, None, :]
        rho_bar = None
        if ctx.with_rho:
            rho_bar = torch.bmm(K + K.transpose(1, 2), rho[:, :, None]).reshape(B, d).mul_(-half_half.reshape(B, 1))
        return out_bar, half_bar, -rows * out_bar, rho_bar, J_bar, half_half * K


class PositionSolve(torch.autograd.Function):
    """(z_n, max |z_n − z_{n−1}|) of z_{k+1} = z_half + G⁻¹(z_k) u, k = 0 … n − 1, from z₀ = z_start, for the
    ``LearnedMetric`` ``metric`` with centroids (N, d) and matrices M (N, d, d), or grouped by member (centroids
    (M, N, d)); see the module docstring."""

    @staticmethod
    def forward(ctx, z_start, z_half, u, centroids, M, metric, n):
        kernels = native.for_tensors(z_start, z_half, u, centroids) if n > 0 else None
        ctx.native, ctx.metric, ctx.n = kernels, metric, n
        if kernels is not None:  # the same iterations with one compiled loop over the centroids (rhvae.models.native)
            u = u.contiguous()
            cT, MT = metric.centroids_T(), metric.matrices_T()
            z_new, residual, *saved = kernels.position_forward(
                z_start.contiguous(),
                z_half.contiguous(),
                u,
                cT,
                MT,
                1.0 / metric.temperature**2,
                metric.regularization,
                n,
            )
            ctx.mark_non_differentiable(residual)
            ctx.save_for_backward(u, cT, MT, *saved)
            return z_new, residual
        states, weights, outside, G_invs = [z_start], [], [], []
        for _ in range(n):
            w, clamped = metric.weights_and_clamped(states[-1])
            weights.append(w)
            outside.append(clamped)
            G_invs.append(metric.G_inv_from_weights(weights[-1]))
            states.append(torch.baddbmm(z_half[:, :, None], G_invs[-1], u[:, :, None]).squeeze(2))
        residual = (states[-1] - states[-2]).abs().max() if n > 0 else z_start.new_zeros(())
        ctx.mark_non_differentiable(residual)
        ctx.save_for_backward(u, centroids, M, *states[:-1], *weights, *outside, *G_invs)
        return states[-1], residual

    @staticmethod
    @once_differentiable
    def backward(ctx, z_bar, _residual_bar):
        n, metric = ctx.n, ctx.metric
        if ctx.native is not None:
            metric_grads = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
            z_bar, z_half_bar, u_bar, cT_bar, MT_bar = ctx.native.position_backward(
                z_bar.contiguous(), *ctx.saved_tensors, metric.jacobian_scale, metric_grads
            )
            if not metric_grads:
                return z_bar, z_half_bar, u_bar, None, None, None, None
            return z_bar, z_half_bar, u_bar, cT_bar.mT, MT_bar.mT.reshape(metric.M.shape), None, None
        u, centroids, M, *saved = ctx.saved_tensors
        states, weights, outside, G_invs = (saved[i * n : (i + 1) * n] for i in range(4))
        B, d = z_bar.shape
        M_flat = M.reshape(*M.shape[:-2], d * d)  # (…, N, d²)
        s = metric.jacobian_scale
        z_half_bar = torch.zeros_like(z_bar)
        u_bar = torch.zeros_like(u)
        c_bar_T = centroids.new_zeros(centroids.mT.shape)  # c̄ and M̄ are accumulated transposed (faster layout)
        M_bar_T = M_flat.new_zeros(M_flat.mT.shape)
        for z, w, out, G_inv in zip(
            reversed(states), reversed(weights), reversed(outside), reversed(G_invs), strict=True
        ):
            z_half_bar += z_bar
            u_bar += torch.bmm(G_inv.transpose(1, 2), z_bar[:, :, None]).squeeze(2)
            U_bar = metric.group((z_bar[:, :, None] * u[:, None, :]).reshape(B, d * d))
            z = metric.group(z)
            e_bar = (U_bar @ M_flat.mT).mul_(w).masked_fill_(out, 0.0)
            matmul_add_(M_bar_T, U_bar.mT, w)
            e_sum = e_bar.sum(-2)
            matmul_add_(c_bar_T, z.mT, e_bar, alpha=s).sub_(e_sum[..., None, :] * centroids.mT, alpha=s)
            z_bar = metric.ungroup(s * (e_bar @ centroids - e_bar.sum(-1, keepdim=True) * z))
        return z_bar, z_half_bar, u_bar, c_bar_T.mT, M_bar_T.mT.reshape(M.shape), None, None
