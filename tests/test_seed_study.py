"""The seed study's summary (scripts/seed_study.py): mean and range of every score over the seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.errors import BundleInputError  # noqa: E402
from scripts.seed_study import _markdown, main, summarize  # noqa: E402


def _report(iou90: float, auc: float, gap: float | None) -> dict:
    row = {"iou": {"90": iou90, "95": iou90 / 2, "98": iou90 / 4}, "auc_total": auc, "ap": auc / 2,
           "pointing_game": 0.5, "relevance_mass": 0.1, "road": None if gap is None else {"gap": gap}}
    return {"methods": {"Ours": {"plain": row, "tta": dict(row, auc_total=auc + 0.1)}, "Gradient": {"plain": row}}}


def test_summary_golden():
    summary = summarize({0: _report(0.2, 0.4, 0.1), 1: _report(0.4, 0.5, None), 2: _report(0.3, 0.6, 0.3)})
    ours = summary["Ours"]["plain"]
    assert ours["IoU@90"] == pytest.approx({"mean": 0.3, "min": 0.2, "max": 0.4, "n": 3})
    assert ours["total AUC"]["mean"] == pytest.approx(0.5)
    assert summary["Ours"]["tta"]["total AUC"] == pytest.approx({"mean": 0.6, "min": 0.5, "max": 0.7, "n": 3})
    # a score missing in one seed is averaged over the seeds that have it, and says so
    assert ours["(LeRF-MoRF)/2"] == pytest.approx({"mean": 0.2, "min": 0.1, "max": 0.3, "n": 2})
    assert "tta" not in summary["Gradient"]
    meta = {"cpu": "cpu", "cores": 2, "date": "2026-12-02", "total_s": 1.0, "command": "python -m scripts.seed_study",
            "classifier": "models/classifier.pt", "stages": "explainer,evaluate"}
    text = _markdown(summary, [0, 1, 2], {0: {"val_auc_oa": 0.9}}, meta)
    assert "| Ours + aug |" in text and "0.600 [0.500, 0.700]" in text and "| 0 | 0.900 |" in text


@pytest.mark.parametrize("args", [["--seeds", "0,a"], ["--seeds", "1,1"], ["--seed", "3"],
                                  ["--classifier_from", "/nonexistent"]])
def test_bad_arguments_are_one_line(tmp_path, args):
    with pytest.raises(BundleInputError):
        main(["--output_dir", str(tmp_path), *args])
