"""rhvae.experiments.interpolation on the shipped reconstruction models (seed 0, digits 1, 2, 3) and real test digits.

Measured tolerances (recorded when the tests were written):

* geodesic vs straight line: over 20 pairs of test digits (10 same-class, 10 cross-class) × n ∈ {8, 16, 32} on the
  reconstruction RHVAE (T = 1) and the generation_7_classes RHVAE (T = 0.6), L_G(geodesic) / L_G(line) was at most
  0.99972 (and at least 0.867); the geodesic was never longer. The bound asserted is 1 + 1e-3.
* midpoint rule on a learned metric: the length of a straight line with n points converges at second order
  (n = 16: relative error 1e-3 against n = 8192; n = 128: 3e-6).
* equal spacing after ``resample_equal`` of a 257-point geodesic to 12 points: the midpoint-rule lengths of the 11
  chords were within 8.7e-4 (relative) of their mean (asserted: 2e-3); exact (1e-12) for Euclidean spacing on a
  straight polyline.
* the 6 pairs of ``test_geodesic_is_not_longer_than_the_straight_line``: ratios 0.99662, 0.99964, 0.96109,
  0.99155, 0.99159, 0.99616.
"""

import json
import math

import numpy as np
import pytest
import torch

import rhvae
from rhvae.experiments.interpolation import (
    MEASURES,
    as_double_metric,
    cumulative_length,
    decoded_paths,
    geodesic_path,
    interpolation_checks,
    interpolation_rows,
    interpolation_table,
    pair_indices,
    path_measures,
    resample_equal,
    riemannian_length,
    segment_lengths,
    straight_line,
)
from rhvae.experiments.quality import load_classifier
from rhvae.models.metric import LearnedMetric

GEODESIC_SLACK = 1e-3  # L_G(geodesic) <= (1 + slack) L_G(line); measured max ratio 0.99972


@pytest.fixture(scope="module")
def setup():
    models = {name: rhvae.load_shipped("reconstruction", name, seed=0) for name in ("vae", "hvae", "rhvae")}
    data = rhvae.experiment_data("reconstruction")
    with torch.no_grad():
        train_codes = {name: m.encode(data.train.x)[0].double() for name, m in models.items()}
        test_codes = {name: m.encode(data.test.x)[0].double() for name, m in models.items()}
    metric = as_double_metric(models["rhvae"].metric())
    return {
        "models": models,
        "data": data,
        "train_codes": train_codes,
        "test_codes": test_codes,
        "metric": metric,
        "classifier": load_classifier(),
    }


def constant_metric(lam: float) -> LearnedMetric:
    """G⁻¹ = λI exactly: one centroid with M = 0."""
    return LearnedMetric(torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 2, 2, dtype=torch.float64), 1.0, lam)


# ------------------------------------------------------------------------------------------------ lengths
def test_length_under_a_constant_metric_is_euclidean_over_sqrt_lambda():
    path = torch.from_numpy(np.random.default_rng(0).normal(size=(9, 2)))
    euclid = float((path[1:] - path[:-1]).norm(dim=-1).sum())
    assert riemannian_length(None, path) == pytest.approx(euclid, rel=1e-12)
    for lam in (0.1, 0.25, 4.0):
        assert riemannian_length(constant_metric(lam), path) == pytest.approx(euclid / math.sqrt(lam), rel=1e-12)


