"""Sanity checks for saliency maps (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018), as one command.

An explanation that does not change when the classifier's weights are destroyed, or when the classifier learnt
nothing (trained on permuted labels), does not explain the classifier. This command builds such classifiers from a
trained run, retrains the generator-based methods against each, recomputes every method's maps on the same test
images and measures how much of the original maps is left::

    python -m scripts.sanity --run_dir outputs --output_dir runs/sanity [--images 32] [--explainer_epochs 2]
        [--naive_epochs 1] [--classifier_epochs 3] [--variants class_layers,full,labels]
        [--bbmp_images 8] [--no_budget_reference] [config overrides...]

* ``--run_dir``: the trained run (the pipeline's ``--output_dir``); its checkpoints are where the evaluate stage
  looks for them (``configs/common.json``: ``<run_dir>/models``, and the repository's ``models/`` for the default
  ``outputs``; a ``--ckpt_dir`` override applies to this run only).
* ``--variants``: the classifiers to test. A *cascade point* (a block of the DenseNet121, top-down
  ``class_layers, norm5, denseblock4, transition3, denseblock3, ..., norm0, conv0``, or ``full``) re-initialises,
  with the network's own initialisation (a new ``classifier_def`` drawn with the seed + :data:`INIT_SEED_OFFSET`),
  every block from the top down to that one (cascading model-parameter randomisation; ``full``: every parameter and
  buffer). ``labels``: a classifier trained by the classifier stage for ``--classifier_epochs`` epochs (seed +
  :data:`INIT_SEED_OFFSET`) on the training and validation splits with seeded permutations of their labels (data
  randomisation; ``<output_dir>/permuted_datalist.json``). The default, ``class_layers,full,labels``, fits 25
  minutes on 2 CPU cores; each further cascade point (e.g. ``denseblock3``) adds about 5 minutes there.
* For every variant (``<output_dir>/<variant>/``): Ours (``explainer`` stage, ``--explainer_epochs``), Naive
  (``explainer_naive``, ``--naive_epochs``) and the Mask Generator (``mask_generator``, its own default epochs) are
  retrained against that classifier, one :mod:`scripts.pipeline` stage at a time. Gradient, GradCAM and BBMP need no
  training. The *budget reference* (``<output_dir>/budget/``): Ours retrained with the same reduced budget against
  the original classifier, so the table shows how much of the change is the reduced budget itself.
* Every method is built as the evaluate stage builds it (:func:`scripts.pipeline.stage_config`,
  :func:`scripts.benchmark.method_variants`: plain and with test-time augmentation) and run on the first
  ``--images`` test pathology images (BBMP, about 3 s per image on 2 CPU cores, on the first ``--bbmp_images``),
  explaining the classifier's decision; the RNG is seeded before each method.
* Scores per method and variant, averaged over the images: the Spearman rank correlation of the absolute maps
  (:func:`compute_rank_correlation`) and MONAI's SSIM of the maps scaled to [0, 1] per image, against the original
  maps. References: two independent random maps (:class:`~scripts.explainers.RandomExplainer`) and the budget
  reference. Low values after randomisation pass the check.
* ``<output_dir>/sanity.json``, ``sanity.md`` (table, command, machine, date, seconds per step) and ``sanity.png``
  (maps before and after, per method and variant, for two images).

A variant whose folder holds a ``sanity_variant.json`` of the same recipe is not trained again (a study can be
resumed, or rescored with other ``--images``). Other overrides (``--dataset_dir``, ``--datalist``, ``--seed``,
``--tta_augmentations``, ...) go to every stage and to the scoring, as for :mod:`scripts.pipeline`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.metrics import SSIMMetric
from monai.transforms import ScaleIntensity
from monai.utils import convert_to_tensor
from torch import nn

from .atomic import atomic_write
from .errors import TRAIN_HINTS, BundleInputError, install_excepthook
from .metrics import _PerImageScoreMetric
from .records import cpu_name, jsonable

__all__ = [
    "compute_rank_correlation",
    "RankCorrelationMetric",
    "cascade_blocks",
    "randomised_state",
    "image_prior",
    "permuted_datalist",
    "compare_maps",
    "main",
]

ROOT = Path(__file__).resolve().parents[1]
#: the generator-based methods, the pipeline stage that trains each, and its checkpoint key in common.json.
RETRAINED = {"Ours": "explainer", "Naive": "explainer_naive", "Mask Generator": "mask_generator"}
_CHECKPOINTS = {"explainer": "explainer_checkpoint", "explainer_naive": "naive_checkpoint",
                "mask_generator": "mask_generator_checkpoint"}
_HINTS = {"classifier_path": "classifier checkpoint", "explainer_checkpoint": "explainer checkpoint",
          "naive_checkpoint": "naive explainer checkpoint", "mask_generator_checkpoint": "mask generator checkpoint"}
DEFAULT_VARIANTS = "class_layers,full,labels"
#: added to the run's seed for every new initialisation the study draws (the re-initialised blocks, the
#: permuted-label classifier): the classifier stage initialises its network right after ``set_determinism(seed)``,
#: so a draw with the run's own seed is the trained classifier's starting point, and re-initialising a layer that
#: training moved little would hardly change it.
INIT_SEED_OFFSET = 2018
BUDGET = "budget"
#: overrides that change how the maps are read out of trained networks, not what is trained: they are left out of
#: a variant's recipe, so a variant trained without them is kept and only its maps are computed again.
READOUT_OVERRIDES = ("generator_map_space", "tta_augmentations", "bbmp_iterations")


# --------------------------------------------------------------------------------------------- rank correlation
def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` -> ranks ``1..N`` per row, tied values sharing their average rank (``scipy.stats.rankdata``)."""
    from scipy.stats import rankdata

    return torch.as_tensor(rankdata(x.cpu().numpy(), method="average", axis=1), dtype=torch.float64, device=x.device)


