"""The Ignite trainers run, train only the generator, and keep the classifier frozen (scripts/trainer.py)."""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import pytest
import torch
from monai.handlers import StatsHandler
from monai.networks.nets import DenseNet121

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.losses import MASK_TERMS, SIMADV_TERMS, MaskGeneratorLoss, SimAdvLoss  # noqa: E402
from scripts.networks import GENERATOR_MODES, MaskGeneratorNet, SimAdvGenerator  # noqa: E402
from scripts.checkpoint import freeze  # noqa: E402
from scripts.trainer import MaskGeneratorTrainer, SimAdvTrainer, loss_output_transform, simadv_step  # noqa: E402

TINY = {"channels": (4, 8, 16), "strides": (2, 2)}


def tiny_classifier() -> DenseNet121:
    torch.manual_seed(0)
    return DenseNet121(
        spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4, block_config=(2, 2, 2, 2)
    )


def batches(n: int = 2, with_label: bool = True) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        item = {"image": torch.rand(4, 1, 32, 32, generator=g)}
        if with_label:
            item["label"] = torch.tensor([0, 1, 0, 1])
        out.append(item)
    return out


def assert_frozen_and_unchanged(clf: torch.nn.Module, before: dict) -> None:
    assert not clf.training and not any(m.training for m in clf.modules())
    assert not any(p.requires_grad for p in clf.parameters())
    after = clf.state_dict()  # includes BatchNorm running stats, which train mode would update
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_freeze():
    clf = tiny_classifier()
    assert freeze(clf) is clf
    assert not clf.training and not any(p.requires_grad for p in clf.parameters())


@pytest.mark.parametrize("mode", GENERATOR_MODES)
def test_simadv_trainer_runs_each_mode(mode):
    clf = tiny_classifier()
    clf.train()  # the trainer must put it back in eval mode
    before = copy.deepcopy(clf.state_dict())
    gen = SimAdvGenerator(mode, **TINY)
    gen_before = copy.deepcopy(gen.state_dict())
    trainer = SimAdvTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=batches(2),
        generator=gen,
        classifier=clf,
        optimizer=torch.optim.Adam(gen.parameters(), lr=1e-2),
        loss_function=SimAdvLoss(w_weight=1e-3),
        train_handlers=[StatsHandler(output_transform=loss_output_transform, iteration_log=True, name="t")],
    )
    trainer.run()
    assert trainer.state.iteration == 2
    out = trainer.state.output
    for key in ("image", "label", "y_hat", "similar", "adversarial", "explanation", "logits_s", "logits_a"):
        assert key in out, key
    for key in (*SIMADV_TERMS, "loss"):
        assert out[key].ndim == 0 and torch.isfinite(out[key]) and not out[key].requires_grad, key
    assert out["similar"].shape == out["adversarial"].shape == (4, 1, 32, 32)
    assert out["explanation"].shape == (4, 1, 32, 32) and out["explanation"].min() >= 0
    assert 0 <= out["adversarial"].min() and out["adversarial"].max() <= 1
    assert out["y_hat"].shape == (4,)
    if mode == "naive":
        assert out["loss_s"].item() == 0.0 and torch.equal(out["similar"], out["image"])
    assert_frozen_and_unchanged(clf, before)
    after = gen.state_dict()
    assert any(not torch.equal(gen_before[k], after[k]) for k in gen_before)  # the generator did train
    assert set(loss_output_transform(out)) == {*SIMADV_TERMS, "loss"}


@pytest.mark.parametrize("mode", ["single", "naive"])
def test_trainer_iteration_is_the_one_step(mode):
    """An iteration of SimAdvTrainer is simadv_step (the step the speed benchmark times): from the same weights and
    batches, the trainer and the bare step leave bit-identical generators and outputs."""
    gen = SimAdvGenerator(mode, **TINY)
    clf = tiny_classifier().eval()
    gen_step = copy.deepcopy(gen)
    trainer = SimAdvTrainer("cpu", 1, batches(2), gen, clf, torch.optim.Adam(gen.parameters(), lr=1e-2))  # default loss
    assert isinstance(trainer.loss_function, SimAdvLoss)
    trainer.run()
    optimizer, loss = torch.optim.Adam(gen_step.parameters(), lr=1e-2), SimAdvLoss()
    for batch in batches(2):
        out = simadv_step(batch["image"], gen_step.train(), clf, loss, optimizer)
    assert all(torch.equal(a, b) for a, b in zip(gen.state_dict().values(), gen_step.state_dict().values()))
    for key in ("y_hat", "similar", "adversarial", "explanation", "logits_s", "logits_a", *SIMADV_TERMS, "loss"):
        assert torch.equal(trainer.state.output[key], out[key]), key


