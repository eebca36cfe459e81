"""The README's main command: every stage of the bundle in order, each a real ``python -m monai.bundle run``.

``python -m scripts.pipeline [--stages classifier,explainer,...] [overrides...]``: the overrides (for example
``--dataset_dir /data/rsna --datalist /data/rsna/datalist.json --output_dir runs/rsna``) go to every stage, so the
whole chain runs on a user's own data with those three. Stage times land in ``<output_dir>/pipeline_times.json``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from .errors import TRAIN_HINTS  # noqa: F401  (configs reference scripts.pipeline.TRAIN_HINTS)

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


def cpu_name() -> str:
    """The processor model (for the record of where numbers came from)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    stages = [s for s, _, _ in STAGES]
    if "--stages" in args:
        i = args.index("--stages")
        stages = args[i + 1].split(",")
        del args[i : i + 2]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output_dir = _override(args, "output_dir", os.path.join(root, "outputs"))
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
    os.makedirs(output_dir, exist_ok=True)
    record = {"stages_s": times, "total_s": round(sum(times.values()), 1), "cpu": cpu_name(),
              "cores": os.cpu_count(), "args": args}
    with open(os.path.join(output_dir, "pipeline_times.json"), "w") as f:
        json.dump(record, f, indent=2)
    print(f"\nall stages done in {record['total_s']:.0f} s on {record['cpu']} ({record['cores']} cores)")
    report = os.path.join(output_dir, "localization.md")
    if os.path.exists(report):
        print(f"localization report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
