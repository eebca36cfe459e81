"""The embedded default data: seeded chest-radiograph-like images with lesions and their masks.

Each image is drawn from its own ``numpy`` generator seeded with ``(seed, index)``, so an image does not depend on
how many others were made or in which order. Two anatomies (``anatomy=``):

* ``"cartoon"`` (the default, byte-identical to 0.5.0): a body silhouette, two elliptical lung fields (dark), a
  mediastinum/spine band and a disc heart (bright), ribs as bright stripes over the lungs, a diaphragm; random pose,
  size, exposure and low-frequency shading; distractors (both labels, independent of the label): ECG-electrode
  discs, wires, a tube, a corner marker.
* ``"realistic"``: a frontal chest radiograph drawn as a projection of attenuation layers (neck and shoulders, lung
  fields with costophrenic angles and vessels branching from the hila, posterior and anterior ribs, clavicles,
  scapulae, humeral heads, vertebrae, heart and mediastinum with the aortic knob, diaphragm domes with the right one
  higher, gastric bubble, optional breast shadows), radiopaque devices (ECG leads, endotracheal and nasogastric
  tubes, a central line) and burned-in text in both classes, then an acquisition model (detector blur, quantum
  noise that grows as fewer photons pass, log transform, edge enhancement, window, gamma, film-like curve).

What carries label 1 (``regime=``): ``"lesions"`` (cartoon: one to three opacities; realistic: consolidation with
air bronchograms, nodules or a pneumothorax), ``"shortcut"`` (a framed-square token, look-alike marks in both
classes), ``"mixed"`` (lesions, plus the token on a ``token_fraction`` of positives), ``"boxes"`` (RSNA-like
opacities, the mask their bounding boxes), ``"nodules"`` (1-3 nodules of 8-30 mm) and ``"pneumothorax"`` (a lucent
apical/lateral rim without lung markings behind a pleural line). Contrasts are modest, so that a DenseNet learns the
task but not trivially; nothing here is tuned for one explanation method. Details: docs/data.md §6.

CLI: ``python -m scripts.data.synthetic --out data/synthetic --num-train 1000 --num-val 200 --num-test 200
[--regime R] [--anatomy A] [--size N] [--token-fraction F]``; ``--figure PATH`` writes a figure of examples instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .realistic_chest import FINDING_FUNCS, REGIME_FINDING, Pool, RealisticChest, blur, burned_text
from .shapes import ellipse, segment, smooth_noise, soft

__all__ = ["SyntheticChestXray", "make_synthetic_dataset", "ensure_synthetic_dataset"]

#: written first into a synthetic data folder, so an interrupted write is recognised and redone.
SYNTHETIC_MARKER = ".synthetic"


class SyntheticChestXray:
    """Draw one synthetic frontal chest radiograph and its lesion mask.

    Args:
        size: image side in pixels (square images).
        lesion_contrast: range of the opacities' peak intensity increase (image range is 0..1); the realistic
            anatomy uses its own, in attenuation units (``REALISTIC_CONTRAST``).
        lesion_radius: range of a lesion's radius as a fraction of the image side (cartoon ``"lesions"``).
        distractor_rate: expected number of distractor objects per image (Poisson), for both classes (cartoon).
        regime: what carries label 1 (module docstring): ``"lesions"`` (the default: opacities), ``"shortcut"`` (no
            lesions; only a small burned-in token, look-alikes in both classes; the mask is the token), ``"mixed"``
            (opacities, and the token in a ``token_fraction`` of the positives; the mask is the lesions'),
            ``"boxes"`` (RSNA-like opacities, the mask their bounding boxes), ``"nodules"`` (1-3 small round
            nodules) or ``"pneumothorax"`` (a lucent apical/lateral rim without lung markings, the mask the rim).
        token_fraction: in the mixed regime, the probability that a positive carries the token.
        anatomy: ``"cartoon"`` (the default: ellipses and stripes, unchanged since 0.5.0) or ``"realistic"``
            (a projection radiograph of a layered chest with an acquisition model, module docstring).
    """

    REGIMES = ("lesions", "shortcut", "mixed", "boxes", "nodules", "pneumothorax")
    ANATOMIES = ("cartoon", "realistic")
    #: realistic anatomy: range of a finding's peak attenuation change (lung ~0.35, soft tissue ~1.0).
    REALISTIC_CONTRAST = (0.12, 0.24)
    #: realistic "lesions"/"mixed": the kind of finding of a positive, and its probability.
    LESION_MIX = (("consolidation", 0.5), ("nodules", 0.25), ("pneumothorax", 0.25))

    def __init__(
        self,
        size: int = 128,
        lesion_contrast: tuple[float, float] = (0.10, 0.22),
        lesion_radius: tuple[float, float] = (0.035, 0.11),
        distractor_rate: float = 2.0,
        regime: str = "lesions",
        token_fraction: float = 0.5,
        anatomy: str = "cartoon",
    ) -> None:
        if regime not in self.REGIMES:
            raise ValueError(f"synthetic 'regime' must be one of {self.REGIMES}, got {regime!r}")
        if anatomy not in self.ANATOMIES:
            raise ValueError(f"synthetic 'anatomy' must be one of {self.ANATOMIES}, got {anatomy!r}")
        if int(size) < 16:
            raise ValueError(f"synthetic 'size' must be at least 16 pixels, got {size!r}")
        self.size = int(size)
        self.regime = regime
        self.anatomy = anatomy
        self.token_fraction = token_fraction
        self.lesion_contrast = lesion_contrast
        self.lesion_radius = lesion_radius
        self.distractor_rate = distractor_rate

    def __call__(
        self, rng: np.random.Generator, label: int, lesions: bool = True, token: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image, mask)``: float32 image in [0, 1] and uint8 mask in {0, 1}, both ``(size, size)``.

        ``lesions=False`` / ``token=False`` render the same image without its lesions / token (the rest unchanged:
        every random number is still drawn), the counterfactuals that measure a classifier's reliance on each cue.
        """
        image, mask, _info = self.draw(rng, label, lesions, token)
        return image, mask

    def draw(
        self, rng: np.random.Generator, label: int, lesions: bool = True, token: bool = True
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Like ``__call__``, plus what was drawn: a dict with ``token`` (the image carries the shortcut token, even
        when ``token=False`` left it out), ``token_mask`` (uint8, the token's square; ``None`` in regimes without a
        token, all zeros when this image has none), ``finding`` (the kind of lesion of a positive, else None), ``lungs`` (uint8
        mask of the lung fields) and, for the realistic anatomy, ``mediastinum`` (uint8 mask of heart and
        mediastinum)."""
        if self.anatomy == "realistic":
            return self._draw_realistic(rng, label, lesions, token)
        return self._draw_cartoon(rng, label, lesions, token)

    def _draw_cartoon(self, rng, label, lesions, token):
        n = self.size
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        cy, cx = n * rng.uniform(0.48, 0.54), n * rng.uniform(0.47, 0.53)
        scale = n * rng.uniform(0.92, 1.05)
        tilt = rng.uniform(-0.06, 0.06)

        img = np.full((n, n), 0.05, np.float32)
        body = soft(ellipse(yy, xx, cy + 0.05 * scale, cx, 0.55 * scale, 0.45 * scale, tilt), 0.1)
        img += 0.45 * body

        lungs = []
        for side in (-1, 1):
            ly = cy - 0.02 * scale + rng.uniform(-0.02, 0.02) * scale
            lx = cx + side * rng.uniform(0.19, 0.22) * scale
            lung = soft(
                ellipse(yy, xx, ly, lx, rng.uniform(0.30, 0.34) * scale, rng.uniform(0.13, 0.16) * scale,
                         tilt + side * rng.uniform(0.05, 0.15)),
                0.25,
            )
            lungs.append((lung, ly, lx))
            img -= 0.30 * lung
        lung_field = np.clip(lungs[0][0] + lungs[1][0], 0, 1)

        # Ribs: bright arcs over the lung fields.
        rib_phase = rng.uniform(0, 2 * np.pi)
        rib_period = scale * rng.uniform(0.075, 0.09)
        curve = 0.9 * ((xx - cx) / scale) ** 2 * scale
        ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (yy - curve) / rib_period + rib_phase)
        img += 0.07 * (ribs ** 3) * lung_field

        # Mediastinum, spine and heart.
        spine = np.clip(1.0 - np.abs(xx - cx) / (0.06 * scale), 0, 1) * body
        img += 0.22 * spine
        heart = soft(ellipse(yy, xx, cy + 0.14 * scale, cx + 0.07 * scale, 0.15 * scale, 0.17 * scale, 0.3), 0.3)
        img += 0.18 * heart
        diaphragm = np.clip((yy - (cy + 0.30 * scale + 0.25 * np.abs(xx - cx) * 0.3)) / (0.04 * scale), 0, 1)
        img += 0.20 * diaphragm * body

        mask = np.zeros((n, n), np.uint8)
        finding = None
        if label == 1 and self.regime in ("lesions", "mixed"):
            with_lesions, mask = self._add_lesions(rng, img, yy, xx, lungs, lung_field)
            finding = "opacities"
            if lesions:
                img = with_lesions
        elif label == 1 and self.regime in REGIME_FINDING:
            finding = REGIME_FINDING[self.regime]
            info = [{"soft": lung, "hilum": (ly, lx - side * 0.09 * scale), "side": side}
                    for (lung, ly, lx), side in zip(lungs, (-1, 1))]
            delta, mask, _no_markings = FINDING_FUNCS[finding](rng, info, yy, xx, scale, self.lesion_contrast)
            if lesions:
                img = img + delta
        img = self._add_distractors(rng, img, yy, xx)
        carries, token_mask = False, None
        if self.regime in ("shortcut", "mixed"):
            img, mask, carries, token_mask = self._add_tokens(rng, img, yy, xx, label, mask, token)

        # Exposure, shading and quantum noise.
        img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)
        img += 0.04 * smooth_noise(rng, (n, n), 3)
        img += rng.normal(0, 0.012, size=(n, n)).astype(np.float32)
        info = {"token": bool(carries), "token_mask": token_mask, "finding": finding,
                "lungs": (lung_field > 0.5).astype(np.uint8)}
        return np.clip(img, 0.0, 1.0).astype(np.float32), mask, info

    def _draw_realistic(self, rng, label, lesions, token):
        n = self.size
        # one independent stream per part: the same seed gives the same patient, devices and noise in both classes
        anatomy_rng, finding_rng, device_rng, noise_rng, token_rng = (
            np.random.default_rng(int(x)) for x in rng.integers(0, 2 ** 63, size=5))
        chest = RealisticChest(n, anatomy_rng)
        layers = chest.layers()
        s = chest.s
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)

        lung_soft = {side: chest.lungs[side] * (1.0 - chest.heart) for side in (-1, 1)}
        mask = np.zeros((n, n), np.uint8)
        delta, no_markings, finding = None, None, None
        if label == 1 and self.regime != "shortcut":
            finding = REGIME_FINDING.get(self.regime)
            if finding is None:  # lesions / mixed: a mixture of kinds
                kinds, probs = zip(*self.LESION_MIX)
                finding = kinds[int(finding_rng.choice(len(kinds), p=probs))]
            info = []
            for side in (-1, 1):
                hx, hy = chest.cv.px([chest.hilum[side]])[0]
                info.append({"soft": lung_soft[side], "hilum": (float(hy), float(hx)), "side": side})
            delta, mask, no_markings = FINDING_FUNCS[finding](finding_rng, info, yy, xx, s, self.REALISTIC_CONTRAST)
            if not lesions:
                delta, no_markings = None, None

        # attenuation: soft tissue minus lung air plus bones, vessels, devices
        body = layers["body"]
        thick = body * (0.42 + 0.58 * blur(body, 0.1 * s) ** 1.5)
        lungs = np.clip(lung_soft[-1] + lung_soft[1], 0.0, 1.0)
        depth = blur(lungs, 0.04 * s)
        basal = np.clip((yy - chest.cv.cy) / (0.35 * s), 0.0, 1.0)  # lower zones: more tissue in front/behind
        dens = 1.0 * thick
        dens -= 0.6 * lungs * (0.45 + 0.55 * depth) * (1.0 - 0.2 * basal)
        dens += 0.06 * chest.heart * body
        dens -= 0.22 * layers["airway"] * body * (1.0 - 0.6 * lungs)
        dens -= 0.45 * layers["gas"] * body
        dens += 0.15 * layers["spine"] + 0.11 * layers["ribs_post"] * (1.0 - 0.5 * chest.heart) + 0.045 * layers["ribs_ant"]
        dens += 0.28 * layers["bones"] + 0.05 * layers["scapula"] + 0.09 * layers["breast"] * body
        markings = layers["vessels"] * np.clip(1.4 * lungs, 0, 1)
        if no_markings is not None:
            markings = markings * (1.0 - blur(no_markings, 0.6))
        dens += 0.12 * layers["hila"] + 0.2 * markings
        dens += 0.03 * smooth_noise(chest.p.rng, (n, n), 4) * body
        if delta is not None:
            dens += delta
        dens += 0.9 * chest.devices(Pool(device_rng))

        # acquisition: detector blur, quantum noise (Poisson-like: relative noise grows as fewer photons pass),
        # log transform, edge enhancement, window and gamma
        a = Pool(noise_rng, 16)
        dens = blur(dens.astype(np.float32), a(0.35, 0.8) * n / 128)
        mu = 2.6
        photons = 10 ** a(3.9, 4.5) * (128.0 / n) ** 2
        counts = photons * np.exp(-mu * dens)
        counts = counts + np.sqrt(counts) * noise_rng.standard_normal((n, n), dtype=np.float32)
        proj = -np.log(np.maximum(counts, 0.5) / photons) / mu
        proj = proj + a(0.2, 0.7) * (proj - blur(proj.astype(np.float32), 0.03 * s))
        lo, hi = a(-0.1, 0.05), a(1.3, 1.5)
        img = np.clip((proj - lo) / (hi - lo), 0.0, 1.0) ** a(0.85, 1.15)
        k, c = a(2.0, 3.0), 0.5  # film-like characteristic curve: contrast compressed at both ends
        img = (np.tanh(k * (img - c)) - math.tanh(-c * k)) / (math.tanh((1 - c) * k) - math.tanh(-c * k))

        # burned in after processing: text annotations (both classes), then the shortcut token
        text = burned_text(Pool(device_rng), n)
        img = np.maximum(img, text)
        carries, token_mask = False, None
        if self.regime in ("shortcut", "mixed"):
            img, mask, carries, token_mask = self._add_tokens(token_rng, img, yy, xx, label, mask, token)
        info = {"token": bool(carries), "token_mask": token_mask, "finding": finding, "lungs": (lungs > 0.5).astype(np.uint8),
                "mediastinum": (chest.heart * body > 0.5).astype(np.uint8)}
        return np.clip(img, 0.0, 1.0).astype(np.float32), mask, info

    def _add_lesions(self, rng, img, yy, xx, lungs, lung_field):
        n = self.size
        mask = np.zeros((n, n), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            lung, ly, lx = lungs[int(rng.integers(0, 2))]
            # A centre well inside this lung field.
            for _try in range(20):
                py = ly + rng.uniform(-0.22, 0.22) * n
                px = lx + rng.uniform(-0.09, 0.09) * n
                iy, ix = int(np.clip(py, 0, n - 1)), int(np.clip(px, 0, n - 1))
                if lung[iy, ix] > 0.9:
                    break
            radius = rng.uniform(*self.lesion_radius) * n
            shape = np.zeros((n, n), np.float32)
            for _lobe in range(int(rng.integers(1, 4))):  # irregular shapes: unions of rotated ellipses
                oy, ox = rng.normal(0, 0.35 * radius, size=2)
                r = ellipse(yy, xx, py + oy, px + ox, radius * rng.uniform(0.6, 1.1), radius * rng.uniform(0.6, 1.1),
                             rng.uniform(0, np.pi))
                shape = np.maximum(shape, soft(r, 0.5))
            shape *= np.clip(lung_field * 1.5, 0, 1)  # opacities stay inside the lungs
            texture = 0.75 + 0.25 * smooth_noise(rng, (n, n), int(rng.integers(6, 14)))
            img = img + rng.uniform(*self.lesion_contrast) * shape * texture
            mask |= (shape > 0.25).astype(np.uint8)
        return img, mask

    def _add_distractors(self, rng, img, yy, xx):
        n = self.size
        for _ in range(int(rng.poisson(self.distractor_rate))):
            kind = rng.integers(0, 4)
            if kind == 0:  # ECG electrode: bright disc with a ring
                py, px, r = rng.uniform(0.1, 0.9) * n, rng.uniform(0.1, 0.9) * n, rng.uniform(0.025, 0.045) * n
                d = np.hypot(yy - py, xx - px)
                img = img + 0.35 * (d < 0.45 * r) + 0.25 * ((d > 0.8 * r) & (d < r))
            elif kind == 1:  # wire: a bright curved thin line
                pts = rng.uniform(0.05, 0.95, size=(3, 2)) * n
                img = img + 0.3 * np.maximum(segment(yy, xx, pts[0], pts[1], 0.9), segment(yy, xx, pts[1], pts[2], 0.9))
            elif kind == 2:  # tube: thicker line from the top edge
                x0 = rng.uniform(0.4, 0.6) * n
                img = img + 0.25 * segment(yy, xx, (0, x0), (rng.uniform(0.3, 0.6) * n, x0 + rng.uniform(-0.1, 0.1) * n), 1.8)
            else:  # corner marker: a bright block in a corner
                h, w = int(rng.uniform(0.05, 0.09) * n), int(rng.uniform(0.04, 0.07) * n)
                y0 = 2 if rng.random() < 0.5 else n - h - 2
                x0 = 2 if rng.random() < 0.5 else n - w - 2
                img = img.copy()
                img[y0:y0 + h, x0:x0 + w] += 0.6
        return img

    def _add_tokens(self, rng, img, yy, xx, label, mask, token):
        """The shortcut cue: a framed square badge (0.4-0.9 % of the image) at a uniformly random place, burned in
        like a site marker, on every positive (``"shortcut"``) or a ``token_fraction`` of them (``"mixed"``); and in
        both classes one or two look-alikes of the same size and brightness (a framed circle, a filled square, a
        framed square with a cross), so that "a bright small mark" does not give the label away."""
        n = self.size
        side = lambda: float(np.sqrt(rng.uniform(0.004, 0.009)) * n)  # noqa: E731
        place = lambda s: rng.uniform(0.04 * n, n - 0.04 * n - s, size=2)  # noqa: E731 (top-left corner)
        brightness = lambda: rng.uniform(0.25, 0.4)  # noqa: E731
        img = img.copy()
        for _ in range(int(rng.integers(1, 3))):
            s, (y0, x0), b, kind = side(), place(0.0), brightness(), int(rng.integers(0, 3))
            y0, x0 = min(y0, n - 0.04 * n - s), min(x0, n - 0.04 * n - s)
            inside = (yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s)
            t = max(1.0, 0.16 * s)
            if kind == 0:  # framed circle
                d = np.hypot(yy - (y0 + s / 2), xx - (x0 + s / 2))
                img += b * ((d <= s / 2) & (d > s / 2 - t))
            elif kind == 1:  # filled square
                img += b * inside
            else:  # framed square with a cross
                frame = inside & ~((yy >= y0 + t) & (yy < y0 + s - t) & (xx >= x0 + t) & (xx < x0 + s - t))
                cross = inside & ((np.abs(yy - xx - (y0 - x0)) < 0.7 * t) | (np.abs(yy + xx - (y0 + x0 + s)) < 0.7 * t))
                img += b * (frame | cross)
        carries = label == 1 and (self.regime == "shortcut" or rng.random() < self.token_fraction)
        s, (y0, x0), b = side(), place(0.0), brightness()
        y0, x0 = min(y0, n - 0.04 * n - s), min(x0, n - 0.04 * n - s)
        token_mask = np.zeros((n, n), np.uint8)
        if carries:
            inside = (yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s)
            t = max(1.0, 0.16 * s)
            frame = inside & ~((yy >= y0 + t) & (yy < y0 + s - t) & (xx >= x0 + t) & (xx < x0 + s - t))
            if token:
                img += b * frame
            token_mask = inside.astype(np.uint8)
            if self.regime == "shortcut":
                mask = token_mask
        return img, mask, carries, token_mask


def _write_png(path: Path, array: np.ndarray, bits: int) -> None:
    """PNG writer: ``bits=16`` for images (like real exports), 8 for masks (0/255)."""
    if bits == 16:
        Image.fromarray((np.clip(array, 0, 1) * 65535).round().astype(np.uint16)).save(path)
    else:
        Image.fromarray(array.astype(np.uint8) * 255).save(path)


def _write_counterfactuals(out: Path, name: str, draw: SyntheticChestXray, seed: list[int], label: int,
                           info: dict) -> dict[str, str]:
    """Write the counterfactuals of one mixed-regime image (redrawn from its own seed, so only the removed cue
    differs) and return their datalist fields."""
    folder = out / "counterfactuals"
    fields = {}
    views = [("no_lesion", dict(lesions=False))] + ([("no_token", dict(token=False))] if info["token"] else [])
    for view, flags in views:
        (folder / view).mkdir(parents=True, exist_ok=True)
        image, _mask = draw(np.random.default_rng(seed), label, **flags)
        _write_png(folder / view / name, image, 16)
        fields[f"image_{view}"] = f"counterfactuals/{view}/{name}"
    if info["token"]:
        (folder / "token_masks").mkdir(parents=True, exist_ok=True)
        _write_png(folder / "token_masks" / name, info["token_mask"], 8)
        fields["token_mask"] = f"counterfactuals/token_masks/{name}"
    return fields


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 1000,
    num_val: int = 200,
    num_test: int = 200,
    size: int = 128,
    positive_fraction: float = 0.5,
    seed: int = 0,
    regime: str = "lesions",
    token_fraction: float = 0.5,
    anatomy: str = "cartoon",
) -> Path:
    """Write images, masks and ``datalist.json`` under ``out_dir``; return the datalist path.

    Pixel matrices are stored row-major as PNG (rows = image y); masks exist for every image (empty for label 0),
    so every split can feed the localization metrics, which skip empty masks. In the ``"mixed"`` regime every entry
    also has a boolean ``"token"``: whether its image carries the shortcut token (``load_datalist`` keeps extra keys);
    and each positive of the test split has the counterfactuals that measure the classifier's reliance on each cue
    (:mod:`scripts.cue_reliance`): ``"image_no_lesion"`` (the same image without its lesions) and, when it carries
    the token, ``"image_no_token"`` (without the token) and ``"token_mask"`` (the token's square), under
    ``counterfactuals/``.
    """
    draw = SyntheticChestXray(size=size, regime=regime, token_fraction=token_fraction, anatomy=anatomy)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTHETIC_MARKER).write_text("written by scripts/data/synthetic.py; safe to delete and regenerate\n")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    datalist: dict[str, list[dict]] = {}
    index = 0
    for split, count in (("training", num_train), ("validation", num_val), ("test", num_test)):
        entries = []
        n_pos = int(round(count * positive_fraction))
        labels = [1] * n_pos + [0] * (count - n_pos)
        np.random.default_rng([seed, 10_000_000, count]).shuffle(labels)
        for label in labels:
            rng = np.random.default_rng([seed, index])
            image, mask, info = draw.draw(rng, label)
            name = f"{index:05d}.png"
            _write_png(out / "images" / name, image, 16)
            _write_png(out / "masks" / name, mask, 8)
            entry = {"image": f"images/{name}", "label": int(label), "mask": f"masks/{name}"}
            if regime == "mixed":
                entry["token"] = info["token"]
                if split == "test" and label == 1:
                    entry.update(_write_counterfactuals(out, name, draw, [seed, index], label, info))
            entries.append(entry)
            index += 1
        datalist[split] = entries
    path = out / "datalist.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(datalist, indent=1))
    os.replace(tmp, path)  # the datalist appears last and atomically: its presence means the data is complete
    return path


def ensure_synthetic_dataset(dataset_dir: str | os.PathLike, datalist: str | os.PathLike, **kwargs) -> str:
    """Make the default data on first use; return the datalist path.

    Writes only when ``datalist`` is missing, is ``<dataset_dir>/datalist.json``, and ``dataset_dir`` does not exist
    or is empty or holds an interrupted synthetic write (its marker file): a user's folder of real images without a datalist is never filled with synthetic data (the
    datalist check then says the datalist is missing).
    """
    datalist = Path(datalist)
    folder = Path(dataset_dir)
    fresh = not folder.exists() or not any(folder.iterdir()) or (folder / SYNTHETIC_MARKER).exists()
    if not datalist.exists() and fresh and datalist.resolve() == (folder / "datalist.json").resolve():
        print(f"simadv_explainer: writing the synthetic default data to {folder} (first use)", flush=True)
        make_synthetic_dataset(folder, **kwargs)
    return str(datalist)


def examples_figure(
    path: str | os.PathLike, size: int = 128, seed: int = 0, columns: int = 6, regime: str = "lesions",
    anatomy: str = "cartoon",
) -> None:
    """Save a figure of example images (top: no finding, bottom: pathology with the mask contour in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draw = SyntheticChestXray(size=size, regime=regime, anatomy=anatomy)
    fig, axes = plt.subplots(2, columns, figsize=(2.2 * columns, 4.8))
    for col in range(columns):
        for row, label in enumerate((0, 1)):
            image, mask, info = draw.draw(np.random.default_rng([seed, 2 * col + row]), label)
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
            what = info["finding"] or ("token" if label else "")
            what += " + token" if info["token"] and info["finding"] else ""
            title = f"label {label}" + (f", {what} {100 * mask.mean():.1f}%" if label else "")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"synthetic data: anatomy={anatomy}, regime={regime}, {size}x{size} (top: label 0; bottom: "
                 "label 1, mask contour in red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/synthetic")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regime", default="lesions", choices=SyntheticChestXray.REGIMES,
                        help="what carries label 1: lesions (default), a shortcut token, both (mixed), RSNA-like boxes, "
                             "nodules or pneumothorax (docs/data.md)")
    parser.add_argument("--anatomy", default="cartoon", choices=SyntheticChestXray.ANATOMIES,
                        help="cartoon (default, the 0.5.0 images) or realistic (a radiograph-like chest)")
    parser.add_argument("--token-fraction", type=float, default=0.5, help="mixed regime: positives with the token")
    parser.add_argument("--figure", help="only write a figure of examples to this PNG path")
    args = parser.parse_args()
    if args.figure:
        examples_figure(args.figure, args.size, args.seed, regime=args.regime, anatomy=args.anatomy)
        return
    start = time.perf_counter()
    path = make_synthetic_dataset(args.out, args.num_train, args.num_val, args.num_test, args.size, seed=args.seed,
                                  regime=args.regime, token_fraction=args.token_fraction, anatomy=args.anatomy)
    total = args.num_train + args.num_val + args.num_test
    print(f"{path} ({total} images, {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    from ..errors import install_excepthook

    install_excepthook()
    main()
