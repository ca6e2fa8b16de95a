"""Data augmentation with few real digits: train a classifier on real + generated images.

The use the RHVAE was later built for (Chadebec et al., *Data Augmentation in High Dimensional Low Sample Size
Setting Using a Geometry-Based Variational Autoencoder*, TPAMI 2022): fit one generative model per class on a few
real images, generate more images of each class, and train a classifier on real + generated images.

**Data** (real MNIST, the bundled 5,000 digits). The training set of size n per class is the subset of the
``augmentation`` experiment (``rhvae.experiments.registry``): n digits per class drawn from the digits the quality
classifier (``rhvae.experiments.quality``) was trained on, split 80 / 20 per class into the images the classifiers and
the generative models are fitted on (``fit``) and a validation split of real images only (``val``: early stopping). The
test set is every other bundled digit (``accuracy_split``): disjoint from every training set and from the quality
classifier's training digits.

**Arms** (``ARMS``), each with ``n_generated`` extra images per class, labelled with their class:
real only; real + classic augmentation (random affine copies of the real images: rotation up to ±``DEGREES``°,
shift up to ±``SHIFT`` of the side, ``torchvision.transforms.RandomAffine``); real + VAE prior samples; real +
RHVAE samples by Riemannian HMC on π(z) ∝ √det G⁻¹(z) (``rhvae.sampling.hmc.generate``); real + RHVAE prior
samples; RHVAE HMC samples only. Generated images are decoder means, in [0, 1].

**Classifiers** (``CLASSIFIERS``): an MLP 784–``MLP_HIDDEN``–10 and a small CNN (two 3×3 convolutions with 8 and 16
channels, each followed by ReLU and 2×2 max-pooling, then a linear layer). Both minimise the cross-entropy with
Adam (lr ``LR``, batches of ``BATCH_SIZE``) for a fixed budget of ``steps`` updates; every ``EVAL_EVERY`` steps
the cross-entropy on the real validation images is measured, the weights with the lowest one are kept, and
training stops after ``PATIENCE`` evaluations without improvement. Every arm gets the same budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rhvae.experiments.classifier_cache import cached_classifier, classifier_name, save_classifier
from rhvae.experiments.data import Split, classifier_split, experiment_data, images_at, labelled_images, load_mnist
from rhvae.experiments.quality import GENERATION_METRICS, GENERATION_METRICS_NOTE, accuracy, generation_score
from rhvae.experiments.registry import MAX_CLASSIFIER_STEPS, REGISTRY
from rhvae.experiments.tables import over_seeds
from rhvae.models import VAE, check_models
from rhvae.paths import SHIPPED_DIR
from rhvae.sampling.hmc import HMC_TARGET, PRIOR_TARGET, generate, sample_prior
from rhvae.validation import check, check_int

#: The arms of the experiment: key → what the classifier is trained on.
ARMS = {
    "real": "real only",
    "classic": "real + shifts/rotations",
    "vae": "real + VAE prior samples",
    "rhvae": "real + RHVAE samples (Riemannian HMC)",
    "rhvae_prior": "real + RHVAE prior samples",
    "rhvae_only": "RHVAE samples (HMC) only",
}
#: The generative model and sampler behind each generated arm: (model kind, "hmc" or "prior").
GENERATED = {"vae": ("vae", "prior"), "rhvae": ("rhvae", "hmc"), "rhvae_prior": ("rhvae", "prior")}
#: The scores of the real and added images of every arm (``added_images_over_seeds``): how digit-like they are and
#: their distribution metrics against held-out real digits (``rhvae.experiments.quality.generation_score``).
ADDED_IMAGE_SCORES = ("in_class_fraction", "mean_confidence", *GENERATION_METRICS)
#: The extra images of each arm, as figures title them.
ADDED = {
    "classic": "shifts/rotations",
    "vae": "VAE prior samples",
    "rhvae": "RHVAE samples (HMC)",
    "rhvae_prior": "RHVAE prior samples",
}
CLASSIFIERS = ("mlp", "cnn")

DEGREES = 10.0
SHIFT = 0.1
MLP_HIDDEN = 128
LR = 1e-3
BATCH_SIZE = 64
EVAL_EVERY = 50
PATIENCE = 6


# --------------------------------------------------------------------------------------------------------- data
def accuracy_split() -> Split:
    """Every bundled digit the quality classifier was not trained on (the augmentation training sets are drawn
    from the digits it was trained on): a real test set disjoint from every training set of the experiment."""

    _, labels = load_mnist("bundled")
    return images_at(np.setdiff1d(np.arange(len(labels)), classifier_split()[0]))


def classic_augmentation(x: torch.Tensor, y: torch.Tensor, n_per_class: int, seed: int = 0):
    """``n_per_class`` random affine copies per class of the real images ``x`` (n, 784) with labels ``y``: each
    class's images are taken in a random order, cyclically, and each copy gets its own rotation in ±DEGREES° and
    shift in ±SHIFT of the side (``torchvision.transforms.RandomAffine``). Returns (images, labels)."""
    from torchvision.transforms import RandomAffine

    x, y = labelled_images(x, y)
    n_per_class, seed = check("n_samples", n_per_class, "n_per_class"), check("seed", seed)
    transform = RandomAffine(degrees=DEGREES, translate=(SHIFT, SHIFT))
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # RandomAffine draws from torch's global generator
        for c in torch.unique(y).tolist():
            members = x[y == c]
            order = torch.randperm(len(members), generator=generator)
            source = members[order[torch.arange(n_per_class) % len(members)]].reshape(-1, 1, 28, 28)
            images.append(torch.cat([transform(img) for img in source]).reshape(n_per_class, 784))
            labels.append(torch.full((n_per_class,), c, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def generated_images(models: Mapping[int, VAE], sampler: str, n_per_class: int, mcmc_steps: int, seed: int = 0):
    """``n_per_class`` images of each class from its model (``models``: class → trained model), labelled with the
    class: ``sampler="hmc"`` is the paper's sampler (``generate``: Riemannian HMC for an RHVAE), ``"prior"``
    decodes z ~ N(0, I). Returns (images, labels, info): how they were made, with the HMC acceptance rate of
    every class."""
    if sampler not in ("hmc", "prior"):
        raise ValueError(f"sampler must be 'hmc' or 'prior', got {sampler!r}")
    check_models(models, "models (class -> model)")
    for c in models:
        check_int("a class of models", c, 0)
    n_per_class = check("n_samples", n_per_class, "n_per_class")
    images, labels, acceptance = [], [], {}
    start = time.perf_counter()
    for c, model in sorted(models.items()):
        if sampler == "hmc":
            out = generate(model, n_per_class, mcmc_steps, seed=seed)
            acceptance[c] = out.info.get("acceptance_rate")
            out = out.images
        else:
            out = sample_prior(model, n=n_per_class, seed=seed).images
        images.append(out.detach().float().clamp(0, 1))
        labels.append(torch.full((n_per_class,), c, dtype=torch.long))
    info = {
        "sampler": "riemannian_hmc" if sampler == "hmc" and acceptance else "prior",
        "target": HMC_TARGET if sampler == "hmc" and acceptance else PRIOR_TARGET,
        "n_per_class": n_per_class,
        "mcmc_steps": mcmc_steps if acceptance else None,
        "acceptance_rate_per_class": acceptance or None,
        "seconds": time.perf_counter() - start,
    }
    return torch.cat(images), torch.cat(labels), info


# -------------------------------------------------------------------------------------------------- classifiers
def make_classifier(kind: str, seed: int = 0) -> nn.Module:
    """A fresh ``kind`` ('mlp' or 'cnn') classifier of 784-pixel images into 10 classes, initialised from ``seed``
    (the caller's global random state is left as it was)."""
    if kind not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check("seed", seed))
        return _classifier_network(kind)


