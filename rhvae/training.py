"""The training loop: Adam, seeded, per-epoch history, text progress bar, divergence detection."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from tqdm import tqdm

from rhvae.evaluation.diagnostics import flow_diagnostics
from rhvae.history import EpochRecord, History
from rhvae.models import HVAE, RHVAE, VAE, check_model, native
from rhvae.models.eval_mode import EvalMode
from rhvae.provenance import pinned_threads
from rhvae.validation import check


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


#: Epochs between two flow diagnostics (``rhvae.evaluation.diagnostics``, on the test images, DIAGNOSTICS_DRAWS draws
#: each) in the history of an HVAE/RHVAE; the last epoch always has them. About 0.3 s each, a few % of training.
DIAGNOSTICS_EVERY = 50
DIAGNOSTICS_DRAWS = 10


@dataclass(frozen=True)
class TrainingSettings:
    """The settings ``train`` and ``train_group`` share, with their defaults, in one place (each model's ``seed``
    is given apart). ``train(model, x, epochs=500)`` is ``train(model, x, settings=TrainingSettings(epochs=500))``.

    ``batch_size=None`` trains full batch (the authors' setting: with N ≤ a few hundred images their batch was
    larger than the training set, which also makes the batch metric equal to the full one). ``threads``: torch's
    intra-op thread count for the run (None: leave the process's as it is; CPU results depend on it).
    ``progress``: True, a text bar (batch logs); ``"notebook"``, one live widget bar (a notebook opened by a
    person); False, none. ``max_latent_norm``: a latent code of larger norm stops training as diverged. ``desc``:
    the progress bar's label. ``warmup_epochs``: the first epochs train the encoder and decoder alone, with the
    VAE's ELBO (the flow and the metric switched off), before the flow's objective takes over. ``metric_lr``: the
    learning rate of the RHVAE's metric network (None: ``lr``)."""

    epochs: int = 100
    lr: float = 1e-3
    batch_size: int | None = None
    threads: int | None = None
    progress: bool | str = True
    max_latent_norm: float = 1e3
    desc: str | None = None
    warmup_epochs: int = 0
    metric_lr: float | None = None

    @classmethod
    def with_overrides(cls, settings: TrainingSettings | None, overrides: dict) -> TrainingSettings:
        """``settings`` (default: the defaults) with the keyword ``overrides``; ``TypeError`` naming an unknown
        keyword, ``ValueError`` naming a value out of range."""
        base = cls() if settings is None else settings
        if not isinstance(base, cls):
            raise TypeError(f"settings must be a TrainingSettings, got {type(settings).__name__}")
        unknown = sorted(set(overrides) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown training setting(s) {unknown}; the settings are {list(cls.__dataclass_fields__)}")
        return replace(base, **overrides).checked()

    def checked(self) -> TrainingSettings:
        """The settings with every value checked against its range (NumPy numbers become Python numbers)."""
        if self.progress not in (True, False, "notebook"):
            raise ValueError(f"progress must be True, False or 'notebook', got {self.progress!r}")
        return replace(
            self,
            epochs=check("epochs", self.epochs),
            lr=check("lr", self.lr),
            batch_size=None if self.batch_size is None else check("batch_size", self.batch_size),
            threads=None if self.threads is None else check("threads", self.threads),
            max_latent_norm=check("max_latent_norm", self.max_latent_norm),
            warmup_epochs=check("warmup_epochs", self.warmup_epochs),
            metric_lr=None if self.metric_lr is None else check("lr", self.metric_lr, "metric_lr"),
        ).checked_warmup()

    def checked_warmup(self) -> TrainingSettings:
        """The warm-up is the first epochs of the training: it cannot be longer than the training."""
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs must be <= epochs (the warm-up is the first epochs of the training), got "
                f"warmup_epochs={self.warmup_epochs} with epochs={self.epochs}"
            )
        return self


def train(
    model: VAE,
    x_train: torch.Tensor,
    x_test: torch.Tensor | None = None,
    seed: int = 0,
    settings: TrainingSettings | None = None,
    **overrides,
) -> History:
    """Train ``model`` in place with Adam and return its per-epoch ``History``. The settings (epochs, lr,
    batch_size, threads, progress, …) are ``TrainingSettings``: pass one, or name them as keywords.

    Every random draw (minibatch order, z₀, ρ₀, the test loss's draws) comes from one ``torch.Generator`` seeded
    with ``seed``, so the run is deterministic for a given ``seed`` and thread count. At the end of every epoch an
    RHVAE freezes its metric over all of ``x_train``; the test loss uses the frozen metric, in eval mode.

    Divergence (a non-finite loss, non-finite parameters, or a latent code of norm above ``max_latent_norm``)
    raises ``TrainingDiverged`` naming the epoch and the settings, after restoring the last good state. Ctrl-C
    raises ``TrainingInterrupted`` (a ``KeyboardInterrupt``) naming the epoch, after restoring it as well.
    Pixels must be finite numbers in [0, 1] (``model.check_input``).

    Several models that share the training settings train faster side by side: ``train_group``.
    """
    check_model(model)
    settings = TrainingSettings.with_overrides(settings, overrides)
    return _train(model, [x_train], None if x_test is None else [x_test], [seed], settings)[0]


def train_group(
    models: Sequence[VAE],
    x_trains: Sequence[torch.Tensor],
    x_tests: Sequence[torch.Tensor] | None = None,
    seeds: Sequence[int] = (0,),
    settings: TrainingSettings | None = None,
    **overrides,
) -> list[History | TrainingDiverged]:
    """Train ``models[m]`` on ``x_trains[m]`` (test images ``x_tests[m]``) with seed ``seeds[m]``, in place, as
    ``train`` would one by one, and return their histories; the ``TrainingSettings`` are shared by all.

    The models (one class, one config; e.g. the seeds of an experiment, or one per class) train side by side as
    one stack (``VAE.stack``: batched products over a leading member dimension, one Adam over the stacked weights,
    which is Adam on each member since Adam acts elementwise). Member m draws from its own generator seeded with
    ``seeds[m]`` in the order a separate run draws, so each member matches ``train(models[m], …, seed=seeds[m])``
    to rounding (tests/test_stack.py). The training sets must have one size (and the test sets one size). Each
    history records the group's epoch time divided by the number of members.

    If any member diverges, the group is abandoned and every model is trained on its own with ``train`` (so that
    the others still match separate runs). A member whose training diverged is returned as its
    ``TrainingDiverged`` (which holds its history and leaves the model at its last good state) instead of a
    ``History``. A single model is simply trained with ``train``.
    """
    settings = TrainingSettings.with_overrides(settings, overrides)
    models, x_trains, seeds = list(models), list(x_trains), [check("seed", s) for s in seeds]
    if not models:
        raise ValueError("models must hold at least one model to train, got none")
    x_tests = None if x_tests is None else list(x_tests)
    if not (len(models) == len(x_trains) == len(seeds)) or (x_tests is not None and len(x_tests) != len(models)):
        raise ValueError("train_group needs one training set, one seed (and one test set) per model")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("train_group got the same model object twice: pass one model object per member")
    if len(models) == 1:
        return _train_one_by_one(models, x_trains, x_tests, seeds, settings)
    if len({len(x) for x in x_trains}) != 1 or (x_tests is not None and len({len(x) for x in x_tests}) != 1):
        raise ValueError("train_group needs training sets of one size and test sets of one size")
    stack = VAE.stack(models)
    try:
        histories = _train(stack, x_trains, x_tests, seeds, settings)
    except TrainingDiverged:
        return _train_one_by_one(models, x_trains, x_tests, seeds, settings)
    for model, member in zip(models, stack.unstack(), strict=True):
        model.load_trained_state(member.state_dict())
        model.eval()
    return histories


def _train_one_by_one(models, x_trains, x_tests, seeds, settings) -> list[History | TrainingDiverged]:
    """``train`` for each model in turn: its history, or its ``TrainingDiverged``."""
    histories = []
    for m, model in enumerate(models):
        x_test = None if x_tests is None else x_tests[m]
        try:
            histories.append(train(model, x_trains[m], x_test, seed=seeds[m], settings=settings))
        except TrainingDiverged as err:
            histories.append(err)
    return histories


@dataclass
class _Epoch:
    """What one pass over the training batches of ``_train_epoch`` measured, per member."""

    totals: torch.Tensor  # summed per-image losses
    max_norms: torch.Tensor  # largest latent norm reached
    residual: float  # largest fixed-point residual
    steps: list[float]  # median leapfrog step of the last batch


def _train(
    model: VAE,
    x_trains: list[torch.Tensor],
    x_tests: list[torch.Tensor] | None,
    seeds: list[int],
    settings: TrainingSettings,
) -> list[History]:
    """The training loop of ``train`` (one model) and ``train_group`` (``model`` a stack, one training set, test
    set and seed per member), with ``settings.threads`` torch threads for its duration: one history per member."""
    with pinned_threads(settings.threads) as threads:
        return _train_pinned(model, x_trains, x_tests, seeds, settings, threads)


def _train_pinned(model, x_trains, x_tests, seeds, settings: TrainingSettings, threads: int) -> list[History]:
    seeds = [check("seed", seed) for seed in seeds]
    x_trains, x_test = _checked_images(model, x_trains, x_tests)
    x_train = torch.cat(x_trains)
    members = model.members or 1
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]  # on the CPU: the same draws on any device
    generator = generators[0] if model.members is None else generators
    optimizer = adam(_parameter_groups(model, settings.lr, settings.metric_lr), settings.lr)
    recorded = _recorded_settings(model, settings, threads, len(x_trains[0]), x_test)
    histories = [History(settings={**recorded, "seed": seed}) for seed in seeds]
    if model.members is not None:
        for m, history in enumerate(histories):
            history.settings["trained_in_stack"] = {"members": members, "index": m}
    last_good = copy.deepcopy(model.state_dict())
    bar = _progress_bar(settings.epochs, settings.desc or model.model_type, settings.progress)
    epoch = 0
    try:
        for epoch in bar:
            start = time.perf_counter()
            try:
                measured = _train_epoch(model, x_trains, optimizer, generators, generator, epoch, settings)
            except TrainingDiverged as err:
                model.load_state_dict(last_good)
                for history in histories:
                    history.status = f"diverged at epoch {epoch}"
                raise TrainingDiverged(
                    f"{model.model_type} training diverged at epoch {epoch}: {err} (settings: {_describe(model)}, "
                    f"lr={settings.lr}, batch_size={settings.batch_size or 'full'}, "
                    f"seed={seeds[0] if model.members is None else seeds}). "
                    f"The model holds its state after epoch {epoch - 1}.",
                    epoch,
                    histories[0],
                ) from None
            if isinstance(model, RHVAE):
                model.freeze_metric(x_train)
            test_losses = evaluate_member_losses(model, x_test, generator) if x_test is not None else None
            seconds = (time.perf_counter() - start) / members
            _record_epoch(model, histories, epoch, settings.epochs, measured, test_losses, seconds, x_test, seeds)
            last_good = copy.deepcopy(model.state_dict())
            first = histories[0].epochs[-1]
            bar.set_postfix(train=f"{first.train_loss:.2f}", test=f"{first.test_loss:.2f}" if first.test_loss else "-")
    except KeyboardInterrupt as err:
        model.load_state_dict(last_good)
        for history in histories:
            history.status = f"interrupted at epoch {epoch}"
        raise TrainingInterrupted(max(epoch, 1), histories[0]) from err
    finally:
        bar.close()
    for history in histories:
        history.status = "finished"
    model.eval()
    return histories


