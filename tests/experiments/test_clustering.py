"""rhvae.experiments.clustering: graph geodesic distances against exact references, k-medoids, the scores, the table.

Measured errors of ``geodesic_distance_matrix`` (recorded when the tests were written):

* constant metric G⁻¹ = λI (exact distance ‖a − b‖/√λ), 60 random codes, 3 draws, grid_n ∈ {32, 64, 128}: the graph
  distance was never below the exact one (ratio ≥ 1 − 1e-12) and never above B·exact + 0.55 h, with h the cell
  diagonal in metric units and B = √(4 − 2√2) ≈ 1.0824 (8-connected, radius 1) or 1/cos(atan(1/2)/2) ≈ 1.0275
  (radius 2), the grids' metrication bounds. Asserted: + 0.75 h.
* learned metric (reconstruction RHVAE, seed 0, T = 1), 12 pairs of test codes, against the midpoint-rule length of a
  converged ``geodesic`` (64 points, 1,000 L-BFGS iterations): relative error of the graph distance at grid_n = 64
  in [+1.7 %, +10.9 %] for radius 1, [+1.0 %, +3.8 %] for radius 2, [+0.3 %, +1.8 %] for radius 3 (generation_7_classes
  RHVAE, T = 0.6: up to 10.1 %, 4.1 %, 2.0 %). The grid error does not shrink with grid_n for radius 1 (128: 10.1 %,
  256: 10.2 %); it is the metrication error. Asserted on 6 of those pairs: [−1 %, +12 %] (radius 1), [−1 %, +3 %]
  (radius 3).
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch

import rhvae
from rhvae.evaluation.geometry import geodesic
from rhvae.experiments.clustering import (
    adjusted_rand_index,
    clustering_checks,
    clustering_rows,
    clustering_table,
    contingency_table,
    euclidean_distance_matrix,
    geodesic_distance_matrix,
    grid_offsets,
    k_medoids,
    normalized_mutual_information,
    purity,
    reliability,
    seed_agreement,
    square_grid,
)
from rhvae.experiments.interpolation import as_double_metric, pair_indices, riemannian_length
from rhvae.models.metric import LearnedMetric

BOUND = {1: math.sqrt(4 - 2 * math.sqrt(2)), 2: 1 / math.cos(math.atan(0.5) / 2)}


@pytest.fixture(scope="module")
def shipped():
    models = {name: rhvae.load_shipped("reconstruction", name, seed=0) for name in ("vae", "hvae", "rhvae")}
    return models, rhvae.experiment_data("reconstruction")


def constant_metric(lam: float) -> LearnedMetric:
    return LearnedMetric(torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 2, 2, dtype=torch.float64), 1.0, lam)


# ------------------------------------------------------------------------------------------------ distances
def test_grid_offsets():
    assert grid_offsets(1) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    assert len(grid_offsets(2)) == 8 and len(grid_offsets(3)) == 16


@pytest.mark.parametrize("radius", [1, 2])
def test_graph_distance_under_a_constant_metric_is_within_the_grid_bound(radius):
    lam, grid_n = 0.25, 64
    codes = np.random.default_rng(0).normal(size=(60, 2)) * 2
    exact = euclidean_distance_matrix(codes) / math.sqrt(lam)
    graph = geodesic_distance_matrix(constant_metric(lam), codes, grid_n=grid_n, margin=0.1, radius=radius)
    _, _, h = square_grid(codes, grid_n, 0.1)
    cell_diagonal = h * math.sqrt(2) / math.sqrt(lam)
    iu = np.triu_indices(len(codes), 1)
    assert np.allclose(graph, graph.T) and np.all(np.diag(graph) == 0)
    assert np.all(graph[iu] >= exact[iu] * (1 - 1e-12))
    excess = (graph[iu] - BOUND[radius] * exact[iu]) / cell_diagonal
    print(f"radius {radius}: max ratio {np.max(graph[iu] / exact[iu]):.4f}, max excess {excess.max():.3f} cells")
    assert excess.max() <= 0.75
    # far pairs approach the metrication bound itself
    far = exact[iu] > 0.5 * exact[iu].max()
    assert np.max(graph[iu][far] / exact[iu][far]) <= BOUND[radius] + 0.02


def test_heap_dijkstra_matches_scipy():
    codes = np.random.default_rng(1).normal(size=(15, 2))
    metric = constant_metric(0.5)
    a = geodesic_distance_matrix(metric, codes, grid_n=20, use_scipy=True)
    b = geodesic_distance_matrix(metric, codes, grid_n=20, use_scipy=False)
    assert np.allclose(a, b, rtol=1e-12, atol=0)


def test_graph_distance_on_a_learned_metric_matches_converged_geodesics(shipped):
    models, data = shipped
    metric = as_double_metric(models["rhvae"].metric())
    with torch.no_grad():
        z = models["rhvae"].encode(data.test.x)[0].double()
    pairs = pair_indices(data.test.y, 3, True, seed=3) + pair_indices(data.test.y, 3, False, seed=3)
    exact = np.array(
        [riemannian_length(metric, geodesic(metric, z[i], z[j], n_points=64, steps=1000).path) for i, j in pairs]
    )
    for radius, (low, high) in {1: (-0.01, 0.12), 3: (-0.01, 0.03)}.items():
        graph = geodesic_distance_matrix(metric, z, grid_n=64, radius=radius)
        rel = np.array([graph[i, j] for i, j in pairs]) / exact - 1
        print(f"radius {radius}: relative errors", np.round(rel, 4))
        assert low <= rel.min() and rel.max() <= high


# ------------------------------------------------------------------------------------------------ k-medoids
def blobs(seed=0, n=10):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(size=(n, 2)) for c in centres])
    return points, np.repeat(np.arange(3), n)


def test_k_medoids_recovers_separated_blobs_and_is_deterministic():
    points, truth = blobs()
    distance = euclidean_distance_matrix(points)
    result = k_medoids(distance, 3, seed=0, n_init=5)
    assert adjusted_rand_index(result.labels, truth) == 1.0
    assert list(result.labels[:1]) == [0] and set(result.labels) == {0, 1, 2}
    assert all(result.labels[m] == c for c, m in enumerate(result.medoids))
    assert result.cost == pytest.approx(distance[np.arange(len(points)), result.medoids[result.labels]].sum())
    again = k_medoids(distance, 3, seed=0, n_init=5)
    assert np.array_equal(again.labels, result.labels) and again.restart_costs == result.restart_costs
    assert len(result.restart_labels) == 5 and result.cost == min(result.restart_costs)


def test_k_medoids_finds_the_brute_force_optimum_on_a_small_set():
    points = np.random.default_rng(2).normal(size=(12, 2))
    distance = euclidean_distance_matrix(points)
    best = min(distance[:, list(m)].min(1).sum() for m in itertools.combinations(range(12), 3))
    assert k_medoids(distance, 3, seed=0, n_init=20).cost == pytest.approx(best)


def test_k_medoids_refusals():
    distance = euclidean_distance_matrix(np.random.default_rng(0).normal(size=(5, 2)))
    with pytest.raises(ValueError, match="k must"):
        k_medoids(distance, 6, seed=0)
    with pytest.raises(ValueError, match="n_init"):
        k_medoids(distance, 2, seed=0, n_init=0)
    with pytest.raises(ValueError, match="distance"):
        k_medoids(distance[:4], 2)
    with pytest.raises(ValueError, match="distance"):
        k_medoids(-distance, 2)
    with pytest.raises(ValueError, match="codes"):
        geodesic_distance_matrix(constant_metric(1.0), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="grid_n"):
        geodesic_distance_matrix(constant_metric(1.0), np.zeros((4, 2)), grid_n=1)
    with pytest.raises(ValueError, match="radius"):
        geodesic_distance_matrix(constant_metric(1.0), np.zeros((4, 2)), radius=0)
    # not arrays, flags that are not booleans, and sizes beyond what fits in memory: one line naming them
    with pytest.raises(TypeError, match="distance must be a tensor or an array of numbers, got NoneType"):
        k_medoids(None, 2)
    with pytest.raises(TypeError, match="codes must be a tensor or an array of numbers, got str"):
        euclidean_distance_matrix("codes")
    with pytest.raises(ValueError, match="1 <= N <= 5,000"):
        euclidean_distance_matrix(np.zeros((5001, 2)))
    with pytest.raises(ValueError, match="1 <= N <= 5,000"):
        geodesic_distance_matrix(constant_metric(1.0), np.zeros((5001, 2)))
    with pytest.raises(TypeError, match="use_scipy must be True or False"):
        geodesic_distance_matrix(constant_metric(1.0), np.zeros((4, 2)), use_scipy=torch.zeros(2))


# ------------------------------------------------------------------------------------------------ scores
def test_scores_on_hand_computed_cases():
    a = [0, 0, 1, 1, 2, 2]
    for score in (adjusted_rand_index, normalized_mutual_information, purity):
        assert score(a, a) == pytest.approx(1.0)
        assert score(a, [5, 5, 3, 3, 9, 9]) == pytest.approx(1.0)  # a renaming
    # [0,0,1,1] vs [0,0,1,2]: index 1, expected 2·1/6, max 3/2 → ARI 4/7; MI ln 2, H = ln 2 and 1.5 ln 2 → NMI 0.8
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    assert normalized_mutual_information([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(0.8)
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert normalized_mutual_information([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-15)
    assert purity([0, 0, 1, 1], [0, 1, 0, 1]) == 0.5
    # Manning, Raghavan & Schütze, Introduction to Information Retrieval, Fig. 16.4: 17 points in 3 clusters
    clusters = [0] * 6 + [1] * 6 + [2] * 5
    classes = ["x"] * 5 + ["o"] + ["x"] + ["o"] * 4 + ["d"] + ["x"] * 2 + ["d"] * 3
    assert purity(clusters, classes) == pytest.approx(12 / 17)  # (5 + 4 + 3) / 17 ≈ 0.71
    assert normalized_mutual_information(clusters, classes) == pytest.approx(0.36, abs=0.005)  # the book's 0.36
    # pairs: 20 of 40 same-cluster pairs share a class; 44 same-class pairs; 136 pairs → (20 − 220/17)/(42 − 220/17)
    assert adjusted_rand_index(clusters, classes) == pytest.approx(60 / 247)
    assert contingency_table(clusters, classes).tolist() == [[0, 1, 5], [1, 4, 1], [3, 0, 2]]  # classes d, o, x
    # degenerate partitions
    assert adjusted_rand_index([0, 0, 0], [1, 1, 1]) == 1.0 and adjusted_rand_index([0, 1, 2], [0, 1, 2]) == 1.0
    assert adjusted_rand_index([0, 0, 0, 0], [0, 1, 2, 3]) == 0.0
    assert normalized_mutual_information([0, 0, 0], [1, 1, 1]) == 1.0
    assert normalized_mutual_information([0, 0, 0, 0], [0, 0, 1, 1]) == 0.0
    assert reliability([a, a, a]) == 1.0 and reliability([a]) == 1.0
    with pytest.raises(ValueError, match="same length"):
        adjusted_rand_index([0, 1], [0, 1, 2])


def test_scores_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        a, b = rng.integers(0, rng.integers(1, 6), n), rng.integers(0, rng.integers(1, 6), n)
        assert adjusted_rand_index(a, b) == pytest.approx(metrics.adjusted_rand_score(a, b), abs=1e-12)
        assert normalized_mutual_information(a, b) == pytest.approx(
            metrics.normalized_mutual_info_score(a, b, average_method="arithmetic"), abs=1e-10
        )


# ------------------------------------------------------------------------------------------------ table
def test_clustering_table_on_shipped_models(shipped):
    models, data = shipped
    table = clustering_table(models, data.test.x, data.test.y, k=3, seed=0, n_init=5, grid_n=48)
    print(json.dumps(table["results"], indent=1))
    assert json.dumps(table) == json.dumps(clustering_table(models, data.test.x, data.test.y, 3, 0, 5, 48))
    assert set(table["results"]) == {"vae/euclidean", "hvae/euclidean", "rhvae/euclidean", "rhvae/geodesic"}
    assert table["protocol"]["classes"] == [1, 2, 3] and table["protocol"]["n"] == len(data.test.y)
    for values in table["results"].values():
        assert -1 <= values["ari"] <= 1 and -1 <= values["reliability"] <= 1
        assert 0 <= values["nmi"] <= 1 and 1 / 3 <= values["purity"] <= 1
        assert values["n_restarts"] == 5 and 0 < values["share_of_restarts_at_best"] <= 1
        partition = np.asarray(values["partition"])  # the kept partition, scored as reported
        assert partition.shape == (len(data.test.y),) and len(np.unique(partition)) == 3
        assert adjusted_rand_index(partition, data.test.y.numpy()) == values["ari"]
    with pytest.raises(ValueError, match="x must"):
        clustering_table(models, data.test.x[:5], data.test.y, 3)


# ------------------------------------------------------------------------------------------------ claims
def _table(partitions: dict, ari: dict | None = None, restarts: dict | None = None) -> dict:
    """A clustering_table-like dict: method -> partition (and the ARI and restart agreement given)."""
    return {
        "results": {
            method: {
                "ari": (ari or {}).get(method, 0.5),
                "nmi": 0.5,
                "purity": 0.7,
                "reliability": (restarts or {}).get(method, 0.6),
                "partition": list(p),
            }
            for method, p in partitions.items()
        }
    }


def test_seed_agreement_is_the_mean_pairwise_ari_between_seeds():
    a = [0, 0, 1, 1, 2, 2]
    relabelled = [2, 2, 0, 0, 1, 1]  # the same partition under other cluster names
    other = [0, 1, 0, 1, 2, 2]
    tables = {0: _table({"m/euclidean": a}), 1: _table({"m/euclidean": relabelled}), 2: _table({"m/euclidean": other})}
    expected = np.mean([1.0, adjusted_rand_index(a, other), adjusted_rand_index(relabelled, other)])
    assert seed_agreement(tables) == {"m/euclidean": pytest.approx(expected, abs=1e-15)}
    assert seed_agreement({0: tables[0]}) == {"m/euclidean": 1.0}


def test_clustering_checks_on_known_rows():
    def rows(geo_ari, geo_restarts):
        table = _table(
            {"VAE/euclidean": [0], "RHVAE/euclidean": [0], "RHVAE/geodesic": [0]},
            ari={"VAE/euclidean": 0.4, "RHVAE/euclidean": 0.3, "RHVAE/geodesic": geo_ari},
            restarts={"RHVAE/euclidean": 0.6, "RHVAE/geodesic": geo_restarts},
        )
        return clustering_rows(table, "s")

    agreement = {"s": {"VAE/euclidean": 0.5, "RHVAE/euclidean": 0.4, "RHVAE/geodesic": 0.7}}
    names = {"s": ["VAE", "RHVAE"]}
    checks = clustering_checks({0: rows(0.5, 0.8), 1: rows(0.45, 0.7)}, agreement, names)
    assert len(checks) == 5 and all(checks.values())
    checks = clustering_checks({0: rows(0.35, 0.8), 1: rows(0.36, 0.7)}, agreement, names)  # beats its own codes only
    assert [("the VAE's codes" in n, ok) for n, ok in checks.items() if "(ARI)" in n] == [(True, False), (False, True)]
    checks = clustering_checks({0: rows(0.5, 0.8)}, agreement, names)  # one seed: nothing to agree across
    assert len(checks) == 3 and not any("model seeds" in n for n in checks)
    assert list(rows(0.5, 0.8)) == ["s · VAE euclidean", "s · RHVAE euclidean", "s · RHVAE geodesic"]
