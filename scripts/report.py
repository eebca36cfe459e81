"""Report writer of the weak-localization benchmark (method.md §5-§6, Charachon et al., ICPR 2020).

The benchmark runner measures every method (metrics from :mod:`scripts.metrics`) and hands the numbers to
:func:`write_report`, which only formats them:

- ``localization.json``: the measured ``results`` plus the paper's numbers (:data:`PAPER_RESULTS`, read from
  ``scripts/paper_tables.json``), NaN -> null;
- ``localization.md``: the paper's two tables (same rows and columns) with our numbers, a faithfulness table
  (:mod:`scripts.faithfulness`), then the paper's own tables for comparison and a short "How to read this";
- ``iou_vs_percentile.png``, ``pr_curves.png``, ``road_curves.png`` (when some method has ROAD curves) and, when
  given, ``picture_grid.png``.

``results`` (dict insertion order = row order; every float may be NaN)::

    {"device": "cuda:0", "device_name": "NVIDIA H100 ...", "num_images": 120, "percentiles": [80, 85, 90, 95, 98],
     "command": "python -m monai.bundle run ...", "date": "...",
     "road": {"images": 10, "percentages": [10, ..., 90], "noise": 0.01, "target": "decision"},
     "methods": {"Ours": {"plain": R, "tta": R or None}, ..., "Random (reference)": {"plain": R, "tta": None}}}

    R = {"iou": {"80": f, ...}, "iou_curve": [101 floats, IoU at percentile 0..100], "auc_total": f,
         "auc_partial": f, "ap": f, "seconds_per_image": f or None,
         "pr_curve": {"precision": [101 floats], "recall": [101 floats]},
         "pointing_game": f, "relevance_mass": f, "relevance_rank": f, "road": ROAD or None}

    ROAD = {"images": n, "morf": [P floats], "lerf": [P floats], "auc_morf": f, "auc_lerf": f, "gap": f}

Tables and figures are written by hand: MONAI has no report or benchmark-table writer, and ``monai.visualize``
plots single images to TensorBoard, not a method-by-image grid. Figures use matplotlib's Agg canvas on a
``Figure`` object (no pyplot, so no global backend switch and no figure left open). Every file is written to a
temporary file in the output folder and ``os.replace``-d into place, so a reader never sees a half-written report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .errors import BundleInputError
from .figures import GridColumn, new_figure, save_png, slice_2d, write_image_grid
from .faithfulness import ROAD_PERCENTAGES
from .metrics import DEFAULT_PERCENTILES
from .records import jsonable

__all__ = ["ABLATIONS", "PAPER_RESULTS", "REFERENCE_METHODS", "write_report", "markdown_tables", "paper_tables"]

#: rows that are references, not explainers: excluded from bolding, shown last, in italics, drawn in grey.
REFERENCE_METHODS: tuple[str, ...] = ("Random (reference)", "Mask (ceiling)")
#: ablations of a method -> that method. Naive is ours without the similar head (``x_s = x``, the same adversarial
#: trunk): its call runs part of ours' network, so it can only be faster, and the time column does not bold it.
ABLATIONS: dict[str, str] = {"Naive": "Ours"}

#: the paper's chest X-ray numbers (method.md §6) in the schema of ``results`` (no curves, no pooled AP), read from
#: ``paper_tables.json`` beside this module.
PAPER_RESULTS: dict[str, Any] = json.loads(Path(__file__).with_name("paper_tables.json").read_text(encoding="utf-8"))

_NOTE_BOLD = (
    "Cells: no augmentation / with test-time augmentation (one value: no augmented run). **Bold**: the best value "
    "of the column among the explainers, plain values and augmented values compared separately (like with like, "
    "as the paper's two rows per method); ties at the printed precision are all bold. Rows in *italics* are "
    "references, not explainers, and are not compared."
)


# --------------------------------------------------------------------------------------------- formatting
def _num(v: Any) -> float:
    """A float, NaN for missing / non-numeric values."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _fmt3(v: float) -> str:
    """Metric value with 3 decimals; '–' when missing."""
    if not math.isfinite(v):
        return "–"
    text = f"{v:.3f}"
    return "0.000" if text == "-0.000" else text  # no negative zero (a ROAD gap of -0.0001)


