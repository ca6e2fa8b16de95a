"""The core install: ``pip install .`` without extras trains, samples and evaluates without the notebook stack.

The fresh venv gets no distribution but those the core declares (pyproject's ``[project] dependencies`` and, through
their metadata, what they require in turn): each is linked from this environment into one folder that a ``.pth`` puts
on the venv's path, so no multi-GB torch is installed again. pip then installs the package into it with no index and
no build isolation, so a declared dependency that is missing fails the install, and an import of a package outside
that closure fails the run. The models run their pure-PyTorch nodes there (``RHVAE_NATIVE=0``): a build of the
compiled kernels from the venv's copy of the source would make the checkout's build stale. environment.yml lists the
same packages as pyproject.toml.
"""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: Modules of the notebook stack (the experiments extra and what it brings) that the core must not need.
NOTEBOOK_MODULES = ("papermill", "nbclient", "nbconvert", "jupyter_client", "ipykernel", "ipywidgets", "dask", "yaml")
NOTEBOOK_DISTRIBUTIONS = {"papermill", "nbclient", "nbconvert", "jupyter-client", "ipykernel", "ipywidgets", "dask"}
#: conda-forge's names for PyPI's, where they differ (environment.yml).
CONDA_NAMES = {"torch": "pytorch", "dask": "distributed"}


def core_closure() -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions the core requires, by canonical name: its dependencies and theirs (with the
    extras they ask for, on this platform), from this environment's metadata."""
    found: dict[str, importlib.metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo = [Requirement(r) for r in PROJECT["dependencies"]]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name not in found:
            found[name] = importlib.metadata.distribution(requirement.name)  # missing: install.sh was not run
        for extra in {"", *requirement.extras} - {e for n, e in done if n == name}:
            done.add((name, extra))
            for line in found[name].requires or []:
                needed = Requirement(line)
                if needed.marker is None or needed.marker.evaluate({"extra": extra}):
                    todo.append(needed)
    return found


def test_environment_yml_lists_what_pyproject_declares():
    declared = [*PROJECT["dependencies"], *(r for extra in PROJECT["optional-dependencies"].values() for r in extra)]
    pip_names = {canonicalize_name(Requirement(r).name) for r in declared}
    conda = (ROOT / "environment.yml").read_text().split("\ndependencies:\n")[1]
    listed = {canonicalize_name(m) for m in re.findall(r"^\s+- ([A-Za-z][\w.-]*)", conda, flags=re.M)}
    listed -= {"python", "pip"}
    assert {CONDA_NAMES.get(n, n) for n in pip_names} == listed


def test_the_core_leaves_out_the_notebook_stack():
    assert not NOTEBOOK_DISTRIBUTIONS & set(core_closure())


def link_core(site: Path) -> list[str]:
    """Link every top-level file and folder of the core's distributions (their code and .dist-info) into ``site``;
    their scripts are left out. A folder that several distributions share (``nvidia/``) is linked whole."""
    for name, dist in sorted(core_closure().items()):
        assert dist.files, f"{name} lists no files (no RECORD): cannot link it"
        for top in {f.parts[0] for f in dist.files} - {"..", "__pycache__"}:
            if not (site / top).exists():
                (site / top).symlink_to(Path(dist.locate_file(top)))
    return sorted(p.name for p in site.iterdir())


def run(venv_python: Path, *args: str, env: dict, cwd: Path, timeout: int = 240) -> str:
    done = subprocess.run([str(venv_python), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


API_CHECK = """
import sys
import torch
import rhvae
import rhvae.interfaces.cli
assert rhvae.__file__.startswith(sys.prefix), rhvae.__file__  # the installed copy, not the checkout
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
assert not loaded, loaded
data = rhvae.experiment_data("metric", n_per_class=10)
torch.manual_seed(0)  # the initial weights: a script may seed the global generator, a library call may not
model = rhvae.RHVAE(latent_dim=2)
history = rhvae.train(model, data.train.x, data.test.x, seed=0, epochs=2, progress=False)
samples = rhvae.generate(model, n_samples=8, mcmc_steps=5, seed=0)
exact = rhvae.exact_log_likelihood(model.eval(), data.test.x)
assert samples.images.shape == (8, 784)
print(len(history.train_loss), len(samples.images), float(exact.log_px.mean()), bool(exact.converged.all()))
"""


@pytest.mark.slow
def test_the_core_alone_trains_samples_and_evaluates(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    (site := tmp_path / "core-site").mkdir()
    linked = link_core(site)
    assert "torch" in linked and "mlxtend" in linked and not {"papermill", "dask", "jupyter_client"} & set(linked)
    venv_site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    (venv_site / "core-site.pth").write_text(f"{site}\n")
    # no pip configuration (this machine's finds local wheels), no index, no user site, nothing from the checkout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "RHVAE_", "TORCH_EXTENSIONS"))}
    (home := tmp_path / "home" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "quality_classifier.pt", home)  # eval's quality score reads it (rhvae.paths)
    env |= {
        "PIP_CONFIG_FILE": os.devnull,
        "PYTHONNOUSERSITE": "1",
        "RHVAE_HOME": str(home.parent),
        # the pure-PyTorch nodes: the kernels built from another path would rebuild the checkout's (80 s)
        "RHVAE_NATIVE": "0",
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions"),
    }
    work = tmp_path / "work"
    work.mkdir()
    for module in NOTEBOOK_MODULES:
        gone = subprocess.run([str(python), "-c", f"import {module}"], env=env, cwd=work, capture_output=True)
        assert gone.returncode != 0, f"{module} is importable in the core venv"

    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    shutil.copytree(ROOT / "rhvae", source / "rhvae", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    pip = ("-m", "pip", "--python", str(python), "install", "--quiet", "--no-index", "--no-build-isolation")
    done = subprocess.run([sys.executable, *pip, str(source)], env=env, cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, f"pip install of the core failed:\n{done.stdout}\n{done.stderr}"

    for command in ("train", "eval", "kernels"):
        assert "usage: python -m rhvae" in run(python, "-m", "rhvae", command, "--help", env=env, cwd=work)
    run(python, "-m", "rhvae", "train", "--experiment", "metric", "--epochs", "2", "--out", "run", "--quiet",
        env=env, cwd=work)  # fmt: skip
    run(python, "-m", "rhvae", "eval", "-m", "run/model.pt", "--ll-samples", "10", "--n-samples", "10",
        "--mcmc-steps", "5", "--out", "eval", env=env, cwd=work)  # fmt: skip
    results = json.loads((work / "eval" / "eval.json").read_text())
    ll = results["log_likelihood"]
    assert ll["log_likelihood_method"] == "exact" and ll["exact_converged"] == results["n_test"] == 30
    assert (work / "eval" / "samples.png").stat().st_size > 0 and (work / "eval" / "reconstructions.png").exists()

    epochs, n_samples, log_px, converged = run(
        python, "-c", API_CHECK, ",".join(NOTEBOOK_MODULES), env=env, cwd=work
    ).split()
    assert (epochs, n_samples, converged) == ("2", "8", "True") and float(log_px) < 0
