"""Speed of rhvae against pythae 0.1.2, in the same process, on real MNIST digits.

Usage: python benchmarks/speed.py [--threads 2] [--repeats 5] [--quick] [--no-memory] [--latent-dim 2]

The training section also prints each epoch beside its **dense-product floor**: the matrix products of at least
1 MFLOP that the epoch itself dispatches (recorded by a ``TorchDispatchMode`` during one epoch, forward and backward),
replayed alone on tensors of the same shapes, strides and dtype, in the same process and with the same threads. The
ratio epoch / floor is what the epoch spends beyond its unavoidable dense arithmetic (the small 2 × 2 metric calls,
the elementwise kernels and the per-call overhead).

Both sides run the same 784–400–2 MLPs (pythae's RHVAE is built with custom encoder, decoder and metric networks
of that architecture and starts from a copy of our weights), the same data, the same hyper-parameters and the
same thread count. Timings alternate ours / pythae and report the median of ``--repeats`` runs. Peak memory is
the resident-set peak (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of a fresh subprocess per workload, minus
that process's peak after imports and data loading (so it is the workload's own peak increase).

``--latent-dim D`` (2 to 16, default 2) runs every section at latent dimension D with the same networks on both
sides: 784–400–D encoder and decoder, and the metric network 784–400 → D diagonal + D(D − 1)/2 lower entries (in
``torch.tril_indices`` order, as ours and pythae's own metric network fill L). Ours then runs the pure-PyTorch
autograd nodes (the compiled kernels are d = 2 only). At d > 2 the sampler is timed at 120 centroids only: our
6,400-centroid figure at d = 2 is the grid target, which is 2-D only, and pythae's sampler at 6,400 centroids holds
(100, 6,400, d, d) tensors in its graph (several GB at d = 16). The dense floor's threshold is unchanged, so at
d > 2 the metric's own contractions of at least 1 MFLOP count in it too.

Without pythae (``pip install -e .[test]`` or ``pip install pythae==0.1.2``) only our side is timed.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import rhvae
from rhvae.evaluation.likelihood import log_likelihood
from rhvae.sampling.hmc import riemannian_hmc
from rhvae.training import adam

try:  # optional: the reference implementation we compare with
    import pythae  # noqa: F401
    from pythae.models import RHVAE as PythaeRHVAE
    from pythae.models import RHVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder, BaseMetric
    from pythae.samplers import RHVAESampler, RHVAESamplerConfig

    HAVE_PYTHAE = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_PYTHAE = False

GRADIENTS = (
    "Gradients. ours: the exact gradient of our objective (true ELBO of the tempered flow): the closed-form force "
    "is differentiated to first order through every leapfrog step and every fixed-point iteration. "
    "pythae 0.1.2: each force is torch.autograd.grad of the Hamiltonian; only the last force of each leapfrog step "
    "(step 3, create_graph=True) is differentiated to second order, the step-1 and step-2 fixed-point forces are "
    "treated as constants, and its step 2 evaluates G^-1 at z only (explicit Euler)."
)

N_LF, EPS_LF, BETA_ZERO, TEMPERATURE, REGULARIZATION = 10, 0.01, 0.3, 1.0, 0.1
PYTHAE_FIXED_POINT = 3  # pythae's leapfrog runs 3 fixed-point iterations (steps=3)
STACKED = 3  # models trained side by side in the stacked workload (the three seeds of an experiment)
MIN_LATENT_DIM, MAX_LATENT_DIM = 2, 16  # --latent-dim: both sides' networks at this d (2: the paper's)


# ------------------------------------------------------------------------------------------------ pythae networks
if HAVE_PYTHAE:

    class Encoder(BaseEncoder):
        def __init__(self, latent_dim: int = 2):
            super().__init__()
            self.hidden = nn.Linear(784, 400)
            self.mu, self.log_var = nn.Linear(400, latent_dim), nn.Linear(400, latent_dim)

        def forward(self, x):
            h = torch.relu(self.hidden(x.reshape(len(x), -1)))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self, latent_dim: int = 2):
            super().__init__()
            self.hidden, self.out = nn.Linear(latent_dim, 400), nn.Linear(400, 784)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.out(torch.relu(self.hidden(z)))))

    class Metric(BaseMetric):
        def __init__(self, latent_dim: int = 2):
            super().__init__()
            self.latent_dim, self.hidden = latent_dim, nn.Linear(784, 400)
            self.diag, self.lower = nn.Linear(400, latent_dim), nn.Linear(400, latent_dim * (latent_dim - 1) // 2)

        def forward(self, x):
            h = torch.relu(self.hidden(x.reshape(len(x), -1)))
            d = self.latent_dim
            L = torch.zeros(len(x), d, d)
            if d == 2:  # the one lower entry, as this benchmark has always filled it
                L[:, 1, 0] = self.lower(h)[:, 0]
            else:  # the entries below the diagonal in torch.tril_indices order, as ours (and pythae's Metric_MLP)
                rows, cols = torch.tril_indices(d, d, offset=-1)
                L[:, rows, cols] = self.lower(h)
            return ModelOutput(L=L + torch.diag_embed(torch.exp(self.diag(h))))


def _copy(dst: nn.Linear, src: nn.Linear) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)


def pythae_twin(ours: rhvae.RHVAE, eps_lf: float = EPS_LF):
    """pythae's RHVAE with our architecture, hyper-parameters and weights (β₀: pythae's RHVAE takes √β₀)."""
    config = RHVAEConfig(
        input_dim=(784,),
        latent_dim=ours.latent_dim,
        reconstruction_loss="bce",
        n_lf=ours.n_lf,
        eps_lf=eps_lf,
        beta_zero=math.sqrt(ours.beta_zero),
        temperature=ours.temperature,
        regularization=ours.regularization,
    )
    d = ours.latent_dim
    model = PythaeRHVAE(config, encoder=Encoder(d), decoder=Decoder(d), metric=Metric(d))
    _copy(model.encoder.hidden, ours.enc_hidden)
    _copy(model.encoder.mu, ours.enc_mu)
    _copy(model.encoder.log_var, ours.enc_log_var)
    _copy(model.decoder.hidden, ours.dec_hidden)
    _copy(model.decoder.out, ours.dec_out)
    _copy(model.metric.hidden, ours.metric_hidden)
    _copy(model.metric.diag, ours.metric_diag)
    _copy(model.metric.lower, ours.metric_lower)
    return model


def pythae_set_metric(model, centroids: torch.Tensor, M: torch.Tensor) -> None:
    """Give pythae's RHVAE a frozen metric (its ``update`` concatenates the stored (M, centroids))."""
    from collections import deque

    model.M, model.centroids = deque([M.detach().clone()]), deque([centroids.detach().clone()])
    model.update()


