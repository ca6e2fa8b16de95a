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