def _classifier_network(kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(784, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, 10))
    if kind == "cnn":
        return nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)),
            nn.Conv2d(1, 8, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 10),
        )
    raise AssertionError(kind)


@dataclass
class Fitted:
    """A trained classifier, its validation cross-entropy curve (every EVAL_EVERY steps), the step of the kept
    weights and the number of steps run."""

    model: nn.Module
    val_loss: list[float]
    best_step: int
    steps_run: int


def train_classifier(kind, x, y, x_val, y_val, steps: int, seed: int = 0) -> Fitted:
    """Train a ``kind`` classifier on (x, y) for at most ``steps`` Adam updates with early stopping on the
    validation cross-entropy (see the module docstring); deterministic for a seed and a thread count."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_CLASSIFIER_STEPS:
        raise ValueError(f"steps must be an integer in [1, {MAX_CLASSIFIER_STEPS}], got {steps!r}")
    x, y = labelled_images(x, y)
    x_val, y_val = labelled_images(x_val, y_val, "x_val", "y_val")
    seed = check("seed", seed)
    model = make_classifier(kind, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, best_step, curve, since = math.inf, None, 0, [], 0
    step = 0
    while step < steps and since < PATIENCE:
        model.train()
        batch = torch.randint(len(x), (min(BATCH_SIZE, len(x)),), generator=generator)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % EVAL_EVERY == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                val = float(F.cross_entropy(model(x_val), y_val))
            curve.append(val)
            if best_state is None or val < best:
                best, best_step, since = val, step, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                since += 1
    model.load_state_dict(best_state)
    model.eval()
    return Fitted(model, curve, best_step, step)


def arm_classifier_spec(kind: str, arm: str, size: int, seed: int, params: Mapping, model_files: Mapping) -> dict:
    """What determines the classifier of one arm (``rhvae.experiments.classifier_cache``): its kind, arm, training
    size and seed, the data, the training settings, and the generative models and sampler behind its images."""
    images: dict = {"n_generated": params["n_generated"]} if arm != "real" else {}
    if arm in GENERATED or arm == "rhvae_only":
        model_kind, sampler = GENERATED["rhvae" if arm == "rhvae_only" else arm]
        images.update(
            models=sorted(model_files.get((size, seed, model_kind), [])),
            sampler=sampler,
            mcmc_steps=params["mcmc_steps"] if sampler == "hmc" else None,
        )
    return {
        "kind": kind,
        "arm": arm,
        "size": size,
        "seed": seed,
        "data": {"data_seed": params["data_seed"], "source": params["data_source"]},
        "training": {
            "steps": params["classifier_steps"],
            "lr": LR,
            "batch_size": BATCH_SIZE,
            "eval_every": EVAL_EVERY,
            "patience": PATIENCE,
            "threads": torch.get_num_threads(),
        },
        "images": images,
    }


def arm_classifier(spec: dict, x, y, val: Split, cache_dir, reuse: bool) -> tuple[nn.Module, dict, Path]:
    """The classifier of ``spec``: reused from the cache or the shipped models when ``reuse`` and its file matches
    the spec, else trained on (x, y) with early stopping on ``val`` and saved in ``cache_dir``. Returns the network
    (eval mode), its training record (images, best step, steps run, validation curve, where it came from) and its
    file."""
    x, y = labelled_images(x, y)
    if reuse:
        found = cached_classifier(spec, lambda: make_classifier(spec["kind"]), cache_dir)
        if found is not None:
            net, record, path = found
            shipped = SHIPPED_DIR.resolve() in path.resolve().parents
            return net, {**record, "source": "shipped" if shipped else "cache"}, path
    start = time.perf_counter()
    fitted = train_classifier(spec["kind"], x, y, val.x, val.y, spec["training"]["steps"], spec["seed"])
    record = {
        "n_train": len(x),
        "best_step": fitted.best_step,
        "steps_run": fitted.steps_run,
        "val_loss": fitted.val_loss,
        "train_seconds": time.perf_counter() - start,
    }
    path = save_classifier(Path(cache_dir) / classifier_name(spec), fitted.model, spec, record)
    return fitted.model, {**record, "source": "trained"}, path


# ---------------------------------------------------------------------------------------------------- the arms
def arm_training_set(arm: str, real: Split, extra: Mapping[str, tuple[torch.Tensor, torch.Tensor]]):
    """The training images and labels of ``arm``: the real images, plus (or, for ``rhvae_only``, instead) the
    extra images of the arm (``extra``: 'classic', 'vae', 'rhvae', 'rhvae_prior' → (images, labels))."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {tuple(ARMS)}, got {arm!r}")
    if arm == "real":
        return real.x, real.y
    if arm == "rhvae_only":
        return extra["rhvae"]
    images, labels = extra[arm]
    return torch.cat([real.x, images]), torch.cat([real.y, labels])


