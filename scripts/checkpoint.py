"""Checkpoints: written atomically, loaded safely, missing ones explained.

MONAI's ``CheckpointSaver`` writes with ``atomic=False`` (see ``monai/handlers/checkpoint_saver.py``) and Ignite's
``Checkpoint`` deletes the previous best before writing the next one, so a run killed mid-write can leave no usable
checkpoint. :class:`AtomicCheckpointSaver` is a small Ignite handler that writes to a temporary file in the same
folder and ``os.replace``-s it into place, so a checkpoint file is always either the old one or the new one; it never
saves non-finite weights as the best. :class:`ResumeLoader` restores a stage's resume state and says where the run
resumes. Loading goes through ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from .atomic import atomic_write
from .errors import BundleInputError

__all__ = ["save_atomic", "load_checkpoint", "load_network", "AtomicCheckpointSaver", "ResumeLoader", "freeze"]


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (see :func:`scripts.atomic.atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint", hint: str = "") -> dict:
    """Load a checkpoint dict safely; a missing or unreadable file raises :class:`BundleInputError`.

    Args:
        path: the ``.pt`` file.
        what: what it holds, for the message ("classifier checkpoint").
        hint: how to make one, appended to the message (the command that trains it).
    """
    path = Path(path)
    if not path.is_file():
        raise BundleInputError(f"{what} not found: {path}." + (f" {hint}" if hint else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or a pickle that is not plain weights
        raise BundleInputError(f"cannot read {what} {path}: {e}") from e


def load_network(
    network: torch.nn.Module, path: str | os.PathLike, key: str | None = None, what: str = "checkpoint", hint: str = ""
) -> torch.nn.Module:
    """Load weights into ``network`` from ``path`` (optionally from sub-key ``key``) and return it.

    A state dict that does not fit the network names the file and the first mismatching keys.
    """
    state = load_checkpoint(path, what, hint)
    if key is not None and key in state:
        state = state[key]
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise BundleInputError(f"{what} {path} does not fit the configured network: {' '.join(first)}") from e
    return network


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter (the frozen classifier ``f_c``)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class AtomicCheckpointSaver:
    """Ignite handler: save the best weights by a metric and the resume state of every epoch, atomically.

    Attach it to the engine whose metric decides "best" (usually the validation evaluator). ``last_path`` (the
    resume state: networks, optimizer, trainer, best score so far) is written each time that engine completes;
    ``best_path`` (``best_dict``, usually the network alone) when the key metric improves. Only rank 0 writes
    when a process group is initialised.

    Args:
        save_dict: name -> object with ``state_dict()``; the resume state.
        best_path: file for the best weights (``None``: do not track a best).
        best_dict: what the best file holds (default: ``save_dict``).
        key_metric_name: metric in ``engine.state.metrics`` that decides the best (higher is better unless
            ``mode="min"``). Default: the engine's key metric.
        last_path: file for the resume state (``None``: none).
    """

    def __init__(
        self,
        save_dict: Mapping[str, Any],
        best_path: str | None = None,
        best_dict: Mapping[str, Any] | None = None,
        key_metric_name: str | None = None,
        mode: str = "max",
        last_path: str | None = None,
    ) -> None:
        self.save_dict = save_dict
        self.best_path = Path(best_path) if best_path else None
        self.best_dict = best_dict if best_dict is not None else save_dict
        self.key_metric_name = key_metric_name
        self.better: Callable[[float, float], bool] = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
        self.best: float | None = None
        self.last_path = Path(last_path) if last_path else None
        self.logger = logging.getLogger("simadv_explainer.checkpoint")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    @staticmethod
    def _states(objs: Mapping[str, Any]) -> dict[str, Any]:
        return {k: getattr(v, "module", v).state_dict() if isinstance(v, torch.nn.Module) else v.state_dict()
                for k, v in objs.items()}

    @staticmethod
    def _non_finite(states: Mapping[str, Any]) -> str | None:
        """The first state-dict entry holding NaN/inf, as ``"network.conv.weight"``, or None."""
        for k, state in states.items():
            for name, t in (state.items() if isinstance(state, Mapping) else ()):
                if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return f"{k}.{name}"
        return None

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() > 0:
            return
        if self.best_path is not None and (bad := self._non_finite(self._states(self.best_dict))) is not None:
            self.logger.error(f"epoch {engine.state.epoch}: {bad} is not finite; {self.best_path} left as it was")
        elif self.best_path is not None:
            name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
            value = engine.state.metrics.get(name) if name else None
            epoch = engine.state.epoch  # MONAI evaluators run with the trainer's epoch
            if value is not None and float(value) == float(value):
                value = float(value)
                if self.best is None or self.better(value, self.best) or value == self.best:
                    self.best = value
                    save_atomic(self._states(self.best_dict), self.best_path)
                    self.logger.info(f"epoch {epoch}: best {name}={value:.4f}, saved {self.best_path}")
            elif self.best is None:
                # The metric is undefined (e.g. ROC-AUC when every decision is the same class): keep the latest
                # weights as the best so far, so that a run always leaves a usable checkpoint.
                save_atomic(self._states(self.best_dict), self.best_path)
                self.logger.warning(f"epoch {epoch}: {name} is undefined, saved the current weights to {self.best_path}")
        if self.last_path is not None:
            state = self._states(self.save_dict)
            state["best_metric"] = torch.tensor(float("nan") if self.best is None else self.best)
            save_atomic(state, self.last_path)

    def resume_best(self, path: str | os.PathLike) -> None:
        """Restore the best score from a resume file, so a resumed run does not overwrite a better best."""
        if Path(path).is_file():
            value = float(torch.load(path, map_location="cpu", weights_only=True).get("best_metric", float("nan")))
            self.best = None if value != value else value


class ResumeLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` for a stage's resume state (``*_last.pt``), saying where the run resumes.

    Ignite logs "Engine run resuming from iteration 0, epoch 0" when a MONAI engine starts (a MONAI workflow
    creates its state up front), before the resume state is loaded at ``STARTED``; that line is dropped from the
    engine's log, and after loading this handler logs the epoch and iteration the run really continues from. A
    resume file that cannot be read, or one with more epochs done than ``--max_epochs``, is a
    :class:`BundleInputError` naming the file. Same arguments as ``CheckpointLoader``.
    """

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.logger.addFilter(_drop_fresh_resume_line)

    def __call__(self, engine: Engine) -> None:
        max_epochs = engine.state.max_epochs
        try:
            super().__call__(engine)
        except ValueError as e:
            if "larger than" in str(e):
                raise BundleInputError(
                    f"resume state {self.load_path} has {engine.state.epoch} epochs done, more than --max_epochs "
                    f"{max_epochs}; raise --max_epochs or remove the file to train from scratch"
                ) from e
            raise BundleInputError(f"cannot resume from {self.load_path}: {e}") from e
        except (RuntimeError, OSError, KeyError, EOFError, TypeError) as e:  # corrupt, truncated, another network
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BundleInputError(
                f"cannot resume from {self.load_path}: {first}; remove the file to train from scratch"
            ) from e
        done, total = engine.state.epoch, engine.state.max_epochs
        then = f"training continues at epoch {done + 1}" if done < total else "nothing left to train"
        engine.logger.info(
            f"resuming from {self.load_path}: {done} of {total} epochs done (iteration {engine.state.iteration}); {then}"
        )


def _drop_fresh_resume_line(record: logging.LogRecord) -> bool:
    """Logging filter: False for Ignite's "resuming from iteration 0, epoch 0" line, logged before any state loads."""
    return not str(record.getMessage()).startswith("Engine run resuming from iteration 0, epoch 0 ")
