"""The ``explain`` infer task: the bundle's explanation of one study image, as a label a viewer shows and edits.

The task builds the classifier, the generator, the explainer and the preprocessing from ``configs/inference.json``
(MONAI ``ConfigParser``, the trained weights under ``models/``), exactly as ``python -m monai.bundle run --config_file
configs/inference.json`` does: the study is read by the config's ``read_transforms`` (its own size and affine kept)
and brought to the network by ``resize_transforms`` + ``type_transforms``; the bundle's evaluation step
(:func:`scripts.evaluator.evaluation_step`, the one ``ExplanationEvaluator`` runs) explains it. For one image it
returns:

* the **label** (default ``output_image="levels"``): the explanation map cut into discrete levels, label ``K`` for
  the pixels at or above the image's own first percentile (top 2 % by default), ``K-1`` for the next band, down to
  ``1``; ``0`` elsewhere. Percentiles follow the benchmark's convention (``scripts/metrics.py``): per image,
  linear interpolation, keep ``E >= t``. The levels are cut on the map at the network's resolution (the pixels
  the benchmark scores) and then resized (nearest) to the study image's own size.
* or, on request, the float **heatmap** (the explanation ``|x_s - x_a|``), the **similar** or the **adversarial**
  image, resized (bilinear) to the study image's size, as NIfTI (or NRRD).
* the **result JSON**: probabilities, predicted class, level names (``label_names``, ``channel_def``), thresholds,
  the generator's own outcome (classifier on ``x_s`` and ``x_a``) and the latencies, the explainer's included.

Request parameters are checked: an unknown one, a bad value, an unreadable image answer HTTP 4xx with a message.
Nothing in a request reaches the config parser (configs execute code); only the server's start-up ``--conf``
values do.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

__all__ = [
    "DEFAULT_PERCENTILES",
    "ExplainTask",
    "explanation_levels",
    "level_names",
    "parse_percentiles",
]

#: default cut: top 2 % -> label 3, top 5 % -> 2, top 10 % -> 1.
DEFAULT_PERCENTILES: tuple[float, ...] = (98.0, 95.0, 90.0)
MAX_LEVELS = 10
MAX_TTA = 64
OUTPUT_IMAGES = ("levels", "heatmap", "similar", "adversarial")
LEVEL_EXTENSIONS = (".png", ".nii.gz", ".nii", ".nrrd", ".dcm")
FLOAT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".dcm")
DICOM_SUFFIXES = (".dcm", ".dicom")
#: regions (scripts/regions.py): Gaussian sigma in pixels of the network's input, smallest region kept as a
#: fraction of the image; the defaults turn the speckle of the per-pixel cut into a few regions per level
DEFAULT_SMOOTH_SIGMA = 2.0
DEFAULT_MIN_REGION = 0.002
MAX_SMOOTH_SIGMA = 32.0

#: the parameters of this task (defaults in ``InferTask.config()``, shown by ``/info/``).
TASK_PARAMS = ("percentiles", "tta_augmentations", "output_image", "result_extension", "smooth_sigma", "min_region",
               "send_to_pacs")
#: keys MONAI Label's server or its viewers (3D Slicer, OHIF, ``MONAILabelClient``) put into requests; accepted
#: and not used by this task (``result_dtype``: levels are always uint8, maps float32).
PASSTHROUGH_KEYS = frozenset(
    {
        "model", "image", "image_id", "description", "device", "client_id", "save_label", "label_tag",
        "result_dtype", "result_compress", "session", "session_id", "label", "label_info", "timeout", "logging",
        "cache_transforms", "cache_transforms_in_memory", "cache_transforms_ttl", "restore_label_idx", "largest_cc",
    }
)


def _bad_request(message: str, status: int = 400) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _number(value: Any, name: str, low: float, high: float) -> float:
    """``value`` as a finite float in ``[low, high]``, else HTTP 400 naming the parameter."""
    try:
        if isinstance(value, bool):
            raise ValueError
        f = float(value)
    except (TypeError, ValueError):
        raise _bad_request(f"bad {name!r}: {value!r} is not a number") from None
    if not math.isfinite(f) or not low <= f <= high:
        raise _bad_request(f"bad {name!r}: {value!r}; expected a number from {low:g} to {high:g}")
    return f


def parse_percentiles(value: Any) -> tuple[float, ...]:
    """``"98,95,90"`` or ``[98, 95, 90]`` -> ``(98.0, 95.0, 90.0)`` (sorted high to low); ValueError if invalid."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, Sequence):
        parts = list(value)
    else:
        raise ValueError(f"percentiles must be a list of numbers or a comma-separated string, got {value!r}")
    out = []
    for p in parts:
        try:
            if isinstance(p, bool):
                raise ValueError
            f = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"percentile {p!r} is not a number") from None
        if not math.isfinite(f) or not 0 < f < 100:
            raise ValueError(f"percentile {p!r} must be strictly between 0 and 100")
        out.append(f)
    if not out:
        raise ValueError("percentiles is empty; give one to ten values, e.g. '98,95,90'")
    if len(out) > MAX_LEVELS:
        raise ValueError(f"at most {MAX_LEVELS} percentiles, got {len(out)}")
    if len(set(out)) != len(out):
        raise ValueError(f"percentiles must be distinct, got {parts}")
    return tuple(sorted(out, reverse=True))