def test_length_on_a_learned_metric_converges_under_refinement(setup):
    z, metric = setup["test_codes"]["rhvae"], setup["metric"]
    z0, z1 = z[0], z[-1]  # a 1 and a 3
    reference = riemannian_length(metric, straight_line(z0, z1, 8192))
    errors = [abs(riemannian_length(metric, straight_line(z0, z1, n)) / reference - 1) for n in (16, 32, 64, 128)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-4 and errors[-1] < errors[-2] / 2, errors  # second order: about / 4 per doubling


# ------------------------------------------------------------------------------------------------ paths
def test_geodesic_is_not_longer_than_the_straight_line(setup):
    z, metric, labels = setup["test_codes"]["rhvae"], setup["metric"], setup["data"].test.y
    pairs = pair_indices(labels, 3, True, seed=0) + pair_indices(labels, 3, False, seed=0)
    ratios = []
    for i, j in pairs:
        path = geodesic_path(metric, z[i], z[j], 16)
        assert path.shape == (16, 2) and path.dtype == torch.float64
        assert torch.equal(path[0], z[i]) and torch.equal(path[-1], z[j])
        ratios.append(riemannian_length(metric, path) / riemannian_length(metric, straight_line(z[i], z[j], 16)))
    print("geodesic / line lengths:", [round(r, 5) for r in ratios])
    assert max(ratios) <= 1 + GEODESIC_SLACK
    assert min(ratios) > 0.5


def test_straight_line_and_a_zero_length_path():
    z0, z1 = torch.tensor([0.0, 1.0]), torch.tensor([2.0, -1.0])
    line = straight_line(z0, z1, 5)
    assert torch.allclose(line[2], torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.equal(line[0], z0.double()) and torch.equal(line[-1], z1.double())
    assert torch.equal(resample_equal(None, straight_line(z0, z0, 4), 3), z0.double().expand(3, 2))


def test_resampling_gives_equal_spacing(setup):
    # Euclidean: an unevenly sampled straight polyline → exactly equal steps
    t = torch.tensor([0.0, 0.05, 0.1, 0.7, 0.71, 1.0], dtype=torch.float64)[:, None]
    uneven = t * torch.tensor([3.0, 4.0], dtype=torch.float64)
    even = resample_equal(None, uneven, 11)
    steps = segment_lengths(None, even)
    assert torch.allclose(steps, torch.full_like(steps, 0.5), rtol=0, atol=1e-12)
    # Riemannian: a fine cross-class geodesic, resampled
    z, metric, labels = setup["test_codes"]["rhvae"], setup["metric"], setup["data"].test.y
    i, j = pair_indices(labels, 1, False, seed=1)[0]
    fine = geodesic_path(metric, z[i], z[j], 257)
    coarse = resample_equal(metric, fine, 12)
    steps = segment_lengths(metric, coarse)
    spread = float((steps / steps.mean() - 1).abs().max())
    print("relative spread of the resampled steps:", spread)
    assert spread < 2e-3  # measured 8.7e-4: a chord's midpoint-rule length vs the fine arc it replaces
    assert float(cumulative_length(metric, coarse)[-1]) == pytest.approx(riemannian_length(metric, fine), rel=1e-3)
    assert torch.equal(coarse[0], fine[0]) and torch.equal(coarse[-1], fine[-1])


# ------------------------------------------------------------------------------------------------ measures
def check_measures(values: dict, n_frames: int, with_metric: bool):
    assert values["n_frames"] == n_frames
    for key in MEASURES:
        if key == "riemannian_length" and not with_metric:
            assert values[key] is None
            continue
        assert math.isfinite(values[key]) and values[key] >= 0, key
    assert 0 <= values["confidence_min"] <= values["confidence_mean"] <= 1
    assert 0 <= values["class_switches"] <= n_frames - 1 and isinstance(values["class_switches"], int)
    assert values["data_distance_mean"] <= values["data_distance_max"]
    assert values["start_class"] in range(10) and values["end_class"] in range(10)


def test_path_measures_are_finite_and_in_range(setup):
    models, clf, tc, z = setup["models"], setup["classifier"], setup["train_codes"], setup["test_codes"]
    metric = setup["metric"]
    path = geodesic_path(metric, z["rhvae"][0], z["rhvae"][-1], 12)
    values = path_measures(models["rhvae"], path, clf, tc["rhvae"], metric)
    check_measures(values, 12, True)
    assert values["riemannian_length"] == pytest.approx(riemannian_length(metric, path))
    assert values["start_class"] == 1 and values["end_class"] == 3  # a real 1 and a real 3 at the ends
    vae_line = straight_line(z["vae"][0], z["vae"][-1], 10)
    check_measures(path_measures(models["vae"], vae_line, clf, tc["vae"], None, n_frames=7), 7, False)
    # a zero-length path at a training code: on the data, and a constant (perfectly smooth) sequence of frames
    on_data = path_measures(models["rhvae"], straight_line(tc["rhvae"][0], tc["rhvae"][0], 3), clf, tc["rhvae"], metric)
    assert on_data["data_distance_max"] == pytest.approx(0.0, abs=1e-12) and on_data["smoothness"] < 1e-20


def test_pair_indices_are_deterministic_and_respect_the_classes():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1])
    same = pair_indices(labels, 6, True, seed=3)
    cross = pair_indices(labels, 6, False, seed=3)
    assert same == pair_indices(labels, 6, True, seed=3) and cross == pair_indices(labels, 6, False, seed=3)
    assert pair_indices(labels, 6, True, seed=4) != same
    assert all(labels[i] == labels[j] and i < j for i, j in same) and len(set(same)) == 6
    assert all(labels[i] != labels[j] and i < j for i, j in cross) and len(set(cross)) == 6
    assert all(isinstance(i, int) for pair in same for i in pair)
    with pytest.raises(ValueError, match="n_pairs"):
        pair_indices(labels, 11, True, seed=0)  # only 3 + 6 + 1 = 10 same-class pairs
    with pytest.raises(ValueError, match="n_pairs"):
        pair_indices(labels, 0, True, seed=0)


