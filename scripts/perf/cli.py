"""``python -m scripts.perf``: the speed benchmark of every explanation method, training and data loading.

One run, one device, the same classifier and the same images for every method. See docs/performance.md for the
commands used and the results; ``python -m scripts.perf --help`` for every option.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .data import measure_data_loading
from .measure import measure_latency, measure_throughput, memory_kind
from .methods import ROOT, Method, Networks, build_networks, make_fast_method, make_method, method_names
from .report import format_report, write_json, write_text
from .training import TrainOptions, count_host_syncs, make_classifier_step, make_explainer_step
from ..fast_path import FastPathOptions
from ..records import cpu_name

__all__ = ["build_parser", "run_benchmark", "merge_results", "main", "TARGETS"]

SCHEMA = "simadv_explainer.perf/1"
#: the bundle's performance targets (for one GPU), checked at 256×256 on CUDA only.
TARGETS = {
    "size": 256,
    "ours_images_per_s": 10_000,
    "ours_over_fastest_peer": 3.0,
    "ours_latency_ms": 1.0,
    "explainer_train_images_per_s": 1_000,
}


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.replace(",", " ").split()]


def _per_size(items: Sequence[str] | None, what: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"simadv_explainer: error: {what} takes SIZE=VALUE, got {item!r}")
        size, value = item.split("=", 1)
        out[int(size)] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scripts.perf",
        description="Speed of every explanation method (throughput, latency, peak memory), of the training steps and "
        "of data loading, on one device with the same classifier and images. Prints Markdown tables and writes JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--sizes", nargs="+", type=int, default=[256], help="square image sizes (224 256 512 1024)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32],
                   help="batch sizes tried for throughput (the best is reported)")
    p.add_argument("--batch-sizes-at", nargs="*", metavar="SIZE=B1,B2",
                   help="other batch sizes at one size, e.g. 1024=1,4")
    p.add_argument("--methods", default="all",
                   help="comma list of methods, or all / ours / peers. Methods: ours-single, ours-single-s2d (the "
                   "Single AE with the space-to-depth stem, space_to_depth 2), ours-duo, naive, mask-generator, "
                   "gradient, gradcam, bbmp (+tta after any of them), monai-gradcam, "
                   "monai-vanillagrad, captum-saliency, captum-layergradcam, pytorch-grad-cam")
    p.add_argument("--methods-at", nargs="*", metavar="SIZE=M1,M2", help="other methods at one size, e.g. 1024=ours")
    p.add_argument("--fast", nargs="*", default=[], metavar="OPTIONS",
                   help="fast-path rows for ours, one per option set, e.g. bf16+channels_last+cuda_graph "
                   "(options: bf16 fp16 tf32 no_tf32 channels_last compile compile=MODE cuda_graph eager)")
    p.add_argument("--fast-at", nargs="*", metavar="SIZE=OPTS;OPTS",
                   help="other fast-path option sets at one size, ';'-separated, e.g. 1024=bf16+cuda_graph")
    p.add_argument("--fast-modes", default="single",
                   help="generators that get the fast-path rows: single, single-s2d, duo, naive")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True for the whole run (every method)")
    p.add_argument("--no-latency", action="store_true", help="skip the single-image latency measurement")
    p.add_argument("--sections", default="explain,train,data", help="any of explain, train, data")
    p.add_argument("--train-sizes", nargs="*", type=int, help="sizes of the training measurements (first --sizes)")
    p.add_argument("--train-batch-sizes", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--train-what", default="classifier,explainer-single",
                   help="classifier and/or explainer-MODE (single, duo, naive)")
    p.add_argument("--train-fast", nargs="*", default=[], metavar="OPTIONS",
                   help="extra training rows, e.g. bf16+channels_last+fused (bf16 fp16 channels_last foreach "
                   "fused compile)")
    p.add_argument("--data-sizes", nargs="*", type=int, help="sizes of the data-loading measurement (first --sizes)")
    p.add_argument("--data-batch-size", type=int, default=16, help="configs/train.json's batch size")
    p.add_argument("--data-images", type=int, default=64, help="images of the training split to cache")
    p.add_argument("--dataset-dir", default=None, help="default: data/synthetic (written on first use)")
    p.add_argument("--datalist", default=None, help="default: <dataset-dir>/datalist.json")
    p.add_argument("--classifier", default=None, help="classifier checkpoint or TorchScript (default random)")
    p.add_argument("--explainer", default=None, help="Single AE explainer checkpoint (key 'generator')")
    p.add_argument("--explainer-duo", default=None, help="Duo AE explainer checkpoint")
    p.add_argument("--naive-explainer", default=None, help="naive explainer checkpoint")
    p.add_argument("--mask-generator", default=None, help="mask generator checkpoint")
    p.add_argument("--tta-augmentations", type=int, default=None, help="default: configs/evaluate.json's")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds each throughput block lasts at least")
    p.add_argument("--min-iters", type=int, default=3, help="calls per throughput block at least")
    p.add_argument("--max-iters", type=int, default=2000, help="calls per throughput block at most")
    p.add_argument("--latency-min-iters", type=int, default=5)
    p.add_argument("--latency-max-iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON result (default outputs/perf/perf_<device>.json)")
    p.add_argument("--markdown", default=None, help="also write the tables to this Markdown file")
    p.add_argument("--quiet", action="store_true", help="do not print progress lines")
    p.add_argument("--report", nargs="+", metavar="JSON", default=None,
                   help="measure nothing: print the tables of saved result files (several are merged, e.g. the "
                   "GPU script's perf_train.json perf_256.json perf_large.json) and write them with --markdown")
    return p


def _environment(device: torch.device) -> dict:
    import monai

    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_model": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "memory_kind": memory_kind(device),
        "niceness": os.nice(0) if hasattr(os, "nice") else None,
        "loadavg_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env.update({
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        })
    return env


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _error_text(e: BaseException) -> str:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "out of memory"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"[:300]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measure_method(method: Method, inputs: dict[int, tuple], x1: tuple, device: torch.device, args) -> dict:
    row: dict = {"method": method.name, "family": method.family, "status": method.status, "reason": method.reason,
                 "info": method.info, "throughput": []}
    if method.status != "ok":
        return row
    oom = False
    for b, (x, target) in inputs.items():
        if oom:
            row["throughput"].append({"batch_size": b, "error": "skipped after out of memory at a smaller batch"})
            continue
        xb = x.clone()
        tb = method.prepare_target(target)
        try:
            res = measure_throughput(lambda: method.run(xb, tb), b, device, args.warmup, args.min_time,
                                     args.min_iters, args.max_iters)
        except Exception as e:  # an implementation that cannot take this batch: the row says so
            res = {"batch_size": b, "error": _error_text(e)}
            oom = isinstance(e, torch.cuda.OutOfMemoryError)
        row["throughput"].append(res)
        del xb
        _free(device)
    ok = [r for r in row["throughput"] if "images_per_s" in r]
    row["best"] = max(ok, key=lambda r: r["images_per_s"]) if ok else None
    if not ok:
        row["status"] = "error"
        row["reason"] = "; ".join(r["error"] for r in row["throughput"])[:300]
    if not args.no_latency:
        x, target = x1
        xs = x.clone()
        ts = method.prepare_target(target)
        try:
            row["latency"] = measure_latency(lambda: method.run(xs, ts), device, args.warmup, args.min_time,
                                             args.latency_min_iters, args.latency_max_iters)
        except Exception as e:
            row["latency"] = {"error": _error_text(e)}
        _free(device)
    return row


def _inputs(nets: Networks, size: int, batch_sizes: list[int], seed: int) -> tuple[dict[int, tuple], tuple]:
    """The same random images (uniform [0, 1], fixed seed) for every method, with their targets ŷ."""
    device = nets.device
    gen = torch.Generator().manual_seed(seed)
    biggest = torch.rand(max(batch_sizes + [1]), 1, size, size, generator=gen)
    out = {}
    with torch.no_grad():
        for b in batch_sizes:
            x = biggest[:b].to(device)
            out[b] = (x, nets.classifier(x).argmax(dim=1))
        x1 = biggest[:1].to(device)
        one = (x1, nets.classifier(x1).argmax(dim=1))
    return out, one


def _best(rows: list[dict]) -> dict | None:
    """The row with the highest throughput; a fast-path row whose correctness check failed does not count."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("best") and r.get("info", {}).get("check_passed", True)]
    return max(ok, key=lambda r: r["best"]["images_per_s"]) if ok else None


