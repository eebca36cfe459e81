"""Atomic checkpoints: best by metric, resume state, safe loading with clear errors."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from scripts.checkpoint import AtomicCheckpointSaver, load_checkpoint, load_network, save_atomic
from scripts.errors import BundleInputError


def test_save_atomic_leaves_no_temp_files(tmp_path):
    save_atomic({"w": torch.ones(2)}, tmp_path / "a.pt")
    save_atomic({"w": torch.zeros(2)}, tmp_path / "a.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["w"], torch.zeros(2))


def test_saver_keeps_best_and_last(tmp_path):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    saver = AtomicCheckpointSaver({"network": net, "optimizer": opt}, best_path=str(tmp_path / "best.pt"),
                                  best_dict={"network": net}, key_metric_name="auc", last_path=str(tmp_path / "last.pt"))
    engine = Engine(lambda e, b: None)
    for epoch, auc in enumerate((0.6, 0.9, 0.7), start=1):
        torch.nn.init.constant_(net.weight, float(epoch))
        engine.state.epoch, engine.state.metrics = epoch, {"auc": auc}
        saver(engine)
    assert torch.all(load_checkpoint(tmp_path / "best.pt")["network"]["weight"] == 2.0)  # epoch of auc 0.9
    last = load_checkpoint(tmp_path / "last.pt")
    assert torch.all(last["network"]["weight"] == 3.0) and float(last["best_metric"]) == pytest.approx(0.9)
    resumed = AtomicCheckpointSaver({"network": net}, best_path=str(tmp_path / "best.pt"), key_metric_name="auc")
    resumed.resume_best(tmp_path / "last.pt")
    engine.state.metrics = {"auc": 0.8}
    resumed(engine)  # worse than the recorded best: the best file is kept
    assert torch.all(load_checkpoint(tmp_path / "best.pt")["network"]["weight"] == 2.0)


def test_missing_corrupt_and_mismatched_checkpoints_are_named(tmp_path):
    with pytest.raises(BundleInputError, match="nothing.pt.*Train it"):
        load_checkpoint(tmp_path / "nothing.pt", "classifier checkpoint", "Train it.")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(BundleInputError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    save_atomic({"network": torch.nn.Linear(3, 1).state_dict()}, tmp_path / "other.pt")
    with pytest.raises(BundleInputError, match="other.pt"):
        load_network(torch.nn.Linear(2, 1), tmp_path / "other.pt", key="network")


def test_undefined_metric_still_leaves_a_checkpoint(tmp_path):
    net = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver({"network": net}, best_path=str(tmp_path / "best.pt"), key_metric_name="auc")
    engine = Engine(lambda e, b: None)
    engine.state.epoch, engine.state.metrics = 1, {"auc": float("nan")}
    saver(engine)
    assert (tmp_path / "best.pt").is_file() and saver.best is None
    torch.nn.init.constant_(net.weight, 5.0)
    engine.state.epoch, engine.state.metrics = 2, {"auc": 0.7}
    saver(engine)
    assert torch.all(load_checkpoint(tmp_path / "best.pt")["network"]["weight"] == 5.0) and saver.best == 0.7


def _tiny_classifier(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))


def test_state_fingerprint_names_the_weights_not_the_object():
    from scripts.checkpoint import state_fingerprint

    a, b = _tiny_classifier(0), _tiny_classifier(0)
    assert state_fingerprint(a) == state_fingerprint(b)  # same weights, another object
    assert len(state_fingerprint(a)) == 64
    assert state_fingerprint(a.to(torch.float64)) != state_fingerprint(b)  # the dtype is part of it
    with torch.no_grad():
        b[0].weight[0, 0, 0, 0] += 1e-6
    assert state_fingerprint(a.to(torch.float32)) != state_fingerprint(b)
    assert state_fingerprint(torch.nn.DataParallel(a)) == state_fingerprint(a)  # a wrapper's .module


def test_an_explainer_trained_against_another_classifier_is_refused(tmp_path, caplog):
    from scripts.checkpoint import CLASSIFIER_FINGERPRINT_KEY, state_fingerprint

    trained, other = _tiny_classifier(0), _tiny_classifier(1)
    net = torch.nn.Linear(2, 2)
    path = tmp_path / "explainer.pt"
    saver = AtomicCheckpointSaver({"generator": net}, best_path=str(path), key_metric_name="m",
                                  extra={CLASSIFIER_FINGERPRINT_KEY: state_fingerprint(trained)})
    engine = Engine(lambda e, b: None)
    engine.state.metrics = {"m": 0.5}
    saver(engine)
    assert load_checkpoint(path)[CLASSIFIER_FINGERPRINT_KEY] == state_fingerprint(trained)
    load_network(torch.nn.Linear(2, 2), path, key="generator", trained_against=trained)  # the same one: fine
    with pytest.raises(BundleInputError) as e:
        load_network(torch.nn.Linear(2, 2), path, key="generator", what="explainer checkpoint",
                     trained_against=other, classifier_path="runs/b/classifier.pt")
    assert str(path) in str(e.value) and "runs/b/classifier.pt" in str(e.value)
    assert "--allow_other_classifier true" in str(e.value)
    with caplog.at_level("WARNING", logger="simadv_explainer.checkpoint"):
        load_network(torch.nn.Linear(2, 2), path, key="generator", trained_against=other, allow_other_classifier=True)
        assert "explaining anyway" in caplog.text
    # a checkpoint that records no classifier (saved before checkpoints recorded one) loads with a warning
    old = tmp_path / "old.pt"
    save_atomic({"generator": net.state_dict()}, old)
    caplog.clear()
    with caplog.at_level("WARNING", logger="simadv_explainer.checkpoint"):
        load_network(torch.nn.Linear(2, 2), old, key="generator", trained_against=other)
        assert "does not record the classifier" in caplog.text


@pytest.mark.parametrize("saved, built", [("deconv", "resize"), ("resize", "deconv")])
def test_a_generator_of_the_other_decoder_names_the_option(tmp_path, saved, built):
    from scripts.networks import SimAdvGenerator

    tiny = {"channels": (4, 8, 16), "strides": (2, 2)}
    path = tmp_path / "explainer.pt"
    save_atomic({"generator": SimAdvGenerator("single", upsample=saved, **tiny).state_dict()}, path)
    with pytest.raises(BundleInputError, match=f"trained with upsample='{saved}'.*add --generator_upsample {saved}"):
        load_network(SimAdvGenerator("single", upsample=built, **tiny), path, key="generator", what="explainer")
    load_network(SimAdvGenerator("single", upsample=saved, **tiny), path, key="generator")