# ------------------------------------------------------------------------------------------------------ workloads
def our_epoch(model, optimizer, x, batch_size, generator):
    """One epoch as ``rhvae.training.train`` runs it (shuffle, Adam step per batch, freeze the metric)."""
    model.train()
    n = len(x)
    order = torch.randperm(n, generator=generator) if batch_size < n else torch.arange(n)
    for begin in range(0, n, batch_size):
        loss = -model(x[order[begin : begin + batch_size]]).objective.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if isinstance(model, rhvae.RHVAE):
        model.freeze_metric(x)


def stacked_epoch(stack, optimizer, x):
    """One full-batch epoch of a stack of models (x: one block of rows per member), as ``train_group`` runs it."""
    stack.train()
    loss = -stack(x).objective.reshape(stack.members, -1).mean(1).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    stack.freeze_metric(x)


def pythae_epoch(model, optimizer, x, batch_size, generator):
    """One epoch as pythae's BaseTrainer runs it (Adam step per batch, ``model.update()`` at the end)."""
    model.train()
    n = len(x)
    order = torch.randperm(n, generator=generator) if batch_size < n else torch.arange(n)
    for begin in range(0, n, batch_size):
        loss = model({"data": x[order[begin : begin + batch_size]]}).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.update()


def optimizer(model, pythae: bool) -> torch.optim.Adam:
    """Each side's own Adam at lr 1e-3: ours fused (``rhvae.training.adam``), pythae's trainer the default loop."""
    return torch.optim.Adam(model.parameters(), 1e-3) if pythae else adam(model.parameters(), 1e-3)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Run every function ``warmup`` times, then ``repeats`` rounds in turn; median seconds of each."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def make_ours(**kw) -> rhvae.RHVAE:
    settings = dict(n_lf=N_LF, eps_lf=EPS_LF, beta_zero=BETA_ZERO, temperature=TEMPERATURE)
    settings.update(regularization=REGULARIZATION, **kw)
    return rhvae.RHVAE(**settings)