def level_names(percentiles: Sequence[float]) -> dict[str, int]:
    """``{"top 2%": 3, "top 5%": 2, "top 10%": 1}`` for ``(98, 95, 90)`` (MONAI Label's name -> label value)."""
    k = len(percentiles)
    return {f"top {100 - p:.4g}%": k - i for i, p in enumerate(percentiles)}


def explanation_levels(explanation: np.ndarray, percentiles: Sequence[float]) -> tuple[np.ndarray, list[float]]:
    """Cut one map into levels: ``label = #{p : E >= percentile_p(E)}`` (uint8), and the thresholds (high to low).

    Thresholds are the image's own percentiles with linear interpolation, cut by
    :func:`scripts.metrics.percentile_thresholds` (the benchmark's); ties at a threshold are kept, so a constant
    map is all top level.
    """
    from scripts.regions import region_levels  # the benchmark's own percentile cut, unsmoothed

    levels, thresholds, _ = region_levels(explanation, percentiles, sigma=0.0, min_region=0.0)
    return levels, thresholds


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def _cwd(path: Path):
    """The bundle's configs reference each other relative to the bundle root (``%configs/common.json#...``)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _shown_path(path: str | os.PathLike, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, else its file name (clients never see server paths)."""
    real = Path(os.path.realpath(path))
    try:
        return str(real.relative_to(Path(os.path.realpath(root))))
    except ValueError:
        return real.name


