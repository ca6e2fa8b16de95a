r"""The latent_dimension experiment (our protocol): VAE, HVAE and RHVAE at latent dimensions d ∈ {2, 4, 16}.

The paper trains every model at d = 2. Its authors' 2022 paper (Chadebec & Allassonnière, *A Geometric Perspective on
Variational Autoencoders*, NeurIPS 2022) works at d = 16 and finds there the RHVAE below the HVAE on samples, and a
plain VAE with their geometry-aware sampler best of all. This experiment measures, on the same small MNIST subsets
as the paper (reconstruction: 3 classes × 50 digits; generation_5: 200 fives), with the paper's settings and at every
d, whether the rankings of d = 2 hold, and where they turn.

Per subset, latent dimension and seed, for each model (``evaluate_seed``):

* the test log p(x): exact by quadrature at d = 2 (``exact_log_likelihood``), annealed importance sampling elsewhere
  (``rhvae.evaluation.ais``), with the bidirectional Monte Carlo gap of the AIS schedule on data simulated from the
  model (the AIS error bound: an upper minus a lower stochastic bound of log p(x) on images with a known posterior
  sample);
* the reconstruction error (BCE of the decoder mean at the encoder mean);
* the classifier FID, precision/recall and in-class share of ``n_samples`` samples for each sampler that applies:
  prior sampling (every model), the RHVAE's own Riemannian HMC on its learned metric ("metric"), and the
  geometry-aware sampler of GeomPersp 2022 built from the model's encoder ("geometric", every model);
* the flow and metric diagnostics of ``rhvae.evaluation.diagnostics`` (flow displacement, flow gain, metric contrast).

Verdicts (``verdicts``), each against its source, at every d and on the mean over seeds:

* (a) the paper: "the RHVAE has the best log-likelihood": the RHVAE's mean test log p(x) ≥ the VAE's and the
  HVAE's. Where AIS replaces the exact value, the check is void unless every compared model's mean BDMC gap is at
  most ``MAX_BDMC_GAP`` nats and every margin the verdict ranks exceeds the sum of the two models' gaps (the
  bound on the error of a difference of two AIS estimates);
* (b) the paper: "sampling the learned metric beats prior sampling": the RHVAE's Riemannian-HMC samples have a lower
  classifier FID than the prior samples of the VAE, of the HVAE and of the RHVAE itself;
* (c) GeomPersp 2022: "a VAE with the geometry-aware sampler matches or beats the RHVAE": the VAE's geometric samples
  have a classifier FID at most that of the RHVAE's own (Riemannian-HMC) samples.

``turning_points`` says, per verdict and subset, the first d at which the answer differs from the answer at the
smallest d. The protocol (which numbers decide each verdict, the dimensions, the FID of our MNIST classifier rather
than the Inception FID) is ours: neither paper defines one for this question.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import partial

from rhvae.evaluation.ais import AIS_CHAINS, AIS_INITIAL, AIS_LEAPFROG, bdmc
from rhvae.evaluation.diagnostics import flow_diagnostics
from rhvae.evaluation.likelihood import log_likelihood_table, reconstruction_error
from rhvae.experiments import stored_evaluations
from rhvae.experiments.data import ExperimentData
from rhvae.experiments.quality import generation_score
from rhvae.experiments.runs import Run, model_configs
from rhvae.experiments.tables import compare_over_seeds, over_seeds
from rhvae.models import HVAE, VAE
from rhvae.sampling.hmc import generate

#: The subsets of the experiment: those of the paper's experiments of these names. Its latent dimensions are the
#: notebook's ``latent_dims`` (the registry's paper setting: 2, 4 and 16).
SUBSETS = ("reconstruction", "generation_5")
#: The model kinds compared, by their table names.
MODEL_NAMES = {"vae": "VAE", "hvae": "HVAE", "rhvae": "RHVAE"}
#: The largest mean BDMC gap (nats) at which an AIS log-likelihood may decide verdict (a); the issue's bound.
MAX_BDMC_GAP = 1.0
#: Which samplers each model kind is scored with (``generate``'s ``sampler``; "paper" is the RHVAE's Riemannian HMC).
SAMPLERS = {"VAE": ("prior", "geometric"), "HVAE": ("prior", "geometric"), "RHVAE": ("prior", "paper", "geometric")}
#: How the samplers are named in the tables.
SAMPLER_LABELS = {"prior": "prior", "paper": "metric", "geometric": "geometric"}

#: What each number of the tables is (recorded with them in results.json).
NOTES = {
    "log_px": "test log p(x): exact 2-D quadrature at d = 2 (exact_log_likelihood), annealed importance "
    "sampling at d > 2 (rhvae.evaluation.ais, its default schedule), mean over the test images",
    "bdmc_gap": "bidirectional Monte Carlo on images simulated from the model: the reverse AIS chain's stochastic "
    "upper bound minus the forward chain's lower bound, mean over the images (nats); bounds the AIS error; d > 2 only",
    "log_likelihood_is": "importance sampling through the model's flow (S = ll_samples), the paper's estimator, "
    "for reference",
    "bce": "reconstruction BCE of the decoder mean at the encoder mean, summed over the 784 pixels (nats)",
    "samples": "n_samples samples per model and sampler: prior N(0, I); metric: the RHVAE's Riemannian HMC on √det G⁻¹ "
    "(mcmc_steps); geometric: GeomPersp 2022's sampler of √det G of the encoder's metric (rhvae.sampling.geometric)",
    "mechanism": "rhvae.evaluation.diagnostics on the test split: flow displacement (posterior σ), flow gain (nats), "
    "metric contrast (RHVAE)",
}

#: The notebook parameters of the evaluation (``evaluate_seed``'s keyword arguments).
EVALUATION_PARAMETERS = ("n_samples", "mcmc_steps", "bdmc_images", "ais_steps", "ll_samples")

LIKELIHOOD_KEYS = ("log_px", "bdmc_gap", "bce", "log_likelihood_is")
SAMPLE_KEYS = ("fid_classifier", "precision", "recall", "in_class_fraction")
MECHANISM_KEYS = ("displacement", "flow_gain", "contrast")


def model_label(name: str, d: int) -> str:
    """The display name of model kind ``name`` ("vae", …) at latent dimension ``d`` (``Run.train_over_seeds``)."""
    return f"{MODEL_NAMES[name]} d={d}"


def row_label(subset: str, d: int, name: str) -> str:
    """A table row: subset · latent dimension · model (and sampler)."""
    return f"{subset} · d={d} · {name}"


# ---------------------------------------------------------------------------------------------------- models
def dimension_models(run: Run, dims: Sequence[int]) -> dict[str, dict[int, dict[int, dict[str, VAE]]]]:
    """Train (or reuse) VAE, HVAE and RHVAE at every latent dimension of ``dims`` on each of ``SUBSETS``, with that
    experiment's paper settings and epochs (``Run.train_over_seeds``; the run's ``epochs`` overrides them) and the
    run's seeds: ``{subset: {d: {seed: {"VAE" | "HVAE" | "RHVAE": model}}}}``, without models whose training
    diverged. At d = 2 these are exactly the experiment's own (shipped) models."""
    found = {}
    for subset in SUBSETS:
        configs = model_configs(run.params, subset)
        specs = {model_label(k, d): (k, {**configs[k], "latent_dim": d}) for d in dims for k in MODEL_NAMES}
        by_seed = run.train_over_seeds(specs, experiment=subset)
        found[subset] = {
            d: {
                seed: {MODEL_NAMES[k]: models[model_label(k, d)] for k in MODEL_NAMES if model_label(k, d) in models}
                for seed, models in by_seed.items()
            }
            for d in dims
        }
    return found


