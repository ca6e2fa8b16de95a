"""The figures the README and docs/ quote from a committed record agree with it: a small, explicit list of quantities,
each parsed from its doc and compared with its source in results/ (the report's results.json files, and the
scaling benchmark's record results/scaling/). The README's verdicts are checked in tests/test_readme.py.

Every check takes the doc's text and returns its disagreements, so that a figure edited by hand (or a report
republished without its docs) fails here; the last test feeds altered docs to each check to show that it can."""

import json
import re
import statistics

import pytest

from rhvae.paths import ROOT

NUMBER = r"[−-]?\d+(?:\.\d+)?"


def read(path: str) -> str:
    return (ROOT / path).read_text()


def record(name: str) -> dict:
    return json.loads((ROOT / "results" / name / "results.json").read_text())


def number(text: str) -> float:
    return float(text.replace("−", "-"))


def section(text: str, heading: str) -> str:
    """The text under the ``## heading`` line, up to the next ``## `` heading."""
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def log_px(subset: str, d: int, model: str) -> dict:
    """Exact (d = 2) or AIS log p(x) of a model over the seeds: mean, std and per-seed values (the report's record)."""
    likelihoods = record("latent_dimension")["results"]["latent_likelihood_over_seeds"]
    return likelihoods[f"{subset} · d={d} · {model}"]["log_px"]


def compare(problems: list, name: str, quoted: str, value: float, digits: int) -> None:
    if number(quoted) != round(value, digits):
        problems.append(f"{name}: the doc says {quoted}, the record {value:.{digits + 2}f}")


# ---------------------------------------------------------------------------------------------------- the checks
def verdict_counts(text: str) -> list[str]:
    """docs/results.md and docs/augmentation.md: the verdicts of interpolation, clustering and augmentation."""
    quoted = {
        "interpolation": re.search(r"verdict \*\*([a-z ]+)\*\* \((\d+)/(\d+)\)", section(text, "Interpolations")),
        "clustering": re.search(r"verdict \*\*([a-z ]+)\*\* \((\d+)/(\d+)\)", section(text, "Clustering")),
        "augmentation": re.search(r"claim holds ([a-z ]+) \((\d+)/(\d+) checks\)", text),
    }
    problems = []
    for name, match in quoted.items():
        if match is None:
            problems.append(f"{name}: no verdict found")
            continue
        verdict = record(name)["verdict"]
        if (match[1], int(match[2]), int(match[3])) != (verdict["verdict"], verdict["agree"], verdict["total"]):
            problems.append(
                f"{name}: the doc says {match[0]!r}, the record {verdict['verdict']} {verdict['agree']}/"
                f"{verdict['total']}"
            )
    return problems


def readme_exact_log_likelihood(text: str) -> list[str]:
    """README, reconstruction row: the exact log p(x) of VAE, HVAE and RHVAE, mean ± std over the seeds."""
    pair = rf"({NUMBER}) ± ({NUMBER})"
    pattern = rf"exact log p\(x\): VAE {pair}, HVAE {pair}, \*\*RHVAE {pair}\*\*"
    match = re.search(pattern, text)
    if match is None:
        return ["the reconstruction row's exact log p(x) not found"]
    problems = []
    for i, model in enumerate(("VAE", "HVAE", "RHVAE")):
        recorded = log_px("reconstruction", 2, model)
        compare(problems, f"{model} mean", match[1 + 2 * i], recorded["mean"], 1)
        compare(problems, f"{model} std", match[2 + 2 * i], recorded["std"], 1)
    return problems


def exact_log_likelihood_by_seed(text: str) -> list[str]:
    """docs/results.md, "The exact log-likelihood, seed by seed": every row's three values (two decimals)."""
    rows = re.findall(
        rf"^\| (reconstruction|generation_5) \| (\d) \| ({NUMBER}) \| ({NUMBER}) \| ({NUMBER}) \|",
        section(text, "The exact log-likelihood, seed by seed"),
        re.M,
    )
    if len(rows) != 6:
        return [f"expected 6 rows (2 experiments × 3 seeds), found {len(rows)}"]
    problems = []
    for subset, seed, *values in rows:
        for model, quoted in zip(("VAE", "HVAE", "RHVAE"), values, strict=True):
            compare(problems, f"{subset} seed {seed} {model}", quoted, log_px(subset, 2, model)["values"][seed], 2)
    return problems


def latent_dimension_log_likelihood(text: str) -> list[str]:
    """docs/results.md, the latent_dimension table: the mean log p(x) of VAE / HVAE / RHVAE per subset and d."""
    rows = re.findall(
        r"^\| (reconstruction|generation_5) \| (\d+) \| ([^|]+) \|", section(text, "Beyond latent dimension 2"), re.M
    )
    if len(rows) != 6:
        return [f"expected 6 rows (2 subsets × d = 2, 4, 16), found {len(rows)}"]
    problems = []
    for subset, d, cell in rows:
        values = re.findall(NUMBER, cell.split("(")[0])
        for model, quoted in zip(("VAE", "HVAE", "RHVAE"), values, strict=True):
            compare(problems, f"{subset} d = {d} {model}", quoted, log_px(subset, int(d), model)["mean"], 1)
    return problems


AUGMENTATION_ARMS = {
    "real only": "real",
    "real + shifts/rotations": "classic",
    "real + VAE prior samples": "vae",
    "real + RHVAE samples (Riemannian HMC)": "rhvae",
    "real + RHVAE prior samples": "rhvae_prior",
    "RHVAE samples (HMC) only": "rhvae_only",
}
AUGMENTATION_COLUMNS = ("MLP 20/class", "CNN 20/class", "MLP 50/class", "CNN 50/class")


