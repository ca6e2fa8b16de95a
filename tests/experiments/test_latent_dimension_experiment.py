"""The latent_dimension experiment's verdicts, tables and stored evaluations, on numbers made up to sit on either side
of each threshold (the notebook itself runs in tests/experiments/test_notebooks.py)."""

import pytest

from rhvae.experiments import latent_dimension as ld


def _seed(ll, fid, gap=0.2):
    """The numbers of one (subset, d, seed): log p(x) and BDMC gap per model, FID per model and sampler."""
    likelihood = {name: {"log_likelihood": v, "bdmc_gap": gap, "bce": 100.0} for name, v in ll.items()}
    samples = {
        row: {"fid_classifier": v, "precision": 0.5, "recall": 0.5, "in_class_fraction": 0.9} for row, v in fid.items()
    }
    mechanism = {"RHVAE": {"displacement": 1.0, "flow_gain": 2.0, "contrast": 1.5}}
    return {"likelihood": likelihood, "samples": samples, "mechanism": mechanism, "seconds": 1.0}


GOOD_LL = {"VAE": -140.0, "HVAE": -139.0, "RHVAE": -137.0}
BAD_LL = {"VAE": -140.0, "HVAE": -136.0, "RHVAE": -137.0}
#: the RHVAE's metric sampler beats every prior sampler; the VAE's geometric sampler does not beat it
METRIC_WINS = {"VAE prior": 70.0, "HVAE prior": 80.0, "RHVAE prior": 60.0, "RHVAE metric": 30.0, "VAE geometric": 40.0}
#: the RHVAE's prior sampler beats its metric sampler; the VAE's geometric sampler beats both
GEOMETRIC_WINS = {
    "VAE prior": 70.0,
    "HVAE prior": 80.0,
    "RHVAE prior": 20.0,
    "RHVAE metric": 30.0,
    "VAE geometric": 10.0,
}


def _evaluation(per_dim):
    """{subset: {d: {seed: numbers}}} with string keys, as a stored evaluation holds them."""
    return {"reconstruction": {str(d): {str(s): v for s, v in seeds.items()} for d, seeds in per_dim.items()}}


def test_each_verdict_follows_its_comparison():
    found = ld.verdicts(_evaluation({2: {0: _seed(GOOD_LL, METRIC_WINS)}, 4: {0: _seed(BAD_LL, GEOMETRIC_WINS)}}))
    at = found["reconstruction"]
    assert (at[2]["a"]["holds"], at[2]["b"]["holds"], at[2]["c"]["holds"]) == (True, True, False)
    assert (at[4]["a"]["holds"], at[4]["b"]["holds"], at[4]["c"]["holds"]) == (False, False, True)
    assert ld.turning_points(found) == {
        "a": {"reconstruction": 4},
        "b": {"reconstruction": 4},
        "c": {"reconstruction": 4},
    }
    text = ld.summary_text(found)
    assert "d = 2: holds, d = 4: does not hold — turns at d = 4" in text


def test_a_ranking_that_does_not_change_does_not_turn():
    found = ld.verdicts(_evaluation({2: {0: _seed(GOOD_LL, METRIC_WINS)}, 8: {0: _seed(GOOD_LL, METRIC_WINS)}}))
    assert ld.turning_points(found)["a"]["reconstruction"] is None
    assert "does not turn" in ld.summary_text(found)


def test_a_void_answer_is_no_turn():
    good, bad = _seed(GOOD_LL, METRIC_WINS), _seed(BAD_LL, METRIC_WINS)
    wide = _seed(BAD_LL, METRIC_WINS, gap=ld.MAX_BDMC_GAP + 1.0)
    found = ld.verdicts(_evaluation({2: {0: good}, 4: {0: wide}, 16: {0: good}}))
    assert found["reconstruction"][4]["a"]["holds"] is None
    assert ld.turning_points(found)["a"]["reconstruction"] is None
    found = ld.verdicts(_evaluation({2: {0: good}, 4: {0: wide}, 16: {0: bad}}))
    assert ld.turning_points(found)["a"]["reconstruction"] == 16


