// Compiled kernels of the implicit leapfrog steps for a latent dimension d = 2 (docs/design.md §2.2, docs/speed.md).
//
// They compute what the pure-PyTorch autograd nodes of rhvae/models/autograd_nodes.py compute (PositionSolve,
// MomentumSolve, MetricEvaluation, MomentumKick): the same iterations and the same hand-written backwards, with
// every 2 × 2 quantity held in registers and every sum over the centroids done in one loop, instead of a few dozen
// small tensor calls per iteration. The maths, in the paper's notation, is in that module's docstring; the names
// here follow it.
//
// Layouts (all contiguous, one floating dtype): rows z, u, ρ (B, 2), grouped in G consecutive blocks of B/G rows
// for a stack of G models (G = 1 for one model); centroids transposed, cT (G, 2, N); the matrices Mᵢ transposed,
// MT (G, 4, N), row q = (j, k) holding (Mᵢ)_jk; J (B, 4, 2), J[b, (jk), l] = ∂(G⁻¹)_jk/∂z_l (times a step scale).
// The kernel exponent is −‖z − cᵢ‖² / T² written as a sum of squares, so it is never positive.
// Every entry point checks these layouts (``check``), so that a direct call with a non-contiguous, wrongly typed or
// wrongly shaped tensor is refused with one error naming it instead of reading the wrong memory.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct Groups {
  int64_t G, Bg, N;  // groups, rows per group, centroids per group
};

// One group's centroids and matrices (or their gradients), each entry a row of N: the coordinates c0, c1 of cᵢ and
// the entries m00, m01, m10, m11 of Mᵢ, from the transposed layouts cT (G, 2, N) and MT (G, 4, N). All null when the
// layouts are (gradients that are not needed).
template <typename P>
struct Table {
  P c0 = nullptr, c1 = nullptr, m00 = nullptr, m01 = nullptr, m10 = nullptr, m11 = nullptr;
  Table(P cT, P MT, int64_t g, int64_t N) {
    if (cT == nullptr) return;
    c0 = cT + g * 2 * N, c1 = c0 + N;
    m00 = MT + g * 4 * N, m01 = m00 + N, m10 = m01 + N, m11 = m10 + N;
  }
};