def compute_rank_correlation(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between ``|maps_a|`` and ``|maps_b|`` per image (Adebayo et al. 2018, §3).

    The Pearson correlation of the pixels' ranks, ties at their average rank. A constant map has no ranking, so it
    agrees with none: its correlation is 0 (decision; the formula would divide by zero). An image with a non-finite
    value scores NaN (left out by the metric's NaN-mean).

    Args:
        maps_a, maps_b: ``(B, 1, *spatial)`` maps of the same shape.

    Returns:
        ``(B,)`` float64 in ``[-1, 1]``.
    """
    if not isinstance(maps_a, torch.Tensor) or not isinstance(maps_b, torch.Tensor):
        raise BundleInputError(f"maps must be tensors, got {type(maps_a).__name__} and {type(maps_b).__name__}")
    if maps_a.ndim < 3 or maps_a.shape[1] != 1 or maps_a.shape != maps_b.shape:
        raise BundleInputError(
            f"maps must both have shape (B, 1, *spatial), got {tuple(maps_a.shape)} and {tuple(maps_b.shape)}"
        )
    a = maps_a.detach().reshape(maps_a.shape[0], -1).double().abs()
    b = maps_b.detach().reshape(maps_b.shape[0], -1).to(a.device).double().abs()
    finite = torch.isfinite(a).all(dim=1) & torch.isfinite(b).all(dim=1)
    a, b = torch.nan_to_num(a), torch.nan_to_num(b)
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    norm = (ra.square().sum(dim=1) * rb.square().sum(dim=1)).sqrt()
    rho = torch.where(norm > 0, (ra * rb).sum(dim=1) / norm.clamp(min=1e-300), torch.zeros_like(norm))
    return torch.where(finite, rho.clamp(-1.0, 1.0), torch.full_like(rho, float("nan")))


class RankCorrelationMetric(_PerImageScoreMetric):
    """Cumulative per-image Spearman rank correlation, see :func:`compute_rank_correlation`:
    ``__call__(y_pred=maps_a, y=maps_b)`` buffers ``(B, 1)``; ``aggregate()`` -> ``(1,)`` NaN-mean over images."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return compute_rank_correlation(y_pred, y)[:, None]


def compare_maps(maps_a: torch.Tensor, maps_b: torch.Tensor) -> dict[str, float]:
    """Mean over images of the rank correlation of ``|maps|`` and of MONAI's SSIM (data range 1) of ``|maps|``
    scaled to [0, 1] per image (a constant map -> zeros), as in Adebayo et al. 2018."""
    rank = RankCorrelationMetric()
    rank(y_pred=maps_a, y=maps_b)
    scale = ScaleIntensity(minv=0.0, maxv=1.0)
    a, b = (torch.stack([convert_to_tensor(scale(m.abs()), track_meta=False) for m in maps]).float()
            for maps in (maps_a, maps_b))
    ssim = SSIMMetric(spatial_dims=maps_a.ndim - 2, data_range=1.0)
    ssim(y_pred=a, y=b)
    return {"spearman": float(rank.aggregate().item()), "ssim": float(ssim.aggregate().item()),
            "images": int(maps_a.shape[0])}


# ------------------------------------------------------------------------------------------------ randomisation
def _has_state(module: nn.Module) -> bool:
    return next(iter(module.state_dict()), None) is not None


def cascade_blocks(net: nn.Module) -> list[str]:
    """The blocks of ``net`` from the output down to the input (Adebayo et al.'s cascade order): its top-level
    modules in reverse, one holding several children with weights split into those (DenseNet121's ``features``):
    ``class_layers, features.norm5, features.denseblock4, ..., features.norm0, features.conv0``."""
    blocks: list[str] = []
    for name, child in net.named_children():
        holding = [f"{name}.{n}" for n, c in child.named_children() if _has_state(c)]
        if len(holding) > 1:
            blocks += holding
        elif _has_state(child):
            blocks.append(name)
    return blocks[::-1]


def cascade_point(net: nn.Module, point: str) -> list[str]:
    """The blocks re-initialised at cascade point ``point``: the top block down to ``point`` (a block of
    :func:`cascade_blocks`, named in full or by its last part), or every block for ``"full"``."""
    blocks = cascade_blocks(net)
    if point == "full":
        return blocks
    found = [i for i, b in enumerate(blocks) if b == point or b.endswith("." + point)]
    if len(found) != 1:
        short = ", ".join(b.rsplit(".", 1)[-1] for b in blocks)
        raise BundleInputError(f"--variants: unknown cascade point {point!r}; the blocks, top-down: {short}, full")
    return blocks[: found[0] + 1]


def randomised_state(trained: nn.Module, fresh: nn.Module, blocks: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """``trained``'s state dict with every entry (parameters and buffers) of ``blocks`` taken from ``fresh``, a
    new instance of the same network (its own initialisation); ``blocks=None``: every entry (full randomisation)."""
    new = fresh.state_dict()
    state = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    if set(state) != set(new):
        raise BundleInputError("the classifier's weights do not fit classifier_def: the cascade randomisation needs "
                               "the bundle's own classifier (a state dict of classifier_def)")
    for key in state:
        if blocks is None or any(key.startswith(b + ".") for b in blocks):
            state[key] = new[key].detach().clone()
    return state


def permuted_datalist(datalist: Mapping[str, Any], seed: int, splits: Sequence[str] = ("training", "validation")):
    """A copy of ``datalist`` whose ``splits`` have their labels permuted (one seeded permutation per split):
    Adebayo et al.'s data randomisation test. The validation split too, so that the classifier stage's choice of
    its best epoch sees no true label either. Entries without a label stay as they are."""
    out = json.loads(json.dumps(datalist))
    gen = torch.Generator().manual_seed(int(seed))
    for split in splits:
        entries = [e for e in out.get(split, []) if isinstance(e, dict) and "label" in e]
        labels = [e["label"] for e in entries]
        for e, i in zip(entries, torch.randperm(len(labels), generator=gen).tolist()):
            e["label"] = labels[i]
    return out


# --------------------------------------------------------------------------------------------------- the study
class _StageFailed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _without(args: Sequence[str], keys: Sequence[str]) -> list[str]:
    """``args`` without the ``--key value`` / ``--key=value`` pairs of ``keys``."""
    out, i = [], 0
    while i < len(args):
        key = args[i][2:].partition("=")[0] if args[i].startswith("--") else None
        if key in keys:
            i += 1 if "=" in args[i] or i + 1 >= len(args) or args[i + 1].startswith("--") else 2
            continue
        out.append(args[i])
        i += 1
    return out


def _config(overrides: list[str], run_dir: Path, stage: str = "evaluate"):
    """The config of pipeline stage ``stage`` for the run in ``run_dir`` (the pipeline's ``--output_dir``)."""
    from .pipeline import stage_config

    return stage_config(stage, [*overrides, "--output_dir", str(run_dir)], str(ROOT))


def _parse(config, key: str, **kwargs) -> Any:
    with contextlib.chdir(ROOT):  # the configs' relative paths are relative to the bundle root
        return config.get_parsed_content(key, **kwargs)


def _check_checkpoints(config, keys: Sequence[str]) -> None:
    for key in keys:
        path = Path(_parse(config, key))
        if not (ROOT / path).is_file():
            raise BundleInputError(f"{_HINTS[key]} not found: {ROOT / path}. {TRAIN_HINTS[_HINTS[key]]}")


def _positive(value: str, flag: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise BundleInputError(f"{flag} must be a positive integer, got {value!r}")
    return n


def _run_stage(stage: str, vdir: Path, args: list[str], epochs: int | None) -> float:
    from . import pipeline

    start = time.perf_counter()
    code = pipeline.main(["--stages", stage, "--output_dir", str(vdir),
                          *(["--max_epochs", str(epochs)] if epochs else []), *args])
    if code:
        raise _StageFailed(code)
    return round(time.perf_counter() - start, 1)


def _train_variant(name: str, vdir: Path, recipe: dict, make_classifier, stages: dict[str, int | None],
                   args: list[str]) -> dict[str, float]:
    """Make the variant's classifier and retrain ``stages`` (stage -> epochs, None: the config's) against it, unless
    ``<vdir>/sanity_variant.json`` records the same recipe; returns seconds per step."""
    record = vdir / "sanity_variant.json"
    if record.exists() and json.loads(record.read_text()).get("recipe") == recipe:
        print(f"sanity: {name}: {record} has the same recipe; its checkpoints are kept", flush=True)
        return {f"{name}: trained by an earlier run, kept": 0.0}
    with contextlib.suppress(FileNotFoundError):  # resume states of another recipe
        for f in (vdir / "checkpoints").glob("*_last.pt"):
            f.unlink()
    seconds = {f"{name}: classifier": make_classifier()}
    for stage, epochs in stages.items():
        seconds[f"{name}: {stage}"] = _run_stage(stage, vdir, args, epochs)
    atomic_write(record, lambda f: json.dump({"recipe": recipe, "seconds": seconds}, f, indent=2))
    return seconds


def _saved(state: Mapping[str, torch.Tensor], path: Path) -> float:
    """Write a classifier checkpoint in the classifier stage's format (``{"network": state_dict}``)."""
    from .checkpoint import save_atomic

    start = time.perf_counter()
    save_atomic({"network": dict(state)}, path)
    return round(time.perf_counter() - start, 1)


@torch.no_grad()
def _pathology_share(classifier: nn.Module, images: torch.Tensor, pathology_class: int, device) -> float:
    """Share of ``images`` the classifier decides are ``pathology_class`` (every scored image has a lesion)."""
    return float((classifier(images.to(device)).argmax(1) == pathology_class).float().mean())


def _maps(config, names: Sequence[str], images: torch.Tensor, seed: int, limits: Mapping[str, int]) -> dict:
    """``{(method, kind): (n, 1, *spatial) maps}`` of ``names`` built by the evaluate config, in batches of 16
    (the evaluate stage's), the RNG seeded before each method so that every classifier gets the same draws."""
    from monai.utils import set_determinism

    from .benchmark import method_variants

    device = _parse(config, "device")
    methods = {n: _parse(config, f"methods#{n}") for n in names}
    out = {}
    for name, kind, explainer in method_variants(methods, _parse(config, "tta")):
        n = min(len(images), limits.get(name, len(images)))
        set_determinism(seed=seed)
        out[(name, kind)] = torch.cat([explainer(images[i : min(i + 16, n)].to(device)).float().cpu()
                                       for i in range(0, n, 16)])
    set_determinism(seed=None)
    return out


def _table(results: dict, columns: Sequence[str], refs: dict, labels: Mapping[str, str]) -> list[str]:
    head = "| method | " + " | ".join(f"{labels[c]}: ρ | SSIM" for c in columns) + " |"
    lines = [head, "|---" * (2 * len(columns) + 1) + "|"]
    rows = list(next(iter(results.values())))
    cell = lambda s: f"{s['spearman']:.3f} | {s['ssim']:.3f}"  # noqa: E731
    for row in rows:
        name, kind = row.split("|")
        lines.append(f"| {name}{' + aug' if kind == 'tta' else ''} | "
                     + " | ".join(cell(results[c][row]) if row in results[c] else "– | –" for c in columns) + " |")
    for label, score in refs.items():  # one score for every column, or one per column
        per = {c: score.get(c) if "spearman" not in score else score for c in columns}
        lines.append(f"| *{label}* | " + " | ".join(
            f"*{cell(per[c])}*".replace(" | ", "* | *") if per[c] else "– | –" for c in columns) + " |")
    return lines


def _markdown(payload: dict) -> str:
    labels = {v["name"]: v["label"] for v in payload["variants"]}
    columns = [v["name"] for v in payload["variants"]]
    refs = {"Random maps (reference)": payload["references"]["random"]}
    for kind, score in payload["references"].get("budget", {}).items():
        refs[f"Ours{' + aug' if kind == 'tta' else ''}, retrained, original classifier (budget reference)"] = score
    prior = payload["references"].get("image_prior")
    if prior:
        refs["the variant's Ours against the image's x(1 − x) (image prior)"] = prior["variants"]
    s = payload["settings"]
    lines = [
        "# Sanity checks (Adebayo et al., NeurIPS 2018)", "",
        f"- Run: {payload['run_dir']}; {s['images']} test pathology images (BBMP: the first {s['bbmp_images']})",
        f"- Retrained per variant: Ours {s['explainer_epochs']} epochs, Naive {s['naive_epochs']}, Mask Generator "
        f"{s['mask_generator_epochs']}; permuted-label classifier {s['classifier_epochs']} epochs",
        f"- Machine: {payload['cpu']} ({payload['cores']} cores); date {payload['date']}; "
        f"{payload['total_s']:.0f} s in all",
        f"- Command: `{payload['command']}`", "",
        "Each cell: mean over the images of the Spearman rank correlation ρ of the absolute maps and the SSIM of the "
        "maps scaled to [0, 1], between the original classifier's maps and the variant's (1: unchanged; low: the "
        "map depends on what was randomised, the check passes). Reference rows (the same in every column): two "
        "independent random maps, and Ours retrained with the reduced budget against the original classifier. The "
        "last row compares each variant's Ours map (plain) with x(1 − x) of the image, the factor every output of "
        "the generators carries (a change δ in logit space moves a pixel by about x(1 − x) δ): how much of the map's "
        "order the image alone explains"
        + (f" (the original Ours: ρ {prior['original']['spearman']:.3f}, SSIM {prior['original']['ssim']:.3f})."
           if prior else "."), "",
        *_table(payload["results"], columns, refs, labels), "",
        "| classifier | re-initialised | share of the images decided as pathology |", "|---|---|---|",
        f"| original | – | {payload['original']['pathology_share']:.3f} |",
    ]
    for v in payload["variants"]:
        lines.append(f"| {v['label']} | {v['randomised']} | {v['pathology_share']:.3f} |")
    lines += ["", "Seconds per step:", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in payload["steps_s"].items()]
    return "\n".join(lines) + "\n"


def _figure(path: Path, images: torch.Tensor, original: dict, variants: dict, labels: Mapping[str, str],
            names: Sequence[str], rows: int = 2) -> None:
    """Maps before/after: one row per (image, method), columns: the image, the original maps, each variant's."""
    from .figures import GridColumn, grid_figure, save_png, slice_2d

    pick = [(i, n) for i in range(min(rows, len(images))) for n in names if (n, "plain") in original]
    columns = [GridColumn("image", [slice_2d(images[i]) for i, _ in pick]),
               GridColumn("original", [slice_2d(original[(n, "plain")][i]) for i, n in pick], kind="map")]
    for v, maps in variants.items():
        title = labels[v].replace(" to ", "\nto ").replace(" randomisation", "\nrandomisation").replace(" labels", "\nlabels")
        columns.append(GridColumn(title, [slice_2d(maps[(n, "plain")][i]) for i, n in pick], kind="map"))
    fig = grid_figure(columns, cell=1.4)
    for r, (i, n) in enumerate(pick):
        fig.axes[r * len(columns)].set_ylabel(f"{n}\nimage {i}", fontsize=7)
    save_png(fig, path)


def image_prior(images: torch.Tensor) -> torch.Tensor:
    """``x(1 − x)`` per pixel (summed over channels, as the maps are): ``d sigmoid(logit(x) + δ) / dδ`` at ``δ = 0``.
    The generators' outputs are ``sigmoid(logit(x) + δ)`` (:mod:`scripts.networks`), so ``|x_s − x_a|`` carries this
    factor whatever the classifier; a map's rank correlation with it says how much of the map's order is the image
    itself (the role of the edge detector in Adebayo et al. 2018)."""
    return (images * (1 - images)).sum(dim=1, keepdim=True)


def _random_maps(classifier: nn.Module, images: torch.Tensor, seed: int) -> torch.Tensor:
    """The benchmark's random reference map (:class:`~scripts.explainers.RandomExplainer`) of ``images``."""
    from .explainers import RandomExplainer

    return RandomExplainer(classifier, seed=seed)(images)


def _fresh_classifier(overrides: list[str], out: Path, seed: int) -> nn.Module:
    """A new ``classifier_def`` network with its own initialisation, drawn after seeding torch with
    ``seed + INIT_SEED_OFFSET`` (not the trained classifier's initial draw)."""
    torch.manual_seed(seed + INIT_SEED_OFFSET)
    return _parse(_config(overrides, out), "classifier_def", lazy=False)


def _arguments(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The command line, checked: integers positive, variants distinct, no per-stage override the study sets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--run_dir", required=True, help="the trained run (the pipeline's --output_dir)")
    parser.add_argument("--output_dir", required=True, help="the study's folder")
    parser.add_argument("--images", default="32", help="test pathology images scored (default 32)")
    parser.add_argument("--bbmp_images", default="8", help="of those, the ones BBMP explains (default 8)")
    parser.add_argument("--explainer_epochs", default="2", help="Ours' epochs per variant (default 2)")
    parser.add_argument("--naive_epochs", default="1", help="Naive's epochs per variant (default 1)")
    parser.add_argument("--classifier_epochs", default="3", help="the permuted-label classifier's epochs (default 3)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"cascade points (a block, or full) and/or labels (default {DEFAULT_VARIANTS})")
    parser.add_argument("--no_budget_reference", action="store_true", help="skip the budget reference")
    known, rest = parser.parse_known_args(argv)
    for flag in ("max_epochs", "stages"):
        if f"--{flag}" in rest or any(a.startswith(f"--{flag}=") for a in rest):
            raise BundleInputError(f"--{flag}: the study sets it per stage (see --explainer_epochs, --naive_epochs)")
    for flag in ("images", "bbmp_images", "explainer_epochs", "naive_epochs", "classifier_epochs"):
        setattr(known, flag, _positive(getattr(known, flag), f"--{flag}"))
    known.variants = [v.strip() for v in known.variants.split(",") if v.strip()]
    if not known.variants or len(set(known.variants)) != len(known.variants):
        raise BundleInputError(f"--variants must list distinct variants, got {','.join(known.variants)!r}")
    known.run_dir, known.output_dir = Path(known.run_dir).resolve(), Path(known.output_dir).resolve()
    if not known.run_dir.is_dir():
        raise BundleInputError(f"--run_dir {known.run_dir} does not exist or is not a folder")
    return known, rest


def _variant(name: str, out: Path, config, classifier: nn.Module, args: list[str], seed: int, epochs: int) -> dict:
    """How to make variant ``name``'s classifier: its folder, a ``make()`` returning seconds, its recipe entries
    and its description."""
    if name == "labels":
        vdir = out / "labels"
        with contextlib.chdir(ROOT):
            datalist, dataset_dir = (os.path.abspath(_parse(config, k)) for k in ("datalist", "dataset_dir"))
        permuted = out / "permuted_datalist.json"
        content = permuted_datalist(json.loads(Path(datalist).read_text()), seed)
        atomic_write(permuted, lambda f: json.dump(content, f, indent=1))
        stage_args = [*_without(args, ["datalist", "dataset_dir", "seed"]), "--datalist", str(permuted),
                      "--dataset_dir", dataset_dir, "--seed", str(seed + INIT_SEED_OFFSET)]
        return {"dir": vdir, "make": lambda: _run_stage("classifier", vdir, stage_args, epochs),
                "recipe": {"classifier_epochs": epochs, "classifier_seed": seed + INIT_SEED_OFFSET},
                "label": "permuted labels",
                "randomised": f"none: trained {epochs} epochs on permuted labels"}
    net = _fresh_classifier(args, out, seed)
    blocks = cascade_point(net, name)
    state = randomised_state(classifier, net, None if name == "full" else blocks)
    short = name.rsplit(".", 1)[-1]
    vdir = out / f"cascade_{short}"
    return {"dir": vdir, "make": lambda: _saved(state, vdir / "models" / "classifier.pt"),
            "recipe": {"init_seed": seed + INIT_SEED_OFFSET},
            "label": "full randomisation" if name == "full" else f"cascade to {short}",
            "randomised": "every layer" if name == "full" else ", ".join(b.rsplit(".", 1)[-1] for b in blocks)}


def main(argv: list[str] | None = None) -> int:
    install_excepthook()
    argv = list(sys.argv[1:] if argv is None else argv)
    known, rest = _arguments(argv)
    out, start, steps = known.output_dir, time.perf_counter(), {}
    args = _without(rest, ["ckpt_dir", "output_dir"])  # the variants' stages: their checkpoints in <variant>/models
    epochs = {"explainer": known.explainer_epochs, "explainer_naive": known.naive_epochs, "mask_generator": None}

    config = _config(rest, known.run_dir)
    _check_checkpoints(config, list(_HINTS))
    classifier = _parse(config, "classifier")
    seed, device, pathology = (_parse(config, k) for k in ("seed", "device", "pathology_class"))
    for n in known.variants:  # every name checked before anything trains
        if n != "labels":
            cascade_point(_fresh_classifier(args, out, seed), n)
    entries = _parse(config, "test#datalist")[: known.images]
    preprocessing = _parse(config, "preprocessing")
    images = torch.stack([torch.as_tensor(preprocessing(dict(e))["image"]) for e in entries]).float()
    method_names, limits = list(config["methods"]), {"BBMP": known.bbmp_images}

    from .checkpoint import state_fingerprint

    t = time.perf_counter()
    original = _maps(config, method_names, images, seed, limits)
    steps["original: maps"] = round(time.perf_counter() - t, 1)
    base = {"seed": seed, "source_classifier_sha256": state_fingerprint(classifier), "epochs": epochs,
            "args": _without(args, READOUT_OVERRIDES)}
    variants, variant_maps, results, references, prior = [], {}, {}, {}, {}
    if ("Ours", "plain") in original:
        prior["original"] = compare_maps(image_prior(images), original[("Ours", "plain")])
    try:
        for n in known.variants:
            v = _variant(n, out, config, classifier, args, seed, known.classifier_epochs)
            steps.update(_train_variant(n, v["dir"], {**base, "variant": n, **v["recipe"]}, v["make"], epochs, args))
            vconfig = _config(args, v["dir"])
            t = time.perf_counter()
            variant_maps[n] = _maps(vconfig, method_names, images, seed, limits)
            steps[f"{n}: maps"] = round(time.perf_counter() - t, 1)
            share = _pathology_share(_parse(vconfig, "classifier"), images, pathology, device)
            variants.append({"name": n, "label": v["label"], "dir": str(v["dir"]), "randomised": v["randomised"],
                             "pathology_share": share})
            results[n] = {f"{m}|{k}": compare_maps(original[(m, k)], variant_maps[n][(m, k)]) for m, k in original}
            if ("Ours", "plain") in original:
                ours = variant_maps[n][("Ours", "plain")]
                prior.setdefault("variants", {})[n] = compare_maps(image_prior(images), ours)
        if not known.no_budget_reference:
            bdir, state = out / BUDGET, classifier.state_dict()
            steps.update(_train_variant(BUDGET, bdir, {**base, "variant": BUDGET},
                                        lambda: _saved(state, bdir / "models" / "classifier.pt"),
                                        {"explainer": epochs["explainer"]}, args))
            budget = _maps(_config(args, bdir), ["Ours"], images, seed, limits)
            references["budget"] = {k: compare_maps(original[("Ours", k)], m) for (_, k), m in budget.items()}
    except _StageFailed as e:
        return e.code
    if prior:
        references["image_prior"] = prior
    references["random"] = compare_maps(*(_random_maps(classifier, images, seed + i) for i in (0, 1)))
    mask_epochs = _parse(_config(args, out, "mask_generator"), "max_epochs")
    payload = {
        "run_dir": str(known.run_dir), "output_dir": str(out),
        "settings": {"images": len(images), "bbmp_images": min(known.bbmp_images, len(images)),
                     "explainer_epochs": known.explainer_epochs, "naive_epochs": known.naive_epochs,
                     "mask_generator_epochs": mask_epochs, "classifier_epochs": known.classifier_epochs,
                     "seed": seed, "explained": "the classifier's decision"},
        "original": {"pathology_share": _pathology_share(classifier, images, pathology, device),
                     "classifier_sha256": base["source_classifier_sha256"]},
        "variants": variants, "results": results, "references": references,
        "cpu": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
        "command": "python -m scripts.sanity " + " ".join(argv),
        "steps_s": steps, "total_s": round(time.perf_counter() - start, 1),
    }
    atomic_write(out / "sanity.json", lambda f: json.dump(jsonable(payload), f, indent=2))
    atomic_write(out / "sanity.md", lambda f: f.write(_markdown(payload)))
    _figure(out / "sanity.png", images, original, variant_maps, {v["name"]: v["label"] for v in variants},
            method_names)
    print(f"sanity checks: {out / 'sanity.md'} ({payload['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
