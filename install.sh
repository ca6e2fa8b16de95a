#!/usr/bin/env bash
# Install everything the package, its notebooks and its tests need, into the current Python environment.
# torch is pinned: an unpinned torch can pull a multi-GB build; this pair installs from a local wheel here.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
# The package with both extras: experiments (the notebook stack: papermill, Jupyter, Dask, ...) and test. The core alone,
# `pip install .`, trains, samples and evaluates without the notebook stack (tests/test_core_install.py).
# The test extra includes pythae 0.1.2 for tests/interfaces/test_pythae_bridge.py (it leaves the torch pin alone) and
# voila and playwright for tests/interfaces/test_browser.py, which also needs Debian's chromium
# (apt-get install chromium; .ci/run installs it): Playwright is given its path, it never downloads a browser.
python -m pip install --quiet --disable-pip-version-check -e ".[experiments,test]"
# The compiled d = 2 leapfrog kernels (rhvae.models.native), built once with this machine's C++ compiler; where they
# cannot be built this prints so and the package uses its pure-PyTorch nodes (same values, slower).
python -m rhvae kernels
