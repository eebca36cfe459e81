"""Ignite handlers of the bundle that MONAI does not ship: a metrics file writer, image grids, a loss-weight schedule,
the guard that stops a training whose loss or weights stop being finite, and the stopping rule on validation
targets."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from .atomic import atomic_write
from .errors import BundleInputError
from .figures import GridColumn, slice_2d, write_image_grid
from .records import jsonable

__all__ = ["MetricsWriter", "ImageGridWriter", "LossWeightSchedule", "StopOnNonFinite", "ValidationTargets",
           "ProgressLog", "write_json_atomic"]


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write strict JSON to ``path`` atomically (a report is never half-written; NaN/inf are written as ``null``)."""
    data = jsonable(obj)
    atomic_write(path, lambda f: json.dump(data, f, indent=2, allow_nan=False))


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
        if idist.get_rank() > 0:
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
                record[k] = float(v) if math.isfinite(v) else None  # strict JSON: undefined is null
        self.records.append(record)
        key = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        defined = [r for r in self.records if isinstance(r.get(key), float)] if key else []
        best = max(defined, key=lambda r: r[key], default=None)
        write_json_atomic({"history": self.records, "best": best, "key_metric": key}, self.path)


class ImageGridWriter:
    """Write a PNG grid of the first ``num_images`` items each time the engine runs (a fixed validation set).

    Columns: the image with its lesion-mask contour, then ``x_s``, ``x_a`` and the explanation when the engine's
    output has them (keys ``similar``, ``adversarial``, ``explanation``), drawn upright by the bundle's one grid
    writer (:func:`scripts.figures.write_image_grid`). Files: ``<output_dir>/<prefix>_<epoch:03d>.png`` (a MONAI
    evaluator runs at the trainer's epoch). Only rank 0 writes under ``torchrun``.
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
        if not self._items.get("image") or idist.get_rank() > 0:
            return
        titles = {"image": "x + mask", "similar": "x_s", "adversarial": "x_a", "explanation": "|x_s - x_a|"}
        masks = [slice_2d(t[0]) for t in self._items["mask"]] if "mask" in self._items else None
        columns = [
            GridColumn(
                titles[key],
                [slice_2d(t[0]) for t in self._items[key]],
                "map" if key == "explanation" else "image",
                contour=0.8 if key in ("image", "explanation") else 0.0,
            )
            for key in titles
            if key in self._items
        ]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_image_grid(self.output_dir / f"{self.prefix}_{engine.state.epoch:03d}.png", columns, masks, 2.2, 80)


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


def _loss_value(output: Any) -> Any:
    """The total loss in a trainer's ``engine.state.output``: a dict's ``"loss"``, or the first decollated item's."""
    if isinstance(output, (list, tuple)) and output:
        output = output[0]
    if isinstance(output, Mapping):
        return output.get("loss")
    return output


