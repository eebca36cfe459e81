"""The localization benchmark of the paper (method.md §4–6): every method, with and without augmentation, one run.

For each method (and its test-time-augmented version) an :class:`~scripts.evaluator.ExplanationEvaluator` runs over
the test images whose ground truth is the pathology class, with the localization metrics of
:mod:`scripts.metrics` and the faithfulness metrics of :mod:`scripts.faithfulness` attached as Ignite handlers
(pointing game, relevance mass and rank accuracy on every image; ROAD, which runs the classifier twice per image
and removal fraction, on the first ``road_images`` test images only). Two reference rows frame the numbers: a
random map (what a method that does not localize scores) and the mask itself with random tie-breaking (the
ceiling that lesion size puts on IoU at low percentiles). Seconds per image are measured separately, warm, one
image at a time, on the same device for every method. :func:`scripts.report.write_report` writes the tables,
plots and picture grid.

The pieces live in their own modules: the random map in :mod:`scripts.explainers.random_map`, the ceiling engine
in :mod:`scripts.ceiling`, the metrics (all MONAI ``Cumulative`` metrics) in :mod:`scripts.metrics` and
:mod:`scripts.faithfulness`, the timing in :mod:`scripts.timing`, the MLflow flattening of the results in
:mod:`scripts.tracking`. This module runs them.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import IgniteMetricHandler, from_engine
from torch import nn

from .ceiling import CEILING_ROW, MaskCeilingEngine
from .errors import BundleInputError
from .evaluator import ExplanationEvaluator
from .explainers import Explainer, RandomExplainer, TTAExplainer
from .faithfulness import ROAD, ROAD_PERCENTAGES, PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy
from .handlers import ProgressLog
from .metrics import (
    DEFAULT_PERCENTILES,
    LocalizationAUC,
    PercentileIoU,
    PercentileIoUMetric,
    PooledAveragePrecision,
    PrecisionRecallCurveMetric,
)
from .records import cpu_name
from .timing import time_in_turns
from .tracking import benchmark_metrics

__all__ = ["BenchmarkEngine", "LocalizationBenchmark", "method_variants", "pathology_entries"]

RANDOM_ROW = "Random (reference)"


def _all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``torch.distributed.all_gather_object``)."""
    out: list[Any] = [None] * idist.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def pathology_entries(entries: Sequence[dict], pathology_class: int, source: str = "datalist") -> list[dict]:
    """Entries whose label is the pathology class and that have a mask (the paper's evaluation set)."""
    kept = [e for e in entries if int(e.get("label", -1)) == pathology_class and e.get("mask")]
    if not kept:
        raise BundleInputError(
            f"{source}: no entry with label {pathology_class} and a 'mask' to evaluate localization on"
        )
    return kept


def method_variants(
    methods: Mapping[str, Explainer], tta: Mapping[str, Any] | None, no_tta: Iterable[str] = ("BBMP",)
) -> list[tuple[str, str, Explainer]]:
    """``(name, kind, explainer)`` for every method in table order: ``kind`` ``"plain"``, then ``"tta"`` (the method
    wrapped in :class:`~scripts.explainers.TTAExplainer` with ``tta``'s keyword arguments) unless ``tta`` is ``None``
    or the method is in ``no_tta``. The benchmark, the cue-reliance study and the sanity checks all score these."""
    skip = set(no_tta)
    out: list[tuple[str, str, Explainer]] = []
    for name, explainer in methods.items():
        out.append((name, "plain", explainer))
        if tta is not None and name not in skip:
            out.append((name, "tta", TTAExplainer(explainer, **dict(tta))))
    return out


def _pr_curve(value: Any) -> dict[str, list[float]]:
    """The report's ``pr_curve`` record from :class:`PrecisionRecallCurveMetric`'s ``(2, 101)`` mean curves
    (empty lists when no image had a lesion)."""
    curves = torch.as_tensor(value).reshape(2, -1)
    if bool(torch.isnan(curves).all()):
        return {"precision": [], "recall": []}
    return {"precision": curves[0].tolist(), "recall": curves[1].tolist()}


def _road_record(mean: Any, details: Any) -> dict[str, Any]:
    """The report's ``road`` record from :class:`scripts.faithfulness.ROAD`'s ``kind="all"`` mean row (MoRF curve,
    LeRF curve, both areas, gap) and its per-image rows (their count: the images scored)."""
    row = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    p = len(ROAD_PERCENTAGES)
    return {
        "images": int(torch.as_tensor(details).shape[0]),
        "morf": row[:p].tolist(),
        "lerf": row[p : 2 * p].tolist(),
        "auc_morf": float(row[2 * p]),
        "auc_lerf": float(row[2 * p + 1]),
        "gap": float(row[2 * p + 2]),
    }