def evaluation_settings(params: Mapping) -> dict:
    """The notebook parameters that ``evaluate_seed`` takes (and that key a stored evaluation)."""
    return {k: params[k] for k in EVALUATION_PARAMETERS}


def evaluate_all(run: Run, models: Mapping, settings: Mapping) -> tuple[dict, dict, list[str]]:
    """``evaluate_seed`` for every (subset, d, seed) of ``dimension_models``' ``models`` with ``settings``
    (``evaluation_settings``). Each (subset, d) is one stored evaluation, keyed by its models' weights and the
    settings (``stored_evaluations``: shipped, then cached), so that retraining one group recomputes that group only; a
    computed one is saved to the run's cache. Returns ({subset: {d: {seed: numbers}}} with string keys, as JSON
    gives them; {"subset/d": "shipped", "cache" or "computed"}; the files)."""
    evaluation: dict = {}
    sources, files = {}, []
    for subset, by_dim in models.items():
        for d, by_seed in by_dim.items():
            group = {f"{seed}/{name}": m for seed, by_name in by_seed.items() for name, m in by_name.items()}
            key = f"{subset}_d{d}_{evaluation_key(group, settings)}"
            stored, source, path = stored_evaluations.stored_evaluation(
                "latent_dimension", key, run.cache_dir, partial(_evaluate_group, run, subset, by_seed, settings)
            )
            evaluation.setdefault(subset, {})[str(d)] = stored
            sources[f"{subset}/{d}"] = source
            files.append(str(path))
    return evaluation, sources, files