def _summary(result: dict, device: torch.device) -> dict:
    per_size = {}
    for size, rows in result.get("explanation", {}).items():
        ours = _best([r for r in rows if r["family"] == "ours" and "+tta" not in r["method"]])
        peer = _best([r for r in rows if r["family"] == "peer"])
        lat = [r for r in rows if r["family"] == "ours" and "+tta" not in r["method"] and r.get("status") == "ok"
               and "median_ms" in (r.get("latency") or {}) and r.get("info", {}).get("check_passed", True)]
        lat_best = min(lat, key=lambda r: r["latency"]["median_ms"]) if lat else None
        per_size[size] = {
            "fastest_ours": ours["method"] if ours else None,
            "fastest_ours_images_per_s": ours["best"]["images_per_s"] if ours else None,
            "fastest_peer": peer["method"] if peer else None,
            "fastest_peer_images_per_s": peer["best"]["images_per_s"] if peer else None,
            "ours_over_fastest_peer": (ours["best"]["images_per_s"] / peer["best"]["images_per_s"])
            if ours and peer else None,
            "lowest_ours_latency_method": lat_best["method"] if lat_best else None,
            "lowest_ours_latency_ms": lat_best["latency"]["median_ms"] if lat_best else None,
        }
    size = str(TARGETS["size"])
    s = per_size.get(size, {})
    train = [r for r in result.get("training", []) if r["what"].startswith("explainer") and r.get("best")
             and r["image_size"] == TARGETS["size"]]
    train_best = max((r["best"]["images_per_s"] for r in train), default=None)
    on_gpu = device.type == "cuda"

    def verdict(measured: float | None, target: float, higher: bool = True) -> str:
        if not on_gpu:
            return "not applicable (targets are for a GPU; this run is on CPU)"
        if measured is None:
            return f"not measured (no {size}×{size} row)"
        return "met" if (measured >= target if higher else measured <= target) else "not met"

    items = [
        {"target": f"ours >= {TARGETS['ours_images_per_s']:,} explanations/s batched at {size}×{size}",
         "measured": s.get("fastest_ours_images_per_s"),
         "verdict": verdict(s.get("fastest_ours_images_per_s"), TARGETS["ours_images_per_s"])},
        {"target": f"ours >= {TARGETS['ours_over_fastest_peer']:g}x the fastest peer in the same run",
         "measured": s.get("ours_over_fastest_peer"),
         "verdict": verdict(s.get("ours_over_fastest_peer"), TARGETS["ours_over_fastest_peer"])},
        {"target": f"ours <= {TARGETS['ours_latency_ms']:g} ms per single image",
         "measured": s.get("lowest_ours_latency_ms"),
         "verdict": verdict(s.get("lowest_ours_latency_ms"), TARGETS["ours_latency_ms"], higher=False)},
        {"target": f"explainer training >= {TARGETS['explainer_train_images_per_s']:,} images/s",
         "measured": train_best,
         "verdict": verdict(train_best, TARGETS["explainer_train_images_per_s"])},
    ]
    note = "GPU targets, checked on CUDA only" if on_gpu else "GPU targets; this run is on CPU, so they are not checked"
    return {"per_size": per_size, "targets": {"note": note, "items": items}}