def _resize(t: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """``(1, C, *spatial)`` to ``size`` (no-op when equal): nearest-exact for labels, bilinear for maps."""
    if list(t.shape[2:]) == list(size):
        return t
    if mode == "nearest":
        return F.interpolate(t.float(), size=list(size), mode="nearest-exact")
    return F.interpolate(t.float(), size=list(size), mode="bilinear", align_corners=False)


class ExplainTask(InferTask):
    """MONAI Label infer task serving the bundle's explainer (see the module docstring).

    Args:
        bundle_root: the bundle folder (holds ``configs/`` and ``scripts/``).
        models_dir: folder with ``explainer.pt`` and ``classifier.pt`` (the config's ``ckpt_dir``).
        config_file: the inference config, relative to ``bundle_root``.
        overrides: further config overrides from the server's ``--conf overrides '{...}'`` (trusted: the operator's).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; None keeps the config's choice (CUDA when available).
    """

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        models_dir: str | os.PathLike,
        config_file: str = "configs/inference.json",
        overrides: Mapping[str, Any] | None = None,
        device: str | None = None,
    ) -> None:
        self.bundle_root = Path(bundle_root).resolve()
        self.models_dir = Path(models_dir).resolve()
        self.config_file = config_file
        self.overrides = dict(overrides or {})
        self.requested_device = device
        self._lock = threading.Lock()
        self._load()
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=level_names(DEFAULT_PERCENTILES),
            dimension=2,
            description="Explanation of the classifier's decision (similar/adversarial generation), "
            "cut into levels: top 2% / 5% / 10% of the map as labels 3 / 2 / 1",
            config={
                "percentiles": ",".join(f"{p:g}" for p in DEFAULT_PERCENTILES),
                "tta_augmentations": self.default_tta,
                "output_image": "levels",
                "result_extension": "",
                "smooth_sigma": DEFAULT_SMOOTH_SIGMA,
                "min_region": DEFAULT_MIN_REGION,
                "send_to_pacs": True,
            },
        )

    # ------------------------------------------------------------------------------------------------ loading
    def _load(self) -> None:
        from monai.bundle import ConfigParser
        from monai.transforms import Compose

        import scripts  # noqa: F401  (the configs' "$import scripts")
        from scripts.errors import find_input_error
        from scripts.explainers import TTAExplainer

        parser = ConfigParser()
        try:
            with _cwd(self.bundle_root):
                parser.read_config(str(self.bundle_root / self.config_file))
                parser.update({"bundle_root": str(self.bundle_root), "ckpt_dir": str(self.models_dir)})
                parser.update(self.overrides)
                if self.requested_device:
                    parser.update({"device": f"$torch.device({self.requested_device!r})"})
                self.device = parser.get_parsed_content("device")
                self.classifier = parser.get_parsed_content("classifier")
                self.generator = parser.get_parsed_content("generator")
                explainer = parser.get_parsed_content("explainer")
                self.tta = dict(parser.get_parsed_content("tta"))
                # the image is read at its own size (its affine kept), then brought to the network's size
                self._load_transforms = Compose(parser.get_parsed_content("read_transforms"))
                self._to_network = Compose(
                    list(parser.get_parsed_content("resize_transforms"))
                    + list(parser.get_parsed_content("type_transforms"))
                )
                self.input_size = [int(s) for s in parser.get_parsed_content("input_size")]
                self.num_classes = int(parser.get_parsed_content("explained_num_classes"))
                self.amp = bool(parser.get_parsed_content("amp"))
                in_channels = int(parser.get_parsed_content("in_channels"))
                explainer_path = Path(parser.get_parsed_content("explainer_checkpoint"))
                classifier_path = Path(parser.get_parsed_content("classifier_path"))
        except Exception as e:
            err = find_input_error(e)
            if err is None:
                raise
            raise RuntimeError(f"review app: cannot load the bundle from {self.models_dir}: {err}") from None
        with torch.no_grad():  # warm-up, so that the first reviewer's request does not pay for it
            self.generator(torch.zeros(1, in_channels, *self.input_size, device=self.device))
        self.base_explainer = explainer.explainer if isinstance(explainer, TTAExplainer) else explainer
        self.default_tta = int(self.tta.get("num_augmentations", 0) or 0)
        self.class_names = self._class_names()
        self.model_paths = {"explainer": explainer_path, "classifier": classifier_path}
        # shown to clients: the path relative to the bundle (else the file name), never the server's absolute path
        self.model_files = {
            name: {"path": _shown_path(path, self.bundle_root), "sha256": _sha256(path)[:16]}
            for name, path in self.model_paths.items()
        }

    def _class_names(self) -> list[str]:
        import json

        try:
            meta = json.loads((self.bundle_root / "configs" / "metadata.json").read_text())
            names = meta["classifier_data_format"]["outputs"]["pred"]["channel_def"]
            if len(names) == self.num_classes:
                return [str(names[str(k)]) for k in range(self.num_classes)]
        except (OSError, KeyError, ValueError):
            pass
        return [f"class {k}" for k in range(self.num_classes)]

    def is_valid(self) -> bool:
        return all(Path(p).is_file() for p in self.model_paths.values())

    def get_path(self, validate: bool = True) -> str:
        """The explainer checkpoint (MONAI Label's interface: one model file per task)."""
        return str(self.model_paths["explainer"])

    # ------------------------------------------------------------------------------------------------ request
    def _parse(self, request: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k in request if k not in TASK_PARAMS and k not in PASSTHROUGH_KEYS)
        if unknown:
            raise _bad_request(
                f"unknown parameter(s) {unknown} for model 'explain'; its parameters are {list(TASK_PARAMS)}"
            )
        try:
            percentiles = parse_percentiles(request.get("percentiles", DEFAULT_PERCENTILES))
        except ValueError as e:
            raise _bad_request(f"bad 'percentiles': {e}") from None
        tta = request.get("tta_augmentations", self.default_tta)
        if isinstance(tta, str) and tta.strip().isdigit():
            tta = int(tta.strip())
        if isinstance(tta, bool) or not isinstance(tta, int) or not 0 <= tta <= MAX_TTA:
            raise _bad_request(f"bad 'tta_augmentations': {tta!r}; expected an integer from 0 (off) to {MAX_TTA}")
        output = request.get("output_image", "levels")
        if output not in OUTPUT_IMAGES:
            raise _bad_request(f"bad 'output_image': {output!r}; expected one of {list(OUTPUT_IMAGES)}")
        if output != "levels" and str(request.get("save_label", "false")).lower() in ("true", "1"):
            raise _bad_request(f"save_label keeps the label levels only, not output_image {output!r}")
        ext = request.get("result_extension") or ""
        allowed = LEVEL_EXTENSIONS if output == "levels" else FLOAT_EXTENSIONS
        if ext and ext not in allowed:
            why = " (PNG holds only the uint8 levels)" if ext == ".png" else ""
            raise _bad_request(f"bad 'result_extension' {ext!r} for output_image {output!r}{why}; expected one of {list(allowed)}")
        sigma = _number(request.get("smooth_sigma", DEFAULT_SMOOTH_SIGMA), "smooth_sigma", 0.0, MAX_SMOOTH_SIGMA)
        min_region = _number(request.get("min_region", DEFAULT_MIN_REGION), "min_region", 0.0, 0.5)
        send = request.get("send_to_pacs", True)
        if not isinstance(send, bool):
            raise _bad_request(f"bad 'send_to_pacs': {send!r}; expected true or false")
        return {"percentiles": percentiles, "tta_augmentations": tta, "output_image": output, "result_extension": ext,
                "smooth_sigma": sigma, "min_region": min_region, "send_to_pacs": send}

    def _load_image(self, path: str) -> dict:
        from scripts.errors import find_input_error

        try:
            return self._load_transforms({"image": path})
        except Exception as e:
            err = find_input_error(e)
            if err is None:
                raise
            message = str(err)
            for form in (path, os.path.realpath(path)):  # the file's name only, not the server's folders
                message = message.replace(form, os.path.basename(form))
                message = message.replace(os.path.dirname(form) + os.sep, "")
            raise _bad_request(message, status=422) from None

    def __call__(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        explained = self.explain(request)
        return self.write_result(explained), explained["result"]

    def explain(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Explain one study: ``{"params", "study", "levels", "heatmap", "result"}``, the levels (uint8) and the
        heatmap (float32) at the study's size, x first; the result JSON without the write latency."""
        from scripts.regions import region_levels

        marks = {"start": time.perf_counter()}
        params = self._parse(request)
        study = self._prepare(request)
        marks["pre"] = time.perf_counter()
        outcome = self._explain(study["x"], params["tta_augmentations"], marks)
        levels_net, thresholds, regions = region_levels(
            outcome["explanation"][0, 0].cpu().numpy(), params["percentiles"], params["smooth_sigma"],
            params["min_region"],
        )
        levels = self._output_array("levels", levels_net, outcome, study["image_size"])
        heatmap = self._output_array("heatmap", levels_net, outcome, study["image_size"])
        array = levels if params["output_image"] == "levels" else (
            heatmap if params["output_image"] == "heatmap"
            else self._output_array(params["output_image"], levels_net, outcome, study["image_size"])
        )
        marks["post"] = time.perf_counter()
        ext = params["result_extension"] or (
            ".dcm" if study["dicom"] and params["output_image"] in ("levels", "heatmap")
            else ".png" if params["output_image"] == "levels" and study["read_by_pil"] else ".nii.gz"
        )
        if ext == ".dcm" and not study["dicom"]:
            raise _bad_request("result_extension '.dcm' (DICOM SEG) needs a DICOM study")
        if ext == ".dcm" and params["output_image"] not in ("levels", "heatmap"):
            raise _bad_request(f"result_extension '.dcm' holds the levels (SEG) or the heatmap, not {params['output_image']!r}")
        result = self._result(request, params, study, outcome, levels_net, thresholds, ext, marks)
        result["regions"] = {str(k): n for k, n in sorted(regions.items())}
        result["smooth_sigma"], result["min_region"] = params["smooth_sigma"], params["min_region"]
        return {"params": params, "study": study, "levels": levels, "heatmap": heatmap, "array": array,
                "ext": ext, "marks": marks, "result": result}

    def write_result(self, explained: Mapping[str, Any]) -> str:
        """The file the client receives (the requested output, ``result_extension``); times the write."""
        marks, ext, study = explained["marks"], explained["ext"], explained["study"]
        if ext == ".dcm":
            from scripts.dicom import compat

            ds = self.dicom_objects(explained)[0 if explained["params"]["output_image"] == "levels" else 1]
            fd, result_file = tempfile.mkstemp(suffix=ext, prefix="explain_")
            os.close(fd)
            try:
                compat.write_dataset(ds, result_file)
            except BaseException:
                os.unlink(result_file)
                raise
        else:
            result_file = self._write(explained["array"], ext, study["affine"])
        marks["write"] = time.perf_counter()
        explained["result"]["latencies"]["write"] = round(marks["write"] - marks["post"], 4)
        explained["result"]["latencies"]["total"] = round(marks["write"] - marks["start"], 4)
        return result_file

    def dicom_objects(self, explained: Mapping[str, Any]) -> tuple[Any, Any]:
        """The explanation of a DICOM study as ``(SEG of the levels, Secondary Capture of the heatmap)``, in the
        study's Study, new Series (scripts/dicom/seg.py, heatmap.py); the rows x columns matrices of the source."""
        from scripts.dicom.compat import read_dataset
        from scripts.dicom.heatmap import heatmap_capture
        from scripts.dicom.seg import segmentation

        if "source" not in explained["study"]:
            explained["study"]["source"] = read_dataset(explained["study"]["path"], stop_before_pixels=True)
        source = explained["study"]["source"]
        result = explained["result"]
        names = {v: k for k, v in result["label_names"].items()}
        what = f"explanation of class {result['predicted_name']}"[:64]
        seg = segmentation(source, explained["levels"].T, names, series_description=f"simadv {what}"[:64],
                           algorithm_type="AUTOMATIC", content_label="EXPLANATION",
                           content_description=f"levels {result['percentiles']}, sigma {result['smooth_sigma']}")
        sc = heatmap_capture(source, explained["heatmap"].T, series_description=f"simadv heatmap, {what}"[:64])
        return seg, sc

    def _prepare(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Read the study (own size and affine kept), then the network's input ``x`` ``(1, C, *input_size)``."""
        path = request.get("image")
        if not isinstance(path, str) or not path:
            raise _bad_request("no image given")
        loaded = self._load_image(path)
        image = loaded["image"]
        meta = getattr(image, "meta", {})
        x = torch.as_tensor(self._to_network(loaded)["image"]).float().unsqueeze(0).to(self.device)
        return {
            "path": path,
            "x": x,
            "image_size": [int(s) for s in image.shape[1:]],
            "affine": image.affine.detach().cpu().numpy() if hasattr(image, "affine") else np.eye(4),
            "read_by_pil": str(meta.get("format", "")).upper() in ("PNG", "JPEG", "BMP", "TIFF"),
            "dicom": str(meta.get("format", "")).upper() == "DICOM",
        }

    def _explain(self, x: torch.Tensor, tta: int, marks: dict[str, float]) -> dict[str, torch.Tensor]:
        """The bundle's evaluation step (:func:`scripts.evaluator.evaluation_step`) on one image, TTA on request."""
        from scripts.evaluator import evaluation_step
        from scripts.explainers import TTAExplainer

        explainer = self.base_explainer
        if tta > 0:
            explainer = TTAExplainer(
                self.base_explainer, num_augmentations=tta, rotate_range=self.tta["rotate_range"],
                scale_range=tuple(self.tta["scale_range"]), translate_range=self.tta["translate_range"],
                seed=self.tta["seed"],
            )
        with self._lock:
            marks["locked"] = time.perf_counter()
            return evaluation_step(self.classifier, explainer, x, self.generator, amp=self.amp, marks=marks)

    @staticmethod
    def _output_array(output: str, levels_net: np.ndarray, outcome: Mapping[str, torch.Tensor], size: list[int]):
        """The file's array at the study's size: uint8 levels (nearest), or a float map/image (bilinear)."""
        if output == "levels":
            levels = _resize(torch.from_numpy(levels_net)[None, None], size, "nearest")[0, 0]
            return levels.round().to(torch.uint8).numpy()
        source = outcome[{"heatmap": "explanation", "similar": "similar", "adversarial": "adversarial"}[output]]
        return _resize(source[:, :1].float().cpu(), size, "bilinear")[0, 0].numpy().astype(np.float32)

    def _result(self, request, params, study, outcome, levels_net, thresholds, ext, marks) -> dict[str, Any]:
        """The result JSON (module docstring; docs/review.md lists its fields)."""
        percentiles, output = params["percentiles"], params["output_image"]
        probs, y_hat = outcome["pred"][0], int(outcome["y_hat"][0])
        names = level_names(percentiles)
        counts = np.bincount(levels_net.ravel(), minlength=len(percentiles) + 1) / levels_net.size

        def rounded(p: torch.Tensor) -> list[float]:
            return [round(float(v), 6) for v in p.cpu()]

        def generated(key: str) -> dict[str, Any]:
            p = outcome[key][0]
            return {"predicted_class": int(p.argmax()), "probabilities": rounded(p)}

        def span(a: str, b: str) -> float:
            return round(marks[b] - marks[a], 4)

        return {
            "model": "explain",
            "image": request.get("image_id") or os.path.basename(study["path"]),
            "output_image": output,
            "result_extension": ext,
            "result_dtype": "uint8" if output == "levels" else "float32",
            "predicted_class": y_hat,
            "predicted_name": self.class_names[y_hat],
            "probabilities": rounded(probs),
            "class_names": self.class_names,
            "label_names": names,
            "channel_def": {"0": "background", **{str(v): k for k, v in sorted(names.items(), key=lambda kv: kv[1])}},
            "percentiles": list(percentiles),
            "thresholds": thresholds,
            "level_fractions": {str(k): round(float(counts[k]), 6) for k in range(len(percentiles) + 1)},
            "tta_augmentations": params["tta_augmentations"],
            "similar": generated("pred_similar"),
            "adversarial": generated("pred_adversarial"),
            "image_size": study["image_size"],
            "network_size": list(study["x"].shape[2:]),
            "device": str(self.device),
            "models": self.model_files,
            "latencies": {
                "pre": span("start", "pre"),
                "classifier": span("locked", "classifier"),
                "explainer": span("classifier", "explainer"),
                "generation": span("explainer", "generation"),
                "post": span("generation", "post"),
                "write": 0.0,  # set by write_result
                "total": span("start", "post"),
            },
        }

    @staticmethod
    def _write(array: np.ndarray, ext: str, affine: np.ndarray) -> str:
        """One result file in the (app's) temp folder; MONAI Label deletes it once sent or copied to the datastore."""
        if ext not in LEVEL_EXTENSIONS:  # checked in _parse
            raise _bad_request(f"unsupported result_extension {ext!r}")
        fd, name = tempfile.mkstemp(suffix=ext, prefix="explain_")
        os.close(fd)
        try:
            _write_array(name, array, ext, affine)
        except BaseException:
            os.unlink(name)
            raise
        return name


def _write_array(name: str, array: np.ndarray, ext: str, affine: np.ndarray) -> None:
    if ext == ".png":
        from PIL import Image

        # the array is x-first (MONAI's PILReader loads a PNG's (rows, cols) matrix transposed): store (rows, cols)
        Image.fromarray(np.ascontiguousarray(array.T.astype(np.uint8))).save(name, format="PNG")
    elif ext in (".nii.gz", ".nii"):
        import nibabel as nib

        a = np.asarray(affine, dtype=np.float64)
        if a.shape != (4, 4):  # 2D affine (3x3) -> 4x4
            full = np.eye(4)
            full[:2, :2], full[:2, 3] = a[:2, :2], a[:2, 2]
            a = full
        nib.save(nib.Nifti1Image(array, a), name)
    else:  # .nrrd
        import nrrd

        nrrd.write(name, array)  # Fortran index order: x (columns) fastest, as ITK/3D Slicer read it
