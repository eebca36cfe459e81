"""Training throughput: one optimisation step of the classifier and of the explainer, in images per second.

* ``classifier``: ``configs/train_classifier.json``'s network, loss (cross-entropy) and optimiser (AdamW): forward,
  loss, backward, step, on random images and labels (augmentation is data loading, timed apart).
* ``explainer``: the step every :class:`scripts.trainer.SimAdvTrainer` iteration runs,
  :func:`scripts.trainer.simadv_step`, with ``configs/train.json``'s generator, :class:`scripts.losses.SimAdvLoss`
  weights and Adam: ``ŷ = argmax f_c(x)`` (no grad), ``(x_s, x_a) = g(x)``, one call of the frozen classifier on
  ``cat([x_s, x_a])``, the loss, backward, Adam step. The trainer's Ignite event plumbing around it is left out;
  the step has no ``.item()`` or other host read.

:class:`TrainOptions` are the speed-ups (autocast, channels_last, foreach/fused optimiser, ``torch.compile``). On
CUDA the benchmark also runs a few steps under ``torch.cuda.set_sync_debug_mode("warn")`` and reports how many
host synchronisations were flagged.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..checkpoint import freeze
from ..trainer import backward_and_step, simadv_step
from .methods import _parser

__all__ = ["TrainOptions", "make_classifier_step", "make_explainer_step", "count_host_syncs", "is_host_sync_warning"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Speed-ups of a training step (all off: the bundle's float32 eager step).

    Args:
        autocast: ``None``, ``"bf16"`` or ``"fp16"`` (fp16 adds a ``GradScaler``, which reads a flag on the host).
        channels_last: NHWC weights and input.
        optimizer_impl: ``None`` (PyTorch's default choice), ``"foreach"`` or ``"fused"``.
        compile: ``torch.compile`` the networks (each module on its own).
    """

    autocast: str | None = None
    channels_last: bool = False
    optimizer_impl: str | None = None
    compile: bool = False

    @classmethod
    def parse(cls, text: str) -> TrainOptions:
        """From ``"bf16+channels_last+fused"`` (also ``fp16``, ``foreach``, ``compile``, ``eager``)."""
        kwargs: dict = {}
        for raw in text.replace(",", "+").split("+"):
            item = raw.strip().lower().replace("-", "_")
            if item in ("", "eager", "fp32"):
                continue
            if item in _DTYPES:
                kwargs["autocast"] = item
            elif item in ("channels_last", "nhwc"):
                kwargs["channels_last"] = True
            elif item in ("foreach", "fused"):
                kwargs["optimizer_impl"] = item
            elif item == "compile":
                kwargs["compile"] = True
            else:
                raise ValueError(f"unknown training option {raw.strip()!r} (bf16, fp16, channels_last, foreach, "
                                 "fused, compile, eager)")
        return cls(**kwargs)

    def describe(self) -> str:
        parts = [p for p in (self.autocast, "channels_last" if self.channels_last else None,
                             self.optimizer_impl, "compile" if self.compile else None) if p]
        return "+".join(parts) or "eager"


def _autocast(device: torch.device, options: TrainOptions) -> contextlib.AbstractContextManager:
    if options.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[options.autocast])


def _prepare(net: nn.Module, options: TrainOptions) -> nn.Module:
    if options.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def _input(x: torch.Tensor, options: TrainOptions) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if options.channels_last and x.ndim == 4 else x


def _optimizer_overrides(options: TrainOptions) -> dict:
    return {} if options.optimizer_impl is None else {options.optimizer_impl: True}


def make_classifier_step(
    device: torch.device, x: torch.Tensor, num_classes: int, options: TrainOptions = TrainOptions()
) -> Callable[[], torch.Tensor]:
    """One classifier training step on the fixed batch ``x`` (random labels); returns the detached loss."""
    parser = _parser("configs/train_classifier.json", device=f"$torch.device('{device}')")
    for name, value in _optimizer_overrides(options).items():
        parser[f"optimizer#{name}"] = value
    net = _prepare(parser.get_parsed_content("network"), options).train()
    optimizer = parser.get_parsed_content("optimizer")
    loss_fn = parser.get_parsed_content("loss")
    model = torch.compile(net) if options.compile else net
    xin = _input(x, options)
    y = torch.randint(0, num_classes, (x.shape[0],), device=device, generator=None)
    scaler = torch.amp.GradScaler(device.type) if options.autocast == "fp16" else None

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, options):
            loss = loss_fn(model(xin).float(), y)
        backward_and_step(loss, optimizer, scaler)
        return loss.detach()

    return step


def make_explainer_step(
    device: torch.device,
    x: torch.Tensor,
    classifier: nn.Module,
    mode: str = "single",
    options: TrainOptions = TrainOptions(),
) -> Callable[[], torch.Tensor]:
    """The bundle's explainer step (:func:`scripts.trainer.simadv_step`, what every :class:`SimAdvTrainer` iteration
    runs) of a fresh ``mode`` generator on the fixed batch ``x``, with ``options``; returns the detached loss."""
    parser = _parser("configs/train.json", device=f"$torch.device('{device}')")
    parser["generator_mode"] = mode
    for name, value in _optimizer_overrides(options).items():
        parser[f"optimizer#{name}"] = value
    generator = _prepare(parser.get_parsed_content("generator"), options).train()
    optimizer = parser.get_parsed_content("optimizer")
    loss_fn = parser.get_parsed_content("loss")
    view = parser.get_parsed_content("classifier_view")  # what the trainer's classifier sees (train.json)
    clf = _prepare(freeze(copy.deepcopy(classifier)), options).eval()
    gen_run = torch.compile(generator) if options.compile else generator
    clf_run = torch.compile(clf) if options.compile else clf
    xin = _input(x, options)
    scaler = torch.amp.GradScaler(device.type) if options.autocast == "fp16" else None

    def step() -> torch.Tensor:
        out = simadv_step(xin, gen_run, clf_run, loss_fn, optimizer, autocast=lambda: _autocast(device, options),
                          scaler=scaler, set_to_none=True, network=generator, classifier_view=view)
        return out["loss"]

    return step


def is_host_sync_warning(message: str) -> bool:
    """Whether a warning raised under ``set_sync_debug_mode("warn")`` reports a host sync. PyTorch also warns, once,
    that the sync debug mode itself is a prototype; that notice is not a sync and is not counted."""
    text = message.lower()
    return "synchroniz" in text and "debug mode" not in text


def count_host_syncs(step: Callable[[], object], device: torch.device, steps: int = 3) -> dict | None:
    """Run ``step`` under ``torch.cuda.set_sync_debug_mode("warn")`` and count the flagged host syncs (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    messages = [str(w.message).splitlines()[0] for w in caught if is_host_sync_warning(str(w.message))]
    return {"steps": steps, "flagged": len(messages), "first": sorted(set(messages))[:5]}