def augmentation_accuracies(text: str) -> list[str]:
    """docs/augmentation.md, the results table: test accuracy mean ± std over the seeds, and the gain over real only."""
    accuracy = record("augmentation")["results"]["accuracy"]
    problems = []
    for label, arm in AUGMENTATION_ARMS.items():
        match = re.search(rf"^\| {re.escape(label)} \|(.*)\|$", text, re.M)
        if match is None:
            problems.append(f"{label}: row not found")
            continue
        cells = [cell.strip(" *") for cell in match[1].split("|")]
        for column, cell in zip(AUGMENTATION_COLUMNS, cells, strict=True):
            per_seed = [accuracy[seed][column][arm] for seed in sorted(accuracy)]
            gains = [accuracy[seed][column][arm] - accuracy[seed][column]["real"] for seed in sorted(accuracy)]
            quoted = re.match(rf"({NUMBER}) ± ({NUMBER})(?: \(([+-]{NUMBER})\))?$", cell)
            if quoted is None:
                problems.append(f"{label}, {column}: cannot read {cell!r}")
                continue
            compare(problems, f"{label}, {column}, mean", quoted[1], statistics.mean(per_seed), 3)
            compare(problems, f"{label}, {column}, std", quoted[2], statistics.stdev(per_seed), 3)
            if arm != "real":
                compare(problems, f"{label}, {column}, gain", quoted[3] or "nan", statistics.mean(gains), 3)
    return problems


def scaling_figures(text: str) -> list[str]:
    """docs/speed.md, "How cost grows": the table is the benchmark record's scaling.md, and the figures the text
    quotes at 60,000 centroids are its scaling.json."""
    problems = []
    table = [line for line in read("results/scaling/scaling.md").splitlines() if line.startswith("|")]
    if not all(line in text.splitlines() for line in table):
        problems.append("the table differs from results/scaling/scaling.md")
    largest = max(json.loads(read("results/scaling/scaling.json"))["rows"], key=lambda row: row["n"])
    quoted = {
        "grid sampler": (r"\*\*(\S+) s for 100 × 90 steps at 60,000 centroids\*\*", largest["sampler_grid"], 1),
        "full-sum sampler": (r"against (\S+) s with the\s+full sum", largest["sampler_full"], 1),
        "truncated sampler": (r"full sum and (\S+) s truncated", largest["sampler_truncated"], 1),
        "grid sampler at T = 0.5": (r"(\S+) s at T = 0.5", largest["sampler_grid_T0.5"], 1),
        "κ": (r"once per frozen metric: (\S+) s at 60,000 centroids", largest["kappa"], 1),
        "blocks scanned": (r"still scan (\S+) % of the blocks", 100 * largest["scanned_blocks"], 0),
    }
    for name, (pattern, value, digits) in quoted.items():
        match = re.search(pattern, text)
        if match is None:
            problems.append(f"{name}: not found")
        else:
            compare(problems, name, match[1], value, digits)
    return problems


CHECKS = {
    "verdict counts": ("docs/results.md", verdict_counts),
    "README exact log p(x)": ("README.md", readme_exact_log_likelihood),
    "exact log p(x) by seed": ("docs/results.md", exact_log_likelihood_by_seed),
    "latent_dimension log p(x)": ("docs/results.md", latent_dimension_log_likelihood),
    "augmentation accuracies": ("docs/augmentation.md", augmentation_accuracies),
    "scaling": ("docs/speed.md", scaling_figures),
}


def doc_text(path: str) -> str:
    """The doc, with docs/augmentation.md appended to docs/results.md (the augmentation verdict is quoted there)."""
    return read(path) + (read("docs/augmentation.md") if path == "docs/results.md" else "")


# ----------------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", CHECKS)
def test_the_docs_quote_the_committed_records(name):
    path, check = CHECKS[name]
    assert check(doc_text(path)) == []


@pytest.mark.parametrize(
    ("name", "old", "new", "complaint"),
    [
        ("verdict counts", "verdict **partly** (7/10)", "verdict **partly** (8/10)", "clustering"),
        ("verdict counts", "holds partly (4/8 checks)", "holds partly (5/8 checks)", "augmentation"),
        ("README exact log p(x)", "**RHVAE −136.5 ± 0.9**", "**RHVAE −136.4 ± 0.9**", "RHVAE mean"),
        ("README exact log p(x)", "exact log p(x): VAE", "log p(x): VAE", "not found"),
        ("exact log p(x) by seed", "| -140.61 |", "| -140.62 |", "reconstruction seed 0 VAE"),
        ("latent_dimension log p(x)", "−120.8 / **−120.3** / −121.5", "−120.8 / **−120.3** / −121.0", "RHVAE"),
        ("augmentation accuracies", "0.817 ± 0.001", "0.818 ± 0.001", "real only, MLP 20/class, mean"),
        ("augmentation accuracies", "(+0.033)", "(+0.035)", "shifts/rotations, MLP 20/class, gain"),
        ("scaling", "**1.9 s for 100 × 90 steps", "**1.7 s for 100 × 90 steps", "grid sampler"),
        ("scaling", "| 120 | 180 ms |", "| 120 | 170 ms |", "the table differs"),
    ],
)
def test_a_figure_that_disagrees_with_its_record_is_reported(name, old, new, complaint):
    path, check = CHECKS[name]
    text = doc_text(path)
    assert text.count(old) == 1, f"{old!r} is no longer in {path}: update this test's alteration"
    problems = check(text.replace(old, new))
    assert problems and any(complaint in problem for problem in problems), problems
