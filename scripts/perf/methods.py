"""The networks and the explanation methods the benchmark times (:mod:`scripts.perf`).

Networks come from the bundle's configs (so the benchmark follows them): the classifier is
``configs/common.json#classifier_def``, the generators ``configs/train.json#network_def`` (mode ``single`` / ``duo``
/ ``naive``), the masker ``configs/evaluate.json#mask_net_def``, test-time augmentation
``configs/evaluate.json#tta`` and BBMP's iterations ``configs/evaluate.json#bbmp_iterations``. Weights are random
unless a checkpoint is given (timings do not depend on weights); random generators get non-zero output heads
(``zero_init=False``) so that their maps are not trivially 0 and the fast path's error check means something.

Every method is called as ``run(x, target)`` on a batch on the device with the per-sample classes to explain
(``target``: ``ŷ = argmax f_c(x)``, computed once outside the timed calls and converted to what the method's API
takes). Each method gets its own copy of the classifier, so hooks one implementation registers cannot slow another
down. Ours and our baselines get the classifier as the bundle loads it (eval mode, frozen: ``requires_grad=False``);
the peers get it in eval mode with trainable parameters, as in their own examples (MONAI's and pytorch-grad-cam's
``.backward()`` needs a graph through the parameters or the input; Captum takes gradients w.r.t. the input only).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import nn

from ..checkpoint import freeze, load_network
from ..classifier import classifier_num_classes, load_classifier
from ..explainers import (
    BBMPExplainer,
    GradCAMExplainer,
    GradientExplainer,
    MaskGeneratorExplainer,
    SimAdvExplainer,
    TTAExplainer,
)
from ..fast_path import FastPathOptions, check_fast_path, make_fast_explainer

__all__ = [
    "ROOT",
    "Networks",
    "Method",
    "build_networks",
    "method_names",
    "DEFAULT_METHODS",
    "OUR_METHODS",
    "PEER_METHODS",
    "make_method",
    "make_fast_method",
    "peer_status",
]

ROOT = Path(__file__).resolve().parents[2]
TARGET_LAYER = "class_layers.relu"  # last dense-block feature map of MONAI's DenseNet121 (as configs/evaluate.json)

#: ours and our baselines (scripts/explainers); ``+tta`` after any of them wraps it in TTAExplainer.
OUR_METHODS = ("ours-single", "ours-single-s2d", "ours-duo", "naive", "mask-generator", "gradient", "gradcam",
               "bbmp")
#: generator keys beyond the three modes: ``single-s2d`` is the Single AE with the space-to-depth stem (its U-Net
#: at half resolution, ``space_to_depth`` 2, light full-resolution heads), beside the configured one.
GENERATOR_VARIANTS = {"single-s2d": {"mode": "single", "space_to_depth": 2}}
#: the peers' own implementations, as they ship (optional: requirements-bench.txt).
PEER_METHODS = (
    "monai-gradcam",
    "monai-vanillagrad",
    "captum-saliency",
    "captum-layergradcam",
    "pytorch-grad-cam",
)
#: what ``--methods all`` runs (BBMP is left out: 100 classifier passes per image; name it to add it).
DEFAULT_METHODS = (
    "ours-single",
    "ours-single-s2d",
    "ours-duo",
    "ours-single+tta",
    "naive",
    "mask-generator",
    "gradient",
    "gradcam",
    *PEER_METHODS,
)
#: the Python package each peer needs (import name, pip name).
_PEER_PACKAGES = {
    "monai-gradcam": ("monai", "monai"),
    "monai-vanillagrad": ("monai", "monai"),
    "captum-saliency": ("captum", "captum"),
    "captum-layergradcam": ("captum", "captum"),
    "pytorch-grad-cam": ("pytorch_grad_cam", "grad-cam"),
}


def _parser(config: str, **updates: Any) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(ROOT / config))
    parser.update({"bundle_root": str(ROOT), **updates})
    return parser


def _from_config(config: str, key: str, **overrides: Any) -> Any:
    """Instantiate ``key`` of a bundle config with ``key#name`` overrides."""
    parser = _parser(config)
    for name, value in overrides.items():
        parser[f"{key}#{name}"] = value
    return parser.get_parsed_content(key)


