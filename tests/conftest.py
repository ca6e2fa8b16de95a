import pytest
import torch

import rhvae


@pytest.fixture(scope="session")
def metric_data():
    """The real 'metric' experiment subset (3 classes x 50 bundled MNIST digits)."""
    return rhvae.experiment_data("metric")


def make_small_rhvae(latent_dim: int = 2):
    """A float64 RHVAE with a frozen metric built from 12 real digits: small enough for exact checks."""
    data = rhvae.experiment_data("metric", n_per_class=5)
    torch.manual_seed(0)
    model = rhvae.RHVAE(latent_dim=latent_dim, hidden_dim=32, n_fixed_point=60, eps_lf=0.05, temperature=1.0)
    model = model.double()
    x = data.train.x.double()
    model.freeze_metric(x)
    # spread the frozen centroids so that the metric varies on the scale of the temperature
    model.centroids = model.centroids * 20.0
    model.eval()
    return model, x


@pytest.fixture
def small_rhvae():
    """``make_small_rhvae`` at the paper's latent dimension 2."""
    return make_small_rhvae()


@pytest.fixture
def one_thread():
    """One torch thread for a sampler run of many tiny operations (two threads spin against each other on a busy
    machine); the previous count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: What every notebook run fails with under ``failing_kernels``.
INJECTED_FAULT = "injected fault: the run cannot start"


@pytest.fixture
def failing_kernels(tmp_path):
    """The environment of a fault that run_all's pre-check cannot see: an IPython start-up file of the notebook
    kernels (``IPYTHONDIR``) makes every notebook's run fail inside, when it starts (``INJECTED_FAULT``)."""
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-fault.py").write_text(
        "import rhvae.experiments.runs as runs\n"
        "def fault(*args, **kwargs):\n"
        f"    raise RuntimeError({INJECTED_FAULT!r})\n"
        "runs.Run.__init__ = fault\n"
    )
    return {"IPYTHONDIR": str(tmp_path / "ipython")}