def test_the_log_likelihood_verdict_is_void_where_the_margin_is_within_the_ais_error():
    close = {"VAE": -140.0, "HVAE": -137.5, "RHVAE": -137.0}  # a 0.5-nat margin over the HVAE
    found = ld.verdicts(_evaluation({4: {0: _seed(close, METRIC_WINS, gap=0.3)}}))
    assert (
        found["reconstruction"][4]["a"]["holds"] is None
        and "within the AIS error" in found["reconstruction"][4]["a"]["why"]
    )
    found = ld.verdicts(_evaluation({4: {0: _seed(close, METRIC_WINS, gap=0.2)}}))
    assert found["reconstruction"][4]["a"]["holds"] is True  # 0.5 > 0.2 + 0.2
    worse = {**close, "RHVAE": -138.0}  # 0.5 below the HVAE, beyond 0.4: decided, and against
    assert (
        ld.verdicts(_evaluation({4: {0: _seed(worse, METRIC_WINS, gap=0.2)}}))["reconstruction"][4]["a"]["holds"]
        is False
    )
    # at d = 2 the values are exact: the same margin decides
    assert ld.verdicts(_evaluation({2: {0: _seed(close, METRIC_WINS, gap=None)}}))["reconstruction"][2]["a"]["holds"]


def test_the_log_likelihood_verdict_is_void_where_the_ais_error_bound_is_too_wide():
    wide = ld.MAX_BDMC_GAP + 0.01
    found = ld.verdicts(_evaluation({4: {0: _seed(GOOD_LL, METRIC_WINS, gap=wide)}}))
    assert found["reconstruction"][4]["a"]["holds"] is None
    assert "void" in found["reconstruction"][4]["a"]["why"]
    narrow = ld.verdicts(_evaluation({4: {0: _seed(GOOD_LL, METRIC_WINS, gap=ld.MAX_BDMC_GAP / 2)}}))
    assert narrow["reconstruction"][4]["a"]["holds"] is True
    # at d = 2 the value is exact: no gap is needed
    exact = ld.verdicts(_evaluation({2: {0: _seed(GOOD_LL, METRIC_WINS, gap=None)}}))
    assert exact["reconstruction"][2]["a"]["holds"] is True
    # a void verdict is no check at all
    assert not any("(a)" in name for name in ld.checks(found))


def test_verdicts_use_the_mean_over_seeds():
    # seed 1 loses by 1 nat, seed 0 wins by 3: the mean decides, and the seed count says 1/2
    worse = {**GOOD_LL, "RHVAE": -139.5}
    found = ld.verdicts(_evaluation({2: {0: _seed(GOOD_LL, METRIC_WINS), 1: _seed(worse, METRIC_WINS)}}))
    verdict = found["reconstruction"][2]["a"]
    assert verdict["holds"] is True and verdict["seeds"]["HVAE"] == "1/2 seeds"


def test_tables_show_the_log_likelihood_as_log_px_by_subset_dimension_and_model():
    summary = ld.tables(_evaluation({2: {0: _seed(GOOD_LL, METRIC_WINS), 1: _seed(BAD_LL, METRIC_WINS)}}))
    row = summary["likelihood"]["reconstruction · d=2 · RHVAE"]
    assert row["log_px"]["mean"] == pytest.approx(-137.0) and "log_likelihood" not in row
    assert summary["samples"]["reconstruction · d=2 · VAE geometric"]["fid_classifier"]["mean"] == 40.0
    assert summary["mechanism"]["reconstruction · d=2 · RHVAE"]["contrast"]["mean"] == 1.5


def test_latent_dimensions_are_checked():
    assert ld.check_dims([16, 2, 4, 4]) == (2, 4, 16)
    for bad in ([], [1, 2], [17]):
        with pytest.raises(ValueError, match="latent_dims"):
            ld.check_dims(bad)
