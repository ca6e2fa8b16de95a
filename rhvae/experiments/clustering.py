r"""Clustering latent codes, measured: Euclidean against geodesic k-medoids (our own protocol).

The paper (Chadebec et al., arXiv 2010.11518) suggests that distances under the learned metric

    G⁻¹(z) = Σᵢ Mᵢ exp(−‖z − cᵢ‖²/T²) + λI,        G(z) = (G⁻¹(z))⁻¹,

should give *more reliable clustering* than Euclidean distances in the latent space: moving through the data is
cheap (G⁻¹ large, G small), crossing the empty space between groups of codes is expensive (G → I/λ). This module
is **our own protocol** (not the paper's) to measure that on real digits.

**Geodesic distances** (``geodesic_distance_matrix``). The Riemannian distance
d_G(a, b) = inf_γ ∫ √(γ̇ᵀ G(γ) γ̇) dt between codes is approximated by a shortest path on a graph:

* nodes: a regular grid of square cells over the codes' bounding box widened by ``margin`` × its span on every
  side (``rhvae.evaluation.geometry.latent_bounds``), n nodes along its longer side (``square_grid``), plus one
  node per code;
* edges: every grid node to its neighbours at the offsets (a, b) with max(|a|, |b|) ≤ ``radius`` and gcd(|a|, |b|) = 1
  (``radius=1``: the 8-connected grid; 2: 16 neighbours; 3: 32), every code to the 4 corners of its grid cell,
  and every two codes of the same or of adjacent cells (a 3 × 3 block of cells) directly;
* weights: the Riemannian length of the straight edge by the midpoint rule, √(Δzᵀ G(m) Δz) with m the edge's
  midpoint (the edges are short: the metric is nearly constant along each);
* distances: Dijkstra from every code node (``scipy.sparse.csgraph.dijkstra``, undirected), read at the code nodes.

Two errors, both measured in tests/experiments/test_clustering.py. The quadrature error of the midpoint rule shrinks
as h² with the cell size h. The *metrication* error of a grid does not shrink with h: a path made of grid moves
follows the direction θ of a straight segment only on average, and for a constant metric its length is that of the
segment times cos θ + (√2 − 1) sin θ on the 8-connected grid (0 ≤ θ ≤ 45° from an axis), at most
√(4 − 2√2) ≈ 1.0824 (θ = 22.5°): graph distances **overestimate by up to 8.2 %**; with ``radius=2`` by up to
≈ 2.7 %, with 3 by up to ≈ 1.3 %. The code-to-corner links add at most about one cell diagonal per end point to
the distance of codes more than one cell apart; codes in the same or adjacent cells are also joined by their
straight segment.

**Clustering** (``k_medoids``): PAM-style alternation on a distance matrix D — assign every point to its nearest
medoid, move every medoid to the member minimising the sum of distances to its cluster, until the medoids no longer
change — from ``n_init`` k-means++-like seedings (first medoid uniform, each next one with probability ∝ D(x)² to the
nearest chosen medoid) of one ``numpy.random.default_rng(seed)``; the partition of lowest total cost Σ D(x, medoid)
is kept.

**Scores** against the labels: the adjusted Rand index (Hubert & Arabie 1985), the normalised mutual information
with arithmetic normalisation NMI = I(A; B) / ((H(A) + H(B))/2), and the purity (1/n) Σ_clusters max_class n_ck.
**Reliability**: the mean ARI between the partitions of every two restarts — 1 when every seeding ends in the same
partition, lower when the result depends on the seeding.

**Table** (``clustering_table``): the codes μ(x) of every model's encoder; Euclidean k-medoids for every model,
and geodesic k-medoids under the learned metric for the RHVAE (2-D latent spaces: the grid graph is a plane; an
RHVAE of another latent dimension gets its Euclidean k-medoids only, and the table says so).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rhvae.evaluation.geometry import encoder_means, latent_bounds, require_2d_latent
from rhvae.experiments.tables import check_models_over_subsets, compare_over_seeds, over_seeds
from rhvae.models import check_models
from rhvae.models.metric import LearnedMetric, quadratic_form
from rhvae.models.rhvae import RHVAE
from rhvae.validation import as_array_tensor, check_bool, check_float, check_int, check_pixels

try:  # optional: a pure-Python heap Dijkstra replaces it
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra as _scipy_dijkstra
except ImportError:  # pragma: no cover - scipy is installed where the tests run
    coo_matrix = _scipy_dijkstra = None


# ------------------------------------------------------------------------------------------------ helpers
#: The most codes a distance matrix is built for: (N, N) float64 distances, and one Dijkstra per code.
MAX_CODES = 5000


def _double_metric(metric):
    if isinstance(metric, LearnedMetric) and metric.centroids.dtype != torch.float64:
        return LearnedMetric(
            metric.centroids.detach().double(), metric.M.detach().double(), metric.temperature, metric.regularization
        )
    if not callable(getattr(metric, "G", None)):
        raise ValueError(f"metric must have a G(z) method (e.g. a LearnedMetric), got {type(metric)}")
    return metric


#: What to use instead of the grid graph at d ≠ 2.
GEODESIC_ALTERNATIVE = (
    "euclidean_distance_matrix, or rhvae.evaluation.geometry.geodesic for the geodesic between two codes, at any "
    "latent_dim"
)


def _codes(codes, name: str = "codes", function: str = "geodesic_distance_matrix") -> np.ndarray:
    """Finite 2-D codes (N, 2), 1 <= N <= ``MAX_CODES``, as float64; codes of another latent dimension are refused
    in one line naming ``function`` (the grid graph is a plane) and the alternative."""
    codes = np.asarray(as_array_tensor(codes, name).double())
    if codes.ndim != 2 or not 1 <= codes.shape[0] <= MAX_CODES:
        raise ValueError(
            f"{name} must be an (N, 2) array of 2-D latent codes with 1 <= N <= {MAX_CODES:,}, got shape {codes.shape}"
        )
    require_2d_latent(codes.shape[1], f"{function} builds a 2-D grid graph", f"the {name}'", GEODESIC_ALTERNATIVE)
    if not np.isfinite(codes).all():
        raise ValueError(f"{name} must be finite")
    return codes


def _labels(labels, name: str) -> np.ndarray:
    if labels is None or isinstance(labels, (str, bytes)):  # labels may be names ("x", "o"), but not one string
        raise TypeError(f"{name} must be a 1-D array of labels, got {type(labels).__name__}")
    labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of labels, got shape {labels.shape}")
    return labels


def _edge_lengths(metric, starts: np.ndarray, ends: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """√(Δᵀ G(m) Δ), m = (start + end)/2, for edges (E, 2) → (E,)."""
    out = np.empty(len(starts))
    with torch.no_grad():
        for lo in range(0, len(starts), chunk):
            a = torch.from_numpy(starts[lo : lo + chunk])
            b = torch.from_numpy(ends[lo : lo + chunk])
            q = quadratic_form(metric.G(0.5 * (a + b)), b - a)
            out[lo : lo + chunk] = q.clamp_min(0.0).sqrt().numpy()
    return out


def grid_offsets(radius: int) -> list[tuple[int, int]]:
    """The neighbour offsets (a, b) ≠ 0 with max(|a|, |b|) ≤ radius and gcd(|a|, |b|) = 1, one of each ± pair
    (the graph is undirected): 4 offsets for radius 1 (8 neighbours), 8 for 2 (16), 16 for 3 (32)."""
    radius = check_int("radius", radius, 1, 8)
    offsets = []
    for a in range(0, radius + 1):
        for b in range(-radius, radius + 1):
            if (a == 0 and b <= 0) or math.gcd(a, abs(b)) != 1:
                continue
            offsets.append((a, b))
    return offsets


def _heap_dijkstra(n_nodes: int, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, sources) -> np.ndarray:
    """Shortest distances (len(sources), n_nodes) on the undirected graph with the given edges (binary heap)."""
    adjacency: list[list[tuple[int, float]]] = [[] for _ in range(n_nodes)]
    for r, c, w in zip(rows.tolist(), cols.tolist(), weights.tolist(), strict=True):
        adjacency[r].append((c, w))
        adjacency[c].append((r, w))
    out = np.full((len(sources), n_nodes), np.inf)
    for k, source in enumerate(sources):
        dist = out[k]
        dist[source] = 0.0
        heap = [(0.0, int(source))]
        while heap:
            d, u = heapq.heappop(heap)
            if d > dist[u]:
                continue
            for v, w in adjacency[u]:
                nd = d + w
                if nd < dist[v]:
                    dist[v] = nd
                    heapq.heappush(heap, (nd, v))
    return out


def square_grid(codes: np.ndarray, grid_n: int, margin: float) -> tuple[np.ndarray, tuple[int, int], float]:
    """The grid nodes (n_y · n_x, 2) (row-major in (y, x)), the shape (n_y, n_x) and the spacing h of a grid of
    *square* cells over the codes' box widened by ``margin`` × span (``latent_bounds``): ``grid_n`` nodes along the
    longer side, as many cells of the same size h as cover the shorter one (centred on it). Square cells keep the
    grid's directions at 0°, 45°, atan(1/2), … and so its metrication error at the stated bound. 2-D codes only."""
    if np.ndim(codes) != 2:
        raise ValueError(f"codes must be an (N, 2) array of 2-D latent codes, got shape {np.shape(codes)}")
    require_2d_latent(np.shape(codes)[1], "square_grid builds a 2-D grid", "the codes'", GEODESIC_ALTERNATIVE)
    box = latent_bounds(torch.from_numpy(codes), margin=margin).numpy().astype(np.float64)
    span = box[1] - box[0]
    h = float(span.max()) / (grid_n - 1)
    counts = [max(2, int(math.ceil(s / h - 1e-9)) + 1) for s in span]  # nodes along x and along y
    lows = [(box[0, d] + box[1, d]) / 2 - (counts[d] - 1) * h / 2 for d in range(2)]
    xs = lows[0] + h * np.arange(counts[0])
    ys = lows[1] + h * np.arange(counts[1])
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    return np.stack((gx.ravel(), gy.ravel()), 1), (counts[1], counts[0]), h