def test_simadv_trainer_without_labels_and_amp_on_cpu():
    clf = tiny_classifier()
    gen = SimAdvGenerator("single", **TINY)
    trainer = SimAdvTrainer(
        "cpu", 1, batches(2, with_label=False), gen, clf, torch.optim.SGD(gen.parameters(), lr=1e-3), SimAdvLoss(),
        amp=True,  # autocast is CUDA-only: on CPU it is a no-op and no GradScaler is made
    )
    trainer.run()
    assert trainer.scaler is None
    assert "label" not in trainer.state.output
    assert torch.isfinite(trainer.state.output["loss"])


def test_simadv_trainer_bfloat16_autocast_on_cpu():
    """An explicit bfloat16 dtype turns CPU autocast on (the default explainer config on a CPU); no GradScaler."""
    clf = tiny_classifier()
    before = copy.deepcopy(clf.state_dict())
    gen = SimAdvGenerator("single", **TINY)
    trainer = SimAdvTrainer(
        "cpu", 1, batches(2), gen, clf, torch.optim.Adam(gen.parameters(), lr=1e-3), SimAdvLoss(w_weight=1e-3),
        amp=True, amp_kwargs={"dtype": "bfloat16"},
    )
    trainer.run()
    out = trainer.state.output
    assert trainer.scaler is None
    assert out["logits_a"].dtype == torch.bfloat16  # the classifier ran under autocast
    assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32  # the loss terms are float32
    assert all(p.dtype == torch.float32 for p in gen.parameters())
    assert_frozen_and_unchanged(clf, before)


def test_unknown_amp_dtype_is_a_clear_error():
    from scripts.errors import BundleInputError

    gen = SimAdvGenerator("single", **TINY)
    with pytest.raises(BundleInputError, match=r"amp_kwargs#dtype .*'bfloat61'"):
        SimAdvTrainer("cpu", 1, batches(1), gen, tiny_classifier(), torch.optim.Adam(gen.parameters()), SimAdvLoss(),
                      amp=True, amp_kwargs={"dtype": "bfloat61"})


def test_mask_generator_trainer_runs():
    clf = tiny_classifier()
    before = copy.deepcopy(clf.state_dict())
    net = MaskGeneratorNet(num_classes=2, **TINY)
    net_before = copy.deepcopy(net.state_dict())
    trainer = MaskGeneratorTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=batches(2),
        generator=net,
        classifier=clf,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-2),
        blur_sigma=2.0,
    )
    assert isinstance(trainer.loss_function, MaskGeneratorLoss) and trainer.blur_sigma == 2.0  # the default loss
    trainer.run()
    assert trainer.state.iteration == 2
    out = trainer.state.output
    for key in (*MASK_TERMS, "loss"):
        assert torch.isfinite(out[key]), key
    mask = out["explanation"]
    assert mask.shape == (4, 1, 32, 32) and 0 <= mask.min() and mask.max() <= 1
    assert_frozen_and_unchanged(clf, before)
    assert any(not torch.equal(net_before[k], v) for k, v in net.state_dict().items())


def test_stats_handler_logs_every_term(caplog, capsys):
    clf = tiny_classifier()
    gen = SimAdvGenerator("duo", **TINY)
    handler = StatsHandler(output_transform=loss_output_transform, iteration_log=True, name="simadv_test")
    trainer = SimAdvTrainer("cpu", 1, batches(1), gen, clf, torch.optim.Adam(gen.parameters()), SimAdvLoss(),
                            train_handlers=[handler])
    with caplog.at_level(logging.INFO, logger="simadv_test"):
        trainer.run()
    text = caplog.text + capsys.readouterr().out  # StatsHandler logs to its own stdout stream
    assert all(k in text for k in SIMADV_TERMS)


def test_loss_weight_schedule_is_linear_and_resumable():
    from ignite.engine import Engine

    from scripts.handlers import LossWeightSchedule

    loss = SimAdvLoss(tv_weight=5.0)
    sched = LossWeightSchedule(loss, "tv_weight", start=1.0, end=5.0, num_epochs=5)
    assert [sched.value(e) for e in range(1, 8)] == [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0]
    seen = []
    engine = Engine(lambda e, b: seen.append((e.state.epoch, loss.tv_weight)))
    sched.attach(engine)
    engine.run([0], max_epochs=3)
    assert seen == [(1, 1.0), (2, 2.0), (3, 3.0)]
    engine.state.max_epochs = 5  # a resumed run continues from its epoch number
    engine.run([0], max_epochs=5)
    assert seen[-2:] == [(4, 4.0), (5, 5.0)]
    assert LossWeightSchedule(loss, "tv_weight", 2.0, 7.0, 1).value(1) == 7.0
    with pytest.raises(ValueError, match="no weight"):
        LossWeightSchedule(loss, "tv_wieght", 1.0, 5.0, 3)


