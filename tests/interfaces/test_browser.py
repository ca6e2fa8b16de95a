"""The widgets in a real browser: a notebook with live widgets served by Voilà (127.0.0.1, with a token) and driven
by headless Chromium through Playwright.

The notebook loads shipped models (no long training), trains one tiny model through ``runs.Run`` with
``interactive=True`` (its progress must be one live bar), and shows the metric explorer and the sampler. The test
enters a new temperature (the metric image's bytes must change) and one out of range (the red error, the value
kept), changes the seed and presses Sample (the sampler's image must change), enters a bad seed (the red error must
show, single-spaced, and the button come back enabled), and checks that no page error occurred.

Needs Debian's ``chromium`` (``apt-get install chromium``; never a downloaded browser: Playwright is only given
its ``executable_path``), ``voila`` and ``playwright`` (the ``test`` extra). Outside CI the test is skipped when
one is missing; under ``CI=true`` (``.ci/run`` installs them) it fails instead.
"""

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from rhvae.paths import ROOT

pytestmark = pytest.mark.slow

STARTUP_SECONDS = 120  # Voilà start; the page itself executes the notebook (loads models, trains 3 tiny epochs)
ACTION_SECONDS = 90  # one redraw or re-sampling on a loaded 2-core machine


def _missing() -> str | None:
    if not shutil.which("chromium"):
        return "Debian's chromium is not installed (apt-get install chromium)"
    for module in ("voila", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"the Python package {module} is not installed (pip install -e '.[test]')"
    return None


def _requirements():
    missing = _missing()
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser test: {missing}")
    if missing:
        pytest.skip(missing)


NOTEBOOK_CELLS = [
    """\
import torch

torch.set_num_threads(1)
import rhvae
from rhvae.experiments import runs
from rhvae.interfaces import widgets as rw

# seed 0 at latent dimension 2 (the explorers draw the 2-D latent space)
models = {k.upper(): rhvae.load_shipped("generation_5", k, seed=0, latent_dim=2) for k in ("vae", "rhvae")}
data = rhvae.experiment_data("generation_5")
""",
    """\
# interactive=True: training progress is one live bar
run = runs.Run("metric", {"threads": 1, "output_dir": OUT, "cache_dir": OUT, "interactive": True, "epochs": 3,
                          "seeds": [0], "reuse_cache": False, "lr": 1e-3, "data_seed": 0, "data_source": "bundled"})
tiny = run.train("vae", {"hidden_dim": 16}, 0, data=rhvae.experiment_data("metric", n_per_class=5))
""",
    """\
explorers = [
    rw.MetricExplorer(models["RHVAE"], models["RHVAE"].centroids, data.train.y, grid_n=30),
    rw.SamplerExplorer(models, mcmc_steps=10, n_samples=10, seed=0),
]
rw.controls(explorers)
""",
]


def _notebook(folder) -> str:
    cells = [c.replace("OUT", repr(str(folder / "run"))) for c in NOTEBOOK_CELLS]
    nb = {
        "cells": [
            {"cell_type": "code", "id": f"cell{i}", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
            for i, c in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = folder / "widgets.ipynb"
    path.write_text(json.dumps(nb))
    return path.name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(port: int, path: str) -> int:
    """The HTTP status of GET ``path`` (redirects not followed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def voila(tmp_path):
    """Voilà serving the widget notebook on 127.0.0.1 with a token: (base URL, token). Killed in teardown."""
    _requirements()
    name = _notebook(tmp_path)
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path / "voila.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", name, "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         f"--token={token}", "--Voila.tornado_settings={'autoreload': False}"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                _status(port, "/")  # any answer: the server is up
                break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Voilà did not start: {(tmp_path / 'voila.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, port, token
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


IMAGE_HASH = """async (img) => {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let h = 2166136261;
    for (const b of bytes) { h = Math.imul(h ^ b, 16777619) >>> 0; }
    return `${bytes.length}:${h}`;
}"""


def _wait_for(predicate, what: str, seconds: float = ACTION_SECONDS, page=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(250)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")


def test_widgets_redraw_and_show_errors_in_a_real_browser(voila):
    from playwright.sync_api import sync_playwright

    base, port, token = voila
    for path in ("/", "/?token=wrong"):  # refused: a redirect to the login page
        assert _status(port, path) in (302, 401, 403), f"Voilà must refuse {path} without the right token"
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(ACTION_SECONDS * 1000)
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{base}/?token={token}", timeout=STARTUP_SECONDS * 1000)
            images = page.locator("img.widget-image")
            images.nth(1).wait_for(state="visible", timeout=STARTUP_SECONDS * 1000)
            messages = page.locator(".widget-html-content")

            def image_hash(i):
                return page.evaluate(IMAGE_HASH, images.nth(i).element_handle())

            def message(text):
                return lambda: any(text in m for m in messages.all_inner_texts())

            # training with interactive=True: one live progress bar, no printed text bar lines
            assert page.locator(".widget-hprogress").count() == 1
            assert page.locator("body").inner_text().count("metric/vae:") == 1

            # the metric explorer: a new temperature redraws the picture
            metric_before = image_hash(0)
            temperature = page.locator(".widget-text:has(label:text-is('T')) input").nth(0)
            temperature.fill("0.5")
            temperature.press("Enter")
            _wait_for(message("metric drawn at T = 0.5"), "the metric redrawn at T = 0.5", page=page)
            assert image_hash(0) != metric_before
            # out of range: the red error names it, and the box keeps what was typed (no silent clamping)
            temperature.fill("500")
            temperature.press("Enter")
            _wait_for(message("temperature must be a finite number in [0.01, 100.0], got 500"), "T refused", page=page)
            assert temperature.input_value() == "500" and image_hash(0) != metric_before
            temperature.fill("0.5")
            temperature.press("Enter")

            # the sampler: another seed, then Sample, draws other samples
            sample_before = image_hash(1)
            seed = page.locator(".widget-text:has(label:text-is('seed')) input")
            seed.fill("7")
            seed.press("Enter")
            button = page.get_by_role("button", name="Sample")
            button.click()
            _wait_for(lambda: image_hash(1) != sample_before, "new samples after seed 7", page=page)
            _wait_for(message("RHVAE: riemannian_hmc"), "the sampler's status line", page=page)
            assert button.is_enabled()

            # a bad value: the red error, single-spaced, and the button enabled again
            seed.fill("-1")
            seed.press("Enter")
            button.click()
            error = page.locator(".widget-html-content pre")
            error.wait_for(state="visible")
            assert "seed must be an integer >= 0 and <= 4,294,967,295, got -1" in error.inner_text()
            style = error.evaluate(
                "e => { const s = getComputedStyle(e); "
                "return [s.color, parseFloat(s.lineHeight), parseFloat(s.fontSize)] }"
            )
            assert style[0] == "rgb(176, 0, 32)"
            assert style[1] <= 1.5 * style[2], f"error text line height {style[1]} px for a {style[2]} px font"
            _wait_for(button.is_enabled, "the Sample button enabled again", page=page)
        finally:
            browser.close()
    assert not errors, f"page errors: {errors}"