def _neighbouring_codes(cx: np.ndarray, cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs i < j of codes whose cells (cx, cy) differ by at most 1 in both indices."""
    cells: dict[tuple[int, int], list[int]] = {}
    for index, key in enumerate(zip(cx.tolist(), cy.tolist(), strict=True)):
        cells.setdefault(key, []).append(index)
    first, second = [], []
    for (x, y), members in cells.items():
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for other in cells.get((x + dx, y + dy), ()):
                    first.extend(members)
                    second.extend([other] * len(members))
    first, second = np.array(first, dtype=int), np.array(second, dtype=int)
    keep = first < second
    return first[keep], second[keep]


# ------------------------------------------------------------------------------------------------ distances
def geodesic_distance_matrix(
    metric,
    codes,
    grid_n: int = 64,
    margin: float = 0.1,
    radius: int = 1,
    use_scipy: bool = True,
) -> np.ndarray:
    """Approximate Riemannian distances d_G(zᵢ, zⱼ) between the 2-D ``codes`` (N, 2) under ``metric``, (N, N) float64.

    Shortest paths on a grid of square cells (``grid_n`` nodes along the longer side, ``square_grid``) over the
    codes' box (widened by ``margin`` × span on every side) whose edges — to the neighbours within ``radius``
    (1: 8-connected), from every code to its cell's 4 corners and between codes of the same or adjacent cells —
    are weighted by their midpoint-rule Riemannian length √(Δzᵀ G(m) Δz) (see the module docstring for the method
    and its error: up to +8.2 % for ``radius=1``). Dijkstra from every code: ``scipy.sparse.csgraph.dijkstra`` if
    scipy is installed and ``use_scipy``, else a binary-heap Dijkstra. The result is symmetric with a zero diagonal.
    Codes or a metric of another latent dimension than 2 are refused in one line (``GEODESIC_ALTERNATIVE``).
    """
    codes = _codes(codes)
    grid_n = check_int("grid_n", grid_n, 2, 2048)
    margin = check_float("margin", margin, 0.0, 10.0, low_inclusive=True)
    offsets = grid_offsets(radius)
    metric = _double_metric(metric)
    require_2d_latent(
        getattr(metric, "dim", 2),
        "geodesic_distance_matrix builds a 2-D grid graph",
        "the metric's",
        GEODESIC_ALTERNATIVE,
    )
    n_codes = len(codes)

    nodes, shape, h = square_grid(codes, grid_n, margin)
    n_y, n_x = shape
    index = np.arange(n_y * n_x).reshape(n_y, n_x)

    rows, cols = [], []
    for a, b in offsets:  # a along x (columns), b along y (rows)
        r0, r1 = max(0, -b), n_y - max(0, b)
        c0, c1 = 0, n_x - a
        if r1 <= r0 or c1 <= c0:
            continue
        rows.append(index[r0:r1, c0:c1].ravel())
        cols.append(index[r0 + b : r1 + b, c0 + a : c1 + a].ravel())

    # every code to the 4 corners of its cell (cells are clipped so that codes on the far edge use the last cell)
    origin = nodes[0]
    cx = np.clip(np.floor((codes[:, 0] - origin[0]) / h).astype(int), 0, n_x - 2)
    cy = np.clip(np.floor((codes[:, 1] - origin[1]) / h).astype(int), 0, n_y - 2)
    code_nodes = n_y * n_x + np.arange(n_codes)
    for dy in (0, 1):
        for dx in (0, 1):
            rows.append(code_nodes)
            cols.append(index[cy + dy, cx + dx])
    # codes in the same or in adjacent cells (3 × 3 block), directly
    i, j = _neighbouring_codes(cx, cy)
    rows.append(code_nodes[i])
    cols.append(code_nodes[j])

    rows, cols = np.concatenate(rows), np.concatenate(cols)
    points = np.concatenate((nodes, codes))
    weights = _edge_lengths(metric, points[rows], points[cols])
    # a zero weight (coincident codes) would be dropped by the sparse matrix: keep it tiny and positive instead
    weights = np.maximum(weights, 1e-300)
    n_nodes = len(points)
    if check_bool("use_scipy", use_scipy) and _scipy_dijkstra is not None:
        graph = coo_matrix((weights, (rows, cols)), shape=(n_nodes, n_nodes)).tocsr()
        dist = _scipy_dijkstra(graph, directed=False, indices=code_nodes)
    else:
        dist = _heap_dijkstra(n_nodes, rows, cols, weights, code_nodes)
    out = dist[:, code_nodes]
    out = 0.5 * (out + out.T)
    np.fill_diagonal(out, 0.0)
    return out


def euclidean_distance_matrix(codes) -> np.ndarray:
    """‖zᵢ − zⱼ‖ for the codes (N, d), (N, N) float64."""
    codes = np.asarray(as_array_tensor(codes, "codes").double())
    if codes.ndim != 2 or not 1 <= codes.shape[0] <= MAX_CODES:
        raise ValueError(f"codes must be an (N, d) array with 1 <= N <= {MAX_CODES:,}, got shape {codes.shape}")
    diff = codes[:, None, :] - codes[None, :, :]
    return np.sqrt((diff * diff).sum(-1))


# ------------------------------------------------------------------------------------------------ k-medoids
@dataclass
class KMedoidsResult:
    """The best partition of ``k_medoids`` and every restart's.

    ``labels`` (N,) cluster of every point, numbered 0 … k − 1 in order of first appearance; ``medoids`` (k,) the
    point index of every cluster's medoid; ``cost`` Σ D(x, medoid(x)); ``restart_labels`` and ``restart_costs``
    the partition and cost of every restart (``best`` is the index of the kept one, the first of lowest cost);
    ``iterations`` the alternations every restart took."""

    labels: np.ndarray
    medoids: np.ndarray
    cost: float
    best: int
    restart_labels: list[np.ndarray] = field(default_factory=list)
    restart_costs: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)


def _canonical(labels: np.ndarray, medoids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the clusters in order of first appearance along the points."""
    _, first = np.unique(labels, return_index=True)
    order = np.unique(labels)[np.argsort(first)]
    mapping = np.empty(len(medoids), dtype=int)
    mapping[order] = np.arange(len(order))
    new_medoids = np.empty_like(medoids)
    new_medoids[mapping[order]] = medoids[order]
    return mapping[labels], new_medoids


def _seed_medoids(distance: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++-like seeding: the first medoid uniform, every next one with probability ∝ D(x)² to its nearest
    chosen medoid (uniform among the unchosen points if all those distances are 0)."""
    n = len(distance)
    medoids = [int(rng.integers(n))]
    nearest = distance[medoids[0]].copy()
    for _ in range(1, k):
        weights = nearest**2
        weights[medoids] = 0.0
        total = weights.sum()
        if total > 0 and np.isfinite(total):
            choice = int(rng.choice(n, p=weights / total))
        else:
            free = np.setdiff1d(np.arange(n), medoids)
            choice = int(free[rng.integers(len(free))])
        medoids.append(choice)
        nearest = np.minimum(nearest, distance[choice])
    return np.array(medoids)


def _assign(distance: np.ndarray, medoids: np.ndarray) -> np.ndarray:
    labels = distance[:, medoids].argmin(1)
    labels[medoids] = np.arange(len(medoids))  # a medoid is in its own cluster (ties between duplicates)
    return labels


def _alternate(distance: np.ndarray, medoids: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray, int]:
    for iteration in range(1, max_iter + 1):
        labels = _assign(distance, medoids)
        new = medoids.copy()
        for c in range(len(medoids)):
            members = np.flatnonzero(labels == c)
            within = distance[np.ix_(members, members)].sum(1)
            best = members[int(np.argmin(within))]
            # keep the current medoid on ties: the alternation stops instead of cycling between equal-cost members
            if within[members == medoids[c]].item() > within.min():
                new[c] = best
        if np.array_equal(new, medoids):
            return labels, medoids, iteration
        medoids = new
    return _assign(distance, medoids), medoids, max_iter


def k_medoids(distance, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 100) -> KMedoidsResult:
    """PAM-style k-medoids on the distance matrix ``distance`` (N, N), best of ``n_init`` seeded restarts.

    Every restart seeds k medoids k-means++-like from one ``numpy.random.default_rng(seed)`` and alternates
    assignment to the nearest medoid and the medoid update (the member with the least total distance to its
    cluster) until the medoids are stable (at most ``max_iter`` times). The partition of least total cost
    Σ_x D(x, medoid(x)) is kept (the first on ties). Deterministic for a given seed.
    """
    distance = np.asarray(as_array_tensor(distance, "distance").double())
    if distance.ndim != 2 or distance.shape[0] != distance.shape[1] or distance.shape[0] < 1:
        raise ValueError(f"distance must be a square (N, N) matrix, got shape {distance.shape}")
    if not np.isfinite(distance).all() or (distance < 0).any():
        raise ValueError("distance must hold finite non-negative values")
    if not np.allclose(distance, distance.T, rtol=1e-9, atol=1e-12):
        raise ValueError("distance must be symmetric")
    n = len(distance)
    k = check_int("k", k, 1, n)
    seed = check_int("seed", seed, 0, 2**32 - 1)
    n_init = check_int("n_init", n_init, 1, 10_000)
    max_iter = check_int("max_iter", max_iter, 1, 100_000)
    rng = np.random.default_rng(seed)
    restarts, costs, iterations, medoid_sets = [], [], [], []
    for _ in range(n_init):
        labels, medoids, used = _alternate(distance, _seed_medoids(distance, k, rng), max_iter)
        labels, medoids = _canonical(labels, medoids)
        restarts.append(labels)
        medoid_sets.append(medoids)
        costs.append(float(distance[np.arange(n), medoids[labels]].sum()))
        iterations.append(used)
    best = int(np.argmin(costs))
    return KMedoidsResult(restarts[best], medoid_sets[best], costs[best], best, restarts, costs, iterations)


# ------------------------------------------------------------------------------------------------ scores
def contingency_table(labels_a, labels_b) -> np.ndarray:
    """n_ij = #{x : a(x) = i-th label of a, b(x) = j-th label of b}, (n_a, n_b) int64 (labels in sorted order)."""
    a, b = _labels(labels_a, "labels_a"), _labels(labels_b, "labels_b")
    if len(a) != len(b):
        raise ValueError(f"labels_a and labels_b must have the same length, got {len(a)} and {len(b)}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia.ravel(), ib.ravel()), 1)
    return table


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def adjusted_rand_index(labels_a, labels_b) -> float:
    """ARI = (Σᵢⱼ C(nᵢⱼ, 2) − E) / (½[Σᵢ C(aᵢ, 2) + Σⱼ C(bⱼ, 2)] − E), E = Σᵢ C(aᵢ, 2) Σⱼ C(bⱼ, 2) / C(n, 2), with
    nᵢⱼ the contingency table and aᵢ, bⱼ its row and column sums (Hubert & Arabie 1985). 1 for identical partitions
    (up to renaming), ≈ 0 for independent ones, negative below chance. When the denominator is 0 (both partitions a
    single cluster, or both all singletons) the partitions are identical and the value is 1."""
    table = contingency_table(labels_a, labels_b)
    n = int(table.sum())
    index = _pairs(table)
    sum_a, sum_b = _pairs(table.sum(1)), _pairs(table.sum(0))
    total = n * (n - 1) / 2
    expected = sum_a * sum_b / total if total > 0 else 0.0
    maximum = 0.5 * (sum_a + sum_b)
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_information(labels_a, labels_b) -> float:
    """NMI = I(A; B) / ((H(A) + H(B))/2) (arithmetic normalisation), natural logs, with
    I(A; B) = Σᵢⱼ (nᵢⱼ/n) log(n nᵢⱼ / (aᵢ bⱼ)) and H the entropies of the two partitions. In [0, 1]; 1 when
    both partitions are a single cluster (H(A) = H(B) = 0, identical), 0 when only one of them is."""
    table = contingency_table(labels_a, labels_b).astype(np.float64)
    n = table.sum()
    h_a, h_b = _entropy(table.sum(1)), _entropy(table.sum(0))
    if h_a == 0.0 and h_b == 0.0:
        return 1.0
    outer = table.sum(1)[:, None] * table.sum(0)[None, :]
    nz = table > 0
    mi = float((table[nz] / n * np.log(n * table[nz] / outer[nz])).sum())
    return float(min(max(mi / (0.5 * (h_a + h_b)), 0.0), 1.0))


def purity(predicted, truth) -> float:
    """(1/n) Σ_clusters max_class n_{cluster, class}: the share of points in the majority class of their cluster."""
    table = contingency_table(predicted, truth)
    return float(table.max(1).sum() / table.sum())


def reliability(partitions) -> float:
    """Mean ARI between every two of the ``partitions`` (a list of label arrays): 1 when all agree; 1 for a single
    partition (nothing to disagree with)."""
    partitions = list(partitions)
    if not partitions:
        raise ValueError("partitions must hold at least one partition")
    scores = [
        adjusted_rand_index(partitions[i], partitions[j])
        for i in range(len(partitions))
        for j in range(i + 1, len(partitions))
    ]
    return float(np.mean(scores)) if scores else 1.0


def scores(result: KMedoidsResult, truth) -> dict:
    """ARI, NMI and purity of the kept partition against ``truth``, the mean ARI of the restarts' partitions against
    ``truth``, the reliability (mean pairwise ARI between restarts), the share of restarts that found the kept
    partition and its cost: a JSON-ready dict."""
    truth = _labels(truth, "truth")
    same = [adjusted_rand_index(r, result.labels) == 1.0 for r in result.restart_labels]
    return {
        "ari": adjusted_rand_index(result.labels, truth),
        "nmi": normalized_mutual_information(result.labels, truth),
        "purity": purity(result.labels, truth),
        "restart_ari_mean": float(np.mean([adjusted_rand_index(r, truth) for r in result.restart_labels])),
        "reliability": reliability(result.restart_labels),
        "share_of_restarts_at_best": float(np.mean(same)),
        "cost": result.cost,
        "n_restarts": len(result.restart_labels),
    }


# ------------------------------------------------------------------------------------------------ table
def clustering_table(
    models: Mapping,
    x,
    y,
    k: int | None = None,
    seed: int = 0,
    n_init: int = 10,
    grid_n: int = 64,
    margin: float = 0.1,
    radius: int = 1,
) -> dict:
    """k-medoids of the codes μ(x) of every model, scored against the labels ``y`` (JSON-ready dict).

    ``models`` maps a name to a trained model; ``x`` (n, 784) real digits, ``y`` (n,) their labels; ``k`` clusters
    (default: the number of distinct labels); ``seed`` and ``n_init`` for ``k_medoids``; ``grid_n``, ``margin`` and
    ``radius`` for ``geodesic_distance_matrix``. For every model Euclidean k-medoids (``"<name>/euclidean"``), for
    every RHVAE also geodesic k-medoids under its learned metric ``model.metric()`` (``"<name>/geodesic"``).

    Returns ``{"protocol": {...}, "results": {method: scores}}`` with the keys of ``scores`` (ari, nmi, purity,
    restart_ari_mean, reliability, share_of_restarts_at_best, cost, n_restarts) and the kept ``partition`` (one
    cluster label per row of ``x``).

    The geodesic distances are a 2-D grid graph: an RHVAE of another latent dimension gets its Euclidean k-medoids
    only, and ``protocol["geodesic_skipped"]`` (present only then) says which models and why.
    """
    check_models(models)
    first = next(iter(models.values()))
    x = check_pixels(as_array_tensor(x, "x"), "x", first.input_dim, dtype=next(first.parameters()).dtype)
    y = _labels(y, "y")
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be (n, D) with one label per row of y, got {tuple(x.shape)} and {y.shape}")
    k = len(np.unique(y)) if k is None else check_int("k", k, 1, len(y))
    results, skipped = {}, {}
    for name, model in models.items():
        codes = encoder_means(model, x)
        runs = {"euclidean": euclidean_distance_matrix(codes)}
        if isinstance(model, RHVAE) and model.latent_dim != 2:
            skipped[name] = f"latent_dim {model.latent_dim}: the geodesic distances are a 2-D grid graph"
        elif isinstance(model, RHVAE):
            runs["geodesic"] = geodesic_distance_matrix(
                model.metric(), codes, grid_n=grid_n, margin=margin, radius=radius
            )
        for method, distance in runs.items():
            result = k_medoids(distance, k, seed=seed, n_init=n_init)
            results[f"{name}/{method}"] = {**scores(result, y), "partition": result.labels.tolist()}
    protocol = {
        "name": "k-medoids of latent codes (own protocol, rhvae.experiments.clustering)",
        "n": len(y),
        "k": k,
        "classes": [int(c) if np.issubdtype(type(c), np.integer) else str(c) for c in np.unique(y)],
        "seed": seed,
        "n_init": n_init,
        "grid_n": grid_n,
        "margin": margin,
        "radius": radius,
        "models": {name: type(model).__name__ for name, model in models.items()},
    }
    if skipped:  # only then, so that the tables of 2-D models stay as they were
        protocol["geodesic_skipped"] = skipped
    return {"protocol": protocol, "results": results}


# ------------------------------------------------------------------------------------------------ claims
ROW_SCORES = ("ari", "nmi", "purity", "reliability")


def clustering_rows(table: Mapping, subset: str) -> dict[str, dict]:
    """The rows of one ``clustering_table`` for ``rhvae.experiments.tables.over_seeds``:
    ``"<subset> · <name> <euclidean|geodesic>"`` → ARI, NMI, purity and the agreement across restarts."""
    return {
        f"{subset} · {method.replace('/', ' ')}": {key: values[key] for key in ROW_SCORES}
        for method, values in table["results"].items()
    }


def seed_agreement(tables_by_seed: Mapping[int, Mapping]) -> dict[str, float]:
    """Per method (``"<name>/<euclidean|geodesic>"``): the mean ARI between the kept partitions of every two seeds
    (``reliability``): the models of different seeds encode the same digits, so their clusterings can be compared
    point by point. 1 for a single seed."""
    methods = set.intersection(*(set(t["results"]) for t in tables_by_seed.values()))
    return {
        method: reliability([np.asarray(t["results"][method]["partition"]) for t in tables_by_seed.values()])
        for method in sorted(methods)
    }


def clustering_checks(
    per_seed: Mapping[int, Mapping[str, Mapping]],
    agreement: Mapping[str, Mapping[str, float]],
    subsets: Mapping[str, Sequence[str]],
) -> dict:
    """The checks of the claim "the learned metric gives more reliable clustering" (our own measurable reading),
    per subset (``subsets``: subset → model names, the RHVAE's named "RHVAE"), on the per-seed ``clustering_rows``
    (``rhvae.experiments.tables.compare_over_seeds``: on the mean over seeds) and the ``seed_agreement`` of each
    subset (``agreement``: subset → method → value):

    * geodesic k-medoids of the RHVAE agree better with the labels (ARI) than Euclidean k-medoids of the RHVAE's
      codes and of every other model's codes;
    * they depend less on the seeding (agreement across restarts) than the RHVAE's Euclidean k-medoids;
    * they agree better across model seeds than every Euclidean k-medoids (with two seeds or more).
    """
    checks = {}
    for subset, names in subsets.items():
        rows = {seed: {label.split(" · ")[1]: r for label, r in t.items() if label.startswith(f"{subset} · ")}
                for seed, t in per_seed.items()}  # fmt: skip
        geo = "RHVAE geodesic"
        for name in names:
            ok, seeds = compare_over_seeds(rows, "ari", geo, f"{name} euclidean")
            checks[f"{subset}: geodesic k-medoids of the RHVAE agree with the labels at least as well (ARI) as "
                   f"Euclidean k-medoids of the {name}'s codes (in {seeds})"] = ok  # fmt: skip
        ok, seeds = compare_over_seeds(rows, "reliability", geo, "RHVAE euclidean")
        checks[
            f"{subset}: they agree across restarts at least as well as the RHVAE's Euclidean k-medoids (in {seeds})"
        ] = ok
        seeds_agree = agreement.get(subset, {})
        for name in names if len(per_seed) > 1 else ():  # one seed: nothing to agree with
            mine, other = seeds_agree.get("RHVAE/geodesic"), seeds_agree.get(f"{name}/euclidean")
            checks[
                f"{subset}: they agree across model seeds at least as well as the {name}'s Euclidean k-medoids "
                f"({_number(mine)} vs {_number(other)})"
            ] = mine is not None and other is not None and mine >= other
    return checks


def clustering_summary(rows: Mapping[int, Mapping[str, Mapping]], agreement: Mapping[str, Mapping[str, float]]) -> dict:
    """The table of the notebook and the report: ``over_seeds`` of the per-seed ``clustering_rows`` (``ROW_SCORES``,
    mean ± std over seeds) with each row's ``seed_agreement`` beside it, one value over the seeds (not a mean of
    per-seed values), from ``clustering_over_seeds``."""
    summary = over_seeds(rows, ROW_SCORES)
    for subset, by_method in agreement.items():
        for method, value in by_method.items():
            summary[f"{subset} · {method.replace('/', ' ')}"]["seed_agreement"] = {"mean": value, "std": None}
    return summary


def clustering_over_seeds(models: Mapping, data: Mapping, **options) -> tuple[dict, dict, dict]:
    """``clustering_table`` of every subset and seed: ``models[subset][seed]`` the models (name → model) of that
    seed, ``data[subset]`` its ``ExperimentData`` (all its digits, train and test, are clustered), ``options`` those
    of ``clustering_table``. Returns (tables {subset: {seed: table}}, rows {seed: {row: scores}} for ``over_seeds``,
    agreement {subset: ``seed_agreement``})."""
    check_models_over_subsets(models, data)
    tables, rows, agreement = {}, {}, {}
    for subset, by_seed in models.items():
        x = torch.cat([data[subset].train.x, data[subset].test.x])
        y = torch.cat([data[subset].train.y, data[subset].test.y])
        tables[subset] = {
            seed: clustering_table(by_name, x, y, seed=seed, **options) for seed, by_name in by_seed.items() if by_name
        }
        for seed, table in tables[subset].items():
            rows.setdefault(seed, {}).update(clustering_rows(table, subset))
        agreement[subset] = seed_agreement(tables[subset]) if tables[subset] else {}
    return tables, rows, agreement


def _number(value) -> str:
    return "–" if value is None else f"{value:.3f}"


__all__ = [
    "ROW_SCORES",
    "clustering_checks",
    "clustering_over_seeds",
    "clustering_summary",
    "clustering_rows",
    "seed_agreement",
    "KMedoidsResult",
    "adjusted_rand_index",
    "clustering_table",
    "contingency_table",
    "euclidean_distance_matrix",
    "geodesic_distance_matrix",
    "grid_offsets",
    "k_medoids",
    "normalized_mutual_information",
    "purity",
    "reliability",
    "scores",
    "square_grid",
]
