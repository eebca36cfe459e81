"""Tests of the localization report writer (method.md §5-§6): files, JSON, markdown tables, figures, atomicity."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from scripts.errors import BundleInputError
from scripts.report import PAPER_RESULTS, markdown_tables, write_report

NAN = float("nan")
PCTS = [80, 85, 90, 95, 98]


def record(level: float, seconds: float | None = 0.01) -> dict:
    """A fake result record R whose every score is ``level`` (IoU curve decreasing with the percentile)."""
    curve = [level * (1 - p / 200) for p in range(101)]
    recall = [p / 100 for p in range(101)]
    return {
        "iou": {str(p): level for p in PCTS},
        "iou_curve": curve,
        "auc_total": level,
        "auc_partial": level / 2,
        "ap": level,
        "seconds_per_image": seconds,
        "pr_curve": {"precision": [max(0.0, level - r / 4) for r in recall], "recall": recall},
    }


def fake_results() -> dict:
    ours_plain = record(0.30, seconds=0.0512)
    ours_plain["iou"]["98"] = 0.05  # Naive wins the plain 98 column
    naive_plain = record(0.10, seconds=1234.5)
    naive_plain["iou"]["98"] = 0.20
    gradcam_tta = record(0.25)
    gradcam_tta["iou"]["80"] = NAN
    gradcam_tta["iou_curve"][50] = NAN
    return {
        "device": "cpu",
        "device_name": "Fake CPU (2 cores)",
        "num_images": 7,
        "percentiles": PCTS,
        "command": "python -m monai.bundle run evaluating --config_file configs/evaluate.json",
        "date": "2025-01-01",
        "methods": {
            "GradCAM": {"plain": record(0.20, seconds=0.78), "tta": gradcam_tta},
            "BBMP": {"plain": record(0.15, seconds=17.14), "tta": None},
            "Ours": {"plain": ours_plain, "tta": record(0.35, seconds=0.6)},
            "Random (reference)": {"plain": record(0.90, seconds=None), "tta": None},
            "Naive": {"plain": naive_plain, "tta": record(0.12)},
            "Mask (ceiling)": {"plain": record(0.99, seconds=None), "tta": None},
        },
    }


def table_rows(md: str) -> dict[str, list[str]]:
    """The first table's rows found for each method name -> its cells (first occurrence)."""
    rows: dict[str, list[str]] = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def test_write_report_files_json_and_markdown(tmp_path):
    results = fake_results()
    paths = write_report(results, str(tmp_path))
    assert set(paths) == {"json", "markdown", "iou_plot", "pr_plot"}
    for p in paths.values():
        assert os.path.isfile(p)

    text = open(paths["json"]).read()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["methods"]["GradCAM"]["tta"]["iou"]["80"] is None
    assert data["methods"]["GradCAM"]["tta"]["iou_curve"][50] is None
    assert data["methods"]["BBMP"]["tta"] is None
    assert data["methods"]["Ours"]["plain"]["auc_total"] == pytest.approx(0.30)
    assert data["paper"]["methods"]["Ours"]["tta"]["iou"]["80"] == pytest.approx(0.292)
    assert data["num_images"] == 7 and data["device"] == "cpu"
    assert list(data["methods"]) == list(results["methods"])
    assert math.isnan(results["methods"]["GradCAM"]["tta"]["iou"]["80"])  # input not modified

    md = open(paths["markdown"], encoding="utf-8").read()
    assert results["command"] in md and "Fake CPU (2 cores)" in md and "7" in md
    assert "IoU at binarization percentile" in md and "AUC_Loc and time" in md and "How to read this" in md
    rows = table_rows(md)
    for name in ("GradCAM", "BBMP", "Ours", "Naive", "*Random (reference)*", "*Mask (ceiling)*"):
        assert name in rows, name
    # explainers first in insertion order, references last
    order = [line.split("|")[1].strip() for line in md.split("**Table 1")[1].split("**Table 2")[0].splitlines() if line.startswith("| ")]
    assert order[1:] == ["GradCAM", "BBMP", "Ours", "Naive", "*Random (reference)*", "*Mask (ceiling)*"]
    # TTA methods "plain / tta", BBMP a single value, NaN as a dash
    assert rows["GradCAM"][0] == "0.200 / –"
    assert rows["GradCAM"][1] == "0.200 / 0.250"
    assert rows["BBMP"][0] == "0.150"
    # references in italics and never bold even though their numbers are the highest
    assert rows["*Random (reference)*"][0] == "*0.900*"
    assert not any("**" in cell for cell in rows["*Random (reference)*"] + rows["*Mask (ceiling)*"])
    # the paper's numbers
    assert "0.248 / 0.292" in md and "0.339 / 0.412" in md and "17.14" in md and "0.05 / 0.63" in md
    assert "chest X-ray" in md


