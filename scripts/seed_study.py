"""The seed study: the README's chain trained with several seeds, the benchmark's scores as mean and range.

Adversarial training is chaotic: the same code and data trained with another seed (or on another processor) gives
another explainer. A figure from one run is one draw; this command gives the spread.

``python -m scripts.seed_study --seeds 0,1,2 --output_dir runs/seeds [overrides...]``

* the classifier is trained once (``<output_dir>/classifier``, the first seed), so that every seed explains the
  same classifier; ``--classifier_from DIR`` reuses ``DIR/classifier.pt`` instead;
* for each seed ``s``: the explainer, the Naive ablation, the Mask Generator and the benchmark
  (:mod:`scripts.pipeline` stages) with ``--seed s`` into ``<output_dir>/seed_<s>``; with ``--stages
  explainer,evaluate`` only ours is retrained per seed and the Naive and Mask Generator checkpoints come from the
  classifier's folder (``--classifier_from``), the same for every seed;
* a seed whose folder already holds ``localization.json`` is kept, not trained again (so a study can be resumed,
  and the main job's own run, ``outputs/`` with ``models/``, can stand as seed 0 when copied there);
* ``<output_dir>/seed_study.json`` and ``seed_study.md``: for every method, plain and with augmentation, each score
  of the benchmark's tables as mean, min and max over the seeds, and each seed's explainer validation scores.

Overrides (``--dataset_dir``, ``--datalist``, ``--max_epochs``, ...) go to every stage, as for :mod:`scripts.pipeline`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

from .atomic import atomic_write
from .errors import BundleInputError, install_excepthook
from .records import cpu_name

__all__ = ["SCORES", "summarize", "main"]

#: (label, getter) of the scores summarised per method and mode (the benchmark's Tables 1-3).
SCORES: list[tuple[str, Any]] = [
    ("IoU@90", lambda r: r["iou"].get("90")),
    ("IoU@95", lambda r: r["iou"].get("95")),
    ("IoU@98", lambda r: r["iou"].get("98")),
    ("total AUC", lambda r: r.get("auc_total")),
    ("pooled AP", lambda r: r.get("ap")),
    ("pointing game", lambda r: r.get("pointing_game")),
    ("relevance mass", lambda r: r.get("relevance_mass")),
    ("(LeRF-MoRF)/2", lambda r: (r.get("road") or {}).get("gap")),
]


#: (pipeline stage, checkpoint) of the baselines that a study may keep fixed (``--stages`` without them).
_BASELINES = [("explainer_naive", "explainer_naive.pt"), ("mask_generator", "mask_generator.pt")]


def _spread(values: list[float]) -> dict[str, float] | None:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    return {"mean": mean(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(reports: dict[int, dict]) -> dict[str, Any]:
    """``{method: {mode: {score: {mean, min, max, n}}}}`` over the seeds' ``localization.json`` payloads."""
    out: dict[str, Any] = {}
    methods = [m for m in next(iter(reports.values()))["methods"]]
    for method in methods:
        for mode in ("plain", "tta"):
            rows = [r["methods"][method].get(mode) for r in reports.values() if method in r["methods"]]
            rows = [r for r in rows if r]
            if not rows:
                continue
            scores = {label: _spread([get(r) for r in rows]) for label, get in SCORES}
            out.setdefault(method, {})[mode] = {k: v for k, v in scores.items() if v is not None}
    return out


def _validation(seed_dir: Path) -> dict[str, float]:
    """The explainer's best-epoch validation scores (``explainer_single_w_tv_metrics.json``), if written."""
    path = seed_dir / "explainer_single_w_tv_metrics.json"
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    best = record.get("best") or record
    return {k: v for k, v in best.items() if isinstance(v, (int, float)) and k.startswith("val_")}


