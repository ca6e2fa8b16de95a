"""A quality score for generated digits, from a small MNIST classifier trained on held-out real digits.

The classifier (MLP 784–256–10, ReLU, dropout 0.2, with ±2-pixel random shifts as augmentation) is trained
once on the bundled real digits (``rhvae.load_mnist()``) that are in **none** of the four paper experiments'
default subsets (``rhvae.EXPERIMENTS`` of pool ``all`` with data seed 0, train and test images), so that it has
never seen the images their generative models are trained or evaluated on (the augmentation experiment draws its
few training digits from this classifier's training digits, and tests on every other digit). Of those
remaining digits a stratified 20 % is held out (split seed ``SEED``); the accuracy on that held-out split is
stored with the weights and is ``classifier_accuracy()``.

Weights are cached in ``data/quality_classifier.pt``: a ``torch.save`` of a plain dict (format tag, the spec —
architecture, seed, training settings, count and SHA-256 of the training and test indices —, held-out
accuracy and state dict) written atomically and read with ``weights_only=True``. A cache file that is
unreadable, of another format, of another spec, whose weights do not load, or whose weights no longer give
the stored accuracy on the held-out split is refused and the classifier is retrained (and the file replaced).

``quality_score(images, classes)`` summarises the classifier's view of a set of generated images: the mean
top-class confidence (how digit-like each image is) and how the predicted classes spread over the classes
the generative model was trained on (coverage, entropy, total-variation distance from uniform).

``generation_metrics(generated, real)`` compares a set of generated images with real ones in the classifier's
feature space (``features``: its 256 hidden ReLU units): a Fréchet distance between Gaussian fits of the two
feature clouds (``frechet_distance``, an MNIST "classifier FID", not the Inception FID, so its values are not
comparable with published FIDs) and the k-NN precision and recall of Kynkäänniemi et al. (2019)
(``precision_recall``).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rhvae.experiments.data import CLASSIFIER_SPLIT_SEED, classifier_split, load_mnist
from rhvae.files import atomic_write
from rhvae.paths import DATA_DIR
from rhvae.provenance import pinned_threads
from rhvae.validation import as_array_tensor, check_bool, check_pixels

FORMAT = "rhvae-quality-classifier"
FORMAT_VERSION = 1
DEFAULT_PATH = DATA_DIR / "quality_classifier.pt"
SEED = CLASSIFIER_SPLIT_SEED
HIDDEN = 256
EPOCHS = 30
BATCH_SIZE = 128
LR = 1e-3
MAX_SHIFT = 2
ACCURACY_TOLERANCE = 0.01  # a cached file must reproduce its stored held-out accuracy (to ~1 %: BLAS rounding)


class ClassifierFileError(ValueError):
    """A quality-classifier cache file that is unreadable, foreign, of another spec or with broken weights."""


def make_network() -> nn.Module:
    return nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Dropout(0.2), nn.Linear(HIDDEN, 10))


def _hash(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def classifier_spec(train_idx: np.ndarray, test_idx: np.ndarray, seed: int = SEED) -> dict:
    """Everything that determines the trained classifier; a cache file is used only if its spec is equal."""
    return {
        "architecture": f"mlp-784-{HIDDEN}-10-dropout0.2",
        "threads": 1,
        "source": "bundled",
        "seed": seed,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "max_shift": MAX_SHIFT,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "train_indices_sha256": _hash(train_idx),
        "test_indices_sha256": _hash(test_idx),
    }


def as_images(images, name: str = "images", min_images: int = 1) -> torch.Tensor:
    """Images (n, 784), (n, 28, 28) or (n, 1, 28, 28), float in [0, 1] or uint8 0–255 → float32 (n, 784) in [0, 1]
    (``rhvae.validation.check_pixels``: one ``TypeError``/``ValueError`` line naming ``name`` for anything else,
    e.g. float pixels 0–255, negative or NaN pixels, another shape or fewer than ``min_images`` images)."""
    return check_pixels(
        as_array_tensor(images, name), name, square=True, min_images=min_images, uint8=True, dtype=torch.float32
    )


def _random_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each 28×28 image by up to ±MAX_SHIFT pixels in each direction (zero fill), one gather."""
    n, side = len(x), 28 + 2 * MAX_SHIFT
    padded = F.pad(x.reshape(n, 28, 28), (MAX_SHIFT,) * 4).reshape(n, side * side)
    dx = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 1), generator=generator)
    dy = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 1), generator=generator)
    base = (torch.arange(28)[:, None] * side + torch.arange(28)[None, :]).reshape(1, 784)
    return torch.gather(padded, 1, base + dy * side + dx)


