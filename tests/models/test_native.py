"""The compiled d = 2 kernels of the leapfrog (``rhvae.models.native``): they build where a compiler is present,
compute what the pure-PyTorch nodes compute (float64 to 1e-12, float32 to rounding, one model and a stack of
models, with and without the metric's own gradients), and a build that fails falls back with one warning.

tests/models/test_speed_equivalence.py runs the reference and finite-difference checks on both paths."""

import shutil

import pytest
import torch

from rhvae.models import native
from rhvae.models.autograd_nodes import MetricEvaluation, MomentumKick, MomentumSolve, PositionSolve
from rhvae.models.metric import LearnedMetric


def compiler_present() -> bool:
    return shutil.which("c++") is not None and shutil.which("ninja") is not None


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, "1")
    if native.kernels() is None:
        pytest.skip("the compiled kernels do not build here")


@pytest.mark.skipif(not compiler_present(), reason="no C++ compiler or ninja on this machine")
def test_the_kernels_build_where_a_compiler_is_present(monkeypatch):
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, "1")
    assert native.kernels() is not None
    x = torch.zeros(3, 2)
    assert native.for_tensors(x) is native.kernels()
    assert native.for_tensors(torch.zeros(3, 3)) is None  # another latent dimension: the pure-PyTorch nodes
    assert native.for_tensors(torch.zeros(3, 2, dtype=torch.float16)) is None
    assert native.for_tensors(x, x.double()) is None  # mixed dtypes
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, "0")
    assert native.for_tensors(x) is None


def _problem(members: int | None, dtype, seed: int, rows: int = 7, centroids: int = 11):
    """A metric (one model's or a stack's) and inputs of the three nodes, every one requiring a gradient."""
    g = torch.Generator().manual_seed(seed)
    lead = () if members is None else (members,)
    rows_total = rows * (members or 1)

    def leaf(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()

    c = leaf(*lead, centroids, 2)
    L = torch.randn(*lead, centroids, 2, 2, generator=g, dtype=torch.float64).tril()
    M = (L @ L.mT).to(dtype).requires_grad_()
    inputs = {
        "z": leaf(rows_total, 2),
        "z_half": leaf(rows_total, 2),
        "u": leaf(rows_total, 2, scale=0.05),
        "rho": leaf(rows_total, 2),
        "base": leaf(rows_total, 2),
        "J": leaf(rows_total, 4, 2, scale=0.05),
        "grad_U": leaf(rows_total, 2),
        "half": leaf(rows_total, 1, scale=0.05),
    }
    cotangents = {k: torch.randn(v.shape, generator=g, dtype=torch.float64).to(dtype) for k, v in inputs.items()}
    return c, M, inputs, cotangents, g


def _run(members, dtype, metric_grads: bool, seed: int = 0):
    """Outputs and input gradients of the three nodes on one problem, with the current implementation."""
    c, M, v, bars, g = _problem(members, dtype, seed)
    if not metric_grads:
        c, M = c.detach(), M.detach()
    metric = LearnedMetric(c, M, temperature=0.8, regularization=0.1)
    z_new, z_residual = PositionSolve.apply(v["z"], v["z_half"], v["u"], c, M, metric, 5)
    rho_new, rho_residual = MomentumSolve.apply(v["rho"], v["base"], v["J"], 5)
    G_inv, G, log_det, J, weights = MetricEvaluation.apply(v["z"], c, M, metric)
    kicked = MomentumKick.apply(v["base"], v["half"], v["grad_U"], v["rho"], J, G)
    kicked_alone = MomentumKick.apply(v["base"], v["half"][:1], v["grad_U"], None, J, G)  # no ρ term, one step
    outputs = [z_new, z_residual, rho_new, rho_residual, G_inv, G, log_det, J, weights, kicked, kicked_alone]
    loss = (z_new * bars["z"]).sum() + (rho_new * bars["rho"]).sum()
    loss = loss + (kicked * bars["grad_U"]).sum() + (kicked_alone * bars["base"]).sum()
    for out in (G_inv, G, log_det, J):
        loss = loss + (out * torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)).sum()
    leaves = list(v.values()) + ([c, M] if metric_grads else [])
    return outputs, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("members", [None, 3])