def test_bold_best_per_column_plain_and_tta_separately(tmp_path):
    md = markdown_tables(fake_results())
    rows = table_rows(md)
    # column 80: best plain is Ours 0.300, best tta is Ours 0.350
    assert rows["Ours"][0] == "**0.300** / **0.350**"
    assert rows["GradCAM"][0] == "0.200 / –" and rows["Naive"][0] == "0.100 / 0.120"
    # column 98: best plain is Naive 0.200 (crafted), best tta still Ours
    assert rows["Naive"][4] == "**0.200** / 0.120"
    assert rows["Ours"][4] == "0.050 / **0.350**"
    # table 2 columns: Total AUC, Partial AUC, Pooled AP, Time; time lower is better, 3 significant digits
    t2 = table_rows(md.split("**Table 2")[1])
    assert t2["Ours"][3] == "**0.0512** / 0.600"
    assert t2["GradCAM"][3] == "0.780 / **0.0100**"
    assert t2["BBMP"][3] == "17.1"
    assert t2["Naive"][3] == "1234 / 0.0100"  # an ablation of ours: shown, never bold in the time column
    assert t2["*Mask (ceiling)*"][3] == "*–*"
    assert "compared separately" in md


def test_speed_is_judged_without_the_naive_ablation():
    """Naive (ours without the similar head) can only be faster than ours: its time stands beside ours, with the
    reason, and the fastest method is judged among the others."""
    results = fake_results()
    results["methods"]["Naive"]["plain"]["seconds_per_image"] = 0.0301  # faster than everything
    md = markdown_tables(results)
    t2 = table_rows(md.split("**Table 2")[1])
    assert t2["Naive"][3] == "0.0301 / 0.0100" and t2["Ours"][3].startswith("**0.0512**")
    note = md.split("Speed (no augmentation)")[1]
    assert "judged among GradCAM, BBMP, Ours: **Ours**, 0.0512 s per image" in note
    assert "Naive (0.0301 s) is shown beside Ours (0.0512 s)" in note and "can only be faster" in note
    del results["methods"]["Ours"]
    assert "**GradCAM**, 0.780 s" in markdown_tables(results) and "beside" not in markdown_tables(results)
    for row in results["methods"].values():
        for rec in filter(None, row.values()):
            rec["seconds_per_image"] = None
    assert "Speed (no augmentation)" not in markdown_tables(results)


def test_paper_numbers_are_data_beside_the_module():
    """The paper's numbers are read from scripts/paper_tables.json, in the schema of the measured results."""
    from pathlib import Path

    import scripts.report

    data = json.loads(Path(scripts.report.__file__).with_name("paper_tables.json").read_text(encoding="utf-8"))
    assert data == PAPER_RESULTS and data["percentiles"] == PCTS
    assert all(set(r["plain"]) == {"iou", "auc_total", "auc_partial", "seconds_per_image"} for r in data["methods"].values())


def test_figures_are_pngs(tmp_path):
    paths = write_report(fake_results(), str(tmp_path))
    for key in ("iou_plot", "pr_plot"):
        with Image.open(paths[key]) as im:
            assert im.format == "PNG"
            assert im.size[0] > 300 and im.size[1] > 200
            assert np.asarray(im.convert("L")).std() > 5  # not blank


def grid_data(n: int, methods: int, torch_input: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 16, 16, generator=g)
    masks = torch.zeros(n, 16, 16)
    masks[:, 4:9, 5:11] = 1
    maps = {f"method {i}": torch.rand(n, 16, 16, generator=g) for i in range(methods)}
    maps.setdefault("constant", torch.ones(n, 16, 16))  # min-max of a constant map must not divide by zero
    if not torch_input:
        return {"images": images.numpy(), "masks": masks.numpy(), "maps": {k: v.numpy() for k, v in maps.items()}}
    return {"images": images, "masks": masks, "maps": maps}


