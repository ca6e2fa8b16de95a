"""Publish a paper-mode ``run_all.sh`` run: ship its models and commit its report.

Usage: python tools/publish_run.py figures/run_all_MM_DD_YYYY_hh_mm_ss [--only NAME[,NAME]]

* Every model the run used (each notebook's results.json names its file) is copied to ``data/models/`` under
  the same relative name as in the cache, after checking that it loads with ``weights_only=True``. The models of
  a kind the experiment's registry entry lists in ``half_precision`` (every RHVAE, and the augmentation
  experiment's many small per-class VAEs) are shipped with half-precision network weights (the frozen metric stays in
  float32); they load into float32 models. The augmentation experiment's classifiers (each record of its
  ``classifier_training`` names its file) are shipped the same way, in half precision. Shipped files of the published
  experiments that the run did not use are removed, and the list of shipped files with their SHA-256 is rewritten in
  ``data/models/SHA256SUMS`` (guarded by tests/experiments/test_shipped_models.py). A default ``./run_all.sh`` then
  finds them and trains nothing.
* The run's report and figures are copied to ``results/`` with the links rewritten, so that the report can be
  read in the repository.

Without ``--only`` the run must hold every experiment of ``rhvae.experiments.registry`` and replaces every shipped model
and every experiment's folder of ``results/`` (other results, such as ``results/scaling/``, stay). With ``--only`` only
the named experiments are replaced (their models, their folders in ``results/``) and ``results/README.md`` is rebuilt
from every experiment in ``results/``; e.g. after ``./run_all.sh --train --only augmentation``.

An analysis (interpolation, clustering: registry ``analyses``) ships no model of its own; its report is published only
when every model it judged is a shipped file of the experiments it analyses.

Refuses quick-mode runs and runs with a diverged model. A maintainer's tool: run it after ``./run_all.sh --train``.

The report of an experiment with half-precision models is published only from a run that used the shipped files
themselves (every model's ``source`` is "shipped"): a run from the float32 models of the cache gives slightly different
generated images, so its report would not be what a clean clone reproduces. A first publication therefore ships
the models and stops; rerun the experiment on the shipped files (``./run_all.sh --only NAME -p cache_dir
EMPTY_FOLDER``) and publish that run.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import torch

from rhvae.experiments.classifier_cache import FOLDER as CLASSIFIERS
from rhvae.experiments.classifier_cache import classifier_name
from rhvae.experiments.registry import REGISTRY
from rhvae.experiments.report import EXPERIMENT_ORDER, build_report
from rhvae.files import atomic_write, atomic_write_text
from rhvae.paths import ROOT, SHIPPED_DIR
from rhvae.persistence import load_model, read_model_file, state_digest

RESULTS_DIR = ROOT / "results"
FROZEN_METRIC = ("centroids", "M")  # kept in float32: the metric's scale can exceed half precision's accuracy


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_half_precision(source: Path, target: Path, payload: dict | None = None) -> Path:
    """A copy of the model (or classifier) file ``source`` at ``target`` whose network weights are float16.
    Serialised in memory, so that the same source always gives the same bytes (``torch.save`` to a path names the
    archive after it)."""
    payload = read_model_file(source) if payload is None else payload
    payload["state_dict"] = {
        k: v.half() if v.is_floating_point() and k not in FROZEN_METRIC else v for k, v in payload["state_dict"].items()
    }
    if "state_sha256" in payload:  # the digest of the weights as shipped
        payload["state_sha256"] = state_digest(payload["state_dict"])
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(target, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def ship_models(folder: Path, half: tuple[str, ...]) -> list[Path]:
    shipped = []
    results = json.loads((folder / "results.json").read_text())
    for label, info in results["models"].items():
        source = Path(info["cache_file"])
        load_model(source, expected_type=info["model"])  # weights_only=True; raises on a bad file
        target = SHIPPED_DIR / source.parent.name / source.name
        if source.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            if info["model"] in half:
                write_half_precision(source, target)
            else:
                shutil.copyfile(source, target)
        shipped.append(target)
        print(f"shipped {label}: {target.relative_to(ROOT)}")
    return shipped


def classifier_records(folder: Path) -> list[dict]:
    """The augmentation classifiers a run's results.json used (one record per seed, row and arm; none for the
    other experiments)."""
    results = json.loads((folder / "results.json").read_text())
    training = results["results"].get("classifier_training") or {}
    return [record for rows in training.values() for arms in rows.values() for record in arms.values()]


def ship_classifiers(folder: Path) -> list[Path]:
    """Copy every classifier the run used into ``data/models/`` (half-precision weights), checked first: it loads
    with ``weights_only=True`` and its file name is its spec's (``rhvae.experiments.classifier_cache``)."""
    shipped = []
    for record in classifier_records(folder):
        source = Path(record["file"])
        payload = torch.load(source, map_location="cpu", weights_only=True)
        name = classifier_name(json.loads(payload["spec"]))
        if not source.as_posix().endswith(name):
            raise SystemExit(f"{source}: its spec names it {name}")
        target = SHIPPED_DIR / name
        if source.resolve() != target.resolve():
            write_half_precision(source, target, payload)
        shipped.append(target)
    if shipped:
        print(f"shipped {len(shipped)} classifiers of {folder.name}")
    return shipped


def models_not_shipped(folder: Path) -> list[str]:
    """The labels of the models a run's results.json says did not come from ``data/models`` (source "cache" or
    "trained")."""
    results = json.loads((folder / "results.json").read_text())
    models = [label for label, info in results["models"].items() if info.get("source") != "shipped"]
    return models + [r["file"] for r in classifier_records(folder) if r.get("source") != "shipped"]


