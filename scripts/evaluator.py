"""An Ignite evaluator that runs the classifier and one explainer over a dataset (validation, benchmark, inference).

Each iteration adds to the batch what the later layers read (architecture.md): ``pred`` (softmax of ``f_c(x)``),
``y_hat`` (the decision being explained, method.md §1), ``explanation`` ``(B, 1, *spatial)``, and, when a
generator is given, ``similar``/``adversarial`` with the classifier's probabilities on them and the targets the
generation metrics of method.md §5 need (``AUC_os``: ``f_c(x_s)`` against ``ŷ``; ``AUC_oa``: ``f_c(x_a)`` against the
flipped decision ``1 − onehot(ŷ)``, which for K = 2 is the other class).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import Evaluator
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.utils import CommonKeys
from torch import nn

from .explainers.base import Explainer

__all__ = ["ExplanationEvaluator"]


class ExplanationEvaluator(Evaluator):
    """Evaluator whose step is: classify, explain the decision, optionally generate ``x_s``/``x_a``.

    Args:
        device: where to run.
        val_data_loader: batches of dicts with ``image`` and optionally ``label`` and ``mask``.
        classifier: the frozen classifier ``f_c``.
        explainer: any :class:`~scripts.explainers.base.Explainer` (ours, a baseline, a TTA wrapper).
        generator: optional ``x -> (x_s, x_a)`` module; adds the similar/adversarial keys.
        explain_label: explain the ground-truth ``label`` instead of the decision (default: the decision).
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
        x = batchdata[CommonKeys.IMAGE].to(engine.state.device, non_blocking=engine.non_blocking)
        out: dict[str, Any] = {CommonKeys.IMAGE: x}
        for key in ("label", "mask"):
            if key in batchdata:
                out[key] = torch.as_tensor(batchdata[key]).to(engine.state.device)
        if self.generator is not None:
            self.generator.eval()
        with torch.no_grad(), torch.autocast(x.device.type, enabled=self.amp and x.device.type == "cuda"):
            probs = torch.softmax(self.classifier(x).float(), dim=1)
        y_hat = probs.argmax(dim=1)
        num_classes = probs.shape[1]
        out.update(pred=probs, y_hat=y_hat, y_hat_onehot=nn.functional.one_hot(y_hat, num_classes).float())
        target = out["label"].long().reshape(-1) if self.explain_label and "label" in out else y_hat
        with torch.autocast(x.device.type, enabled=self.amp and x.device.type == "cuda"):
            out["explanation"] = self.explainer(x, target).float()
        if self.generator is not None:
            with torch.no_grad(), torch.autocast(x.device.type, enabled=self.amp and x.device.type == "cuda"):
                x_s, x_a = self.generator(x)
                p_s = torch.softmax(self.classifier(x_s).float(), dim=1)
                p_a = torch.softmax(self.classifier(x_a).float(), dim=1)
            out.update(
                similar=x_s.float(),
                adversarial=x_a.float(),
                pred_similar=p_s,
                pred_adversarial=p_a,
                flipped_onehot=1.0 - out["y_hat_onehot"],
            )
        engine.state.output = out
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out
