"""An Ignite evaluator that runs the classifier and one explainer over a dataset (validation, benchmark, inference).

Each iteration adds to the batch what the later layers read (architecture.md): ``pred`` (softmax of ``f_c(x)``),
``y_hat`` (the decision being explained, method.md §1), ``explanation`` ``(B, 1, *spatial)``, and, when a
generator is given, ``similar``/``adversarial`` with the classifier's probabilities on them and the targets the
generation metrics of method.md §5 need (``AUC_os``: ``f_c(x_s)`` against ``ŷ``; ``AUC_oa``: ``f_c(x_a)`` against the
flipped decision ``1 − onehot(ŷ)``, which for K = 2 is the other class).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import Evaluator
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.utils import CommonKeys
from torch import nn

from .explainers.base import Explainer

__all__ = ["ExplanationEvaluator", "evaluation_step"]


def _softmax(classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(classifier(x).float(), dim=1)


def evaluation_step(
    classifier: nn.Module,
    explainer: Explainer,
    x: torch.Tensor,
    generator: nn.Module | None = None,
    target: torch.Tensor | None = None,
    amp: bool = False,
    marks: dict[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """The evaluation step on one batch ``x``: classify, explain the decision, optionally generate ``x_s``/``x_a``.

    Used by :class:`ExplanationEvaluator` (validation, benchmark, inference) and by the review app's ``explain`` task.

    Args:
        classifier: the frozen classifier ``f_c``.
        explainer: any :class:`~scripts.explainers.base.Explainer`.
        x: the batch ``(B, C, *spatial)``, on the device.
        generator: optional ``x -> (x_s, x_a)`` module; adds ``similar``, ``adversarial``, ``pred_similar``,
            ``pred_adversarial`` and ``flipped_onehot``.
        target: the classes to explain ``(B,)``; default the decision ``ŷ``.
        amp: autocast on CUDA.
        marks: when given, receives ``time.perf_counter()`` after each phase (``classifier``, ``explainer``,
            ``generation``; CUDA synchronised first), for latencies.

    Returns:
        ``pred`` (softmax of ``f_c(x)``), ``y_hat``, ``y_hat_onehot``, ``explanation`` ``(B, 1, *spatial)`` (float)
        and, with a generator, the keys above.
    """

    def mark(name: str) -> None:
        if marks is not None:
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            marks[name] = time.perf_counter()

    autocast = dict(device_type=x.device.type, enabled=amp and x.device.type == "cuda")
    with torch.no_grad(), torch.autocast(**autocast):
        probs = _softmax(classifier, x)
    y_hat = probs.argmax(dim=1)
    y_hat_onehot = nn.functional.one_hot(y_hat, probs.shape[1]).float()
    out: dict[str, torch.Tensor] = {"pred": probs, "y_hat": y_hat, "y_hat_onehot": y_hat_onehot}
    mark("classifier")
    with torch.autocast(**autocast):
        out["explanation"] = explainer(x, y_hat if target is None else target).float()
    mark("explainer")
    if generator is not None:
        generator.eval()
        with torch.no_grad(), torch.autocast(**autocast):
            x_s, x_a = generator(x)
            p_s, p_a = _softmax(classifier, x_s), _softmax(classifier, x_a)
        out.update(
            similar=x_s.float(),
            adversarial=x_a.float(),
            pred_similar=p_s,
            pred_adversarial=p_a,
            flipped_onehot=1.0 - y_hat_onehot,
        )
        mark("generation")
    return out


class ExplanationEvaluator(Evaluator):
    """Evaluator whose step is :func:`evaluation_step`: classify, explain the decision, optionally generate.

    Args:
        device: where to run.
        val_data_loader: batches of dicts with ``image`` and optionally ``label`` and ``mask``.
        classifier: the frozen classifier ``f_c``.
        explainer: any :class:`~scripts.explainers.base.Explainer` (ours, a baseline, a TTA wrapper).
        generator: optional ``x -> (x_s, x_a)`` module; adds the similar/adversarial keys.
        explain_label: explain the ground-truth ``label`` instead of the decision (default: the decision).
        prepare_batch: ``(batchdata, device, non_blocking, **kwargs) -> (image, label)`` as in MONAI's engines
            (default :func:`monai.engines.utils.default_prepare_batch`); ``mask`` is read from the batch as given.
        amp: autocast on CUDA.
        Other arguments as :class:`monai.engines.Evaluator`.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        classifier: nn.Module,
        explainer: Explainer,
        generator: nn.Module | None = None,
        explain_label: bool = False,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        postprocessing: Callable | None = None,
        key_val_metric: dict | None = None,
        additional_metrics: dict | None = None,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        decollate: bool = False,
    ) -> None:
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            postprocessing=postprocessing,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            val_handlers=val_handlers,
            amp=amp,
            decollate=decollate,
        )
        self.classifier = classifier
        self.explainer = explainer
        self.generator = generator
        self.explain_label = explain_label

    def _iteration(self, engine: Any, batchdata: dict[str, torch.Tensor]) -> dict:
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        x, label = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1])
        out: dict[str, Any] = {CommonKeys.IMAGE: x}
        if label is None and CommonKeys.LABEL in batchdata:  # e.g. a list of ints that prepare_batch passed over
            label = torch.as_tensor(batchdata[CommonKeys.LABEL])
        if label is not None:
            out[CommonKeys.LABEL] = torch.as_tensor(label).to(engine.state.device)
        if "mask" in batchdata:
            out["mask"] = torch.as_tensor(batchdata["mask"]).to(engine.state.device)
        target = out[CommonKeys.LABEL].long().reshape(-1) if self.explain_label and CommonKeys.LABEL in out else None
        out.update(evaluation_step(self.classifier, self.explainer, x, self.generator, target, amp=self.amp))
        engine.state.output = out
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out
