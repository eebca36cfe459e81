"""What the regions cost in localization: IoU of each level with the lesion mask, per-pixel cut against regions.

Run with the review environment from the bundle root::

    .venv-review/bin/python review_app/measure_regions.py [--dataset_dir data/synthetic] [--split test]
        [--sigmas 0,1,2,3] [--min-regions 0,0.002]

For every image of the split with a lesion mask it runs the app's ``explain`` task (the models in ``models/``, no
server) once and cuts the map with each ``smooth_sigma`` x ``min_region`` (scripts/regions.py); it prints, per
setting, the mean IoU of ``level >= k`` with the mask for the default levels (top 10 %, 5 %, 2 %: the benchmark's
IoU@90/95/98 on the same cut) and the mean number of regions per level, as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

APP_DIR = Path(__file__).resolve().parent
ROOT = APP_DIR.parent
sys.path[:0] = [str(APP_DIR), str(ROOT)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", type=Path, default=ROOT / "data" / "synthetic")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sigmas", default="0,1,2,3")
    parser.add_argument("--min-regions", default="0,0.002")
    args = parser.parse_args(argv)

    import torch

    from lib.explain import DEFAULT_PERCENTILES, ExplainTask
    from scripts.data import load_datalist, reader_for
    from scripts.regions import region_levels
    from monai.transforms import LoadImage

    torch.set_num_threads(2)
    task = ExplainTask(bundle_root=ROOT, models_dir=ROOT / "models")
    entries = [e for e in load_datalist(args.dataset_dir / "datalist.json", args.dataset_dir, args.split)
               if e.get("mask") and int(e["label"]) == 1]
    maps, masks = [], []
    for e in entries:
        study = task._prepare({"image": e["image"]})
        outcome = task._explain(study["x"], 0, {})
        maps.append(outcome["explanation"][0, 0].cpu().numpy())
        mask = np.asarray(LoadImage(image_only=True)(e["mask"], reader=reader_for(e["mask"]))) > 0
        masks.append(torch.nn.functional.interpolate(torch.from_numpy(mask[None, None].astype(np.float32)),
                                                     size=maps[-1].shape, mode="nearest")[0, 0].numpy() > 0.5)
    k = len(DEFAULT_PERCENTILES)
    names = [f"top {100 - p:g}%" for p in sorted(DEFAULT_PERCENTILES)]
    print(f"{len(maps)} images with a lesion ({args.split} split of {args.dataset_dir})\n")
    print("| smooth_sigma | min_region | " + " | ".join(f"IoU {n}" for n in names) + " | "
          + " | ".join(f"regions {n}" for n in names) + " |")
    print("|---" * (2 + 2 * k) + "|")
    for sigma in [float(s) for s in args.sigmas.split(",")]:
        for min_region in [float(m) for m in args.min_regions.split(",")]:
            iou, regions = np.zeros(k), np.zeros(k)
            for e, m in zip(maps, masks):
                levels, _, counts = region_levels(e, DEFAULT_PERCENTILES, sigma, min_region)
                for level in range(1, k + 1):
                    keep = levels >= level
                    union = (keep | m).sum()
                    iou[level - 1] += (keep & m).sum() / union if union else 0.0
                    regions[level - 1] += counts[level]
            iou, regions = iou / len(maps), regions / len(maps)
            print(f"| {sigma:g} | {min_region:g} | " + " | ".join(f"{v:.3f}" for v in iou) + " | "
                  + " | ".join(f"{v:.1f}" for v in regions) + " |")


if __name__ == "__main__":
    main()