def _train_section(nets: Networks, args, device: torch.device, result: dict, progress) -> None:
    sizes = args.train_sizes or args.sizes[:1]
    options = [TrainOptions()] + [TrainOptions.parse(o) for o in args.train_fast]
    whats = [w.strip() for w in args.train_what.split(",") if w.strip()]
    for size in sizes:
        gen = torch.Generator().manual_seed(args.seed)
        for what in whats:
            for opt in options:
                row = {"what": what, "image_size": size, "options": opt.describe(), "throughput": []}
                _log(args.quiet, f"[perf] train {what} {size}² {opt.describe()}")
                for b in args.train_batch_sizes:
                    x = torch.rand(b, 1, size, size, generator=gen).to(device)
                    try:
                        if what == "classifier":
                            step = make_classifier_step(device, x, nets.num_classes, opt)
                        elif what.startswith("explainer"):
                            mode = what.split("-", 1)[1] if "-" in what else "single"
                            step = make_explainer_step(device, x, nets.classifier, mode, opt)
                        else:
                            raise SystemExit(f"simadv_explainer: error: unknown --train-what {what!r}")
                        res = measure_throughput(step, b, device, args.warmup, args.min_time, args.min_iters,
                                                 args.max_iters)
                        if what.startswith("explainer") and "host_syncs" not in row:
                            row["host_syncs"] = count_host_syncs(step, device)
                    except SystemExit:
                        raise
                    except Exception as e:
                        res = {"batch_size": b, "error": _error_text(e)}
                    row["throughput"].append(res)
                    step = None  # type: ignore[assignment]
                    _free(device)
                ok = [r for r in row["throughput"] if "images_per_s" in r]
                row["best"] = max(ok, key=lambda r: r["images_per_s"]) if ok else None
                row.setdefault("host_syncs", None)
                result["training"].append(row)
                progress(result)


def _data_section(args, device: torch.device, result: dict) -> None:
    for size in args.data_sizes or args.sizes[:1]:
        _log(args.quiet, f"[perf] data loading {size}²")
        try:
            res = measure_data_loading(device, size, args.data_batch_size, args.dataset_dir, args.datalist,
                                       args.data_images)
        except Exception as e:
            res = {"image_size": size, "batch_size": args.data_batch_size, "error": _error_text(e)}
        result["data_loading"].append(res)


