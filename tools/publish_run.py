"""Publish a paper-mode ``run_all.sh`` run: ship its models and commit its report.

Usage: python tools/publish_run.py figures/run_all_MM_DD_YYYY_hh_mm_ss

* Every model the run used (each notebook's results.json names its file) is copied to ``data/models/`` under
  the same relative name as in the cache, after checking that it loads with ``weights_only=True``; the list of
  shipped files with their SHA-256 is rewritten in ``data/models/SHA256SUMS`` (guarded by
  tests/test_shipped_models.py). A default ``./run_all.sh`` then finds them and trains nothing.
* The run's report (README.md) and its figures are copied to ``results/`` with the links rewritten, so that the
  report can be read in the repository.

Refuses quick-mode runs and runs with a diverged model. A maintainer's tool: run it after ``./run_all.sh --train``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from rhvae.paths import ROOT, SHIPPED_DIR
from rhvae.persistence import atomic_write_text, load_model
from rhvae.report import EXPERIMENT_ORDER, build_report

RESULTS_DIR = ROOT / "results"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ship_models(run_folders: list[Path]) -> list[Path]:
    shipped = []
    for folder in run_folders:
        results = json.loads((folder / "results.json").read_text())
        if results.get("quick") or results.get("status") != "ok":
            raise SystemExit(f"{folder}: quick-mode run or a diverged model: not publishable")
        for label, info in results["models"].items():
            source = Path(info["cache_file"])
            load_model(source, expected_type=info["model"])  # weights_only=True; raises on a bad file
            target = SHIPPED_DIR / source.parent.name / source.name
            if source.resolve() != target.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            shipped.append(target)
            print(f"shipped {label}: {target.relative_to(ROOT)}")
    return shipped


def write_checksums() -> Path:
    files = sorted(p for p in SHIPPED_DIR.rglob("*.pt"))
    lines = [f"{sha256(p)}  {p.relative_to(SHIPPED_DIR).as_posix()}" for p in files]
    return atomic_write_text(SHIPPED_DIR / "SHA256SUMS", "\n".join(lines) + "\n")


def publish_report(run: Path, names: list[str]) -> Path:
    if RESULTS_DIR.exists():
        shutil.rmtree(RESULTS_DIR)
    for name in names:
        shutil.copytree(run / name, RESULTS_DIR / name)
    return atomic_write_text(RESULTS_DIR / "README.md", build_report(run))


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    run = Path(sys.argv[1]).resolve()
    names = [n for n in EXPERIMENT_ORDER if (run / n / "results.json").is_file()]
    if names != list(EXPERIMENT_ORDER):
        raise SystemExit(f"{run}: needs the results of all four notebooks, found {names}")
    shipped = ship_models([run / n for n in names])
    stale = sorted(set(SHIPPED_DIR.rglob("*.pt")) - set(shipped))
    for path in stale:
        path.unlink()
        print(f"removed stale {path.relative_to(ROOT)}")
    print(f"wrote {write_checksums()} ({len(set(shipped))} files)")
    print(f"wrote {publish_report(run, names)}")


if __name__ == "__main__":
    main()
