"""The quality classifier: trained on digits outside every experiment subset, accurate, cached safely."""

import numpy as np
import pytest
import torch

import rhvae
from rhvae.experiments import quality
from rhvae.experiments.data import classifier_split, excluded_indices
from rhvae.experiments.quality import (
    classifier_accuracy,
    load_classifier,
    quality_score,
)

ACCURACY_BOUND = 0.92  # measured: 0.9446 on the 866 held-out digits


@pytest.fixture(scope="module")
def clf():
    return load_classifier()  # the shipped data/quality_classifier.pt (trained in ~2 s if missing or stale)


@pytest.fixture(scope="module")
def held_out():
    images, labels = rhvae.load_mnist()
    _, test_idx = classifier_split()
    return images[test_idx], labels[test_idx]


def test_split_avoids_every_experiment_subset():
    train_idx, test_idx = classifier_split()
    excluded = excluded_indices()
    for name, subset in rhvae.EXPERIMENTS.items():
        data = rhvae.experiment_data(name)
        drawn = np.concatenate([data.train.indices, data.test.indices])
        if subset["pool"] == "all":  # the paper's four experiments: never seen by the classifier
            assert np.isin(drawn, excluded).all()
        else:  # the augmentation experiment draws from the classifier's own training digits
            assert np.isin(drawn, train_idx).all()
    assert not np.intersect1d(train_idx, excluded).size
    assert not np.intersect1d(test_idx, excluded).size
    assert not np.intersect1d(train_idx, test_idx).size
    assert len(train_idx) + len(test_idx) + len(excluded) == 5000
    _, labels = rhvae.load_mnist()
    assert set(np.unique(labels[test_idx])) == set(range(10))


def test_accuracy_on_held_out_digits(clf, held_out):
    images, labels = held_out
    predicted = clf.predict_proba(images).argmax(-1).numpy()
    measured = float((predicted == labels).mean())
    assert measured > ACCURACY_BOUND
    assert classifier_accuracy(clf) == pytest.approx(measured, abs=0.01)  # stored value is the measured one


@pytest.mark.parametrize("digit", [1, 5, 8])
def test_real_digits_of_one_class_score_high_and_concentrated(clf, held_out, digit):
    images, labels = held_out
    score = quality_score(images[labels == digit], classes=[digit], classifier=clf)
    assert score["n"] == int((labels == digit).sum())
    assert score["mean_confidence"] > 0.8
    assert score["in_class_fraction"] > 0.85 and score["coverage"] == 1.0
    assert int(np.argmax(score["counts"])) == digit
    assert score["tv_from_uniform"] < 0.15


def test_noise_scores_lower_and_collapsed_sets_cover_little(clf, held_out):
    images, labels = held_out
    real = quality_score(images[np.isin(labels, [1, 2, 3])], classes=[1, 2, 3], classifier=clf)
    noise = quality_score(torch.rand(300, 784, generator=torch.Generator().manual_seed(0)), [1, 2, 3], clf)
    assert noise["mean_confidence"] < real["mean_confidence"] - 0.05
    assert real["coverage"] == 1.0 and real["normalized_entropy"] > 0.95 and real["tv_from_uniform"] < 0.1
    # a "model" that only makes ones, for a 3-class experiment: a third of the classes, far from uniform
    ones = quality_score(images[labels == 1], classes=[1, 2, 3], classifier=clf)
    assert ones["coverage"] == pytest.approx(1 / 3)
    assert ones["tv_from_uniform"] > 0.6 and ones["normalized_entropy"] < 0.3
    # uint8, float and (n, 28, 28) inputs agree
    a = quality_score(images[:20], classifier=clf)
    b = quality_score(torch.from_numpy(images[:20]).float().reshape(20, 28, 28) / 255.0, classifier=clf)
    assert a["counts"] == b["counts"] and a["mean_confidence"] == pytest.approx(b["mean_confidence"], rel=1e-6)
    with pytest.raises(ValueError):
        quality_score(images[:5], classes=[1, 1], classifier=clf)


def test_cache_is_reused_and_bad_files_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "clf.pt"
    first = load_classifier(path)
    assert first.retrained and path.is_file()
    quality._LOADED.clear()
    trainings = []

    def counting_trainer(seed=0):  # stands in for the real (2 s) training: returns the first result
        trainings.append(seed)
        return first.net, first.accuracy, first.spec, 0.0

    monkeypatch.setattr(quality, "train_quality_classifier", counting_trainer)
    again = load_classifier(path)
    assert not again.retrained and trainings == []
    for name, value in first.net.state_dict().items():
        assert torch.equal(value, again.net.state_dict()[name])
    assert again.accuracy == first.accuracy

    payload = torch.load(path, weights_only=True)

    def refused(write) -> bool:
        quality._LOADED.clear()
        write()
        before = len(trainings)
        clf = load_classifier(path)
        return clf.retrained and len(trainings) == before + 1

    assert refused(lambda: path.write_bytes(b"not a torch file"))  # garbage
    assert refused(lambda: path.write_bytes(path.read_bytes()[:1000]))  # truncated
    assert refused(lambda: torch.save({**payload, "spec": {**payload["spec"], "seed": 7}}, path))  # other spec
    broken = {k: v.clone() for k, v in payload["state_dict"].items()}
    broken["0.weight"] = broken["0.weight"].flip(1)  # loads, but is the wrong network
    assert refused(lambda: torch.save({**payload, "state_dict": broken}, path))
    assert refused(lambda: torch.save({**payload, "format": "something-else"}, path))
    # after each refusal the file was replaced by a good one
    quality._LOADED.clear()
    assert not load_classifier(path).retrained
