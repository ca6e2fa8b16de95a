"""The checks of the paper's four experiments (rhvae.experiments.verdicts): each threshold on both of its sides, a run
with nothing to judge, and the wording of the committed report (results/README.md) for the committed numbers."""

import json
import re

import pytest

from rhvae.experiments import verdicts
from rhvae.paths import ROOT


def _metric(codes_minus_far, fractions):
    return {f"T = {t}": {"codes_minus_far": codes_minus_far, "high_fraction": f} for t, f in enumerate(fractions)}


def test_metric_checks_threshold_and_growth():
    edge = verdicts.MIN_CODES_MINUS_FAR
    checks = verdicts.metric_checks({0: _metric(edge, [0.1, 0.2, 0.3]), 1: _metric(edge + 1, [0.1, 0.2, 0.4])})
    assert list(checks.values()) == [True, True]
    assert "(6/6 models)" in list(checks)[0] and "(2/2 seeds)" in list(checks)[1]
    below = verdicts.metric_checks({0: _metric(edge - 1e-9, [0.1, 0.2, 0.3]), 1: _metric(edge, [0.1, 0.2, 0.3])})
    assert list(below.values()) == [False, True] and "(3/6 models)" in list(below)[0]
    flat = verdicts.metric_checks({0: _metric(1.0, [0.1, 0.2, 0.2])})  # equal areas do not grow
    assert list(flat.values()) == [True, False]
    single = verdicts.metric_checks({0: _metric(1.0, [0.1])})  # one temperature shows no growth
    assert list(single.values()) == [True, False]
    assert list(verdicts.metric_checks({}).values()) == [False, False]  # nothing to judge


def _rows(**by_name):
    keys = ("bce", "log_likelihood", "in_class_fraction")
    return {name: dict(zip(keys, values, strict=True)) for name, values in by_name.items()}


def test_reconstruction_checks_compare_the_rhvae_with_each_model_on_the_mean():
    evaluations = {0: _rows(RHVAE=(100, -130, 0), VAE=(110, -140, 0), HVAE=(100, -130, 0))}
    scores = {0: _rows(RHVAE=(0, 0, 0.9), VAE=(0, 0, 0.8), HVAE=(0, 0, 0.95))}
    checks = verdicts.reconstruction_checks(evaluations, scores)
    assert len(checks) == 6
    assert checks["RHVAE BCE <= VAE's (on the mean; in 1/1 seeds)"]
    assert checks["RHVAE BCE <= HVAE's (on the mean; in 1/1 seeds)"]  # a tie holds
    assert checks["RHVAE exact log-likelihood >= HVAE's (on the mean; in 1/1 seeds)"]
    assert checks["RHVAE share of in-class samples >= VAE's (on the mean; in 1/1 seeds)"]
    assert not checks["RHVAE share of in-class samples >= HVAE's (on the mean; in 0/1 seeds)"]
    # lower BCE is better: a higher one fails
    worse = verdicts.reconstruction_checks({0: _rows(RHVAE=(120, -130, 0), VAE=(110, -140, 0), HVAE=(1, 1, 0))}, scores)
    assert not worse["RHVAE BCE <= VAE's (on the mean; in 0/1 seeds)"]
    empty = verdicts.reconstruction_checks({}, {})
    assert not any(empty.values()) and all("0/0 seeds" in k for k in empty)


def test_generation_5_checks_compare_share_and_confidence():
    scores = {
        s: {
            "RHVAE": {"in_class_fraction": 0.9, "mean_confidence": 0.8},
            "VAE": {"in_class_fraction": 0.9 - s, "mean_confidence": 0.7},
            "HVAE": {"in_class_fraction": 0.5, "mean_confidence": 0.9},
        }
        for s in (0, 1)
    }
    checks = verdicts.generation_5_checks(scores)
    assert checks == {
        "RHVAE share of fives >= VAE's (on the mean; in 2/2 seeds)": True,
        "RHVAE mean confidence >= VAE's (on the mean; in 2/2 seeds)": True,
        "RHVAE share of fives >= HVAE's (on the mean; in 2/2 seeds)": True,
        "RHVAE mean confidence >= HVAE's (on the mean; in 0/2 seeds)": False,
    }


def _seven(coverage, in_class, entropy):
    return {"RHVAE": {"coverage": coverage, "in_class_fraction": in_class, "normalized_entropy": entropy}}


def test_generation_7_classes_checks_hold_in_every_seed_or_not_at_all():
    low_class, low_entropy = verdicts.MIN_IN_CLASS, verdicts.MIN_NORMALIZED_ENTROPY
    at_edges = verdicts.generation_7_classes_checks({0: _seven(1.0, low_class, low_entropy), 1: _seven(1.0, 1, 1)})
    assert list(at_edges.values()) == [True, True, True] and all("(2/2 seeds)" in k for k in at_edges)
    below = verdicts.generation_7_classes_checks(
        {0: _seven(6 / 7, low_class - 1e-9, low_entropy - 1e-9), 1: _seven(1.0, 1, None), 2: {}}  # 2: diverged
    )
    assert list(below.values()) == [False, False, False]
    assert [re.search(r"\((\d/\d) seeds\)", k).group(1) for k in below] == ["1/2", "1/2", "0/2"]
    assert list(verdicts.generation_7_classes_checks({0: {}}).values()) == [False, False, False]


@pytest.mark.parametrize("name", ["metric", "reconstruction", "generation_5", "generation_7_classes"])
def test_the_committed_numbers_give_the_committed_checks(name):
    """From the numbers in results/NAME/results.json, each function gives exactly the checks (wording and answer)
    that the committed report lists."""
    results = json.loads((ROOT / "results" / name / "results.json").read_text())
    numbers = results["results"]

    def by_seed(table):
        return {int(seed): rows for seed, rows in table.items()}

    def scores(generation):  # the scores of generate_over_seeds, as recorded beside how the samples were made
        return {int(seed): {n: made["quality"] for n, made in rows.items()} for seed, rows in generation.items()}

    if name == "metric":
        checks = verdicts.metric_checks(by_seed(numbers["metric"]))
    elif name == "reconstruction":
        checks = verdicts.reconstruction_checks(by_seed(numbers["evaluation"]), scores(numbers["generation"]))
    elif name == "generation_5":
        checks = verdicts.generation_5_checks(scores(numbers["generation"]))
    else:
        checks = verdicts.generation_7_classes_checks(scores(numbers["generation"]))
    assert checks == results["verdict"]["checks"]