@pytest.mark.parametrize("metric_grads", [True, False])
def test_compiled_and_pytorch_nodes_agree_in_float64(compiled, monkeypatch, members, metric_grads):
    fast = _run(members, torch.float64, metric_grads)
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, "0")
    slow = _run(members, torch.float64, metric_grads)
    for a, b in zip(fast[0] + list(fast[1]), slow[0] + list(slow[1]), strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert fast[0][0].abs().max() > 0.1 and fast[1][-1].abs().max() > 1e-3  # not a comparison of zeros


def test_compiled_and_pytorch_nodes_agree_in_float32(compiled, monkeypatch):
    fast = _run(3, torch.float32, True, seed=1)
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, "0")
    slow = _run(3, torch.float32, True, seed=1)
    for a, b in zip(fast[0] + list(fast[1]), slow[0] + list(slow[1]), strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)


def test_a_failed_build_falls_back_with_one_warning_and_is_not_retried_by_the_next_process(tmp_path, monkeypatch):
    from torch.utils import cpp_extension

    broken = tmp_path / "leapfrog_d2.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, "1")
    monkeypatch.setattr(native, "SOURCE", broken)
    monkeypatch.setattr(native, "_kernels", None)
    monkeypatch.setattr(native, "_tried", False)
    with pytest.warns(RuntimeWarning, match="kernels not built") as caught:
        assert native.kernels() is None
        assert native.kernels() is None  # tried once per process: no second build, no second warning
    assert len(caught) == 1
    outputs, grads = _run(None, torch.float64, True)  # the nodes still work, through PyTorch
    assert torch.isfinite(outputs[0]).all() and all(torch.isfinite(g).all() for g in grads)
    assert len(list((tmp_path / "build").glob("*.failed"))) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("a remembered failure must not be built again")

    monkeypatch.setattr(native, "_tried", False)  # as a new process
    monkeypatch.setattr(cpp_extension, "load", no_build)
    with pytest.warns(RuntimeWarning, match="remembered in"):
        assert native.kernels() is None
    with pytest.warns(RuntimeWarning, match="the build failed: a remembered failure"):  # retry=True builds again
        assert native.kernels(retry=True) is None


@pytest.mark.parametrize("value", ["1", "yes", "TRUE", "On", ""])
def test_the_switch_allows_the_kernels_for_its_documented_on_values(monkeypatch, value):
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, value)
    assert native.enabled()


@pytest.mark.parametrize("value", ["0", "no", "false", "OFF", " Off "])
def test_the_switch_turns_the_kernels_off_for_every_documented_off_value(monkeypatch, value):
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, value)
    assert not native.enabled()
    assert native.kernels() is None and native.for_tensors(torch.zeros(3, 2)) is None


@pytest.mark.parametrize("value", ["2", "flase", "nein", "-1"])
def test_any_other_value_of_the_switch_is_refused_in_one_line_naming_it(monkeypatch, value):
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, value)
    with pytest.raises(ValueError) as caught:
        native.kernels()
    message = str(caught.value)
    assert message.startswith("RHVAE_NATIVE must be one of 1, yes, true, on") and "0, no, false, off" in message
    assert repr(value) in message and "\n" not in message


def _direct_inputs(rows: int = 5, centroids: int = 7):
    """Inputs of the compiled entry points in their layouts (float64, contiguous), for calls that bypass the nodes."""
    g = torch.Generator().manual_seed(3)
    L = torch.randn(centroids, 2, 2, generator=g, dtype=torch.float64).tril()
    metric = LearnedMetric(torch.randn(centroids, 2, generator=g, dtype=torch.float64), L @ L.mT, 0.8, 0.1)
    rows_of = {name: torch.randn(rows, 2, generator=g, dtype=torch.float64) for name in ("z", "rho", "base", "grad_U")}
    J = 0.05 * torch.randn(rows, 4, 2, generator=g, dtype=torch.float64)
    half = torch.full((rows, 1), 0.05, dtype=torch.float64)
    return metric.centroids_T(), metric.matrices_T(), rows_of, J, half