def run_benchmark(args: argparse.Namespace, progress=None) -> dict:
    """Run every section asked for and return the result dict (also written as JSON by :func:`main`).

    ``progress(result)`` is called after each row with the partial result (``"complete": False``).
    """
    progress = progress or (lambda result: None)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - {"explain", "train", "data"}
    if unknown:
        raise SystemExit(f"simadv_explainer: error: unknown --sections {sorted(unknown)}")
    methods_at = _per_size(args.methods_at, "--methods-at")
    batches_at = _per_size(args.batch_sizes_at, "--batch-sizes-at")
    fast_options = {size: [FastPathOptions.parse(o) for o in args.fast] for size in args.sizes}
    for size, text in _per_size(args.fast_at, "--fast-at").items():
        fast_options[size] = [FastPathOptions.parse(o) for o in text.split(";") if o.strip()]
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    fast_modes = [m.strip() for m in args.fast_modes.split(",") if m.strip()]
    for size in args.sizes:
        method_names(methods_at.get(size, args.methods))  # fail early on a typo
    started = time.time()
    result: dict = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": None,  # set by main()
        "complete": False,
        "environment": _environment(device),
        "settings": {k: v for k, v in vars(args).items()},
        "explanation": {},
        "training": [],
        "data_loading": [],
    }
    torch.manual_seed(args.seed)
    modes = ("single", "single-s2d", "duo", "naive")
    nets = build_networks(device, args.sizes[0], modes, args.classifier, args.explainer, args.explainer_duo,
                          args.naive_explainer, args.mask_generator, args.tta_augmentations, args.seed)
    result["networks"] = nets.sources
    gc.collect()
    gc.freeze()  # the modules and networks loaded so far are never garbage: later collections skip them (fast)
    try:
        _run_sections(nets, args, device, sections, methods_at, batches_at, fast_options, fast_modes, result, progress)
    finally:
        gc.unfreeze()
    result["environment"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") \
        else None
    result["wall_s"] = time.time() - started
    result["summary"] = _summary(result, device)
    result["complete"] = True
    return result


def _run_sections(nets: Networks, args, device: torch.device, sections: set, methods_at: dict, batches_at: dict,
                  fast_options: dict, fast_modes: list, result: dict, progress) -> None:
    result["tta"] = nets.tta
    if "explain" in sections:
        for size in args.sizes:
            names = method_names(methods_at.get(size, args.methods))
            batch_sizes = _ints(batches_at[size]) if size in batches_at else list(args.batch_sizes)
            inputs, one = _inputs(nets, size, batch_sizes, args.seed)
            rows = []
            builders: list = [(n, None) for n in names]
            builders += [(None, (mode, o)) for o in fast_options.get(size, []) for mode in fast_modes]
            for name, fast in builders:
                if name is not None:
                    method = make_method(nets, name)
                else:
                    mode, opt = fast
                    check = inputs[max(inputs)][0][:4]
                    method = make_fast_method(nets, mode, opt, check)
                t0 = time.perf_counter()
                row = _measure_method(method, inputs, one, device, args)
                row["wall_s"] = time.perf_counter() - t0
                rows.append(row)
                _log(args.quiet, f"[perf] {size}² {method.name}: {row['status']}, {row['wall_s']:.1f} s")
                del method
                _free(device)
                result["explanation"][str(size)] = rows
                progress(result)
    if "train" in sections:
        _train_section(nets, args, device, result, progress)
    if "data" in sections:
        _data_section(args, device, result)
        progress(result)


def merge_results(paths: Sequence[str | Path]) -> dict:
    """One result from saved JSON files (explanation sizes, training and data rows together), summary recomputed."""
    import json

    merged: dict | None = None
    for path in paths:
        part = json.loads(Path(path).read_text())
        if merged is None:
            merged = {**part, "explanation": {}, "training": [], "data_loading": [], "sources": []}
        merged["explanation"].update(part.get("explanation", {}))
        merged["training"] += part.get("training", [])
        merged["data_loading"] += part.get("data_loading", [])
        merged["sources"].append({"file": str(path), "command": part.get("command"), "complete": part.get("complete")})
    if merged is None:
        raise SystemExit("simadv_explainer: error: --report needs at least one JSON file")
    merged["summary"] = _summary(merged, torch.device(merged["environment"]["device"]))
    return merged


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.report:
        merged = merge_results(args.report)
        text = format_report(merged)
        if args.markdown:
            write_text(args.markdown, text)
        print(text)
        return merged
    command = " ".join(["python -m scripts.perf", *argv])
    device_kind = "cuda" if args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    out = Path(args.out) if args.out else ROOT / "outputs" / "perf" / f"perf_{device_kind}.json"

    def progress(partial: dict) -> None:  # a run stopped half-way still leaves what it measured
        write_json(out, {**partial, "command": command})

    result = run_benchmark(args, progress)
    result["command"] = command
    write_json(out, result)
    report = format_report(result)
    if args.markdown:
        write_text(args.markdown, report)
    print(report)
    print(f"JSON: {out}" + (f"; Markdown: {args.markdown}" if args.markdown else ""))
    return result