def test_picture_grid_aspect(tmp_path):
    # 3 images x (2 methods + constant) -> 3 rows x 4 columns: wider than tall
    paths = write_report(fake_results(), str(tmp_path / "a"), grid=grid_data(3, 2))
    with Image.open(paths["grid"]) as im:
        w, h = im.size
    assert 1.0 < w / h < 1.8
    # 6 images x (0 methods + constant), numpy and (N,1,H,W) input -> 6 rows x 2 columns: much taller than wide
    g = grid_data(6, 0, torch_input=False)
    g["images"] = g["images"][:, None]
    paths = write_report(fake_results(), str(tmp_path / "b"), grid=g)
    with Image.open(paths["grid"]) as im:
        w, h = im.size
        assert h / w > 2.2
        assert np.asarray(im.convert("L")).std() > 5


def test_grid_bad_input(tmp_path):
    g = grid_data(2, 1)
    g["maps"]["method 0"] = torch.rand(2, 8, 8)
    with pytest.raises(BundleInputError, match="method 0"):
        write_report(fake_results(), str(tmp_path), grid=g)
    with pytest.raises(BundleInputError, match="methods"):
        write_report({"device": "cpu"}, str(tmp_path))


def test_write_twice_overwrites_and_leaves_no_temp_files(tmp_path):
    results = fake_results()
    write_report(results, str(tmp_path), grid=grid_data(2, 1))
    results["num_images"] = 11
    results["methods"]["Ours"]["plain"]["iou"]["80"] = 0.777
    paths = write_report(results, str(tmp_path), grid=grid_data(2, 1))
    assert json.load(open(paths["json"]))["num_images"] == 11
    assert "**0.777**" in open(paths["markdown"], encoding="utf-8").read()
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["localization.json", "localization.md", "iou_vs_percentile.png", "pr_curves.png", "picture_grid.png"]
    )


def test_paper_constant_matches_method_md():
    m = PAPER_RESULTS["methods"]
    assert list(m) == ["Gradient", "GradCAM", "BBMP", "Mask Generator", "Naive", "Ours"]
    assert m["BBMP"]["tta"] is None and m["BBMP"]["plain"]["seconds_per_image"] == pytest.approx(17.14)
    assert m["Gradient"]["plain"]["iou"]["80"] == pytest.approx(0.203)
    assert m["Mask Generator"]["tta"]["iou"]["98"] == pytest.approx(0.137)
    assert m["Ours"]["plain"]["auc_partial"] == pytest.approx(0.256)


def test_timing_cycles_until_the_minimum_time_and_reports_the_median():
    """Every timing image once, then again in turn until ``timing_min_seconds`` of calls are measured; the median
    of those calls (the warm-up call is not timed). The report names the count and the minimum."""
    import time

    from scripts.report import _timing_note
    from scripts.timing import time_in_turns

    calls: list[float] = []

    def explainer(x: torch.Tensor) -> torch.Tensor:
        calls.append(float(x.flatten()[0]))
        time.sleep(0.002)
        return x

    images = [torch.full((1, 1, 4, 4), float(i)) for i in range(3)]
    assert 0.002 <= time_in_turns({"m": explainer}, images, "cpu", min_seconds=0.0)["m"] < 0.5
    assert calls == [0.0, 0.0, 1.0, 2.0]  # warm-up, then each image once

    calls.clear()
    time_in_turns({"m": explainer}, images, "cpu", min_seconds=0.05)
    assert 3 < len(calls) - 1 <= 0.05 / 0.002 + 3  # past one round, and stopped once 0.05 s were measured
    assert calls[1:7] == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]  # cycled in turn

    assert _timing_note(None) == ""
    assert _timing_note({"images": 10, "min_seconds": 0.0}) == ", the median over 10 test images"
    assert "until 2 s of calls" in _timing_note({"images": 10, "min_seconds": 2.0})


def test_methods_are_timed_in_turns():
    """time_in_turns: after a warm-up call each, the methods take turns call by call on the same image; each stays in
    the rounds until its own calls add up to the minimum time, so the fast one makes more calls."""
    import time

    from scripts.timing import time_in_turns

    log: list[tuple[str, float]] = []

    def method(name: str, pause: float):
        def explain(x: torch.Tensor) -> torch.Tensor:
            log.append((name, float(x.flatten()[0])))
            time.sleep(pause)
            return x
        return explain

    images = [torch.full((1, 1, 4, 4), float(i)) for i in range(2)]
    methods = {("fast", "plain"): method("fast", 0.001), ("slow", "tta"): method("slow", 0.012)}
    seconds = time_in_turns(methods, images, "cpu", min_seconds=0.03)
    assert set(seconds) == {("fast", "plain"), ("slow", "tta")}
    assert seconds[("fast", "plain")] < seconds[("slow", "tta")]
    assert log[:6] == [("fast", 0.0), ("slow", 0.0), ("fast", 0.0), ("slow", 0.0), ("fast", 1.0), ("slow", 1.0)]
    slow_calls = sum(1 for n, _ in log if n == "slow") - 1
    fast_calls = sum(1 for n, _ in log if n == "fast") - 1
    assert slow_calls >= 2 and fast_calls >= slow_calls  # both past one round; the fast one needs more calls


