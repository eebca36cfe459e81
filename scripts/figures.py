"""The bundle's one image-grid writer, with images shown upright, as a viewer shows them.

**Orientation.** The bundle's arrays are x-first: MONAI's ``PILReader`` loads a stored ``(rows, cols)`` pixel matrix
as its transpose, shape ``(W, H)``, and the DICOM reader does the same (``scripts/data/readers.py``), so element
``a[x, y]`` is the pixel in column ``x`` and row ``y``. A figure shows the matrix ``upright(a) = a.T`` (row ``y``
from the top, column ``x`` from the left): the radiograph stands as stored, as in the inference overlays
(``scripts/inference.py``) and in any DICOM or PNG viewer.

Every grid of the bundle goes through :func:`write_image_grid`: the benchmark's picture grid
(``scripts/report.py``) and the training/validation grids (``scripts.handlers.ImageGridWriter``). Figures use
matplotlib's Agg canvas on a ``Figure`` object (no pyplot: no global backend switch, no figure left open) and are
written atomically.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .atomic import atomic_write

__all__ = ["GridColumn", "upright", "slice_2d", "new_figure", "save_png", "grid_figure", "write_image_grid"]


def new_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib ``Figure`` on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write ``fig`` as a PNG at ``path``, atomically, cropped to its content."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"), binary=True)


def upright(a: np.ndarray) -> np.ndarray:
    """The display matrix of an x-first array: ``(W, H, ...)`` -> ``(H, W, ...)`` (the first two axes swapped)."""
    return np.swapaxes(np.asarray(a), 0, 1)


def slice_2d(a: Any) -> np.ndarray:
    """A float ``(W, H)`` array from a channel-first ``(1, *spatial)`` or a spatial image (tensor or array); a
    volume gives its middle slice along the last axis."""
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    a = np.asarray(a, dtype=float)
    if a.ndim >= 3 and a.shape[0] == 1:
        a = a[0]
    while a.ndim > 2:
        a = a[..., a.shape[-1] // 2]
    return a


@dataclasses.dataclass(frozen=True)
class GridColumn:
    """One column of a grid: a title and one x-first 2D array per row.

    Args:
        title: shown above the first row.
        images: one ``(W, H)`` array per row (see :func:`slice_2d`).
        kind: ``"image"`` (grey, values in [0, 1]) or ``"map"`` (min-max scaled per image, inferno).
        contour: line width of the mask contour drawn on this column (0: none).
    """

    title: str
    images: Sequence[np.ndarray]
    kind: str = "image"
    contour: float = 0.0


def _scaled(e: np.ndarray) -> np.ndarray:
    lo, hi = np.nanmin(e), np.nanmax(e)
    return (e - lo) / (hi - lo) if hi > lo else np.zeros_like(e)


def grid_figure(columns: Sequence[GridColumn], masks: Sequence[np.ndarray] | None = None, cell: float = 2.0) -> Any:
    """A matplotlib ``Figure``: one row per image, one column per :class:`GridColumn`, every array upright.

    ``masks`` (one ``(W, H)`` array per row, binarised at 0.5) are drawn as a cyan contour on the columns with a
    ``contour`` width; a constant mask has no contour.
    """
    if not columns or not columns[0].images:
        raise ValueError("an image grid needs at least one column and one row")
    rows = len(columns[0].images)
    h, w = upright(columns[0].images[0]).shape[:2]
    fig = new_figure((cell * len(columns), cell * rows * h / w + 0.4))
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for c, column in enumerate(columns):
        for r in range(rows):
            ax = axes[r, c]
            a = np.asarray(column.images[r], dtype=float)
            if column.kind == "map":
                ax.imshow(upright(_scaled(a)), cmap="inferno", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(upright(a), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            if column.contour and masks is not None:
                mask = np.asarray(masks[r]) > 0.5
                if mask.any() and not mask.all():
                    ax.contour(upright(mask.astype(float)), levels=[0.5], colors="cyan", linewidths=column.contour)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, c].set_title(column.title, fontsize=9)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    return fig


def write_image_grid(
    path: str | os.PathLike,
    columns: Sequence[GridColumn],
    masks: Sequence[np.ndarray] | None = None,
    cell: float = 2.0,
    dpi: int = 100,
) -> None:
    """Write :func:`grid_figure` as a PNG at ``path``, atomically."""
    save_png(grid_figure(columns, masks, cell), path, dpi)
