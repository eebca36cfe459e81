"""Inference outputs: explain every image of a datalist split or a folder, and write what a reader opens.

Per image: the explanation as NIfTI (MONAI ``SaveImage``, carrying the image's metadata), a PNG overlay of the
map on the image, optionally the similar and adversarial images as NIfTI; for the whole run a CSV with the
classifier's probabilities and decision per image (written atomically at the end).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import SaveImage

from .atomic import atomic_write
from .data.datalist import load_datalist
from .errors import BundleInputError
from .figures import upright

__all__ = ["inference_entries", "InferenceWriter", "overlay_png"]

IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nii.gz")


def inference_entries(datalist: str, dataset_dir: str, split: str = "test", input_dir: str | None = None) -> list[dict]:
    """``[{"image": path}, ...]``: every image file under ``input_dir`` (sorted), else the datalist ``split``."""
    if input_dir:
        folder = Path(input_dir)
        if not folder.is_dir():
            raise BundleInputError(f"input_dir {folder} is not a folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise BundleInputError(f"input_dir {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        return [{"image": str(p)} for p in files]
    return [{"image": e["image"], **({"mask": e["mask"]} if e.get("mask") else {})}
            for e in load_datalist(datalist, dataset_dir, split)]


def _stem(path: str) -> str:
    name = os.path.basename(str(path))
    for suffix in (".nii.gz", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def overlay_png(image: np.ndarray, explanation: np.ndarray, path: str | os.PathLike, alpha: float = 0.5) -> None:
    """A uint8 RGB PNG: the grey image with the explanation (min–max scaled, inferno colormap) blended on top."""
    import matplotlib

    from PIL import Image

    img = np.clip(image, 0, 1)
    e = explanation - explanation.min()
    e = e / e.max() if e.max() > 0 else e
    heat = matplotlib.colormaps["inferno"](e)[..., :3]
    rgb = (1 - alpha * e[..., None]) * img[..., None] + alpha * e[..., None] * heat
    # the arrays are x-first (W, H), as MONAI's PILReader loads a PNG: stored upright, like the input
    png = Image.fromarray(np.ascontiguousarray(upright((np.clip(rgb, 0, 1) * 255).astype(np.uint8))))
    atomic_write(path, lambda f: png.save(f, format="PNG"), binary=True)


class InferenceWriter:
    """Ignite handler writing the inference outputs of each iteration (see the module docstring).

    Args:
        output_dir: folder for the files.
        save_nifti: write ``<name>_explanation.nii.gz``.
        save_png: write ``<name>_overlay.png``.
        save_generated: also write ``<name>_similar.nii.gz`` and ``<name>_adversarial.nii.gz``.
        class_names: column names of the probabilities in the CSV (default ``prob_0..prob_{K-1}``).
    """

    def __init__(
        self,
        output_dir: str,
        save_nifti: bool = True,
        save_png: bool = True,
        save_generated: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.save_png = save_png
        self.save_generated = save_generated
        self.save_nifti = save_nifti
        self.class_names = list(class_names) if class_names else None
        self.rows: list[dict] = []
        self.savers: dict[str, SaveImage] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_batch)
        engine.add_event_handler(Events.COMPLETED, self.write_csv)

    def _saver(self, postfix: str) -> SaveImage:
        if postfix not in self.savers:
            self.savers[postfix] = SaveImage(
                output_dir=str(self.output_dir), output_postfix=postfix, output_ext=".nii.gz",
                separate_folder=False, print_log=False, resample=False,
            )
        return self.savers[postfix]

    def _save(self, postfix: str, array: torch.Tensor, meta: dict, source: str) -> None:
        """``SaveImage`` one output; a file whose metadata the writer cannot take names itself and the real cause."""
        try:
            self._saver(postfix)(array, meta_data=meta)
        except Exception as e:
            cause = e
            while cause.__cause__ is not None or cause.__context__ is not None:
                cause = cause.__cause__ or cause.__context__
            raise BundleInputError(
                f"{source}: cannot write its {postfix} to {self.output_dir} "
                f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
            ) from e

    def write_batch(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        out = engine.state.output
        images = engine.state.batch["image"]
        metas = images.meta if hasattr(images, "meta") else {}
        paths = metas.get("filename_or_obj", [f"image_{engine.state.iteration}_{i}" for i in range(len(images))])
        for i, path in enumerate(paths):
            name = _stem(path)
            meta = {k: (v[i] if isinstance(v, (list, tuple, torch.Tensor)) and len(v) == len(paths) else v)
                    for k, v in metas.items()} if metas else {"filename_or_obj": path}
            meta["filename_or_obj"] = name
            e = out["explanation"][i].detach().float().cpu()
            if self.save_nifti:
                self._save("explanation", e, meta, path)
            if self.save_generated and "similar" in out:
                self._save("similar", out["similar"][i].detach().float().cpu(), meta, path)
                self._save("adversarial", out["adversarial"][i].detach().float().cpu(), meta, path)
            if self.save_png and e.ndim == 3:
                overlay_png(out["image"][i][0].detach().float().cpu().numpy(), e[0].numpy(),
                            self.output_dir / f"{name}_overlay.png")
            probs = out["pred"][i].detach().float().cpu().tolist()
            names = self.class_names or [f"prob_{k}" for k in range(len(probs))]
            row = {"image": str(path), "predicted_class": int(out["y_hat"][i])}
            row.update({n: f"{p:.6f}" for n, p in zip(names, probs)})
            self.rows.append(row)

    def write_csv(self, engine: Engine) -> None:
        if not self.rows:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        def write(f) -> None:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)

        atomic_write(self.output_dir / "predictions.csv", write)
