"""Explanation methods behind one interface (:class:`Explainer`): ours, the paper's baselines, and test-time
augmentation around any of them (method.md §1, §3, §4). Configs instantiate the classes by ``_target_``."""

from .base import Explainer, eval_mode
from .bbmp import BBMPExplainer
from .gradcam import GradCAMExplainer
from .gradient import GradientExplainer
from .mask_generator import MaskGeneratorExplainer
from .simadv import NaiveExplainer, SimAdvExplainer
from .tta import TTAExplainer

__all__ = [
    "BBMPExplainer",
    "Explainer",
    "GradCAMExplainer",
    "GradientExplainer",
    "MaskGeneratorExplainer",
    "NaiveExplainer",
    "SimAdvExplainer",
    "TTAExplainer",
    "eval_mode",
]