def _fmt_time(v: float) -> str:
    """Seconds with 3 significant digits and no exponent (0.0512, 1.23, 17.1, 1234); '–' when missing."""
    if not math.isfinite(v):
        return "–"
    if v == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(abs(v))))
    return f"{round(v, decimals):.{decimals}f}"


def _fmt_time_paper(v: float) -> str:
    """The paper's times are printed with 2 decimals (17.14, 0.09)."""
    return "–" if not math.isfinite(v) else f"{v:.2f}"


def _iou_getter(p: Any) -> Callable[[Mapping], float]:
    def get(r: Mapping) -> float:
        iou = r.get("iou") or {}
        return _num(iou.get(str(p), iou.get(p) if not isinstance(p, str) else None))

    return get


def _key_getter(key: str) -> Callable[[Mapping], float]:
    return lambda r: _num(r.get(key))


def _road_getter(key: str) -> Callable[[Mapping], float]:
    return lambda r: _num((r.get("road") or {}).get(key))


def _pct_label(p: Any) -> str:
    return f"{float(p):g}"


def _is_reference(name: str) -> bool:
    return name in REFERENCE_METHODS or name.endswith(("(reference)", "(ceiling)"))


def _ordered(methods: Mapping[str, Any]) -> list[str]:
    """Explainers in insertion order, then the reference rows."""
    return [n for n in methods if not _is_reference(n)] + [n for n in methods if _is_reference(n)]


# A column: (header, value getter on one record R, formatter, higher_is_better).
_Column = tuple[str, Callable[[Mapping], float], Callable[[float], str], bool]