@dataclass
class Networks:
    """The networks every method shares (on ``device``): classifier (frozen), generators by mode, masker."""

    device: torch.device
    classifier: nn.Module
    num_classes: int
    generators: dict[str, nn.Module] = field(default_factory=dict)
    mask_net: nn.Module | None = None
    sources: dict[str, str] = field(default_factory=dict)
    tta: dict = field(default_factory=dict)
    bbmp_iterations: int = 100

    def generator(self, mode: str) -> nn.Module:
        if mode not in self.generators:
            raise KeyError(f"no {mode!r} generator built")
        return self.generators[mode]


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def build_networks(
    device: torch.device,
    image_size: int,
    modes: tuple[str, ...] = ("single", "single-s2d", "duo", "naive"),
    classifier: str | None = None,
    explainer: str | None = None,
    explainer_duo: str | None = None,
    naive_explainer: str | None = None,
    mask_generator: str | None = None,
    tta_augmentations: int | None = None,
    seed: int = 0,
) -> Networks:
    """Build (random weights) or load (checkpoint paths) every network on ``device``."""
    torch.manual_seed(seed)
    clf_def = _from_config("configs/common.json", "classifier_def")
    sources: dict[str, str] = {}
    if classifier:
        clf = load_classifier(classifier, clf_def, device)
        sources["classifier"] = str(classifier)
    else:
        clf = freeze(clf_def.to(device))
        sources["classifier"] = "random (configs/common.json#classifier_def)"
    k = classifier_num_classes(clf, 1, [image_size, image_size])
    sources["classifier"] += f", {_params(clf):,} parameters, {k} classes"
    generators: dict[str, nn.Module] = {}
    paths = {"single": explainer, "duo": explainer_duo, "naive": naive_explainer}
    for mode in modes:
        path = paths.get(mode)
        build = GENERATOR_VARIANTS.get(mode, {"mode": mode})
        gen = _from_config("configs/train.json", "network_def", zero_init=path is not None, **build)
        if path:
            load_network(gen, path, key="generator", what=f"{mode} explainer checkpoint")
        generators[mode] = gen.to(device).eval()
        src = str(path) if path else "random (configs/train.json#network_def, zero_init=False)"
        sources[f"generator_{mode}"] = f"{src}, {_params(gen):,} parameters"
    mask_net = _from_config("configs/evaluate.json", "mask_net_def", num_classes=k)
    if mask_generator:
        load_network(mask_net, mask_generator, key="generator", what="mask generator checkpoint")
    sources["mask_generator"] = (str(mask_generator) if mask_generator else "random (configs/evaluate.json#mask_net_def)")
    sources["mask_generator"] += f", {_params(mask_net):,} parameters"
    evaluate = _parser("configs/evaluate.json")
    if tta_augmentations is not None:
        evaluate["tta_augmentations"] = tta_augmentations
    tta = dict(evaluate.get_parsed_content("tta"))
    return Networks(
        device=device,
        classifier=clf,
        num_classes=k,
        generators=generators,
        mask_net=mask_net.to(device).eval(),
        sources=sources,
        tta=tta,
        bbmp_iterations=int(evaluate.get_parsed_content("bbmp_iterations")),
    )


@dataclass
class Method:
    """One row of the benchmark: ``run(x, prepared_target)``; ``status`` is ``"ok"`` or why it cannot run."""

    name: str
    family: str  # "ours", "baseline" or "peer"
    run: Callable[[torch.Tensor, Any], Any] | None = None
    prepare_target: Callable[[torch.Tensor], Any] = lambda t: t
    status: str = "ok"
    reason: str | None = None
    max_batch: int | None = None  # largest batch the implementation accepts (None: any)
    info: dict = field(default_factory=dict)


def peer_status(name: str) -> tuple[str, str | None]:
    """``("ok", None)`` when the peer's package imports, else ``("not installed", ...)`` or ``("unavailable", why)``."""
    module, pip_name = _PEER_PACKAGES[name]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == module:
            return "not installed", f"pip install {pip_name} (requirements-bench.txt)"
        return "unavailable", f"import {module} failed: {type(e).__name__}: {e}"
    except Exception as e:  # a broken dependency, e.g. torchvision built for another torch
        why = f"import {module} failed: {type(e).__name__}: {e}"
        if "torchvision::" in str(e):
            why += (" (the installed torchvision is not built for this torch: its C++ ops did not load; "
                    "install the torchvision build that matches torch " + torch.__version__ + ")")
        return "unavailable", why
    return "ok", None


def method_names(spec: str) -> list[str]:
    """Method names from ``"all"``, ``"ours"``, ``"peers"`` or a comma list (names as in :data:`DEFAULT_METHODS`)."""
    out: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "all":
            out.extend(DEFAULT_METHODS)
        elif item == "ours":
            out.extend(m for m in DEFAULT_METHODS if m.startswith("ours"))
        elif item == "peers":
            out.extend(PEER_METHODS)
        else:
            base = item.removesuffix("+tta")
            if base not in OUR_METHODS and base not in PEER_METHODS:
                raise ValueError(f"unknown method {item!r}; known: {', '.join(OUR_METHODS + PEER_METHODS)}, +tta")
            if item.endswith("+tta") and base in PEER_METHODS:
                raise ValueError(f"+tta wraps the bundle's explainers only, not the peer {base!r}")
            out.append(item)
    return list(dict.fromkeys(out))


def _classifier_copy(nets: Networks, trainable: bool) -> nn.Module:
    clf = copy.deepcopy(nets.classifier).eval()
    for p in clf.parameters():
        p.requires_grad_(trainable)
    return clf


