"""The checks behind the verdicts of the paper's four experiments (metric, reconstruction, generation_5,
generation_7_classes), from the numbers their notebooks compute: {check in words, with its count over seeds: holds}.
``Run.conclude`` turns them into the verdict (every check holds: "holds"; some: "partly"; none: "does not hold").

A check over seeds holds only when there is at least one seed to judge (a run whose every model diverged judges
nothing), and its wording carries the count, so that the report shows how close each verdict is. The augmentation,
interpolation, clustering and latent_dimension experiments keep theirs beside their own protocol
(``augmentation.verdict_checks``, ``interpolation.interpolation_checks``, ``clustering.clustering_checks``,
``latent_dimension.checks``).
"""

from __future__ import annotations

from collections.abc import Mapping

from rhvae.experiments.quality import coverage_threshold
from rhvae.experiments.tables import compare_over_seeds

#: metric: the least log √det G⁻¹ at the training codes minus its value far from them (``tables.metric_summary``'s
#: ``codes_minus_far``) for a metric "clearly higher at the codes": det G⁻¹ there at least e times its far value. A
#: metric that collapsed to λI (every Mᵢ → 0) shows 0 and fails.
MIN_CODES_MINUS_FAR = 0.5
#: generation_7_classes: the least share of samples that the quality classifier puts in one of the trained classes.
MIN_IN_CLASS = 0.8
#: generation_7_classes: the least entropy of the predicted classes of the samples, as a fraction of log 7.
MIN_NORMALIZED_ENTROPY = 0.8


def _all_of(count: int, total: int) -> bool:
    return total > 0 and count == total


def metric_checks(summaries: Mapping[int, Mapping[str, Mapping]]) -> dict[str, bool]:
    """metric: from ``{seed: {"T = t": tables.metric_summary(…)}}`` (temperatures in increasing order), (1) every
    model's metric is clearly higher at the codes than far from them (``MIN_CODES_MINUS_FAR``), (2) in every seed the
    high-metric area grows strictly with T (a smaller T gives a more local metric; needs two temperatures or more)."""
    n_models = sum(len(by_t) for by_t in summaries.values())
    n_clear = sum(v["codes_minus_far"] >= MIN_CODES_MINUS_FAR for by_t in summaries.values() for v in by_t.values())
    n_grows = 0
    for by_t in summaries.values():
        fractions = [row["high_fraction"] for row in by_t.values()]
        n_grows += len(fractions) > 1 and all(a < b for a, b in zip(fractions, fractions[1:], strict=False))
    return {
        f"metric clearly higher at the codes than far from them, for every T and seed ({n_clear}/{n_models} "
        "models)": _all_of(n_clear, n_models),
        f"high-metric area grows with T (smaller T = more local metric) in every seed ({n_grows}/{len(summaries)} "
        "seeds)": _all_of(n_grows, len(summaries)),
    }


def reconstruction_checks(evaluations: Mapping[int, Mapping], scores: Mapping[int, Mapping]) -> dict[str, bool]:
    """reconstruction: on the mean over seeds, the RHVAE's test BCE is at most, and its exact log-likelihood and
    share of in-class samples at least, those of the VAE and of the HVAE (``tables.compare_over_seeds``).
    ``evaluations``: {seed: tables.evaluation_table}; ``scores``: {seed: {name: quality.generation_score}}."""
    checks = {}
    for other in ("VAE", "HVAE"):
        for per_seed, key, higher, what in (
            (evaluations, "bce", False, "BCE <="),
            (evaluations, "log_likelihood", True, "exact log-likelihood >="),
            (scores, "in_class_fraction", True, "share of in-class samples >="),
        ):
            ok, seeds = compare_over_seeds(per_seed, key, "RHVAE", other, higher=higher)
            checks[f"RHVAE {what} {other}'s (on the mean; in {seeds})"] = ok
    return checks


def generation_5_checks(scores: Mapping[int, Mapping]) -> dict[str, bool]:
    """generation_5: on the mean over seeds, the RHVAE's samples have a share of fives and a mean classifier
    confidence at least those of the VAE's and of the HVAE's prior samples. ``scores``: {seed: {name: score}}."""
    checks = {}
    for other in ("VAE", "HVAE"):
        for key, what in (("in_class_fraction", "share of fives"), ("mean_confidence", "mean confidence")):
            ok, seeds = compare_over_seeds(scores, key, "RHVAE", other)
            checks[f"RHVAE {what} >= {other}'s (on the mean; in {seeds})"] = ok
    return checks


def generation_7_classes_checks(scores: Mapping[int, Mapping]) -> dict[str, bool]:
    """generation_7_classes: in every seed, the RHVAE's samples (1) cover all 7 classes (coverage 1: each class has
    at least its ``quality.coverage_threshold`` share), (2) are at least ``MIN_IN_CLASS`` in-class and (3) spread
    over the classes with an entropy of at least ``MIN_NORMALIZED_ENTROPY`` log 7. ``scores``: {seed: {"RHVAE":
    score}}, a seed whose model diverged empty."""
    per_seed = [s["RHVAE"] for s in scores.values() if s]
    n = len(per_seed)
    covered = sum(q["coverage"] == 1.0 for q in per_seed)
    in_class = sum(q["in_class_fraction"] >= MIN_IN_CLASS for q in per_seed)
    spread = sum((q["normalized_entropy"] or 0.0) >= MIN_NORMALIZED_ENTROPY for q in per_seed)
    share = f"1/{round(1 / coverage_threshold(7))}"
    return {
        f"samples cover all 7 classes (each >= {share} of the samples) in every seed ({covered}/{n} seeds)": _all_of(
            covered, n
        ),
        f"at least {MIN_IN_CLASS * 100:g} % of samples recognised as one of the 7 classes in every seed "
        f"({in_class}/{n} seeds)": _all_of(in_class, n),
        f"spread over the classes, entropy >= {MIN_NORMALIZED_ENTROPY:g} log 7, in every seed ({spread}/{n} "
        "seeds)": _all_of(spread, n),
    }
