#!/usr/bin/env bash
# Install everything the package, its notebooks and its tests need, into the current Python environment.
# torch is pinned: an unpinned torch can pull a multi-GB build; this pair installs from a local wheel here.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
