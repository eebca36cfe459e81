"""The embedded default data: seeded chest-radiograph-like images with lesions and their masks.

Each image is drawn from its own ``numpy`` generator seeded with ``(seed, index)``, so an image does not depend on
how many others were made or in which order. What is drawn:

* anatomy: a body silhouette, two lung fields (dark), a mediastinum/spine band and a heart shadow (bright),
  ribs as bright arcs over the lungs, a diaphragm; random pose, size, exposure and low-frequency shading;
* pathology (label 1 only): one to three opacities of varied size, shape and texture, inside a lung field,
  with moderate contrast; the mask is their support;
* distractors (both labels, independent of the label): ECG-electrode discs, wires, a tube, a corner marker.
  A good explanation must ignore them.

Nothing here is tuned for one explanation method: the generator knows no method, and its knobs
(``lesion_contrast``, sizes) are set once so that a DenseNet learns the task but not trivially.

CLI: ``python -m scripts.data.synthetic --out data/synthetic --num-train 1000 --num-val 200 --num-test 200``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SyntheticChestXray", "make_synthetic_dataset", "ensure_synthetic_dataset"]

#: written first into a synthetic data folder, so an interrupted write is recognised and redone.
SYNTHETIC_MARKER = ".synthetic"


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0):
    """Normalised squared radius of an ellipse at every pixel (< 1 inside)."""
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    return u * u + v * v


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
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


def _soft(inside: np.ndarray, edge: float = 0.15) -> np.ndarray:
    """Turn a normalised radius map into a soft 0..1 shape with a blurred rim."""
    return np.clip((1.0 - inside) / edge, 0.0, 1.0)


def _segment(yy, xx, p0, p1, width):
    """Distance-based soft line from p0 to p1 (pixel coordinates)."""
    (y0, x0), (y1, x1) = p0, p1
    vy, vx = y1 - y0, x1 - x0
    length2 = max(vy * vy + vx * vx, 1e-6)
    t = np.clip(((yy - y0) * vy + (xx - x0) * vx) / length2, 0, 1)
    dist = np.hypot(yy - (y0 + t * vy), xx - (x0 + t * vx))
    return np.clip(1.0 - dist / width, 0.0, 1.0)


class SyntheticChestXray:
    """Draw one synthetic frontal chest radiograph and its lesion mask.

    Args:
        size: image side in pixels (square images).
        lesion_contrast: range of the opacities' peak intensity increase (image range is 0..1).
        lesion_radius: range of a lesion's radius as a fraction of the image side.
        distractor_rate: expected number of distractor objects per image (Poisson), for both classes.
    """

    def __init__(
        self,
        size: int = 128,
        lesion_contrast: tuple[float, float] = (0.10, 0.22),
        lesion_radius: tuple[float, float] = (0.035, 0.11),
        distractor_rate: float = 2.0,
    ) -> None:
        self.size = size
        self.lesion_contrast = lesion_contrast
        self.lesion_radius = lesion_radius
        self.distractor_rate = distractor_rate

    def __call__(self, rng: np.random.Generator, label: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image, mask)``: float32 image in [0, 1] and uint8 mask in {0, 1}, both ``(size, size)``."""
        n = self.size
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        cy, cx = n * rng.uniform(0.48, 0.54), n * rng.uniform(0.47, 0.53)
        scale = n * rng.uniform(0.92, 1.05)
        tilt = rng.uniform(-0.06, 0.06)

        img = np.full((n, n), 0.05, np.float32)
        body = _soft(_ellipse(yy, xx, cy + 0.05 * scale, cx, 0.55 * scale, 0.45 * scale, tilt), 0.1)
        img += 0.45 * body

        lungs = []
        for side in (-1, 1):
            ly = cy - 0.02 * scale + rng.uniform(-0.02, 0.02) * scale
            lx = cx + side * rng.uniform(0.19, 0.22) * scale
            lung = _soft(
                _ellipse(yy, xx, ly, lx, rng.uniform(0.30, 0.34) * scale, rng.uniform(0.13, 0.16) * scale,
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
        heart = _soft(_ellipse(yy, xx, cy + 0.14 * scale, cx + 0.07 * scale, 0.15 * scale, 0.17 * scale, 0.3), 0.3)
        img += 0.18 * heart
        diaphragm = np.clip((yy - (cy + 0.30 * scale + 0.25 * np.abs(xx - cx) * 0.3)) / (0.04 * scale), 0, 1)
        img += 0.20 * diaphragm * body

        mask = np.zeros((n, n), np.uint8)
        if label == 1:
            img, mask = self._add_lesions(rng, img, yy, xx, lungs, lung_field)
        img = self._add_distractors(rng, img, yy, xx)

        # Exposure, shading and quantum noise.
        img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)
        img += 0.04 * _smooth_noise(rng, (n, n), 3)
        img += rng.normal(0, 0.012, size=(n, n)).astype(np.float32)
        return np.clip(img, 0.0, 1.0).astype(np.float32), mask

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
                r = _ellipse(yy, xx, py + oy, px + ox, radius * rng.uniform(0.6, 1.1), radius * rng.uniform(0.6, 1.1),
                             rng.uniform(0, np.pi))
                shape = np.maximum(shape, _soft(r, 0.5))
            shape *= np.clip(lung_field * 1.5, 0, 1)  # opacities stay inside the lungs
            texture = 0.75 + 0.25 * _smooth_noise(rng, (n, n), int(rng.integers(6, 14)))
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
                img = img + 0.3 * np.maximum(_segment(yy, xx, pts[0], pts[1], 0.9), _segment(yy, xx, pts[1], pts[2], 0.9))
            elif kind == 2:  # tube: thicker line from the top edge
                x0 = rng.uniform(0.4, 0.6) * n
                img = img + 0.25 * _segment(yy, xx, (0, x0), (rng.uniform(0.3, 0.6) * n, x0 + rng.uniform(-0.1, 0.1) * n), 1.8)
            else:  # corner marker: a bright block in a corner
                h, w = int(rng.uniform(0.05, 0.09) * n), int(rng.uniform(0.04, 0.07) * n)
                y0 = 2 if rng.random() < 0.5 else n - h - 2
                x0 = 2 if rng.random() < 0.5 else n - w - 2
                img = img.copy()
                img[y0:y0 + h, x0:x0 + w] += 0.6
        return img


def _write_png(path: Path, array: np.ndarray, bits: int) -> None:
    """PNG writer: ``bits=16`` for images (like real exports), 8 for masks (0/255)."""
    if bits == 16:
        Image.fromarray((np.clip(array, 0, 1) * 65535).round().astype(np.uint16)).save(path)
    else:
        Image.fromarray(array.astype(np.uint8) * 255).save(path)


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 1000,
    num_val: int = 200,
    num_test: int = 200,
    size: int = 128,
    positive_fraction: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write images, masks and ``datalist.json`` under ``out_dir``; return the datalist path.

    Pixel matrices are stored row-major as PNG (rows = image y); masks exist for every image (empty for label 0),
    so every split can feed the localization metrics, which skip empty masks.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTHETIC_MARKER).write_text("written by scripts/data/synthetic.py; safe to delete and regenerate\n")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    draw = SyntheticChestXray(size=size)
    datalist: dict[str, list[dict]] = {}
    index = 0
    for split, count in (("training", num_train), ("validation", num_val), ("test", num_test)):
        entries = []
        n_pos = int(round(count * positive_fraction))
        labels = [1] * n_pos + [0] * (count - n_pos)
        np.random.default_rng([seed, 10_000_000, count]).shuffle(labels)
        for label in labels:
            rng = np.random.default_rng([seed, index])
            image, mask = draw(rng, label)
            name = f"{index:05d}.png"
            _write_png(out / "images" / name, image, 16)
            _write_png(out / "masks" / name, mask, 8)
            entries.append({"image": f"images/{name}", "label": int(label), "mask": f"masks/{name}"})
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


def examples_figure(path: str | os.PathLike, size: int = 128, seed: int = 0, columns: int = 6) -> None:
    """Save a figure of example images (top: no finding, bottom: pathology with the mask contour in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draw = SyntheticChestXray(size=size)
    fig, axes = plt.subplots(2, columns, figsize=(2.2 * columns, 4.8))
    for col in range(columns):
        for row, label in enumerate((0, 1)):
            image, mask = draw(np.random.default_rng([seed, 2 * col + row]), label)
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"label {label}" + (f", lesion {100 * mask.mean():.1f}%" if label else ""), fontsize=8)
            ax.axis("off")
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
    parser.add_argument("--figure", help="only write a figure of examples to this PNG path")
    args = parser.parse_args()
    if args.figure:
        examples_figure(args.figure, args.size, args.seed)
        return
    path = make_synthetic_dataset(args.out, args.num_train, args.num_val, args.num_test, args.size, seed=args.seed)
    print(path)


if __name__ == "__main__":
    from ..errors import install_excepthook

    install_excepthook()
    main()
