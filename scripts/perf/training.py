"""Training throughput: one optimisation step of the classifier and of the explainer, in images per second.

* ``classifier``: ``configs/train_classifier.json``'s network, loss (cross-entropy) and optimiser (AdamW): forward,
  loss, backward, step, on random images and labels (augmentation is data loading, timed apart).
* ``explainer``: what one :class:`scripts.trainer.SimAdvTrainer` iteration computes, with
  ``configs/train.json``'s generator, :class:`scripts.losses.SimAdvLoss` weights and Adam: ``ŷ = argmax f_c(x)``
  (no grad), ``(x_s, x_a) = g(x)``, ``f_c(x_s)``, ``f_c(x_a)`` (the classifier frozen), the loss, backward, Adam
  step. Ignite's per-iteration event plumbing is left out; the step has no ``.item()`` or other host read.

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
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss.detach()

    return step


def make_explainer_step(
    device: torch.device,
    x: torch.Tensor,
    classifier: nn.Module,
    mode: str = "single",
    options: TrainOptions = TrainOptions(),
) -> Callable[[], torch.Tensor]:
    """One SimAdvTrainer-like step of a fresh ``mode`` generator on the fixed batch ``x``; returns the detached loss."""
    parser = _parser("configs/train.json", device=f"$torch.device('{device}')")
    parser["network_def#mode"] = mode
    for name, value in _optimizer_overrides(options).items():
        parser[f"optimizer#{name}"] = value
    generator = _prepare(parser.get_parsed_content("generator"), options).train()
    optimizer = parser.get_parsed_content("optimizer")
    loss_fn = parser.get_parsed_content("loss")
    clf = _prepare(freeze(copy.deepcopy(classifier)), options).eval()
    gen_run = torch.compile(generator) if options.compile else generator
    clf_run = torch.compile(clf) if options.compile else clf
    xin = _input(x, options)
    naive_mode = mode == "naive"
    scaler = torch.amp.GradScaler(device.type) if options.autocast == "fp16" else None

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, options):
            with torch.no_grad():
                logits = clf_run(xin)
            y_hat = logits.argmax(dim=1)
            x_s, x_a = gen_run(xin)
            naive = naive_mode or x_s is xin
            logits_s = None if naive else clf_run(x_s)
            logits_a = clf_run(x_a)
        terms = loss_fn(xin, x_s, x_a, logits_s, logits_a, y_hat, generator)
        # what the trainer keeps for its handlers (cheap, no host read)
        _ = (x_s.detach() - x_a.detach()).abs().sum(dim=1, keepdim=True)
        if scaler is None:
            terms["loss"].backward()
            optimizer.step()
        else:
            scaler.scale(terms["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
        return terms["loss"].detach()

    return step


def is_host_sync_warning(message: str) -> bool:
    """Whether a warning raised under ``set_sync_debug_mode("warn")`` reports a host sync. PyTorch also warns, once,
    that the sync debug mode itself is a prototype; that notice is not a sync (it was miscounted as one on an H200)."""
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