def _evaluate_group(run: Run, subset: str, by_seed: Mapping, settings: Mapping) -> dict:
    data = run.data(experiment=subset)
    return {str(seed): evaluate_seed(by_name, data, seed, **settings) for seed, by_name in by_seed.items()}


# -------------------------------------------------------------------------------------------------- evaluation
def evaluate_seed(
    models: Mapping[str, VAE],
    data: ExperimentData,
    seed: int,
    n_samples: int,
    mcmc_steps: int,
    bdmc_images: int,
    ais_steps: int,
    ll_samples: int,
) -> dict:
    """Every number of one (subset, d, seed): ``{"likelihood": {name: row}, "samples": {name sampler: score},
    "mechanism": {name: diagnostics}, "seconds": …}`` for the models ``{"VAE": …, "HVAE": …, "RHVAE": …}`` trained on
    ``data`` (module docstring): ``n_samples`` samples per sampler (``mcmc_steps`` MCMC steps), the BDMC gap on
    ``bdmc_images`` simulated images, AIS with ``ais_steps`` temperatures (its other settings: the defaults of
    ``rhvae.evaluation.ais``) and, for reference, the paper's importance-sampling estimate with ``ll_samples``
    draws."""
    start = time.perf_counter()
    x_test, x_train = data.test.x, data.train.x
    likelihood, samples, mechanism = {}, {}, {}
    for name, model in models.items():
        ll = log_likelihood_table(model, x_test, n_samples=ll_samples, seed=seed, ais_steps=ais_steps)
        row = {**reconstruction_error(model, x_test).summary(), **ll}
        if model.latent_dim != 2:  # the AIS estimate's error bound; the exact value needs none
            check = bdmc(model, bdmc_images, n_steps=ais_steps, seed=seed).summary()
            row["bdmc_gap"] = check["mean_gap"]
            row["bdmc"] = check
        likelihood[name] = row
        for sampler in SAMPLERS[name]:
            extra = {"x_train": x_train} if sampler == "geometric" else {}
            made = generate(model, n_samples, mcmc_steps, seed=seed, sampler=sampler, **extra)
            samples[f"{name} {SAMPLER_LABELS[sampler]}"] = {**generation_score(made.images, data.classes), **made.info}
        if isinstance(model, HVAE):
            mechanism[name] = flow_diagnostics(model, x_test, seed=seed).to_dict()
    return {
        "likelihood": likelihood,
        "samples": samples,
        "mechanism": mechanism,
        "seconds": time.perf_counter() - start,
    }


def evaluation_key(models: Mapping, settings: Mapping) -> str:
    """What identifies an evaluation (``stored_evaluations.evaluation_key``): every evaluated model's weights, the
    settings (``settings`` JSON-ready) and the AIS defaults that ``evaluate_seed`` does not set."""
    ais = {"chains": AIS_CHAINS, "leapfrog": AIS_LEAPFROG, "initial": AIS_INITIAL}
    return stored_evaluations.evaluation_key(models, {"settings": settings, "ais": ais})


# ------------------------------------------------------------------------------------------------- tables
def _columns(row: Mapping) -> dict:
    """A row of numbers with ``log_likelihood`` (exact or AIS, by d) shown as ``log_px``: the report's
    ``log_likelihood`` column means the exact value only."""
    return {("log_px" if k == "log_likelihood" else k): v for k, v in row.items()}


