"""Seconds per image of explanation methods: warm, one image at a time, the methods timed in turns.

The timing of the localization benchmark (:class:`scripts.benchmark.LocalizationBenchmark`): the same device and
the same images for every method, the median of many calls.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence

import torch

__all__ = ["synchronize", "time_in_turns"]

PROGRESS_SECONDS = 10.0  #: at most this long between two progress lines of :func:`time_in_turns`


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_in_turns(
    methods: Mapping[Hashable, Callable[[torch.Tensor], object]],
    images: Sequence[torch.Tensor],
    device: torch.device | str = "cpu",
    min_seconds: float = 0.0,
) -> dict[Hashable, float]:
    """Median seconds per image of each method, one image at a time, warm, timed *in turns*.

    After one untimed warm-up call each, every round gives each method one call on the same image (the images in
    turn); a method leaves the rounds once it has explained every image once and ``min_seconds`` of its calls are
    measured. Taking turns call by call puts a slow spell of a shared machine on every method alike, where timing
    one method after the other would pin it on whichever ran then.
    """
    logger = logging.getLogger("simadv_explainer.timing")
    logger.info(f"timing {len(methods)} methods in turns on {len(images)} images, >= {min_seconds:g} s of calls each")
    for method in methods.values():
        method(images[0])  # warm-up
    synchronize(device)
    times: dict[Hashable, list[float]] = {name: [] for name in methods}
    active = list(methods)
    i = 0
    last_log = time.perf_counter()
    while active:
        if time.perf_counter() - last_log >= PROGRESS_SECONDS:  # a progress line: this phase can take minutes
            last_log = time.perf_counter()
            least = min(sum(times[n]) for n in active)
            logger.info(f"timing: round {i}, {len(active)} of {len(methods)} methods still timing "
                        f"(least timed so far {least:.1f} of {min_seconds:g} s)")
        x = images[i % len(images)]
        for name in active:
            start = time.perf_counter()
            methods[name](x)
            synchronize(device)
            times[name].append(time.perf_counter() - start)
        i += 1
        active = [n for n in active if i < len(images) or sum(times[n]) < min_seconds]
    return {name: statistics.median(t) for name, t in times.items()}