@pytest.mark.parametrize("mode", ["single", "naive"])
def test_classifier_view_is_what_the_classifier_scores(mode):
    """``classifier_view`` (train.json): the classifier scores the view of x_s and x_a, not the images; f_c(x) for
    ŷ stays on the image itself."""
    clf = freeze(tiny_classifier())
    gen = SimAdvGenerator(mode, **TINY)
    seen: list[torch.Tensor] = []

    def view(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.detach().clone())
        return t.flip(-1)

    trainer = SimAdvTrainer(device="cpu", max_epochs=1, train_data_loader=batches(1), generator=gen, classifier=clf,
                            optimizer=torch.optim.Adam(gen.parameters(), lr=1e-2), classifier_view=view)
    trainer.run()
    out = trainer.state.output
    assert len(seen) == 1 and seen[0].shape[0] == (4 if mode == "naive" else 8)  # one call on cat([x_s, x_a])
    with torch.no_grad():
        expected = clf(out["adversarial"].flip(-1))
    assert torch.allclose(out["logits_a"], expected, atol=1e-5)


def _targets_run(scores: list[dict], max_epochs: int, tmp_path, **kwargs):
    """A trainer of ``max_epochs`` whose epoch ``e`` 'validates' to ``scores[e - 1]``, with the stopping rule."""
    from ignite.engine import Engine, Events

    from scripts.handlers import ValidationTargets

    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    evaluator.state.key_metric_name = "val_generation"

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine):  # what MONAI's ValidationHandler does: the evaluator runs at the trainer's epoch
        evaluator.state.epoch = engine.state.epoch
        evaluator.state.metrics = dict(scores[engine.state.epoch - 1])

    rule = ValidationTargets(evaluator, {"val_auc_oa": 0.95, "val_auc_os": 0.98}, path=str(tmp_path / "stop.json"),
                             stage="explainer", **kwargs)
    rule.attach(trainer)
    trainer.run([0], max_epochs=max_epochs)
    import json

    return trainer.state.epoch, json.loads((tmp_path / "stop.json").read_text())


def _score(oa: float, os_: float = 0.99) -> dict:
    return {"val_auc_oa": oa, "val_auc_os": os_, "val_generation": (oa + os_) / 2}


def test_stopping_rule_stops_when_the_targets_hold(tmp_path, caplog):
    epochs, out = _targets_run([_score(0.5), _score(0.96, 0.97), _score(0.951), _score(0.99)], 4, tmp_path)
    assert epochs == 3  # epoch 2 misses AUC_os; epoch 3 is the first where both hold
    assert out["stopped"] == "targets" and out["targets_met"] and out["met_at_epoch"] == 3
    assert out["best"]["epoch"] == 3 and out["max_epochs"] == 4


def test_stopping_rule_says_when_the_budget_ran_out(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        epochs, out = _targets_run([_score(0.5), _score(0.8), _score(0.7)], 3, tmp_path)
    assert epochs == 3 and out["stopped"] == "budget" and not out["targets_met"] and out["met_at_epoch"] is None
    assert out["best"]["epoch"] == 2 and out["best"]["metrics"]["val_auc_oa"] == pytest.approx(0.8)
    line = [r.getMessage() for r in caplog.records if "NOT reached" in r.getMessage()]
    assert line and "within the budget of 3 epochs" in line[0] and "val_auc_oa 0.800" in line[0]


def test_stopping_rule_stops_on_a_plateau(tmp_path):
    epochs, out = _targets_run([_score(0.5), _score(0.8), _score(0.7), _score(0.75), _score(0.9)], 5, tmp_path,
                               patience=2)
    assert epochs == 4 and out["stopped"] == "plateau" and not out["targets_met"]  # epochs 3, 4 not better than 2


def test_stopping_rule_rejects_bad_settings():
    from ignite.engine import Engine

    from scripts.errors import BundleInputError
    from scripts.handlers import ValidationTargets

    with pytest.raises(BundleInputError, match="val_auc_oa"):
        ValidationTargets(Engine(lambda e, b: None), {"val_auc_oa": "high"})
    with pytest.raises(BundleInputError, match="patience"):
        ValidationTargets(Engine(lambda e, b: None), {}, patience=-1)
