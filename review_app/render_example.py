"""Render what a reviewer receives from ``explain``: docs/figures/review_explain_levels.png, from a real answer.

Run with the review environment from the bundle root (after ``./run.sh review-app`` or ``./run.sh test`` made it)::

    .venv-review/bin/python review_app/render_example.py [--image 01202] [--out docs/figures/review_explain_levels.png]

It starts the review server (127.0.0.1, a free port, the models in ``models/``) on a studies folder holding one test
image of the default data (``data/synthetic``), asks ``explain`` for it through ``MONAILabelClient``, stops the
server, and draws the image, the returned label levels over it, and the data set's lesion mask for reference (the
app never sees the mask). The answer's JSON is printed. A first request warms the networks up; the second is drawn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

APP_DIR = Path(__file__).resolve().parent
ROOT = APP_DIR.parent
#: label value -> RGB (3 = top 2 %, 2 = top 5 %, 1 = top 10 %)
COLOURS = {3: (230, 25, 75), 2: (245, 130, 48), 1: (255, 225, 25)}
SCALE = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        a = np.asarray(im).astype(np.float64)
    a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
    return (a * 255).round().astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _panel(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb).resize((rgb.shape[1] * SCALE, rgb.shape[0] * SCALE), Image.NEAREST)


def serve_and_explain(image: Path, models: Path, timeout_s: float = 300) -> tuple[np.ndarray, dict]:
    """Start the server on a one-image studies folder, ask ``explain``, stop it; the label and the result JSON."""
    from monailabel.client import MONAILabelClient

    work = Path(tempfile.mkdtemp(prefix="render_", dir=APP_DIR / ".runtime" if (APP_DIR / ".runtime").is_dir() else None))
    studies = work / "studies"
    studies.mkdir()
    shutil.copy(image, studies / image.name)
    port = _free_port()
    env = dict(os.environ, SIMADV_REVIEW_RUNTIME=str(work / "runtime"), PYTHONWARNINGS="ignore")
    env.pop("SIMADV_REVIEW_TOKEN", None)  # loopback: no token needed, and the client here sends none
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies", str(studies),
           "--host", "127.0.0.1", "--port", str(port), "--conf", "models", str(models)]
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the review server exited:\n{(work / 'server.log').read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/info/", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - start > timeout_s:
                raise SystemExit(f"the review server did not start in {timeout_s} s")
            time.sleep(0.5)
        client = MONAILabelClient(url, tmpdir=str(work / "client"), client_id="render_example")
        client.infer("explain", image.stem, {})  # warm-up: the first request also initialises the networks
        label_file, params = client.infer("explain", image.stem, {})
        with Image.open(label_file) as im:
            label = np.asarray(im).copy()
        return label, params
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def render(image: np.ndarray, label: np.ndarray, mask: np.ndarray | None, params: dict, out: Path) -> None:
    """Three panels (image, label levels over it, reference lesion outline) and a caption, as uint8 RGB PNG."""
    grey = np.repeat(image[..., None], 3, axis=-1).astype(np.float64)
    over = grey.copy()
    for value, colour in COLOURS.items():
        sel = label == value
        over[sel] = 0.45 * grey[sel] + 0.55 * np.asarray(colour, dtype=np.float64)
    ref = grey.copy()
    if mask is not None:
        m = mask > 0
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        ref[edge] = (60, 180, 255)
    panels = [_panel(grey.astype(np.uint8)), _panel(over.round().astype(np.uint8)), _panel(ref.astype(np.uint8))]
    w, h = panels[0].size
    pad, top, bottom = 12, 34, 96
    canvas = Image.new("RGB", (3 * w + 4 * pad, h + top + bottom), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    f, small = _font(17), _font(14)
    titles = ["study image", "explain: label levels (what the viewer shows)", "lesion mask (reference, not sent)"]
    for i, (p, t) in enumerate(zip(panels, titles)):
        x = pad + i * (w + pad)
        canvas.paste(p, (x, top))
        draw.text((x, 8), t, fill=(0, 0, 0), font=small)
    y = top + h + 10
    x = pad
    for name, value in sorted(params["label_names"].items(), key=lambda kv: -kv[1]):
        draw.rectangle([x, y + 2, x + 16, y + 18], fill=COLOURS.get(value, (128, 128, 128)), outline=(0, 0, 0))
        text = f"{value} = {name}"
        draw.text((x + 22, y), text, fill=(0, 0, 0), font=f)
        x += 22 + int(draw.textlength(text, font=f)) + 24
    probs = ", ".join(f"{n} {p:.3f}" for n, p in zip(params["class_names"], params["probabilities"]))
    lat = params["latencies"]
    lines = [
        f"image {params['image']}: predicted '{params['predicted_name']}' (class {params['predicted_class']}); "
        f"probabilities {probs}",
        f"explainer {lat['explainer'] * 1000:.0f} ms, request {lat['total'] * 1000:.0f} ms on {params['device']} "
        "(second request); "
        f"adversarial image classified {params['adversarial']['predicted_class']} "
        f"(p = {max(params['adversarial']['probabilities']):.2f}); TTA {params['tta_augmentations']}",
    ]
    for i, line in enumerate(lines):
        draw.text((pad, y + 28 + 22 * i), line, fill=(40, 40, 40), font=small)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", type=Path, default=ROOT / "data" / "synthetic")
    parser.add_argument("--image", default=None, help="image id (file stem) of the test split; default: first positive")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "review_explain_levels.png")
    args = parser.parse_args(argv)
    datalist = json.loads((args.dataset_dir / "datalist.json").read_text())
    test = datalist["test"]
    entry = next(
        (e for e in test if Path(e["image"]).stem == args.image) if args.image else (e for e in test if e["label"] == 1),
        None,
    )
    if entry is None:
        raise SystemExit(f"no test image {args.image!r} in {args.dataset_dir / 'datalist.json'}")
    image_path = args.dataset_dir / entry["image"]
    label, params = serve_and_explain(image_path, args.models)
    mask = _grey(args.dataset_dir / entry["mask"]) if entry.get("mask") else None
    render(_grey(image_path), label, mask, params, args.out)
    print(json.dumps(params, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
