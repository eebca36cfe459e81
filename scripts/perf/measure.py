"""Timing and memory measurement for the benchmark (:mod:`scripts.perf`).

* Throughput: ``n`` calls back to back on one batch, one device synchronisation at the end, ``images / second``;
  ``n`` is chosen from a synchronised probe call so that the timed block lasts at least ``min_time`` seconds
  (between ``min_iters`` and ``max_iters`` calls).
* Latency: one image, each call synchronised and timed on its own; median (and p90, min) of ``n`` calls.
* Peak memory, CUDA: ``torch.cuda.max_memory_allocated`` during the measurement minus what was allocated before it
  (weights and inputs already resident are not counted). CPU: the resident set size (``/proc/self/statm``) sampled
  every few milliseconds by a thread, peak minus the value before the measurement, after ``malloc_trim`` so
  memory freed earlier is handed back first; ``None`` where ``/proc`` is missing.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["synchronize", "MemoryMeter", "measure_throughput", "measure_latency", "memory_kind"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_kind(device: torch.device) -> str:
    """What the memory column holds on ``device``."""
    if device.type == "cuda":
        return "peak allocated minus allocated before (torch.cuda.max_memory_allocated), MiB"
    return "peak resident set size minus RSS before (sampled every 5 ms from /proc/self/statm), MiB"


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryMeter:
    """Context manager measuring the peak extra memory (bytes) of the block on ``device``; ``.peak`` after exit."""

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device = device
        self.interval = interval
        self.peak: int | None = None
        self._base = 0
        self._max = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss is not None and rss > self._max:
                self._max = rss

    def __enter__(self) -> MemoryMeter:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            _malloc_trim()
            rss = _rss_bytes()
            if rss is not None:
                self._base = self._max = rss
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            rss = _rss_bytes()
            self.peak = max(self._max, rss or 0) - self._base


def _iterations(probe_s: float, min_time: float, min_iters: int, max_iters: int) -> int:
    n = math.ceil(min_time / probe_s) if probe_s > 0 else max_iters
    return int(min(max(n, min_iters), max_iters))


def measure_throughput(
    fn: Callable[[], Any],
    batch_size: int,
    device: torch.device,
    warmup: int = 2,
    min_time: float = 1.0,
    min_iters: int = 3,
    max_iters: int = 1000,
) -> dict:
    """Images per second of ``fn`` (one call = one batch of ``batch_size``) and the peak extra memory."""
    with MemoryMeter(device) as mem:
        for _ in range(warmup):
            fn()
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        probe = time.perf_counter() - t0
        n = _iterations(probe, min_time, min_iters, max_iters)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        synchronize(device)
        total = time.perf_counter() - t0
    return {
        "batch_size": batch_size,
        "iterations": n,
        "seconds": total,
        "ms_per_batch": 1e3 * total / n,
        "images_per_s": batch_size * n / total,
        "peak_memory_mib": None if mem.peak is None else mem.peak / 2**20,
    }


def measure_latency(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int = 2,
    min_time: float = 1.0,
    min_iters: int = 5,
    max_iters: int = 100,
) -> dict:
    """Per-call time of ``fn`` on one image, each call synchronised: median, p90 and min of ``n`` calls (ms)."""
    with MemoryMeter(device) as mem:
        for _ in range(warmup):
            fn()
        synchronize(device)
        times: list[float] = []
        t_start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t0)
            n = _iterations(statistics.median(times), min_time, min_iters, max_iters)
            if len(times) >= n or (len(times) >= min_iters and time.perf_counter() - t_start > 4 * min_time):
                break
    times_ms = sorted(1e3 * t for t in times)
    return {
        "iterations": len(times_ms),
        "median_ms": statistics.median(times_ms),
        "p90_ms": times_ms[min(len(times_ms) - 1, math.ceil(0.9 * len(times_ms)) - 1)],
        "min_ms": times_ms[0],
        "peak_memory_mib": None if mem.peak is None else mem.peak / 2**20,
    }