class StopOnNonFinite:
    """Stop a training whose loss (or, at the end of an epoch, a weight of ``network``) is NaN or infinite.

    The trainer raises one :class:`BundleInputError` saying where it happened and what to try (the exception hook
    prints it as one line, exit status 1). Each iteration's loss is checked on its device, without a host read (the
    training step stays free of syncs); the flag is read once per epoch, at ``EPOCH_COMPLETED`` and before the
    epoch's validation, so the checkpoint savers attached to the validation never see the diverged weights: the best
    and the resume checkpoints stay as they were. A NaN from one bad image cannot get here
    (``scripts.data.CheckImaged`` refuses it while reading); this is a diverging optimisation (learning rate, loss
    weights).

    List it first in a trainer's handler list: its ``EPOCH_COMPLETED`` check must run before the validation, and it
    also handles the trainer's ``EXCEPTION_RAISED`` event, re-raising the error there before the handlers after it
    (MONAI's ``StatsHandler``) log a traceback.

    Args:
        stage: the stage's name for the message ("classifier").
        network: the trained network; its parameters are checked at each ``EPOCH_COMPLETED`` (before validation).
    """

    def __init__(self, stage: str = "training", network: torch.nn.Module | None = None) -> None:
        self.stage = stage
        self.network = network
        self._bad: torch.Tensor | None = None  # any non-finite loss this epoch (a device tensor)
        self._first: torch.Tensor | None = None  # the first non-finite loss value this epoch

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_loss)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check_epoch)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.reraise)

    def _stop(self, engine: Engine, what: str) -> None:
        raise BundleInputError(
            f"{self.stage} training stopped: {what} in epoch {engine.state.epoch} (by iteration "
            f"{engine.state.iteration}); the best and resume checkpoints are left as they were. Try a lower "
            "--learning_rate"
        )

    def check_loss(self, engine: Engine) -> None:
        """Fold this iteration's loss into the epoch's flag, on its device (a plain number is checked at once)."""
        loss = _loss_value(engine.state.output)
        if loss is None:
            return
        if not isinstance(loss, torch.Tensor):
            if not math.isfinite(float(loss)):
                self._stop(engine, f"the loss became {float(loss)}")
            return
        loss = loss.detach().float().mean()
        bad = ~torch.isfinite(loss)
        if self._bad is None:
            self._bad, self._first = bad, torch.where(bad, loss, torch.zeros_like(loss))
        else:
            self._first = torch.where(self._bad | ~bad, self._first, loss)
            self._bad = self._bad | bad

    def check_epoch(self, engine: Engine) -> None:
        """One host read of the epoch's loss flag, then one of the weights' (``network``)."""
        bad, first = self._bad, self._first
        self._bad = self._first = None
        if bad is not None and bool(bad):
            self._stop(engine, f"the loss became {float(first)}")
        if self.network is None:
            return
        named = list(self.network.named_parameters())
        finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]) if named else None
        if finite is not None and not bool(finite.all()):
            self._stop(engine, f"weight {named[int((~finite).nonzero()[0])][0]} became non-finite")

    @staticmethod
    def reraise(engine: Engine, e: BaseException) -> None:
        raise e


