"""Markdown tables of a benchmark result (the dict :func:`scripts.perf.run_benchmark` returns / writes as JSON)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import atomic_write

__all__ = ["format_report", "write_json", "write_text"]


def _num(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _mem(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}" if v >= 10 else f"{v:.1f}"


def _explain_rows(rows: list[dict]) -> list[str]:
    out = [
        "| method | family | best batch | images/s (batched) | latency ms, b=1 (median) | peak mem MiB, best batch / b=1 "
        "| fast path vs fp32 eager (rel. L2 / tol.) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"| {r['method']} | {r['family']} | – | – | – | – | – | {r['status']}: {r.get('reason') or ''} |")
            continue
        best = r.get("best") or {}
        lat = r.get("latency") or {}
        check = r.get("info", {})
        fast = "–"
        if "rel_l2_error" in check:
            fast = f"{check['rel_l2_error']:.1e} / {check['tolerance']:.0e} ({'pass' if check['check_passed'] else 'FAIL'})"
        errors = [f"b={b['batch_size']}: {b['error']}" for b in r.get("throughput", []) if b.get("error")]
        if lat.get("error"):
            errors.append(f"latency: {lat['error']}")
        note = "; ".join(errors)[:160]
        mem = f"{_mem(best.get('peak_memory_mib'))} / {_mem(lat.get('peak_memory_mib'))}" if best else "–"
        out.append(
            f"| {r['method']} | {r['family']} | {best.get('batch_size', '–')} | {_num(best.get('images_per_s'))} "
            f"| {_num(lat.get('median_ms'))} | {mem} | {fast} | {note} |"
        )
    return out


def _train_rows(rows: list[dict]) -> list[str]:
    out = [
        "| what | size | options | best batch | images/s | ms/step (best batch) | peak mem MiB | host syncs flagged | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = r.get("best") or {}
        syncs = r.get("host_syncs")
        sync_text = "not checked (CUDA only)" if syncs is None else f"{syncs['flagged']} in {syncs['steps']} steps"
        errors = "; ".join(f"b={b['batch_size']}: {b['error']}" for b in r.get("throughput", []) if b.get("error"))
        if r.get("error"):
            errors = r["error"]
        out.append(
            f"| {r['what']} | {r['image_size']} | {r['options']} | {best.get('batch_size', '–')} "
            f"| {_num(best.get('images_per_s'))} | {_num(best.get('ms_per_batch'))} | {_mem(best.get('peak_memory_mib'))} "
            f"| {sync_text} | {errors[:160]} |"
        )
    return out


def _data_rows(rows: list[dict]) -> list[str]:
    out = [
        "| size | batch | images | cache fill ms/image | ms/batch from cache | ms/batch to device | images/s from cache | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("error"):
            out.append(f"| {r['image_size']} | {r['batch_size']} | – | – | – | – | – | {r['error'][:160]} |")
            continue
        out.append(
            f"| {r['image_size']} | {r['batch_size']} | {r['num_images']} | {_num(r['cache_fill_ms_per_image'])} "
            f"| {_num(r['ms_per_batch_from_cache'])} | {_num(r['ms_per_batch_to_device'])} "
            f"| {_num(r['images_per_s_from_cache'])} | |"
        )
    return out


def format_report(result: dict) -> str:
    """The whole result as Markdown: environment line, one explanation table per size, training, data, targets."""
    env = result["environment"]
    lines = [
        f"Device: **{env['device_name']}** ({env['device']}); torch {env['torch']}, monai {env['monai']}, "
        f"{env['torch_threads']} CPU threads; load average at start {env.get('loadavg_start')}, "
        f"at end {env.get('loadavg_end')}; niceness {env.get('niceness')}.",
        f"Memory column: {env['memory_kind']}.",
        "",
    ]
    for size, rows in result.get("explanation", {}).items():
        lines += [f"### Explanation, {size}×{size}", "", *_explain_rows(rows), ""]
    if result.get("training"):
        lines += ["### Training step", "", *_train_rows(result["training"]), ""]
    if result.get("data_loading"):
        lines += ["### Data loading", "", *_data_rows(result["data_loading"]), ""]
    summary = result.get("summary", {})
    for size, s in summary.get("per_size", {}).items():
        ratio = s.get("ours_over_fastest_peer")
        lines.append(
            f"- {size}×{size}: fastest ours **{s.get('fastest_ours') or '–'}** {_num(s.get('fastest_ours_images_per_s'))} "
            f"images/s; fastest peer {s.get('fastest_peer') or '–'} {_num(s.get('fastest_peer_images_per_s'))} images/s; "
            f"ratio {_num(ratio)}; lowest ours latency {_num(s.get('lowest_ours_latency_ms'))} ms"
            f" ({s.get('lowest_ours_latency_method') or '–'})."
        )
    targets = summary.get("targets")
    if targets:
        lines += ["", f"Performance targets ({targets['note']}):"]
        for t in targets["items"]:
            lines.append(f"- {t['target']}: measured {_num(t.get('measured'))} → **{t['verdict']}**")
    return "\n".join(lines) + "\n"


def _finite(obj: object) -> object:
    """``obj`` with NaN/inf floats replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, result: dict) -> None:
    """Write ``result`` as indented strict JSON, atomically (:func:`scripts.atomic.atomic_write`)."""
    clean = _finite(result)
    atomic_write(path, lambda f: json.dump(clean, f, indent=2, allow_nan=False, default=str))


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))
