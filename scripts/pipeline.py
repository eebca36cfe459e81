"""The README's main command: every stage of the bundle in order, each a real ``python -m monai.bundle run``.

``python -m scripts.pipeline [--stages classifier,explainer,...] [overrides...]``: the overrides (for example
``--dataset_dir /data/rsna --datalist /data/rsna/datalist.json --output_dir runs/rsna``) go to every stage, so the
whole chain runs on a user's own data with those three. Stage times land in ``<output_dir>/pipeline_times.json``.

Before the first stage, the config values every stage will use are checked (:func:`preflight`): a bad value
(``--max_epochs abc``, an ``--image_size`` the generators cannot take) stops the chain with one line before the
classifier trains. Checkpoints follow ``--output_dir`` (``<output_dir>/models``) unless ``--ckpt_dir`` says otherwise.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Any

from .atomic import atomic_write
from .errors import BundleInputError, install_excepthook
from .records import cpu_name

#: (stage, run id, config files) in the order they depend on each other.
STAGES: list[tuple[str, str, str]] = [
    ("classifier", "training", "['configs/common.json','configs/train_classifier.json']"),
    ("explainer", "training", "configs/train.json"),
    ("explainer_naive", "training", "['configs/train.json','configs/variants/naive.json']"),
    ("mask_generator", "training", "configs/train_mask_generator.json"),
    ("evaluate", "evaluating", "configs/evaluate.json"),
    ("inference", "run", "configs/inference.json"),
]

def _override(args: list[str], key: str, default: str) -> str:
    """The value of ``--key value`` / ``--key=value`` in ``args``, else ``default``."""
    for i, a in enumerate(args):
        if a == f"--{key}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{key}="):
            return a.split("=", 1)[1]
    return default


#: ``python -m monai.bundle run`` arguments that are not config overrides.
_RUN_ARGS = ("config_file", "meta_file", "logging_file", "args_file", "tracking", "init_id", "run_id", "final_id")
#: config keys :func:`scripts.data.check_config` checks as numbers, where a stage config has them.
_CHECKED_NUMBERS = ("max_epochs", "batch_size", "learning_rate", "val_interval", "num_workers", "seed",
                    "tta_augmentations", "bbmp_iterations", "timing_seconds")


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` pairs as MONAI's command line (Python Fire) parses them."""
    from fire.parser import DefaultParseValue

    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i < len(args) and not args[i].startswith("--"):
                value = args[i]
                i += 1
            else:
                out[key] = True
                continue
        if key not in _RUN_ARGS:
            out[key] = DefaultParseValue(value)
    return out


def stage_config(stage: str, args: list[str] | dict[str, Any], root: str | None = None):
    """The ``ConfigParser`` of pipeline stage ``stage`` (its config files of :data:`STAGES`) with the command-line
    overrides ``args`` (a list as for :func:`parse_overrides`, or a dict) applied, read from the bundle ``root``
    (default: this bundle). What the study commands (cue reliance, sanity checks) use to build a stage's objects
    (classifier, methods, transforms) exactly as the stage does; parse its content from ``root`` too."""
    from monai.bundle import ConfigParser

    files = {name: config for name, _, config in STAGES}.get(stage)
    if files is None:
        raise BundleInputError(f"unknown stage {stage!r}; the stages are {','.join(n for n, _, _ in STAGES)}")
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with contextlib.chdir(root):  # "%configs/common.json#..." macros are relative to the bundle root
        parser = ConfigParser()
        parser.read_config(ast.literal_eval(files) if files.startswith("[") else files)
        parser.update(args if isinstance(args, dict) else parse_overrides(args))
    return parser


def preflight(stages: list[str], args: list[str], root: str) -> None:
    """Check, before any stage runs, the config values of every stage in ``stages`` with the overrides ``args``.

    Each stage config is read with the overrides applied; its plain values (epochs, batch size, learning rate,
    workers, ``image_size``, ``spatial_dims``, the generators' strides) go through
    :func:`scripts.data.check_config`, so that a value one stage cannot take stops the chain before the first stage
    trains. Raises :class:`BundleInputError` naming the value; a config this cannot read is left to its stage.
    """
    from .data.checks import check_config

    overrides = parse_overrides(args)
    for name, _, _config in STAGES:
        if name not in stages:
            continue
        try:
            parser = stage_config(name, overrides, root)
            with contextlib.chdir(root):
                values = {k: parser.get_parsed_content(k) for k in (*_CHECKED_NUMBERS, "image_size", "spatial_dims",
                          "generator_strides", "mask_generator_strides", "generator_space_to_depth") if k in parser}
        except Exception:  # not a value problem: the stage itself reports it
            continue
        numbers = {k: values[k] for k in _CHECKED_NUMBERS if k in values}
        for strides in [k for k in ("generator_strides", "mask_generator_strides") if k in values] or [None]:
            factor = values.get("generator_space_to_depth") if strides == "generator_strides" else None
            check_config(image_size=values.get("image_size"), strides=values.get(strides) if strides else None,
                         spatial_dims=values.get("spatial_dims"), space_to_depth=factor, **numbers)


def main(argv: list[str] | None = None) -> int:
    install_excepthook()
    args = list(sys.argv[1:] if argv is None else argv)
    known = [s for s, _, _ in STAGES]
    stages = known
    if "--stages" in args:
        i = args.index("--stages")
        if i + 1 >= len(args):
            raise BundleInputError(f"--stages needs a comma-separated list of stages from {','.join(known)}")
        stages = [s.strip() for s in args[i + 1].split(",") if s.strip()]
        del args[i : i + 2]
        unknown = [s for s in stages if s not in known]
        if unknown or not stages:
            raise BundleInputError(f"--stages: unknown stage(s) {unknown or stages}; the stages are {','.join(known)}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output_dir = _override(args, "output_dir", os.path.join(root, "outputs"))
    preflight(stages, args, root)
    if _override(args, "output_dir", "") and not _override(args, "ckpt_dir", ""):
        print(f"checkpoints: {os.path.join(output_dir, 'models')} (--output_dir given, no --ckpt_dir)", flush=True)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    times: dict[str, float] = {}
    for name, run_id, config in STAGES:
        if name not in stages:
            continue
        cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config,
               "--logging_file", "configs/logging.conf", "--bundle_root", root, *args]
        print(f"\n=== stage {name}: python -m monai.bundle run {run_id} --config_file \"{config}\" {' '.join(args)}",
              flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd, cwd=root, env=env)
        times[name] = round(time.perf_counter() - start, 1)
        print(f"=== stage {name}: {'done' if code == 0 else f'FAILED (exit {code})'} in {times[name]:.0f} s", flush=True)
        if code != 0:
            return code
    record = {"stages_s": times, "total_s": round(sum(times.values()), 1), "cpu": cpu_name(),
              "cores": os.cpu_count(), "args": args}
    atomic_write(os.path.join(output_dir, "pipeline_times.json"), lambda f: json.dump(record, f, indent=2))
    print(f"\nall stages done in {record['total_s']:.0f} s on {record['cpu']} ({record['cores']} cores)")
    report = os.path.join(output_dir, "localization.md")
    if os.path.exists(report):
        print(f"localization report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
