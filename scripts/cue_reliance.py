"""Which cue does the classifier use, and does each map agree? The mixed-regime study (shortcut detection).

A classifier trained where positives carry a lesion and, in a fraction of the images, a burned-in token (the
synthetic ``"mixed"`` regime, :mod:`scripts.data.synthetic`; the site-marker shortcut of Zech et al., PLOS Med 2018)
may decide on either cue. The test split holds, for each positive, the same image redrawn without its lesions and,
when it carries the token, without the token (only the removed cue differs). On the positives that carry the token:

* the classifier's **reliance** on a cue is the mean drop of its probability of the pathology class when that cue
  is removed, ``r_cue = mean(p(x) - p(x without cue))``; its **token share** ``r_token / (r_token + r_lesion)``
  (drops below 0 count as 0);
* a map's **mass** on a cue is its relevance mass accuracy (:func:`scripts.faithfulness.compute_relevance_mass`,
  the share of the map's sum inside the cue's mask) on the token's square and on the lesion mask, averaged over the
  images; its **token share** ``m_token / (m_token + m_lesion)``.

A faithful map's token share is close to the classifier's: a map that shows the lesion of a classifier that reads
the token is plausible but wrong. Every method of ``configs/evaluate.json`` is scored, plain and with test-time
augmentation (:func:`scripts.benchmark.method_variants`), explaining the pathology class; a random map is the
reference. No library measures reliance on rendered counterfactuals; Quantus has no such metric.

``python -m scripts.cue_reliance --output_dir runs/mixed [--anatomy cartoon] [--token_fraction 0.5]
[--num_train 1000 --num_val 200 --num_test 200] [--stages classifier,explainer,explainer_naive,mask_generator]
[overrides...]``: writes the mixed data to ``<output_dir>/data`` (first use), trains the stages whose checkpoint is
not in ``<output_dir>/models`` yet (:mod:`scripts.pipeline`, each a ``python -m monai.bundle run``; overrides go to
every stage), then writes ``cue_reliance.json``, ``cue_reliance.md`` and the picture grid ``cue_reliance.png`` (the
first carriers, both cues outlined, every map) to ``<output_dir>``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .errors import BundleInputError, install_excepthook
from .records import cpu_name

__all__ = ["cue_shares", "token_share", "measure", "markdown", "write_grid", "main"]

RANDOM_ROW = "Random (reference)"
#: (pipeline stage, the checkpoint that says it is done).
_STAGE_CHECKPOINTS = {"classifier": "classifier.pt", "explainer": "explainer.pt",
                      "explainer_naive": "explainer_naive.pt", "mask_generator": "mask_generator.pt"}


def token_share(token: float, lesion: float) -> float | None:
    """``token / (token + lesion)`` with negatives counted as 0; ``None`` when both are 0 (no cue used)."""
    token, lesion = max(float(token), 0.0), max(float(lesion), 0.0)
    return token / (token + lesion) if token + lesion > 0 else None


def cue_shares(maps: torch.Tensor, token_masks: torch.Tensor, lesion_masks: torch.Tensor) -> torch.Tensor:
    """Per image, the map's relevance mass on the token and on the lesions: ``(B, 2)``."""
    from .faithfulness import compute_relevance_mass

    return torch.stack([compute_relevance_mass(maps, token_masks), compute_relevance_mass(maps, lesion_masks)], 1)


def _view(entries: list[dict], image: str, mask: str, preprocessing: Any) -> dict[str, torch.Tensor]:
    """One view of the carriers (``image``/``mask`` taken from those entry fields) through the bundle's
    preprocessing, every image stacked: ``{"image": (N, C, *spatial), "mask": (N, 1, *spatial)}``."""
    from monai.data import DataLoader, Dataset

    data = [{"image": e[image], "mask": e[mask], "label": e["label"]} for e in entries]
    batches = list(DataLoader(Dataset(data, preprocessing), batch_size=16, num_workers=0))
    return {k: torch.cat([torch.as_tensor(b[k]) for b in batches]).float() for k in ("image", "mask")}