def test_interpolation_table_is_json_ready_and_deterministic(setup):
    d = setup["data"]
    args = (setup["models"], None, d.test.x, d.test.y, setup["train_codes"], setup["classifier"])
    table = interpolation_table(*args, n_pairs=2, n_points=12, seed=0)
    again = interpolation_table(*args, n_pairs=2, n_points=12, seed=0)
    assert json.dumps(table, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert set(table["paths"]) == {"rhvae/geodesic", "rhvae/line", "vae/line", "hvae/line"}
    for kind, cells in table["paths"].items():
        for relation in ("same_class", "cross_class"):
            cell = cells[relation]
            assert cell["n_pairs"] == 2 and set(cell) == {"n_pairs", *MEASURES}
            assert (cell["riemannian_length"] is None) == (not kind.startswith("rhvae"))
            assert 0 <= cell["confidence_min"] <= cell["confidence_mean"] <= 1
    for relation, pairs in table["pairs"].items():
        labels = [(int(d.test.y[i]), int(d.test.y[j])) for i, j in pairs]
        assert all((a == b) == (relation == "same_class") for a, b in labels)
        assert table["geodesic_vs_line"][relation]["max_ratio"] <= 1 + GEODESIC_SLACK


# ------------------------------------------------------------------------------------------------ refusals
def test_refusals_name_the_argument(setup):
    metric, model, clf = setup["metric"], setup["models"]["rhvae"], setup["classifier"]
    z0, z1 = torch.zeros(2), torch.ones(2)
    with pytest.raises(ValueError, match="n must"):
        straight_line(z0, z1, 1)
    with pytest.raises(ValueError, match="n must"):
        geodesic_path(metric, z0, z1, 1)
    with pytest.raises(ValueError, match="n must"):
        resample_equal(None, straight_line(z0, z1, 3), 1)
    with pytest.raises(ValueError, match="z1"):
        straight_line(z0, torch.ones(3), 4)
    with pytest.raises(ValueError, match="z0"):
        geodesic_path(metric, torch.zeros(2, 2), z1, 4)
    with pytest.raises(ValueError, match="metric"):
        geodesic_path(None, z0, z1, 4)
    with pytest.raises(ValueError, match="path"):
        riemannian_length(metric, torch.zeros(3))
    with pytest.raises(ValueError, match="path"):
        riemannian_length(metric, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="train_codes"):
        path_measures(model, straight_line(z0, z1, 4), clf, torch.zeros(5, 3), metric)
    with pytest.raises(ValueError, match="n_frames"):
        path_measures(model, straight_line(z0, z1, 4), clf, torch.zeros(5, 2), metric, n_frames=1)
    with pytest.raises(ValueError, match="labels"):
        pair_indices(np.zeros((2, 2)), 1, True, seed=0)
    d = setup["data"]
    with pytest.raises(ValueError, match="train_codes_by_name"):
        interpolation_table(setup["models"], None, d.test.x, d.test.y, {"vae": torch.zeros(1, 2)}, clf, 1, 4, 0)
    with pytest.raises(ValueError, match="n_points"):
        interpolation_table(setup["models"], None, d.test.x, d.test.y, setup["train_codes"], clf, 1, 1, 0)
    with pytest.raises(ValueError, match="x_test"):
        interpolation_table(setup["models"], None, d.test.x, d.test.y[:3], setup["train_codes"], clf, 1, 4, 0)
    # wrong types and sizes beyond memory: a TypeError or ValueError naming them, before any work
    with pytest.raises(TypeError, match="z0 must be a tensor or an array of numbers, got NoneType"):
        straight_line(None, z1, 4)
    with pytest.raises(ValueError, match="n must be an integer >= 2 and <= 10,000"):
        straight_line(z0, z1, 10**9)
    with pytest.raises(ValueError, match="resolution must be an integer >= 3 and <= 10,000"):
        geodesic_path(metric, z0, z1, 4, resolution=10**9)
    with pytest.raises(TypeError, match="model must be a rhvae VAE"):
        path_measures("model", straight_line(z0, z1, 4), clf, torch.zeros(5, 2), metric)
    with pytest.raises(TypeError, match="classifier must have a predict_proba"):
        path_measures(model, straight_line(z0, z1, 4), "clf", torch.zeros(5, 2), metric)
    with pytest.raises(TypeError, match=r"models\['x'\] must be a rhvae VAE"):
        decoded_paths({"x": 3}, d.test.x[0], d.test.x[1])
    with pytest.raises(TypeError, match="train_codes_by_name must be a dict"):
        interpolation_table(setup["models"], None, d.test.x, d.test.y, torch.zeros(3), clf, 1, 4, 0)


# ------------------------------------------------------------------------------------------------ claims
def _row(ratio=None, **values):
    row = {"smoothness": 1e-4, "confidence_mean": 0.9, "class_switches": 0.0, "data_distance_mean": 0.3, **values}
    return row if ratio is None else {**row, "length_ratio": ratio}


def _seed_rows(ratio: float, geodesic: dict, vae: dict | None = None) -> dict:
    """One seed's interpolation rows on a subset "s" with an RHVAE (line and geodesic) and a VAE (line)."""
    rows = {}
    for relation in ("same class", "cross class"):
        rows[f"s · VAE line · {relation}"] = _row(**(vae or {}))
        rows[f"s · RHVAE line · {relation}"] = _row()
        rows[f"s · RHVAE geodesic · {relation}"] = _row(ratio, **geodesic)
    return rows


def test_interpolation_checks_on_known_rows():
    better = {"data_distance_mean": 0.2, "confidence_mean": 0.95, "smoothness": 5e-5}
    checks, notes = interpolation_checks(
        {0: _seed_rows(0.9, better), 1: _seed_rows(0.8, better)}, {"s": ["VAE", "RHVAE"]}
    )
    assert len(checks) == 6 and all(checks.values()) and not notes
    # a geodesic that strays further from the data than the line fails exactly that check
    worse = {**better, "data_distance_mean": 0.4}
    checks, _ = interpolation_checks({0: _seed_rows(0.9, worse)}, {"s": ["VAE", "RHVAE"]})
    failed = [name for name, ok in checks.items() if not ok]
    assert len(failed) == 1 and "closer to the training codes" in failed[0]
    # a VAE line more digit-like than the geodesic fails the cross-model check
    checks, _ = interpolation_checks({0: _seed_rows(0.9, better, {"confidence_mean": 0.99})}, {"s": ["VAE", "RHVAE"]})
    assert [n for n, ok in checks.items() if not ok] == [
        "s: RHVAE geodesic frames at least as digit-like as the VAE's straight line (in 0/1 seeds)"
    ]


def test_interpolation_checks_leave_out_the_geodesic_against_line_checks_when_the_paths_coincide():
    better = {"data_distance_mean": 0.2, "confidence_mean": 0.95, "smoothness": 5e-5}
    checks, notes = interpolation_checks({0: _seed_rows(0.99, better)}, {"s": ["VAE", "RHVAE"]})
    bend = [name for name in checks if "bends" in name]
    assert len(bend) == 1 and checks[bend[0]] is False and "0.990" in bend[0]
    assert not any("than its straight line" in name or "within a class" in name for name in checks)
    assert len(checks) == 3 and len(notes) == 1 and "nearly coincide" in notes[0]


def test_interpolation_rows_of_a_table_on_shipped_models(setup):
    names = {"VAE": setup["models"]["vae"], "RHVAE": setup["models"]["rhvae"]}
    codes = {"VAE": setup["train_codes"]["vae"], "RHVAE": setup["train_codes"]["rhvae"]}
    data = setup["data"]
    table = interpolation_table(
        names, None, data.test.x, data.test.y, codes, setup["classifier"], n_pairs=2, n_points=8
    )
    rows = interpolation_rows(table, "reconstruction")
    assert list(rows) == [
        f"reconstruction · {path} · {relation}"
        for path in ("VAE line", "RHVAE line", "RHVAE geodesic")
        for relation in ("same class", "cross class")
    ]
    for relation in ("same_class", "cross_class"):
        geodesic_row = rows[f"reconstruction · RHVAE geodesic · {relation.replace('_', ' ')}"]
        assert geodesic_row["length_ratio"] == table["geodesic_vs_line"][relation]["mean_ratio"] <= 1 + GEODESIC_SLACK
        assert geodesic_row["confidence_mean"] == table["paths"]["RHVAE/geodesic"][relation]["confidence_mean"]
    assert "riemannian_length" not in rows["reconstruction · VAE line · same class"]  # no metric measures it


def test_decoded_paths_start_and_end_at_the_decoded_codes(setup):
    models = {"VAE": setup["models"]["vae"], "RHVAE": setup["models"]["rhvae"]}
    x = setup["data"].test.x
    strips = decoded_paths(models, x[0], x[5], n_points=7)
    assert list(strips) == ["VAE line", "RHVAE line", "RHVAE geodesic"]
    for label, frames in strips.items():
        model = models[label.split()[0]]
        with torch.no_grad():
            ends = model.decode(model.encode(x[[0, 5]])[0])
        assert frames.shape == (7, 784)
        torch.testing.assert_close(frames[[0, -1]], ends, atol=1e-5, rtol=0)
    assert not torch.allclose(strips["RHVAE line"][3], strips["RHVAE geodesic"][3], atol=1e-7)
    with pytest.raises(ValueError, match="n_points"):
        decoded_paths(models, x[0], x[5], n_points=1)


def test_pair_indices_refuses_too_many_labels_before_allocating():
    with pytest.raises(ValueError) as caught:
        pair_indices(np.zeros(200_000, dtype=np.int64), 1, True)
    assert str(caught.value) == (
        "labels must hold at most 10000 labels (every pair is enumerated: more than 37 GiB here), got 200000"
    )
    assert len(pair_indices(np.arange(10_000) % 10, 2, True, seed=0)) == 2  # the limit itself is accepted
