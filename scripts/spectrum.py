"""Periodic artefacts in explanation maps: the power spectrum's peak at a given period.

A generator that flips a classifier with a universal pattern instead of changing the evidence leaves a lattice in
``|x_s - x_a|`` whose period is an upsampling stride of its decoder (transposed convolutions; Odena et al., "Deconvolution
and Checkerboard Artifacts", Distill 2016). :func:`periodic_peak_ratio` measures it: the mean power spectrum of the maps
at the harmonics of that period, divided by the spectrum's median. A smooth map or white noise gives a ratio near 1 to
10; a lattice of that period gives 10^3 or more.

No MONAI/torch function measures this; it is a few lines of ``torch.fft``.
"""

from __future__ import annotations

import torch

__all__ = ["mean_power_spectrum", "periodic_peak_ratio"]


def mean_power_spectrum(maps: torch.Tensor) -> torch.Tensor:
    """``mean_i |FFT(m_i - mean(m_i))|^2`` over a batch of 2D maps ``(B, 1, H, W)`` or ``(B, H, W)``: ``(H, W)``."""
    m = maps.detach().float()
    if m.ndim == 4:
        m = m.sum(1)
    if m.ndim != 3:
        raise ValueError(f"maps must be (B, 1, H, W) or (B, H, W), got {tuple(maps.shape)}")
    m = m - m.mean(dim=(-2, -1), keepdim=True)
    return torch.fft.fft2(m).abs().square().mean(0)


def periodic_peak_ratio(maps: torch.Tensor, period: int) -> float:
    """How far the mean power spectrum of ``maps`` peaks at the harmonics of ``period`` pixels (1: no peak).

    The harmonics are the frequencies ``(u, v)`` with ``u, v`` in ``{0, k, 2k, ...}`` (``k = H / period`` along rows,
    ``W / period`` along columns), the zero frequency excluded: a lattice repeating every ``period`` pixels puts its
    power there, whatever its motif. Each harmonic's power is divided by the largest power among its eight neighbouring
    frequencies (those that are not harmonics themselves): how far it stands out as a local peak. The largest
    quotient is returned. A smooth spectrum
    (image content, noise, the step at a map's border) gives about 1; a lattice, 10^2 and more. A tiny floor (1e-6 of
    the mean power) keeps a map without any structure finite. Each axis must be a multiple of ``period``.
    """
    power = mean_power_spectrum(maps)
    h, w = power.shape
    if period < 2 or h % period or w % period:
        raise ValueError(f"period must be >= 2 and divide the map size {h}x{w}, got {period}")
    ku, kv = h // period, w // period
    floor = 1e-6 * float(power.mean()) + 1e-30
    best = 0.0
    for u in range(0, h, ku):
        for v in range(0, w, kv):
            if u == 0 and v == 0:
                continue
            around = [float(power[(u + du) % h, (v + dv) % w]) for du in (-1, 0, 1) for dv in (-1, 0, 1)
                      if (du or dv) and not (((u + du) % h) % ku == 0 and ((v + dv) % w) % kv == 0)]
            best = max(best, (float(power[u, v]) + floor) / (max(around) + floor))
    return best


def main(argv: list[str] | None = None) -> int:
    """``python -m scripts.spectrum [--split validation] [--images 64] [--period 8] [config overrides...]``: the
    period peak of a trained explainer's maps (``explainer_checkpoint`` through ``configs/inference.json``, so
    ``--ckpt_dir``, ``--dataset_dir``, ``--datalist``, ``--generator_upsample`` apply) on the first images of a split
    and on a flat grey image of the same size; prints one JSON line."""
    import argparse
    import json

    from monai.bundle import ConfigParser

    from .checkpoint import load_network
    from .data import load_datalist
    from .errors import BundleInputError, install_excepthook
    from .pipeline import parse_overrides

    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--period", type=int, default=8)
    known, rest = parser.parse_known_args(argv)
    if known.images < 1 or known.period < 2:
        raise BundleInputError(f"--images must be >= 1 and --period >= 2, got {known.images} and {known.period}")
    config = ConfigParser()
    config.read_config("configs/inference.json")
    config.update(parse_overrides(rest))
    net = load_network(config.get_parsed_content("network_def"), config.get_parsed_content("explainer_checkpoint"),
                       key="generator", what="explainer checkpoint").eval()
    entries = load_datalist(config.get_parsed_content("datalist"), config.get_parsed_content("dataset_dir"),
                            known.split)[: known.images]
    if not entries:
        raise BundleInputError(f"the {known.split!r} split of {config.get_parsed_content('datalist')} has no images")
    preprocessing = config.get_parsed_content("preprocessing")
    x = torch.stack([torch.as_tensor(preprocessing(dict(e))["image"]) for e in entries]).float()
    with torch.no_grad():
        maps, flat = net(x), net(torch.full_like(x[:1], 0.5))
    if any(n % known.period for n in maps.shape[2:]):
        raise BundleInputError(f"--period {known.period} must divide the map size {list(maps.shape[2:])}")
    print(json.dumps({"images": len(entries), "split": known.split, "period": known.period,
                      "maps": periodic_peak_ratio(maps, known.period), "flat": periodic_peak_ratio(flat, known.period)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
