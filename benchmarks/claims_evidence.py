"""Measurements behind two verdicts of the report, from the shipped models (no training).

Usage: python benchmarks/claims_evidence.py [--samples 2000]

* **Exact log p(x) per seed** of the shipped VAE, HVAE and RHVAE on the reconstruction and generation_5 test
  splits (``rhvae.exact_log_likelihood``: 2-D quadrature, checked to 0.001 nats against an independent one), the
  mean over the test images: does the RHVAE beat both in every seed?
* **Class coverage of the generation_7_classes sampler with many samples.** The notebook's check asks every class
  to get at least 1/28 of 100 samples; here each shipped RHVAE draws ``--samples`` samples (the notebook's 150 MCMC
  steps, at the trained T = 0.6 and with the frozen metric re-evaluated at T = 0.8 and 1.0), and the quality
  classifier's share of each class is printed beside the share of that class's training codes inside the
  sampler's box: it tells a class that the sampler misses from one that 100 samples under-count.
"""

from __future__ import annotations

import argparse

import torch

import rhvae
from rhvae.experiments.model_cache import data_of
from rhvae.experiments.quality import load_classifier
from rhvae.persistence import load_model
from rhvae.shipped import shipped_path


def exact_log_likelihoods() -> None:
    print("| experiment | seed | VAE | HVAE | RHVAE | RHVAE beats both |")
    print("|---|---|---|---|---|---|")
    for experiment in ("reconstruction", "generation_5"):
        for seed in (0, 1, 2):
            values = {}
            for kind in ("vae", "hvae", "rhvae"):
                model, _, provenance = load_model(shipped_path(experiment, kind, seed), with_history=True)
                exact = rhvae.exact_log_likelihood(model, data_of(provenance).test.x)
                assert bool(exact.converged.all())
                values[kind] = float(exact.log_px.mean())
            best = values["rhvae"] > max(values["vae"], values["hvae"])
            print(
                f"| {experiment} | {seed} | {values['vae']:.2f} | {values['hvae']:.2f} | {values['rhvae']:.2f} "
                f"| {'yes' if best else 'no'} |"
            )


def coverage(samples: int) -> None:
    classifier = load_classifier()
    print("\n| seed | T | share of each class in the samples (0..6) | min | training codes of each class in the box |")
    print("|---|---|---|---|---|")
    for seed in (0, 1, 2):
        model, _, provenance = load_model(shipped_path("generation_7_classes", "rhvae", seed), with_history=True)
        labels = data_of(provenance).train.y
        for temperature in (0.6, 0.8, 1.0):
            drawn = rhvae.riemannian_hmc(model.metric(temperature), n_samples=samples, mcmc_steps=150, seed=seed)
            with torch.no_grad():
                images = model.decode(drawn.z.to(torch.float32))
            predicted = classifier.predict_proba(images).argmax(-1)
            shares = [float((predicted == c).double().mean()) for c in range(7)]
            inside = ((model.centroids >= drawn.box_low) & (model.centroids <= drawn.box_high)).all(-1)
            codes = [int((inside & (labels == c)).sum()) for c in range(7)]
            print(
                f"| {seed} | {temperature:g} | {', '.join(f'{s:.3f}' for s in shares)} | {min(shares):.3f} | {codes} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    exact_log_likelihoods()
    coverage(args.samples)


if __name__ == "__main__":
    main()
