"""Data-loading time: the bundle's preprocessing (``configs/common.json#preprocessing``) through MONAI's
``CacheDataset`` and ``DataLoader`` exactly as ``configs/train.json`` builds them (cache the whole split with
``num_workers`` threads, then batches from the cache with ``num_workers=0``), over the first ``num_images`` images
of a datalist's training split (the synthetic default data unless told otherwise).

Reported: the cache fill (load + preprocess, seconds per image), and per batch the time to draw it from the cache
(collation) and to move it to the device.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from monai.data import CacheDataset, DataLoader

from ..data import ensure_synthetic_dataset, load_datalist
from .measure import synchronize
from .methods import ROOT, _parser

__all__ = ["measure_data_loading"]


def measure_data_loading(
    device: torch.device,
    image_size: int,
    batch_size: int,
    dataset_dir: str | Path | None = None,
    datalist: str | Path | None = None,
    num_images: int = 64,
    cache_workers: int | None = None,
    epochs: int = 2,
) -> dict:
    """Time the cache fill and the batches of ``epochs`` passes over ``num_images`` cached images."""
    parser = _parser("configs/common.json", image_size=[image_size, image_size])
    dataset_dir = Path(dataset_dir) if dataset_dir else ROOT / "data" / "synthetic"
    datalist = Path(datalist) if datalist else dataset_dir / "datalist.json"
    entries = load_datalist(ensure_synthetic_dataset(dataset_dir, datalist), dataset_dir, "training")[:num_images]
    workers = int(parser.get_parsed_content("num_workers")) if cache_workers is None else cache_workers
    preprocessing = parser.get_parsed_content("preprocessing")
    t0 = time.perf_counter()
    dataset = CacheDataset(entries, preprocessing, cache_rate=1.0, num_workers=workers, progress=False)
    cache_s = time.perf_counter() - t0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(0))
    draw: list[float] = []
    move: list[float] = []
    for _ in range(epochs):
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            image = batch["image"].to(device, non_blocking=True)
            synchronize(device)
            t2 = time.perf_counter()
            draw.append(t1 - t0)
            move.append(t2 - t1)
    per_batch = sum(draw) / len(draw) if draw else float("nan")
    per_move = sum(move) / len(move) if move else float("nan")
    images = epochs * len(entries)
    return {
        "image_size": image_size,
        "batch_size": batch_size,
        "num_images": len(entries),
        "dataset_dir": str(dataset_dir),
        "cached_image_shape": list(dataset[0]["image"].shape) if len(dataset) else None,
        "cache_workers": workers,
        "cache_fill_s": cache_s,
        "cache_fill_ms_per_image": 1e3 * cache_s / max(len(entries), 1),
        "batches": len(draw),
        "ms_per_batch_from_cache": 1e3 * per_batch,
        "ms_per_batch_to_device": 1e3 * per_move,
        "images_per_s_from_cache": images / (sum(draw) + sum(move)) if draw else None,
        "image_dtype": str(image.dtype) if draw else None,
    }
