"""The realistic anatomy of the synthetic data (``anatomy="realistic"`` in scripts/data/synthetic.py).

A frontal (PA) chest radiograph drawn as a projection of attenuation layers, then "acquired" (docs/data.md §6):
``RealisticChest`` (anatomy, devices), ``burned_text``, the findings (``FINDING_FUNCS``: consolidation, boxes,
nodules, pneumothorax, each with its mask) and the helpers they share (``Pool``, ``blur``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .shapes import ellipse, smooth_noise

__all__ = ["Pool", "blur", "RealisticChest", "burned_text", "FINDINGS", "FINDING_FUNCS", "REGIME_FINDING"]


# ----------------------------------------------------------------------------------------------------------------
# Realistic anatomy: a frontal (PA) chest radiograph drawn as a projection of attenuation, then "acquired".
# Geometry lives in body coordinates (u, v): u to the image's right, v down, in units of the body scale ``s``
# (pixels), origin near the mid-thorax; ``a = |u|`` is the distance from the midline. Patient's right is the image's
# left (side -1), as radiographs are shown.
# ----------------------------------------------------------------------------------------------------------------

_SS = 2  # shapes are rasterised at twice the resolution and box-averaged down: anti-aliased edges


class Pool:
    """Uniform random numbers drawn a block at a time (one numpy call per number is slow), consumed in order."""

    def __init__(self, rng: np.random.Generator, block: int = 1024) -> None:
        self.rng, self.block = rng, block
        self.values, self.i = rng.random(block), 0

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> float:
        if self.i >= len(self.values):
            self.values, self.i = self.rng.random(self.block), 0
        self.i += 1
        return lo + (hi - lo) * float(self.values[self.i - 1])


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (edges extended); large sigmas go through a downsampled copy."""
    if sigma < 0.3:
        return a
    h, w = a.shape
    if sigma > 3.0:
        f = int(sigma // 1.5)
        small = np.asarray(Image.fromarray(a.astype(np.float32)).resize((max(2, w // f), max(2, h // f)), Image.BOX))
        small = blur(small, sigma / f)
        return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))
    r = int(np.ceil(2.5 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    p = np.pad(a, ((r, r), (0, 0)), mode="edge")
    out = k[0] * p[0:h]
    for i in range(1, 2 * r + 1):
        out = out + k[i] * p[i:i + h]
    p = np.pad(out, ((0, 0), (r, r)), mode="edge")
    out = k[0] * p[:, 0:w]
    for i in range(1, 2 * r + 1):
        out = out + k[i] * p[:, i:i + w]
    return out


def _chaikin(points: np.ndarray, rounds: int = 2, closed: bool = True) -> np.ndarray:
    """Corner-cutting smoothing of a polygon or polyline (k, 2)."""
    for _ in range(rounds):
        p = points
        q = np.roll(p, -1, axis=0) if closed else p[1:]
        p0 = p if closed else p[:-1]
        new = np.empty((2 * len(p0), 2))
        new[0::2] = 0.75 * p0 + 0.25 * q
        new[1::2] = 0.25 * p0 + 0.75 * q
        points = new if closed else np.vstack([points[:1], new, points[-1:]])
    return points


class _Canvas:
    """Maps body coordinates to pixels and rasterises shapes into float layers (at ``_SS`` times the resolution)."""

    def __init__(self, n: int, cy: float, cx: float, s: float, tilt: float) -> None:
        self.n, self.cy, self.cx, self.s = n, cy, cx, s
        self.c, self.si = math.cos(tilt), math.sin(tilt)
        self.m = np.array([[self.c, self.si], [-self.si, self.c]]) * s  # (u, v) row vector @ m -> (x, y) offsets
        self.t = np.array([cx, cy])

    def px(self, uv) -> np.ndarray:
        """(k, 2) body coordinates -> (k, 2) pixel coordinates (x, y) at the output resolution."""
        return np.asarray(uv, dtype=np.float64).reshape(-1, 2) @ self.m + self.t

    def layer(self):
        img = Image.new("F", (self.n * _SS, self.n * _SS), 0.0)
        return img, ImageDraw.Draw(img)

    def pt(self, u: float, v: float) -> tuple[float, float]:
        """One point, body coordinates -> layer pixel coordinates (x, y) (plain floats: fast)."""
        return ((self.cx + (self.c * u - self.si * v) * self.s) * _SS,
                (self.cy + (self.si * u + self.c * v) * self.s) * _SS)

    def pts(self, uv) -> list[float]:
        """Body coordinates -> a flat [x0, y0, x1, y1, ...] list on the layer."""
        return (self.px(uv) * _SS).ravel().tolist()

    def width(self, w: float) -> int:
        """A line width in body units -> pixels on the layer (at least 1)."""
        return max(1, int(round(w * self.s * _SS)))

    def down(self, img) -> np.ndarray:
        return np.asarray(img.reduce(_SS), dtype=np.float32)


def _side(points, side: int) -> np.ndarray:
    """(a, v) pairs of one side -> (u, v): u = side * a."""
    p = np.asarray(points, dtype=np.float64).copy()
    p[:, 0] *= side
    return p


def _chest_halfwidth(v, wf: float):
    """Inner half-width of the rib cage (lateral lung border) along v."""
    return wf * np.interp(v, [-0.46, -0.40, -0.32, -0.20, -0.05, 0.12, 0.40],
                          [0.10, 0.19, 0.28, 0.345, 0.385, 0.405, 0.41])


class RealisticChest:
    """One draw of the realistic anatomy: attenuation layers and the lung geometry the findings need."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        p = Pool(rng)
        self.n, self.p = n, p
        s = n * p(0.86, 0.98)
        cy, cx = n * p(0.50, 0.56), n * p(0.47, 0.53)
        self.cv = _Canvas(n, cy, cx, s, p(-0.035, 0.035))
        self.s = s
        self.hf = p(0.92, 1.06)   # inspiration (lung height)
        self.wf = p(0.93, 1.06)   # chest width
        self.hs = p(0.88, 1.15)   # heart size
        self.dome = {-1: 0.12 * self.hf + p(-0.02, 0.02)}  # right dome higher (patient right = image left)
        self.dome[1] = self.dome[-1] + p(0.015, 0.045)
        self.apex = -0.38 * self.hf + p(-0.015, 0.015)
        self.hilum = {side: (side * p(0.095, 0.12), -0.09 + (0.0 if side < 0 else -0.02) + p(-0.015, 0.015))
                      for side in (-1, 1)}
        self.lungs = {}
        for side in (-1, 1):
            img, d = self.cv.layer()
            d.polygon(self.cv.pts(self._lung_outline(side)), fill=1.0)
            self.lungs[side] = self.cv.down(img)
        img, d = self.cv.layer()
        d.polygon(self.cv.pts(self._mediastinum()), fill=1.0)
        self.heart = self.cv.down(img)

    # --- outlines -------------------------------------------------------------------------------------------
    def _lung_outline(self, side: int) -> np.ndarray:
        p, wf = self.p, self.wf
        apex, dome = self.apex, self.dome[side]
        cp = dome + (0.13 + p(-0.02, 0.02)) * self.hf  # costophrenic angle, well below the dome's top
        lateral = []
        for t in np.linspace(0.0, 1.0, 11):
            v = apex + 0.01 + t * (cp - apex - 0.01)
            round_apex = 1.0 - (1.0 - min(1.0, t / 0.3)) ** 2  # a dome-shaped apex
            a_wall = _chest_halfwidth(v, wf) - 0.02
            lateral.append((0.13 + (a_wall - 0.13) * round_apex + p(-0.004, 0.004), v))
        a_cp = lateral[-1][0]
        a_top = p(0.16, 0.20)
        dome_line = [(a_cp - 0.03, cp - 0.055), (a_cp - 0.10, dome + 0.012), (a_top, dome), (0.10, dome + 0.02),
                     (0.06, dome + 0.06)]
        medial = [(0.045, dome), (0.045, -0.15), (0.05, apex + 0.08), (0.07, apex + 0.02), (0.11, apex - 0.002)]
        outline = [(0.105, apex - 0.005)] + lateral + [(a_cp + 0.005, cp + 0.01)] + dome_line + medial
        pts = np.array(outline)
        smooth = _chaikin(pts, 2)
        # keep the costophrenic angle sharp: re-insert the corner after smoothing
        k = int(np.argmin(np.hypot(smooth[:, 0] - a_cp, smooth[:, 1] - cp)))
        smooth = np.insert(smooth, k, [a_cp + 0.008, cp + 0.012], axis=0)
        return _side(smooth, side)

    def _mediastinum(self) -> np.ndarray:
        p, hs = self.p, self.hs
        dr, dl = self.dome[-1], self.dome[1]
        knob = p(0.095, 0.125)
        right = [(-0.058, -0.60), (-0.062, -0.32), (-0.068, -0.17), (-0.085, -0.08), (-0.115 * hs, 0.0),
                 (-0.125 * hs, 0.07), (-0.11 * hs, dr + 0.02), (-0.08, dr + 0.08)]
        bottom = [(0.0, 0.45), (0.2, 0.45)]
        left = [(0.23 * hs, dl + 0.06), (0.26 * hs, dl + 0.005), (0.265 * hs, 0.09), (0.235 * hs, 0.02),
                (0.17 * hs, -0.035), (0.125, -0.06), (0.105, -0.10), (0.088, -0.13), (knob, -0.165),
                (knob + 0.005, -0.20), (0.085, -0.245), (0.058, -0.29), (0.052, -0.60)]
        return _chaikin(np.array(right + bottom + left), 2)

    # --- layers ---------------------------------------------------------------------------------------------
    def layers(self) -> dict[str, np.ndarray]:
        """Every anatomical layer at the output resolution (0..1 each, weighted in :meth:`density`)."""
        p, cv = self.p, self.cv
        out = {}
        # body: neck, shoulders, torso and arms
        img, d = cv.layer()
        wf = self.wf
        neck = p(0.11, 0.135)
        sh = p(-0.47, -0.43)
        torso = [(neck, -1.0), (neck, sh - 0.09), (neck + 0.03, sh - 0.02), (0.2, sh + 0.01), (0.32, sh + 0.025),
                 (0.42 * wf, sh + 0.045), (0.49 * wf, sh + 0.08), (0.53 * wf, sh + 0.14), (0.55 * wf, sh + 0.25),
                 (0.56 * wf, 0.2), (0.57 * wf, 1.0)]
        outline = _side(torso, -1).tolist() + _side(torso[::-1], 1).tolist()
        d.polygon(cv.pts(_chaikin(np.array(outline), 2)), fill=1.0)
        out["body"] = cv.down(img)
        # lungs and the mediastinum/heart were rasterised in __init__
        # trachea and main bronchi (air), gastric bubble
        img, d = cv.layer()
        carina = (p(-0.01, 0.01), -0.19 + p(-0.015, 0.015))
        d.line(cv.pts([(0.0, -1.0), (0.0, -0.45), (carina[0], carina[1] - 0.02)]), fill=1.0, width=cv.width(0.042))
        for side in (-1, 1):
            h = self.hilum[side]
            d.line(cv.pts([carina, ((carina[0] + h[0]) / 2, (carina[1] + h[1]) / 2 + 0.01), (0.8 * h[0], h[1])]),
                   fill=0.8, width=cv.width(0.026))
        out["airway"] = cv.down(img)
        img, d = cv.layer()
        if p() < 0.75:
            gy, gx, ga, gb = self.dome[1] + p(0.05, 0.08), p(0.14, 0.24), p(0.035, 0.06), p(0.02, 0.035)
            box = cv.px([(gx - ga, gy - gb), (gx + ga, gy + gb)]) * _SS
            d.chord([tuple(box[0]), tuple(box[1])], 180, 360, fill=1.0)  # air over the fluid level
        out["gas"] = cv.down(img)
        # spine: vertebral bodies with cortex, pedicles, spinous processes
        img, d = cv.layer()
        v = self.apex - 0.35 + p(0.0, 0.06)
        height = p(0.05, 0.058)
        while v < 0.75:
            hw = 0.028 if v < self.apex - 0.04 else 0.036 + 0.012 * min(1.0, max(0.0, (v + 0.2) / 0.8))
            hh = height * (0.8 if v < self.apex - 0.04 else 1.0) * (1 + 0.25 * max(0.0, v))
            for inset, fill in ((0.0, 1.0), (0.007, 0.72)):  # the body, then its less dense core: a cortex
                x0, x1, y0, y1, e = -hw + inset, hw - inset, v + inset, v + hh - inset, 0.006
                d.polygon([cv.pt(x0 + e, y0), cv.pt(x1 - e, y0), cv.pt(x1, y0 + e), cv.pt(x1 + 0.003, y1 - e),
                           cv.pt(x1 + 0.003 - e, y1), cv.pt(x0 - 0.003 + e, y1), cv.pt(x0 - 0.003, y1 - e),
                           cv.pt(x0, y0 + e)], fill=fill)
            for side in (-1, 1):  # pedicles: small rings
                c = cv.pt(side * (hw - 0.009), v + 0.35 * hh)
                r = 0.008 * self.s * _SS
                d.ellipse([c[0] - r, c[1] - 1.3 * r, c[0] + r, c[1] + 1.3 * r], outline=1.25,
                          width=max(1, int(0.35 * r)))
            c = cv.pt(0.0, v + 0.75 * hh)
            r = 0.006 * self.s * _SS
            d.ellipse([c[0] - r, c[1] - 1.5 * r, c[0] + r, c[1] + 1.5 * r], fill=1.2)
            v += hh + height * 0.22
        out["spine"] = cv.down(img)
        # ribs: posterior (more horizontal, denser) and anterior (sloping down medially, fainter) arcs with cortex
        post_img, post = cv.layer()
        ant_img, ant = cv.layer()
        step = p(0.056, 0.064) * self.hf
        top = self.apex + p(0.0, 0.02)
        for side in (-1, 1):
            for k in range(11):
                v0 = top + k * step + p(-0.004, 0.004)
                a_lat = _chest_halfwidth(v0 + 0.05, self.wf) + 0.012
                t = np.linspace(0.0, 1.0, 9)
                a = 0.04 + (a_lat - 0.04) * t
                vv = v0 - (0.03 + 0.004 * k) * np.sin(np.pi * t * 0.9) + (0.085 + 0.003 * k) * t ** 3.2
                poly = _chaikin(np.stack([a, vv], 1), 1, closed=False)
                w = (0.021 + 0.0012 * k) * p(0.9, 1.1)
                post.line(cv.pts(_side(poly, side)), fill=1.0, width=cv.width(w))
                post.line(cv.pts(_side(poly[1:-1], side)), fill=0.55, width=cv.width(0.5 * w))
                # anterior: from the lateral wall, inferomedially to the costochondral junction
                a_end = p(0.11, 0.17) + 0.006 * k
                v_lat = vv[-1]
                drop = (0.09 + 0.006 * k) * p(0.9, 1.15)
                ta = np.linspace(0.0, 1.0, 7)
                aa = a_lat - (a_lat - a_end) * ta
                va = v_lat + drop * (0.35 * ta + 0.65 * ta ** 0.8) - 0.02 * np.sin(np.pi * ta)
                apoly = np.stack([aa, va], 1)
                wa = 0.028 * p(0.9, 1.1)
                ant.line(cv.pts(_side(apoly, side)), fill=1.0, width=cv.width(wa))
                ant.line(cv.pts(_side(apoly[1:-1], side)), fill=0.6, width=cv.width(0.5 * wa))
        out["ribs_post"] = cv.down(post_img)
        out["ribs_ant"] = cv.down(ant_img)
        # clavicles, scapulae, humeral heads
        img, d = cv.layer()
        cl = self.apex + p(0.0, 0.035)
        for side in (-1, 1):
            rise = p(0.02, 0.06)
            clav = np.array([(0.035, cl + 0.045), (0.10, cl + 0.03), (0.19, cl + 0.012), (0.28, cl - 0.3 * rise),
                             (0.36, cl - 0.01 - 0.7 * rise), (0.44 * self.wf, cl - 0.01 - rise)])
            clav = _chaikin(clav, 1, closed=False)
            w = p(0.028, 0.036)
            d.line(cv.pts(_side(clav, side)), fill=1.0, width=cv.width(w))
            d.line(cv.pts(_side(clav[1:-1], side)), fill=0.7, width=cv.width(0.45 * w))
            hx, hy = 0.50 * self.wf + p(-0.01, 0.02), cl + p(0.01, 0.04)
            d.line(cv.pts(_side([(hx, hy), (hx + 0.03, hy + 0.5)], side)), fill=0.9, width=cv.width(0.09))
            c = cv.px(_side([(hx, hy)], side))[0] * _SS
            r = 0.065 * self.s * _SS
            d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=1.0)
        out["bones"] = cv.down(img)
        img, d = cv.layer()
        for side in (-1, 1):
            sc = [(0.43 * self.wf, cl + 0.03), (0.36 * self.wf, cl + 0.05), (0.33 * self.wf, cl + 0.12),
                  (0.38 * self.wf, cl + p(0.28, 0.34)), (0.47 * self.wf, cl + 0.1)]
            d.polygon(cv.pts(_chaikin(_side(sc, side), 2)), fill=1.0)
        out["scapula"] = cv.down(img)
        # hila and pulmonary vessels branching from them
        img, d = cv.layer()
        for side in (-1, 1):
            hu, hv = self.hilum[side]
            c = cv.px([(hu, hv)])[0] * _SS
            rx, ry = 0.028 * self.s * _SS, 0.055 * self.s * _SS
            d.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], fill=1.0)
        out["hila"] = blur(cv.down(img), 0.012 * self.s)
        img, d = cv.layer()
        for side in (-1, 1):
            hu, hv = self.hilum[side]
            for ang in (-80, -55, -30, -8, 15, 40, 62, 85):
                ang = np.deg2rad(ang + p(-8, 8))
                self._vessel(d, (hu + side * 0.01, hv + 0.03 * np.sin(ang)), side, ang, 0.075 * p(0.8, 1.2),
                             0.012 * p(0.85, 1.15), 0)
        out["vessels"] = cv.down(img)
        # breast shadows (optional)
        img, d = cv.layer()
        if p() < 0.4:
            for side in (-1, 1):
                bu, bv, bw, bh = side * p(0.22, 0.30), self.dome[side] + p(0.02, 0.08), p(0.14, 0.2), p(0.12, 0.16)
                c = cv.px([(bu, bv)])[0] * _SS
                d.ellipse([c[0] - bw * self.s * _SS, c[1] - bh * self.s * _SS, c[0] + bw * self.s * _SS,
                           c[1] + bh * self.s * _SS], fill=1.0)
        out["breast"] = blur(cv.down(img), 0.03 * self.s)
        return out

    def _vessel(self, d, start, side, ang, length, width, depth):
        """One branch (body coordinates; ``ang`` from the lateral horizontal, positive downwards), then two children."""
        p, cv = self.p, self.cv
        end = (start[0] + side * length * math.cos(ang), start[1] + length * math.sin(ang))
        e = cv.pt(*end)
        iy, ix = int(e[1] / _SS), int(e[0] / _SS)
        inside = 0 <= iy < self.n and 0 <= ix < self.n and self.lungs[side][iy, ix] > 0.3
        wpx = width * self.s * _SS
        mid = cv.pt(0.5 * (start[0] + end[0]) + p(-0.15, 0.15) * length, 0.5 * (start[1] + end[1]))
        fill = min(1.0, 0.3 + 0.7 * wpx / 3.0) * (1.0 - 0.15 * depth)
        d.line([cv.pt(*start), mid, e], fill=fill, width=max(1, int(round(wpx))))
        if depth >= 3 or not inside:
            return
        for sign in (-1, 1):
            self._vessel(d, end, side, ang + sign * math.radians(p(14, 34)), length * p(0.62, 0.85), width * 0.72,
                         depth + 1)

    def devices(self, p: Pool) -> np.ndarray:
        """Radiopaque devices, independent of the label: ECG electrodes with leads, an endotracheal tube, a
        nasogastric tube, a central venous line (each present in some images)."""
        cv, s = self.cv, self.s
        img, d = cv.layer()
        if p() < 0.55:  # ECG electrodes: a pad, a metal snap, a lead running off the image
            for _ in range(int(p(2, 5.99))):
                u, v = p(-0.45, 0.45), p(-0.42, 0.3)
                c = cv.pt(u, v)
                r = 0.024 * s * _SS
                edge = (p(-0.7, 0.7), -0.75) if p() < 0.5 else ((0.75 if u > 0 else -0.75), p(-0.6, 0.6))
                mid = ((u + edge[0]) / 2 + p(-0.15, 0.15), (v + edge[1]) / 2 + p(-0.15, 0.15))
                t = np.linspace(0, 1, 12)[:, None]
                curve = (1 - t) ** 2 * np.array([u, v]) + 2 * t * (1 - t) * np.array(mid) + t ** 2 * np.array(edge)
                d.line(cv.pts(curve), fill=0.45, width=cv.width(0.007))
                d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=0.3)
                d.ellipse([c[0] - 0.4 * r, c[1] - 0.4 * r, c[0] + 0.4 * r, c[1] + 0.4 * r], fill=1.2)
        carina = -0.19
        if p() < 0.25:  # endotracheal tube, tip a few cm above the carina
            tip = carina - p(0.04, 0.09)
            d.line(cv.pts([(0.0, -1.0), (0.0, tip)]), fill=0.18, width=cv.width(0.03))
            d.line(cv.pts([(-0.01, -1.0), (-0.01, tip)]), fill=0.9, width=cv.width(0.007))
        if p() < 0.2:  # nasogastric tube: down the oesophagus, through the diaphragm, into the stomach
            dl = self.dome[1]
            path = _chaikin(np.array([(0.01, -1.0), (0.015, -0.4), (0.03, 0.0), (0.07, dl + 0.04),
                                      (0.16, dl + 0.1), (0.22 + p(0, 0.05), dl + 0.05)]), 2, closed=False)
            d.line(cv.pts(path), fill=0.8, width=cv.width(0.008))
        if p() < 0.2:  # central venous line from a subclavian vein to the superior vena cava
            side = -1 if p() < 0.7 else 1
            path = _chaikin(_side([(0.6, self.apex + 0.1), (0.3, self.apex + 0.06), (0.12, self.apex + 0.1),
                                   (0.06, -0.2), (0.055, p(-0.14, -0.06))], side), 2, closed=False)
            d.line(cv.pts(path), fill=0.85, width=cv.width(0.007))
        return cv.down(img)


@lru_cache(maxsize=16)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, ImportError):  # no FreeType: the bitmap default font
        return ImageFont.load_default()


_TEXTS = ("AP", "PA", "PORTABLE", "ERECT", "SUPINE", "SITTING", "CHEST", "INSP", "1", "2")


def burned_text(p: Pool, n: int) -> np.ndarray:
    """Burned-in annotations (both classes): a side marker and 0-2 labels or time/date stamps, PIL's default font."""
    img = Image.new("L", (n, n), 0)
    d = ImageDraw.Draw(img)
    items = []
    if p() < 0.85:
        items.append(("R" if p() < 0.5 else "L", 1.4))
    for _ in range(int(p(0, 2.99))):
        r = p()
        if r < 0.5:
            text = _TEXTS[int(p(0, len(_TEXTS) - 0.01))]
        elif r < 0.75:
            text = f"{int(p(0, 23.99)):02d}:{int(p(0, 59.99)):02d}"
        else:
            text = f"{int(p(1, 28.99)):02d}/{int(p(1, 12.99)):02d}/{int(p(10, 99.99)):02d}"
        items.append((text, 1.0))
    for text, big in items:
        font = _font(max(6, int(round(n * p(0.045, 0.065) * big))))
        x0, y0, x1, y1 = d.textbbox((0, 0), text, font=font)
        w, h = x1 - x0, y1 - y0
        if w >= n - 4 or h >= n // 3:
            continue
        x = p(2, max(2.0, n - w - 2)) if p() < 0.5 else (2 if p() < 0.5 else n - w - 2)
        y = p(1, 0.12 * n) if p() < 0.6 else p(0.82 * n, max(0.82 * n, n - h - 2))
        d.text((x - x0, y - y0), text, fill=int(255 * p(0.75, 1.0)), font=font)
    return np.asarray(img, dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------------------------
# Findings, shared by both anatomies. Each returns (delta, mask, no_markings): the change of attenuation (realistic)
# or of intensity (cartoon), the binary mask, and where lung markings vanish (pneumothorax) or None.
# A lung is a dict: soft (0..1 map), hilum (y, x) in pixels, side (-1 image left, +1 image right).
# ---------------------------------------------------------------------------------------------------------------

FINDINGS = ("consolidation", "nodules", "pneumothorax", "boxes")


def _pick_inside(rng, lung: dict, lo: float = 0.95, rows: tuple[float, float] | None = None) -> tuple[float, float]:
    """A random pixel well inside a lung (optionally within a band of rows)."""
    inside = lung["soft"] > lo
    if rows is not None:
        n = inside.shape[0]
        band = np.zeros_like(inside)
        band[int(max(0, rows[0])):int(min(n, rows[1]))] = True
        if (inside & band).any():
            inside = inside & band
    ys, xs = np.nonzero(inside if inside.any() else lung["soft"] > 0.5 * lung["soft"].max())
    i = int(rng.integers(0, len(ys)))
    return float(ys[i]) + rng.uniform(-0.5, 0.5), float(xs[i]) + rng.uniform(-0.5, 0.5)


def _blob(rng, yy, xx, cy, cx, ry, rx, cells, roughness=0.55):
    """A soft irregular blob: an ellipse whose rim is perturbed by low-frequency noise."""
    n = yy.shape[0]
    r = ellipse(yy, xx, cy, cx, ry, rx, rng.uniform(0, np.pi))
    f = 1.0 - r + roughness * smooth_noise(rng, (n, n), cells)
    return np.clip(f / 0.45, 0.0, 1.0)


def _finding_consolidation(rng, lungs, yy, xx, s, contrast):
    """Airspace opacity (pneumonia-like): 1-2 ill-defined irregular blobs in one lung, with air bronchograms (dark
    branching tubes inside the opacity)."""
    n = yy.shape[0]
    delta = np.zeros((n, n), np.float32)
    mask = np.zeros((n, n), np.uint8)
    lung = lungs[int(rng.integers(0, len(lungs)))]
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = _pick_inside(rng, lung)
        ry, rx = rng.uniform(0.06, 0.13) * s, rng.uniform(0.05, 0.10) * s
        shape = _blob(rng, yy, xx, cy, cx, ry, rx, int(rng.integers(5, 9))) * np.clip(1.6 * lung["soft"], 0, 1)
        texture = 0.8 + 0.2 * smooth_noise(rng, (n, n), max(4, n // 10))
        # air bronchograms: branches pointing away from the hilum, visible only inside the opacity
        img = Image.new("F", (n * _SS, n * _SS), 0.0)
        d = ImageDraw.Draw(img)
        hy, hx = lung["hilum"]
        base = np.arctan2(cy - hy, cx - hx)
        for _b in range(int(rng.integers(2, 4))):
            ang = base + rng.uniform(-0.5, 0.5)
            y0, x0 = cy - 0.7 * ry * np.sin(ang), cx - 0.7 * rx * np.cos(ang)
            length = rng.uniform(0.6, 1.1) * (ry + rx)
            y1, x1 = y0 + length * np.sin(ang), x0 + length * np.cos(ang)
            wpx = max(1, int(round(0.011 * s * _SS)))
            d.line([(x0 * _SS, y0 * _SS), (x1 * _SS, y1 * _SS)], fill=1.0, width=wpx)
            for sign in (-1, 1):
                a2 = ang + sign * rng.uniform(0.3, 0.7)
                l2 = rng.uniform(0.3, 0.5) * length
                ym, xm = y0 + 0.55 * (y1 - y0), x0 + 0.55 * (x1 - x0)
                d.line([(xm * _SS, ym * _SS), ((xm + l2 * np.cos(a2)) * _SS, (ym + l2 * np.sin(a2)) * _SS)],
                       fill=1.0, width=max(1, wpx - 1))
        bronchi = np.asarray(img, dtype=np.float32).reshape(n, _SS, n, _SS).mean(axis=(1, 3))
        c = rng.uniform(*contrast)
        delta += c * shape * (texture - 0.45 * bronchi * np.clip(2 * shape - 1, 0, 1))
        mask |= (shape > 0.3).astype(np.uint8)
    return delta, mask, None


def _finding_boxes(rng, lungs, yy, xx, s, contrast):
    """RSNA-pneumonia-like: one or two (often bilateral) ill-defined opacities in the mid/lower zones; the mask is
    each opacity's bounding box, as the RSNA boxes are."""
    n = yy.shape[0]
    delta = np.zeros((n, n), np.float32)
    mask = np.zeros((n, n), np.uint8)
    count = 1 if rng.random() < 0.45 else 2
    first = int(rng.integers(0, len(lungs)))
    for i in range(count):
        lung = lungs[(first + i) % len(lungs)]
        hy = lung["hilum"][0]
        cy, cx = _pick_inside(rng, lung, 0.9, rows=(hy - 0.05 * s, n))
        ry, rx = rng.uniform(0.07, 0.12) * s, rng.uniform(0.05, 0.085) * s
        shape = _blob(rng, yy, xx, cy, cx, ry, rx, int(rng.integers(4, 7)), 0.4) * np.clip(1.6 * lung["soft"], 0, 1)
        texture = 0.8 + 0.2 * smooth_noise(rng, (n, n), max(4, n // 10))
        delta += rng.uniform(*contrast) * shape * texture
        ys, xs = np.nonzero(shape > 0.2)
        if len(ys) == 0:
            ys, xs = np.array([int(np.clip(cy, 0, n - 1))]), np.array([int(np.clip(cx, 0, n - 1))])
        mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
    return delta, mask, None


def _finding_nodules(rng, lungs, yy, xx, s, contrast):
    """1-3 solid pulmonary nodules, 8-30 mm across (the body scale ``s`` spans about 400 mm, so 2-7.5 % of ``s``):
    round, well defined, with the density profile of a sphere (thicker, so denser, in the middle)."""
    n = yy.shape[0]
    delta = np.zeros((n, n), np.float32)
    mask = np.zeros((n, n), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        lung = lungs[int(rng.integers(0, len(lungs)))]
        d_mm = rng.uniform(8.0, 30.0)
        radius = 0.5 * d_mm / 400.0 * s
        cy, cx = _pick_inside(rng, lung, 0.97)
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / max(radius, 0.5) ** 2
        peak = (0.6 * contrast[0] + 0.012 * d_mm) * rng.uniform(0.85, 1.15)
        delta += peak * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
        mask |= (np.hypot(yy - cy, xx - cx) <= max(radius, 1.0)).astype(np.uint8)
    return delta, mask, None


def _finding_pneumothorax(rng, lungs, yy, xx, s, contrast):
    """Apical/lateral pneumothorax: the lung edge retracts towards the hilum in a sector; the rim between the
    visceral pleural line and the chest wall is lucent and has no lung markings. The mask is the rim."""
    n = yy.shape[0]
    lung = lungs[int(rng.integers(0, len(lungs)))]
    inside = lung["soft"] > 0.5
    hy, hx = lung["hilum"]
    side = lung["side"]
    phi0 = np.deg2rad(rng.uniform(-75, -20))  # the sector's centre: up and lateral
    half = np.deg2rad(rng.uniform(50, 85))
    depth = rng.uniform(0.12, 0.32)
    dy, dx = yy - hy, xx - hx
    theta = np.arctan2(dy, side * dx)
    dth = np.angle(np.exp(1j * (theta - phi0)))
    w = np.cos(0.5 * np.pi * np.clip(np.abs(dth) / half, 0, 1)) ** 2
    scale = 1.0 - depth * w
    sy = np.rint(hy + dy / scale).astype(np.int64)
    sx = np.rint(hx + dx / scale).astype(np.int64)
    ok = (sy >= 0) & (sy < n) & (sx >= 0) & (sx < n)
    collapsed = np.zeros_like(inside)
    collapsed[ok] = inside[sy[ok], sx[ok]]
    collapsed &= inside
    rim = inside & ~collapsed
    if not rim.any():  # tiny images: keep at least the outermost pixels of the sector
        rim = inside & (w > 0.5) & ~_erode(inside)
    near_rim = _dilate(rim)
    line = collapsed & ~_erode(collapsed) & near_rim
    c = rng.uniform(*contrast)
    delta = (-0.6 * c * rim + 0.8 * c * line).astype(np.float32)
    return delta, rim.astype(np.uint8), rim.astype(np.float32)


def _erode(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    return out


def _dilate(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[1:] |= m[:-1]
    out[:-1] |= m[1:]
    out[:, 1:] |= m[:, :-1]
    out[:, :-1] |= m[:, 1:]
    return out


FINDING_FUNCS = {"consolidation": _finding_consolidation, "boxes": _finding_boxes, "nodules": _finding_nodules,
                  "pneumothorax": _finding_pneumothorax}

REGIME_FINDING = {"boxes": "boxes", "nodules": "nodules", "pneumothorax": "pneumothorax"}
