"""End-to-end wall time of every experiment notebook, executed headless with papermill, retraining every model.

Usage: python benchmarks/end_to_end.py [--quick] [--only metric,generation_5] [--seeds 0 1 2] [--out DIR] [--threads N]

Each notebook runs in full paper mode (``reuse_cache=False``: every model is retrained; ``interactive=False``)
into a fresh folder (default: a temporary directory; the executed notebooks, run folders and a model cache that
only this run uses land there), and the script prints the wall time of each notebook and the total.
``--quick`` passes ``quick=True`` (the quick settings of rhvae.experiments.registry) to check the pipeline in a few
minutes. Only the parameters a notebook declares are passed to it. Exit status 1 if a notebook failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import papermill

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("metric", "reconstruction", "generation_5", "generation_7_classes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="quick=True: a few epochs, few samples")
    parser.add_argument("--only", default=",".join(NOTEBOOKS), help="comma-separated notebook names")
    parser.add_argument("--out", default=None, help="output folder (default: a fresh temporary directory)")
    parser.add_argument("--threads", type=int, default=None, help="the notebooks' threads parameter (default: theirs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="the notebooks' seeds (default: theirs)")
    parser.add_argument("--json", default=None, help="also write the timings to this JSON file")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in NOTEBOOKS or not (ROOT / "notebooks" / f"{n}.ipynb").is_file()]
    if unknown:
        print(f"end_to_end.py: unknown or missing notebook(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rhvae_end_to_end_"))
    out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full paper mode"
    seeds = "the notebooks' seeds" if args.seeds is None else f"seeds {args.seeds}"
    print(f"end-to-end: {mode}, {seeds}, every model retrained (reuse_cache=False), output in {out}")
    timings, failed = {}, []
    for name in names:
        source = ROOT / "notebooks" / f"{name}.ipynb"
        declared = set(papermill.inspect_notebook(str(source)))
        wanted = {
            "reuse_cache": False,
            "interactive": False,
            "quick": bool(args.quick),
            "output_dir": str(out / name),
            "cache_dir": str(out / "cache"),
        }
        if args.threads is not None:
            wanted["threads"] = args.threads
        if args.seeds is not None:
            wanted["seeds"] = args.seeds
        params = {k: v for k, v in wanted.items() if k in declared}
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source),
                str(out / f"{name}.executed.ipynb"),
                parameters=params,
                kernel_name="python3",
                cwd=str(ROOT),
                progress_bar=False,
            )
            status = "ok"
        except Exception as err:  # noqa: BLE001 - report every notebook's failure and go on
            status = f"FAILED: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            failed.append(name)
        seconds = time.perf_counter() - start
        timings[name] = {"seconds": round(seconds, 1), "status": status, "parameters": params}
        print(f"  {name:<22} {seconds:8.1f} s  {status}", flush=True)
    total = sum(t["seconds"] for t in timings.values())
    print(f"  {'total':<22} {total:8.1f} s")
    if args.json:
        summary = {"mode": mode, "seeds": args.seeds, "notebooks": timings, "total_seconds": total}
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
