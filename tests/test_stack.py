"""Models trained side by side as one stack (``VAE.stack``, ``train_group``) match separate runs to rounding."""

import pytest
import torch

from rhvae.experiments.model_cache import RHVAE_CONFIG, build_model, train_experiment_models
from rhvae.models import RHVAE, VAE
from rhvae.training import TrainingDiverged, train, train_group

SETTINGS = {"vae": {}, "hvae": {"n_lf": 3}, "rhvae": dict(RHVAE_CONFIG, n_lf=3)}


def _max_difference(a, b) -> float:
    return max(
        float((p - q).abs().max()) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("name", list(SETTINGS))
def test_stack_matches_separate_runs(name, metric_data):
    """Each member of a group (different seeds, and different data per member) ends where a separate run of the
    same seed ends: losses, step sizes, weights and the frozen metric agree to float32 rounding."""
    seeds = [0, 1, 2]
    g = torch.Generator().manual_seed(0)
    # member 2 trains on another sample of the digits: the members of a stack need not share their data
    x_trains = [metric_data.train.x, metric_data.train.x, metric_data.train.x[torch.randperm(120, generator=g)[:100]]]
    x_trains[:2] = [x[:100] for x in x_trains[:2]]
    separate = [build_model(name, seed=s, **SETTINGS[name]) for s in seeds]
    stacked = [build_model(name, seed=s, **SETTINGS[name]) for s in seeds]
    expected = [
        train(m, x, metric_data.test.x, epochs=3, seed=s, batch_size=64, progress=False)
        for m, x, s in zip(separate, x_trains, seeds, strict=True)
    ]
    got = train_group(stacked, x_trains, [metric_data.test.x] * 3, seeds, epochs=3, batch_size=64, progress=False)
    for a, b, m_sep, m_stack in zip(expected, got, separate, stacked, strict=True):
        assert b.status == "finished" and b.settings["trained_in_stack"]["members"] == 3
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-5)
        assert b.test_loss == pytest.approx(a.test_loss, rel=1e-5)
        assert [r.step_size for r in b.epochs] == pytest.approx([r.step_size for r in a.epochs], rel=1e-4)
        assert _max_difference(m_sep, m_stack) < 1e-4
        assert type(m_stack) is type(m_sep) and m_stack.members is None and not m_stack.training
    assert got[0].train_loss != got[1].train_loss  # the members are different runs
    if name == "rhvae":
        assert stacked[2].centroids.shape == (100, 2)
        assert torch.allclose(stacked[2].M, separate[2].M, rtol=1e-3, atol=1e-6)


def test_stack_forward_is_the_members_forward(metric_data):
    """One stacked forward (float64, the same draws) gives each member's own objective and gradients."""
    models = [build_model("rhvae", seed=s, **RHVAE_CONFIG).double().train() for s in (0, 1)]
    stack = VAE.stack(models)
    x = metric_data.train.x[:30].double()
    out = stack(torch.cat([x, x.flip(0)]), [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
    out.objective.sum().backward()
    for m, (model, rows, seed) in enumerate(zip(models, (x, x.flip(0)), (5, 6), strict=True)):
        single = model(rows, torch.Generator().manual_seed(seed))
        single.objective.sum().backward()
        assert torch.allclose(out.objective[30 * m : 30 * (m + 1)], single.objective, rtol=1e-10)
        assert out.step_size[m] == pytest.approx(single.step_size, rel=1e-12)
        for (name, p), q in zip(model.named_parameters(), stack.parameters(), strict=True):
            assert torch.allclose(q.grad[m], p.grad, rtol=1e-8, atol=1e-10), name


def test_member_round_trip_and_refusals(metric_data):
    models = [build_model("rhvae", seed=s, n_lf=2) for s in (0, 1)]
    for m in models:
        m.freeze_metric(metric_data.train.x)
    stack = RHVAE.stack(models)
    assert stack.centroids.shape == (2, 120, 2)
    back = stack.unstack()
    for a, b in zip(models, back, strict=True):
        assert _max_difference(a, b) == 0.0
    state = torch.random.get_rng_state()
    stack.member(1)
    assert torch.equal(state, torch.random.get_rng_state())  # taking a member leaves the global RNG alone
    with pytest.raises(ValueError, match="one class and one config"):
        VAE.stack([build_model("rhvae", seed=0), build_model("rhvae", seed=0, temperature=0.8)])
    with pytest.raises(ValueError, match="at least 2"):
        VAE.stack(models[:1])
    with pytest.raises(ValueError, match="multiple of 2 rows"):
        stack(metric_data.train.x[:3])
    with pytest.raises(ValueError, match="one size"):
        train_group(models, [metric_data.train.x, metric_data.train.x[:50]], seeds=[0, 1], epochs=1, progress=False)


def test_a_diverging_member_falls_back_to_separate_runs(metric_data):
    """A group whose member diverges trains every model on its own: the other matches its separate run exactly and
    the diverged one is returned as its TrainingDiverged. Divergence is made by a latent-norm limit between the
    largest codes the two members reach."""
    x = metric_data.train.x
    norms = []
    for seed in (0, 1):
        history = train(build_model("vae", seed=seed), x, epochs=2, seed=seed, progress=False)
        norms.append(max(r.max_latent_norm for r in history.epochs))
    limit = sum(norms) / 2
    models = [build_model("vae", seed=s) for s in (0, 1)]
    results = train_group(models, [x, x], seeds=[0, 1], epochs=2, max_latent_norm=limit, progress=False)
    diverged = [isinstance(r, TrainingDiverged) for r in results]
    assert diverged == [n > limit for n in norms] and sum(diverged) == 1
    kept = diverged.index(False)
    alone = build_model("vae", seed=kept)
    train(alone, x, epochs=2, seed=kept, max_latent_norm=limit, progress=False)
    assert _max_difference(alone, models[kept]) == 0.0


def test_experiment_models_train_side_by_side_and_are_cached(metric_data, tmp_path):
    """train_experiment_models trains the missing seeds as one stack, saves each, and reuses them next time."""
    requests = [(s, metric_data) for s in (0, 1)]
    first = train_experiment_models("metric", "vae", requests, epochs=2, cache_dir=tmp_path, progress=False)
    assert [r.reused for r in first] == [False, False]
    assert all(r.provenance["trained_side_by_side"] == 2 for r in first)
    alone = build_model("vae", seed=1)
    train(alone, metric_data.train.x, metric_data.test.x, epochs=2, seed=1, threads=1, progress=False)
    assert _max_difference(alone, first[1].model) < 1e-5
    again = train_experiment_models("metric", "vae", requests, epochs=2, cache_dir=tmp_path, progress=False)
    assert [r.reused for r in again] == [True, True]


def test_train_group_refuses_the_same_model_object_twice(metric_data):
    model = build_model("vae", seed=0)
    with pytest.raises(ValueError, match="the same model object twice"):
        train_group([model] * 3, [metric_data.train.x] * 3, seeds=[0, 1, 2], epochs=1, progress=False)