def _ours(nets: Networks, name: str) -> Method:
    """Ours and our baselines (scripts/explainers), optionally wrapped in test-time augmentation."""
    base = name.removesuffix("+tta")
    clf = _classifier_copy(nets, trainable=False)
    family = "ours" if base.startswith("ours") else "baseline"
    if base in ("ours-single", "ours-single-s2d", "ours-duo", "naive"):
        mode = base.removeprefix("ours-")
        explainer: Any = SimAdvExplainer(clf, nets.generator(mode))  # naive: x_s = x, as configs/evaluate.json
    elif base == "mask-generator":
        explainer = MaskGeneratorExplainer(clf, nets.mask_net)
    elif base == "gradient":
        explainer = GradientExplainer(clf)
    elif base == "gradcam":
        explainer = GradCAMExplainer(clf, TARGET_LAYER)
    elif base == "bbmp":
        explainer = BBMPExplainer(clf, iterations=nets.bbmp_iterations)
    else:
        raise ValueError(f"unknown method {name!r}")
    info: dict = {"implementation": f"scripts.explainers.{type(explainer).__name__}"}
    if name.endswith("+tta"):
        tta = {k: v for k, v in nets.tta.items() if k != "num_augmentations"}
        explainer = TTAExplainer(explainer, num_augmentations=int(nets.tta["num_augmentations"]), **tta)
        info["tta_augmentations"] = int(nets.tta["num_augmentations"])
        info["implementation"] += " in TTAExplainer"
    if base == "bbmp":
        info["iterations"] = nets.bbmp_iterations
    return Method(name, family, run=lambda x, t: explainer(x, t), info=info)


def make_fast_method(nets: Networks, mode: str, options: FastPathOptions, check_input: torch.Tensor) -> Method:
    """Ours through :mod:`scripts.fast_path`, with the relative L2 error against float32 eager on ``check_input``."""
    name = f"ours-{mode}[{options.describe()}]"
    gen = nets.generator(mode)
    try:
        fast = make_fast_explainer(gen, options)
        error = check_fast_path(gen, fast, check_input)
    except Exception as e:  # an option this device/torch cannot do: a row that says why
        return Method(name, "ours", status="error", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
    tol = fast.tolerance
    info = {
        "implementation": "scripts.fast_path.FastExplainer",
        "options": options.describe(),
        "rel_l2_error": error,
        "tolerance": tol,
        "check_passed": error <= tol,
        "check_input_shape": list(check_input.shape),
    }
    return Method(name, "ours", run=lambda x, t: fast(x), info=info)


def _peer(nets: Networks, name: str) -> Method:
    status, reason = peer_status(name)
    if status != "ok":
        return Method(name, "peer", status=status, reason=reason)
    clf = _classifier_copy(nets, trainable=True)
    layer = dict(clf.named_modules())[TARGET_LAYER]
    if name == "monai-gradcam":
        import monai
        from monai.visualize import GradCAM

        cam = GradCAM(nn_module=clf, target_layers=TARGET_LAYER)  # default upsampler and normaliser
        info = {"implementation": f"monai.visualize.GradCAM (monai {monai.__version__})"}
        return Method(name, "peer", run=lambda x, t: cam(x, class_idx=t), info=info)
    if name == "monai-vanillagrad":
        import monai
        from monai.visualize import VanillaGrad

        grad = VanillaGrad(clf)
        info = {"implementation": f"monai.visualize.VanillaGrad (monai {monai.__version__})",
                "note": "MONAI 1.6 VanillaGrad accepts batches of 1 only ('expect batch size of 1')"}
        return Method(name, "peer", run=lambda x, t: grad(x, index=t), max_batch=1, info=info)
    if name.startswith("captum"):
        import captum
        from captum.attr import LayerAttribution, LayerGradCam, Saliency

        version = f"captum {captum.__version__}"
        if name == "captum-saliency":
            sal = Saliency(clf)
            info = {"implementation": f"captum.attr.Saliency, abs=True ({version})"}
            return Method(name, "peer", run=lambda x, t: sal.attribute(x, target=t, abs=True), info=info)
        lgc = LayerGradCam(clf, layer)

        def run_lgc(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            cam = lgc.attribute(x, target=t, relu_attributions=True)
            return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), "bilinear")

        info = {"implementation": f"captum.attr.LayerGradCam + LayerAttribution.interpolate bilinear ({version})"}
        return Method(name, "peer", run=run_lgc, info=info)
    if name == "pytorch-grad-cam":
        from importlib.metadata import version as dist_version

        from pytorch_grad_cam import GradCAM as PGCGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        pgc = PGCGradCAM(model=clf, target_layers=[layer])
        info = {"implementation": f"pytorch_grad_cam.GradCAM (grad-cam {dist_version('grad-cam')}), "
                "returns a NumPy array on the host"}
        return Method(
            name, "peer",
            run=lambda x, t: pgc(input_tensor=x, targets=t),
            prepare_target=lambda t: [ClassifierOutputTarget(int(c)) for c in t.tolist()],
            info=info,
        )
    raise ValueError(f"unknown peer {name!r}")


def make_method(nets: Networks, name: str) -> Method:
    """Build one method by name; a peer that cannot be imported gives a row with its status and reason."""
    if name.removesuffix("+tta") in PEER_METHODS:
        return _peer(nets, name)
    return _ours(nets, name)
