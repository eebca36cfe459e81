"""Speed benchmark of the bundle: every explanation method's throughput, latency and peak memory on one
device with the same classifier and images, the training steps' throughput and the data-loading time.

``python -m scripts.perf --help``; docs/performance.md has the commands and the results. Modules:
:mod:`.measure` (timing, memory), :mod:`.methods` (networks from the configs, ours, baselines, peers),
:mod:`.training` (classifier / explainer steps), :mod:`.data` (CacheDataset + DataLoader), :mod:`.report`
(tables, JSON), :mod:`.cli` (the command). The fast explanation path itself is :mod:`scripts.fast_path`.
"""

from .cli import build_parser, main, run_benchmark

__all__ = ["build_parser", "main", "run_benchmark"]
