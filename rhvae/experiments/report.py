"""The results report of a ``run_all.sh`` output folder: one Markdown page with, per experiment, the paper's
claim, the verdict of the run, the tables of numbers over seeds, the figures, how the numbers were made
(objective, sampler target, models trained or reused) and the command that regenerates them.

``python -m rhvae report FOLDER`` writes ``FOLDER/README.md``; ``run_all.sh`` calls it after the notebooks and
copies it to ``figures/README.md`` (the report of the latest run). The page is built from each notebook's
``results.json`` only, so it can be rebuilt at any time from a finished run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from rhvae.experiments.registry import REGISTRY
from rhvae.files import atomic_write_text

REPORT_TITLE = "# Results report"
#: The experiments in report order, and their titles (``rhvae.experiments.registry``).
EXPERIMENT_ORDER = tuple(REGISTRY)
TITLES = {name: e.title for name, e in REGISTRY.items()}

#: Column headers of the numbers that the notebooks record over seeds.
HEADERS = {
    "bce": "BCE (nats, sum over pixels) ↓",
    "mse": "MSE (mean per pixel) ↓",
    "log_likelihood": "log p(x), exact ↑",
    "log_likelihood_is": "log p(x), IS estimate",
    "is_bias": "IS − exact",
    "in_class_fraction": "share in class ↑",
    "coverage": "class coverage ↑",
    "normalized_entropy": "entropy / log K ↑",
    "mean_confidence": "classifier confidence ↑",
    "tv_from_uniform": "TV from uniform ↓",
    "codes_minus_far": "log √det G⁻¹: codes − far",
    "high_fraction": "high-metric area",
    "kappa": "max eigenvalue of G⁻¹",
    "accuracy": "test accuracy ↑",
    "gain": "gain over real only ↑",
    "fid_classifier": "classifier FID ↓",
    "precision": "precision ↑",
    "recall": "recall ↑",
    "length_ratio": "L_G(path) / L_G(line)",
    "riemannian_length": "L_G (RHVAE metric)",
    "smoothness": "mean sq. 2nd difference ↓",
    "confidence_mean": "confidence along path ↑",
    "confidence_min": "lowest confidence ↑",
    "class_switches": "class switches",
    "data_distance_mean": "distance to data ↓",
    "ari": "ARI ↑",
    "nmi": "NMI ↑",
    "purity": "purity ↑",
    "reliability": "agreement across restarts ↑",
    "seed_agreement": "agreement across seeds ↑",
    "log_px": "log p(x), exact (d = 2) or AIS ↑",
    "bdmc_gap": "BDMC gap (nats) ↓",
    "displacement": "flow displacement (σ)",
    "flow_gain": "flow gain (nats)",
    "contrast": "metric contrast",
}

TABLE_TITLES = {
    "evaluation_over_seeds": "Test reconstruction error and log-likelihood",
    "quality_over_seeds": "Quality score of the generated samples",
    "metric_over_seeds": "The learned metric",
    "accuracy_over_seeds": "Test accuracy of the classifiers by training set (classifier, real images per class, arm)",
    "added_images_over_seeds": "The real and added images of every arm, scored (images per class)",
    "interpolation_over_seeds": "Paths between pairs of test digits (subset · pairs · model and path)",
    "clustering_over_seeds": "k-medoids of the latent codes against the labels (subset · model / distance)",
    "latent_likelihood_over_seeds": "Test log p(x) (exact at d = 2, AIS above), reconstruction (subset · d · model)",
    "latent_samples_over_seeds": "Samples by sampler (subset · d · model and sampler)",
    "latent_mechanism_over_seeds": "What the flow and the metric do (subset · d · model)",
}


def _number(value: float) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _cell(stat: Mapping) -> str:
    text = _number(stat["mean"])
    if stat.get("std") is not None:
        std = stat["std"]
        if abs(std) <= 1e-12 * max(1.0, abs(stat["mean"])):  # equal values whose mean carries rounding noise
            std = 0.0
        text += f" ± {std:.0f}" if abs(std) >= 10 else f" ± {std:.2g}"
        text += " <sub>(" + ", ".join(_number(v) for v in stat["values"].values()) + ")</sub>"
    return text


def seed_table(summary: Mapping[str, Mapping], reference: Mapping | None = None, reference_name: str = "") -> str:
    """A Markdown table of ``runs.over_seeds`` numbers: mean ± sample std, the per-seed values below."""
    keys = [k for k in HEADERS if any(k in row for row in summary.values())]
    lines = ["| | " + " | ".join(HEADERS[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row, numbers in summary.items():
        lines.append(f"| {row} | " + " | ".join(_cell(numbers[k]) if k in numbers else "–" for k in keys) + " |")
    if reference:
        lines.append(
            f"| *{reference_name}* | "
            + " | ".join(_number(reference.get(k)) if isinstance(reference.get(k), float) else "–" for k in keys)
            + " |"
        )
    return "\n".join(lines)


def _how_made(results: Mapping) -> list[str]:
    lines = []
    objectives = sorted({str(m.get("objective")) for m in results["models"].values() if m.get("status") == "ok"})
    lines.append(f"- Training objective: {', '.join(objectives)}.")
    configs = [m["config"] for m in results["models"].values() if m.get("model") == "rhvae" and m.get("config")]
    if configs:
        c = configs[0]
        lines.append(
            f"- RHVAE: n_lf {c.get('n_lf')}, eps_lf {c.get('eps_lf')}, β₀ {c.get('beta_zero')}, "
            f"λ {c.get('regularization')}, step bound `{c.get('step_bound')}`."
        )
    targets = set()
    for per_seed in results["results"].get("generation", {}).values():
        targets |= {f"{info['sampler']}: {info['target']}" for info in per_seed.values()}
    for target in sorted(targets):
        lines.append(f"- Samples — {target}.")
    sources = {}
    for m in results["models"].values():
        source = m.get("source") or ("reused" if m.get("reused_from_cache") else "trained")
        sources[source] = sources.get(source, 0) + 1
    params = results["parameters"]
    # an analysis (interpolation, clustering) has epochs None: its models keep the epochs they were trained for
    epochs = params.get("epochs") or "/".join(sorted({str(m.get("epochs")) for m in results["models"].values()}))
    lines.append(
        f"- Models: {', '.join(f'{n} {s}' for s, n in sorted(sources.items()))}; {epochs} epochs, "
        f"seeds {params.get('seeds')}, data seed {params.get('data_seed')}, {results['provenance']['threads']} "
        f"thread(s)."
    )
    seconds = results["provenance"]["timings_seconds"].get("total")
    if seconds is not None:
        lines.append(f"- Notebook time: {seconds:.0f} s.")
    return lines


KIND_ORDER = {"vae": 0, "hvae": 1, "rhvae": 2}


def analysed_experiment(label: str) -> str | None:
    """The experiment whose model an analysis (interpolation, clustering) recorded under ``label``
    (``rhvae.experiments.runs.Run.train_over_seeds`` prefixes the label with it), or None."""
    return next((name for name in REGISTRY if label.startswith(f"{name}_")), None)


def model_name(label: str, m: Mapping) -> str:
    """The model's kind, and in an analysis's tables the experiment it comes from: "RHVAE (generation_7_classes)"."""
    owner = analysed_experiment(label)
    return m["model"].upper() + (f" ({owner})" if owner else "")


def ordered(models: Mapping[str, Mapping]) -> list[tuple[str, Mapping]]:
    """The models of a results.json in one fixed order, whatever order they were trained or reused in: by the
    experiment they come from (in an analysis), kind (VAE, HVAE, RHVAE), seed, metric temperature, then label (the
    augmentation experiment's size and class)."""

    def key(item):
        label, m = item
        temperature = (m.get("config") or {}).get("temperature") or 0.0
        owner = analysed_experiment(label)
        return (
            EXPERIMENT_ORDER.index(owner) if owner else -1,
            KIND_ORDER.get(m.get("model"), 3),
            m.get("seed") or 0,
            temperature,
            label,
        )

    return sorted(models.items(), key=key)


def stability_table(models: Mapping[str, Mapping]) -> str | None:
    """Per trained HVAE/RHVAE: how training ended (epochs, final losses, the last leapfrog step and, for the
    RHVAE, κ = max eigenvalue of G⁻¹ and whether the stability bound or the eps_lf cap set the step)."""
    rows = [
        "| model | seed | T | status | epochs | train loss | test loss | last step | κ | step set by |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m in ordered(models):
        if m.get("model") not in ("hvae", "rhvae"):
            continue
        config = m.get("config", {})
        step, kappa = m.get("final_step_size"), m.get("kappa")
        capped = step is not None and config.get("eps_lf") is not None and step >= 0.999 * config["eps_lf"]
        by = "–" if m["model"] == "hvae" else ("eps_lf cap (metric ≈ λI)" if capped else "stability bound")
        if m.get("status") != "ok":
            rows.append(f"| {label} | {m.get('seed')} | | DIVERGED at epoch {m.get('diverged_epoch')} | | | | | | |")
            continue
        rows.append(
            f"| {model_name(label, m)} | {m.get('seed')} | {_number(config.get('temperature'))} | ok "
            f"| {m.get('epochs')} "
            f"| {_number(m.get('final_train_loss'))} | {_number(m.get('final_test_loss'))} "
            f"| {'–' if step is None else f'{step:.2g}'} | {'–' if kappa is None else f'{kappa:.3g}'} | {by} |"
        )
    return "\n".join(rows) if len(rows) > 2 else None


def diagnostics_table(models: Mapping[str, Mapping]) -> str | None:
    """Per trained HVAE/RHVAE with recorded ``diagnostics`` (``rhvae.evaluation.diagnostics``): does the flow move,
    does it gain ELBO (± its standard error over the test images), is the metric more than λI; the last column says
    in words when the flow barely moves or the metric is flat (then the model behaves like a VAE or an HVAE, not like
    the paper's RHVAE)."""
    rows = [
        "| model | seed | T | displacement (posterior σ) | flow gain (nats) | step | κ | contrast | reading |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m in ordered(models):
        d = m.get("diagnostics")
        if m.get("status") != "ok" or not d:
            continue
        reading = "; ".join(d.get("flags") or []) or "the flow moves" + (
            " and the metric has structure" if d.get("contrast") is not None else ""
        )
        kappa, contrast = d.get("kappa"), d.get("contrast")
        rows.append(
            f"| {model_name(label, m)} | {m.get('seed')} | {_number(m.get('config', {}).get('temperature'))} "
            f"| {d['displacement']:.2g} | {d['flow_gain']:+.2g} ± {d.get('flow_gain_sem', float('nan')):.2g} "
            f"| {d['step']:.2g} | {'–' if kappa is None else f'{kappa:.3g}'} "
            f"| {'–' if contrast is None else f'{contrast:.2g}'} | {reading} |"
        )
    return "\n".join(rows) if len(rows) > 2 else None


#: The criteria a shipped RHVAE must meet on its test split: its flow moves, gains ELBO, and its metric has
#: structure (issue 19; ``rhvae.evaluation.diagnostics``).
RHVAE_CRITERIA = {"displacement": 1.0, "flow_gain": 1.0, "contrast": 0.5}


def rhvae_criteria(models: Mapping[str, Mapping]) -> str | None:
    """One paragraph: how many trained RHVAEs meet all of ``RHVAE_CRITERIA`` on their test split, and each one
    that does not, with the criterion it misses. A flow gain whose standard error over the test images is so large
    that 1 nat lies within two of them is *undecided* (the test split is too small to tell), not failed."""
    rhvaes = {k: m for k, m in models.items() if m.get("model") == "rhvae" and m.get("status") == "ok"}
    rhvaes = {k: m for k, m in rhvaes.items() if m.get("diagnostics")}
    if not rhvaes:
        return None
    failed, undecided = [], []
    for label, m in rhvaes.items():
        d = m["diagnostics"]
        missed = [f"{key} {d[key]:.2g} < {low:g}" for key, low in RHVAE_CRITERIA.items() if d[key] < low]
        gain_only = missed and all(x.startswith("flow_gain") for x in missed)
        if gain_only and d["flow_gain"] + 2 * d.get("flow_gain_sem", 0.0) >= RHVAE_CRITERIA["flow_gain"]:
            undecided.append(f"{label} (gain {d['flow_gain']:+.2g} ± {d['flow_gain_sem']:.2g})")
        elif missed:
            failed.append(f"{label} ({', '.join(missed)})")
    meet = len(rhvaes) - len(failed) - len(undecided)
    text = (
        f"RHVAE criteria on the test split (displacement ≥ 1 σ, flow gain ≥ 1 nat, contrast ≥ 0.5): "
        f"**{meet}/{len(rhvaes)}** models meet all three"
    )
    if undecided:
        text += f"; undecided (1 nat within two standard errors of the gain): {', '.join(undecided)}"
    if failed:
        text += f"; **not met**: {', '.join(failed)}"
    return text + "."


DIAGNOSTICS_NOTE = (
    "Displacement: median over the test images of ‖(z_K − z₀) ⊘ σ(x)‖ (mean over draws), in units of the "
    "encoder's posterior std; flow gain: mean one-sample true ELBO through the flow minus the encoder-only ELBO of "
    "the same networks; step: median leapfrog step over the test images; κ: largest eigenvalue of G⁻¹ at the "
    "centroids; contrast: mean over the test codes of log √det G⁻¹(μ(x)) − (d/2) log λ (0 for a metric equal to λI). "
    "Flags: displacement < 1 σ (the flow barely moves), contrast < 0.5 (the metric is flat), gain below 0 by more "
    "than twice its standard error over the images (the flow costs ELBO)."
)


def experiment_section(results: Mapping, link_prefix: str) -> str:
    """The report section of one notebook's ``results.json``; figure links start with ``link_prefix``."""
    name = results["experiment"]
    verdict = results.get("verdict") or {}
    lines = [f"## {TITLES.get(name, name)}", ""]
    if results.get("quick"):
        lines += ["> **Quick mode**: a few epochs; these numbers test the pipeline, not the paper's claims.", ""]
    if results.get("status") != "ok":
        lines += [f"> **A model diverged**: {'; '.join(results.get('problems', []))}", ""]
    if verdict.get("not_meaningful"):
        lines += [f"> **Not meaningful**: {'; '.join(verdict['not_meaningful'])}", ""]
    lines += [f"**Paper:** {verdict.get('claim', '(no verdict recorded)')}", ""]
    if verdict:
        lines.append(
            f"**Verdict: {verdict['verdict']}** ({verdict['agree']}/{verdict['total']} checks agree; every model "
            f"trained: {'yes' if verdict.get('every_model_trained') else 'NO'})"
        )
        lines.append("")
        lines += [f"- {'✅' if ok else '❌'} {check}" for check, ok in verdict["checks"].items()]
        lines.append("")
    reference = results["results"].get("quality_real_test_digits")
    for key, title in TABLE_TITLES.items():
        summary = results["results"].get(key)
        if summary:
            lines += [
                f"**{title}** (mean ± sample std over seeds; per-seed values in brackets)",
                "",
                seed_table(summary, reference if key == "quality_over_seeds" else None, "real test digits"),
                "",
            ]
    note = results["results"].get("generation_metrics_note")
    if note:
        lines += [f"Classifier FID, precision and recall: {note}.", ""]
    explanation = results["results"].get("explanation")
    if explanation:
        lines += ["**Behind the checks** (measured in this run)", "", explanation, ""]
    stability = stability_table(results["models"])
    if stability:
        lines += ["**How training ended** (losses are the negative ELBO per image, in nats)", "", stability, ""]
    diagnostics = diagnostics_table(results["models"])
    if diagnostics:
        lines += [
            "**What the flow and the metric do** (test split, `rhvae.evaluation.diagnostics`)",
            "",
            diagnostics,
            "",
        ]
        lines += [DIAGNOSTICS_NOTE, ""]
        criteria = rhvae_criteria(results["models"])
        if criteria:
            lines += [criteria, ""]
    lines += ["**How these numbers were made**", ""] + _how_made(results) + [""]
    for figure in results.get("figures", []):
        lines += [f"![{figure}]({link_prefix}{name}/{figure})", ""]
    lines += [
        "**Regenerate:** "
        f"`./run_all.sh --only {name}` (shipped models) · `./run_all.sh --train --only {name}` (retrain)",
        "",
    ]
    return "\n".join(lines)


def read_results(path: Path) -> dict:
    """A notebook's results.json; ``ValueError`` naming the file when it is not the JSON object a notebook writes."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    missing = [
        k
        for k in ("experiment", "results", "models", "provenance")
        if not isinstance(results, dict) or k not in results
    ]
    if missing:
        raise ValueError(f"{path} is not a notebook's results.json: no field {', '.join(repr(k) for k in missing)}")
    return results


def build_report(folder: str | os.PathLike, link_prefix: str = "") -> str:
    """The Markdown report of a ``run_all.sh`` output folder (the notebooks that have a ``results.json``)."""
    folder = Path(folder)
    found = [n for n in EXPERIMENT_ORDER if (folder / n / "results.json").is_file()]
    if not found:
        raise FileNotFoundError(f"no NOTEBOOK/results.json under {folder}: is it a run_all.sh output folder?")
    all_results = [read_results(folder / n / "results.json") for n in found]
    head = [
        REPORT_TITLE,
        "",
        f"Run folder: `{folder.name}`; generated by `python -m rhvae report` from each notebook's results.json.",
        "",
        "| experiment | verdict | checks | status |",
        "|---|---|---|---|",
    ]
    for r in all_results:
        v = r.get("verdict") or {}
        mode = " (quick)" if r.get("quick") else ""
        head.append(
            f"| {r['experiment']}{mode} | {v.get('verdict', '–')} | {v.get('agree', '–')}/{v.get('total', '–')} "
            f"| {r.get('status')} |"
        )
    env = all_results[0]["provenance"]["environment"]
    cpu = f", CPU {env['cpu']} ({env.get('cpu_capability')})" if env.get("cpu") else ""  # recorded since 2026-12-04
    head += [
        "",
        f"Environment: rhvae {env.get('rhvae')}, torch {env.get('torch')}, Python {env.get('python')}, "
        f"git {env.get('git_commit', 'unknown')}{cpu}.",
        "",
    ]
    return "\n".join(head + [experiment_section(r, link_prefix) for r in all_results])


def write_report(folder: str | os.PathLike, latest: str | os.PathLike | None = None) -> Path:
    """Write ``FOLDER/README.md`` and, if ``latest`` is given, a copy there whose figure links point into
    ``FOLDER`` (``run_all.sh`` writes ``figures/README.md`` this way). Returns the path of FOLDER/README.md.
    Neither path may be an existing file other than an earlier report: nothing else is ever overwritten."""
    folder = Path(folder).resolve()
    targets = [folder / "README.md"] + ([] if latest is None else [Path(latest).resolve()])
    for target in targets:
        if target.is_dir() or (target.exists() and not target.read_bytes().startswith(REPORT_TITLE.encode())):
            raise ValueError(f"{target} exists and is not a results report: refusing to overwrite it")
    path = atomic_write_text(targets[0], build_report(folder))
    if latest is not None:
        prefix = os.path.relpath(folder, targets[1].parent).replace(os.sep, "/") + "/"
        atomic_write_text(targets[1], build_report(folder, link_prefix=prefix))
    return path
