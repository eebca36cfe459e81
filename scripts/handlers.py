"""Ignite handlers of the bundle that MONAI does not ship: a metrics file writer (more join it per stage)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from .atomic import atomic_write
from .errors import BundleInputError

__all__ = ["MetricsWriter", "ImageGridWriter", "LossWeightSchedule", "write_json_atomic"]


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON to ``path`` atomically (a report is never half-written)."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class MetricsWriter:
    """Append the engine's metrics to a JSON file at the end of each of its runs (one record per epoch).

    Attach to an evaluator: each validation adds ``{"epoch": epoch, **metrics}``; the file also keeps the
    best record by ``key_metric_name``. Scalars only (tensors with one element become floats). A resumed run
    keeps the records of the epochs before the one it resumes at.
    """

    def __init__(self, path: str, key_metric_name: str | None = None) -> None:
        self.path = Path(path)
        self.key_metric_name = key_metric_name
        self.records: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return
        record: dict[str, Any] = {"epoch": engine.state.epoch}  # a MONAI evaluator runs at the trainer's epoch
        if not self.records and self.path.is_file():  # a resumed run keeps the history of the epochs before it
            try:
                earlier = json.loads(self.path.read_text()).get("history", [])
            except (OSError, ValueError):
                earlier = []
            self.records = [r for r in earlier if isinstance(r, dict) and r.get("epoch", 0) < record["epoch"]]
        for k, v in engine.state.metrics.items():
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, (int, float)):
                record[k] = float(v)
        self.records.append(record)
        key = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        best = max((r for r in self.records if key in r), key=lambda r: r[key], default=None) if key else None
        write_json_atomic({"history": self.records, "best": best, "key_metric": key}, self.path)


class ImageGridWriter:
    """Write a PNG grid of the first ``num_images`` items each time the engine runs (a fixed validation set).

    Columns: the image with its lesion-mask contour, then ``x_s``, ``x_a`` and the explanation when the engine's
    output has them (keys ``similar``, ``adversarial``, ``explanation``). Files:
    ``<output_dir>/<prefix>_<epoch:03d>.png`` (a MONAI evaluator runs at the trainer's epoch).
    """

    def __init__(self, output_dir: str, num_images: int = 6, prefix: str = "epoch"):
        self.output_dir = Path(output_dir)
        self.num_images = num_images
        self.prefix = prefix
        self._items: dict[str, list[torch.Tensor]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self._items.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        have = len(self._items.get("image", []))
        if have >= self.num_images:
            return
        out = engine.state.output
        take = self.num_images - have
        for key in ("image", "mask", "similar", "adversarial", "explanation"):
            if isinstance(out, dict) and key in out:
                self._items.setdefault(key, []).extend(t.detach().float().cpu() for t in out[key][:take])

    def write(self, engine: Engine) -> None:
        if not self._items.get("image") or (
            torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank()
        ):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        columns = [k for k in ("image", "similar", "adversarial", "explanation") if k in self._items]
        rows = len(self._items["image"])
        fig, axes = plt.subplots(rows, len(columns), figsize=(2.2 * len(columns), 2.2 * rows), squeeze=False)
        for r in range(rows):
            for c, key in enumerate(columns):
                ax = axes[r, c]
                img = self._items[key][r][0]
                while img.ndim > 2:  # 3D: middle slice along the last axis
                    img = img[..., img.shape[-1] // 2]
                if key == "explanation":
                    ax.imshow(img.numpy(), cmap="inferno")
                else:
                    ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
                if key in ("image", "explanation") and "mask" in self._items:
                    mask = self._items["mask"][r][0]
                    while mask.ndim > 2:
                        mask = mask[..., mask.shape[-1] // 2]
                    if mask.any():
                        ax.contour(mask.numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title({"image": "x + mask", "similar": "x_s", "adversarial": "x_a", "explanation": "|x_s - x_a|"}[key])
        fig.tight_layout()
        epoch = engine.state.epoch
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{self.prefix}_{epoch:03d}.png"
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80), binary=True)
        plt.close(fig)


class LossWeightSchedule:
    """Move one weight of the loss linearly from ``start`` to ``end`` over the first ``num_epochs`` epochs.

    At every ``EPOCH_STARTED`` of the trainer, ``setattr(loss, name, w)`` with
    ``w = start + (end - start) * min(1, (epoch - 1) / (num_epochs - 1))`` (``end`` from epoch ``num_epochs`` on).
    The weight is a function of the epoch number only, so a resumed run continues the schedule. The value is
    logged once per epoch.

    Used for ``L_reg``'s TV weight of the explainer (configs/train.json ``tv_weight_schedule``): a weak TV first lets
    the adversarial generator learn to flip the decision at all; the stronger TV afterwards makes the change it
    found smooth and local (method.md §2, decision).
    """

    def __init__(self, loss: Any, name: str, start: float, end: float, num_epochs: int) -> None:
        if not hasattr(loss, name):
            raise BundleInputError(f"tv_schedule: the loss {type(loss).__name__} has no weight {name!r} to schedule")
        if int(num_epochs) < 1:
            raise BundleInputError(f"tv_schedule#epochs must be >= 1, got {num_epochs}")
        self.loss = loss
        self.name = name
        self.start = float(start)
        self.end = float(end)
        self.num_epochs = int(num_epochs)

    def value(self, epoch: int) -> float:
        """The weight in (1-based) epoch ``epoch``."""
        if self.num_epochs == 1:
            return self.end
        frac = min(1.0, max(0.0, (epoch - 1) / (self.num_epochs - 1)))
        return self.start + (self.end - self.start) * frac

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        value = self.value(engine.state.epoch)
        setattr(self.loss, self.name, value)
        engine.logger.info(f"{self.name} = {value:.4g} in epoch {engine.state.epoch}")
