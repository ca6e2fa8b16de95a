"""rhvae.experiments.augmentation: the splits (disjoint, per class, counted), the extra images of every arm, the
classifiers (deterministic, early stopping) and the verdict (refused when meaningless), on real MNIST digits."""

import html
import importlib.util

import numpy as np
import pytest
import torch

from rhvae.experiments import augmentation as aug
from rhvae.experiments.data import DataError, classifier_split, experiment_data
from rhvae.experiments.model_cache import build_model
from rhvae.paths import ROOT
from rhvae.persistence import load_model, save_model
from rhvae.training import train


@pytest.fixture(scope="module")
def test_set():
    return aug.accuracy_split()


@pytest.fixture(scope="module")
def small():
    """The 10-class training set with 10 real digits per class (8 fit, 2 validation)."""
    return experiment_data("augmentation", n_per_class=10)


def test_test_set_is_disjoint_from_every_training_set_and_from_the_quality_classifier(test_set):
    quality_train, _ = classifier_split()
    assert not np.intersect1d(test_set.indices, quality_train).size
    assert len(test_set) + len(quality_train) == 5000
    assert set(test_set.y.tolist()) == set(range(10)) and len(test_set) > 1000
    for size in (20, 50):
        data = experiment_data("augmentation", n_per_class=size)
        drawn = np.concatenate([data.train.indices, data.test.indices])
        assert len(np.unique(drawn)) == len(drawn) == 10 * size
        assert not np.intersect1d(drawn, test_set.indices).size
        assert np.isin(drawn, quality_train).all()
        assert torch.bincount(data.train.y).tolist() == [round(0.8 * size)] * 10  # fit / validation split per class
        assert torch.bincount(data.test.y).tolist() == [size - round(0.8 * size)] * 10


def test_a_class_subset_is_the_class_part_of_the_ten_class_subset():
    whole = experiment_data("augmentation", n_per_class=20)
    for size, c, one in aug.class_subsets([20]):
        assert size == 20 and one.classes == (c,)
        assert one.train.indices.tolist() == whole.train.indices[whole.train.y.numpy() == c].tolist()
        assert one.test.indices.tolist() == whole.test.indices[whole.test.y.numpy() == c].tolist()
        assert (one.train.y == c).all()


def test_the_augmentation_subset_needs_the_bundled_digits():
    with pytest.raises(DataError, match="source='bundled'"):
        experiment_data("augmentation", n_per_class=10, source="torchvision")


def test_classic_augmentation_counts_labels_and_determinism(small):
    x, y = aug.classic_augmentation(small.train.x, small.train.y, 25, seed=3)
    assert x.shape == (250, 784) and torch.bincount(y).tolist() == [25] * 10
    assert x.min() >= 0 and x.max() <= 1
    again, _ = aug.classic_augmentation(small.train.x, small.train.y, 25, seed=3)
    other, _ = aug.classic_augmentation(small.train.x, small.train.y, 25, seed=4)
    assert torch.equal(x, again) and not torch.equal(x, other)
    # a small rotation/shift keeps the ink: every copy's total intensity is near that of some real image of its class
    for c in range(10):
        real_ink = small.train.x[small.train.y == c].sum(1)
        copy_ink = x[y == c].sum(1)
        nearest = (copy_ink[:, None] - real_ink[None, :]).abs().min(1).values
        assert (nearest / real_ink.mean() < 0.25).all()
    unchanged = sum(any(torch.equal(copy, real) for real in small.train.x) for copy in x)
    assert unchanged < 0.2 * len(x), "most copies are moved (a tiny angle without a shift can leave one as it was)"


@pytest.fixture(scope="module")
def class_models(small):
    """A VAE and an RHVAE for classes 0, 1, 2, two epochs on the class's 8 digits (enough for counts and shapes)."""
    models = {"vae": {}, "rhvae": {}}
    for c in range(3):
        x = small.train.x[small.train.y == c]
        for kind in models:
            net = build_model(kind, seed=c, hidden_dim=16)
            train(net, x, x, epochs=2, seed=c, threads=1, progress=False)
            models[kind][c] = net
    return models


@pytest.mark.parametrize("kind, sampler", [("vae", "prior"), ("rhvae", "hmc"), ("rhvae", "prior")])
def test_generated_images_per_class(class_models, kind, sampler):
    x, y, info = aug.generated_images(class_models[kind], sampler, 7, mcmc_steps=3, seed=0)
    assert x.shape == (21, 784) and torch.bincount(y).tolist() == [7] * 3
    assert x.min() >= 0 and x.max() <= 1
    assert info["sampler"] == ("riemannian_hmc" if sampler == "hmc" else "prior")
    if sampler == "hmc":
        assert set(info["acceptance_rate_per_class"]) == {0, 1, 2}
    again, _, _ = aug.generated_images(class_models[kind], sampler, 7, mcmc_steps=3, seed=0)
    assert torch.equal(x, again)
    with pytest.raises(ValueError, match="sampler must be"):
        aug.generated_images(class_models[kind], "mcmc", 7, mcmc_steps=3)


def test_arm_training_sets_add_the_extra_images(small):
    extra = {arm: (torch.rand(30, 784), torch.arange(10).repeat(3)) for arm in ("classic", "vae", "rhvae")}
    assert aug.arms_available(extra) == ["real", "classic", "vae", "rhvae", "rhvae_only"]
    x, y = aug.arm_training_set("real", small.train, extra)
    assert torch.equal(x, small.train.x)
    x, y = aug.arm_training_set("vae", small.train, extra)
    assert len(x) == len(small.train) + 30 and torch.equal(x[len(small.train) :], extra["vae"][0])
    x, y = aug.arm_training_set("rhvae_only", small.train, extra)
    assert torch.equal(x, extra["rhvae"][0])
    with pytest.raises(ValueError, match="arm must be"):
        aug.arm_training_set("gan", small.train, extra)


