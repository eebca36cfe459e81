"""CONTRIBUTING.md's "Add an explainer" recipe, followed as written.

The test reads the recipe itself: its Python blocks (the new explainer file, the export line of
``scripts/explainers/__init__.py``) and its two ``--methods`` overrides. The new file is loaded as
``scripts.explainers.<name>`` from a temporary folder, the export runs in the package's namespace (both undone after
the test), and the method then goes through ``configs/evaluate.json`` the way ``python -m monai.bundle run
evaluating`` runs it (``monai.bundle.ConfigWorkflow``), with a tiny classifier and a hand-made batch instead of the
trained checkpoints and the test split. No training; a few seconds.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


def recipe() -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    start = text.index("## Add an explainer")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def python_blocks(section: str) -> dict[str, str]:
    """The section's Python blocks by the file their first line names (``# scripts/explainers/x.py``)."""
    blocks = {}
    for indent, body in re.findall(r"^( *)```python\n(.*?)^\1```", section, flags=re.S | re.M):
        code = textwrap.dedent(body)
        first, _, rest = code.partition("\n")
        assert first.startswith("# "), f"a recipe block must name its file on its first line: {first!r}"
        blocks[first[2:].strip()] = rest
    return blocks


def method_overrides(section: str) -> dict[str, object]:
    """The ``--methods...`` overrides of the section's commands, parsed as ``python -m monai.bundle`` parses them."""
    commands = " ".join(re.findall(r"```bash\n(.*?)```", section, flags=re.S)).replace("\\\n", " ")
    found = re.findall(r"--(methods(?:#\w+)?) \"(\{.*?\})\"(?=\s|$)", commands)
    return {key: ast.literal_eval(value) for key, value in found}


@pytest.fixture
def explainer_package(tmp_path, monkeypatch):
    """Steps 1 and 2 of the recipe: the new file in ``scripts/explainers/`` and its export from the package."""
    import scripts.explainers as package

    blocks = python_blocks(recipe())
    files = [name for name in blocks if name.startswith("scripts/explainers/") and not name.endswith("__init__.py")]
    assert len(files) == 1, f"the recipe should write one explainer file, found {files}"
    module_file = Path(files[0])
    (tmp_path / module_file.name).write_text(blocks[files[0]])
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    module_name = f"scripts.explainers.{module_file.stem}"
    module = importlib.import_module(module_name)
    monkeypatch.setitem(sys.modules, module_name, module)  # removed again after the test

    namespace = dict(vars(package))
    exec(blocks["scripts/explainers/__init__.py"], namespace)  # noqa: S102 - the recipe's own export line
    exported = {k: v for k, v in namespace.items() if k not in vars(package)}
    assert exported, "the recipe's export line should add a name to scripts.explainers"
    for name, value in exported.items():
        monkeypatch.setattr(package, name, value, raising=False)
    return exported


def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def hand_made_loader() -> torch.utils.data.DataLoader:
    """Four 16×16 images, black but for a 4×4 lesion of intensity 1, the mask on that lesion."""
    items = []
    for i, (r, c) in enumerate([(2, 2), (10, 3), (5, 9), (11, 11)]):
        mask = torch.zeros(1, SIZE, SIZE)
        mask[:, r:r + 4, c:c + 4] = 1.0
        items.append({"image": mask.clone(), "mask": mask, "label": 1, "id": i})
    return torch.utils.data.DataLoader(items, batch_size=2, shuffle=False)


def test_recipe_adds_a_row_beside_the_default_methods(explainer_package, monkeypatch):
    """Step 3, first command: ``--methods#<Name>`` appends the method to configs/evaluate.json's list."""
    monkeypatch.chdir(ROOT)
    overrides = {k: v for k, v in method_overrides(recipe()).items() if "#" in k}
    assert len(overrides) == 1, f"expected one --methods#<Name> override in the recipe, found {list(overrides)}"
    (key, entry), = overrides.items()
    parser = ConfigParser()
    parser.read_config("configs/evaluate.json")
    defaults = list(parser["methods"])
    parser.update({key: entry, "classifier": tiny_classifier()})
    name = key.split("#", 1)[1]
    assert list(parser["methods"]) == [*defaults, name]
    explainer = parser.get_parsed_content(key)
    (cls,) = explainer_package.values()
    assert isinstance(explainer, cls)
    assert explainer.classifier is parser.get_parsed_content("classifier")


def test_recipe_runs_the_new_method_through_the_benchmark(explainer_package, tmp_path, monkeypatch):
    """Step 3, second command: the method alone, scored plain and with TTA, timed, and reported."""
    monkeypatch.chdir(ROOT)
    (entry,) = [v for k, v in method_overrides(recipe()).items() if k == "methods"]
    (name,) = entry
    out = tmp_path / "out"
    workflow = ConfigWorkflow(
        config_file="configs/evaluate.json",
        logging_file=False,
        run_id="evaluating",
        workflow_type=None,
        **{
            "methods": entry,
            "classifier": tiny_classifier(),
            "test#dataloader": hand_made_loader(),
            "device": "$torch.device('cpu')",
            "amp": False,
            "output_dir": str(out),
            "tta_augmentations": 2,
            "timing_seconds": 0,
            "benchmark#timing_images": 1,
            "benchmark#grid_images": 2,
        },
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()

    report = json.loads((out / "localization.json").read_text())
    row = report["methods"][name]
    # the map is the image, and the image is its lesion: at 80-90 % every pixel is kept (the zeros tie at the
    # threshold), so IoU = 16 / 256; from 95 % on only the lesion is
    assert row["plain"]["iou"] == pytest.approx({"80": 0.0625, "85": 0.0625, "90": 0.0625, "95": 1.0, "98": 1.0})
    assert row["tta"] is not None and 0.0 <= row["tta"]["iou"]["95"] <= 1.0
    assert row["plain"]["seconds_per_image"] > 0
    assert f"| {name} |" in (out / "localization.md").read_text()
