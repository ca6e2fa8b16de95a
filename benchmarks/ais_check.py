"""Accuracy and cost of the AIS log-likelihood (rhvae.evaluation.ais) at the defaults, or at the settings given.

1. d = 2: AIS against the exact quadrature (``exact_log_likelihood``) on the test images of the 18 shipped
   reconstruction and generation_5 models (VAE, HVAE, RHVAE, seeds 0, 1, 2): mean AIS − exact, the share of images
   within 2 nats, the worst image, seconds per image (the targets: |mean| ≤ 0.5, share ≥ 95 %).
2. A known answer at d > 2: a shipped 2-D VAE's decoder copied into a d = 5 VAE whose extra latent coordinates have
   zero decoder weights has the 2-D model's log p(x); the encoder is the 2-D one plus N(0, 1) in the new coordinates.
3. BDMC gaps (upper − lower, mean over simulated images; the target ≤ 1 nat) at d = 5, 10, 16 for a VAE and an
   RHVAE trained on the reconstruction digits (``--epochs``).

One thread (set here, in the script). Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/ais_check.py                       # everything, the defaults (~15 min)
    OMP_NUM_THREADS=1 python benchmarks/ais_check.py --part d2 --steps 200 --chains 16 --leapfrog 2
    OMP_NUM_THREADS=1 python benchmarks/ais_check.py --part bdmc --dims 5 10 16 --models vae rhvae
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import rhvae
from rhvae.evaluation import ais


def settings_of(args) -> dict:
    return {
        "n_steps": args.steps,
        "n_chains": args.chains,
        "n_leapfrog": args.leapfrog,
        "initial": args.initial,
        "q0_scale": args.q0_scale,
    }


def d2_comparison(args) -> None:
    print(f"== d = 2: AIS {settings_of(args)} against the exact quadrature, test images of the shipped models")
    print(f"{'experiment':<15}{'model':<7}{'seed':>4}{'n':>4}{'AIS-exact':>11}{'within 2':>10}{'worst':>8}{'s/img':>8}")
    diffs, shares = [], []
    for experiment in ("reconstruction", "generation_5"):
        x = rhvae.experiment_data(experiment).test.x
        for kind in ("vae", "hvae", "rhvae"):
            for seed in (0, 1, 2):
                model = rhvae.load_shipped(experiment, kind, seed=seed)
                exact = rhvae.exact_log_likelihood(model, x).log_px
                est = ais.ais_log_likelihood(model, x, **settings_of(args), seed=args.seed)
                diff = est.log_px - exact
                share = float((diff.abs() <= 2.0).double().mean())
                diffs.append(float(diff.mean()))
                shares.append(share)
                print(
                    f"{experiment:<15}{kind:<7}{seed:>4}{len(x):>4}{float(diff.mean()):>+11.3f}{share:>10.2f}"
                    f"{float(diff.min()):>+8.2f}{est.seconds / len(x):>8.3f}",
                    flush=True,
                )
    worst_mean = max(diffs, key=abs)
    meeting = sum(abs(d) <= 0.5 and s >= 0.95 for d, s in zip(diffs, shares, strict=True))
    print(f"largest |mean AIS - exact| {abs(worst_mean):.3f} nats (target <= 0.5); smallest share within 2 nats")
    print(f"{min(shares):.2f} (target >= 0.95); models meeting both: {meeting}/{len(diffs)}")


def embedded(model2: rhvae.VAE, d: int) -> rhvae.VAE:
    """A d-dimensional VAE with ``model2``'s decoder on the first two coordinates and zero weights on the rest."""
    big = rhvae.VAE(latent_dim=d, input_dim=model2.input_dim, hidden_dim=model2.hidden_dim)
    state = copy.deepcopy(model2.state_dict())
    with torch.no_grad():
        for name, p in big.named_parameters():
            small = state[name]
            if name == "dec_hidden.weight":
                p.zero_()[:, :2] = small
            elif name in ("enc_mu.weight", "enc_log_var.weight", "enc_mu.bias", "enc_log_var.bias"):
                p.zero_()[:2] = small
            else:
                p.copy_(small)
    return big.eval()


def embedded_check(args) -> None:
    print(f"== known answer: a shipped 2-D VAE embedded in d = 5 (zero decoder columns), AIS {settings_of(args)}")
    x = rhvae.experiment_data("reconstruction").test.x
    for seed in (0, 1):
        model2 = rhvae.load_shipped("reconstruction", "vae", seed=seed)
        exact = rhvae.exact_log_likelihood(model2, x).log_px
        est = ais.ais_log_likelihood(embedded(model2, 5), x, **settings_of(args), seed=args.seed)
        diff = est.log_px - exact
        share = float((diff.abs() <= 2.0).double().mean())
        print(
            f"vae seed {seed}: mean AIS(d=5) - exact(d=2) {float(diff.mean()):+.3f} nats, within 2 nats {share:.2f}, "
            f"{est.seconds / len(x):.3f} s/img",
            flush=True,
        )


def bdmc_gaps(args) -> None:
    print(
        f"== BDMC on {args.bdmc_images} simulated images per model, {settings_of(args)}; models trained "
        f"{args.epochs} epochs on the reconstruction digits"
    )
    print(f"{'model':<7}{'d':>3}{'train s':>9}{'lower':>10}{'upper':>10}{'mean gap':>10}{'max gap':>9}{'s/img':>8}")
    x_train = rhvae.experiment_data("reconstruction").train.x
    for d in args.dims:
        for kind in args.models:
            torch.manual_seed(
                args.seed
            )  # the initial weights (the script's own global RNG; the library never seeds it)
            model = rhvae.MODELS[kind](latent_dim=d)
            start = time.perf_counter()
            rhvae.train(model, x_train, seed=0, epochs=args.epochs, progress=False)
            train_s = time.perf_counter() - start
            res = ais.bdmc(model, n_images=args.bdmc_images, **settings_of(args), seed=args.seed)
            print(
                f"{kind:<7}{d:>3}{train_s:>9.1f}{float(res.lower.mean()):>10.2f}{float(res.upper.mean()):>10.2f}"
                f"{res.mean_gap:>10.3f}{float(res.gap.max()):>9.3f}{res.seconds / (2 * args.bdmc_images):>8.3f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "d2", "embedded", "bdmc"), default="all")
    parser.add_argument("--steps", type=int, default=ais.AIS_STEPS)
    parser.add_argument("--chains", type=int, default=ais.AIS_CHAINS)
    parser.add_argument("--leapfrog", type=int, default=ais.AIS_LEAPFROG)
    parser.add_argument("--initial", choices=ais.INITIALS, default=ais.AIS_INITIAL)
    parser.add_argument("--q0-scale", type=float, default=ais.AIS_Q0_SCALE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dims", type=int, nargs="+", default=[5, 10, 16])
    parser.add_argument("--models", nargs="+", default=["vae", "rhvae"], choices=("vae", "hvae", "rhvae"))
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--bdmc-images", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"rhvae {rhvae.__version__}, torch {torch.__version__}, {torch.get_num_threads()} thread")
    if args.part in ("all", "d2"):
        d2_comparison(args)
    if args.part in ("all", "embedded"):
        embedded_check(args)
    if args.part in ("all", "bdmc"):
        bdmc_gaps(args)


if __name__ == "__main__":
    main()