def gains(accuracies: Mapping[str, float]) -> dict[str, float]:
    """Accuracy of every arm minus that of real only (the gain of augmenting)."""
    if not isinstance(accuracies, Mapping) or "real" not in accuracies:
        raise TypeError(f"accuracies must be a dict of arm -> accuracy with a 'real' arm, got {accuracies!r:.80}")
    return {arm: value - accuracies["real"] for arm, value in accuracies.items()}


def verdict_checks(per_seed: Mapping[int, Mapping[str, Mapping]], n_generated: int) -> dict[str, bool]:
    """The checks of the claim "RHVAE-sampled augmentation beats real only and the VAE": for every classifier and
    training-set size (rows ``"CLF n/class"`` of ``per_seed[seed][row][arm]`` = accuracy), is the mean accuracy
    of the rhvae arm above that of real only, and above that of the VAE arm? Refuses when the comparison is
    meaningless: no generated image, or no seed in which both arms of a check were trained."""
    if not isinstance(n_generated, int) or n_generated < 1:
        raise ValueError(f"the verdict needs generated images: n_generated must be >= 1, got {n_generated!r}")
    rows = sorted({row for table in per_seed.values() for row in table})
    if not rows:
        raise ValueError("the verdict needs accuracies: none were measured")
    checks = {}
    for row in rows:
        for other in ("real", "vae"):
            pairs = [
                (t[row]["rhvae"], t[row][other])
                for t in per_seed.values()
                if row in t and "rhvae" in t[row] and other in t[row]
            ]
            if not pairs:
                raise ValueError(f"no seed has both the rhvae and the {other} arm for {row}: nothing to compare")
            wins = sum(a > b for a, b in pairs)
            mean = sum(a - b for a, b in pairs) / len(pairs)
            name = f"{row}: RHVAE (HMC) augmentation beats {ARMS[other]} (mean {mean:+.3f}; {wins}/{len(pairs)} seeds)"
            checks[name] = mean > 0
    return checks


