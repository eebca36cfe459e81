"""Ignite trainers (MONAI ``Trainer`` workflows) for the explanation generators, against a frozen classifier.

* :class:`SimAdvTrainer` trains :class:`scripts.networks.SimAdvGenerator` with :class:`scripts.losses.SimAdvLoss`
  (Charachon et al. 2020, method.md §1-2).
* :class:`MaskGeneratorTrainer` trains :class:`scripts.networks.MaskGeneratorNet` with
  :class:`scripts.losses.MaskGeneratorLoss` (Dabkowski & Gal 2017, method.md §4).

Both explain the classifier's own decision ``ŷ = argmax f_c(x)`` (method.md §1). The classifier is frozen
(:func:`scripts.checkpoint.freeze`) and put back in eval mode at every iteration; gradients still flow through it
into the generated images. MONAI's ``SupervisedTrainer`` / ``GanTrainer`` assume one network with one prediction,
hence these subclasses of ``monai.engines.Trainer`` with their own ``_iteration``. The explainer's step is one
function, :func:`simadv_step`, which the speed benchmark (``scripts/perf/training.py``) times as it is.
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

from .checkpoint import freeze
from .errors import BundleInputError
from .losses import MaskGeneratorLoss, SimAdvLoss
from .networks import generator_map, is_naive

__all__ = [
    "unwrap_parallel",
    "loss_output_transform",
    "backward_and_step",
    "simadv_step",
    "SimAdvTrainer",
    "MaskGeneratorTrainer",
]


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


def backward_and_step(
    loss: torch.Tensor,
    optimizer: Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    after_backward: Callable[[], None] | None = None,
) -> None:
    """Backward and optimiser step, through the ``GradScaler`` when one is given (float16 autocast)."""
    if scaler is not None:
        scaler.scale(loss).backward()
        if after_backward is not None:
            after_backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()


def simadv_step(
    x: torch.Tensor,
    generator: nn.Module,
    classifier: nn.Module,
    loss_function: Callable,
    optimizer: Optimizer,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scaler: torch.amp.GradScaler | None = None,
    set_to_none: bool = False,
    network: nn.Module | None = None,
    on_forward: Callable[[torch.Tensor], None] | None = None,
    on_loss: Callable[[dict[str, torch.Tensor]], None] | None = None,
    after_backward: Callable[[], None] | None = None,
    classifier_view: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """One explainer training step (method.md §1-2): the step of :class:`SimAdvTrainer` and of the speed benchmark.

    ``ŷ = argmax f_c(x)`` (no grad), ``(x_s, x_a) = generator(x)``, one classifier call on ``cat([x_s, x_a])`` (the
    naive variant, :func:`scripts.networks.is_naive`, scores ``x_a`` alone), ``loss_function`` (a
    :class:`scripts.losses.SimAdvLoss`), backward and one optimiser step. No ``.item()`` or other host read.

    Args:
        x: the input batch (a plain tensor, already on the device and in the memory format wanted).
        generator: what is called for ``(x_s, x_a)``: the network, its ``DistributedDataParallel`` wrapper or a
            ``torch.compile`` of it.
        classifier: the frozen classifier (or a ``torch.compile`` of it), in eval mode.
        loss_function, optimizer: the loss and the generator's optimiser (its ``foreach``/``fused`` choice is the
            optimiser's own).
        autocast: a context factory for the forward passes (``torch.autocast``; default none).
        scaler: a ``GradScaler`` for float16 autocast.
        set_to_none: ``optimizer.zero_grad(set_to_none=...)``.
        network: the network whose attributes the loss reads (``mode``, ``paired_parameters``); default
            ``unwrap_parallel(generator)``.
        on_forward: called with ``ŷ`` once the generator has run (the trainer fires ``FORWARD_COMPLETED``).
        on_loss: called with the returned dict before the backward pass (the trainer fires ``LOSS_COMPLETED``).
        after_backward: called between backward and the optimiser step (``BACKWARD_COMPLETED``).
        classifier_view: what the classifier sees of ``x_s`` and ``x_a`` (e.g. :class:`scripts.perturb.RandomView`,
            a random sub-pixel shift plus noise, so that a brittle pattern does not flip it); default: the images.

    Returns:
        ``y_hat``, ``similar``, ``adversarial``, ``explanation`` (:func:`scripts.networks.generator_map`),
        ``logits_s`` (``f_c(x)`` for the naive variant), ``logits_a`` and every loss term, all detached.
    """
    network = unwrap_parallel(generator) if network is None else network
    optimizer.zero_grad(set_to_none=set_to_none)
    with autocast():
        with torch.no_grad():
            logits = classifier(x)
        y_hat = logits.argmax(dim=1)
        x_s, x_a = generator(x)
        if on_forward is not None:
            on_forward(y_hat)
        view = (lambda t: t) if classifier_view is None else classifier_view  # noqa: E731
        if is_naive(network, x, x_s):
            logits_s, logits_a = None, classifier(view(x_a))
        else:  # one classifier call on both images: half the kernel launches (the frozen classifier is in eval mode)
            logits_s, logits_a = classifier(view(torch.cat([x_s, x_a]))).chunk(2)
    terms = loss_function(x, x_s, x_a, logits_s, logits_a, y_hat, network)
    out = {
        "y_hat": y_hat,
        "similar": x_s.detach(),
        "adversarial": x_a.detach(),
        "explanation": generator_map(network, x_s.detach(), x_a.detach()),
        "logits_s": (logits if logits_s is None else logits_s).detach(),
        "logits_a": logits_a.detach(),
        **{k: v.detach() for k, v in terms.items()},
    }
    if on_loss is not None:
        on_loss(out)
    backward_and_step(terms[Keys.LOSS], optimizer, scaler, after_backward)
    return out


class _FrozenClassifierTrainer(Trainer):
    """Shared plumbing: a trained ``generator``, a frozen ``classifier``, AMP (CUDA; CPU in bfloat16) and the step.

    ``loss_function=None`` uses the class's :attr:`default_loss`.
    """

    #: the loss made when none is given.
    default_loss: Callable[[], Callable]

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: nn.Module,
        classifier: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
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
        self.loss_function = type(self).default_loss() if loss_function is None else loss_function
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
        """Move the batch to the device and set train/eval modes (the step zeroes the gradients).

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
        return x_in, x, label

    def _forward_completed(self, x_in: torch.Tensor, label: torch.Tensor | None, y_hat: torch.Tensor) -> None:
        """Open the iteration's output (``image``, ``y_hat``, ``label``) and fire ``FORWARD_COMPLETED``."""
        self.state.output = {Keys.IMAGE: x_in, "y_hat": y_hat}
        if label is not None:
            self.state.output[Keys.LABEL] = label
        self.fire_event(IterationEvents.FORWARD_COMPLETED)

    def _loss_completed(self, values: dict[str, torch.Tensor]) -> None:
        """Add the detached step values to the output and fire ``LOSS_COMPLETED``."""
        self.state.output.update(values)
        self.fire_event(IterationEvents.LOSS_COMPLETED)

    def _backward_completed(self) -> None:
        self.fire_event(IterationEvents.BACKWARD_COMPLETED)


