"""The README's front page holds: its Python snippet runs as written, its first command and results table are near
the top, and it stays short."""

import re

from rhvae.paths import ROOT

README = (ROOT / "README.md").read_text()


def test_the_python_snippet_runs(capsys):
    (snippet,) = re.findall(r"```python\n(.*?)```", README, re.S)
    exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "reconstruction" in printed and "rhvae" in printed  # the index of the shipped models
    assert "tensor(True)" in printed  # every image's exact quadrature converged


def test_the_front_page_is_short_and_leads_with_a_command_and_the_results():
    lines = README.splitlines()
    assert len(lines) < 250
    first_command = next(i for i, line in enumerate(lines) if line.startswith("```bash"))
    results_table = next(i for i, line in enumerate(lines) if line.startswith("| experiment | the paper's claim"))
    assert first_command < 30 and results_table < 80
    assert "bash install.sh && python -m pytest -q" in lines  # the test command CI runs


def test_the_results_table_gives_the_verdicts_of_the_committed_report():
    """One row per experiment of the registry, whose verdict and check count are those of results/NAME/results.json
    (the README's table is written by hand: this keeps it from going stale when the report is republished)."""
    import json

    from rhvae.experiments.registry import REGISTRY

    rows = {}
    for line in README.splitlines():
        match = re.match(r"\| (\w+)(?: \(our protocol\))? \| .* \| \*\*([a-z ]+)\*\* \((\d+)/(\d+)", line)
        if match:
            rows[match[1]] = (match[2], int(match[3]), int(match[4]))
    assert set(rows) == set(REGISTRY)
    for name, (verdict, agree, total) in rows.items():
        recorded = json.loads((ROOT / "results" / name / "results.json").read_text())["verdict"]
        assert (verdict, agree, total) == (recorded["verdict"], recorded["agree"], recorded["total"]), name