def _checked_images(model: VAE, x_trains, x_tests) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The training sets, checked, and the test sets, checked and concatenated (None when absent or empty)."""
    x_trains = [model.check_input(x, "x_train") for x in x_trains]
    if len(x_trains[0]) == 0:
        raise ValueError("x_train must hold at least one image, got 0 rows")
    if x_tests is not None and all(len(x) for x in x_tests):
        return x_trains, torch.cat([model.check_input(x, "x_test") for x in x_tests])
    return x_trains, None


def _recorded_settings(model: VAE, settings: TrainingSettings, threads: int, n: int, x_test) -> dict:
    """The settings a history records (JSON-ready)."""
    return {
        "model_type": model.model_type,
        "model_config": model.config(),
        "epochs": settings.epochs,
        "lr": settings.lr,
        "batch_size": settings.batch_size,
        "threads": threads,
        "leapfrog_kernels": native.implementation(),
        "n_train": n,
        "n_test": 0 if x_test is None else len(x_test) // (model.members or 1),
        "max_latent_norm": settings.max_latent_norm,
        "warmup_epochs": settings.warmup_epochs,
        "metric_lr": settings.metric_lr,
    }


def _train_epoch(model, x_trains, optimizer, generators, generator, epoch: int, settings: TrainingSettings) -> _Epoch:
    """One pass over the training batches (full batch by default) with an Adam step each; raises
    ``TrainingDiverged`` (its message: what went wrong) before a step would apply a non-finite update."""
    model.train()
    members = model.members or 1
    n = len(x_trains[0])
    batch = n if settings.batch_size is None else min(settings.batch_size, n)
    orders = [torch.randperm(n, generator=g) if batch < n else torch.arange(n) for g in generators]
    totals = torch.zeros(members, dtype=torch.float64)
    max_norms = torch.zeros(members, dtype=torch.float64)
    residual = 0.0
    for begin in range(0, n, batch):
        xb = torch.cat([x[order[begin : begin + batch]] for x, order in zip(x_trains, orders, strict=True)])
        out = VAE.forward(model, xb, generator) if epoch <= settings.warmup_epochs else model(xb, generator)
        member_losses = -_member_means(model, out.objective)
        loss = member_losses.sum()  # the members share no weight: each gets its own loss's gradient
        norms = model.grouped(out.zK.detach().norm(dim=-1)).reshape(members, -1).amax(1).double().cpu()
        max_norms = torch.maximum(max_norms, norms)
        residual = max(residual, out.fixed_point_residual)
        problem = _problem(member_losses.detach(), max_norms, settings.max_latent_norm, model.members)
        if problem is None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not all(torch.isfinite(p).all() for p in model.parameters()):
                problem = "the parameters became non-finite after the update"
        if problem is not None:
            raise TrainingDiverged(problem, epoch, History())
        totals += member_losses.detach().double().cpu() * (len(xb) // members)
    steps = out.step_size if isinstance(out.step_size, list) else [out.step_size] * members
    return _Epoch(totals, max_norms, residual, steps)


def _record_epoch(model, histories, epoch, epochs, measured: _Epoch, test_losses, seconds, x_test, seeds) -> None:
    """Append each member's ``EpochRecord`` (with the flow diagnostics every ``DIAGNOSTICS_EVERY`` epochs)."""
    n_train = histories[0].settings["n_train"]
    for m, history in enumerate(histories):
        diagnostics = None
        if isinstance(model, HVAE) and x_test is not None and (epoch % DIAGNOSTICS_EVERY == 0 or epoch == epochs):
            one = model if model.members is None else model.member(m)
            x_test_m = x_test if model.members is None else model.grouped(x_test)[m]
            diagnostics = flow_diagnostics(one, x_test_m, n_draws=DIAGNOSTICS_DRAWS, seed=seeds[m]).to_dict()
        test_loss = None if test_losses is None else test_losses[m]
        history.epochs.append(
            EpochRecord(
                epoch,
                float(measured.totals[m]) / n_train,
                test_loss,
                seconds,
                float(measured.max_norms[m]),
                measured.residual,
                measured.steps[m],
                diagnostics,
            )
        )