# ------------------------------------------------------------------------------------------------ the notebook
@dataclass
class ArmsOutcome:
    """What ``run_arms`` measured: ``accuracy[seed][row][arm]`` (row ``"CLF n/class"``), the per-class models
    ``models[size][seed][kind][class]``, the image sets of the first seed at each size
    (``images[size][title] = (images, labels)``) and the test split."""

    accuracy: dict
    models: dict
    images: dict
    test: Split


def row_name(classifier: str, size: int) -> str:
    return f"{classifier.upper()} {size}/class"


def class_subsets(sizes, data_seed: int = 0, source: str = "bundled"):
    """(size, class, subset) for every training size and class: the real images one per-class generative model is
    trained on (``fit``) and validated on (``val``): the class's part of the 10-class ``augmentation`` subset."""

    for size in sizes:
        for c in REGISTRY["augmentation"].subset.classes:
            yield size, c, experiment_data("augmentation", (c,), size, seed=data_seed, source=source)


def arms_available(extra: Mapping) -> list[str]:
    """The arms that can be trained with the extra image sets ``extra`` (an arm whose generative models diverged
    for some class has no set)."""
    return [arm for arm in ARMS if arm == "real" or (arm if arm != "rhvae_only" else "rhvae") in extra]


def _scores_by_seed(images: Mapping[str, torch.Tensor], seeds) -> dict:
    """``generation_score`` of every image set of ``images`` ({"seed/label": images}), as {seed: {label: score}}."""
    quality: dict = {seed: {} for seed in seeds}
    for key, x in images.items():
        seed, label = key.split("/", 1)
        quality[int(seed)][label] = generation_score(x)
    return quality