@dataclass
class QualityClassifier:
    """The trained network (eval mode), its held-out ``accuracy``, where it came from, and its spec."""

    net: nn.Module
    accuracy: float
    spec: dict
    path: Path | None
    retrained: bool
    train_seconds: float | None = None
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def predict_proba(self, images) -> torch.Tensor:
        """Class probabilities (n, 10) of ``images``."""
        return torch.softmax(self.net(as_images(images)), -1)


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` (images, as ``as_images``) that ``net`` classifies as ``y`` (in eval mode)."""
    x = as_images(x, "x")
    net.eval()
    with torch.no_grad():
        return float((net(x).argmax(-1) == y).double().mean())


def train_quality_classifier(seed: int = SEED) -> tuple[nn.Module, float, dict, float]:
    """Train the classifier on the held-out real digits; return (net, held-out accuracy, spec, seconds)."""
    images, labels = load_mnist()
    train_idx, test_idx = classifier_split(seed)
    spec = classifier_spec(train_idx, test_idx, seed)
    x_train, y_train = as_images(images[train_idx]), torch.from_numpy(labels[train_idx])
    x_test, y_test = as_images(images[test_idx]), torch.from_numpy(labels[test_idx])
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and, for this small MLP, faster than 2 threads
    try:
        net, seconds = _fit(x_train, y_train, generator, seed)
    finally:
        torch.set_num_threads(threads)
    return net, accuracy(net, x_test, y_test), spec, seconds


def _fit(x_train: torch.Tensor, y_train: torch.Tensor, generator: torch.Generator, seed: int):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = make_network()
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        start = time.perf_counter()
        for _ in range(EPOCHS):
            net.train()
            order = torch.randperm(len(x_train), generator=generator)
            for batch in torch.split(order, BATCH_SIZE):
                loss = F.cross_entropy(net(_random_shift(x_train[batch], generator)), y_train[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
        seconds = time.perf_counter() - start
    net.eval()
    return net, seconds


def _read(path: Path, spec: dict, x_test: torch.Tensor, y_test: torch.Tensor) -> tuple[nn.Module, float]:
    """Load and check a cache file; raise ``ClassifierFileError`` with the reason if it cannot be used."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ClassifierFileError(f"{path} is not readable (truncated or corrupted?): {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ClassifierFileError(f"{path} is not a quality-classifier file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ClassifierFileError(f"{path} has format version {payload.get('format_version')}")
    if payload.get("spec") != spec:
        raise ClassifierFileError(f"{path} was trained with another spec (data split, seed or settings)")
    net = make_network()
    try:
        net.load_state_dict(payload["state_dict"], strict=True)
        stated = float(payload["accuracy"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ClassifierFileError(f"{path} holds weights that do not fit the classifier: {err}") from err
    measured = accuracy(net, x_test, y_test)
    if not math.isfinite(stated) or abs(measured - stated) > ACCURACY_TOLERANCE:
        raise ClassifierFileError(f"{path}: its weights give accuracy {measured:.4f}, the file states {stated:.4f}")
    return net, stated


_LOADED: dict[str, QualityClassifier] = {}


def load_classifier(path: str | Path | None = None, retrain: bool = False, verbose: bool = False) -> QualityClassifier:
    """The quality classifier: from the cache file ``path`` (default ``data/quality_classifier.pt``) when it
    is valid for the current data split and settings, else trained (a few seconds) and saved atomically.
    Loaded classifiers are memoised per path for the process (``retrain=True`` forces a new training)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    retrain, verbose = check_bool("retrain", retrain), check_bool("verbose", verbose)
    key = str(path.resolve())
    if not retrain and key in _LOADED:
        return _LOADED[key]
    images, labels = load_mnist()
    train_idx, test_idx = classifier_split(SEED)
    spec = classifier_spec(train_idx, test_idx, SEED)
    reason = "retrain requested" if retrain else None
    if not retrain:
        if path.is_file():
            try:
                x_test, y_test = as_images(images[test_idx]), torch.from_numpy(labels[test_idx])
                net, held_out = _read(path, spec, x_test, y_test)
                clf = QualityClassifier(net, held_out, spec, path, retrained=False)
                _LOADED[key] = clf
                return clf
            except ClassifierFileError as err:
                reason = str(err)
        else:
            reason = f"{path} does not exist"
    if verbose:
        print(f"training the quality classifier ({reason})")
    net, held_out, spec, seconds = train_quality_classifier(SEED)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec,
        "accuracy": held_out,
        "train_seconds": seconds,
        "torch_version": str(torch.__version__),
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    clf = QualityClassifier(net, held_out, spec, path, retrained=True, train_seconds=seconds, info={"reason": reason})
    _LOADED[key] = clf
    return clf


def classifier_accuracy(classifier: QualityClassifier | None = None) -> float:
    """Accuracy of the quality classifier on its held-out real digits (never seen in training)."""
    return _classifier(classifier).accuracy


def coverage_threshold(n_classes: int) -> float:
    """The share of the samples a class needs to count as covered: a quarter of a uniform share, 1/(4K)."""
    return 1.0 / (4 * n_classes)


def quality_score(images, classes=None, classifier: QualityClassifier | None = None, min_share=None) -> dict:
    """Summary of how digit-like and how diverse ``images`` (n, 784) are, for a model trained on ``classes``
    (default: all ten digits).

    Returns a dict with
      ``n``; ``mean_confidence`` (mean top-class probability) and ``median_confidence``;
      ``counts`` (predicted-class histogram, 10 ints) and ``shares`` (it divided by n);
      ``expected_classes``; ``in_class_fraction`` (share predicted as one of the expected classes);
      ``coverage``: fraction of the expected classes whose share is at least ``min_share``
      (default 1 / (4K) for K expected classes, i.e. a quarter of the uniform share);
      ``entropy`` of the predicted histogram over the ten digits (nats); ``normalized_entropy``: entropy of the
      histogram restricted to the K expected classes (renormalised) divided by log K, in [0, 1] (1 for an even
      spread over them, 0 when all in-class images fall in one class; None for K = 1, where it is undefined,
      so that the dict is valid JSON);
      ``tv_from_uniform``: total-variation distance ½ Σ_c |share_c − u_c| from the uniform distribution u
      over the expected classes (0 = perfectly balanced, → 1 when everything is off-class).
    """
    clf = _classifier(classifier)
    probs = clf.predict_proba(images)
    n = len(probs)
    expected = tuple(range(10)) if classes is None else tuple(int(c) for c in classes)
    if not expected or len(set(expected)) != len(expected) or not all(0 <= c <= 9 for c in expected):
        raise ValueError(f"classes must be distinct digits in 0..9, got {classes!r}")
    k = len(expected)
    min_share = coverage_threshold(k) if min_share is None else float(min_share)
    confidence, predicted = probs.max(-1)
    counts = torch.bincount(predicted, minlength=10).double()
    shares = counts / max(n, 1)
    uniform = torch.zeros(10, dtype=torch.float64)
    uniform[list(expected)] = 1.0 / k
    nonzero = shares[shares > 0]
    entropy = float(-(nonzero * nonzero.log()).sum()) if n else 0.0
    in_class = counts[list(expected)]
    in_class = in_class / in_class.sum() if in_class.sum() > 0 else in_class
    in_class = in_class[in_class > 0]
    class_entropy = float(-(in_class * in_class.log()).sum())
    return {
        "n": n,
        "mean_confidence": float(confidence.mean()) if n else float("nan"),
        "median_confidence": float(confidence.median()) if n else float("nan"),
        "counts": [int(c) for c in counts],
        "shares": [float(s) for s in shares],
        "expected_classes": list(expected),
        "in_class_fraction": float(shares[list(expected)].sum()),
        "coverage": float((shares[list(expected)] >= min_share).double().mean()) if n else 0.0,
        "min_share": min_share,
        "entropy": entropy,
        "normalized_entropy": class_entropy / math.log(k) if k > 1 else None,
        "tv_from_uniform": float(0.5 * (shares - uniform).abs().sum()) if n else float("nan"),
        "classifier_accuracy": clf.accuracy,
    }


FEATURE_LAYER = f"quality classifier hidden ReLU ({HIDDEN})"
DISTANCE_CHUNK = 1024  # rows of a pairwise-distance block (1024 × 5000 float64 ≈ 40 MB)
# The metrics run on one torch thread, like the classifier's training: their rounding then does not depend on the
# process's thread count, and these small eigendecompositions (256 × 256) are no faster on more threads (on a busy
# 2-core machine two threads made an eigh ~100× slower).
METRIC_THREADS = 1


def _classifier(classifier) -> QualityClassifier:
    """``classifier``, or the shipped quality classifier for None; a ``TypeError`` for anything else."""
    if classifier is None:
        return load_classifier()
    if not isinstance(classifier, QualityClassifier):
        raise TypeError(
            f"classifier must be a QualityClassifier (load_classifier()) or None, got {type(classifier).__name__}"
        )
    return classifier


def _network(classifier) -> nn.Module:
    if isinstance(classifier, nn.Module):  # a bare make_network() module
        return classifier
    return _classifier(classifier).net


@torch.no_grad()
def features(images, classifier: QualityClassifier | None = None) -> torch.Tensor:
    """Feature vectors (n, 256) float64 of ``images`` (n, 784) or (n, 28, 28), uint8 or float in [0, 1]:
    the 256 ReLU units of the quality classifier (an MNIST 'classifier FID', not the Inception FID), i.e.

        h(x) = max(0, W₁ x + b₁)

    with (W₁, b₁) the first Linear layer (784 → 256) of ``classifier`` (default ``load_classifier()``; a bare
    ``make_network()`` module is accepted too). Dropout follows this layer and is not applied (eval mode);
    the layer is evaluated in float64 (weights cast from float32).
    """
    net = _network(classifier)
    linear, relu = net[0], net[1]
    if not isinstance(linear, nn.Linear) or not isinstance(relu, nn.ReLU) or linear.in_features != 784:
        raise ValueError("classifier must be the quality classifier (Linear(784, hidden), ReLU, ...)")
    x = as_images(images).double()
    with pinned_threads(METRIC_THREADS):
        return torch.relu(F.linear(x, linear.weight.detach().double(), linear.bias.detach().double()))


def _as_features(values, name: str, min_rows: int = 2) -> torch.Tensor:
    """``values`` as a float64 (n, d) tensor; ValueError naming ``name`` if not 2-D, too short or not finite."""
    if isinstance(values, torch.Tensor):
        x = values.detach().cpu().double()
    else:
        x = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {tuple(x.shape)}")
    if len(x) < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {len(x)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds non-finite values")
    return x


def _same_dimension(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} must have the same dimension, got {a.shape[1]} and {b.shape[1]}")


def _symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Σ^{1/2} = V diag(√max(λ, 0)) Vᵀ of a symmetric positive semi-definite Σ = V diag(λ) Vᵀ."""
    eigenvalues, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.T))
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a, features_b) -> float:
    """Fréchet (2-Wasserstein) distance between the Gaussians fitted to two feature sets (n_a, d) and (n_b, d):

        FD = ‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^{1/2})

    with μ the sample means and Σ the unbiased sample covariances (divisor n − 1). Σa Σb is not symmetric, but it
    is similar to the symmetric positive semi-definite M = Σa^{1/2} Σb Σa^{1/2} (Σa^{1/2} is the symmetric square
    root, by ``eigh``), so tr((Σa Σb)^{1/2}) = Σᵢ √λᵢ(M), with M's eigenvalues (``eigvalsh``) clipped at 0 against
    rounding; all in float64. The plug-in estimate is biased upwards, by O(d / n) (e.g. E‖μ̂a − μ̂b‖² =
    ‖μa − μb‖² + tr Σa / n_a + tr Σb / n_b), so compare values at equal sample sizes. Rounding (square roots of
    eigenvalues near 0, e.g. of dead ReLU units) can leave a value of order 1e-10 · tr(Σa + Σb) below 0 (a set
    against itself); the result is clipped at 0.
    """
    a = _as_features(features_a, "features_a")
    b = _as_features(features_b, "features_b")
    _same_dimension(a, b, "features_a", "features_b")
    with pinned_threads(METRIC_THREADS):
        mean_a, mean_b = a.mean(0), b.mean(0)
        cov_a = torch.atleast_2d(torch.cov(a.T))
        cov_b = torch.atleast_2d(torch.cov(b.T))
        root_a = _symmetric_sqrt(cov_a)
        middle = root_a @ cov_b @ root_a
        trace_sqrt = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp(min=0).sqrt().sum()
        distance = (mean_a - mean_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt
    return max(float(distance), 0.0)


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of ``x`` to its k-th nearest neighbour among the other rows: the (k + 1)-th smallest
    distance of its row of the distance matrix, whose smallest is the point's own 0 (so duplicates count)."""
    radii = [torch.cdist(chunk, x).topk(k + 1, dim=1, largest=False).values[:, k] for chunk in x.split(DISTANCE_CHUNK)]
    return torch.cat(radii)


def _inside_any_ball(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Per row of ``points``: whether ‖p − cⱼ‖ ≤ rⱼ for at least one centre cⱼ."""
    inside = [(torch.cdist(chunk, centres) <= radii[None, :]).any(1) for chunk in points.split(DISTANCE_CHUNK)]
    return torch.cat(inside)


def precision_recall(real_features, generated_features, k: int = 3) -> dict:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of generated features against real ones.

    Each set S approximates its manifold by the union of balls B(s, r_k(s)) around its points, r_k(s) being the
    distance from s to its k-th nearest neighbour in S \\ {s}. Then, with R the real and G the generated features,

        precision = |{g ∈ G : ∃ r ∈ R, ‖g − r‖ ≤ r_k(r)}| / |G|   (how many generated points look real)
        recall    = |{r ∈ R : ∃ g ∈ G, ‖r − g‖ ≤ r_k(g)}| / |R|   (how much of the real manifold is covered)

    Euclidean distances by ``torch.cdist`` in float64, in blocks of ``DISTANCE_CHUNK`` rows, on
    ``METRIC_THREADS`` torch thread(s) (as ``frechet_distance`` and ``features``). A set compared with
    itself has precision = recall = 1 (each point is in its own ball). Returns ``precision``, ``recall``, ``k``,
    ``n_real`` and ``n_generated``; ValueError for k < 1 or k ≥ the size of either set.
    """
    real = _as_features(real_features, "real_features")
    generated = _as_features(generated_features, "generated_features")
    _same_dimension(real, generated, "real_features", "generated_features")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k >= min(len(real), len(generated)):
        raise ValueError(
            f"k must be smaller than both set sizes (n_real={len(real)}, n_generated={len(generated)}), got {k}"
        )
    with pinned_threads(METRIC_THREADS):
        precision = _inside_any_ball(generated, real, _knn_radii(real, k)).double().mean()
        recall = _inside_any_ball(real, generated, _knn_radii(generated, k)).double().mean()
    return {
        "precision": float(precision),
        "recall": float(recall),
        "k": k,
        "n_real": len(real),
        "n_generated": len(generated),
    }


def generation_metrics(generated_images, real_images, classifier: QualityClassifier | None = None, k: int = 3) -> dict:
    """Distribution metrics of ``generated_images`` against ``real_images`` (each (n, 784) or (n, 28, 28), uint8 or
    float in [0, 1]) in the feature space of ``features`` (the quality classifier's hidden ReLU layer):

      ``fid_classifier``: ``frechet_distance`` of the two feature sets (an MNIST classifier FID; lower is closer;
      biased upwards by O(d / n), so compare at equal set sizes);
      ``precision``, ``recall``, ``k``, ``n_real``, ``n_generated``: ``precision_recall`` with k nearest
      neighbours; ``feature_layer``: the name of the layer. All values are plain Python numbers (JSON-ready).
    """
    clf = _classifier(classifier)
    generated = as_images(generated_images, "generated_images", min_images=2)
    real = as_images(real_images, "real_images", min_images=2)
    feats_generated, feats_real = features(generated, clf), features(real, clf)
    pr = precision_recall(feats_real, feats_generated, k=k)
    return {
        "fid_classifier": frechet_distance(feats_generated, feats_real),
        "precision": pr["precision"],
        "recall": pr["recall"],
        "k": pr["k"],
        "n_real": pr["n_real"],
        "n_generated": pr["n_generated"],
        "feature_layer": FEATURE_LAYER,
    }


def held_out_digits(classes=None) -> torch.Tensor:
    """The classifier's held-out real digits of ``classes`` (default all ten), (n, 784) float32 in [0, 1]: bundled
    digits in no experiment subset and not among the classifier's training digits (``classifier_split``), so that
    no model and no classifier was fitted to them. The real reference set of ``generation_score``."""
    images, labels = load_mnist()
    expected = tuple(range(10)) if classes is None else tuple(int(c) for c in classes)
    held_out = classifier_split(SEED)[1]
    chosen = held_out[np.isin(labels[held_out], expected)]
    return torch.from_numpy(images[chosen].astype(np.float32) / 255.0)


#: What ``generation_score`` adds to ``quality_score``, and how it was made (recorded with the numbers).
GENERATION_METRICS = ("fid_classifier", "precision", "recall")
GENERATION_METRICS_NOTE = (
    f"classifier FID and k-NN precision/recall (k = 3, Kynkäänniemi et al. 2019) in the {FEATURE_LAYER} feature "
    "space, against the quality classifier's held-out real digits of the same classes (no model or classifier was "
    "fitted to them); an MNIST classifier FID, not the Inception FID; biased upwards by O(256 / n), so compare "
    "rows of equal sample sizes only"
)


def generation_score(images, classes=None, classifier: QualityClassifier | None = None) -> dict:
    """``quality_score(images, classes)`` with the distribution metrics of ``generation_metrics`` against
    ``held_out_digits(classes)`` beside it (``fid_classifier``, ``precision``, ``recall``, ``n_real``): how a
    set of generated (or real test) images scores in the notebooks' tables."""
    clf = _classifier(classifier)
    images = as_images(images, "images", min_images=2)
    metrics = generation_metrics(images, held_out_digits(classes), clf)
    return {**quality_score(images, classes, clf), **{k: metrics[k] for k in (*GENERATION_METRICS, "n_real")}}


__all__ = [
    "GENERATION_METRICS",
    "GENERATION_METRICS_NOTE",
    "generation_score",
    "held_out_digits",
    "ClassifierFileError",
    "QualityClassifier",
    "classifier_accuracy",
    "features",
    "frechet_distance",
    "generation_metrics",
    "load_classifier",
    "precision_recall",
    "quality_score",
]