def big_metric(model: rhvae.RHVAE, n: int, seed: int = 0):
    """n centroids from the model's frozen ones: replicated, perturbed by N(0, (0.05 T)²), Mᵢ scaled by N₀/n so
    the metric keeps its magnitude."""
    g = torch.Generator().manual_seed(seed)
    reps = math.ceil(n / len(model.centroids))
    c = model.centroids.repeat(reps, 1)[:n]
    c = c + 0.05 * model.temperature * torch.randn(c.shape, generator=g)
    M = model.M.repeat(reps, 1, 1)[:n] * (len(model.centroids) / n)
    return c, M


def trained_pair(x, epochs: int = 20, seed: int = 0, latent_dim: int = 2):
    """Our RHVAE trained a few epochs (plain step, eps 0.01, 3 fixed-point iterations) and pythae's twin with
    the same weights and frozen metric."""
    torch.manual_seed(seed)
    ours = make_ours(n_fixed_point=PYTHAE_FIXED_POINT, step_bound="none", latent_dim=latent_dim)
    opt = adam(ours.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        our_epoch(ours, opt, x, len(x), g)
    ours.eval()
    theirs = pythae_twin(ours) if HAVE_PYTHAE else None
    if theirs is not None:
        pythae_set_metric(theirs, ours.centroids, ours.M)
        theirs.eval()
    return ours, theirs


# --------------------------------------------------------------------------------------------- the dense floor
#: The matrix products torch dispatches (``aten``), with the operands that carry the product: (a, b) of a·b.
#: The in-place forms accumulate into their first operand (the weight gradients summed over leapfrog steps).
PRODUCTS = {
    torch.ops.aten.mm.default: (0, 1),
    torch.ops.aten.addmm.default: (1, 2),
    torch.ops.aten.addmm_.default: (1, 2),
    torch.ops.aten.bmm.default: (0, 1),
    torch.ops.aten.baddbmm.default: (1, 2),
    torch.ops.aten.baddbmm_.default: (1, 2),
}
#: A product counts in the floor from this many floating-point operations (2·m·k·n per matrix): the network layers
#: (120 × 784 by 784 × 400 is 75 MFLOP), not the 2 × 2 metric algebra (≤ 0.01 MFLOP), whose cost is per call.
DENSE_FLOPS = 1e6


def product_flops(func, args) -> float:
    a, b = (args[i] for i in PRODUCTS[func])
    batch = a.shape[0] if a.dim() == 3 else 1
    return 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


class ProductRecorder(TorchDispatchMode):
    """Records every matrix product an operation dispatches (forward and backward): its function, the shapes and
    strides of its tensor operands and its other arguments; ``calls`` counts every aten call."""

    def __init__(self):
        super().__init__()
        self.products, self.calls = [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls += 1
        if func in PRODUCTS:
            specs = [(a.shape, a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a for a in args]
            self.products.append((func, specs, kwargs, product_flops(func, args)))
        return func(*args, **kwargs)


def dense_floor(fn, repeats: int) -> dict:
    """The dense-product floor of ``fn`` (one training epoch): its matrix products of at least ``DENSE_FLOPS``,
    recorded during one call, replayed alone on tensors of the same shapes, strides and dtype, in the same process and
    thread count. Returns the median replay seconds (``floor``), their number, their GFLOP, and the replay of every
    product (``all_products``: the small ones too) and the epoch's number of aten calls."""
    recorder = ProductRecorder()
    with recorder:
        fn()
    generator = torch.Generator().manual_seed(0)

    def operands(specs):
        out = []
        for spec in specs:
            if isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], torch.Size):
                shape, stride, dtype = spec
                # the storage the strides address (a broadcast operand's zero strides reuse elements)
                size = 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) if all(shape) else 0
                out.append(torch.randn(size, generator=generator, dtype=dtype).as_strided(shape, stride))
            else:
                out.append(spec)
        return out

    def replayer(selected):
        prepared = [(func, operands(specs), kwargs) for func, specs, kwargs, _ in selected]
        return lambda: [func(*args, **kwargs) for func, args, kwargs in prepared]

    dense = [p for p in recorder.products if p[3] >= DENSE_FLOPS]
    timings = alternate({"dense": replayer(dense), "all": replayer(recorder.products)}, repeats)
    return {
        "floor": timings["dense"],
        "all_products": timings["all"],
        "dense_products": len(dense),
        "products": len(recorder.products),
        "gflop": sum(p[3] for p in dense) / 1e9,
        "aten_calls": recorder.calls,
    }


