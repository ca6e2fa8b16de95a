"""The device option: device-agnostic flow, metric and sampler force (no hidden CPU tensors), clear refusals."""

import subprocess
import sys

import pytest
import torch

from rhvae.experiments.model_cache import RHVAE_CONFIG, build_model
from rhvae.experiments.parameters import Param, check_parameter
from rhvae.models import VAE
from rhvae.validation import ParameterError, check_device

NO_GPU = not torch.cuda.is_available()


@pytest.mark.parametrize("stacked", [False, True])
def test_flow_and_metric_run_on_another_device(stacked):
    """The whole leapfrog flow, its backward, the frozen metric and the sampler's force on the 'meta' device
    (shapes only, no data): a tensor created on the CPU anywhere inside would make torch refuse to mix devices."""
    models = [build_model("rhvae", seed=s, **RHVAE_CONFIG) for s in (0, 1)]
    for m in models:
        m.freeze_metric(torch.rand(20, 784))
    model = (VAE.stack(models) if stacked else models[0]).to("meta").train()
    x = torch.rand(8, 784, device="meta")
    g = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)] if stacked else torch.Generator()
    mu, log_var = model.encode(x)
    z = model.sample_posterior(mu, log_var, g)
    metric = model.flow_metric(x, mu)
    eps = model.step_size(x, mu, metric)
    at = metric.at(z)
    rho = model.initial_momentum(at, x, metric, g)
    grad_U, logits = model.potential_grad(z, x)
    for _ in range(2):
        z, rho, grad_U, logits, at, _ = model._leapfrog(z, rho, x, grad_U, at, metric, eps)
    (z.sum() + rho.sum() + logits.sum() + at.log_det_G_inv.sum()).backward()
    assert z.device.type == "meta" and all(p.grad.device.type == "meta" for p in model.parameters())
    model.eval()
    frozen = model.metric()
    assert frozen.max_eigenvalue().device.type == "meta"
    if not stacked:
        assert frozen.log_det_and_grad(z.detach())[1].device.type == "meta"


def test_check_device_accepts_the_cpu_and_refuses_the_rest():
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ParameterError, match=r"^device must be one of \('cpu', 'cuda'\).*got 'tpu'$"):
        check_device("tpu")
    with pytest.raises(ParameterError, match="device must be one of"):
        check_device(3)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_clear_line(tmp_path):
    with pytest.raises(ParameterError, match="not available: torch sees no CUDA GPU here; use 'cpu'"):
        check_device("cuda")
    with pytest.raises(ValueError, match="parameter 'device' must be|not available"):
        check_parameter("device", "cuda", Param("device"))
    with pytest.raises(ValueError, match="parameter 'device' must be 'cpu' or 'cuda'"):
        check_parameter("device", "gpu", Param("device"))
    cli = [sys.executable, "-m", "rhvae", "train", "--model", "vae", "--experiment", "metric", "--device", "cuda"]
    done = subprocess.run([*cli, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "torch sees no CUDA GPU" in done.stderr


def test_a_model_trained_with_device_cpu_is_the_default(metric_data, tmp_path):
    from rhvae.experiments.model_cache import train_experiment_model

    a = train_experiment_model("metric", "vae", 2, data=metric_data, cache_dir=tmp_path, progress=False)
    b = train_experiment_model(
        "metric", "vae", 2, data=metric_data, cache_dir=tmp_path, progress=False, device="cpu", use_cache=False
    )
    assert a.path.name.startswith("vae_") and not a.reused
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))