def _member_means(model: VAE, per_row: torch.Tensor) -> torch.Tensor:
    """The mean of a per-row quantity over each member's rows, (members,) (one value for one model)."""
    return model.grouped(per_row).reshape(model.members or 1, -1).mean(1)


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


def adam(params, lr: float) -> torch.optim.Adam:
    """The package's Adam: the fused single-kernel update on CPU and CUDA (about 4x faster than the default
    per-tensor loop for the 0.95 M weights of a 784–400–2 RHVAE), the default loop on other devices."""
    params = list(params)
    first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
    return torch.optim.Adam(params, lr=lr, fused=first.device.type in ("cpu", "cuda"))


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


def _problem(losses: torch.Tensor, max_norms: torch.Tensor, max_latent_norm: float, members) -> str | None:
    """What went wrong in a training step, given each member's loss and largest latent norm, or None."""
    for m, (loss, max_norm) in enumerate(zip(losses.tolist(), max_norms.tolist(), strict=True)):
        who = "" if members is None else f"member {m}: "
        if not math.isfinite(loss):
            return f"{who}the loss is {loss}"
        if not math.isfinite(max_norm) or max_norm > max_latent_norm:
            return f"{who}a latent code reached norm {max_norm:.3g} > max_latent_norm={max_latent_norm:g}"
    return None


def _describe(model: VAE) -> str:
    return ", ".join(f"{k}={v}" for k, v in model.config().items())


def evaluate_member_losses(model: VAE, x: torch.Tensor, generator=None) -> list[float]:
    """The mean negative objective on ``x`` in eval mode (RHVAE: the frozen metric), one per member of a stack
    (x: one block of rows per member; ``generator``: one per member) or a list of one value for one model."""
    with EvalMode(model):
        return (-_member_means(model, model(model.check_input(x, "x_test"), generator).objective)).tolist()