def faithful(pg: float, mass: float, rank: float, road: tuple[float, float, float] | None) -> dict:
    """A result record with the faithfulness scores (ROAD: ``(auc_morf, auc_lerf, gap)`` on 4 images, flat curves)."""
    rec = record(0.1)
    rec.update(pointing_game=pg, relevance_mass=mass, relevance_rank=rank, road=None)
    if road is not None:
        morf, lerf, gap = road
        rec["road"] = {"images": 4, "morf": [morf] * 9, "lerf": [lerf] * 9, "auc_morf": morf, "auc_lerf": lerf,
                       "gap": gap}
    return rec


def faithfulness_results() -> dict:
    return {
        "percentiles": PCTS,
        "road": {"images": 4, "percentages": [10, 20, 30, 40, 50, 60, 70, 80, 90], "noise": 0.01},
        "methods": {
            "Gradient": {"plain": faithful(0.5, 0.2, 0.25, (0.6, 0.7, 0.05)),
                         "tta": faithful(0.6, 0.3, 0.3, (0.5, 0.8, 0.15))},
            "BBMP": {"plain": faithful(0.7, 0.1, 0.2, None), "tta": None},  # no ROAD numbers: dashes
            "Ours": {"plain": faithful(0.7, 0.35, 0.4, (0.4, 0.75, 0.175)),
                     "tta": faithful(0.9, 0.3, NAN, (0.45, 0.8, 0.175))},
            "Random (reference)": {"plain": faithful(0.05, 0.1, 0.1, (0.7, 0.7, 0.0)), "tta": None},
            "Mask (ceiling)": {"plain": faithful(1.0, 0.99, 1.0, (0.2, 0.9, 0.35)), "tta": None},
        },
    }


def test_faithfulness_table_golden(tmp_path):
    md = markdown_tables(faithfulness_results())
    table = md.split("**Table 3 — Faithfulness**")[1]
    assert "ROAD on the first 4 test images (the same for every method)" in table.split("\n\n")[0]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines == [
        "| method | Pointing game | Relevance mass acc. | Relevance rank acc. | ROAD AUC MoRF ↓ | ROAD AUC LeRF ↑ "
        "| (LeRF − MoRF) / 2 ↑ |",
        "|---|---|---|---|---|---|---|",
        "| Gradient | 0.500 / 0.600 | 0.200 / **0.300** | 0.250 / **0.300** | 0.600 / 0.500 | 0.700 / **0.800** "
        "| 0.050 / 0.150 |",
        "| BBMP | **0.700** | 0.100 | 0.200 | – | – | – |",
        "| Ours | **0.700** / **0.900** | **0.350** / **0.300** | **0.400** / – | **0.400** / **0.450** "
        "| **0.750** / **0.800** | **0.175** / **0.175** |",
        "| *Random (reference)* | *0.050* | *0.100* | *0.100* | *0.700* | *0.700* | *0.000* |",
        "| *Mask (ceiling)* | *1.000* | *0.990* | *1.000* | *0.200* | *0.900* | *0.350* |",
    ]
    paths = write_report(faithfulness_results(), str(tmp_path))
    data = json.loads(open(paths["json"]).read())
    assert data["methods"]["BBMP"]["plain"]["road"] is None and data["methods"]["Ours"]["tta"]["relevance_rank"] is None
    assert data["methods"]["Ours"]["plain"]["road"]["lerf"] == [0.75] * 9
    assert Image.open(paths["road_plot"]).size[0] > 400


def test_faithfulness_table_without_road():
    results = faithfulness_results()
    for m in results["methods"].values():
        for rec in (m["plain"], m["tta"]):
            if rec:
                rec["road"] = None
    md = markdown_tables(results)
    assert "ROAD not computed" in md
    assert table_rows(md.split("**Table 3")[1])["Gradient"][3:] == ["– / –", "– / –", "– / –"]