def floor_line(label: str, epoch: float, floor: Mapping) -> str:
    return (
        f"  {label}: epoch {epoch * 1e3:.1f} ms, dense floor {floor['floor'] * 1e3:.1f} ms "
        f"({floor['dense_products']} products of >= {DENSE_FLOPS / 1e6:g} MFLOP, {floor['gflop']:.2f} GFLOP, "
        f"{floor['gflop'] / floor['floor']:.0f} GFLOP/s) -> epoch / floor {epoch / floor['floor']:.2f}x; "
        f"all {floor['products']} products replayed {floor['all_products'] * 1e3:.1f} ms; "
        f"{floor['aten_calls']} aten calls per epoch"
    )


# ------------------------------------------------------------------------------------------------------- sections
def row(label: str, ours: float, theirs: float | None) -> str:
    t = f"{theirs * 1e3:10.1f}" if theirs is not None else f"{'-':>10}"
    r = f"{theirs / ours:7.1f}x" if theirs is not None else f"{'-':>8}"
    return f"  {label:<58} {ours * 1e3:10.1f} {t} {r}"


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'workload':<58} {'ours ms':>10} {'pythae ms':>10} {'pythae/ours':>8}")


def bench_training(x, repeats, latent_dim: int = 2):
    at_d = "" if latent_dim == 2 else f", latent dim {latent_dim}: 784-400-{latent_dim} networks"
    header(
        f"RHVAE training epoch ({len(x)} real digits, n_lf {N_LF}, eps_lf {EPS_LF}, beta0 {BETA_ZERO}, T 1, lambda 0.1"
        f"{at_d})"
    )
    floors, times = {}, {}
    for batch in (64, len(x)):
        name = "full batch" if batch == len(x) else f"batch {batch}"
        torch.manual_seed(0)
        fixed = make_ours(n_fixed_point=PYTHAE_FIXED_POINT, step_bound="none", latent_dim=latent_dim)
        default = make_ours(latent_dim=latent_dim)  # n_fixed_point 5, step_bound "stability" (eps_lf: largest step)
        default.load_state_dict(fixed.state_dict())
        models = {"fixed": fixed, "default": default}
        if HAVE_PYTHAE:
            models["pythae"] = pythae_twin(fixed)
        fns = {}
        for key, model in models.items():
            opt = optimizer(model, key == "pythae")
            gen = torch.Generator().manual_seed(1)
            epoch = pythae_epoch if key == "pythae" else our_epoch
            fns[key] = lambda m=model, o=opt, g=gen, e=epoch, b=batch: e(m, o, x, b, g)
        if batch == len(x):  # the seeds of an experiment side by side, as one stack (rhvae.training.train_group)
            seeds = [make_ours(latent_dim=latent_dim) for _ in range(STACKED - 1)]
            stack = rhvae.RHVAE.stack([default, *seeds])
            opt = adam(stack.parameters(), 1e-3)
            fns["stack"] = lambda m=stack, o=opt: stacked_epoch(m, o, x.repeat(STACKED, 1))
            # a tenth of the rows: what an epoch costs whatever the batch (per-call overhead, weight-sized work)
            small = make_ours(latent_dim=latent_dim)
            small.load_state_dict(fixed.state_dict())
            opt = adam(small.parameters(), 1e-3)
            x_small = x[: len(x) // 10]
            fns["tenth"] = lambda m=small, o=opt, s=x_small: our_epoch(m, o, s, len(s), torch.Generator())
        t = alternate(fns, repeats)
        print(row(f"{name}: ours step_bound='none', 3 fixed-point its", t["fixed"], t.get("pythae")))
        print(row(f"{name}: ours default (stability bound, 5 its)", t["default"], t.get("pythae")))
        if "stack" in t:
            label = f"{name}: ours default, {STACKED} seeds side by side, per model"
            print(row(label, t["stack"] / STACKED, t.get("pythae")))
            label = f"full batch of {len(x) // 10} digits: ours default (the per-epoch cost that rows do not scale)"
            print(row(label, t["tenth"], None))
            floors[name] = {key: dense_floor(fns[key], repeats) for key in ("default", "stack")}
            times[name] = t
    print(f"\nThe dense-product floor (the epoch's own products of >= {DENSE_FLOPS / 1e6:g} MFLOP, replayed alone):")
    for name, floor in floors.items():
        print(floor_line(f"{name}, default", times[name]["default"], floor["default"]))
        print(floor_line(f"{name}, {STACKED} seeds side by side (whole stack)", times[name]["stack"], floor["stack"]))
        if "pythae" in times[name]:  # what removing every cost of ours but the dense products could give at most
            ceiling = times[name]["pythae"] / floor["default"]["floor"]
            now = times[name]["pythae"] / times[name]["default"]
            print(
                f"  {name}: pythae / our dense floor = {ceiling:.1f}x, the largest pythae / ours an epoch with these "
                f"products could reach on this machine (ours now: {now:.1f}x)"
            )


def bench_sampler(ours, theirs, repeats, sizes):
    header("RHVAE sampler: 100 samples x 90 MCMC steps, n_lf 10, eps 0.05 (decoding included)")
    for n in sizes:
        if n == len(ours.centroids):
            c, M = ours.centroids, ours.M
        else:
            c, M = big_metric(ours, n)
        model = copy.deepcopy(ours)
        model.centroids, model.M = c.clone(), M.clone()
        model.eval()
        fns = {"ours": lambda m=model: riemannian_hmc(m, 100, 90, n_lf=10, eps=0.05, seed=0)}
        if theirs is not None:
            pythae_set_metric(theirs, c, M)
            sampler = RHVAESampler(theirs, RHVAESamplerConfig(mcmc_steps_nbr=90, n_lf=10, eps_lf=0.05, beta_zero=1.0))
            fns["pythae"] = lambda s=sampler: s.sample(num_samples=100, batch_size=100)
        t = alternate(fns, repeats if n <= 1000 else max(1, (repeats + 1) // 2), warmup=1 if n <= 1000 else 0)
        print(row(f"{n} centroids", t["ours"], t.get("pythae")))
    if theirs is not None:
        pythae_set_metric(theirs, ours.centroids, ours.M)


def bench_log_likelihood(ours, theirs, x_test, repeats):
    header(f"log-likelihood: {len(x_test)} test images x 100 importance samples (S = 100)")
    default = copy.deepcopy(ours)
    default.n_fixed_point, default.step_bound = 5, "stability"
    fns = {
        "ours": lambda: log_likelihood(ours, x_test, n_samples=100),
        "default": lambda: log_likelihood(default, x_test, n_samples=100),
    }
    if theirs is not None:
        fns["pythae"] = lambda: theirs.get_nll(x_test, n_samples=100, batch_size=100)
    t = alternate(fns, max(1, (repeats + 1) // 2), warmup=0)  # pythae's get_nll takes tens of seconds
    print(row("ours step_bound='none', 3 its (rhvae.evaluation.likelihood.log_likelihood)", t["ours"], t.get("pythae")))
    print(row("ours default (stability bound, 5 its)", t["default"], t.get("pythae")))


def bench_models(x, repeats, latent_dim: int = 2):
    at_d = "" if latent_dim == 2 else f", latent dim {latent_dim}"
    print(
        f"\nour models, one training epoch on {len(x)} real digits (n_lf 10, eps_lf 0.01; RHVAE 3 its, plain step"
        f"{at_d})"
    )
    for batch in (64, len(x)):
        torch.manual_seed(0)
        models = {
            "VAE": rhvae.VAE(latent_dim=latent_dim),
            "HVAE": rhvae.HVAE(latent_dim=latent_dim, n_lf=N_LF, eps_lf=EPS_LF, beta_zero=BETA_ZERO),
            "RHVAE": make_ours(n_fixed_point=PYTHAE_FIXED_POINT, step_bound="none", latent_dim=latent_dim),
        }
        fns = {}
        for key, model in models.items():
            opt = adam(model.parameters(), 1e-3)
            gen = torch.Generator().manual_seed(1)
            fns[key] = lambda m=model, o=opt, g=gen, b=batch: our_epoch(m, o, x, b, g)
        t = alternate(fns, repeats)
        name = "full batch" if batch == len(x) else f"batch {batch}"
        print(f"  {name:<12} " + "   ".join(f"{k} {v * 1e3:7.1f} ms" for k, v in t.items()))


# --------------------------------------------------------------------------------------------------------- memory
MEMORY_WORKLOADS = (
    "ours_epoch_full",
    "pythae_epoch_full",
    "ours_sampler_120",
    "pythae_sampler_120",
    "ours_sampler_6400",
    "pythae_sampler_6400",
    "ours_loglik",
    "pythae_loglik",
)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset the kernel's resident-set peak (VmHWM) of this process (Linux ≥ 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_worker(name: str, threads: int, latent_dim: int = 2) -> None:
    torch.set_num_threads(threads)
    data = rhvae.experiment_data("metric")
    x, x_test = data.train.x, data.test.x[:30]
    side, _, what = name.partition("_")
    if what == "epoch_full":  # from initialisation, as in the timings (pythae diverges from some trained states)
        torch.manual_seed(0)
        ours = make_ours(n_fixed_point=PYTHAE_FIXED_POINT, step_bound="none", latent_dim=latent_dim)
        theirs = pythae_twin(ours) if side == "pythae" else None
    else:
        ours, theirs = trained_pair(x, epochs=2, latent_dim=latent_dim)
    gc.collect()
    exact = _reset_peak()
    base = _status_kb("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if what == "epoch_full":
        model = ours if side == "ours" else theirs
        opt = optimizer(model, side == "pythae")
        (our_epoch if side == "ours" else pythae_epoch)(model, opt, x, len(x), torch.Generator().manual_seed(0))
    elif what.startswith("sampler"):
        n = int(what.split("_")[1])
        c, M = (ours.centroids, ours.M) if n == len(ours.centroids) else big_metric(ours, n)
        if side == "ours":
            ours.centroids, ours.M = c.clone(), M.clone()
            riemannian_hmc(ours, 100, 90, n_lf=10, eps=0.05, seed=0)
        else:
            pythae_set_metric(theirs, c, M)
            cfg = RHVAESamplerConfig(mcmc_steps_nbr=90, n_lf=10, eps_lf=0.05, beta_zero=1.0)
            RHVAESampler(theirs, cfg).sample(num_samples=100, batch_size=100)
    elif what == "loglik":
        if side == "ours":
            log_likelihood(ours, x_test, n_samples=100)
        else:
            theirs.get_nll(x_test, n_samples=100, batch_size=100)
    peak = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kb": base, "peak_kb": peak, "method": "VmHWM" if exact else "ru_maxrss"}))


def bench_memory(threads: int, sampler_sizes, latent_dim: int = 2) -> None:
    print("\nPeak memory of each workload in a fresh subprocess: after imports, data and models are set up the")
    print("process's resident-set peak is reset (/proc/self/clear_refs 5); reported: the new peak (VmHWM) minus")
    print("the resident set at the reset, i.e. the workload's own peak allocation (falls back to ru_maxrss)")
    print(f"  {'workload':<28} {'peak increase MB':>16} {'process peak MB':>16}")
    for name in MEMORY_WORKLOADS:
        if name.startswith("pythae") and not HAVE_PYTHAE:
            continue
        if "sampler" in name and int(name.rsplit("_", 1)[1]) not in sampler_sizes:
            continue
        cmd = [sys.executable, __file__, "--memory-worker", name, "--threads", str(threads)]
        cmd += ["--latent-dim", str(latent_dim)] if latent_dim != 2 else []
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"  {name:<28} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        increase = (r["peak_kb"] - r["base_kb"]) / 1024
        print(f"  {name:<28} {increase:16.1f} {r['peak_kb'] / 1024:16.1f}  ({r['method']})")


# ------------------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both sides")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per workload (median reported)")
    parser.add_argument("--quick", action="store_true", help="2 repeats, no 6,400-centroid sampler, no memory")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--latent-dim",
        type=int,
        default=2,
        metavar="D",
        help=f"latent dimension of both sides' networks, {MIN_LATENT_DIM} to {MAX_LATENT_DIM} (default 2)",
    )
    parser.add_argument("--memory-worker", default=None, choices=MEMORY_WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    d = args.latent_dim
    if not MIN_LATENT_DIM <= d <= MAX_LATENT_DIM:
        parser.exit(2, f"speed.py: --latent-dim must be from {MIN_LATENT_DIM} to {MAX_LATENT_DIM}, got {d}\n")
    if args.memory_worker:
        memory_worker(args.memory_worker, args.threads, d)
        return
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    sizes = (120,) if args.quick or d != 2 else (120, 6400)
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, repeats {repeats} (median)")
    if d != 2:
        print(
            f"latent dimension {d} on both sides (784-400-{d} encoder and decoder, metric 784-400 -> {d} diagonal + "
            f"{d * (d - 1) // 2} lower entries); ours on the pure-PyTorch nodes (the compiled kernels are d = 2 only); "
            "the 6,400-centroid sampler is skipped (ours: the grid target, 2-D only; pythae: (100, 6,400, d, d) "
            "tensors in its graph)"
        )
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes on the machine slow both sides)")
    if HAVE_PYTHAE:
        from importlib.metadata import version

        print(f"pythae {version('pythae')}: timed in the same process, alternating with ours")
    else:
        print("pythae is not installed (pip install 'pythae==0.1.2' or pip install -e '.[test]'): timing ours only")
    print(GRADIENTS)
    data = rhvae.experiment_data("metric")  # 120 train / 30 test real digits (classes 1, 2, 3)
    x, x_test = data.train.x, data.test.x[:30]
    bench_training(x, repeats, d)
    ours, theirs = trained_pair(x, latent_dim=d)
    bench_sampler(ours, theirs, repeats, sizes)
    bench_log_likelihood(ours, theirs, x_test, repeats)
    bench_models(x, repeats, d)
    print(f"\nload average after timings: {os.getloadavg()[0]:.2f}")
    if not (args.quick or args.no_memory):
        bench_memory(args.threads, sizes, d)


if __name__ == "__main__":
    main()
