"""Report writer of the weak-localization benchmark (method.md §5-§6, Charachon et al., ICPR 2020).

The benchmark runner measures every method (metrics from :mod:`scripts.metrics`) and hands the numbers to
:func:`write_report`, which only formats them:

- ``localization.json``: the measured ``results`` plus the paper's numbers (:data:`PAPER_RESULTS`), NaN -> null;
- ``localization.md``: the paper's two tables (same rows and columns) with our numbers, then the paper's own
  tables for comparison and a short "How to read this";
- ``iou_vs_percentile.png``, ``pr_curves.png`` and, when given, ``picture_grid.png``.

``results`` (dict insertion order = row order; every float may be NaN)::

    {"device": "cuda:0", "device_name": "NVIDIA H100 ...", "num_images": 120, "percentiles": [80, 85, 90, 95, 98],
     "command": "python -m monai.bundle run ...", "date": "...",
     "methods": {"Ours": {"plain": R, "tta": R or None}, ..., "Random (reference)": {"plain": R, "tta": None}}}

    R = {"iou": {"80": f, ...}, "iou_curve": [101 floats, IoU at percentile 0..100], "auc_total": f,
         "auc_partial": f, "ap": f, "seconds_per_image": f or None,
         "pr_curve": {"precision": [101 floats], "recall": [101 floats]}}

Tables and figures are written by hand: MONAI has no report or benchmark-table writer, and ``monai.visualize``
plots single images to TensorBoard, not a method-by-image grid. Figures use matplotlib's Agg canvas on a
``Figure`` object (no pyplot, so no global backend switch and no figure left open). Every file is written to a
temporary file in the output folder and ``os.replace``-d into place, so a reader never sees a half-written report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .errors import BundleInputError
from .metrics import DEFAULT_PERCENTILES

__all__ = ["PAPER_RESULTS", "REFERENCE_METHODS", "write_report", "markdown_tables", "paper_tables"]

#: rows that are references, not explainers: excluded from bolding, shown last, in italics, drawn in grey.
REFERENCE_METHODS: tuple[str, ...] = ("Random (reference)", "Mask (ceiling)")

_PAPER_SOURCE = (
    "Charachon et al., ICPR 2020, slides 'Experimental Results' (chest X-ray), transcribed in method.md §6; "
    "cells are [no augmentation, with test-time augmentation]; the slides do not name the timing device"
)
# IoU at percentiles 80, 85, 90, 95, 98: (no augmentation, with augmentation or None).
_PAPER_IOU: dict[str, tuple[list[float], list[float] | None]] = {
    "Gradient": ([0.203, 0.199, 0.187, 0.152, 0.097], [0.256, 0.252, 0.236, 0.190, 0.117]),
    "GradCAM": ([0.237, 0.225, 0.195, 0.138, 0.070], [0.271, 0.263, 0.244, 0.190, 0.105]),
    "BBMP": ([0.233, 0.226, 0.204, 0.154, 0.087], None),
    "Mask Generator": ([0.222, 0.219, 0.208, 0.169, 0.103], [0.259, 0.264, 0.259, 0.221, 0.137]),
    "Naive": ([0.177, 0.173, 0.158, 0.118, 0.064], [0.239, 0.230, 0.208, 0.156, 0.087]),
    "Ours": ([0.248, 0.250, 0.232, 0.173, 0.097], [0.292, 0.292, 0.272, 0.206, 0.115]),
}
# (Total AUC, Partial AUC, Time (s)): (no augmentation, with augmentation or None).
_PAPER_AUC_TIME: dict[str, tuple[tuple[float, float, float], tuple[float, float, float] | None]] = {
    "Gradient": ((0.287, 0.189, 2.04), (0.374, 0.274, 2.83)),
    "GradCAM": ((0.326, 0.235, 0.78), (0.397, 0.302, 5.09)),
    "BBMP": ((0.326, 0.229, 17.14), None),
    "Mask Generator": ((0.327, 0.226, 0.09), (0.404, 0.308, 0.68)),
    "Naive": ((0.238, 0.145, 0.10), (0.325, 0.232, 0.75)),
    "Ours": ((0.339, 0.256, 0.05), (0.412, 0.328, 0.63)),
}


def _paper_record(iou: list[float], auc_time: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "iou": {str(p): v for p, v in zip(DEFAULT_PERCENTILES, iou)},
        "auc_total": auc_time[0],
        "auc_partial": auc_time[1],
        "seconds_per_image": auc_time[2],
    }


#: the paper's chest X-ray numbers (method.md §6) in the schema of ``results`` (no curves, no pooled AP).
PAPER_RESULTS: dict[str, Any] = {
    "source": _PAPER_SOURCE,
    "percentiles": list(DEFAULT_PERCENTILES),
    "methods": {
        name: {
            "plain": _paper_record(iou[0], _PAPER_AUC_TIME[name][0]),
            "tta": None if iou[1] is None else _paper_record(iou[1], _PAPER_AUC_TIME[name][1]),  # type: ignore[arg-type]
        }
        for name, iou in _PAPER_IOU.items()
    },
}

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
    return "–" if not math.isfinite(v) else f"{v:.3f}"


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


def _pct_label(p: Any) -> str:
    return f"{float(p):g}"


def _is_reference(name: str) -> bool:
    return name in REFERENCE_METHODS or name.endswith(("(reference)", "(ceiling)"))


def _ordered(methods: Mapping[str, Any]) -> list[str]:
    """Explainers in insertion order, then the reference rows."""
    return [n for n in methods if not _is_reference(n)] + [n for n in methods if _is_reference(n)]


# A column: (header, value getter on one record R, formatter, higher_is_better).
_Column = tuple[str, Callable[[Mapping], float], Callable[[float], str], bool]


def _table(methods: Mapping[str, Mapping], columns: list[_Column], bold: bool = True) -> str:
    """Markdown table, one row per method, cells 'plain / tta'; best explainer value per column and kind in bold."""
    names = _ordered(methods)
    best: dict[tuple[int, str], str] = {}
    if bold:
        for c, (_, get, fmt, higher) in enumerate(columns):
            for kind in ("plain", "tta"):
                vals = [
                    _num(fmt(get(methods[n][kind])))  # compare at the printed precision
                    for n in names
                    if not _is_reference(n) and methods[n].get(kind) and math.isfinite(get(methods[n][kind]))
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
                if not ref and text != "–" and best.get((c, kind)) is not None and _num(text) == _num(best[(c, kind)]):
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
    )
    return (
        "**Table 1 — IoU at binarization percentile** (mean over images; keep the pixels at or above the image's "
        "own p-th percentile of the map)\n\n"
        f"{table1}\n\n{_NOTE_BOLD}\n\n"
        "**Table 2 — AUC_Loc and time** (Partial AUC: thresholds at or above the 80th percentile; Pooled AP: "
        "average precision over the pixels of all images; time: lower is better)\n\n"
        f"{table2}\n\n{_NOTE_BOLD}\n"
    )


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
        f"Source: {_PAPER_SOURCE}.",
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
    ]
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    """Deep copy to plain JSON types; NaN / inf -> None; tensors and arrays -> lists."""
    if hasattr(obj, "detach"):  # torch.Tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


# ------------------------------------------------------------------------------------------------- figures
def _new_figure(figsize: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: Path, dpi: int = 100) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"), binary=True)


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
    fig = _new_figure((7.5, 4.5))
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
    _save_png(fig, path)


def _pr_plot(results: Mapping[str, Any], path: Path) -> None:
    """Pixel precision against recall (per-image curves averaged over images), plain solid, augmented dashed."""
    methods = results["methods"]
    colours = _styles(methods)
    fig = _new_figure((6.5, 5.0))
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
    _save_png(fig, path)


def _as_stack(value: Any, field: str) -> np.ndarray:
    """(N, H, W) float array from a tensor / array of shape (N, H, W) or (N, 1, H, W); 3D: middle slice."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as e:
        raise BundleInputError(f"{field} must be a numeric array of shape (N, H, W), got {type(value)}") from e
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    while arr.ndim > 3:  # volumes: middle slice along the last axis
        arr = arr[..., arr.shape[-1] // 2]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise BundleInputError(f"{field} must have shape (N, H, W) with N >= 1, got {arr.shape}")
    return arr


def _picture_grid(grid: Mapping[str, Any], path: Path) -> None:
    """Rows = images; columns = image with mask contour, then each method's map (min-max per image, inferno)."""
    if not isinstance(grid, Mapping) or not {"images", "masks", "maps"} <= set(grid):
        raise BundleInputError("grid must be a dict with 'images', 'masks' and 'maps' (method name -> maps)")
    images = _as_stack(grid["images"], "grid['images']")
    masks = _as_stack(grid["masks"], "grid['masks']") > 0.5
    if masks.shape != images.shape:
        raise BundleInputError(f"grid['masks'] shape {masks.shape} does not match grid['images'] {images.shape}")
    if not isinstance(grid["maps"], Mapping):
        raise BundleInputError("grid['maps'] must be a dict: method name -> (N, H, W) maps")
    maps = {}
    for name, m in grid["maps"].items():
        maps[name] = _as_stack(m, f"grid['maps'][{name!r}]")
        if maps[name].shape != images.shape:
            raise BundleInputError(
                f"grid['maps'][{name!r}] shape {maps[name].shape} does not match grid['images'] {images.shape}"
            )
    rows, cols = images.shape[0], 1 + len(maps)
    h, w = images.shape[1:]
    cell = 2.0
    fig = _new_figure((cell * cols, cell * rows * h / w + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)

    def contour(ax: Any, mask: np.ndarray, width: float) -> None:
        if mask.any() and not mask.all():  # a constant mask has no contour
            ax.contour(mask.astype(float), levels=[0.5], colors="cyan", linewidths=width)

    for r in range(rows):
        ax = axes[r, 0]
        ax.imshow(images[r], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        contour(ax, masks[r], 1.0)
        for c, (name, m) in enumerate(maps.items(), start=1):
            e = m[r]
            lo, hi = np.nanmin(e), np.nanmax(e)
            e = (e - lo) / (hi - lo) if hi > lo else np.zeros_like(e)
            ax = axes[r, c]
            ax.imshow(e, cmap="inferno", vmin=0.0, vmax=1.0, interpolation="nearest")
            contour(ax, masks[r], 0.5)
        for c in range(cols):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    for c, title in enumerate(["image + mask", *maps]):
        axes[0, c].set_title(title, fontsize=9)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    _save_png(fig, path)


# --------------------------------------------------------------------------------------------------- entry
def write_report(results: dict, output_dir: str, grid: dict | None = None) -> dict[str, str]:
    """Write the benchmark report (method.md §5-§6) into ``output_dir``; return the path of every file written.

    Keys of the returned dict: ``json``, ``markdown``, ``iou_plot``, ``pr_plot`` and ``grid`` (when ``grid`` is
    given: ``{"images": (N, H, W) in [0, 1], "masks": (N, H, W) binary, "maps": {method: (N, H, W)}}``).
    """
    _check_results(results)
    out = Path(output_dir)
    paths = {
        "json": out / "localization.json",
        "markdown": out / "localization.md",
        "iou_plot": out / "iou_vs_percentile.png",
        "pr_plot": out / "pr_curves.png",
    }
    payload = _jsonable({**results, "paper": PAPER_RESULTS})
    atomic_write(paths["json"], lambda f: json.dump(payload, f, indent=2, allow_nan=False))
    text = _markdown(results)
    atomic_write(paths["markdown"], lambda f: f.write(text))
    _iou_plot(results, paths["iou_plot"])
    _pr_plot(results, paths["pr_plot"])
    if grid is not None:
        paths["grid"] = out / "picture_grid.png"
        _picture_grid(grid, paths["grid"])
    return {k: str(v) for k, v in paths.items()}
