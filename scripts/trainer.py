"""Ignite trainers (MONAI ``Trainer`` workflows) for the explanation generators, against a frozen classifier.

* :class:`SimAdvTrainer` trains :class:`scripts.networks.SimAdvGenerator` with :class:`scripts.losses.SimAdvLoss`
  (Charachon et al. 2020, method.md §1-2).
* :class:`MaskGeneratorTrainer` trains :class:`scripts.networks.MaskGeneratorNet` with
  :class:`scripts.losses.MaskGeneratorLoss` (Dabkowski & Gal 2017, method.md §4).

Both explain the classifier's own decision ``ŷ = argmax f_c(x)`` (method.md §1). The classifier is frozen
(:func:`freeze`) and put back in eval mode at every iteration; gradients still flow through it into the generated
images. MONAI's ``SupervisedTrainer`` / ``GanTrainer`` assume one network with one prediction, hence these
subclasses of ``monai.engines.Trainer`` with their own ``_iteration``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.engines.workflow import Workflow
from monai.networks.layers import GaussianFilter
from monai.utils.enums import CommonKeys as Keys
from torch import nn
from torch.optim.optimizer import Optimizer

from .errors import BundleInputError
from .losses import MaskGeneratorLoss
from .networks import difference_map

__all__ = ["freeze", "unwrap_parallel", "loss_output_transform", "SimAdvTrainer", "MaskGeneratorTrainer"]


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode and turn off ``requires_grad`` on its parameters; return it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unwrap_parallel(module: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper, else ``module`` itself.

    The wrapper hides the wrapped network's own attributes (``mode``, ``paired_parameters``) that the loss reads
    (configs/multi_gpu_train.json wraps the generator).
    """
    return module.module if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else module


def loss_output_transform(output: dict | list) -> dict[str, torch.Tensor]:
    """The scalar loss terms of a trainer's ``engine.state.output`` (``"loss"`` and ``"loss_*"``).

    Meant as ``StatsHandler(output_transform=...)`` / ``TensorBoardStatsHandler`` so that every term is logged.
    """
    if isinstance(output, list):  # decollated: scalars are replicated per item
        output = output[0]
    return {k: v for k, v in output.items() if k == Keys.LOSS or k.startswith("loss_")}


