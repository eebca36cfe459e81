"""Soft 2D shapes for the synthetic radiographs (scripts/data/synthetic.py): ellipses, rims, lines, smooth noise.

Plain numpy on pixel grids ``yy, xx`` (``np.mgrid``), so every drawing is deterministic given its random generator.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ellipse", "smooth_noise", "soft", "segment"]


def ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0):
    """Normalised squared radius of an ellipse at every pixel (< 1 inside)."""
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    return u * u + v * v


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    coarse = rng.uniform(-1, 1, size=(cells + 1, cells + 1))
    h, w = shape
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)


def soft(inside: np.ndarray, edge: float = 0.15) -> np.ndarray:
    """Turn a normalised radius map into a soft 0..1 shape with a blurred rim."""
    return np.clip((1.0 - inside) / edge, 0.0, 1.0)


def segment(yy, xx, p0, p1, width):
    """Distance-based soft line from p0 to p1 (pixel coordinates)."""
    (y0, x0), (y1, x1) = p0, p1
    vy, vx = y1 - y0, x1 - x0
    length2 = max(vy * vy + vx * vx, 1e-6)
    t = np.clip(((yy - y0) * vy + (xx - x0) * vx) / length2, 0, 1)
    dist = np.hypot(yy - (y0 + t * vy), xx - (x0 + t * vx))
    return np.clip(1.0 - dist / width, 0.0, 1.0)
