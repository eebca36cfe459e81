"""Every network, transform chain and classifier block of the bundle is defined once, in configs/common.json.

The stage configs import these blocks by ``%configs/common.json#key`` macros (a macro copies the raw block, so its
``@`` references resolve in the stage), which keeps ``--config_file configs/<stage>.json`` alone working while one
top-level override (``--generator_channels``, ``--mask_generator_channels``, ``--mask_scale``, ``--spatial_dims``)
reaches every stage. Each stage is parsed here as ``monai.bundle run`` parses it (``read_config``, then ``update``
with the command-line overrides), and one real ``python -m monai.bundle run`` checks the command line itself; no
training. The parameter counts are those of bundle 0.4.0's default networks.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from conftest import ROOT, bundle_env
from scripts.networks import MaskGeneratorNet, SimAdvExplanationNet, SimAdvGenerator

CONFIGS = ROOT / "configs"
VARIANTS = sorted(p.name for p in (CONFIGS / "variants").glob("*.json"))

#: stage -> (config files, ids of the generators it builds, ids of the maskers it builds)
STAGES = {
    "classifier": (["configs/common.json", "configs/train_classifier.json"], [], []),
    "classifier_alone": (["configs/train_classifier.json"], [], []),
    "explainer": (["configs/train.json"], ["network_def"], []),
    **{f"explainer_{v[:-5]}": (["configs/train.json", f"configs/variants/{v}"], ["network_def"], []) for v in VARIANTS},
    "explainer_multi_gpu": (["configs/train.json", "configs/multi_gpu_train.json"], ["network_def"], []),
    "mask_generator": (["configs/train_mask_generator.json"], [], ["network_def"]),
    "evaluate": (["configs/evaluate.json"], ["explainer_def", "naive_def"], ["mask_net_def"]),
    "evaluate_multi_gpu": (["configs/evaluate.json", "configs/multi_gpu_evaluate.json"], ["explainer_def", "naive_def"],
                           ["mask_net_def"]),
    "inference": (["configs/inference.json"], ["explainer_def", "network_def"], []),
}
GENERATOR_STAGES = [s for s, (_, gens, _) in STAGES.items() if gens]
MASKER_STAGES = [s for s, (_, _, masks) in STAGES.items() if masks]


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    """A random-weight classifier checkpoint of configs/common.json#classifier_def (2 classes)."""
    folder = tmp_path_factory.mktemp("models")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "common.json"))
    torch.save({"network": parser.get_parsed_content("classifier_def").state_dict()}, folder / "classifier.pt")
    return folder


def stage(name: str, ckpt_dir: Path, **overrides) -> ConfigParser:
    """The stage's config, read and overridden as ``python -m monai.bundle run`` does, from the bundle root."""
    parser = ConfigParser()
    parser.read_config(STAGES[name][0])
    parser.update({"ckpt_dir": str(ckpt_dir), "image_size": [32, 32], **overrides})
    return parser