def _markdown(summary: dict[str, Any], seeds: list[int], validation: dict[int, dict], meta: dict) -> str:
    labels = [label for label, _ in SCORES]
    lines = [
        "# Seed study", "",
        f"- Seeds: {', '.join(map(str, seeds))}; the classifier: {meta['classifier']}; retrained per seed: "
        f"{meta['stages']} (every other method's spread is 0 by construction: the same classifier and checkpoints)",
        f"- Machine: {meta['cpu']} ({meta['cores']} cores); date {meta['date']}; {meta['total_s']:.0f} s in all",
        f"- Command: `{meta['command']}`", "",
        "Each cell: mean over the seeds, and [min, max]. Plain rows and rows with test-time augmentation (+aug).", "",
        "| method | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|",
    ]
    for method, modes in summary.items():
        for mode, scores in modes.items():
            cells = []
            for label in labels:
                s = scores.get(label)
                cells.append("–" if s is None else f"{s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}]")
            lines.append(f"| {method}{' + aug' if mode == 'tta' else ''} | " + " | ".join(cells) + " |")
    keys = sorted({k for v in validation.values() for k in v if k in ("val_auc_oa", "val_auc_os", "val_iou90")})
    if keys:
        lines += ["", "Explainer validation scores at its best epoch, per seed:", "",
                  "| seed | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for seed, values in validation.items():
            lines.append(f"| {seed} | " + " | ".join(f"{values.get(k, float('nan')):.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from . import pipeline

    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    parser.add_argument("--output_dir", required=True, help="the study's folder: classifier/, seed_<s>/, reports")
    parser.add_argument("--classifier_from", help="a folder with classifier.pt to reuse instead of training one")
    parser.add_argument("--stages", default="explainer,explainer_naive,mask_generator,evaluate",
                        help="the per-seed stages (scripts.pipeline names; default: all but classifier, inference)")
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        seeds = [int(s) for s in known.seeds.split(",") if s.strip()]
    except ValueError:
        raise BundleInputError(f"--seeds must be comma-separated integers, got {known.seeds!r}") from None
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise BundleInputError(f"--seeds must list distinct integers, got {known.seeds!r}")
    if "--seed" in rest or any(a.startswith("--seed=") for a in rest):
        raise BundleInputError("--seed: give the seeds with --seeds")
    out = Path(known.output_dir).resolve()
    start = time.perf_counter()
    if known.classifier_from:
        source = Path(known.classifier_from) / "classifier.pt"
        if not source.is_file():
            raise BundleInputError(f"--classifier_from: {source} does not exist")
    else:
        clf_dir = out / "classifier"
        source = clf_dir / "models" / "classifier.pt"
        if not source.is_file():
            code = pipeline.main(["--stages", "classifier", "--output_dir", str(clf_dir), "--seed", str(seeds[0]),
                                  *rest])
            if code:
                return code
    reports: dict[int, dict] = {}
    validation: dict[int, dict] = {}
    for seed in seeds:
        seed_dir = out / f"seed_{seed}"
        if (seed_dir / "localization.json").exists():
            print(f"seed {seed}: {seed_dir / 'localization.json'} exists; kept (remove the folder to train it again)")
        else:
            (seed_dir / "models").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, seed_dir / "models" / "classifier.pt")
            for stage, name in _BASELINES:  # a baseline not retrained per seed: the classifier folder's, if it has one
                kept = source.parent / name
                if stage not in known.stages.split(",") and kept.is_file():
                    shutil.copyfile(kept, seed_dir / "models" / name)
            code = pipeline.main(["--stages", known.stages, "--output_dir", str(seed_dir), "--seed", str(seed), *rest])
            if code:
                return code
        report = seed_dir / "localization.json"
        if report.exists():
            reports[seed] = json.loads(report.read_text())
        validation[seed] = _validation(seed_dir)
    meta = {"cpu": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "classifier": str(source) if known.classifier_from else f"trained once (seed {seeds[0]})",
            "stages": known.stages,
            "total_s": time.perf_counter() - start,
            "command": "python -m scripts.seed_study " + " ".join(sys.argv[1:] if argv is None else argv)}
    summary = summarize(reports) if reports else {}
    payload = {"seeds": seeds, "summary": summary, "validation": validation, **meta}
    atomic_write(out / "seed_study.json", lambda f: json.dump(payload, f, indent=2, allow_nan=False))
    atomic_write(out / "seed_study.md", lambda f: f.write(_markdown(summary, seeds, validation, meta)))
    print(f"seed study: {out / 'seed_study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