def measure(
    config: Any, entries: list[dict], device: torch.device, log=print, grid_rows: int = 4
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reliance of ``config``'s classifier and every method's mass on each cue, over the test ``entries`` (positives
    with their counterfactual fields made absolute). ``config``: the evaluate stage's ``ConfigParser``. Returns the
    result and the picture grid's arrays (the first ``grid_rows`` images, both cues' masks, each variant's maps)."""
    from .benchmark import method_variants
    from .explainers import RandomExplainer

    classifier = config.get_parsed_content("classifier").to(device).eval()
    preprocessing = config.get_parsed_content("preprocessing")
    target_class = int(config.get_parsed_content("pathology_class"))
    carriers = [e for e in entries if e.get("image_no_token")]
    if not carriers:
        raise BundleInputError("cue reliance: no test positive carries the token (is this the mixed regime's data?)")

    # three views, each read once: the image (and its lesion mask), without the token (and the token's square),
    # without the lesions
    views = {"image": _view(carriers, "image", "mask", preprocessing),
             "image_no_token": _view(carriers, "image_no_token", "token_mask", preprocessing),
             "image_no_lesion": _view(carriers, "image_no_lesion", "mask", preprocessing)}

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([torch.softmax(classifier(b.to(device)).float(), 1)[:, target_class].cpu()
                              for b in x.split(16)])

    p = {key: probabilities(view["image"]) for key, view in views.items()}
    drops = {"token": float((p["image"] - p["image_no_token"]).mean()),
             "lesion": float((p["image"] - p["image_no_lesion"]).mean())}
    reliance = {"p": float(p["image"].mean()), "p_without_token": float(p["image_no_token"].mean()),
                "p_without_lesion": float(p["image_no_lesion"].mean()), "drop_token": drops["token"],
                "drop_lesion": drops["lesion"], "token_share": token_share(drops["token"], drops["lesion"])}
    log(f"classifier: p {reliance['p']:.3f}, without the token {reliance['p_without_token']:.3f}, without the "
        f"lesions {reliance['p_without_lesion']:.3f} (token share {reliance['token_share']})")

    images, lesion_masks = views["image"]["image"], views["image"]["mask"] > 0.5
    token_masks = views["image_no_token"]["mask"] > 0.5
    methods = config.get_parsed_content("methods")
    variants = method_variants(methods, config.get_parsed_content("tta"))
    variants.append((RANDOM_ROW, "plain", RandomExplainer(classifier)))
    rows: dict[str, dict[str, Any]] = {}
    grid: dict[str, Any] = {"images": images[:grid_rows], "masks": (lesion_masks | token_masks)[:grid_rows].float(),
                            "maps": {}}
    for name, kind, explainer in variants:
        start = time.perf_counter()
        torch.manual_seed(0)
        shares = []
        for x, token_mask, lesion_mask in zip(images.split(16), token_masks.split(16), lesion_masks.split(16)):
            x = x.to(device)
            target = torch.full((x.shape[0],), target_class, dtype=torch.long, device=device)
            maps = explainer(x, target).detach().float().cpu()
            shares.append(cue_shares(maps, token_mask, lesion_mask))
            grid["maps"].setdefault(f"{name}{' + aug' if kind == 'tta' else ''}", maps[:grid_rows])
        mass = torch.cat(shares).nanmean(0)
        row = {"mass_token": float(mass[0]), "mass_lesion": float(mass[1]),
               "token_share": token_share(mass[0], mass[1]), "seconds": round(time.perf_counter() - start, 1)}
        if row["token_share"] is not None and reliance["token_share"] is not None:
            row["gap"] = abs(row["token_share"] - reliance["token_share"])
        rows.setdefault(name, {})[kind] = row
        log(f"{name} ({kind}): mass on the token {row['mass_token']:.3f}, on the lesions {row['mass_lesion']:.3f}, "
            f"token share {row['token_share']} ({row['seconds']:.0f} s)")
    return {"images": len(carriers), "positives": len(entries), "reliance": reliance, "methods": rows}, grid


def write_grid(path: str | os.PathLike, grid: dict[str, Any]) -> None:
    """The picture grid: images with both cues outlined (lesions and the token's square), then every map."""
    from .figures import GridColumn, slice_2d, write_image_grid

    columns = [GridColumn("image (cues outlined)", [slice_2d(x) for x in grid["images"]], contour=0.8)]
    columns += [GridColumn(name, [slice_2d(m) for m in maps], kind="map", contour=0.6)
                for name, maps in grid["maps"].items()]
    write_image_grid(path, columns, [slice_2d(m) for m in grid["masks"]], cell=1.8)


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def markdown(result: dict[str, Any]) -> str:
    """The report: the classifier's reliance, then every method's mass on each cue and its gap to the reliance."""
    r = result["reliance"]
    lines = [
        "# Cue reliance on the mixed regime", "",
        f"- Data: {result['data']}", f"- Machine: {result['machine']}; date {result['date']}",
        f"- Command: `{result['command']}`",
        f"- Time: {result['total_s']:.0f} s in all, each stage timed when it ran (" + ", ".join(f"{k} {v:.0f} s" for k, v in
                                                              result["times_s"].items()) + ")", "",
        f"On the {result['images']} test positives that carry the token (of {result['positives']} positives):", "",
        "| classifier | p(pathology) | without the token | without the lesions | token share of the drops |",
        "|---|---|---|---|---|",
        f"| reliance | {_fmt(r['p'])} | {_fmt(r['p_without_token'])} ({-r['drop_token']:+.3f}) | "
        f"{_fmt(r['p_without_lesion'])} ({-r['drop_lesion']:+.3f}) | **{_fmt(r['token_share'])}** |", "",
        "Each map's relevance mass on the token's square and on the lesion mask (mean over those images), its token "
        "share `m_token / (m_token + m_lesion)` and the gap to the classifier's token share (within 0.2: agrees).", "",
        "| method | mass on token | mass on lesions | token share | gap to the classifier |", "|---|---|---|---|---|",
    ]
    for name, modes in result["methods"].items():
        for kind, row in modes.items():
            gap = row.get("gap")
            mark = "" if gap is None else (" (agrees)" if gap <= 0.2 else "")
            lines.append(f"| {name}{' + aug' if kind == 'tta' else ''} | {_fmt(row['mass_token'])} | "
                         f"{_fmt(row['mass_lesion'])} | {_fmt(row['token_share'])} | {_fmt(gap)}{mark} |")
    return "\n".join(lines) + "\n"


def _test_positives(config: Any, data_dir: Path) -> list[dict]:
    from .data import load_datalist

    entries = load_datalist(config.get_parsed_content("datalist"), config.get_parsed_content("dataset_dir"), "test")
    target = int(config.get_parsed_content("pathology_class"))
    out = []
    for e in entries:
        if int(e.get("label", -1)) != target or not e.get("image_no_lesion"):
            continue
        e = dict(e)
        for key in ("image_no_lesion", "image_no_token", "token_mask"):
            if e.get(key):
                e[key] = str(data_dir / e[key])
        out.append(e)
    if not out:
        raise BundleInputError(f"{config.get_parsed_content('datalist')}: no test positive with counterfactuals "
                               "('image_no_lesion'): write the data with --regime mixed")
    return out


def main(argv: list[str] | None = None) -> int:
    from . import pipeline
    from .data.synthetic import make_synthetic_dataset

    install_excepthook()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--output_dir", required=True, help="the study's folder: data/, models/, the reports")
    parser.add_argument("--anatomy", default="cartoon", choices=("cartoon", "realistic"))
    parser.add_argument("--token_fraction", type=float, default=0.5, help="positives that carry the token")
    parser.add_argument("--num_train", type=int, default=1000)
    parser.add_argument("--num_val", type=int, default=200)
    parser.add_argument("--num_test", type=int, default=200)
    parser.add_argument("--stages", default="classifier,explainer,explainer_naive,mask_generator",
                        help="stages trained when their checkpoint is missing (scripts.pipeline names)")
    known, rest = parser.parse_known_args(argv)
    if not 0.0 < known.token_fraction <= 1.0:
        raise BundleInputError(f"--token_fraction must be in (0, 1], got {known.token_fraction}")
    if min(known.num_train, known.num_val, known.num_test) < 2:
        raise BundleInputError("--num_train, --num_val and --num_test must be at least 2")
    for key in ("dataset_dir", "datalist", "output_dir"):
        if f"--{key}" in rest or any(a.startswith(f"--{key}=") for a in rest):
            raise BundleInputError(f"--{key}: the study writes its own data and folders under --output_dir")
    stages = [s for s in known.stages.split(",") if s]
    unknown = [s for s in stages if s not in _STAGE_CHECKPOINTS and s != "evaluate"]
    if unknown:
        raise BundleInputError(f"--stages: unknown stage(s) {unknown}; use {','.join(_STAGE_CHECKPOINTS)},evaluate")
    out = Path(known.output_dir).resolve()
    data = out / "data"
    times: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # a resumed study keeps its stages' times
        times.update({k: v for k, v in json.loads((out / "cue_reliance.json").read_text())["times_s"].items()
                      if k != "measure"})
    start = time.perf_counter()
    if not (data / "datalist.json").exists():
        make_synthetic_dataset(data, known.num_train, known.num_val, known.num_test, regime="mixed",
                               token_fraction=known.token_fraction, anatomy=known.anatomy)
        times["data"] = round(time.perf_counter() - start, 1)
    paths = ["--dataset_dir", str(data), "--datalist", str(data / "datalist.json"), "--output_dir", str(out)]
    todo = [s for s in stages if s == "evaluate" or not (out / "models" / _STAGE_CHECKPOINTS[s]).is_file()]
    if todo:
        code = pipeline.main(["--stages", ",".join(todo), *paths, *rest])
        if code:
            return code
        record = json.loads((out / "pipeline_times.json").read_text())
        times.update(record["stages_s"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = pipeline.stage_config("evaluate", [*paths, *rest], root)
    measured = time.perf_counter()
    with contextlib.chdir(root):
        entries = _test_positives(config, data)
        device = torch.device(config.get_parsed_content("device"))
        result, grid = measure(config, entries, device)
    times["measure"] = round(time.perf_counter() - measured, 1)
    result.update(
        data=f"synthetic mixed regime, {known.anatomy} anatomy, token on {known.token_fraction:.0%} of the positives, "
             f"{known.num_train}/{known.num_val}/{known.num_test} images ({data})",
        machine=f"{cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)",
        date=datetime.date.today().isoformat(), times_s=times, total_s=round(sum(times.values()), 1),
        command="python -m scripts.cue_reliance " + " ".join(argv),
    )
    atomic_write(out / "cue_reliance.json", lambda f: json.dump(result, f, indent=2, allow_nan=False))
    atomic_write(out / "cue_reliance.md", lambda f: f.write(markdown(result)))
    write_grid(out / "cue_reliance.png", grid)
    print(f"cue reliance: {out / 'cue_reliance.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