def tables(evaluation: Mapping[str, Mapping[str, Mapping[str, Mapping]]]) -> dict[str, dict]:
    """The three tables over seeds (``tables.over_seeds``) of ``evaluation`` ({subset: {d: {seed: evaluate_seed}}},
    keys as strings, JSON-ready): ``likelihood``, ``samples`` and ``mechanism``, rows ``row_label``."""
    out = {"likelihood": {}, "samples": {}, "mechanism": {}}
    for part, keys in (("likelihood", LIKELIHOOD_KEYS), ("samples", SAMPLE_KEYS), ("mechanism", MECHANISM_KEYS)):
        for subset, by_dim in evaluation.items():
            for d, by_seed in by_dim.items():
                per_seed = {
                    seed: {row_label(subset, int(d), name): _columns(row) for name, row in numbers[part].items()}
                    for seed, numbers in by_seed.items()
                }
                present = [k for k in keys if any(k in row for t in per_seed.values() for row in t.values())]
                out[part].update(over_seeds(per_seed, present))
    return out


# ------------------------------------------------------------------------------------------------- verdicts
def _per_seed(by_seed: Mapping[str, Mapping], part: str) -> dict:
    return {seed: numbers[part] for seed, numbers in by_seed.items()}


def verdict_at(by_seed: Mapping[str, Mapping], d: int) -> dict[str, dict]:
    """The three verdicts (module docstring) at one (subset, d) from its ``evaluate_seed`` results per seed:
    {"a" | "b" | "c": {"holds": bool or None (void), "seeds": "k/n seeds" of each comparison, "why": text}}."""
    likelihood, samples = _per_seed(by_seed, "likelihood"), _per_seed(by_seed, "samples")
    # (a) the best log-likelihood
    a = _likelihood_verdict(likelihood, d)
    # (b) the learned metric's sampler against every prior sampler
    priors = ("VAE prior", "HVAE prior", "RHVAE prior")
    comparisons = {p: compare_over_seeds(samples, "fid_classifier", "RHVAE metric", p, higher=False) for p in priors}
    b = {
        "holds": all(ok for ok, _ in comparisons.values()),
        "seeds": {p: s for p, (_, s) in comparisons.items()},
        "why": "classifier FID of the RHVAE's Riemannian-HMC samples against each prior sampler's",
    }
    # (c) GeomPersp: a VAE with the geometry-aware sampler matches or beats the RHVAE
    ok, seeds = compare_over_seeds(samples, "fid_classifier", "VAE geometric", "RHVAE metric", higher=False)
    c = {"holds": ok, "seeds": {"RHVAE metric": seeds}, "why": "classifier FID, VAE geometric against RHVAE metric"}
    return {"a": a, "b": b, "c": c}


def _mean_over_seeds(likelihood: Mapping[str, Mapping], name: str, key: str) -> float | None:
    values = [table[name][key] for table in likelihood.values() if table.get(name, {}).get(key) is not None]
    return sum(values) / len(values) if values else None


def _likelihood_verdict(likelihood: Mapping[str, Mapping], d: int) -> dict:
    """Verdict (a) from the per-seed likelihood rows. At d = 2 the log p(x) are exact. Elsewhere they are AIS
    estimates, and the verdict is void (None) where it would rest on numbers the estimator cannot tell apart: when a
    compared model's mean BDMC gap exceeds ``MAX_BDMC_GAP``, or when the RHVAE's margin over a model is smaller than
    the sum of the two mean gaps (the bound on the error of the difference)."""
    comparisons = {o: compare_over_seeds(likelihood, "log_likelihood", "RHVAE", o) for o in ("VAE", "HVAE")}
    seeds = {o: s for o, (_, s) in comparisons.items()}
    holds = all(ok for ok, _ in comparisons.values())
    if d == 2:
        return {"holds": holds, "seeds": seeds, "why": "exact log p(x)"}
    gaps = {n: _mean_over_seeds(likelihood, n, "bdmc_gap") for n in ("RHVAE", "VAE", "HVAE")}
    if any(g is None for g in gaps.values()):
        return {"holds": None, "seeds": seeds, "why": "void: no BDMC gap bounds the AIS error"}
    if max(gaps.values()) > MAX_BDMC_GAP:
        why = f"void: a mean BDMC gap exceeds {MAX_BDMC_GAP:g} nat (largest {max(gaps.values()):.2f})"
        return {"holds": None, "seeds": seeds, "why": why}
    rhvae = _mean_over_seeds(likelihood, "RHVAE", "log_likelihood")
    for other in ("VAE", "HVAE"):
        margin = rhvae - _mean_over_seeds(likelihood, other, "log_likelihood")
        bound = gaps["RHVAE"] + gaps[other]
        if abs(margin) <= bound:
            why = f"void: the RHVAE − {other} margin {margin:+.2f} nats is within the AIS error bound {bound:.2f}"
            return {"holds": None, "seeds": seeds, "why": why}
    return {"holds": holds, "seeds": seeds, "why": "AIS log p(x); every margin beyond its BDMC bound"}


