"""What a run leaves behind: checkpoints under the run's own output folder, strict JSON, no stale temporary files,
and bad input from DataLoader workers reported as the one error."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from conftest import ROOT, TINY_SIZE, bundle_env
from scripts.atomic import atomic_write
from scripts.errors import BundleInputError, find_input_error
from scripts.handlers import MetricsWriter, write_json_atomic


def _hashes(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_own_data_chain_twice_leaves_the_default_models_untouched(tmp_path):
    """README "Your own data": --dataset_dir/--datalist/--output_dir and no --ckpt_dir, on two datasets."""
    from scripts.data.synthetic import make_synthetic_dataset

    before = _hashes(ROOT / "models")
    for name, seed in (("a", 3), ("b", 4)):
        data = tmp_path / f"data_{name}"
        make_synthetic_dataset(data, num_train=12, num_val=4, num_test=4, size=TINY_SIZE, seed=seed)
        out = tmp_path / f"runs_{name}"
        proc = subprocess.run(
            [sys.executable, "-m", "scripts.pipeline", "--stages", "classifier,explainer",
             "--dataset_dir", str(data), "--datalist", str(data / "datalist.json"), "--output_dir", str(out),
             "--image_size", f"[{TINY_SIZE},{TINY_SIZE}]", "--max_epochs", "1", "--batch_size", "8",
             "--num_workers", "0"],
            cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert (out / "models" / "classifier.pt").is_file() and (out / "models" / "explainer.pt").is_file()
    assert _hashes(ROOT / "models") == before


def test_atomic_write_removes_stale_temporaries(tmp_path):
    target = tmp_path / "report.json"
    stale = [tmp_path / ".report.json.abc123.tmp", tmp_path / ".report.json.zz_9.tmp"]
    for p in stale:
        p.write_text("half a report")
    other = tmp_path / ".other.json.abc123.tmp"  # another target's temporary is not ours to remove
    other.write_text("x")
    atomic_write(target, lambda f: f.write("{}"))
    assert target.read_text() == "{}"
    assert not any(p.exists() for p in stale)
    assert other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc123.tmp", "report.json"]


def test_metrics_json_is_strict_with_undefined_values(tmp_path):
    path = tmp_path / "m.json"
    writer = MetricsWriter(str(path), key_metric_name="val_auc")
    engine = Engine(lambda e, b: None)
    for epoch, auc in ((1, float("nan")), (2, 0.75), (3, float("inf"))):
        engine.state.epoch = epoch
        engine.state.metrics = {"val_auc": auc, "loss": torch.tensor(float("nan"))}
        writer(engine)
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert [r["val_auc"] for r in data["history"]] == [None, 0.75, None]
    assert data["best"]["epoch"] == 2
    write_json_atomic({"a": float("nan"), "b": [float("-inf"), 1.0], "c": torch.tensor([0.5, float("nan")])},
                      tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 1.0], "c": [0.5, None]}


def test_bad_input_from_a_dataloader_worker_is_found():
    """The exception a worker's BundleInputError becomes in the main process still yields its one message."""

    class Bad(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            try:
                raise BundleInputError("/data/x.dcm: DICOM has 3 frames;\n  expected one")
            except BundleInputError as e:
                raise RuntimeError("applying transform <LoadRadiographd>") from e

    with pytest.raises(RuntimeError) as info:
        next(iter(torch.utils.data.DataLoader(Bad(), num_workers=1)))
    assert "Traceback" in str(info.value)
    assert str(find_input_error(info.value)) == "/data/x.dcm: DICOM has 3 frames;\n  expected one"

    from scripts.data import DataLoader

    with pytest.raises(BundleInputError) as info:
        next(iter(DataLoader(Bad(), num_workers=1)))
    assert str(info.value) == "/data/x.dcm: DICOM has 3 frames;\n  expected one"


def test_stop_on_non_finite_reads_the_loss_once_per_epoch_and_names_the_first_bad_value():
    """The per-iteration check stays on the device; the epoch's end raises with the first non-finite loss."""
    import pytest
    import torch
    from ignite.engine import Engine, Events

    from scripts.errors import BundleInputError
    from scripts.handlers import StopOnNonFinite

    losses = iter([1.0, float("inf"), float("nan"), 2.0, 1.0, 1.0])
    engine = Engine(lambda e, b: {"loss": torch.tensor(next(losses))})
    StopOnNonFinite("toy", network=torch.nn.Linear(2, 2)).attach(engine)
    seen: list[int] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    with pytest.raises(BundleInputError, match=r"toy training stopped: the loss became inf in epoch 1 \(by iteration 4\)"):
        engine.run([0] * 4, max_epochs=2)
    assert seen == [1, 2, 3, 4]  # the epoch ran to its end: no host read per iteration stopped it early
    ok = Engine(lambda e, b: {"loss": torch.tensor(1.0)})
    StopOnNonFinite("toy").attach(ok)
    ok.run([0] * 3, max_epochs=2)  # finite: no stop