class _GridCollector:
    """Keep the first ``n`` images, masks and maps of a run (for the picture grid)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.items: dict[str, list[torch.Tensor]] = {"image": [], "mask": [], "explanation": []}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def update(self, engine: Engine) -> None:
        take = self.n - len(self.items["image"])
        if take > 0:
            for key in self.items:
                self.items[key].extend(t[0].detach().float().cpu() for t in engine.state.output[key][:take])


class LocalizationBenchmark:
    """Run every method over the test loader and write the report.

    Args:
        classifier: the frozen classifier ``f_c``.
        methods: display name -> explainer, in table order (``"Gradient"``, ``"GradCAM"``, ..., ``"Ours"``).
        dataloader: batches of ``image``/``label``/``mask`` (pathology images with masks, see
            :func:`pathology_entries`).
        device: where everything runs.
        output_dir: report folder.
        tta: keyword arguments of :class:`~scripts.explainers.TTAExplainer` (``None``: no augmented rows).
        no_tta: methods without an augmented row (the paper has none for BBMP, whose cost is per-image optimisation).
        percentiles: the IoU table's columns.
        timing_images: images timed one by one per method (after one warm-up call).
        timing_min_seconds: keep timing each method, cycling over those images, until this many seconds of its calls
            are measured (at least one call per image), so that a method of a few milliseconds gets a median over
            hundreds of calls instead of ten that one scheduler hiccup can move. Methods are timed in turns, after
            every method is scored (:func:`scripts.timing.time_in_turns`).
        grid_images: rows of the picture grid.
        explain_label: explain the ground-truth class instead of the classifier's decision (default: decision).
        command: the command line, recorded in the report.
        ap_subsample: pixels per image kept for pooled AP (``None``: all).
        road_images: ROAD (:class:`scripts.faithfulness.ROAD`, MoRF and LeRF at :data:`ROAD_PERCENTAGES`, noisy
            linear imputation, on the classifier's probability of the explained class) is scored on the first
            ``road_images`` images of the loader (unshuffled: the same images for every method), reusing the maps of
            the run; 0 disables it (the ROAD record is then ``None``). Under ``torchrun``: per process.
        amp: autocast the classifier and explainers on CUDA (ROAD's classifier calls run in float32).

    Sharded (``torchrun`` + ``configs/multi_gpu_evaluate.json``, a process group initialised): ``dataloader`` holds
    this rank's shard; the metric handlers' ``Cumulative`` buffers (the precision/recall curves' too) are gathered
    over every rank, so every rank gets the whole test set's scores; seconds per image and the picture grid are
    each rank's own, and rank 0 alone writes the report (its timings and images). Without a process group nothing
    changes.
    """

    def __init__(
        self,
        classifier: nn.Module,
        methods: Mapping[str, Explainer],
        dataloader: Iterable,
        device: torch.device | str,
        output_dir: str,
        tta: Mapping[str, Any] | None = None,
        no_tta: Sequence[str] = ("BBMP",),
        percentiles: Sequence[int] = DEFAULT_PERCENTILES,
        timing_images: int = 10,
        timing_min_seconds: float = 0.0,
        grid_images: int = 6,
        explain_label: bool = False,
        command: str | None = None,
        ap_subsample: int | None = 4096,
        amp: bool = False,
        road_images: int = 10,
    ) -> None:
        if isinstance(road_images, bool) or not isinstance(road_images, int) or road_images < 0:
            raise BundleInputError(
                f"road_images (configs/evaluate.json) must be a non-negative integer (0: no ROAD), got {road_images!r}"
            )
        self.classifier = classifier
        self.methods = dict(methods)
        self.dataloader = dataloader
        self.device = torch.device(device)
        self.output_dir = output_dir
        self.tta = dict(tta) if tta is not None else None
        self.no_tta = set(no_tta)
        self.percentiles = [int(p) for p in percentiles]
        self.timing_images = timing_images
        self.timing_min_seconds = float(timing_min_seconds)
        self.grid_images = grid_images
        self.explain_label = explain_label
        self.command = command or " ".join(["python", "-m", "monai.bundle", *sys.argv[1:]])
        self._default_command = not command
        self.ap_subsample = ap_subsample
        self.amp = amp
        self.road_images = road_images
        self.logger = logging.getLogger("simadv_explainer.benchmark")
        self.report_paths: dict[str, str] = {}

    # -- one method ---------------------------------------------------------------------------------------------
    def _metric_handlers(self) -> dict[str, Any]:
        """The handlers attached to each method's run: localization (:mod:`scripts.metrics`) and faithfulness
        (:mod:`scripts.faithfulness`; ROAD only on the first ``road_images`` images, on the explained class: the
        decision ``y_hat``, or the ``label`` with ``explain_label``)."""
        metrics: dict[str, Any] = {f"iou_{p}": PercentileIoU(percentile=p, save_details=False) for p in self.percentiles}
        metrics["iou_curve"] = IgniteMetricHandler(
            metric_fn=PercentileIoUMetric(percentiles=range(101)), output_transform=from_engine(["explanation", "mask"])
        )
        metrics["auc_total"] = LocalizationAUC(kind="total", save_details=False)
        metrics["auc_partial"] = LocalizationAUC(kind="partial", save_details=False)
        metrics["ap"] = PooledAveragePrecision(subsample=self.ap_subsample)
        metrics["pr_curve"] = IgniteMetricHandler(
            metric_fn=PrecisionRecallCurveMetric(), output_transform=from_engine(["explanation", "mask"])
        )
        metrics["pointing_game"] = PointingGame(save_details=False)
        metrics["relevance_mass"] = RelevanceMassAccuracy(save_details=False)
        metrics["relevance_rank"] = RelevanceRankAccuracy(save_details=False)
        if self.road_images:
            target = "label" if self.explain_label else "y_hat"
            metrics["road"] = ROAD(
                self.classifier, output_transform=from_engine(["explanation", "image", target]),
                max_images=self.road_images, kind="all",
            )
        return metrics

    def evaluate(self, explainer: Explainer, grid: _GridCollector | None = None) -> dict[str, Any]:
        """Localization scores of one explainer over the whole loader (an :class:`ExplanationEvaluator` run)."""
        evaluator = ExplanationEvaluator(
            device=self.device,
            val_data_loader=self.dataloader,
            classifier=self.classifier,
            explainer=explainer,
            explain_label=self.explain_label,
            amp=self.amp,
        )
        evaluator.logger.setLevel(logging.WARNING)
        ProgressLog(f"scoring {type(explainer).__name__}", logger=self.logger).attach(evaluator)
        return self._score(evaluator, lambda: evaluator.run(), grid)

    def _score(self, engine: Engine, run: Any, grid: _GridCollector | None = None) -> dict[str, Any]:
        """Attach the metric handlers (and the grid collector) to ``engine``, ``run()`` it, and read the scores."""
        if grid is not None:
            grid.attach(engine)
        for name, handler in self._metric_handlers().items():
            handler.attach(engine, name)
        run()
        m = engine.state.metrics
        as_float = lambda v: float(v.item() if isinstance(v, torch.Tensor) else v)  # noqa: E731
        return {
            "iou": {str(p): as_float(m[f"iou_{p}"]) for p in self.percentiles},
            "iou_curve": [float(v) for v in torch.as_tensor(m["iou_curve"]).reshape(-1).tolist()],
            "auc_total": as_float(m["auc_total"]),
            "auc_partial": as_float(m["auc_partial"]),
            "ap": as_float(m["ap"]),
            "pr_curve": _pr_curve(m["pr_curve"]),
            "pointing_game": as_float(m["pointing_game"]),
            "relevance_mass": as_float(m["relevance_mass"]),
            "relevance_rank": as_float(m["relevance_rank"]),
            "road": _road_record(m["road"], engine.state.metric_details["road"]) if "road" in m else None,
        }

    # -- everything ---------------------------------------------------------------------------------------------
    def _timing_images(self) -> list[torch.Tensor]:
        images: list[torch.Tensor] = []
        for batch in self.dataloader:
            for x in batch["image"]:
                images.append(x[None].to(self.device))
                if len(images) >= self.timing_images:
                    return images
        return images

    def _local_num_images(self) -> int:
        """Images this process evaluates: its sampler's length (its shard under torchrun), else the dataset's."""
        for source in (getattr(self.dataloader, "sampler", None), getattr(self.dataloader, "dataset", None)):
            try:
                return len(source)  # type: ignore[arg-type]
            except TypeError:
                continue
        return sum(len(batch["image"]) for batch in self.dataloader)

    def _ceiling(self) -> dict[str, Any]:
        """Scores of the mask itself as the map (:class:`scripts.ceiling.MaskCeilingEngine`)."""
        engine = MaskCeilingEngine(self.device, self.classifier)
        return self._score(engine, lambda: engine.run(self.dataloader))

    def run(self) -> dict[str, Any]:
        """Evaluate and time every method, write the report; return the results dict."""
        from .report import write_report

        rank, world = idist.get_rank(), idist.get_world_size()
        timing = self._timing_images()
        if world > 1:  # sharded (torchrun + configs/multi_gpu_evaluate.json): every rank must have images
            counts = _all_gather_object(self._local_num_images())
            if min(counts) == 0:
                raise BundleInputError(
                    f"the test set is split over {world} processes and some shards are empty ({counts} images "
                    "per rank): run with fewer processes"
                )
        elif not timing:
            raise BundleInputError("the evaluation loader is empty: no test image to explain")
        results: dict[str, Any] = {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
            else f"{cpu_name()} ({torch.get_num_threads()} threads)",
            "num_images": len(getattr(self.dataloader, "dataset", [])) or None,
            "percentiles": self.percentiles,
            "timing": {"images": len(timing), "min_seconds": self.timing_min_seconds},
            "road": {"images": self.road_images, "percentages": list(ROAD_PERCENTAGES), "noise": 0.01,
                     "target": "label" if self.explain_label else "decision"},
            "command": self.command,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "methods": {},
        }
        if world > 1:
            results["num_images"] = sum(counts)
            results["num_processes"] = world
            results["device_name"] += f"; rank 0 of {world} processes, its timings and picture grid"
            if self._default_command:
                results["command"] = f"torchrun ({world} processes) " + " ".join(["-m", "monai.bundle", *sys.argv[1:]])
        grid_collectors: dict[str, _GridCollector] = {}
        timed: dict[tuple[str, str], Explainer] = {}
        variants = method_variants(self.methods, self.tta, self.no_tta)
        for name in self.methods:
            row: dict[str, Any] = {}
            for kind, method in [(k, m) for n, k, m in variants if n == name]:
                start = time.perf_counter()
                grid = _GridCollector(self.grid_images) if kind == "plain" else None
                row[kind] = self.evaluate(method, grid)
                timed[(name, kind)] = method
                if grid is not None:
                    grid_collectors[name] = grid
                self.logger.info(
                    f"{name} ({kind}): IoU@90 {row[kind]['iou'].get('90', float('nan')):.3f}, "
                    f"AUC {row[kind]['auc_total']:.3f}/{row[kind]['auc_partial']:.3f}, "
                    f"pointing game {row[kind]['pointing_game']:.3f}"
                    + (f", ROAD gap {row[kind]['road']['gap']:.3f}" if row[kind]["road"] else "")
                    + " "
                    f"({time.perf_counter() - start:.0f} s)"
                )
            row.setdefault("tta", None)
            results["methods"][name] = row
        start = time.perf_counter()
        seconds = time_in_turns(timed, timing, self.device, self.timing_min_seconds)
        for (name, kind), value in seconds.items():
            results["methods"][name][kind]["seconds_per_image"] = value
        self.logger.info(
            f"seconds per image, timed in turns ({time.perf_counter() - start:.0f} s): "
            + ", ".join(f"{name} ({kind}) {value:.4f}" for (name, kind), value in seconds.items())
        )
        results["methods"][RANDOM_ROW] = {"plain": self.evaluate(RandomExplainer(self.classifier)), "tta": None}
        results["methods"][CEILING_ROW] = {"plain": self._ceiling(), "tta": None}
        for ref in (RANDOM_ROW, CEILING_ROW):
            results["methods"][ref]["plain"]["seconds_per_image"] = None
        grid = None
        if grid_collectors:
            first = next(iter(grid_collectors.values())).items
            grid = {
                "images": torch.stack(first["image"]),
                "masks": torch.stack(first["mask"]),
                "maps": {n: torch.stack(g.items["explanation"]) for n, g in grid_collectors.items()},
            }
        if rank > 0:  # sharded run: every rank holds the gathered scores, rank 0 alone writes the report
            self.report_paths = {}
            return results
        paths = self.report_paths = write_report(results, self.output_dir, grid)
        self.logger.info(f"localization report: {paths.get('markdown')}")
        print(f"localization report: {paths.get('markdown')}", flush=True)
        return results


class BenchmarkEngine(Engine):
    """:class:`LocalizationBenchmark` as a one-iteration Ignite engine: the ``evaluator`` of ``evaluate.json``.

    MONAI's ``--tracking`` attaches its handlers to a config's ``evaluator`` (and its ``handlers`` list); running
    the benchmark inside an engine lets them record it like any evaluation. When the iteration completes,
    ``state.metrics`` holds :func:`scripts.tracking.benchmark_metrics` and ``state.artifacts`` the report files. ``run()`` returns
    the results dict.
    """

    def __init__(self, benchmark: LocalizationBenchmark, val_handlers: Sequence[Any] | None = None) -> None:
        super().__init__(lambda engine, batch: benchmark.run())
        self.benchmark = benchmark
        self.add_event_handler(Events.ITERATION_COMPLETED, self._publish)  # before the handlers read them
        for handler in val_handlers or ():
            handler.attach(self)

    def _publish(self, engine: Engine) -> None:
        engine.state.metrics = benchmark_metrics(engine.state.output)
        engine.state.artifacts = list(self.benchmark.report_paths.values())

    def run(self) -> dict[str, Any]:  # type: ignore[override]
        super().run([None], max_epochs=1)
        return self.state.output