@pytest.mark.parametrize("kind", aug.CLASSIFIERS)
def test_classifier_training_is_deterministic_and_learns(small, test_set, kind):
    fit, val = small.train, small.test
    a = aug.train_classifier(kind, fit.x, fit.y, val.x, val.y, steps=120, seed=1)
    b = aug.train_classifier(kind, fit.x, fit.y, val.x, val.y, steps=120, seed=1)
    c = aug.train_classifier(kind, fit.x, fit.y, val.x, val.y, steps=60, seed=2)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert a.val_loss == b.val_loss and a.val_loss[0] != c.val_loss[0]
    assert a.steps_run <= 120 and len(a.val_loss) == 3  # evaluated at steps 50, 100 and the last
    assert a.best_step == aug.EVAL_EVERY * (1 + int(np.argmin(a.val_loss[:2]))) or a.best_step == 120
    assert aug.accuracy(a.model, test_set.x, test_set.y) > 0.3  # 80 real digits: far above chance (0.1)


def test_early_stopping_keeps_the_best_validation_weights(small):
    fit, val = small.train, small.test
    fitted = aug.train_classifier("mlp", fit.x, fit.y, val.x, val.y, steps=5000, seed=0)
    assert fitted.steps_run < 5000, "8 digits per class overfit long before 5,000 steps: training stopped early"
    assert len(fitted.val_loss) - 1 - int(np.argmin(fitted.val_loss)) == aug.PATIENCE
    kept = torch.nn.functional.cross_entropy(fitted.model(val.x), val.y).item()
    assert kept == pytest.approx(min(fitted.val_loss), rel=1e-5)
    for steps in (0, aug.MAX_CLASSIFIER_STEPS + 1, 10**12):  # refused before any step, not after hours
        with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 100000\]"):
            aug.train_classifier("mlp", fit.x, fit.y, val.x, val.y, steps=steps)
    with pytest.raises(ValueError, match="classifier must be"):
        aug.make_classifier("svm")


def test_verdict_checks_and_when_they_are_refused():
    per_seed = {
        0: {"MLP 20/class": {"real": 0.70, "vae": 0.72, "rhvae": 0.75}},
        1: {"MLP 20/class": {"real": 0.71, "vae": 0.74, "rhvae": 0.73}},
    }
    checks = aug.verdict_checks(per_seed, n_generated=500)
    assert list(checks.values()) == [True, True]
    beats_real, beats_vae = checks
    assert "+0.035; 2/2 seeds" in beats_real and "+0.010; 1/2 seeds" in beats_vae
    with pytest.raises(ValueError, match="n_generated must be >= 1"):
        aug.verdict_checks(per_seed, n_generated=0)
    with pytest.raises(ValueError, match="no seed has both"):
        aug.verdict_checks({0: {"MLP 20/class": {"real": 0.7, "rhvae": 0.8}}}, n_generated=500)
    with pytest.raises(ValueError, match="none were measured"):
        aug.verdict_checks({0: {}}, n_generated=500)


def test_half_precision_shipping_loads_into_float32(tmp_path, small):
    spec = importlib.util.spec_from_file_location("publish_run", ROOT / "tools" / "publish_run.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    net = build_model("rhvae", seed=0, hidden_dim=16)
    x = small.train.x[small.train.y == 3]
    history = train(net, x, x, epochs=2, seed=0, threads=1, progress=False)
    source = save_model(net, tmp_path / "full.pt", history, {"spec": {}})
    target = publish.write_half_precision(source, tmp_path / "half.pt")
    assert target.stat().st_size < 0.6 * source.stat().st_size
    again = publish.write_half_precision(source, tmp_path / "again.pt")
    assert again.read_bytes() == target.read_bytes(), "republishing a model gives the same bytes (no git churn)"
    loaded = load_model(target, expected_type="rhvae")
    for name, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        original = net.state_dict()[name]
        if name in publish.FROZEN_METRIC:
            assert torch.equal(value, original)
        else:
            assert torch.equal(value, original.half().float())


def test_augmentation_widget_trains_and_plots(class_models, small, test_set):
    from rhvae.interfaces import widgets as rw

    explorer = rw.AugmentationExplorer(class_models["rhvae"], small.train, small.test, test_set, 3, 0, steps=30)
    explorer.n_generated.value = 0
    assert explorer.on_click(), explorer.error
    explorer.n_generated.value = 50
    assert explorer.on_click(), explorer.error
    assert set(explorer.accuracies) == {0, 50} and all(0 <= a <= 1 for a in explorer.accuracies.values())
    assert explorer.image.value[:4] == b"\x89PNG" and "test accuracy" in explorer.message.value
    for bad in (-5, 10**6):  # refused in the red line, never clamped, and nothing is trained
        explorer.n_generated.value = bad
        assert explorer.on_click() is False and explorer.n_generated.value == bad
        assert "'per class' must be an integer >= 1 and <= 5000" in html.unescape(explorer.message.value)
        assert set(explorer.accuracies) == {0, 50} and not explorer.button.disabled
    with pytest.raises(ValueError, match="needs the trained per-class models"):
        rw.AugmentationExplorer({}, small.train, small.test, test_set)
