"""The training loop: Adam, seeded, per-epoch history, text progress bar, divergence detection."""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from .diagnostics import flow_diagnostics
from .evaluation import EvalMode
from .models import HVAE, RHVAE, VAE
from .provenance import set_threads
from .validation import check


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C, SIGINT) during ``epoch``; the model is left at its state after the last
    finished epoch. A ``KeyboardInterrupt``, so code that does not know it stops as on any Ctrl-C."""

    def __init__(self, epoch: int, history: History):
        super().__init__(f"interrupted at epoch {epoch}")
        self.epoch = epoch
        self.history = history


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss or exploding latent codes. The model is left at its last good state
    (the end of the last finished epoch); ``history`` holds the finished epochs."""

    def __init__(self, message: str, epoch: int, history: History):
        super().__init__(message)
        self.epoch = epoch
        self.history = history


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    test_loss: float | None
    seconds: float
    max_latent_norm: float
    fixed_point_residual: float
    step_size: float = 0.0  # median leapfrog step of the epoch's last batch (RHVAE: the stability-bounded ε)
    diagnostics: dict | None = None  # HVAE/RHVAE, every DIAGNOSTICS_EVERY epochs and the last: rhvae.diagnostics


#: Epochs between two flow diagnostics (``rhvae.diagnostics``, on the test images, DIAGNOSTICS_DRAWS draws each)
#: in the history of an HVAE/RHVAE; the last epoch always has them. About 0.3 s each, a few % of training.
DIAGNOSTICS_EVERY = 50
DIAGNOSTICS_DRAWS = 10


@dataclass
class History:
    """Per-epoch records and the settings of the run (JSON-ready through ``to_dict``)."""

    settings: dict = field(default_factory=dict)
    epochs: list[EpochRecord] = field(default_factory=list)
    status: str = "running"

    @property
    def train_loss(self) -> list[float]:
        return [r.train_loss for r in self.epochs]

    @property
    def test_loss(self) -> list[float | None]:
        return [r.test_loss for r in self.epochs]

    @property
    def diagnostics(self) -> dict | None:
        """The flow diagnostics of the last epoch that has them (HVAE/RHVAE trained with test images), or None."""
        return next((r.diagnostics for r in reversed(self.epochs) if r.diagnostics is not None), None)

    @property
    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.epochs)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "status": self.status, "epochs": [asdict(r) for r in self.epochs]}

    @classmethod
    def from_dict(cls, data: dict) -> History:
        return cls(data.get("settings", {}), [EpochRecord(**r) for r in data.get("epochs", [])], data["status"])


