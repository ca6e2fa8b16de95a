"""Training on real digits: the loss goes down, runs are deterministic, divergence is caught cleanly."""

import pytest
import torch

import rhvae
from rhvae.experiments.model_cache import build_model, train_experiment_model
from rhvae.training import TrainingDiverged, train, train_group

# small but real: the metric subset, HVAE/RHVAE at settings that train in a few epochs
SETTINGS = {"vae": {}, "hvae": {"n_lf": 3}, "rhvae": {"n_lf": 3, "eps_lf": 0.001}}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_training_loss_decreases_on_real_digits(name, metric_data):
    model = build_model(name, seed=0, **SETTINGS[name])
    history = train(model, metric_data.train.x, metric_data.test.x, epochs=12, progress=False)
    losses = history.train_loss
    assert history.status == "finished" and len(losses) == 12
    assert losses[-1] < losses[0] - 50, losses
    assert history.test_loss[-1] < history.test_loss[0]
    assert all(r.seconds > 0 for r in history.epochs)


@pytest.mark.parametrize("name", ["vae", "rhvae"])
def test_same_seed_gives_identical_history(name, metric_data):
    runs = []
    for _ in range(2):
        model = build_model(name, seed=3, **SETTINGS[name])
        runs.append(train(model, metric_data.train.x, metric_data.test.x, epochs=3, seed=3, progress=False))
    assert runs[0].train_loss == runs[1].train_loss and runs[0].test_loss == runs[1].test_loss
    model = build_model(name, seed=4, **SETTINGS[name])
    other = train(model, metric_data.train.x, metric_data.test.x, epochs=3, seed=4, progress=False)
    assert other.train_loss != runs[0].train_loss


def test_minibatches_work(metric_data):
    model = build_model("hvae", seed=0, n_lf=2)
    history = train(model, metric_data.train.x, epochs=2, batch_size=32, progress=False)
    assert history.test_loss == [None, None] and history.train_loss[1] < history.train_loss[0]


def test_rhvae_freezes_the_metric_of_all_training_points(metric_data):
    model = build_model("rhvae", seed=0, **SETTINGS["rhvae"])
    train(model, metric_data.train.x, epochs=1, batch_size=50, progress=False)
    assert model.centroids.shape == (120, 2) and not model.training


def test_divergence_is_reported_and_the_last_good_state_kept(metric_data):
    model = build_model("rhvae", seed=0, eps_lf=0.1, step_bound="none")  # the paper's plain step diverges
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1: .*eps_lf=0.1.*step_bound=none.*seed=0") as info:
        train(model, metric_data.train.x, epochs=5, progress=False)
    assert info.value.epoch == 1 and info.value.history.status == "diverged at epoch 1"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_exploding_latent_codes_stop_training(metric_data):
    model = build_model("vae", seed=0)
    with pytest.raises(TrainingDiverged, match="max_latent_norm=0.5"):
        train(model, metric_data.train.x, epochs=2, max_latent_norm=0.5, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"epochs": 0}, "epochs must be"), ({"lr": -1.0}, "lr must be"), ({"batch_size": 0}, "batch_size must be")],
)
def test_bad_training_arguments(kwargs, message, metric_data):
    with pytest.raises(ValueError, match=message):
        train(rhvae.VAE(), metric_data.train.x, **{"epochs": 1, **kwargs})


def test_a_warmup_longer_than_the_training_is_refused_naming_both(metric_data):
    with pytest.raises(ValueError) as caught:
        train(rhvae.VAE(), metric_data.train.x, epochs=2, warmup_epochs=3, progress=False)
    message = str(caught.value)
    assert message.startswith("warmup_epochs must be <= epochs") and "warmup_epochs=3 with epochs=2" in message
    assert "\n" not in message


def test_train_group_without_a_model_names_the_parameter(metric_data):
    for seeds in ((0,), ()):
        with pytest.raises(ValueError) as caught:
            train_group([], [], seeds=seeds, epochs=1, progress=False)
        assert str(caught.value) == "models must hold at least one model to train, got none"


def test_cache_reuses_a_trained_model(tmp_path, metric_data):
    kwargs = dict(epochs=2, seed=0, cache_dir=tmp_path, progress=False, data=metric_data, n_lf=2)
    first = train_experiment_model("metric", "hvae", **kwargs)
    second = train_experiment_model("metric", "hvae", **kwargs)
    assert not first.reused and second.reused and first.path == second.path
    assert second.history.train_loss == first.history.train_loss
    x = metric_data.test.x
    torch.testing.assert_close(second.model.reconstruct(x), first.model.reconstruct(x))
    third = train_experiment_model("metric", "hvae", **{**kwargs, "epochs": 3})
    assert not third.reused and third.path != first.path


def test_rhvae_trains_at_the_seed_settings_with_the_bounded_step(metric_data):
    """eps_lf 0.1, n_lf 10, T 1, lambda 0.1: the plain step diverges in epoch 1 (test above); the bounded one trains."""
    model = build_model("rhvae", seed=0, eps_lf=0.1)
    history = train(model, metric_data.train.x, metric_data.test.x, epochs=15, progress=False)
    assert history.status == "finished" and history.train_loss[-1] < history.train_loss[0] - 100
    assert 0 < history.epochs[-1].step_size <= 0.1
    assert max(r.fixed_point_residual for r in history.epochs) < 1.0