def ship_evaluation(folder: Path) -> list[Path]:
    """The stored evaluations a run's results.json used (``evaluation_files``: rhvae.experiments.stored_evaluations'
    files, the reconstruction experiment's one and the latent_dimension experiment's one per subset and d), copied
    into ``data/models/EXPERIMENT/``; none for the others."""
    results = json.loads((folder / "results.json").read_text())
    shipped = []
    for source in map(Path, results["results"].get("evaluation_files") or []):
        json.loads(source.read_text())  # a readable evaluation, or stop here
        target = SHIPPED_DIR / source.parent.name / source.name
        if source.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        print(f"shipped an evaluation of {folder.name}: {target.relative_to(ROOT)}")
        shipped.append(target)
    return shipped


def used_by_other_reports(names: list[str]) -> set[Path]:
    """The shipped files that the committed reports (results/) of the experiments not in ``names`` use: an
    experiment publishing alone must not remove them (the latent_dimension experiment's models of d > 2 lie in the
    folders of the experiments whose subsets they are trained on)."""
    used = set()
    for name in REGISTRY:
        path = RESULTS_DIR / name / "results.json"
        if name in names or not path.is_file():
            continue
        results = json.loads(path.read_text())
        for info in results["models"].values():
            if info.get("cache_file"):
                used.add(SHIPPED_DIR / Path(info["cache_file"]).parent.name / Path(info["cache_file"]).name)
        for file in results["results"].get("evaluation_files") or []:
            used.add(SHIPPED_DIR / name / Path(file).name)
    return used


def shipped_files() -> list[Path]:
    """Every file of ``data/models`` that SHA256SUMS lists: the models, the classifiers and stored evaluations."""
    return sorted(p for p in SHIPPED_DIR.rglob("*") if p.is_file() and p.name != "SHA256SUMS")


def write_checksums() -> Path:
    files = shipped_files()
    lines = [f"{sha256(p)}  {p.relative_to(SHIPPED_DIR).as_posix()}" for p in files]
    return atomic_write_text(SHIPPED_DIR / "SHA256SUMS", "\n".join(lines) + "\n")


def publish_report(run: Path, names: list[str], everything: bool) -> Path:
    if everything:  # every experiment's folder goes; other results (benchmarks/scaling.py's) stay
        for name in REGISTRY:
            if (RESULTS_DIR / name).exists():
                shutil.rmtree(RESULTS_DIR / name)
    for name in names:
        if (RESULTS_DIR / name).exists():
            shutil.rmtree(RESULTS_DIR / name)
        shutil.copytree(run / name, RESULTS_DIR / name)
    return atomic_write_text(RESULTS_DIR / "README.md", build_report(run if everything else RESULTS_DIR))


def main() -> None:
    args = sys.argv[1:]
    only = None
    if len(args) == 3 and args[1] == "--only":
        only = [n for n in args[2].split(",") if n]
        unknown = [n for n in only if n not in REGISTRY]
        if unknown or not only:
            raise SystemExit(f"--only takes experiments of {tuple(REGISTRY)}, got {args[2]!r}")
    elif len(args) != 1:
        raise SystemExit(__doc__)
    run = Path(args[0]).resolve()
    wanted = list(EXPERIMENT_ORDER) if only is None else [n for n in EXPERIMENT_ORDER if n in only]
    names = [n for n in wanted if (run / n / "results.json").is_file()]
    if names != wanted:
        raise SystemExit(f"{run}: needs the results of {wanted}, found {names}")
    for n in names:
        results = json.loads((run / n / "results.json").read_text())
        if results.get("quick") or results.get("status") != "ok":
            raise SystemExit(f"{run / n}: quick-mode run or a diverged model: not publishable")
    # an analysis (interpolation, clustering) ships nothing new: it must have judged the shipped models of the
    # experiments it analyses (checked below), which those experiments publish; latent_dimension ships its models of
    # d > 2 into the folders of the subsets they are trained on (its d = 2 models are those experiments' files)
    shipped = [p for n in names for p in ship_models(run / n, REGISTRY[n].half_precision)]
    shipped += [p for n in names for p in ship_classifiers(run / n)]
    shipped += [p for n in names for p in ship_evaluation(run / n)]
    folders = {f for n in names for f in (n, *REGISTRY[n].analyses)} if only is not None else None
    candidates = [p for p in shipped_files() if folders is None or p.relative_to(SHIPPED_DIR).parts[0] in folders]
    stale = sorted(set(candidates) - set(shipped) - (used_by_other_reports(names) if only is not None else set()))
    for path in stale:
        path.unlink()
        print(f"removed stale {path.relative_to(ROOT)}")
    print(f"wrote {write_checksums()} ({len(set(shipped))} files published)")
    for path in shipped:  # every shipped model loads, through its new checksum (weights_only=True)
        if CLASSIFIERS not in path.as_posix() and path.suffix == ".pt":
            load_model(path)
    from_copies = {n: models_not_shipped(run / n) for n in names if REGISTRY[n].half_precision or REGISTRY[n].analyses}
    from_copies = {n: labels for n, labels in from_copies.items() if labels}
    if from_copies:
        for name, labels in from_copies.items():
            print(
                f"{name}: {len(labels)} models (e.g. {labels[0]}) came from the full-precision cache, not the shipped"
                f" half-precision files: its report would not reproduce from a clean clone"
            )
        raise SystemExit(
            "models shipped, report NOT published: rerun on the shipped files (./run_all.sh --only "
            f"{','.join(from_copies)} -p cache_dir EMPTY_FOLDER) and publish that run"
        )
    print(f"wrote {publish_report(run, names, everything=only is None)}")


if __name__ == "__main__":
    main()