def train(
    model: VAE,
    x_train: torch.Tensor,
    x_test: torch.Tensor | None = None,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool | str = True,
    max_latent_norm: float = 1e3,
    desc: str | None = None,
    warmup_epochs: int = 0,
    metric_lr: float | None = None,
) -> History:
    """Train ``model`` in place with Adam and return its per-epoch ``History``.

    ``batch_size=None`` trains full batch (the authors' setting: with N ≤ a few hundred images their batch was
    larger than the training set, which also makes the batch metric equal to the full one). The run is
    deterministic for a given ``seed`` and thread count. At the end of every epoch an RHVAE freezes its metric
    over all of ``x_train``; the test loss uses the frozen metric, in eval mode.

    ``warmup_epochs``: the first epochs train the encoder and decoder alone, with the VAE's ELBO (the flow and
    the metric switched off), before the flow's objective takes over. ``metric_lr``: the learning rate of the
    RHVAE's metric network (default ``lr``).

    Divergence (a non-finite loss, non-finite parameters, or a latent code of norm above ``max_latent_norm``)
    raises ``TrainingDiverged`` naming the epoch and the settings, after restoring the last good state. Ctrl-C
    raises ``TrainingInterrupted`` (a ``KeyboardInterrupt``) naming the epoch, after restoring it as well.

    ``progress``: True, a text bar (batch logs); ``"notebook"``, one live widget bar (a notebook opened by a
    person); False, none. Pixels must be finite numbers in [0, 1] (``model.check_input``).
    """
    epochs = check("epochs", epochs)
    batch_size = None if batch_size is None else check("batch_size", batch_size)
    lr = check("lr", lr)
    seed = check("seed", seed)
    max_latent_norm = check("max_latent_norm", max_latent_norm)
    if progress not in (True, False, "notebook"):
        raise ValueError(f"progress must be True, False or 'notebook', got {progress!r}")
    x_train = model.check_input(x_train, "x_train")
    if len(x_train) == 0:
        raise ValueError("x_train must hold at least one image, got 0 rows")
    x_test = None if x_test is None or len(x_test) == 0 else model.check_input(x_test, "x_test")
    threads = set_threads(threads)
    torch.manual_seed(seed)
    n = len(x_train)
    batch = n if batch_size is None else min(batch_size, n)
    warmup_epochs = check("warmup_epochs", warmup_epochs)
    optimizer = torch.optim.Adam(_parameter_groups(model, lr, metric_lr), lr=lr)
    settings = {
        "model_type": model.model_type,
        "model_config": model.config(),
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "threads": threads,
        "n_train": n,
        "n_test": 0 if x_test is None else len(x_test),
        "max_latent_norm": max_latent_norm,
        "warmup_epochs": warmup_epochs,
        "metric_lr": metric_lr,
    }
    history = History(settings=settings)
    last_good = copy.deepcopy(model.state_dict())
    bar = _progress_bar(epochs, desc or model.model_type, progress)
    epoch = 0
    try:
        for epoch in bar:
            start = time.perf_counter()
            model.train()
            order = torch.randperm(n) if batch < n else torch.arange(n)
            total, max_norm, residual = 0.0, 0.0, 0.0
            for begin in range(0, n, batch):
                xb = x_train[order[begin : begin + batch]]
                out = VAE.forward(model, xb) if epoch <= warmup_epochs else model(xb)
                loss = -out.objective.mean()
                max_norm = max(max_norm, float(out.zK.detach().norm(dim=-1).max()))
                residual = max(residual, out.fixed_point_residual)
                problem = _problem(loss, max_norm, max_latent_norm)
                if problem is None:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if not all(torch.isfinite(p).all() for p in model.parameters()):
                        problem = "the parameters became non-finite after the update"
                if problem is not None:
                    model.load_state_dict(last_good)
                    history.status = f"diverged at epoch {epoch}"
                    raise TrainingDiverged(
                        f"{model.model_type} training diverged at epoch {epoch}: {problem} "
                        f"(settings: {_describe(model)}, lr={lr}, batch_size={batch_size or 'full'}, seed={seed}). "
                        f"The model holds its state after epoch {epoch - 1}.",
                        epoch,
                        history,
                    )
                total += float(loss.detach()) * len(xb)
            if isinstance(model, RHVAE):
                model.freeze_metric(x_train)
            test_loss = evaluate_loss(model, x_test) if x_test is not None else None
            seconds = time.perf_counter() - start
            diagnostics = None
            if isinstance(model, HVAE) and x_test is not None and (epoch % DIAGNOSTICS_EVERY == 0 or epoch == epochs):
                diagnostics = flow_diagnostics(model, x_test, n_draws=DIAGNOSTICS_DRAWS, seed=seed).to_dict()
            record = EpochRecord(epoch, total / n, test_loss, seconds, max_norm, residual, out.step_size, diagnostics)
            history.epochs.append(record)
            last_good = copy.deepcopy(model.state_dict())
            bar.set_postfix(train=f"{record.train_loss:.2f}", test=f"{test_loss:.2f}" if test_loss else "-")
    except KeyboardInterrupt as err:
        model.load_state_dict(last_good)
        history.status = f"interrupted at epoch {epoch}"
        raise TrainingInterrupted(max(epoch, 1), history) from err
    finally:
        bar.close()
    history.status = "finished"
    model.eval()
    return history


def _progress_bar(epochs: int, desc: str, progress: bool | str):
    """A text bar on stdout (readable in batch logs), or with ``progress="notebook"`` one live widget bar."""
    if progress == "notebook":
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(range(1, epochs + 1), desc=desc, mininterval=0.5)
    return tqdm(
        range(1, epochs + 1),
        desc=desc,
        file=sys.stdout,
        disable=not progress,
        mininterval=2.0,
        ascii=True,
        dynamic_ncols=False,
        ncols=100,
    )


def _parameter_groups(model: VAE, lr: float, metric_lr: float | None) -> list[dict]:
    """Adam's parameter groups: the metric network (RHVAE) at ``metric_lr`` if given, everything else at ``lr``."""
    if metric_lr is None or not isinstance(model, RHVAE):
        return [{"params": list(model.parameters())}]
    metric_lr = check("lr", metric_lr, "metric_lr")
    metric_nets = (model.metric_hidden, model.metric_diag, model.metric_lower)
    metric_params = {id(p) for net in metric_nets for p in net.parameters()}
    return [
        {"params": [p for p in model.parameters() if id(p) not in metric_params]},
        {"params": [p for net in metric_nets for p in net.parameters()], "lr": metric_lr},
    ]


def _problem(loss: torch.Tensor, max_norm: float, max_latent_norm: float) -> str | None:
    if not torch.isfinite(loss):
        return f"the loss is {float(loss.detach())}"
    if not math.isfinite(max_norm) or max_norm > max_latent_norm:
        return f"a latent code reached norm {max_norm:.3g} > max_latent_norm={max_latent_norm:g}"
    return None


def _describe(model: VAE) -> str:
    return ", ".join(f"{k}={v}" for k, v in model.config().items())


def evaluate_loss(model: VAE, x: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """Mean negative objective on ``x`` in eval mode (RHVAE: the frozen metric)."""
    with EvalMode(model):
        return float(-model(model.check_input(x, "x_test"), generator).objective.mean())