class _FrozenClassifierTrainer(Trainer):
    """Shared plumbing: a trained ``generator``, a frozen ``classifier``, AMP (CUDA; CPU in bfloat16) and the step."""

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: nn.Module,
        classifier: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = False,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        amp_kwargs = dict(amp_kwargs or {})
        if isinstance(amp_kwargs.get("dtype"), str):  # JSON-friendly: "float16" / "torch.bfloat16"
            dtype = getattr(torch, amp_kwargs["dtype"].removeprefix("torch."), None)
            if not isinstance(dtype, torch.dtype):
                raise BundleInputError(
                    f"amp_kwargs#dtype must name a torch dtype ('float16', 'bfloat16'), got {amp_kwargs['dtype']!r}"
                )
            amp_kwargs["dtype"] = dtype
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.generator = generator
        self.network = generator  # the trained network, under MONAI's usual name
        self.classifier = freeze(classifier)
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.optim_set_to_none = optim_set_to_none
        self.autocast_device: str | None = None  # set by run()
        self.scaler: torch.amp.GradScaler | None = None

    def _autocast_device(self) -> str | None:
        """The device type to autocast on, or ``None``: CUDA (any ``amp_kwargs`` dtype, float16 by default), and the
        CPU only with an explicit ``amp_kwargs={"dtype": "bfloat16"}`` (the only CPU autocast dtype; about 1.4x faster
        explainer epochs on 2 cores, docs/results.md)."""
        device = torch.device(self.state.device).type if self.amp and self.state.device is not None else None
        if device == "cuda" or (device == "cpu" and self.amp_kwargs.get("dtype") == torch.bfloat16):
            return device
        return None

    def run(self) -> None:  # type: ignore[override]
        """Run training; a ``GradScaler`` is made only for float16 autocast on CUDA."""
        self.autocast_device = self._autocast_device()  # decided once, not per iteration
        fp16 = self.amp_kwargs.get("dtype", torch.float16) == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_device == "cuda" and fp16 else None
        Workflow.run(self)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_device is None:
            return contextlib.nullcontext()
        return torch.autocast(self.autocast_device, **self.amp_kwargs)

    def _start(self, batchdata: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Move the batch to the device, set train/eval modes and zero the gradients.

        Returns ``(x_input, x, label)``: the input as given (possibly a ``MetaTensor``), a plain-tensor view of it
        for computation, and the label or ``None``.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = self.prepare_batch(batchdata, self.state.device, self.non_blocking, **self.to_kwargs)
        x_in, label = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1])
        x = x_in.as_tensor() if isinstance(x_in, MetaTensor) else x_in
        self.generator.train()
        self.classifier.eval()  # guard: stays frozen even if someone called .train() on it
        self.optimizer.zero_grad(set_to_none=self.optim_set_to_none)
        return x_in, x, label

    def _optimize(self, loss: torch.Tensor) -> None:
        """Backward and optimiser step (through the ``GradScaler`` when float16 AMP is on)."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.fire_event(IterationEvents.BACKWARD_COMPLETED)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.fire_event(IterationEvents.BACKWARD_COMPLETED)
            self.optimizer.step()

    def _finish(self, terms: dict[str, torch.Tensor]) -> dict:
        """Store the detached loss terms in the output, step, and fire the closing events."""
        self.state.output.update({k: v.detach() for k, v in terms.items()})
        self.fire_event(IterationEvents.LOSS_COMPLETED)
        self._optimize(terms[Keys.LOSS])
        self.fire_event(IterationEvents.MODEL_COMPLETED)
        return self.state.output


class SimAdvTrainer(_FrozenClassifierTrainer):
    """Train the similar/adversarial generator pair against a frozen classifier (method.md §1-2).

    One iteration: ``ŷ = argmax f_c(x)`` (no grad), ``(x_s, x_a) = generator(x)``, the classifier scores both (the
    naive variant reuses ``f_c(x)`` for ``x_s = x``), ``loss_function`` (:class:`scripts.losses.SimAdvLoss`) gives
    the terms, one optimiser step on the generator.

    ``engine.state.output`` holds ``image``, ``label`` (if the batch has one), ``y_hat``, ``similar``,
    ``adversarial``, ``explanation`` (``|x_s - x_a|`` summed over channels), ``logits_s``, ``logits_a``, ``loss``
    and every ``loss_*`` term, all detached (no host sync: handlers call ``.item()``).

    Args are those of ``monai.engines.SupervisedTrainer`` with ``network`` split into ``generator`` (trained, also
    exposed as ``self.network``) and ``classifier`` (frozen here); ``amp`` autocasts on CUDA, and on the CPU when
    ``amp_kwargs`` names ``dtype="bfloat16"`` (the dtype may be a string); ``decollate`` defaults to ``False``.
    """

    def _iteration(self, engine: SimAdvTrainer, batchdata: Any) -> dict:  # type: ignore[override]
        x_in, x, label = engine._start(batchdata)
        generator = unwrap_parallel(engine.generator)  # forward through the wrapper, attributes from the network
        naive_mode = getattr(generator, "mode", None) == "naive"
        with engine._autocast():
            with torch.no_grad():
                logits = engine.classifier(x)
            y_hat = logits.argmax(dim=1)
            x_s, x_a = engine.generator(x)
            naive = naive_mode or x_s is x
            engine.state.output = {Keys.IMAGE: x_in, "y_hat": y_hat}
            if label is not None:
                engine.state.output[Keys.LABEL] = label
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            if naive:
                logits_s, logits_a = None, engine.classifier(x_a)
            else:  # one classifier call on both images: half the kernel launches (the frozen classifier is in eval mode)
                logits_s, logits_a = engine.classifier(torch.cat([x_s, x_a])).chunk(2)
        terms = engine.loss_function(x, x_s, x_a, logits_s, logits_a, y_hat, generator)
        engine.state.output.update(
            {
                "similar": x_s.detach(),
                "adversarial": x_a.detach(),
                "explanation": difference_map(x_s.detach(), x_a.detach()),
                "logits_s": (logits if logits_s is None else logits_s).detach(),
                "logits_a": logits_a.detach(),
            }
        )
        return engine._finish(terms)


class MaskGeneratorTrainer(_FrozenClassifierTrainer):
    """Train the real-time saliency masker against a frozen classifier (Dabkowski & Gal 2017; method.md §4).

    One iteration: ``ŷ = argmax f_c(x)``, ``m = generator(x, ŷ)``; the classifier scores the preserved image
    ``x*m + blur(x)*(1-m)`` and the destroyed image ``x*(1-m) + blur(x)*m`` (blur: MONAI ``GaussianFilter`` with
    ``blur_sigma`` pixels); ``loss_function`` (default :class:`scripts.losses.MaskGeneratorLoss`) gives the terms.
    The paper also samples other perturbations (noise, constant) and fake class selectors; only the blur and the
    classifier's own decision are used here.

    ``engine.state.output`` holds ``image``, ``label``, ``y_hat``, ``explanation`` (the mask ``m``), ``loss`` and
    every ``loss_*`` term, detached.

    Args: as :class:`SimAdvTrainer`, plus ``blur_sigma`` (pixels) and ``loss_function=None`` for the default loss.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: nn.Module,
        classifier: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        blur_sigma: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device,
            max_epochs,
            train_data_loader,
            generator,
            classifier,
            optimizer,
            MaskGeneratorLoss() if loss_function is None else loss_function,
            **kwargs,
        )
        self.blur_sigma = float(blur_sigma)
        self._blur: GaussianFilter | None = None

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian blur of ``x`` (the perturbation), a fixed MONAI ``GaussianFilter`` built on first use."""
        if self._blur is None:
            self._blur = GaussianFilter(x.ndim - 2, self.blur_sigma).to(x.device)
        return self._blur(x)

    def _iteration(self, engine: MaskGeneratorTrainer, batchdata: Any) -> dict:  # type: ignore[override]
        x_in, x, label = engine._start(batchdata)
        with engine._autocast():
            with torch.no_grad():
                y_hat = engine.classifier(x).argmax(dim=1)
                blurred = engine.blur(x.float()).to(x.dtype)
            mask = engine.generator(x, y_hat)
            engine.state.output = {Keys.IMAGE: x_in, "y_hat": y_hat}
            if label is not None:
                engine.state.output[Keys.LABEL] = label
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            logits_preserved = engine.classifier(x * mask + blurred * (1 - mask))
            logits_destroyed = engine.classifier(x * (1 - mask) + blurred * mask)
        terms = engine.loss_function(mask, logits_preserved, logits_destroyed, y_hat)
        engine.state.output["explanation"] = mask.detach()
        return engine._finish(terms)