VERDICT_CLAIMS = {
    "a": "the paper: the RHVAE has the best log-likelihood",
    "b": "the paper: sampling the learned metric beats prior sampling",
    "c": "GeomPersp 2022: a VAE with the geometry-aware sampler matches or beats the RHVAE",
}


def verdicts(evaluation: Mapping[str, Mapping[str, Mapping]]) -> dict[str, dict[int, dict]]:
    """``verdict_at`` for every (subset, d) of ``evaluation``: {subset: {d: {"a": …, "b": …, "c": …}}}."""
    return {
        subset: {int(d): verdict_at(by_seed, int(d)) for d, by_seed in sorted(by_dim.items(), key=lambda i: int(i[0]))}
        for subset, by_dim in evaluation.items()
    }


def turning_points(found: Mapping[str, Mapping[int, Mapping]]) -> dict[str, dict[str, int | None]]:
    """Per verdict and subset, the first latent dimension whose answer (holds or does not) differs from the answer at
    the smallest dimension that has one, or None when it never turns; void answers (``verdict_at``) are skipped."""
    out: dict[str, dict[str, int | None]] = {}
    for subset, by_dim in found.items():
        for letter in VERDICT_CLAIMS:
            answers = [(d, by_dim[d][letter]["holds"]) for d in sorted(by_dim)]
            answers = [(d, holds) for d, holds in answers if holds is not None]
            turn = next((d for d, holds in answers[1:] if holds != answers[0][1]), None)
            out.setdefault(letter, {})[subset] = turn
    return out


def _word(holds: bool | None) -> str:
    return "void" if holds is None else ("holds" if holds else "does not hold")


def checks(found: Mapping[str, Mapping[int, Mapping]]) -> dict[str, bool]:
    """The notebook's checks (``Run.conclude``): one per verdict, subset and d that is not void, named with its
    source, its d and its seed counts."""
    out = {}
    for subset, by_dim in found.items():
        for d, by_letter in sorted(by_dim.items()):
            for letter, verdict in by_letter.items():
                if verdict["holds"] is None:
                    continue
                seeds = ", ".join(f"vs {o}: {s}" for o, s in verdict["seeds"].items())
                out[f"({letter}) {VERDICT_CLAIMS[letter]} — {subset}, d = {d} ({seeds})"] = verdict["holds"]
    return out


def summary_text(found: Mapping[str, Mapping[int, Mapping]]) -> str:
    """The verdicts in words: per claim and subset, the answer at each d and where it turns."""
    turns = turning_points(found)
    lines = []
    for letter, claim in VERDICT_CLAIMS.items():
        lines.append(f"({letter}) {claim}:")
        for subset, by_dim in found.items():
            answers = ", ".join(f"d = {d}: {_word(by_dim[d][letter]['holds'])}" for d in sorted(by_dim))
            turn = turns[letter][subset]
            where = f"turns at d = {turn}" if turn is not None else "does not turn"
            lines.append(f"  {subset}: {answers} — {where}")
    return "\n".join(lines)


def check_dims(dims: Sequence[int]) -> tuple[int, ...]:
    """The experiment's latent dimensions, sorted and distinct, each in 2 … 16."""
    values = sorted({int(d) for d in dims})
    if not values or any(d < 2 or d > 16 for d in values):
        raise ValueError(f"latent_dims must be distinct latent dimensions in 2 … 16, got {list(dims)!r}")
    return tuple(values)


__all__ = [
    "MAX_BDMC_GAP",
    "SUBSETS",
    "check_dims",
    "checks",
    "evaluate_seed",
    "evaluate_all",
    "evaluation_key",
    "model_label",
    "row_label",
    "summary_text",
    "tables",
    "turning_points",
    "verdict_at",
    "verdicts",
]
