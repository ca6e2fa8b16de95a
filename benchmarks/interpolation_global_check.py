"""Is the interpolation notebook's finding (geodesics of the learned metric are nearly straight lines) real, or a
local minimum of the geodesic solver? A global check from the shipped models (no training).

Usage: python benchmarks/interpolation_global_check.py [--grid-n 128] [--radius 3]

``rhvae.evaluation.geometry.geodesic`` starts from the straight line and finds a *local* minimiser of the energy: if a
much shorter path went around the line (through the data), it could miss it. Shortest paths on a grid graph do not
start anywhere: ``rhvae.experiments.clustering.geodesic_distance_matrix`` (Dijkstra over a grid of the latent box,
edges weighted by their Riemannian length) gives the global graph distance d_graph, which *overestimates* d_G by at
most 1.3 % with ``--radius 3`` (the metrication bound of that module's docstring, measured in
tests/experiments/test_clustering.py).

For the pairs of test digits the notebook uses (``rhvae.experiments.interpolation.pair_indices`` with the model's seed,
5 within a class and 5 across), with every shipped RHVAE of reconstruction and generation_7_classes, this prints the
ratio d_graph / L_G(straight line) per subset and seed (mean and minimum over the pairs). A ratio near 1 means no
path, anywhere in the box, is much shorter than the straight line: the metric does not bend interpolations. A ratio
well below 1 (beyond the 1.3 % bound) would mean that the notebook's geodesics missed shorter paths.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rhvae.experiments.clustering import geodesic_distance_matrix
from rhvae.experiments.interpolation import pair_indices, riemannian_length, straight_line
from rhvae.experiments.model_cache import data_of
from rhvae.persistence import load_model
from rhvae.shipped import shipped_path

N_PAIRS = 5  # the interpolation notebook's default (registry: paper settings of "interpolation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid-n", type=int, default=128, help="grid nodes along the longer side of the box")
    parser.add_argument("--radius", type=int, default=3, help="grid neighbours within this offset (3: error ≤ 1.3 %%)")
    args = parser.parse_args()
    print(f"d_graph / L_G(line), grid {args.grid_n}, radius {args.radius}; {N_PAIRS} same- and cross-class pairs each")
    print("| subset | seed | mean | min | max |")
    print("|---|---|---|---|---|")
    for subset in ("reconstruction", "generation_7_classes"):
        for seed in (0, 1, 2):
            model, _, provenance = load_model(shipped_path(subset, "rhvae", seed), with_history=True)
            data = data_of(provenance)
            metric = model.metric()
            with torch.no_grad():
                test_codes = model.encode(data.test.x)[0]
                train_codes = model.encode(data.train.x)[0]
            codes = torch.cat([test_codes, train_codes])  # the box covers the data, not only the pair
            distances = geodesic_distance_matrix(metric, codes, grid_n=args.grid_n, radius=args.radius)
            pairs = pair_indices(data.test.y, N_PAIRS, True, seed) + pair_indices(data.test.y, N_PAIRS, False, seed)
            ratios = [
                distances[i, j] / riemannian_length(metric, straight_line(test_codes[i], test_codes[j], 64))
                for i, j in pairs
            ]
            print(f"| {subset} | {seed} | {np.mean(ratios):.3f} | {np.min(ratios):.3f} | {np.max(ratios):.3f} |")


if __name__ == "__main__":
    main()