def run_arms(run, configs: Mapping[str, Mapping]) -> ArmsOutcome:
    """The whole experiment for a notebook ``run`` (``rhvae.experiments.runs.Run`` of ``augmentation``): for every
    training size and seed, the per-class VAE and RHVAE (trained, or reused when cached or shipped), the extra images of
    every arm, and both classifiers trained on every arm and scored on the test split. Records into the run the
    accuracies, the gains over real only (mean ± std over seeds), how the classifiers trained and how the images
    were generated. An arm whose generative model diverged for some class is left out of that seed."""

    p = run.params
    test = accuracy_split()
    scores: dict = {seed: {} for seed in p["seeds"]}
    scored: dict = {}  # the real and added images of every arm, scored after the loop: {"seed/label": images}
    models: dict = {}
    images: dict = {}
    training: dict = {}
    generation: dict = {}
    model_files: dict = {}  # (size, seed, kind) -> the file names of that kind's per-class models
    for size in p["sizes"]:
        data = run.data(n_per_class=size)  # the 10-class subset, recorded in the provenance
        fit, val = data.train, data.test
        models[size] = {seed: {"vae": {}, "rhvae": {}} for seed in p["seeds"]}
        per_class = [(c, one) for _, c, one in class_subsets([size], p["data_seed"], p["data_source"])]
        for kind in ("vae", "rhvae"):  # every class and seed of one kind side by side, as one stack
            requests = {
                (seed, c): (f"{kind}_n{size}_class{c}_seed{seed}", seed, one)
                for seed in p["seeds"]
                for c, one in per_class
            }
            trained = run.train_many(kind, configs[kind], list(requests.values()))
            for (seed, c), (label, _, _) in requests.items():
                if trained[label] is not None:
                    models[size][seed][kind][c] = trained[label].model
                    model_files.setdefault((size, seed, kind), []).append(Path(trained[label].path).name)
        for seed in p["seeds"]:
            by_kind = models[size][seed]
            with run.timer("generation"):
                extra = {"classic": classic_augmentation(fit.x, fit.y, p["n_generated"], seed)}
                for arm, (kind, sampler) in GENERATED.items():
                    if len(by_kind[kind]) == len(data.classes):
                        x, y, info = generated_images(by_kind[kind], sampler, p["n_generated"], p["mcmc_steps"], seed)
                        extra[arm] = (x, y)
                        generation.setdefault(seed, {})[f"{ARMS[arm]}, {size}/class"] = info
            for arm, (x, _) in {"real": (fit.x, fit.y), **extra}.items():
                name = "real digits (fit part)" if arm == "real" else ADDED[arm]
                scored[f"{seed}/{name}, {size}/class"] = x
            if seed == p["seeds"][0]:
                images[size] = {"real": (fit.x, fit.y), **{ADDED[a]: extra[a] for a in extra}}
            for clf in CLASSIFIERS:
                row = row_name(clf, size)
                scores[seed][row] = {}
                for arm in arms_available(extra):
                    x, y = arm_training_set(arm, fit, extra)
                    spec = arm_classifier_spec(clf, arm, size, seed, p, model_files)
                    with run.timer("classifiers"):
                        net, record, path = arm_classifier(spec, x, y, val, run.cache_dir, p["reuse_cache"])
                        scores[seed][row][arm] = accuracy(net, test.x, test.y)
                    training.setdefault(seed, {}).setdefault(row, {})[arm] = {**record, "file": str(path)}
                print(f"seed {seed}, {row}: " + ", ".join(f"{a} {v:.3f}" for a, v in scores[seed][row].items()))
    with run.timer("generation_scores"):  # the added images against held-out real digits (stored: keyed by the images)
        quality = run.stored_evaluation(
            "added_images_quality", lambda: _scores_by_seed(scored, p["seeds"]), inputs=scored
        )
    table = {
        seed: {
            f"{row} · {ARMS[arm]}": {"accuracy": acc, "gain": acc - by_arm["real"]}
            for row, by_arm in rows.items()
            for arm, acc in by_arm.items()
        }
        for seed, rows in scores.items()
    }
    run.record(
        accuracy=scores,
        accuracy_over_seeds=over_seeds(table, ("accuracy", "gain")),
        classifier_training=training,
        test_set={"n": len(test), "per_class": torch.bincount(test.y, minlength=10), "indices": test.indices},
        generation=generation,
        added_images_quality=quality,
        added_images_over_seeds=over_seeds(quality, ADDED_IMAGE_SCORES),
        generation_metrics_note=GENERATION_METRICS_NOTE,
    )
    return ArmsOutcome(scores, models, images, test)
