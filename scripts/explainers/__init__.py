"""Explanation methods behind one interface (:class:`Explainer`): ours, the paper's baselines, test-time
augmentation around any of them (method.md §1, §3, §4) and the benchmark's random reference map. Configs
instantiate the classes by ``_target_``."""

from .base import Explainer, eval_mode
from .bbmp import BBMPExplainer
from .gradcam import GradCAMExplainer
from .gradient import GradientExplainer
from .mask_generator import MaskGeneratorExplainer
from .random_map import RandomExplainer
from .simadv import SimAdvExplainer
from .tta import TTAExplainer

__all__ = [
    "BBMPExplainer",
    "Explainer",
    "GradCAMExplainer",
    "GradientExplainer",
    "MaskGeneratorExplainer",
    "RandomExplainer",
    "SimAdvExplainer",
    "TTAExplainer",
    "eval_mode",
]