def _table(
    methods: Mapping[str, Mapping],
    columns: list[_Column],
    bold: bool = True,
    not_compared: Mapping[int, Collection[str]] | None = None,
) -> str:
    """Markdown table, one row per method, cells 'plain / tta'; best explainer value per column and kind in bold.

    ``not_compared``: column index -> methods shown but not competing for that column's bold (the ablations in the
    time column).
    """
    names = _ordered(methods)
    best: dict[tuple[int, str], str] = {}
    excluded = not_compared or {}
    if bold:
        for c, (_, get, fmt, higher) in enumerate(columns):
            for kind in ("plain", "tta"):
                vals = [
                    _num(fmt(get(methods[n][kind])))  # compare at the printed precision
                    for n in names
                    if not _is_reference(n)
                    and n not in excluded.get(c, ())
                    and methods[n].get(kind)
                    and math.isfinite(get(methods[n][kind]))
                ]
                vals = [v for v in vals if math.isfinite(v)]
                if vals:
                    best[(c, kind)] = fmt(max(vals) if higher else min(vals))
    lines = [
        "| method | " + " | ".join(col[0] for col in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for n in names:
        ref = _is_reference(n)
        cells = []
        for c, (_, get, fmt, _) in enumerate(columns):
            parts = []
            for kind in ("plain", "tta"):
                rec = methods[n].get(kind)
                if not rec:
                    continue
                text = fmt(get(rec))
                competes = not ref and n not in excluded.get(c, ())
                if competes and text != "–" and best.get((c, kind)) is not None and _num(text) == _num(best[(c, kind)]):
                    text = f"**{text}**"
                parts.append(text)
            cell = " / ".join(parts) if parts else "–"
            cells.append(f"*{cell}*" if ref else cell)
        label = f"*{n}*" if ref else n
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _check_results(results: Any) -> Mapping[str, Mapping]:
    if not isinstance(results, Mapping) or not isinstance(results.get("methods"), Mapping):
        raise BundleInputError("results must be a dict with a 'methods' dict (method name -> {'plain', 'tta'})")
    for name, m in results["methods"].items():
        if not isinstance(m, Mapping) or not isinstance(m.get("plain"), Mapping):
            raise BundleInputError(f"results['methods'][{name!r}] must be a dict with a 'plain' record")
        if m.get("tta") is not None and not isinstance(m["tta"], Mapping):
            raise BundleInputError(f"results['methods'][{name!r}]['tta'] must be a record dict or None")
    return results["methods"]


def _iou_columns(percentiles: list[Any]) -> list[_Column]:
    return [(_pct_label(p), _iou_getter(p), _fmt3, True) for p in percentiles]


def markdown_tables(results: Mapping[str, Any]) -> str:
    """Our two tables in the paper's layout (method.md §6): IoU at binarization percentile; AUC_Loc and time.

    Cells are 'plain / with augmentation'; the bolding rule is stated under each table. Used by the report and
    by README generation.
    """
    methods = _check_results(results)
    percentiles = list(results.get("percentiles") or DEFAULT_PERCENTILES)
    table1 = _table(methods, _iou_columns(percentiles))
    table2 = _table(
        methods,
        [
            ("Total AUC", _key_getter("auc_total"), _fmt3, True),
            ("Partial AUC", _key_getter("auc_partial"), _fmt3, True),
            ("Pooled AP", _key_getter("ap"), _fmt3, True),
            ("Time (s) per image", _key_getter("seconds_per_image"), _fmt_time, False),
        ],
        not_compared={3: [n for n in ABLATIONS if n in methods]},
    )
    return (
        "**Table 1 — IoU at binarization percentile** (mean over images; keep the pixels at or above the image's "
        "own p-th percentile of the map)\n\n"
        f"{table1}\n\n{_NOTE_BOLD}\n\n"
        "**Table 2 — AUC_Loc and time** (Partial AUC: thresholds at or above the 80th percentile; Pooled AP: "
        "average precision over the pixels of all images; time: lower is better)\n\n"
        f"{table2}\n\n{_NOTE_BOLD}\n"
        + _speed_note(methods)
        + "\n"
        + _faithfulness_table(results)
    )


def _road_images(results: Mapping[str, Any]) -> int:
    """Images ROAD scored: the largest count among the records (the configured subset, or fewer test images)."""
    counts = [
        int(rec["road"].get("images") or 0)
        for m in results["methods"].values()
        for rec in (m.get("plain"), m.get("tta"))
        if rec and isinstance(rec.get("road"), Mapping)
    ]
    return max(counts, default=0)


def _faithfulness_table(results: Mapping[str, Any]) -> str:
    """Table 3: pointing game, relevance mass / rank accuracy (every image) and ROAD (the first images)."""
    methods = results["methods"]
    table = _table(
        methods,
        [
            ("Pointing game", _key_getter("pointing_game"), _fmt3, True),
            ("Relevance mass acc.", _key_getter("relevance_mass"), _fmt3, True),
            ("Relevance rank acc.", _key_getter("relevance_rank"), _fmt3, True),
            ("ROAD AUC MoRF ↓", _road_getter("auc_morf"), _fmt3, False),
            ("ROAD AUC LeRF ↑", _road_getter("auc_lerf"), _fmt3, True),
            ("(LeRF − MoRF) / 2 ↑", _road_getter("gap"), _fmt3, True),
        ],
    )
    n = _road_images(results)
    road = (
        f"ROAD on the first {n} test images (the same for every method)" if n
        else "ROAD not computed (road_images 0, or 3D images: its imputation is 2D only)"
    )
    return (
        "**Table 3 — Faithfulness** (pointing game: share of images whose map maximum lies in the mask; relevance "
        "mass accuracy: share of the map's mass inside the mask; relevance rank accuracy: share of the |mask| "
        "highest-ranked pixels inside it; these three over every image. ROAD (Rong et al. 2022): the classifier's "
        "probability of the explained class after the 10 … 90 % most (MoRF, lower is better) or least (LeRF, higher "
        "is better) relevant pixels are replaced by noisy linear imputation; AUC = the curve's mean level; "
        f"(LeRF − MoRF) / 2 in [−0.5, 0.5], higher is more faithful, 0 for a constant map. {road}.)\n\n"
        f"{table}\n\n{_NOTE_BOLD}\n"
    )


def _speed_note(methods: Mapping[str, Mapping]) -> str:
    """The speed criterion under Table 2: the fastest method among the explainers that are not ablations, and each
    ablation's time beside the method it ablates, with the reason it can only be faster ('' without timings)."""
    def seconds(name: str, kind: str = "plain") -> float:
        return _num(((methods.get(name) or {}).get(kind) or {}).get("seconds_per_image"))

    compared = [n for n in _ordered(methods) if not _is_reference(n) and n not in ABLATIONS]
    timed = [n for n in compared if math.isfinite(seconds(n))]
    if not timed:
        return ""
    fastest = min(timed, key=seconds)
    lines = [
        f"\nSpeed (no augmentation): the fastest method is judged among {', '.join(compared)}: **{fastest}**, "
        f"{_fmt_time(seconds(fastest))} s per image."
    ]
    for ablation, full in ABLATIONS.items():
        if ablation in methods and full in methods:
            lines.append(
                f"{ablation} ({_fmt_time(seconds(ablation))} s) is shown beside {full} "
                f"({_fmt_time(seconds(full))} s) and not compared: it is an ablation of {full}, the same generator "
                "trunk without the similar head (its similar image is the input itself), so each call runs a part "
                f"of {full}'s network and can only be faster."
            )
    return " ".join(lines) + "\n"


def paper_tables() -> str:
    """The paper's two tables (method.md §6, chest X-ray), clearly labelled, without bolding."""
    methods = PAPER_RESULTS["methods"]
    table1 = _table(methods, _iou_columns(PAPER_RESULTS["percentiles"]), bold=False)
    table2 = _table(
        methods,
        [
            ("Total AUC", _key_getter("auc_total"), _fmt3, True),
            ("Partial AUC", _key_getter("auc_partial"), _fmt3, True),
            ("Time (s)", _key_getter("seconds_per_image"), _fmt_time_paper, False),
        ],
        bold=False,
    )
    return (
        "**Paper, chest X-ray — IoU at binarization percentile** (no augmentation / with augmentation)\n\n"
        f"{table1}\n\n"
        "**Paper, chest X-ray — AUC_Loc and time** (no augmentation / with augmentation; no pooled AP in the "
        "paper; the slides do not name the timing device)\n\n"
        f"{table2}\n"
    )


def _timing_note(timing: Mapping[str, Any] | None) -> str:
    """``", the median over ..."`` for the report's timing sentence (empty for results without the record)."""
    if not timing or not timing.get("images"):
        return ""
    note = f", the median over {timing['images']} test images"
    if float(timing.get("min_seconds") or 0) > 0:
        note += f", cycled until {float(timing['min_seconds']):g} s of calls were measured (at least one call each)"
    return note


def _markdown(results: Mapping[str, Any]) -> str:
    device = results.get("device", "?")
    device_name = results.get("device_name")
    lines = ["# Weak-localization benchmark", ""]
    if results.get("date"):
        lines.append(f"- Date: {results['date']}")
    lines += [
        f"- Device: `{device}`" + (f" ({device_name})" if device_name else ""),
        f"- Number of images: {results.get('num_images', '?')} (test images with a lesion mask)",
        "- Command:",
        "",
        "```",
        str(results.get("command", "?")),
        "```",
        "",
        "## Measured",
        "",
        markdown_tables(results),
        "## The paper's numbers (chest X-ray, for comparison; not measured here)",
        "",
        f"Source: {PAPER_RESULTS['source']}.",
        "",
        paper_tables(),
        "## How to read this",
        "",
        "IoU at low percentiles is capped by lesion size: at the 80th percentile the map keeps 20 % of the pixels, "
        "so a lesion covering less than that scores well below 1 even for a perfect map; the *Mask (ceiling)* row "
        "(the ground-truth mask used as the map) shows that cap at each percentile. A method at or below the "
        "*Random (reference)* row (a random map) is not localizing. Seconds per image are warm timings "
        f"(after a warm-up), one image at a time, on the named device (`{device}`"
        + (f", {device_name}" if device_name else "")
        + ")"
        + _timing_note(results.get("timing"))
        + "; the paper's times come from other hardware, so compare the ordering of methods, not the values.",
        "",
        "Tables 1 and 2 and the first three columns of Table 3 measure plausibility (does the map find the lesion); "
        "ROAD measures faithfulness (does the map rank first the pixels the classifier uses): a map can find "
        "lesions the classifier ignores. The random map's ROAD gap is near 0; the mask row's ROAD shows how much "
        "the decision rests on the lesion itself.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- figures
def _styles(methods: Mapping[str, Any]) -> dict[str, str]:
    """A tab10 colour per explainer (insertion order), greys for the reference rows."""
    from matplotlib import colormaps

    tab = colormaps["tab10"]
    greys = ["0.55", "0.25", "0.75", "0.4"]
    colours, i, j = {}, 0, 0
    for n in methods:
        if _is_reference(n):
            colours[n], j = greys[j % len(greys)], j + 1
        else:
            colours[n], i = tab(i % 10), i + 1
    return colours


def _arr(v: Any) -> np.ndarray:
    return np.array([_num(x) for x in (v or [])], dtype=float)


def _iou_plot(results: Mapping[str, Any], path: Path) -> None:
    """IoU against binarization percentile for every method (plain solid, augmented dashed, references grey)."""
    methods = results["methods"]
    colours = _styles(methods)
    fig = new_figure((7.5, 4.5))
    ax = fig.add_subplot()
    for p in results.get("percentiles") or DEFAULT_PERCENTILES:
        ax.axvline(float(p), color="0.7", linestyle=":", linewidth=0.8, zorder=0)
    for n in _ordered(methods):
        for kind, style in (("plain", "-"), ("tta", "--")):
            rec = methods[n].get(kind)
            curve = _arr(rec.get("iou_curve")) if rec else np.array([])
            if curve.size == 0:
                continue
            x = np.linspace(0.0, 100.0, curve.size)
            label = n if kind == "plain" else f"{n} + aug"
            ax.plot(x, curve, linestyle=style, color=colours[n], linewidth=1.4, label=label)
    ax.set_xlim(0, 100)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("binarization percentile p (keep pixels ≥ the image's p-th percentile)")
    ax.set_ylabel("mean IoU")
    ax.set_title(f"IoU vs percentile ({results.get('num_images', '?')} images)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    save_png(fig, path)


def _pr_plot(results: Mapping[str, Any], path: Path) -> None:
    """Pixel precision against recall (per-image curves averaged over images), plain solid, augmented dashed."""
    methods = results["methods"]
    colours = _styles(methods)
    fig = new_figure((6.5, 5.0))
    ax = fig.add_subplot()
    for n in _ordered(methods):
        for kind, style in (("plain", "-"), ("tta", "--")):
            rec = methods[n].get(kind)
            pr = (rec or {}).get("pr_curve") or {}
            precision, recall = _arr(pr.get("precision")), _arr(pr.get("recall"))
            if precision.size == 0 or precision.size != recall.size:
                continue
            label = n if kind == "plain" else f"{n} + aug"
            ax.plot(recall, precision, linestyle=style, color=colours[n], linewidth=1.4, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("pixel recall")
    ax.set_ylabel("pixel precision")
    ax.set_title("Precision-recall (thresholds at percentiles 100 → 0, mean over images)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    save_png(fig, path)


def _has_road(results: Mapping[str, Any]) -> bool:
    return any((m.get("plain") or {}).get("road") for m in results["methods"].values())


def _road_plot(results: Mapping[str, Any], path: Path) -> None:
    """ROAD curves, no augmentation: the explained class' probability against the share of pixels removed, most
    relevant first (MoRF, left) and least relevant first (LeRF, right); references grey."""
    methods = results["methods"]
    colours = _styles(methods)
    pct = np.array([_num(p) for p in (results.get("road") or {}).get("percentages") or ROAD_PERCENTAGES])
    fig = new_figure((11.0, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, title in ((axes[0], "morf", "MoRF (most relevant removed first; lower = more faithful)"),
                           (axes[1], "lerf", "LeRF (least relevant removed first; higher = more faithful)")):
        for n in _ordered(methods):
            curve = _arr(((methods[n].get("plain") or {}).get("road") or {}).get(key))
            if curve.size == 0 or curve.size != pct.size:
                continue
            style = ":" if _is_reference(n) else "-"
            ax.plot(pct, curve, linestyle=style, marker="o", markersize=3, color=colours[n], linewidth=1.4, label=n)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("pixels removed (%), noisy linear imputation")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probability of the explained class")
    fig.suptitle(f"ROAD curves (first {_road_images(results)} test images, no augmentation)")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    save_png(fig, path)


def _as_stack(value: Any, field: str) -> np.ndarray:
    """(N, W, H) float array (x-first slices) from a tensor / array of shape (N, W, H) or (N, 1, W, H); 3D: the
    middle slice (:func:`scripts.figures.slice_2d`)."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as e:
        raise BundleInputError(f"{field} must be a numeric array of shape (N, W, H), got {type(value)}") from e
    if arr.ndim >= 3 and arr.shape[0] > 0:
        arr = np.stack([slice_2d(a) for a in arr])
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise BundleInputError(f"{field} must have shape (N, W, H) with N >= 1, got {arr.shape}")
    return arr


def _picture_grid(grid: Mapping[str, Any], path: Path) -> None:
    """Rows = images; columns = image with mask contour, then each method's map (min-max per image, inferno), all
    upright (:mod:`scripts.figures`)."""
    if not isinstance(grid, Mapping) or not {"images", "masks", "maps"} <= set(grid):
        raise BundleInputError("grid must be a dict with 'images', 'masks' and 'maps' (method name -> maps)")
    images = _as_stack(grid["images"], "grid['images']")
    masks = _as_stack(grid["masks"], "grid['masks']") > 0.5
    if masks.shape != images.shape:
        raise BundleInputError(f"grid['masks'] shape {masks.shape} does not match grid['images'] {images.shape}")
    if not isinstance(grid["maps"], Mapping):
        raise BundleInputError("grid['maps'] must be a dict: method name -> (N, W, H) maps")
    columns = [GridColumn("image + mask", list(images), "image", contour=1.0)]
    for name, m in grid["maps"].items():
        maps = _as_stack(m, f"grid['maps'][{name!r}]")
        if maps.shape != images.shape:
            raise BundleInputError(
                f"grid['maps'][{name!r}] shape {maps.shape} does not match grid['images'] {images.shape}"
            )
        columns.append(GridColumn(str(name), list(maps), "map", contour=0.5))
    write_image_grid(path, columns, list(masks))


# --------------------------------------------------------------------------------------------------- entry
def write_report(results: dict, output_dir: str, grid: dict | None = None) -> dict[str, str]:
    """Write the benchmark report (method.md §5-§6) into ``output_dir``; return the path of every file written.

    Keys of the returned dict: ``json``, ``markdown``, ``iou_plot``, ``pr_plot``, ``road_plot`` (when some method
    has ROAD curves) and ``grid`` (when ``grid`` is
    given: ``{"images": (N, W, H) in [0, 1], "masks": (N, W, H) binary, "maps": {method: (N, W, H)}}``, x-first
    arrays as the bundle loads them, drawn upright).
    """
    _check_results(results)
    out = Path(output_dir)
    paths = {
        "json": out / "localization.json",
        "markdown": out / "localization.md",
        "iou_plot": out / "iou_vs_percentile.png",
        "pr_plot": out / "pr_curves.png",
    }
    payload = jsonable({**results, "paper": PAPER_RESULTS})
    atomic_write(paths["json"], lambda f: json.dump(payload, f, indent=2, allow_nan=False))
    text = _markdown(results)
    atomic_write(paths["markdown"], lambda f: f.write(text))
    _iou_plot(results, paths["iou_plot"])
    _pr_plot(results, paths["pr_plot"])
    if _has_road(results):
        paths["road_plot"] = out / "road_curves.png"
        _road_plot(results, paths["road_plot"])
    if grid is not None:
        paths["grid"] = out / "picture_grid.png"
        _picture_grid(grid, paths["grid"])
    return {k: str(v) for k, v in paths.items()}
