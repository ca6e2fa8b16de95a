r"""Latent interpolations, measured: geodesics of the RHVAE metric against straight lines (our own protocol).

The paper (Chadebec et al., arXiv 2010.11518) argues that the learned metric

    G⁻¹(z) = Σᵢ Mᵢ exp(−‖z − cᵢ‖²/T²) + λI,        G(z) = (G⁻¹(z))⁻¹,

gives *meaningful interpolations*: geodesics that follow the data instead of crossing empty latent regions. It
shows pictures, not numbers. This module is **our own protocol** (not the paper's) to put numbers on that claim.

**Lengths.** A path is a polyline z₀ … z_{m−1} in the latent space R^d (any d: the geodesics are optimised paths,
not a grid). Its Riemannian length under G is approximated with the midpoint rule on every segment,
Δz_k = z_{k+1} − z_k, m_k = (z_k + z_{k+1})/2:

    L_G(z) ≈ Σ_k √(Δz_kᵀ G(m_k) Δz_k),        L_E(z) = Σ_k ‖Δz_k‖ (metric ``None``: G = I).

With G⁻¹ = λI (far from every centroid) G = I/λ and L_G = L_E/√λ exactly.

**Paths** between two codes z_a = μ(x_a), z_b = μ(x_b) (encoder means of two test digits):

* ``straight_line``: z(t) = (1 − t) z_a + t z_b;
* ``geodesic_path``: the discrete minimiser of the energy E = (m − 1) Σ_k Δz_kᵀ G(m_k) Δz_k with fixed end points
  (``rhvae.evaluation.geometry.geodesic``: L-BFGS from the straight line, float64), computed with
  ``max(n, resolution)`` points and resampled at n points of equal Riemannian arc length (``resample_equal``).
  It is a *local* minimiser reached from the straight line, so L_G(geodesic) ≤ L_G(line) up to the quadrature and
  the resampling (which only cuts corners: a chord is never longer than the arc it replaces under a constant G).

**Measures of one path** (``path_measures``). The path is first resampled at n *frames* of equal arc length under
the metric used (equal Riemannian spacing under G; equal Euclidean spacing when the metric is ``None``, which for a
straight line is t = k/(n − 1)), and every frame is decoded to its decoder mean x_k = σ(π(z_k)) ∈ [0, 1]^D:

* ``riemannian_length`` L_G (``None`` without a metric) and ``euclidean_length`` L_E of the path;
* ``smoothness``: (1/(n − 2)) Σ_k (1/D) ‖x_{k+1} − 2x_k + x_{k−1}‖², the mean squared second difference of
  consecutive decoded frames (mean over pixels and over interior frames): 0 for frames that change linearly, large
  for a sudden jump between two frames;
* ``confidence_mean`` and ``confidence_min``: the mean and the minimum over frames of the quality classifier's
  top-class probability max_c p(c | x_k) (``rhvae.experiments.quality``): how digit-like the frames stay;
* ``class_switches``: the number of k with argmax_c p(c | x_{k+1}) ≠ argmax_c p(c | x_k);
* ``data_distance_mean`` and ``data_distance_max``: the mean and maximum over frames of min_j ‖z_k − c_j‖, the
  Euclidean latent distance to the nearest training code: how far the path strays from the data.

**Table** (``interpolation_table``): ``n_pairs`` pairs of test digits of the same class and ``n_pairs`` pairs of
different classes (``pair_indices``, seeded); for the RHVAE its geodesic and its straight line (both measured under
its metric), for every other model (VAE, HVAE) its straight line (Euclidean spacing, no metric). Every measure is
averaged over the pairs of each (path kind, same/cross class) cell.

Comparisons across models are of *decoded* quantities only (smoothness, confidence, switches): the latent spaces
of different models are different spaces, so their lengths and data distances are not comparable with each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from rhvae.evaluation.geometry import encoder_means, geodesic
from rhvae.experiments.tables import check_models_over_subsets, compare_over_seeds
from rhvae.models import check_model, check_models
from rhvae.models.metric import LearnedMetric, quadratic_form
from rhvae.models.rhvae import RHVAE
from rhvae.validation import as_array_tensor, check_int, check_pixels

MEASURES = (
    "riemannian_length",
    "euclidean_length",
    "smoothness",
    "confidence_mean",
    "confidence_min",
    "class_switches",
    "data_distance_mean",
    "data_distance_max",
)
"""The keys of ``path_measures`` that ``interpolation_table`` averages over the pairs."""


# ------------------------------------------------------------------------------------------------ inputs
#: The most points of one path (frames, resolution of a geodesic): each is decoded to a 784-pixel image.
MAX_POINTS = 10_000


def as_double_metric(metric):
    """``metric`` evaluated in float64: a float64 copy of a ``LearnedMetric`` (same cᵢ, Mᵢ, T, λ); ``None`` and any
    other object with a ``G(z)`` method are returned unchanged."""
    if isinstance(metric, LearnedMetric) and metric.centroids.dtype != torch.float64:
        return LearnedMetric(
            metric.centroids.detach().double(), metric.M.detach().double(), metric.temperature, metric.regularization
        )
    if metric is not None and not callable(getattr(metric, "G", None)):
        raise ValueError(f"metric must be None or have a G(z) method (e.g. a LearnedMetric), got {type(metric)}")
    return metric


def _path(path, name: str = "path", min_points: int = 2) -> torch.Tensor:
    """A float64 polyline (m, d) with m >= ``min_points`` finite points, or ValueError naming ``name``."""
    path = as_array_tensor(path, name)
    if path.ndim != 2 or path.shape[0] < min_points or path.shape[1] < 1:
        raise ValueError(f"{name} must be an (m >= {min_points}, d) array of points, got shape {tuple(path.shape)}")
    path = path.double()
    if not torch.isfinite(path).all():
        raise ValueError(f"{name} must be finite")
    return path


def _point(z, name: str) -> torch.Tensor:
    z = as_array_tensor(z, name)
    if z.ndim == 2 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 1 or z.shape[0] < 1:
        raise ValueError(f"{name} must be one latent point (d,), got shape {tuple(z.shape)}")
    z = z.double()
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} must be finite")
    return z


def _endpoints(z0, z1) -> tuple[torch.Tensor, torch.Tensor]:
    z0, z1 = _point(z0, "z0"), _point(z1, "z1")
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same dimension, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    return z0, z1


# ------------------------------------------------------------------------------------------------ lengths
def segment_lengths(metric, path) -> torch.Tensor:
    """√(Δz_kᵀ G(m_k) Δz_k) for every segment of the polyline ``path`` (m, d), m_k the segment's midpoint; ‖Δz_k‖
    for ``metric=None``. Shape (m − 1,), float64."""
    path = _path(path)
    delta = path[1:] - path[:-1]
    metric = as_double_metric(metric)
    if metric is None:
        return delta.norm(dim=-1)
    if getattr(metric, "dim", path.shape[1]) != path.shape[1]:
        raise ValueError(f"path has dimension {path.shape[1]}, the metric {metric.dim}")
    with torch.no_grad():
        squared = quadratic_form(metric.G(0.5 * (path[1:] + path[:-1])), delta)
    return squared.clamp_min(0.0).sqrt()


def cumulative_length(metric, path) -> torch.Tensor:
    """Arc length s_k from z₀ to z_k along the polyline (midpoint rule, see ``segment_lengths``), shape (m,), s₀ = 0."""
    lengths = segment_lengths(metric, path)
    return torch.cat((lengths.new_zeros(1), lengths.cumsum(0)))


def riemannian_length(metric, path) -> float:
    """L_G = Σ_k √(Δz_kᵀ G(m_k) Δz_k) of the polyline ``path`` (m, d), G = (G⁻¹)⁻¹ at the segment midpoints m_k
    (Euclidean length Σ_k ‖Δz_k‖ for ``metric=None``). For G⁻¹ = λI it is the Euclidean length / √λ."""
    return float(segment_lengths(metric, path).sum())


def euclidean_length(path) -> float:
    """L_E = Σ_k ‖z_{k+1} − z_k‖ of the polyline ``path`` (m, d)."""
    return riemannian_length(None, path)


# ------------------------------------------------------------------------------------------------ paths
def straight_line(z0, z1, n: int) -> torch.Tensor:
    """n equally spaced points z(t_k) = (1 − t_k) z0 + t_k z1, t_k = k/(n − 1), as (n, d) float64 (z0, z1: (d,))."""
    n = check_int("n", n, 2, MAX_POINTS)
    z0, z1 = _endpoints(z0, z1)
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)[:, None]
    path = (1 - t) * z0 + t * z1
    path[0], path[-1] = z0, z1  # exactly the requested end points
    return path


def geodesic_path(metric, z0, z1, n: int, resolution: int = 32, steps: int = 300) -> torch.Tensor:
    """A discrete geodesic of G from z0 to z1 as n points (n, d) float64 at equal Riemannian arc length.

    ``rhvae.evaluation.geometry.geodesic`` minimises the discrete energy over the interior of a path of
    ``max(n, resolution)`` points (at most ``steps`` L-BFGS iterations, from the straight line); the result is
    resampled at n points of equal arc length under G (``resample_equal``). The end points are exactly z0 and z1.
    """
    if metric is None:
        raise ValueError("metric must be a Riemannian metric (e.g. model.metric()), got None")
    n = check_int("n", n, 2, MAX_POINTS)
    resolution = check_int("resolution", resolution, 3, MAX_POINTS)
    steps = check_int("steps", steps, 1, 100_000)
    z0, z1 = _endpoints(z0, z1)
    metric = as_double_metric(metric)
    if getattr(metric, "dim", z0.shape[0]) != z0.shape[0]:
        raise ValueError(f"z0 has dimension {z0.shape[0]}, the metric {metric.dim}")
    result = geodesic(metric, z0, z1, n_points=max(n, resolution), steps=steps)
    path = result.path.detach().double()
    return resample_equal(metric, path, n)


def resample_equal(metric, path, n: int) -> torch.Tensor:
    """n points (n, d) float64 on the polyline ``path`` (m, d) at equal arc length s_k = k L / (n − 1).

    Arc length is Riemannian under ``metric`` with the midpoint rule (G is taken constant on each segment, so arc
    length grows linearly along a segment and the point at s lies at fraction (s − s_j)/ℓ_j of segment j), or
    Euclidean for ``metric=None``. The first and last points are the path's. A path of zero length gives n copies
    of its first point.
    """
    n = check_int("n", n, 2, MAX_POINTS)
    path = _path(path)
    s = cumulative_length(metric, path)
    total = float(s[-1])
    if total <= 0.0 or not math.isfinite(total):
        if not math.isfinite(total):
            raise ValueError("path has an infinite or undefined length under the metric")
        return path[:1].expand(n, -1).clone()
    targets = torch.linspace(0.0, total, n, dtype=torch.float64)
    # segment j with s_j <= target < s_{j+1} (zero-length segments are skipped by searchsorted on the right)
    j = (torch.searchsorted(s, targets, right=True) - 1).clamp(0, len(path) - 2)
    seg = (s[j + 1] - s[j]).clamp_min(1e-300)
    frac = ((targets - s[j]) / seg).clamp(0.0, 1.0)[:, None]
    out = path[j] + frac * (path[j + 1] - path[j])
    out[0], out[-1] = path[0], path[-1]
    return out


# ------------------------------------------------------------------------------------------------ measures
def _second_difference_energy(frames: torch.Tensor) -> float:
    """(1/(n − 2)) Σ_k mean_pixels (x_{k+1} − 2x_k + x_{k−1})², 0 for fewer than 3 frames."""
    if len(frames) < 3:
        return 0.0
    second = frames[2:] - 2.0 * frames[1:-1] + frames[:-2]
    return float((second * second).mean())


@torch.no_grad()
def path_measures(model, path, classifier, train_codes, metric=None, n_frames: int | None = None) -> dict:
    """The measures of one latent path (see the module docstring), a JSON-ready dict of floats and ints.

    ``path`` (m, d) is a polyline in the latent space of ``model``; ``classifier`` has ``predict_proba(images)`` →
    (n, 10) (``rhvae.experiments.quality.load_classifier()``); ``train_codes`` (N, d) are the model's codes of its
    training digits; ``metric`` is the Riemannian metric of that latent space (``None``: Euclidean). The path is
    resampled at ``n_frames`` (default m) frames of equal arc length under ``metric`` before it is decoded.

    Keys: ``riemannian_length`` (None without a metric), ``euclidean_length``, ``smoothness``,
    ``confidence_mean``, ``confidence_min``, ``class_switches``, ``data_distance_mean``, ``data_distance_max``,
    ``start_class``, ``end_class`` (the classifier's classes of the first and last frames) and ``n_frames``.
    """
    check_model(model)
    if not callable(getattr(classifier, "predict_proba", None)):
        raise TypeError(f"classifier must have a predict_proba(images) method, got {type(classifier).__name__}")
    path = _path(path)
    n_frames = len(path) if n_frames is None else check_int("n_frames", n_frames, 2, MAX_POINTS)
    codes = as_array_tensor(train_codes, "train_codes")
    if codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] != path.shape[1]:
        raise ValueError(
            f"train_codes must be (N >= 1, {path.shape[1]}) like the path's points, got shape {tuple(codes.shape)}"
        )
    if not callable(getattr(classifier, "predict_proba", None)):
        raise ValueError("classifier must have a predict_proba(images) method (rhvae.experiments.quality)")
    metric = as_double_metric(metric)
    frames_z = resample_equal(metric, path, n_frames)
    dtype = next(model.parameters()).dtype
    frames = model.decode(frames_z.to(dtype)).double()  # (n, D) decoder means in [0, 1]
    proba = torch.as_tensor(classifier.predict_proba(frames.float())).double()
    top, predicted = proba.max(-1)
    nearest = torch.cdist(frames_z, codes.double()).min(1).values
    return {
        "riemannian_length": None if metric is None else riemannian_length(metric, path),
        "euclidean_length": euclidean_length(path),
        "smoothness": _second_difference_energy(frames),
        "confidence_mean": float(top.mean()),
        "confidence_min": float(top.min()),
        "class_switches": int((predicted[1:] != predicted[:-1]).sum()),
        "data_distance_mean": float(nearest.mean()),
        "data_distance_max": float(nearest.max()),
        "start_class": int(predicted[0]),
        "end_class": int(predicted[-1]),
        "n_frames": int(n_frames),
    }


# ------------------------------------------------------------------------------------------------ pairs
#: The most labels ``pair_indices`` enumerates the pairs of (at 10,000: a 0.1 GB mask and 0.8 GB of index pairs).
MAX_PAIR_LABELS = 10_000


def pair_indices(labels, n_pairs: int, same_class: bool, seed: int = 0) -> list[tuple[int, int]]:
    """``n_pairs`` distinct unordered pairs (i, j), i < j, of indices into ``labels`` (n,) with labels[i] == labels[j]
    (``same_class=True``) or labels[i] != labels[j] (``same_class=False``), drawn uniformly without replacement
    from all such pairs with ``numpy.random.default_rng(seed)``: the same arguments give the same pairs. Returned
    in drawing order as Python ints. ValueError if fewer than ``n_pairs`` such pairs exist."""
    labels = np.asarray(as_array_tensor(labels, "labels"))
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    if len(labels) > MAX_PAIR_LABELS:  # every pair is enumerated: an n x n mask, then n (n - 1) / 2 index pairs
        raise ValueError(
            f"labels must hold at most {MAX_PAIR_LABELS} labels (every pair is enumerated: more than "
            f"{len(labels) ** 2 / 2**30:.0f} GiB here), got {len(labels)}"
        )
    n_pairs = check_int("n_pairs", n_pairs, 1)
    seed = check_int("seed", seed, 0, 2**32 - 1)
    if not isinstance(same_class, (bool, np.bool_)):
        raise ValueError(f"same_class must be True or False, got {same_class!r}")
    i, j = np.triu_indices(len(labels), k=1)
    keep = (labels[i] == labels[j]) if same_class else (labels[i] != labels[j])
    i, j = i[keep], j[keep]
    if len(i) < n_pairs:
        kind = "same-class" if same_class else "cross-class"
        raise ValueError(f"n_pairs={n_pairs} is more than the {len(i)} {kind} pairs of the labels")
    chosen = np.random.default_rng(seed).choice(len(i), size=n_pairs, replace=False)
    return [(int(i[c]), int(j[c])) for c in chosen]


# ------------------------------------------------------------------------------------------------ table
def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def interpolation_table(
    models: Mapping,
    rhvae_metric,
    x_test,
    y_test,
    train_codes_by_name: Mapping,
    classifier,
    n_pairs: int = 5,
    n_points: int = 16,
    seed: int = 0,
    resolution: int = 32,
) -> dict:
    """Interpolations between pairs of test digits for every model, measured and averaged (JSON-ready dict).

    ``models`` maps a name to a trained model (``VAE``, ``HVAE`` or ``RHVAE``); ``rhvae_metric`` is the metric of the
    one RHVAE among them (``None``: its ``model.metric()``); ``x_test`` (n, 784) and ``y_test`` (n,) are real test
    digits and labels; ``train_codes_by_name[name]`` (N, d) the model's codes of its training digits; ``classifier``
    the quality classifier. For ``n_pairs`` same-class and ``n_pairs`` cross-class pairs (``pair_indices`` with
    ``seed``), the end points are the encoder means μ(x_i), μ(x_j) of each model; paths have ``n_points`` points.

    Returns ``{"protocol": {...}, "pairs": {"same_class": [[i, j], …], "cross_class": …}, "paths": {kind: {"same_class":
    {measure: mean}, "cross_class": …}}, "geodesic_vs_line": {...}}`` with path kinds ``"<name>/geodesic"`` and
    ``"<name>/line"`` for the RHVAE and ``"<name>/line"`` for the others; each cell holds the mean over its pairs of
    every measure of ``MEASURES`` (``riemannian_length`` None for the models without a metric) and ``n_pairs``.
    ``geodesic_vs_line`` gives, per class relation, the mean and maximum over pairs of L_G(geodesic) / L_G(line).
    """
    check_models(models)
    n_points = check_int("n_points", n_points, 2, MAX_POINTS)
    resolution = check_int("resolution", resolution, 3, MAX_POINTS)
    dim = next(iter(models.values())).input_dim
    x_test = check_pixels(as_array_tensor(x_test, "x_test"), "x_test", dim, min_images=2)
    y_test = as_array_tensor(y_test, "y_test")
    if not isinstance(train_codes_by_name, Mapping):
        raise TypeError(
            f"train_codes_by_name must be a dict of name -> codes, got {type(train_codes_by_name).__name__}"
        )
    if x_test.ndim != 2 or y_test.ndim != 1 or len(x_test) != len(y_test):
        raise ValueError(
            f"x_test must be (n, D) and y_test (n,) with the same n, "
            f"got {tuple(x_test.shape)} and {tuple(y_test.shape)}"
        )
    rhvaes = [name for name, model in models.items() if isinstance(model, RHVAE)]
    if rhvae_metric is not None and len(rhvaes) != 1:
        raise ValueError(f"rhvae_metric needs exactly one RHVAE among the models, got {len(rhvaes)}")
    missing = [name for name in models if name not in train_codes_by_name]
    if missing:
        raise ValueError(f"train_codes_by_name has no codes for {missing}")
    pairs = {
        "same_class": pair_indices(y_test, n_pairs, True, seed),
        "cross_class": pair_indices(y_test, n_pairs, False, seed),
    }
    per_kind: dict[str, dict[str, list[dict]]] = {}
    ratios: dict[str, list[float]] = {relation: [] for relation in pairs}
    for name, model in models.items():
        codes = encoder_means(model, x_test)
        train_codes = as_array_tensor(train_codes_by_name[name], f"train_codes_by_name[{name!r}]").double()
        metric = None
        if name in rhvaes:
            metric = as_double_metric(model.metric() if rhvae_metric is None else rhvae_metric)
        for relation, chosen in pairs.items():
            for i, j in chosen:
                line = straight_line(codes[i], codes[j], n_points)
                measured = {"line": path_measures(model, line, classifier, train_codes, metric)}
                if metric is not None:
                    path = geodesic_path(metric, codes[i], codes[j], n_points, resolution=resolution)
                    measured["geodesic"] = path_measures(model, path, classifier, train_codes, metric)
                    line_length = measured["line"]["riemannian_length"]
                    if line_length > 0:
                        ratios[relation].append(measured["geodesic"]["riemannian_length"] / line_length)
                for kind, values in measured.items():
                    per_kind.setdefault(f"{name}/{kind}", {r: [] for r in pairs})[relation].append(values)
    paths = {
        kind: {
            relation: {"n_pairs": len(rows), **{m: _mean(row[m] for row in rows) for m in MEASURES}}
            for relation, rows in by_relation.items()
        }
        for kind, by_relation in sorted(per_kind.items())
    }
    return {
        "protocol": {
            "name": "latent interpolations (own protocol, rhvae.experiments.interpolation)",
            "n_pairs": n_pairs,
            "n_points": n_points,
            "seed": seed,
            "geodesic_resolution": resolution,
            "frames": "equal Riemannian arc length under the RHVAE metric; equal Euclidean spacing without a metric",
            "models": {name: type(model).__name__ for name, model in models.items()},
        },
        "pairs": {relation: [list(p) for p in chosen] for relation, chosen in pairs.items()},
        "paths": paths,
        "geodesic_vs_line": {
            relation: {"n_pairs": len(r), "mean_ratio": _mean(r), "max_ratio": max(r) if r else None}
            for relation, r in ratios.items()
        },
    }


# ------------------------------------------------------------------------------------------------ claims
BEND_RATIO = 0.95
"""Our threshold: a geodesic at least 5 % shorter under G than the straight line between the same codes counts as
bent by the metric. Below it the two paths differ; above it they nearly coincide, and so do their measures."""
PATH_ORDER = ("line", "geodesic")


@torch.no_grad()
def decoded_paths(models: Mapping, x_a, x_b, n_points: int = 16, resolution: int = 32) -> dict[str, torch.Tensor]:
    """The decoded frames (n_points, D) of every model's paths between the codes μ(x_a), μ(x_b) of two images
    (D,): ``"<name> line"`` for every model and ``"<name> geodesic"`` for an RHVAE, resampled at equal arc length
    under the model's metric (Euclidean without one), as ``path_measures`` decodes them."""
    n_points = check_int("n_points", n_points, 2, MAX_POINTS)
    check_models(models)
    resolution = check_int("resolution", resolution, 3, MAX_POINTS)
    dim = next(iter(models.values())).input_dim
    x_a, x_b = as_array_tensor(x_a, "x_a"), as_array_tensor(x_b, "x_b")
    for name, image in (("x_a", x_a), ("x_b", x_b)):
        if image.shape != (dim,):
            raise ValueError(f"{name} must be one flattened image of shape ({dim},), got {tuple(image.shape)}")
        check_pixels(image[None], name, dim)
    x = torch.stack([x_a, x_b])
    decoded = {}
    for name, model in models.items():
        z_a, z_b = encoder_means(model, x)
        metric = as_double_metric(model.metric()) if isinstance(model, RHVAE) else None
        paths = {"line": straight_line(z_a, z_b, n_points)}
        if metric is not None:
            paths["geodesic"] = geodesic_path(metric, z_a, z_b, n_points, resolution=resolution)
        dtype = next(model.parameters()).dtype
        for kind in PATH_ORDER:
            if kind in paths:
                frames = resample_equal(metric, paths[kind], n_points)
                decoded[f"{name} {kind}"] = model.decode(frames.to(dtype)).float()
    return decoded


def interpolation_rows(table: Mapping, subset: str) -> dict[str, dict]:
    """The rows of one ``interpolation_table`` for ``rhvae.experiments.tables.over_seeds``:
    ``"<subset> · <name> <line|geodesic> · <same|cross> class"`` → its mean measures (the lengths only where a
    metric measures them), with ``length_ratio`` (mean L_G(geodesic) / L_G(line)) on the geodesic rows."""
    rows = {}
    for name in table["protocol"]["models"]:
        for kind in PATH_ORDER:
            by_relation = table["paths"].get(f"{name}/{kind}")
            for relation, values in (by_relation or {}).items():
                row = {m: values[m] for m in MEASURES if values[m] is not None}
                if kind == "geodesic":
                    row["length_ratio"] = table["geodesic_vs_line"][relation]["mean_ratio"]
                rows[f"{subset} · {name} {kind} · {relation.replace('_', ' ')}"] = row
    return rows


def interpolations_over_seeds(models: Mapping, data: Mapping, classifier, **options) -> tuple[dict, dict]:
    """``interpolation_table`` of every subset and seed: ``models[subset][seed]`` the models (name → model) of that
    seed, ``data[subset]`` its ``ExperimentData`` (pairs of its test digits; each model's codes of its training
    digits for the data distances), ``options`` those of ``interpolation_table`` (``seed`` is the model's: the
    pairs differ between seeds). Returns (tables {subset: {seed: table}}, rows {seed: {row: measures}} for
    ``rhvae.experiments.tables.over_seeds``)."""
    check_models_over_subsets(models, data)
    tables, rows = {}, {}
    for subset, by_seed in models.items():
        test, train = data[subset].test, data[subset].train
        tables[subset] = {}
        for seed, by_name in by_seed.items():
            if not by_name:  # every model of this seed diverged
                continue
            codes = {name: encoder_means(model, train.x) for name, model in by_name.items()}
            table = interpolation_table(by_name, None, test.x, test.y, codes, classifier, seed=seed, **options)
            tables[subset][seed] = table
            rows.setdefault(seed, {}).update(interpolation_rows(table, subset))
    return tables, rows


def _pooled(rows: Mapping[str, Mapping], subset: str) -> dict[str, dict]:
    """``"<name> <kind>"`` → the mean of its same-class and cross-class rows (equal numbers of pairs)."""
    groups: dict[str, list[Mapping]] = {}
    for label, row in rows.items():
        where, path, _ = label.split(" · ")
        if where == subset:
            groups.setdefault(path, []).append(row)
    return {path: {m: float(np.mean([r[m] for r in group])) for m in group[0]} for path, group in groups.items()}


def interpolation_checks(
    per_seed: Mapping[int, Mapping[str, Mapping]], subsets: Mapping[str, Sequence[str]]
) -> tuple[dict, list[str]]:
    """The checks of the claim "the learned metric gives more meaningful interpolations" (our own measurable
    reading), on the per-seed ``interpolation_rows`` of every subset (``subsets``: subset → its model names, the
    RHVAE's named "RHVAE"), each on the mean over seeds (``rhvae.experiments.tables.compare_over_seeds``):

    * the metric bends the paths: mean L_G(geodesic) / L_G(line) ≤ ``BEND_RATIO``;
    * RHVAE geodesic frames stay closer to the training codes and are more digit-like (classifier confidence) than
      its straight line's, and, between two digits of one class, change predicted class no more often;
    * RHVAE geodesic frames are at least as digit-like and as smooth (second difference) as every other model's
      straight-line frames (decoded quantities only: the latent spaces differ).

    Where the metric does not bend the paths, the geodesic and the RHVAE's straight line nearly coincide: the checks
    comparing them are left out (their outcome would be noise) and a note says so. Returns (checks, notes).
    """
    checks, notes = {}, []
    for subset, names in subsets.items():
        pooled = {seed: _pooled(rows, subset) for seed, rows in per_seed.items()}
        same = {
            seed: {label.split(" · ")[1]: row for label, row in rows.items() if label.endswith("· same class")}
            for seed, rows in per_seed.items()
        }
        same = {seed: rows for seed, rows in same.items() if rows}
        ratios = [rows["RHVAE geodesic"]["length_ratio"] for rows in pooled.values() if "RHVAE geodesic" in rows]
        ratio = float(np.mean(ratios)) if ratios else float("nan")
        bent = bool(ratios) and ratio <= BEND_RATIO
        checks[
            f"{subset}: the metric bends the paths, geodesic ≤ {BEND_RATIO:g} × the line's Riemannian length "
            f"(mean ratio {ratio:.3f})"
        ] = bent
        geo, line = "RHVAE geodesic", "RHVAE line"
        if bent:
            for key, higher, what in (
                ("data_distance_mean", False, "closer to the training codes"),
                ("confidence_mean", True, "more digit-like (classifier confidence)"),
            ):
                ok, seeds = compare_over_seeds(pooled, key, geo, line, higher=higher)
                checks[f"{subset}: RHVAE geodesic frames {what} than its straight line's (in {seeds})"] = ok
            ok, seeds = compare_over_seeds(same, "class_switches", geo, line, higher=False)
            checks[
                f"{subset}: within a class, the geodesic changes predicted class no more often than the line "
                f"(in {seeds})"
            ] = ok
        else:  # the two paths nearly coincide: their differences would be noise, not evidence
            notes.append(
                f"{subset}: the geodesic is within {1 - BEND_RATIO:.0%} of the straight line's length (mean ratio "
                f"{ratio:.3f}): the two paths nearly coincide, so the checks of the geodesic against the RHVAE's own "
                "straight line are left out"
            )
        for other in (n for n in names if n != "RHVAE"):
            for key, higher, what in (
                ("confidence_mean", True, "as digit-like as"),
                ("smoothness", False, "as smooth as"),
            ):
                ok, seeds = compare_over_seeds(pooled, key, geo, f"{other} line", higher=higher)
                checks[f"{subset}: RHVAE geodesic frames at least {what} the {other}'s straight line (in {seeds})"] = ok
    return checks, notes


__all__ = [
    "BEND_RATIO",
    "decoded_paths",
    "interpolation_checks",
    "interpolation_rows",
    "interpolations_over_seeds",
    "MEASURES",
    "as_double_metric",
    "cumulative_length",
    "euclidean_length",
    "geodesic_path",
    "interpolation_table",
    "pair_indices",
    "path_measures",
    "resample_equal",
    "riemannian_length",
    "segment_lengths",
    "straight_line",
]
