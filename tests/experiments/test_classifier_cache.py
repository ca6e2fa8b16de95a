"""The augmentation classifiers' cache: a saved classifier is found again only for its own spec, a stale or foreign
file is ignored (retrained), half-precision weights load into float32, and arm_classifier trains once then reuses."""

import torch

from rhvae.experiments import augmentation as aug
from rhvae.experiments.classifier_cache import cached_classifier, classifier_name, read_classifier, save_classifier
from rhvae.experiments.data import Split

SPEC = {"kind": "mlp", "arm": "real", "size": 20, "seed": 0, "training": {"steps": 10}}


def test_a_saved_classifier_is_found_only_for_its_spec(tmp_path):
    net = aug.make_classifier("mlp", seed=3)
    path = save_classifier(tmp_path / classifier_name(SPEC), net.half(), SPEC, {"best_step": 5})
    net, record, found = cached_classifier(SPEC, lambda: aug.make_classifier("mlp"), tmp_path)
    assert found == path and record == {"best_step": 5}
    assert all(t.dtype == torch.float32 for t in net.state_dict().values())
    reference = aug.make_classifier("mlp", seed=3)
    torch.testing.assert_close(net[0].weight, reference[0].weight.half().float())
    other = {**SPEC, "seed": 1}
    assert cached_classifier(other, lambda: aug.make_classifier("mlp"), tmp_path) is None
    path.write_bytes(b"not a torch file")
    assert read_classifier(path, SPEC) is None


def test_arm_classifier_trains_once_then_reuses(tmp_path, metric_data):
    x, y = metric_data.train.x, metric_data.train.y
    val = Split(metric_data.test.x, metric_data.test.y, metric_data.test.indices)
    spec = {**SPEC, "training": {"steps": 60}}
    first_net, first, path = aug.arm_classifier(spec, x, y, val, tmp_path, reuse=True)
    assert first["source"] == "trained" and path.is_file()
    again_net, again, again_path = aug.arm_classifier(spec, x, y, val, tmp_path, reuse=True)
    assert again["source"] == "cache" and again_path == path and again["best_step"] == first["best_step"]
    torch.testing.assert_close(again_net(val.x), first_net(val.x))
    retrained = aug.arm_classifier(spec, x, y, val, tmp_path, reuse=False)[1]
    assert retrained["source"] == "trained"
