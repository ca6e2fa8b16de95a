"""Careless arguments to every public function (tests/careless_calls.py) are refused with a TypeError or ValueError,
never an AttributeError, a RuntimeError or an allocation from deep inside torch; run in a subprocess whose address
space is limited to 8 GiB, so that a size with no upper bound fails the test instead of exhausting the machine."""

import json
import resource
import subprocess
import sys

from rhvae.paths import ROOT

MEMORY_LIMIT = 8 * 2**30


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_every_public_function_refuses_careless_arguments_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "careless_calls.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,  # a careless but valid relative path ("x") is written here
        preexec_fn=limit_memory,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    canary = [f for f in report["failures"] if f[0] == "canary"]
    assert canary, "the canary (x.shape on a careless x) was not caught: the script detects nothing"
    failures = [f for f in report["failures"] if f[0] != "canary"]
    assert not failures, "\n".join(" / ".join(map(str, f)) for f in failures)
    assert report["calls"] > 1500  # every argument of about 50 functions, 10 careless values each
    for name in ("train", "save_model", "load_model", "riemannian_hmc", "exact_log_likelihood", "quality.features"):
        assert name not in report["skipped"], name
