"""A pythae 0.1.2 RHVAE trained a few epochs on the reconstruction subset (real MNIST), scored by both packages.

pythae's RHVAE (its default MLPs, d = 2, ``reconstruction_loss="bce"``, its other defaults unless given) trains as
pythae's trainer runs it (an Adam step per batch, ``model.update()`` at the end of every epoch), is saved with
pythae's ``model.save`` and read with ``rhvae.from_pythae``. On the 30 test images it prints

* our exact log p(x) (``rhvae.exact_log_likelihood``, the 2-D quadrature: it uses the decoder and the prior only),
* our importance-sampling estimate through the imported model's flow (``rhvae.log_likelihood``, S draws),
* pythae's own importance-sampling estimate (its ``get_nll``, S draws: it returns the mean log p(x), not its
  negative), which omits the tempering Jacobian (d/2) log β₀ (docs/design.md §3).

Needs pythae 0.1.2 (the test extra: ``pip install -e .[test]``). One thread (set here). Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/pythae_bridge.py [--epochs 20] [--samples 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings

import torch
from pythae.models import RHVAE, RHVAEConfig

import rhvae


def train_pythae(x: torch.Tensor, epochs: int, batch_size: int, seed: int, **config) -> RHVAE:
    """pythae's RHVAE trained as its BaseTrainer does: Adam at lr 1e-3, ``update()`` after every epoch."""
    torch.manual_seed(seed)
    model = RHVAE(RHVAEConfig(input_dim=(1, 28, 28), latent_dim=2, reconstruction_loss="bce", **config))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = x.reshape(-1, 1, 28, 28)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images))
        losses = []
        for start in range(0, len(images), batch_size):
            optimizer.zero_grad()
            loss = model({"data": images[order[start : start + batch_size]]}).loss
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        model.update()
        print(f"  pythae epoch {epoch + 1}: loss {sum(losses) / len(losses):.2f}")
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1000, help="importance samples S per image, both packages")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    data = rhvae.experiment_data("reconstruction")
    print(f"pythae 0.1.2 RHVAE, d = 2, {len(data.train)} training digits, {args.epochs} epochs, batch", args.batch_size)
    start = time.perf_counter()
    theirs = train_pythae(data.train.x, args.epochs, args.batch_size, args.seed)
    trained = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        theirs.save(folder)
        ours = rhvae.from_pythae(folder)
    print(f"  trained in {trained:.0f} s; imported: {ours.config()}")
    x = data.test.x
    start = time.perf_counter()
    exact = rhvae.exact_log_likelihood(ours, x)
    t_exact = time.perf_counter() - start
    start = time.perf_counter()
    our_is = rhvae.log_likelihood(ours, x, n_samples=args.samples, seed=args.seed)
    t_ours = time.perf_counter() - start
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    pythae_is = theirs.get_nll(x.reshape(-1, 1, 28, 28), n_samples=args.samples, batch_size=100)
    t_pythae = time.perf_counter() - start
    jacobian = 0.5 * ours.latent_dim * math.log(ours.beta_zero)
    mean = float(exact.log_px.mean())
    print(f"on the {len(x)} test images (mean log p(x), nats):")
    converged = f"{int(exact.converged.sum())}/{len(x)} converged"
    print(f"  ours, exact quadrature           {mean:9.2f}  ({converged}, {t_exact:.0f} s)")
    print(f"  ours, IS through the flow, S={args.samples:<4} {float(our_is.mean()):9.2f}  ({t_ours:.0f} s)")
    print(f"  pythae get_nll, S={args.samples:<4}          {pythae_is:9.2f}  ({t_pythae:.0f} s)")
    print(f"  pythae get_nll - exact           {pythae_is - mean:+9.2f}  (Jacobian (d/2) log β₀: {jacobian:.2f})")


if __name__ == "__main__":
    main()