class ValidationTargets:
    """The stopping rule of a training with validation targets: stop once every target holds at a validation
    (``{"val_auc_oa": 0.95, "val_auc_os": 0.98}``: at least that value), or once the key metric has not improved for
    ``patience`` validations (Ignite's ``EarlyStopping``; ``None``: never), else at the trainer's ``max_epochs`` (the
    budget). At the end it says which, and whether the targets were reached, on one log line (a warning when they
    were not) and in the JSON file ``path``: ``{"stopped": "targets" | "plateau" | "budget", "targets_met", "epochs",
    "max_epochs", "targets", "met_at_epoch", "best": {epoch, metrics}}``.

    Written here because MONAI's ``EarlyStopHandler`` stops on a plateau only and says nothing of why a run ended.
    Attach it to the trainer after its ``ValidationHandler`` (it reads ``evaluator``'s metrics of the epoch that just
    ended; epochs without a validation are skipped). A resumed run starts its patience count again.

    Args:
        evaluator: the validation engine whose metrics hold the target names and ``key_metric_name``.
        targets: metric name -> the least value it must reach.
        patience: validations without improvement of the key metric before stopping; ``None`` or 0: no plateau stop.
        min_delta: the least improvement that counts (Ignite's ``EarlyStopping``).
        path: where to write the outcome (rank 0); ``None``: log only.
        stage: the stage's name for the log line.
    """

    def __init__(self, evaluator: Engine, targets: Mapping[str, float], patience: int | None = None,
                 min_delta: float = 0.0, path: str | None = None, stage: str = "training") -> None:
        for name, value in dict(targets).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise BundleInputError(f"validation target {name!r} must be a number, got {value!r}")
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 0):
            raise BundleInputError(f"validation target patience must be a whole number >= 0 or null, got {patience!r}")
        self.evaluator = evaluator
        self.targets = {str(k): float(v) for k, v in dict(targets).items()}
        self.patience = patience or None
        self.min_delta = float(min_delta)
        self.path = Path(path) if path else None
        self.stage = stage
        self.best: dict[str, Any] | None = None
        self.met_at: int | None = None
        self.stopped = "budget"
        self._plateau: Any = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check)
        engine.add_event_handler(Events.COMPLETED, self.report)

    def _metrics(self) -> dict[str, float]:
        out = {}
        for k, v in self.evaluator.state.metrics.items():
            v = v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[k] = float(v)
        return out

    def check(self, engine: Engine) -> None:
        """After the epoch's validation: stop on the targets, or on the key metric's plateau."""
        if self.evaluator.state.epoch != engine.state.epoch or not self.evaluator.state.metrics:
            return  # no validation this epoch
        metrics = self._metrics()
        key = getattr(self.evaluator.state, "key_metric_name", None)
        if self.best is None or (key in metrics and metrics[key] > self.best["metrics"].get(key, -math.inf)):
            self.best = {"epoch": engine.state.epoch, "metrics": metrics}
        if self.targets and all(metrics.get(k, -math.inf) >= v for k, v in self.targets.items()):
            self.met_at, self.stopped = engine.state.epoch, "targets"
            engine.terminate()
            return
        if self.patience and key in metrics:
            if self._plateau is None:
                from ignite.handlers import EarlyStopping

                self._plateau = EarlyStopping(self.patience, lambda _: self._metrics()[key], engine, self.min_delta)
                self._plateau.logger.setLevel(logging.WARNING)
            self._plateau(self.evaluator)
            if engine.should_terminate:
                self.stopped = "plateau"

    def report(self, engine: Engine) -> None:
        """One line (and the JSON file) saying why the run ended and whether the targets were reached."""
        met = self.met_at is not None
        wanted = ", ".join(f"{k} >= {v:g}" for k, v in self.targets.items())
        best = self.best or {"epoch": None, "metrics": {}}
        scores = ", ".join(f"{k} {best['metrics'].get(k, float('nan')):.3f}" for k in self.targets)
        epochs, budget = engine.state.epoch, engine.state.max_epochs
        if not self.targets:
            logging.getLogger(__name__).info(f"{self.stage}: no validation targets; stopped ({self.stopped}) at epoch "
                                             f"{epochs}")
        elif met:
            logging.getLogger(__name__).info(f"{self.stage}: validation targets {wanted} reached at epoch {epochs}")
        else:
            why = (f"it stopped on a plateau of the validation score at epoch {epochs}" if self.stopped == "plateau"
                   else f"within the budget of {budget} epochs")
            logging.getLogger(__name__).warning(
                f"{self.stage}: validation targets {wanted} NOT reached ({why}; best epoch {best['epoch']}: {scores})"
            )
        if self.path is not None and idist.get_rank() == 0:
            write_json_atomic({"stopped": self.stopped, "targets_met": met, "epochs": epochs, "max_epochs": budget,
                               "targets": self.targets, "met_at_epoch": self.met_at, "best": best}, self.path)


class ProgressLog:
    """Log one progress line at most every ``every_seconds`` while an engine runs (a long, otherwise silent run).

    For engines whose own logs are off or come only at the end (the benchmark's evaluation of a slow method):
    ``"<desc>: iteration i/n of epoch e (t s)"``, at the first iteration that completes ``every_seconds`` after
    the previous line.
    """

    def __init__(self, desc: str, every_seconds: float = 10.0, logger: logging.Logger | None = None) -> None:
        self.desc = desc
        self.every_seconds = float(every_seconds)
        self.logger = logger or logging.getLogger("simadv_explainer.progress")
        self._start = self._last = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def started(self, engine: Engine) -> None:
        self._start = self._last = time.perf_counter()

    def __call__(self, engine: Engine) -> None:
        now = time.perf_counter()
        if now - self._last < self.every_seconds:
            return
        self._last = now
        total = engine.state.epoch_length
        it = (engine.state.iteration - 1) % total + 1 if total else engine.state.iteration
        self.logger.info(f"{self.desc}: iteration {it}/{total or '?'} of epoch {engine.state.epoch} "
                         f"({now - self._start:.0f} s)")