class SimAdvTrainer(_FrozenClassifierTrainer):
    """Train the similar/adversarial generator pair against a frozen classifier (method.md §1-2).

    One iteration is :func:`simadv_step`: ``ŷ = argmax f_c(x)`` (no grad), ``(x_s, x_a) = generator(x)``, the
    classifier scores both in one call (the naive variant reuses ``f_c(x)`` for ``x_s = x``), ``loss_function``
    (default :class:`scripts.losses.SimAdvLoss`) gives the terms, one optimiser step on the generator; the Ignite
    events fire around it.

    ``engine.state.output`` holds ``image``, ``label`` (if the batch has one), ``y_hat``, ``similar``,
    ``adversarial``, ``explanation`` (``|x_s - x_a|`` summed over channels), ``logits_s``, ``logits_a``, ``loss``
    and every ``loss_*`` term, all detached (no host sync: handlers call ``.item()``).

    Args are those of ``monai.engines.SupervisedTrainer`` with ``network`` split into ``generator`` (trained, also
    exposed as ``self.network``) and ``classifier`` (frozen here); ``amp`` autocasts on CUDA, and on the CPU when
    ``amp_kwargs`` names ``dtype="bfloat16"`` (the dtype may be a string); ``decollate`` defaults to ``False``.
    """

    default_loss = SimAdvLoss

    def __init__(self, *args: Any, classifier_view: Callable | None = None, **kwargs: Any) -> None:
        """``classifier_view``: see :func:`simadv_step` (``train.json#classifier_view``; ``None``: the images)."""
        super().__init__(*args, **kwargs)
        self.classifier_view = classifier_view

    def _iteration(self, engine: SimAdvTrainer, batchdata: Any) -> dict:  # type: ignore[override]
        x_in, x, label = engine._start(batchdata)
        simadv_step(
            x,
            engine.generator,  # forward through a DDP wrapper; the loss reads the attributes of the network inside
            engine.classifier,
            engine.loss_function,
            engine.optimizer,
            autocast=engine._autocast,
            scaler=engine.scaler,
            set_to_none=engine.optim_set_to_none,
            on_forward=lambda y_hat: engine._forward_completed(x_in, label, y_hat),
            on_loss=engine._loss_completed,
            after_backward=engine._backward_completed,
            classifier_view=engine.classifier_view,
        )
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


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

    default_loss = MaskGeneratorLoss

    def __init__(self, *args: Any, blur_sigma: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blur_sigma = float(blur_sigma)
        self._blur: GaussianFilter | None = None

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian blur of ``x`` (the perturbation), a fixed MONAI ``GaussianFilter`` built on first use."""
        if self._blur is None:
            self._blur = GaussianFilter(x.ndim - 2, self.blur_sigma).to(x.device)
        return self._blur(x)

    def _iteration(self, engine: MaskGeneratorTrainer, batchdata: Any) -> dict:  # type: ignore[override]
        x_in, x, label = engine._start(batchdata)
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            with torch.no_grad():
                y_hat = engine.classifier(x).argmax(dim=1)
                blurred = engine.blur(x.float()).to(x.dtype)
            mask = engine.generator(x, y_hat)
            engine._forward_completed(x_in, label, y_hat)
            logits_preserved = engine.classifier(x * mask + blurred * (1 - mask))
            logits_destroyed = engine.classifier(x * (1 - mask) + blurred * mask)
        terms = engine.loss_function(mask, logits_preserved, logits_destroyed, y_hat)
        engine._loss_completed({"explanation": mask.detach(), **{k: v.detach() for k, v in terms.items()}})
        backward_and_step(terms[Keys.LOSS], engine.optimizer, engine.scaler, engine._backward_completed)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