def test_a_direct_call_of_a_compiled_entry_point_with_a_valid_layout_runs(compiled):
    cT, MT, v, J, half = _direct_inputs()
    G_inv, G, log_det, J_z, weights, S = native.kernels().metric_forward(v["z"], cT, MT, 1 / 0.8**2, 0.1)
    assert G_inv.shape == (5, 2, 2) and torch.isfinite(log_det).all()
    kicked = native.kernels().kick_forward(v["base"], half, v["grad_U"], v["rho"], J_z, G, True)
    assert kicked.shape == (5, 2)


def test_the_compiled_entry_points_refuse_a_layout_they_would_misread(compiled):
    """Each entry point checks its tensors: a non-contiguous one (read as if it were contiguous, it would give wrong
    values silently), a wrong shape (read past its end) or another dtype is one RuntimeError naming the argument."""
    cT, MT, v, J, half = _direct_inputs()
    kernels = native.kernels()
    z_transposed = v["z"].T.contiguous().T  # the same values, (5, 2), column-major
    assert not z_transposed.is_contiguous()
    calls = {
        "z must be contiguous": lambda: kernels.metric_forward(z_transposed, cT, MT, 1.0, 0.1),
        "J must be contiguous": lambda: kernels.momentum_forward(v["rho"], v["base"], J.mT.contiguous().mT, 3),
        r"MT must have sizes \[4, 6\], got \[4, 7\]": lambda: kernels.metric_forward(
            v["z"], cT[:, :6].contiguous(), MT, 1.0, 0.1
        ),
        r"half must have sizes \[5, 1\], got \[1, 1\]": lambda: kernels.kick_forward(
            v["base"], half[:1], v["grad_U"], v["rho"], J, torch.zeros(5, 2, 2, dtype=torch.float64), True
        ),
        "base must be Double like the first input, got Float": lambda: kernels.momentum_forward(
            v["rho"], v["base"].float(), J, 3
        ),
        "take float32 or float64 tensors, got Half": lambda: kernels.metric_forward(v["z"].half(), cT, MT, 1.0, 0.1),
        r"z_start must have sizes \(B, 2\), got \[5, 3\]": lambda: kernels.position_forward(
            torch.zeros(5, 3, dtype=torch.float64), v["z"], v["z"], cT, MT, 1.0, 0.1, 2
        ),
        "states must be contiguous": lambda: kernels.momentum_backward(
            v["rho"], J, torch.zeros(1, 2, 5, dtype=torch.float64).mT
        ),
    }
    for message, call in calls.items():
        with pytest.raises(RuntimeError, match=message):
            call()


def test_a_process_waiting_on_another_processs_build_says_so_in_one_line(tmp_path, monkeypatch, capfd):
    """torch's build lock (filelock's flock on BUILD_FOLDER/lock), held by another process as during its build:
    ``kernels`` says in one line that it waits, then waits in torch's ``load`` (here returning at once)."""
    import subprocess
    import sys

    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, "1")
    monkeypatch.setattr(native, "_kernels", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: "built by the other process")
    lock = tmp_path / native._build_name() / "lock"
    lock.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, filelock\n"
         "with filelock.FileLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        capfd.readouterr()
        assert native.kernels() == "built by the other process"
        lines = capfd.readouterr().err.strip().splitlines()
        assert lines == [lines[0]] and "waiting for another process that is building" in lines[0], lines
        assert str(lock) in lines[0] and "RHVAE_NATIVE=0" in lines[0]
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setattr(native, "_tried", False)  # nobody holds it now: nothing is said
    assert native.kernels() == "built by the other process" and capfd.readouterr().err == ""


def test_two_checkouts_keep_their_own_build(tmp_path, monkeypatch):
    """The same source at another path (another checkout of the package) gets another build name: torch rebuilds a
    build whose source path changed, so two checkouts sharing one name rebuilt each other's on every switch."""
    here = native._build_name()
    copy = tmp_path / native.SOURCE.name
    copy.write_text(native.SOURCE.read_text())
    monkeypatch.setattr(native, "SOURCE", copy)
    assert native._build_name() != here
    moved = native._build_name()
    assert native._build_name() == moved  # and stays put for one checkout
    copy.write_text(copy.read_text() + "\n// changed\n")
    assert native._build_name() not in (here, moved)  # a changed source is another build, as before