def shapes(net: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.fixture(autouse=True)
def _bundle_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the macros name configs/common.json relative to the bundle root


def test_each_network_and_spatial_dims_is_written_once_in_configs():
    # metadata.json describes the networks in words; every other config builds them
    text = {p.relative_to(CONFIGS).as_posix(): p.read_text() for p in CONFIGS.rglob("*.json") if p.name != "metadata.json"}
    for name in ("SimAdvGenerator", "MaskGeneratorNet", "DenseNet121", "SimAdvExplanationNet"):
        where = [f for f, t in text.items() for _ in re.finditer(rf"\b{name}\b", t)]
        assert len(where) == 1, f"{name} is written in {where}"
    for key in ("SimAdvGenerator", "MaskGeneratorNet", "DenseNet121"):
        assert sum(t.count(f'"_target_": "{"" if key == "DenseNet121" else "scripts.networks."}{key}"') for t in text.values()) == 1
    assert [f for f, t in text.items() if re.search(r'"spatial_dims":\s*\d', t)] == ["common.json"]
    assert all("load_transforms[" not in t for t in text.values()), "no config slices the transform list"


@pytest.mark.parametrize("name", GENERATOR_STAGES)
def test_one_override_widens_the_generator_of_every_stage(name, ckpt_dir):
    wide = [8, 16, 32, 64]
    parser = stage(name, ckpt_dir, generator_channels=wide)
    mode = parser.get_parsed_content("generator_mode")
    for key in STAGES[name][1]:
        net = parser.get_parsed_content(key)
        net_mode = "naive" if key == "naive_def" else mode
        cls = SimAdvExplanationNet if isinstance(net, SimAdvExplanationNet) else SimAdvGenerator
        same_init = name == "explainer_duo_w_tv"
        assert shapes(net) == shapes(cls(net_mode, channels=wide, same_init=same_init)), f"{name}#{key}"
        assert net.mode == net_mode


@pytest.mark.parametrize("name", GENERATOR_STAGES)
def test_one_override_sets_the_map_space_of_every_stage(name, ckpt_dir):
    for override, expected in (({}, "logit"), ({"generator_map_space": "image"}, "image")):
        parser = stage(name, ckpt_dir, **override)
        for key in STAGES[name][1]:
            assert parser.get_parsed_content(key).map_space == expected, f"{name}#{key}"


@pytest.mark.parametrize("name", GENERATOR_STAGES)
def test_one_override_sets_the_trunk_of_every_stage(name, ckpt_dir):
    from scripts.networks import SpaceToDepthTrunk

    for override, expected in (({}, 1), ({"generator_space_to_depth": 2}, 2)):
        parser = stage(name, ckpt_dir, **override)
        for key in STAGES[name][1]:
            net = parser.get_parsed_content(key)
            assert net.build_kwargs["space_to_depth"] == expected, f"{name}#{key}"
            assert any(isinstance(m, SpaceToDepthTrunk) for m in net.modules()) == (expected > 1), f"{name}#{key}"


def test_the_validation_screen_overlay_scores_the_validation_split(ckpt_dir):
    parser = ConfigParser()
    parser.read_config(["configs/evaluate.json", "configs/screen_validation.json"])
    parser.update({"ckpt_dir": str(ckpt_dir), "image_size": [32, 32]})
    parser.parse()  # resolves the macros, instantiates nothing
    assert list(parser["methods"]) == ["Gradient", "Naive", "Ours"]
    assert parser["methods"]["Ours"] == ConfigParser.load_config_file("configs/evaluate.json")["methods"]["Ours"]
    assert "'validation'" in parser["test"]["datalist"] and "'test'" not in parser["test"]["datalist"]
    assert parser["test"]["dataset"]["_target_"] == "CacheDataset"  # the rest of the test block is evaluate.json's


@pytest.mark.parametrize("name", MASKER_STAGES)
@pytest.mark.parametrize("override, expected", [
    ({"mask_generator_channels": [8, 16, 32, 64]}, {"channels": [8, 16, 32, 64], "mask_scale": 4}),
    ({"mask_scale": 1}, {"mask_scale": 1}),
])
def test_one_override_changes_the_mask_generator_of_every_stage(name, override, expected, ckpt_dir):
    parser = stage(name, ckpt_dir, **override)
    for key in STAGES[name][2]:
        net = parser.get_parsed_content(key)
        assert shapes(net) == shapes(MaskGeneratorNet(num_classes=2, **expected)), f"{name}#{key}"
        assert net.mask_scale == expected["mask_scale"]


def test_the_command_line_override_reaches_every_network_of_the_benchmark(ckpt_dir, tmp_path):
    wide = [8, 16, 32, 64]
    out = tmp_path / "params.pt"
    probe = (f"$torch.save({{k: sum(p.numel() for p in v.parameters()) for k, v in [('explainer_def', @explainer_def), "
             f"('naive_def', @naive_def), ('mask_net_def', @mask_net_def)]}}, '{out}')")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "probe", "--config_file", "configs/evaluate.json",
           "--ckpt_dir", str(ckpt_dir), "--image_size", "[32,32]", "--generator_channels", json.dumps(wide),
           "--mask_generator_channels", json.dumps(wide), "--probe", json.dumps([probe])]
    proc = subprocess.run(cmd, cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert torch.load(out, weights_only=True) == {
        "explainer_def": count(SimAdvGenerator("single", channels=wide)),
        "naive_def": count(SimAdvGenerator("naive", channels=wide)),
        "mask_net_def": count(MaskGeneratorNet(num_classes=2, channels=wide)),
    }


@pytest.mark.parametrize("name", list(STAGES))
def test_spatial_dims_is_one_key_for_every_network_and_metric(name, ckpt_dir):
    parser = stage(name, ckpt_dir, spatial_dims=3)
    parser.parse()
    assert parser.get_parsed_content("classifier_def#spatial_dims") == 3
    dims = {k: parser.get_parsed_content(f"{k}#spatial_dims") for k in ("generator_def", "mask_generator_def")
            if k in parser}
    if name.startswith("explainer"):
        dims.update({m: parser.get_parsed_content(f"validate#metrics#{m}#metric_fn#spatial_dims")
                     for m in ("ssim_x_xs", "ssim_x_xa", "ssim_xs_xa")})
    assert all(d == 3 for d in dims.values()), dims


@pytest.mark.parametrize(
    "name, defaults",
    [
        ("explainer", {"network_def": ("SimAdvGenerator", "single", 216525)}),
        ("explainer_duo_tv", {"network_def": ("SimAdvGenerator", "duo", 428374)}),
        ("explainer_naive", {"network_def": ("SimAdvGenerator", "naive", 214187)}),
        ("mask_generator", {"network_def": ("MaskGeneratorNet", None, 205521)}),
        ("evaluate", {"explainer_def": ("SimAdvGenerator", "single", 216525),
                      "naive_def": ("SimAdvGenerator", "naive", 214187),
                      "mask_net_def": ("MaskGeneratorNet", None, 205521)}),
        ("inference", {"explainer_def": ("SimAdvGenerator", "single", 216525),
                       "network_def": ("SimAdvExplanationNet", "single", 216525)}),
    ],
)
def test_default_networks_are_those_of_0_4_0(name, defaults, ckpt_dir):
    parser = stage(name, ckpt_dir)
    for key, (cls, mode, params) in defaults.items():
        net = parser.get_parsed_content(key)
        assert (type(net).__name__, getattr(net, "mode", None), sum(p.numel() for p in net.parameters())) == (
            cls, mode, params), f"{name}#{key}"


def test_a_stage_still_overrides_its_own_network_by_sub_key(ckpt_dir):
    """What differs in one stage is set there: the stage's own keys take ``key#arg`` overrides."""
    train = stage("explainer", ckpt_dir, **{"network_def#num_res_units": 0})
    assert shapes(train.get_parsed_content("network_def")) == shapes(SimAdvGenerator("single", num_res_units=0))
    evaluate = stage("evaluate", ckpt_dir, **{"mask_net_def#mask_scale": 1, "naive_def#num_res_units": 0})
    assert evaluate.get_parsed_content("mask_net_def").mask_scale == 1
    assert shapes(evaluate.get_parsed_content("naive_def")) == shapes(SimAdvGenerator("naive", num_res_units=0))
    assert evaluate.get_parsed_content("explainer_def").mode == "single"
    export = stage("inference", ckpt_dir, **{"network_def#mode": "duo"})
    assert shapes(export.get_parsed_content("network_def")) == shapes(SimAdvGenerator("duo"))


@pytest.mark.parametrize("name", [s for s in STAGES if "multi_gpu" not in s])
def test_preprocessing_is_the_named_parts_in_order(name, ckpt_dir):
    parser = stage(name, ckpt_dir)
    parts = [parser.get_parsed_content(k) for k in ("read_transforms", "resize_transforms", "type_transforms")]
    assert [type(t).__name__ for t in parts[1]] == ["Resized", "Resized"]
    assert [type(t).__name__ for t in parts[2]] == ["EnsureTyped"]
    composed = list(parser.get_parsed_content("preprocessing").transforms)
    assert composed == [t for part in parts for t in part]
    # inference keeps the metadata (file name, affine) for its writer; training and evaluation drop it
    assert parts[2][0].converter.track_meta is (name == "inference")


def test_common_blocks_are_plain_json_the_stages_import():
    """Every ``%`` macro of a stage names a key that configs/common.json defines (no macro of a macro)."""
    common = json.loads((CONFIGS / "common.json").read_text())
    for path in sorted(CONFIGS.glob("*.json")):
        for key, value in json.loads(path.read_text()).items():
            if isinstance(value, str) and value.startswith("%"):
                target = value.split("#", 1)[1]
                assert value == f"%configs/common.json#{target}" and target in common, f"{path.name}#{key}"
                assert not (isinstance(common[target], str) and common[target].startswith("%"))