// ``t`` must be a contiguous CPU tensor of exactly ``sizes``, with the dtype of ``first`` (float32 or float64).
void check(const at::Tensor& t, const char* name, const at::Tensor& first, at::IntArrayRef sizes) {
  TORCH_CHECK(first.scalar_type() == at::kFloat || first.scalar_type() == at::kDouble,
              "the leapfrog kernels take float32 or float64 tensors, got ", first.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK(t.scalar_type() == first.scalar_type(), name, " must be ", first.scalar_type(),
              " like the first input, got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == sizes, name, " must have sizes ", sizes, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous (its strides are ", t.strides(), ")");
}

// The number of rows B of ``rows``, which must be (B, 2).
int64_t rows_of(const at::Tensor& rows, const char* name) {
  TORCH_CHECK(rows.dim() == 2 && rows.size(1) == 2, name, " must have sizes (B, 2), got ", rows.sizes());
  return rows.size(0);
}

// Checks the transposed centroids cT, (2, N) or (G, 2, N), and the transposed matrices MT, (4, N) or (G, 4, N).
void check_table(const at::Tensor& cT, const at::Tensor& MT, const at::Tensor& first) {
  TORCH_CHECK((cT.dim() == 2 || cT.dim() == 3) && cT.size(-2) == 2, "cT must have sizes (2, N) or (G, 2, N), got ",
              cT.sizes());
  check(cT, "cT", first, cT.sizes());
  std::vector<int64_t> sizes(cT.sizes().begin(), cT.sizes().end());
  sizes[sizes.size() - 2] = 4;
  check(MT, "MT", first, sizes);
}

Groups groups_of(const at::Tensor& rows, const at::Tensor& cT) {
  const int64_t G = cT.dim() == 3 ? cT.size(0) : 1;
  const int64_t N = cT.size(-1);
  TORCH_CHECK(rows.size(0) % G == 0, "rows must be a multiple of the number of groups");
  return {G, rows.size(0) / G, N};
}

// w[b, i] = −‖z_b − cᵢ‖² / T² for the rows of every group (exponentiated by the caller, vectorised by ATen).
template <typename T>
void exponents(const T* z, const T* cT, const Groups& s, T inv_t2, T* w) {
  for (int64_t g = 0; g < s.G; ++g) {
    const T* c0 = cT + g * 2 * s.N;
    const T* c1 = c0 + s.N;
    for (int64_t b = g * s.Bg; b < (g + 1) * s.Bg; ++b) {
      const T z0 = z[2 * b], z1 = z[2 * b + 1];
      T* wb = w + b * s.N;
#pragma omp simd
      for (int64_t i = 0; i < s.N; ++i) {
        const T d0 = z0 - c0[i], d1 = z1 - c1[i];
        wb[i] = -(d0 * d0 + d1 * d1) * inv_t2;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ PositionSolve
// z_{k+1} = z_half + G⁻¹(z_k) u, k = 0 … n − 1, G⁻¹(z) = Σᵢ wᵢ(z) Mᵢ + λI.
// Returns z_n, max |z_n − z_{n−1}|, and for the backward the iterates z_k (n, B, 2), the weights (n, B, N) and
// G⁻¹(z_k) (n, B, 4).
template <typename T>
void position_forward_impl(const at::Tensor& z_start, const at::Tensor& z_half, const at::Tensor& u,
                           const at::Tensor& cT, const at::Tensor& MT, T inv_t2, T lam, int64_t n, at::Tensor& states,
                           at::Tensor& weights, at::Tensor& G_invs, at::Tensor& z_out) {
  const Groups s = groups_of(z_start, cT);
  const int64_t B = z_start.size(0);
  const T* zh = z_half.data_ptr<T>();
  const T* uu = u.data_ptr<T>();
  const T* c = cT.data_ptr<T>();
  const T* m = MT.data_ptr<T>();
  T* st = states.data_ptr<T>();
  T* gi = G_invs.data_ptr<T>();
  std::copy(z_start.data_ptr<T>(), z_start.data_ptr<T>() + 2 * B, st);
  for (int64_t k = 0; k < n; ++k) {
    const T* z = st + k * 2 * B;
    T* z_next = k + 1 < n ? st + (k + 1) * 2 * B : z_out.data_ptr<T>();
    at::Tensor w_k = weights[k];
    T* w = w_k.data_ptr<T>();
    exponents(z, c, s, inv_t2, w);
    w_k.exp_();
    for (int64_t g = 0; g < s.G; ++g) {
      const Table<const T*> t(c, m, g, s.N);
      const T *m00 = t.m00, *m01 = t.m01, *m10 = t.m10, *m11 = t.m11;
      for (int64_t b = g * s.Bg; b < (g + 1) * s.Bg; ++b) {
        const T* wb = w + b * s.N;
        T a00 = 0, a01 = 0, a10 = 0, a11 = 0;
#pragma omp simd reduction(+ : a00, a01, a10, a11)
        for (int64_t i = 0; i < s.N; ++i) {
          a00 += wb[i] * m00[i];
          a01 += wb[i] * m01[i];
          a10 += wb[i] * m10[i];
          a11 += wb[i] * m11[i];
        }
        a00 += lam;
        a11 += lam;
        T* A = gi + (k * B + b) * 4;
        A[0] = a00, A[1] = a01, A[2] = a10, A[3] = a11;
        z_next[2 * b] = zh[2 * b] + a00 * uu[2 * b] + a01 * uu[2 * b + 1];
        z_next[2 * b + 1] = zh[2 * b + 1] + a10 * uu[2 * b] + a11 * uu[2 * b + 1];
      }
    }
  }
}

std::vector<at::Tensor> position_forward(const at::Tensor& z_start, const at::Tensor& z_half, const at::Tensor& u,
                                         const at::Tensor& cT, const at::Tensor& MT, double inv_t2, double lam,
                                         int64_t n) {
  TORCH_CHECK(n >= 1, "position_forward needs n >= 1");
  const int64_t B = rows_of(z_start, "z_start");
  check(z_start, "z_start", z_start, {B, 2});
  check(z_half, "z_half", z_start, {B, 2});
  check(u, "u", z_start, {B, 2});
  check_table(cT, MT, z_start);
  const int64_t N = cT.size(-1);
  at::Tensor states = at::empty({n, B, 2}, z_start.options());
  at::Tensor weights = at::empty({n, B, N}, z_start.options());
  at::Tensor G_invs = at::empty({n, B, 4}, z_start.options());
  at::Tensor z_out = at::empty({B, 2}, z_start.options());
  AT_DISPATCH_FLOATING_TYPES(z_start.scalar_type(), "position_forward", [&] {
    position_forward_impl<scalar_t>(z_start, z_half, u, cT, MT, static_cast<scalar_t>(inv_t2),
                                    static_cast<scalar_t>(lam), n, states, weights, G_invs, z_out);
  });
  at::Tensor residual = (z_out - states[n - 1]).abs().max();
  return {z_out, residual, states, weights, G_invs};
}

// The backward, for the cotangent ḡ of z_{k+1} (module docstring of autograd_nodes.py): Ū = ḡ uᵀ,
// w̄ᵢ = Σ_jk Ū_jk (Mᵢ)_jk, ēᵢ = w̄ᵢ wᵢ, and
//   z̄_half += ḡ,  ū += G⁻¹(z_k)ᵀ ḡ,  M̄ᵢ += Σ_b w_bi Ū_b,  z̄_k = s Σᵢ ēᵢ (cᵢ − z_k),  c̄ᵢ += s Σ_b ē_bi (z_b − cᵢ).
// M̄ and c̄ are accumulated transposed, MT_bar (G, 4, N) and cT_bar (G, 2, N), when ``metric_grads``.
// One row's sum over the centroids in the backward of a position step: (acc0, acc1) = Σᵢ ēᵢ (cᵢ − z), with
// ēᵢ = wᵢ ⟨U, Mᵢ⟩ and U = ḡ uᵀ; with MetricGrads, also the row's part of the gradients of the centroids (scaled by
// s_scale) and of the matrices. One template for both, so that the sums are written once.
template <bool MetricGrads, typename T>
inline void position_row_backward(const Table<const T*>& t, const Table<T*>& bar, const T* wb, int64_t N, T U00,
                                  T U01, T U10, T U11, T z0, T z1, T s_scale, T& acc0, T& acc1) {
  const T *c0 = t.c0, *c1 = t.c1, *m00 = t.m00, *m01 = t.m01, *m10 = t.m10, *m11 = t.m11;
  T *cb0 = bar.c0, *cb1 = bar.c1, *mb00 = bar.m00, *mb01 = bar.m01, *mb10 = bar.m10, *mb11 = bar.m11;
  T a0 = 0, a1 = 0;
#pragma omp simd reduction(+ : a0, a1)
  for (int64_t i = 0; i < N; ++i) {
    const T e_bar = (U00 * m00[i] + U01 * m01[i] + U10 * m10[i] + U11 * m11[i]) * wb[i];
    const T d0 = c0[i] - z0, d1 = c1[i] - z1;
    a0 += e_bar * d0;
    a1 += e_bar * d1;
    if constexpr (MetricGrads) {
      cb0[i] -= s_scale * e_bar * d0;
      cb1[i] -= s_scale * e_bar * d1;
      mb00[i] += wb[i] * U00;
      mb01[i] += wb[i] * U01;
      mb10[i] += wb[i] * U10;
      mb11[i] += wb[i] * U11;
    }
  }
  acc0 = a0, acc1 = a1;
}

template <typename T>
void position_backward_impl(const at::Tensor& z_bar_out, const at::Tensor& u, const at::Tensor& cT,
                            const at::Tensor& MT, const at::Tensor& states, const at::Tensor& weights,
                            const at::Tensor& G_invs, T s_scale, bool metric_grads, at::Tensor& z_bar,
                            at::Tensor& z_half_bar, at::Tensor& u_bar, at::Tensor& cT_bar, at::Tensor& MT_bar) {
  const Groups s = groups_of(u, cT);
  const int64_t B = u.size(0), n = states.size(0);
  const T* uu = u.data_ptr<T>();
  const T* c = cT.data_ptr<T>();
  const T* m = MT.data_ptr<T>();
  const T* st = states.data_ptr<T>();
  const T* wt = weights.data_ptr<T>();
  const T* gi = G_invs.data_ptr<T>();
  T* gbar = z_bar.data_ptr<T>();  // ḡ, updated in place to z̄_k at each iteration
  T* zhb = z_half_bar.data_ptr<T>();
  T* ub = u_bar.data_ptr<T>();
  T* cb = metric_grads ? cT_bar.data_ptr<T>() : nullptr;
  T* mb = metric_grads ? MT_bar.data_ptr<T>() : nullptr;
  std::copy(z_bar_out.data_ptr<T>(), z_bar_out.data_ptr<T>() + 2 * B, gbar);
  for (int64_t k = n - 1; k >= 0; --k) {
    const T* z = st + k * 2 * B;
    const T* w = wt + k * B * s.N;
    for (int64_t g = 0; g < s.G; ++g) {
      const Table<const T*> t(c, m, g, s.N);
      const Table<T*> bar(cb, mb, g, s.N);
      for (int64_t b = g * s.Bg; b < (g + 1) * s.Bg; ++b) {
        const T g0 = gbar[2 * b], g1 = gbar[2 * b + 1];
        const T u0 = uu[2 * b], u1 = uu[2 * b + 1];
        const T* A = gi + (k * B + b) * 4;
        zhb[2 * b] += g0;
        zhb[2 * b + 1] += g1;
        ub[2 * b] += A[0] * g0 + A[2] * g1;
        ub[2 * b + 1] += A[1] * g0 + A[3] * g1;
        const T U00 = g0 * u0, U01 = g0 * u1, U10 = g1 * u0, U11 = g1 * u1;
        const T z0 = z[2 * b], z1 = z[2 * b + 1];
        const T* wb = w + b * s.N;
        T acc0, acc1;
        if (metric_grads) {
          position_row_backward<true>(t, bar, wb, s.N, U00, U01, U10, U11, z0, z1, s_scale, acc0, acc1);
        } else {
          position_row_backward<false>(t, bar, wb, s.N, U00, U01, U10, U11, z0, z1, s_scale, acc0, acc1);
        }
        // z̄_k replaces ḡ only after every row of this iteration has used ḡ: rows are independent, so in place is safe
        gbar[2 * b] = s_scale * acc0;
        gbar[2 * b + 1] = s_scale * acc1;
      }
    }
  }
}

std::vector<at::Tensor> position_backward(const at::Tensor& z_bar_out, const at::Tensor& u, const at::Tensor& cT,
                                          const at::Tensor& MT, const at::Tensor& states, const at::Tensor& weights,
                                          const at::Tensor& G_invs, double s_scale, bool metric_grads) {
  const int64_t B = rows_of(z_bar_out, "z_bar_out");
  check(z_bar_out, "z_bar_out", z_bar_out, {B, 2});
  check(u, "u", z_bar_out, {B, 2});
  check_table(cT, MT, z_bar_out);
  const int64_t n = states.dim() == 3 ? states.size(0) : 0, N = cT.size(-1);
  TORCH_CHECK(n >= 1, "states must have sizes (n, B, 2) with n >= 1, got ", states.sizes());
  check(states, "states", z_bar_out, {n, B, 2});
  check(weights, "weights", z_bar_out, {n, B, N});
  check(G_invs, "G_invs", z_bar_out, {n, B, 4});
  at::Tensor z_bar = at::empty_like(u);
  at::Tensor z_half_bar = at::zeros_like(u);
  at::Tensor u_bar = at::zeros_like(u);
  at::Tensor cT_bar = metric_grads ? at::zeros_like(cT) : at::Tensor();
  at::Tensor MT_bar = metric_grads ? at::zeros_like(MT) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "position_backward", [&] {
    position_backward_impl<scalar_t>(z_bar_out, u, cT, MT, states, weights, G_invs, static_cast<scalar_t>(s_scale),
                                     metric_grads, z_bar, z_half_bar, u_bar, cT_bar, MT_bar);
  });
  return {z_bar, z_half_bar, u_bar, cT_bar, MT_bar};
}

// ------------------------------------------------------------------------------------------------ MomentumSolve
// ρ_{k+1} = base − Q(ρ_k), Q(ρ)_l = Σ_jk ρ_j ρ_k J_(jk)l, k = 0 … n, from ρ₀ = rho. Returns ρ_{n+1},
// max |ρ_{n+1} − ρ_n| (0 for n = 0) and the iterates ρ_0 … ρ_n (n + 1, B, 2) for the backward.
template <typename T>
void momentum_forward_impl(const at::Tensor& rho, const at::Tensor& base, const at::Tensor& J, int64_t n,
                           at::Tensor& states, at::Tensor& out, T& residual) {
  const int64_t B = rho.size(0);
  const T* r = rho.data_ptr<T>();
  const T* bs = base.data_ptr<T>();
  const T* Jp = J.data_ptr<T>();
  T* st = states.data_ptr<T>();
  T* o = out.data_ptr<T>();
  T res = 0;
  for (int64_t b = 0; b < B; ++b) {
    const T* Jb = Jp + 8 * b;
    T p0 = r[2 * b], p1 = r[2 * b + 1], q0 = p0, q1 = p1;
    for (int64_t k = 0; k <= n; ++k) {
      st[(k * B + b) * 2] = p0;
      st[(k * B + b) * 2 + 1] = p1;
      const T o00 = p0 * p0, o01 = p0 * p1, o11 = p1 * p1;
      q0 = bs[2 * b] - (o00 * Jb[0] + o01 * (Jb[2] + Jb[4]) + o11 * Jb[6]);
      q1 = bs[2 * b + 1] - (o00 * Jb[1] + o01 * (Jb[3] + Jb[5]) + o11 * Jb[7]);
      if (k < n) {
        p0 = q0;
        p1 = q1;
      }
    }
    o[2 * b] = q0;
    o[2 * b + 1] = q1;
    if (n > 0) {
      const T d = std::max(std::abs(q0 - p0), std::abs(q1 - p1));
      res = (d > res || std::isnan(d)) ? d : res;
    }
  }
  residual = res;
}

std::vector<at::Tensor> momentum_forward(const at::Tensor& rho, const at::Tensor& base, const at::Tensor& J,
                                         int64_t n) {
  TORCH_CHECK(n >= 0, "momentum_forward needs n >= 0");
  const int64_t B = rows_of(rho, "rho");
  check(rho, "rho", rho, {B, 2});
  check(base, "base", rho, {B, 2});
  check(J, "J", rho, {B, 4, 2});
  at::Tensor states = at::empty({n + 1, B, 2}, rho.options());
  at::Tensor out = at::empty({B, 2}, rho.options());
  at::Tensor residual;
  AT_DISPATCH_FLOATING_TYPES(rho.scalar_type(), "momentum_forward", [&] {
    scalar_t res = 0;
    momentum_forward_impl<scalar_t>(rho, base, J, n, states, out, res);
    residual = at::scalar_tensor(res, rho.options());
  });
  return {out, residual, states};
}

// The backward for the cotangent ḡ of ρ_{k+1}: bāse += ḡ, J̄_(jk)l −= ρ_j ρ_k ḡ_l, ρ̄_k = −(K + Kᵀ) ρ_k with
// K_jk = Σ_l J_(jk)l ḡ_l.
template <typename T>
void momentum_backward_impl(const at::Tensor& rho_bar_out, const at::Tensor& J, const at::Tensor& states,
                            at::Tensor& rho_bar, at::Tensor& base_bar, at::Tensor& J_bar) {
  const int64_t B = rho_bar_out.size(0), iterations = states.size(0);
  const T* rbo = rho_bar_out.data_ptr<T>();
  const T* Jp = J.data_ptr<T>();
  const T* st = states.data_ptr<T>();
  T* rb = rho_bar.data_ptr<T>();
  T* bb = base_bar.data_ptr<T>();
  T* jb = J_bar.data_ptr<T>();
  for (int64_t b = 0; b < B; ++b) {
    const T* Jb = Jp + 8 * b;
    T* Jbar = jb + 8 * b;
    // S_(jk)l = J_(jk)l + J_(kj)l: the symmetric part that K + Kᵀ contracts
    const T S00_0 = 2 * Jb[0], S00_1 = 2 * Jb[1];
    const T S01_0 = Jb[2] + Jb[4], S01_1 = Jb[3] + Jb[5];
    const T S11_0 = 2 * Jb[6], S11_1 = 2 * Jb[7];
    T g0 = rbo[2 * b], g1 = rbo[2 * b + 1];
    T base0 = 0, base1 = 0;
    T jbar[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t k = iterations - 1; k >= 0; --k) {
      const T p0 = st[(k * B + b) * 2], p1 = st[(k * B + b) * 2 + 1];
      base0 += g0;
      base1 += g1;
      const T o00 = p0 * p0, o01 = p0 * p1, o11 = p1 * p1;
      jbar[0] -= o00 * g0, jbar[1] -= o00 * g1;
      jbar[2] -= o01 * g0, jbar[3] -= o01 * g1;
      jbar[4] -= o01 * g0, jbar[5] -= o01 * g1;
      jbar[6] -= o11 * g0, jbar[7] -= o11 * g1;
      // (K + Kᵀ)_jk = Σ_l S_(jk)l ḡ_l
      const T K00 = S00_0 * g0 + S00_1 * g1;
      const T K01 = S01_0 * g0 + S01_1 * g1;
      const T K11 = S11_0 * g0 + S11_1 * g1;
      g0 = -(K00 * p0 + K01 * p1);
      g1 = -(K01 * p0 + K11 * p1);
    }
    rb[2 * b] = g0;
    rb[2 * b + 1] = g1;
    bb[2 * b] = base0;
    bb[2 * b + 1] = base1;
    std::copy(jbar, jbar + 8, Jbar);
  }
}

std::vector<at::Tensor> momentum_backward(const at::Tensor& rho_bar_out, const at::Tensor& J,
                                          const at::Tensor& states) {
  const int64_t B = rows_of(rho_bar_out, "rho_bar_out");
  check(rho_bar_out, "rho_bar_out", rho_bar_out, {B, 2});
  check(J, "J", rho_bar_out, {B, 4, 2});
  const int64_t iterations = states.dim() == 3 ? states.size(0) : 0;
  TORCH_CHECK(iterations >= 1, "states must have sizes (n + 1, B, 2), got ", states.sizes());
  check(states, "states", rho_bar_out, {iterations, B, 2});
  at::Tensor rho_bar = at::empty_like(rho_bar_out);
  at::Tensor base_bar = at::empty_like(rho_bar_out);
  at::Tensor J_bar = at::empty_like(J);
  AT_DISPATCH_FLOATING_TYPES(J.scalar_type(), "momentum_backward", [&] {
    momentum_backward_impl<scalar_t>(rho_bar_out, J, states, rho_bar, base_bar, J_bar);
  });
  return {rho_bar, base_bar, J_bar};
}

// ---------------------------------------------------------------------------------------------- MetricEvaluation
// The metric at z: G⁻¹ = S + λI with S = Σᵢ wᵢ vec(Mᵢ), G = (G⁻¹)⁻¹ from the symmetric part of G⁻¹ (closed form),
// l = log det G⁻¹ and J_(jk)l = ∂(G⁻¹)_jk/∂z_l = s Σᵢ wᵢ (Mᵢ)_jk (cᵢ − z)_l, s = 2/T². Returns G⁻¹ (B, 2, 2),
// G (B, 2, 2), l (B,), J (B, 4, 2), the weights (B, N) and S (B, 4) for the backward.
template <typename T>
void metric_forward_impl(const at::Tensor& z_t, const at::Tensor& cT, const at::Tensor& MT, T inv_t2, T lam,
                         at::Tensor& weights, at::Tensor& G_inv, at::Tensor& G, at::Tensor& log_det, at::Tensor& J,
                         at::Tensor& S) {
  const Groups s = groups_of(z_t, cT);
  const T s_scale = 2 * inv_t2;
  const T* z = z_t.data_ptr<T>();
  const T* c = cT.data_ptr<T>();
  const T* m = MT.data_ptr<T>();
  T* w = weights.data_ptr<T>();
  exponents(z, c, s, inv_t2, w);
  weights.exp_();
  T* gi = G_inv.data_ptr<T>();
  T* gg = G.data_ptr<T>();
  T* ld = log_det.data_ptr<T>();
  T* jj = J.data_ptr<T>();
  T* ss = S.data_ptr<T>();
  for (int64_t g = 0; g < s.G; ++g) {
    const Table<const T*> t(c, m, g, s.N);
    const T *c0 = t.c0, *c1 = t.c1, *m00 = t.m00, *m01 = t.m01, *m10 = t.m10, *m11 = t.m11;
    for (int64_t b = g * s.Bg; b < (g + 1) * s.Bg; ++b) {
      const T* wb = w + b * s.N;
      // S_q = Σᵢ wᵢ (Mᵢ)_q and P_ql = Σᵢ wᵢ (Mᵢ)_q cᵢ_l
      T S0 = 0, S1 = 0, S2 = 0, S3 = 0, P00 = 0, P01 = 0, P10 = 0, P11 = 0, P20 = 0, P21 = 0, P30 = 0, P31 = 0;
#pragma omp simd reduction(+ : S0, S1, S2, S3, P00, P01, P10, P11, P20, P21, P30, P31)
      for (int64_t i = 0; i < s.N; ++i) {
        const T a0 = wb[i] * m00[i], a1 = wb[i] * m01[i], a2 = wb[i] * m10[i], a3 = wb[i] * m11[i];
        S0 += a0, S1 += a1, S2 += a2, S3 += a3;
        P00 += a0 * c0[i], P01 += a0 * c1[i], P10 += a1 * c0[i], P11 += a1 * c1[i];
        P20 += a2 * c0[i], P21 += a2 * c1[i], P30 += a3 * c0[i], P31 += a3 * c1[i];
      }
      const T z0 = z[2 * b], z1 = z[2 * b + 1];
      T* Sb = ss + 4 * b;
      Sb[0] = S0, Sb[1] = S1, Sb[2] = S2, Sb[3] = S3;
      T* A = gi + 4 * b;
      A[0] = S0 + lam, A[1] = S1, A[2] = S2, A[3] = S3 + lam;
      const T a = A[0], off = T(0.5) * (A[1] + A[2]), d = A[3];
      const T det = a * d - off * off;
      T* Gb = gg + 4 * b;
      Gb[0] = d / det, Gb[1] = -off / det, Gb[2] = -off / det, Gb[3] = a / det;
      ld[b] = std::log(det);
      T* Jb = jj + 8 * b;
      Jb[0] = s_scale * (P00 - S0 * z0), Jb[1] = s_scale * (P01 - S0 * z1);
      Jb[2] = s_scale * (P10 - S1 * z0), Jb[3] = s_scale * (P11 - S1 * z1);
      Jb[4] = s_scale * (P20 - S2 * z0), Jb[5] = s_scale * (P21 - S2 * z1);
      Jb[6] = s_scale * (P30 - S3 * z0), Jb[7] = s_scale * (P31 - S3 * z1);
    }
  }
}

std::vector<at::Tensor> metric_forward(const at::Tensor& z, const at::Tensor& cT, const at::Tensor& MT,
                                       double inv_t2, double lam) {
  const int64_t B = rows_of(z, "z");
  check(z, "z", z, {B, 2});
  check_table(cT, MT, z);
  const int64_t N = cT.size(-1);
  at::Tensor weights = at::empty({B, N}, z.options());
  at::Tensor G_inv = at::empty({B, 2, 2}, z.options());
  at::Tensor G = at::empty({B, 2, 2}, z.options());
  at::Tensor log_det = at::empty({B}, z.options());
  at::Tensor J = at::empty({B, 4, 2}, z.options());
  at::Tensor S = at::empty({B, 4}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "metric_forward", [&] {
    metric_forward_impl<scalar_t>(z, cT, MT, static_cast<scalar_t>(inv_t2), static_cast<scalar_t>(lam), weights,
                                  G_inv, G, log_det, J, S);
  });
  return {G_inv, G, log_det, J, weights, S};
}

// The backward for cotangents (Ā, Ḡ, l̄, J̄) of (G⁻¹, G, l, J) (module docstring of autograd_nodes.py):
//   S̄ = vec(Ā − sym(G Ḡ G) + l̄ G) − s J̄ z,   ēᵢ = wᵢ Σ_q (Mᵢ)_q (S̄_q + s Σ_l J̄_ql cᵢ_l),
//   z̄ = −s Σ_q S_q J̄_q + s Σᵢ ēᵢ (cᵢ − z),
//   M̄ᵢ_q = Σ_b w_bi (S̄_bq + s Σ_l J̄_bql cᵢ_l),   c̄ᵢ_l = s Σ_b [w_bi Σ_q (Mᵢ)_q J̄_bql + ē_bi (z_bl − cᵢ_l)]
// (G is symmetric here: it is computed from the symmetric part of G⁻¹).
// One row's sum over the centroids in the backward of the metric evaluation: (acc0, acc1) = Σᵢ ēᵢ (cᵢ − z), with
// ēᵢ = wᵢ ⟨Mᵢ, q⟩ and q = S + (s J̄) cᵢ (``sJ`` row-major (4, 2)); with MetricGrads, also the row's part of the
// gradients of the matrices and the centroids. One template for both, so that the sums are written once.
template <bool MetricGrads, typename T>
inline void metric_row_backward(const Table<const T*>& t, const Table<T*>& bar, const T* wb, int64_t N, T S0, T S1,
                                T S2, T S3, const T* sJ, T z0, T z1, T s_scale, T& acc0, T& acc1) {
  const T *c0 = t.c0, *c1 = t.c1, *m00 = t.m00, *m01 = t.m01, *m10 = t.m10, *m11 = t.m11;
  T *cb0 = bar.c0, *cb1 = bar.c1, *mb00 = bar.m00, *mb01 = bar.m01, *mb10 = bar.m10, *mb11 = bar.m11;
  const T sJ00 = sJ[0], sJ01 = sJ[1], sJ10 = sJ[2], sJ11 = sJ[3], sJ20 = sJ[4], sJ21 = sJ[5], sJ30 = sJ[6],
          sJ31 = sJ[7];
  T a0 = 0, a1 = 0;
#pragma omp simd reduction(+ : a0, a1)
  for (int64_t i = 0; i < N; ++i) {
    const T q0 = S0 + sJ00 * c0[i] + sJ01 * c1[i], q1 = S1 + sJ10 * c0[i] + sJ11 * c1[i];
    const T q2 = S2 + sJ20 * c0[i] + sJ21 * c1[i], q3 = S3 + sJ30 * c0[i] + sJ31 * c1[i];
    const T e_bar = wb[i] * (m00[i] * q0 + m01[i] * q1 + m10[i] * q2 + m11[i] * q3);
    const T d0 = c0[i] - z0, d1 = c1[i] - z1;
    a0 += e_bar * d0;
    a1 += e_bar * d1;
    if constexpr (MetricGrads) {
      mb00[i] += wb[i] * q0, mb01[i] += wb[i] * q1, mb10[i] += wb[i] * q2, mb11[i] += wb[i] * q3;
      cb0[i] += wb[i] * (m00[i] * sJ00 + m01[i] * sJ10 + m10[i] * sJ20 + m11[i] * sJ30) - s_scale * e_bar * d0;
      cb1[i] += wb[i] * (m00[i] * sJ01 + m01[i] * sJ11 + m10[i] * sJ21 + m11[i] * sJ31) - s_scale * e_bar * d1;
    }
  }
  acc0 = a0, acc1 = a1;
}

template <typename T>
void metric_backward_impl(const at::Tensor& A_bar_t, const at::Tensor& G_bar_t, const at::Tensor& l_bar_t,
                          const at::Tensor& J_bar_t, const at::Tensor& z_t, const at::Tensor& cT,
                          const at::Tensor& MT, const at::Tensor& weights, const at::Tensor& G_t,
                          const at::Tensor& S_t, T s_scale, bool metric_grads, at::Tensor& z_bar_t,
                          at::Tensor& cT_bar, at::Tensor& MT_bar) {
  const Groups s = groups_of(z_t, cT);
  const T* Ab = A_bar_t.data_ptr<T>();
  const T* Gbar = G_bar_t.data_ptr<T>();
  const T* lb = l_bar_t.data_ptr<T>();
  const T* Jbar = J_bar_t.data_ptr<T>();
  const T* z = z_t.data_ptr<T>();
  const T* c = cT.data_ptr<T>();
  const T* m = MT.data_ptr<T>();
  const T* w = weights.data_ptr<T>();
  const T* Gp = G_t.data_ptr<T>();
  const T* Sp = S_t.data_ptr<T>();
  T* zb = z_bar_t.data_ptr<T>();
  T* cb = metric_grads ? cT_bar.data_ptr<T>() : nullptr;
  T* mb = metric_grads ? MT_bar.data_ptr<T>() : nullptr;
  for (int64_t g = 0; g < s.G; ++g) {
    const Table<const T*> t(c, m, g, s.N);
    const Table<T*> bar(cb, mb, g, s.N);
    for (int64_t b = g * s.Bg; b < (g + 1) * s.Bg; ++b) {
      const T* Gb = Gp + 4 * b;
      const T* Gr = Gbar + 4 * b;
      // P = G Ḡ G, then sym(P)
      const T H00 = Gr[0] * Gb[0] + Gr[1] * Gb[2], H01 = Gr[0] * Gb[1] + Gr[1] * Gb[3];
      const T H10 = Gr[2] * Gb[0] + Gr[3] * Gb[2], H11 = Gr[2] * Gb[1] + Gr[3] * Gb[3];
      const T P00 = Gb[0] * H00 + Gb[1] * H10, P01 = Gb[0] * H01 + Gb[1] * H11;
      const T P10 = Gb[2] * H00 + Gb[3] * H10, P11 = Gb[2] * H01 + Gb[3] * H11;
      const T sym01 = T(0.5) * (P01 + P10);
      const T* Ar = Ab + 4 * b;
      const T* Jr = Jbar + 8 * b;
      const T z0 = z[2 * b], z1 = z[2 * b + 1];
      const T S0 = Ar[0] - P00 + lb[b] * Gb[0] - s_scale * (Jr[0] * z0 + Jr[1] * z1);
      const T S1 = Ar[1] - sym01 + lb[b] * Gb[2] - s_scale * (Jr[2] * z0 + Jr[3] * z1);
      const T S2 = Ar[2] - sym01 + lb[b] * Gb[1] - s_scale * (Jr[4] * z0 + Jr[5] * z1);
      const T S3 = Ar[3] - P11 + lb[b] * Gb[3] - s_scale * (Jr[6] * z0 + Jr[7] * z1);
      const T* Sb = Sp + 4 * b;
      T zbar0 = -s_scale * (Sb[0] * Jr[0] + Sb[1] * Jr[2] + Sb[2] * Jr[4] + Sb[3] * Jr[6]);
      T zbar1 = -s_scale * (Sb[0] * Jr[1] + Sb[1] * Jr[3] + Sb[2] * Jr[5] + Sb[3] * Jr[7]);
      const T sJ00 = s_scale * Jr[0], sJ01 = s_scale * Jr[1], sJ10 = s_scale * Jr[2], sJ11 = s_scale * Jr[3];
      const T sJ20 = s_scale * Jr[4], sJ21 = s_scale * Jr[5], sJ30 = s_scale * Jr[6], sJ31 = s_scale * Jr[7];
      const T* wb = w + b * s.N;
      const T sJ[8] = {sJ00, sJ01, sJ10, sJ11, sJ20, sJ21, sJ30, sJ31};
      T acc0, acc1;
      if (metric_grads) {
        metric_row_backward<true>(t, bar, wb, s.N, S0, S1, S2, S3, sJ, z0, z1, s_scale, acc0, acc1);
      } else {
        metric_row_backward<false>(t, bar, wb, s.N, S0, S1, S2, S3, sJ, z0, z1, s_scale, acc0, acc1);
      }
      zb[2 * b] = zbar0 + s_scale * acc0;
      zb[2 * b + 1] = zbar1 + s_scale * acc1;
    }
  }
}

std::vector<at::Tensor> metric_backward(const at::Tensor& A_bar, const at::Tensor& G_bar, const at::Tensor& l_bar,
                                        const at::Tensor& J_bar, const at::Tensor& z, const at::Tensor& cT,
                                        const at::Tensor& MT, const at::Tensor& weights, const at::Tensor& G,
                                        const at::Tensor& S, double s_scale, bool metric_grads) {
  const int64_t B = rows_of(z, "z");
  check(A_bar, "A_bar", z, {B, 2, 2});
  check(G_bar, "G_bar", z, {B, 2, 2});
  check(l_bar, "l_bar", z, {B});
  check(J_bar, "J_bar", z, {B, 4, 2});
  check(z, "z", z, {B, 2});
  check_table(cT, MT, z);
  check(weights, "weights", z, {B, cT.size(-1)});
  check(G, "G", z, {B, 2, 2});
  check(S, "S", z, {B, 4});
  at::Tensor z_bar = at::empty_like(z);
  at::Tensor cT_bar = metric_grads ? at::zeros_like(cT) : at::Tensor();
  at::Tensor MT_bar = metric_grads ? at::zeros_like(MT) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "metric_backward", [&] {
    metric_backward_impl<scalar_t>(A_bar, G_bar, l_bar, J_bar, z, cT, MT, weights, G, S,
                                   static_cast<scalar_t>(s_scale), metric_grads, z_bar, cT_bar, MT_bar);
  });
  return {z_bar, cT_bar, MT_bar};
}

// ------------------------------------------------------------------------------------------------- MomentumKick
// The explicit momentum updates of the leapfrog, out = base − h f with the force
//   f_l = ∇U_l + ½ (Σ_jk ρ_j ρ_k J_(jk)l − Σ_jk G_jk J_(jk)l)      (the ρ term only when ``with_rho``),
// per row, h (B,) the half step. G (B, 4) is vec(G), J (B, 4, 2) = ∂vec(G⁻¹)/∂z.
template <typename T>
inline void kick_force(const T* gU, const T* r, const T* Jb, const T* Gb, bool with_rho, T& f0, T& f1) {
  f0 = gU[0] - T(0.5) * (Gb[0] * Jb[0] + Gb[1] * Jb[2] + Gb[2] * Jb[4] + Gb[3] * Jb[6]);
  f1 = gU[1] - T(0.5) * (Gb[0] * Jb[1] + Gb[1] * Jb[3] + Gb[2] * Jb[5] + Gb[3] * Jb[7]);
  if (with_rho) {
    const T o00 = r[0] * r[0], o01 = r[0] * r[1], o11 = r[1] * r[1];
    f0 += T(0.5) * (o00 * Jb[0] + o01 * (Jb[2] + Jb[4]) + o11 * Jb[6]);
    f1 += T(0.5) * (o00 * Jb[1] + o01 * (Jb[3] + Jb[5]) + o11 * Jb[7]);
  }
}

at::Tensor kick_forward(const at::Tensor& base, const at::Tensor& half, const at::Tensor& grad_U,
                        const at::Tensor& rho, const at::Tensor& J, const at::Tensor& G, bool with_rho) {
  const int64_t B = rows_of(base, "base");
  check(base, "base", base, {B, 2});
  check(half, "half", base, {B, 1});
  check(grad_U, "grad_U", base, {B, 2});
  if (with_rho) check(rho, "rho", base, {B, 2});
  check(J, "J", base, {B, 4, 2});
  check(G, "G", base, {B, 2, 2});
  at::Tensor out = at::empty_like(base);
  AT_DISPATCH_FLOATING_TYPES(base.scalar_type(), "kick_forward", [&] {
    using T = scalar_t;
    const T *bs = base.data_ptr<T>(), *h = half.data_ptr<T>(), *gU = grad_U.data_ptr<T>();
    const T* r = with_rho ? rho.data_ptr<T>() : nullptr;
    const T *Jp = J.data_ptr<T>(), *Gp = G.data_ptr<T>();
    T* o = out.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b) {
      T f0, f1;
      kick_force(gU + 2 * b, with_rho ? r + 2 * b : nullptr, Jp + 8 * b, Gp + 4 * b, with_rho, f0, f1);
      o[2 * b] = bs[2 * b] - h[b] * f0;
      o[2 * b + 1] = bs[2 * b + 1] - h[b] * f1;
    }
  });
  return out;
}

// The backward for the cotangent ḡ of out, with K_jk = Σ_l J_(jk)l ḡ_l:
//   bāse = ḡ,  h̄ = −ḡ · f,  ∇̄U = −h ḡ,  ρ̄ = −(h/2)(K + Kᵀ) ρ,  J̄_(jk)l = −(h/2)(ρ_j ρ_k − G_jk) ḡ_l,  Ḡ = (h/2) K.
std::vector<at::Tensor> kick_backward(const at::Tensor& out_bar, const at::Tensor& half, const at::Tensor& grad_U,
                                      const at::Tensor& rho, const at::Tensor& J, const at::Tensor& G,
                                      bool with_rho) {
  const int64_t B = rows_of(out_bar, "out_bar");
  check(out_bar, "out_bar", out_bar, {B, 2});
  check(half, "half", out_bar, {B, 1});
  check(grad_U, "grad_U", out_bar, {B, 2});
  if (with_rho) check(rho, "rho", out_bar, {B, 2});
  check(J, "J", out_bar, {B, 4, 2});
  check(G, "G", out_bar, {B, 2, 2});
  at::Tensor half_bar = at::empty_like(half);
  at::Tensor grad_U_bar = at::empty_like(out_bar);
  at::Tensor rho_bar = with_rho ? at::empty_like(out_bar) : at::Tensor();
  at::Tensor J_bar = at::empty_like(J);
  at::Tensor G_bar = at::empty_like(G);
  AT_DISPATCH_FLOATING_TYPES(out_bar.scalar_type(), "kick_backward", [&] {
    using T = scalar_t;
    const T *gb = out_bar.data_ptr<T>(), *h = half.data_ptr<T>(), *gU = grad_U.data_ptr<T>();
    const T* r = with_rho ? rho.data_ptr<T>() : nullptr;
    const T *Jp = J.data_ptr<T>(), *Gp = G.data_ptr<T>();
    T *hb = half_bar.data_ptr<T>(), *gUb = grad_U_bar.data_ptr<T>(), *rb = with_rho ? rho_bar.data_ptr<T>() : nullptr;
    T *Jb_out = J_bar.data_ptr<T>(), *Gb_out = G_bar.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b) {
      const T* Jb = Jp + 8 * b;
      const T* Gb = Gp + 4 * b;
      const T g0 = gb[2 * b], g1 = gb[2 * b + 1], hh = h[b], h2 = T(0.5) * hh;
      T f0, f1;
      kick_force(gU + 2 * b, with_rho ? r + 2 * b : nullptr, Jb, Gb, with_rho, f0, f1);
      hb[b] = -(g0 * f0 + g1 * f1);
      gUb[2 * b] = -hh * g0;
      gUb[2 * b + 1] = -hh * g1;
      const T K00 = Jb[0] * g0 + Jb[1] * g1, K01 = Jb[2] * g0 + Jb[3] * g1;
      const T K10 = Jb[4] * g0 + Jb[5] * g1, K11 = Jb[6] * g0 + Jb[7] * g1;
      T* Gbar = Gb_out + 4 * b;
      Gbar[0] = h2 * K00, Gbar[1] = h2 * K01, Gbar[2] = h2 * K10, Gbar[3] = h2 * K11;
      T o00 = 0, o01 = 0, o11 = 0;
      if (with_rho) {
        const T p0 = r[2 * b], p1 = r[2 * b + 1];
        o00 = p0 * p0, o01 = p0 * p1, o11 = p1 * p1;
        rb[2 * b] = -h2 * (2 * K00 * p0 + (K01 + K10) * p1);
        rb[2 * b + 1] = -h2 * ((K01 + K10) * p0 + 2 * K11 * p1);
      }
      const T c00 = -h2 * (o00 - Gb[0]), c01 = -h2 * (o01 - Gb[1]), c10 = -h2 * (o01 - Gb[2]),
              c11 = -h2 * (o11 - Gb[3]);
      T* Jbar = Jb_out + 8 * b;
      Jbar[0] = c00 * g0, Jbar[1] = c00 * g1, Jbar[2] = c01 * g0, Jbar[3] = c01 * g1;
      Jbar[4] = c10 * g0, Jbar[5] = c10 * g1, Jbar[6] = c11 * g0, Jbar[7] = c11 * g1;
    }
  });
  return {out_bar, half_bar, grad_U_bar, rho_bar, J_bar, G_bar};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("position_forward", &position_forward, "PositionSolve forward, d = 2");
  m.def("position_backward", &position_backward, "PositionSolve backward, d = 2");
  m.def("momentum_forward", &momentum_forward, "MomentumSolve forward, d = 2");
  m.def("momentum_backward", &momentum_backward, "MomentumSolve backward, d = 2");
  m.def("metric_forward", &metric_forward, "MetricEvaluation forward, d = 2");
  m.def("metric_backward", &metric_backward, "MetricEvaluation backward, d = 2");
  m.def("kick_forward", &kick_forward, "MomentumKick forward, d = 2");
  m.def("kick_backward", &kick_backward, "MomentumKick backward, d = 2");
}
