"""MLflow experiment tracking of the bundle's stages, through MONAI's own ``--tracking`` (docs/tracking.md).

``python -m monai.bundle run ... --tracking configs/mlflow_tracking.json`` patches the stage config with the
handlers of that settings file (``monai.bundle.ConfigWorkflow.patch_bundle_tracking``): one
:class:`BundleMLFlowHandler` in ``train#handlers``, one in ``validate#handlers`` and one in ``handlers`` (the
``evaluator`` of ``evaluate.json``, :class:`scripts.benchmark.BenchmarkEngine`). All of them log to one MLflow
run per stage (named after ``tracking_params#stage``).

MONAI's :class:`~monai.handlers.MLFlowHandler` logs the engine's metrics per epoch and the loss per iteration;
what it does not do, and this subclass adds: the stage's hyper-parameters (``tracking_params`` of each config,
flattened), the mean of every loss term per epoch, the files the bundle's own writers produce (metrics JSON,
image grids, the localization report) and the best checkpoint, all read from the handlers attached to the engine
so that no config has to list them twice.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler

from .checkpoint import AtomicCheckpointSaver
from .handlers import ImageGridWriter, MetricsWriter

__all__ = ["BundleMLFlowHandler", "attached_handlers", "benchmark_metrics", "flatten_params", "stage_run_name"]

#: MLflow's limits (mlflow.utils.validation): characters of a parameter value, parameters per batch call.
MAX_PARAM_LENGTH = 6000
MAX_PARAMS_PER_BATCH = 100


def _describe(value: Any) -> str:
    """One parameter value as text: numbers and strings as they are, sequences as JSON, modules by class."""
    if isinstance(value, torch.nn.Module):
        cls = type(value)
        return f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        try:
            return json.dumps(list(value))
        except TypeError:
            pass
    return str(value)[:MAX_PARAM_LENGTH]


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"loss_weights": {"alpha": 1.0}}`` -> ``{"loss_weights.alpha": "1.0"}``; a module also gives its size.

    A network (a config's ``classifier_def`` once instantiated) becomes its class path plus a
    ``<name>.num_parameters`` entry: the instance no longer knows the arguments it was built with.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        flat[name] = _describe(value)
        if isinstance(value, torch.nn.Module):
            flat[f"{name}.num_parameters"] = str(sum(p.numel() for p in value.parameters()))
    return flat


def _metric_key(name: str) -> str:
    """A method's display name as an MLflow metric-name part ("Random (reference)" -> "Random_reference")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def benchmark_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The scalar scores of :meth:`scripts.benchmark.LocalizationBenchmark.run`'s results, flat, as metric name ->
    value (what the benchmark engine puts in ``state.metrics`` for the tracking handlers).

    ``<method>/iou_<p>``, ``<method>/auc_total``, ``<method>/auc_partial``, ``<method>/ap``, the faithfulness
    scores ``<method>/pointing_game``, ``/relevance_mass``, ``/relevance_rank``, ``/road_auc_morf``,
    ``/road_auc_lerf``, ``/road_gap`` (undefined values left out) and ``<method>/seconds_per_image``; the augmented
    row of a method is ``<method>_TTA``. Curves are left out.
    """
    flat: dict[str, float] = {}
    for name, row in results.get("methods", {}).items():
        for kind, scores in row.items():
            if not scores:
                continue
            prefix = _metric_key(name) + ("_TTA" if kind == "tta" else "")
            for p, value in scores.get("iou", {}).items():
                flat[f"{prefix}/iou_{p}"] = float(value)
            for key in ("auc_total", "auc_partial", "ap", "seconds_per_image"):
                if scores.get(key) is not None:
                    flat[f"{prefix}/{key}"] = float(scores[key])
            for key in ("pointing_game", "relevance_mass", "relevance_rank"):
                if scores.get(key) is not None and math.isfinite(float(scores[key])):
                    flat[f"{prefix}/{key}"] = float(scores[key])
            for key in ("auc_morf", "auc_lerf", "gap"):
                value = (scores.get("road") or {}).get(key)
                if value is not None and math.isfinite(float(value)):
                    flat[f"{prefix}/road_{key}"] = float(value)
    return flat


def stage_run_name(params: Mapping[str, Any] | None = None) -> str:
    """The MLflow run name of a stage: ``params["stage"]`` (``classifier``, ``explainer_<variant>``, ``evaluate``).

    Without a stage (a config with no ``tracking_params``), ``run_<time>`` as MONAI would name it, but fixed once
    per process so that the trainer's and the validator's handlers agree on it: with no name MONAI's handler picks
    any unfinished run of the experiment, possibly one a crashed stage left behind.
    """
    stage = (params or {}).get("stage")
    return str(stage) if stage else f"run_{time.strftime('%Y%m%d_%H%M%S')}"


def attached_handlers(engine: Engine, cls: type) -> list[Any]:
    """The instances of ``cls`` among the handlers attached to ``engine`` (each once, in attachment order).

    Ignite has no public listing of an engine's handlers; this reads ``engine._event_handlers`` (a handler is
    stored as itself, as a bound method of its object, or, for filtered events, behind a ``_parent`` weakref).
    """
    found: list[Any] = []
    for entries in getattr(engine, "_event_handlers", {}).values():
        for entry in entries:
            handler = entry[0]
            if hasattr(handler, "_parent"):
                handler = handler._parent()
            obj = getattr(handler, "__self__", handler)
            if isinstance(obj, cls) and not any(obj is f for f in found):
                found.append(obj)
    return found


def _scalar(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


class BundleMLFlowHandler(MLFlowHandler):
    """MONAI's ``MLFlowHandler`` plus the bundle's parameters, per-epoch loss means, output files and best checkpoint.

    Args:
        params: the stage's hyper-parameters (a config's ``tracking_params``); nested dicts are flattened with
            ``.``, networks described by :func:`flatten_params`. Logged once per run, when the engine starts; a
            resumed run keeps the values it was started with (MLflow parameters cannot change).
        output_dir: the stage's ``output_dir``, where MONAI's tracking patch wrote the executed config.
        kwargs: those of :class:`monai.handlers.MLFlowHandler`. ``output_transform`` may return a dict of loss
            terms; each is logged per iteration (as MONAI does) and its mean per epoch as ``<name>_epoch``.

    At each ``COMPLETED`` of its engine (a validation, the benchmark) it logs, from the handlers attached there:
    the file of every :class:`~scripts.handlers.MetricsWriter`, this epoch's grid of every
    :class:`~scripts.handlers.ImageGridWriter` (under ``grids/``), the files listed in ``engine.state.artifacts``
    (the benchmark's report), and for an :class:`~scripts.checkpoint.AtomicCheckpointSaver` with a best file the
    tag ``best_checkpoint`` and the metric ``best_<key metric>``.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, output_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params = flatten_params(params or {})
        self.output_dir = output_dir
        self._sums: dict[str, float] = {}
        self._count = 0
        self._best_logged: dict[str, float] = {}
        transform = self.output_transform
        self.output_transform = lambda output: self._accumulate(transform(output))

    # -- parameters -----------------------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        # registered before MONAI's ``complete``/``close``, so the run is still open when these run
        if not engine.has_event_handler(self.log_outputs, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.log_outputs)
        super().attach(engine)

    def start(self, engine: Engine) -> None:
        super().start(engine)
        params = dict(self.params)
        self._delete_exist_param_in_dict(params)
        items = list(params.items())
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._log_params(dict(items[i : i + MAX_PARAMS_PER_BATCH]))

    # -- losses ---------------------------------------------------------------------------------------------------
    def _accumulate(self, values: Any) -> Any:
        """Floats of the transformed output, summed over the epoch (for the ``<name>_epoch`` means)."""
        if values is None:
            return None
        named = values if isinstance(values, Mapping) else {self.tag_name: values}
        scalars = {str(k): _scalar(v) for k, v in named.items()}
        for key, value in scalars.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1
        return scalars

    def _default_epoch_log(self, engine: Engine) -> None:
        super()._default_epoch_log(engine)
        if self._count and self.cur_run:
            means = {f"{k}_epoch": v / self._count for k, v in self._sums.items()}
            self._log_metrics(means, step=self.global_epoch_transform(engine.state.epoch))
        self._sums, self._count = {}, 0

    # -- files ----------------------------------------------------------------------------------------------------
    def _parse_artifacts(self) -> list[str]:
        """MONAI's list, with the executed config found again when its path came through the patch garbled.

        ``patch_bundle_tracking`` writes ``<output_dir>/config_<time>.json`` but records its path as
        ``<output_dir value> + '/config_<time>.json'``, which is no path when ``output_dir`` is a macro or a
        command-line value (MONAI 1.6.1); the file is then looked up in ``output_dir`` by its name.
        """
        fixed = []
        for path in self.artifacts:
            if path and not os.path.exists(str(path)) and self.output_dir:
                match = re.search(r"config_\d{8}_\d{6}\.json", str(path))
                if match:
                    path = os.path.join(self.output_dir, match.group(0))
            fixed.append(path)
        self.artifacts = tuple(fixed)
        return super()._parse_artifacts()

    def _output_files(self, engine: Engine) -> Iterator[tuple[Path, str | None]]:
        """(file, artifact folder) of what this engine's writers produced in this run."""
        for writer in attached_handlers(engine, MetricsWriter):
            yield writer.path, None
        for grid in attached_handlers(engine, ImageGridWriter):
            yield grid.output_dir / f"{grid.prefix}_{engine.state.epoch:03d}.png", f"grids/{grid.output_dir.name}"
        for path in getattr(engine.state, "artifacts", None) or ():
            yield Path(path), None

    def log_outputs(self, engine: Engine) -> None:
        """Log the engine's output files and, when it improved, the best checkpoint (see the class docstring)."""
        if not self.cur_run:
            return
        run_id = self.cur_run.info.run_id
        for path, folder in self._output_files(engine):
            if path.is_file():
                self.client.log_artifact(run_id, str(path), folder)
        for saver in attached_handlers(engine, AtomicCheckpointSaver):
            if saver.best_path is None or not saver.best_path.is_file():
                continue
            self.client.set_tag(run_id, "best_checkpoint", str(saver.best_path))
            name = saver.key_metric_name or getattr(engine.state, "key_metric_name", None)
            if name and saver.best is not None and self._best_logged.get(name) != saver.best:
                self._best_logged[name] = saver.best
                self._log_metrics({f"best_{name}": saver.best}, step=self.global_epoch_transform(engine.state.epoch))
