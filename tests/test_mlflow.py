"""MLflow tracking (docs/tracking.md): stages run through ``python -m monai.bundle run ... --tracking``, and the runs
read back from the local SQLite store with ``MlflowClient``: parameters, per-epoch metrics, artifacts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import run_bundle, tiny_overrides

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402
from monai.utils import path_to_sqlite_uri  # noqa: E402

TRACKING = "configs/mlflow_tracking.json"
EXPERIMENT = "simadv_explainer"
CLASSIFIER = "['configs/common.json','configs/train_classifier.json']"


def _client(out: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=path_to_sqlite_uri(out / "mlruns.db"))


def _run(client: MlflowClient, name: str, experiment: str = EXPERIMENT):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_name for r in client.search_runs([exp.experiment_id])]
    return runs[0]


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def tracked_training(tiny_data, tmp_path_factory) -> Path:
    """Classifier then explainer, two epochs each, tracked into ``<out>/mlruns.db``."""
    out = tmp_path_factory.mktemp("tracked")
    args = tiny_overrides(tiny_data, out)
    args[args.index("--max_epochs") + 1] = "2"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # a user's server must not catch the test runs
        run_bundle("training", CLASSIFIER, *args, "--tracking", TRACKING)
        run_bundle("training", "configs/train.json", *args, "--tracking", TRACKING)
    return out


def test_classifier_run_has_params_per_epoch_metrics_and_artifacts(tracked_training):
    client = _client(tracked_training)
    run = _run(client, "classifier")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["image_size"] == "[64, 64]" and params["max_epochs"] == "2" and params["batch_size"] == "8"
    assert params["learning_rate"] == "0.001" and params["stage"] == "classifier"
    assert params["classifier_def"].endswith("DenseNet121") and int(params["classifier_def.num_parameters"]) > 0
    rid = run.info.run_id
    assert _steps(client, rid, "train_loss_epoch") == [1, 2]  # mean loss per epoch
    assert _steps(client, rid, "val_auc") == [1, 2] and _steps(client, rid, "val_accuracy") == [1, 2]
    assert len(_steps(client, rid, "train_loss")) == 2 * 3  # per iteration: 24 images / batch 8, two epochs
    best = run.data.tags["best_checkpoint"]
    assert Path(best) == tracked_training / "models" / "classifier.pt" and Path(best).is_file()
    assert "best_val_auc" in run.data.metrics
    files = _artifacts(client, rid)
    assert "classifier_metrics.json" in files
    assert any(f.startswith("config_") and f.endswith(".json") for f in files)  # MONAI's executed config


def test_explainer_run_has_loss_terms_validation_metrics_and_grids(tracked_training):
    client = _client(tracked_training)
    run = _run(client, "explainer_single_w_tv")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["variant"] == "single_w_tv" and params["generator_mode"] == "single"
    assert params["loss_weights.lambda_a"] == "2.0" and params["loss_weights.w_weight"] == "0.01"
    assert params["classifier_path"] == str(tracked_training / "models" / "classifier.pt")
    rid = run.info.run_id
    for key in ("train_loss_epoch", "train_loss_a_epoch", "train_loss_tv_epoch", "val_auc_oa", "val_auc_os",
                "val_ssim_x_xs", "val_iou90"):
        assert _steps(client, rid, key) == [1, 2], key
    best = tracked_training / "models" / "explainer.pt"
    if best.is_file():  # saved when val_generation is defined (or, undefined, as the latest weights)
        assert run.data.tags["best_checkpoint"] == str(best)
    files = _artifacts(client, rid)
    assert "explainer_single_w_tv_metrics.json" in files
    assert {"grids/explainer_single_w_tv/epoch_001.png", "grids/explainer_single_w_tv/epoch_002.png"} <= files


def test_benchmark_run_has_scores_per_method_and_the_report(tiny_data, tiny_bundle, tmp_path):
    args = tiny_overrides(tiny_data, tmp_path)
    args[args.index("--ckpt_dir") + 1] = str(tiny_bundle / "models")  # the session pipeline's checkpoints
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        run_bundle("evaluating", "configs/evaluate.json", *args, "--tracking", TRACKING)
    client = _client(tmp_path)
    run = _run(client, "evaluate")
    assert run.info.status == "FINISHED"
    assert run.data.params["percentiles"] == "[80, 85, 90, 95, 98]"
    assert run.data.params["tta.num_augmentations"] == "2" and "Ours" in run.data.params["methods"]
    metrics = run.data.metrics
    for p in (80, 90, 98):
        assert 0.0 <= metrics[f"Ours/iou_{p}"] <= 1.0 and f"Ours_TTA/iou_{p}" in metrics
    for key in ("Gradient/auc_total", "GradCAM/auc_partial", "BBMP/seconds_per_image", "Mask_Generator/ap",
                "Naive_TTA/seconds_per_image", "Random_reference/iou_90", "Mask_ceiling/iou_90"):
        assert key in metrics, key
    assert "BBMP_TTA/iou_90" not in metrics  # no augmented row for BBMP
    files = _artifacts(client, run.info.run_id)
    assert {"localization.json", "localization.md", "picture_grid.png", "iou_vs_percentile.png"} <= files


# -- in-process units: parameters, the benchmark's metric names, MONAI's plain handler on the benchmark engine ----
def test_flatten_params_nests_with_dots_and_describes_networks():
    from scripts.tracking import flatten_params

    net = torch.nn.Linear(3, 2)
    flat = flatten_params({"loss_weights": {"alpha": 1.0, "tv": 2}, "image_size": [64, 64], "net": net, "v": "x"})
    assert flat == {
        "loss_weights.alpha": "1.0", "loss_weights.tv": "2", "image_size": "[64, 64]",
        "net": "torch.nn.modules.linear.Linear", "net.num_parameters": "8", "v": "x",
    }


def _fake_results() -> dict:
    score = {"iou": {"90": 0.5}, "auc_total": 0.7, "auc_partial": 0.2, "ap": 0.4, "seconds_per_image": 0.01}
    return {"methods": {"Mask Generator": {"plain": score, "tta": dict(score, ap=0.45)},
                        "Random (reference)": {"plain": dict(score, seconds_per_image=None), "tta": None}}}


def test_benchmark_metrics_are_flat_and_valid_mlflow_names():
    from scripts.tracking import benchmark_metrics

    flat = benchmark_metrics(_fake_results())
    assert flat["Mask_Generator/iou_90"] == 0.5 and flat["Mask_Generator_TTA/ap"] == 0.45
    assert flat["Random_reference/auc_total"] == 0.7 and "Random_reference/seconds_per_image" not in flat
    assert len(flat) == 5 + 5 + 4


def test_benchmark_metrics_carry_the_faithfulness_scores():
    from scripts.tracking import benchmark_metrics

    score = {"iou": {"90": 0.5}, "pointing_game": 0.9, "relevance_mass": 0.3, "relevance_rank": float("nan"),
             "road": {"images": 2, "morf": [0.5], "lerf": [0.9], "auc_morf": 0.4, "auc_lerf": 0.8, "gap": 0.2}}
    flat = benchmark_metrics({"methods": {"Ours": {"plain": score, "tta": dict(score, road=None)}}})
    assert flat["Ours/pointing_game"] == 0.9 and flat["Ours/relevance_mass"] == 0.3
    assert "Ours/relevance_rank" not in flat  # undefined: left out
    assert (flat["Ours/road_auc_morf"], flat["Ours/road_auc_lerf"], flat["Ours/road_gap"]) == (0.4, 0.8, 0.2)
    assert "Ours_TTA/road_gap" not in flat and flat["Ours_TTA/pointing_game"] == 0.9


def test_plain_monai_mlflow_handler_records_the_benchmark_engine(tmp_path, monkeypatch):
    """``--tracking mlflow`` (MONAI's defaults) on evaluate.json: its handler sees the scores as epoch metrics."""
    from monai.handlers import MLFlowHandler

    from scripts.benchmark import BenchmarkEngine

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    class FakeBenchmark:
        report_paths: dict = {}

        def run(self):
            (tmp_path / "localization.md").write_text("table")
            self.report_paths = {"markdown": str(tmp_path / "localization.md")}
            return _fake_results()

    uri = path_to_sqlite_uri(tmp_path / "mlruns.db")
    handler = MLFlowHandler(tracking_uri=uri, iteration_log=False, close_on_complete=True, run_name="evaluate")
    engine = BenchmarkEngine(FakeBenchmark(), val_handlers=[handler])
    results = engine.run()
    assert results["methods"]["Mask Generator"]["plain"]["ap"] == 0.4
    assert engine.state.artifacts == [str(tmp_path / "localization.md")]
    run = _run(_client(tmp_path), "evaluate", experiment="monai_experiment")
    assert math.isclose(run.data.metrics["Mask_Generator_TTA/ap"], 0.45)


def test_stage_run_name_is_the_stage_else_a_time_stamp():
    from scripts.tracking import stage_run_name

    assert stage_run_name({"stage": "explainer_naive", "max_epochs": 1}) == "explainer_naive"
    assert stage_run_name({}).startswith("run_") and stage_run_name(None).startswith("run_")
