"""Checkpoints: written atomically, loaded safely, missing ones explained.

MONAI's ``CheckpointSaver`` writes with ``atomic=False`` (see ``monai/handlers/checkpoint_saver.py``) and Ignite's
``Checkpoint`` deletes the previous best before writing the next one, so a run killed mid-write can leave no usable
checkpoint. :class:`AtomicCheckpointSaver` is a small Ignite handler that writes to a temporary file in the same
folder and ``os.replace``-s it into place, so a checkpoint file is always either the old one or the new one; it never
saves non-finite weights as the best. :class:`ResumeLoader` restores a stage's resume state and says where the run
resumes. Loading goes through ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
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

__all__ = [
    "CLASSIFIER_FINGERPRINT_KEY",
    "save_atomic",
    "load_checkpoint",
    "load_network",
    "checked_for_export",
    "state_fingerprint",
    "AtomicCheckpointSaver",
    "ResumeLoader",
    "freeze",
]

#: the key under which an explainer's checkpoint records the classifier it was trained against.
CLASSIFIER_FINGERPRINT_KEY = "classifier_sha256"
logger = logging.getLogger("simadv_explainer.checkpoint")


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


def state_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of ``module``'s state dict (names, dtypes, shapes and bytes, in key order): which weights these are.

    The generators explain the classifier they were trained against and no other (method.md, "Joint objective": the
    map is computed without running the classifier), so an explainer checkpoint records this fingerprint of its
    classifier (:data:`CLASSIFIER_FINGERPRINT_KEY`) and :func:`load_network` checks it. The same weights give the
    same fingerprint on any device.
    """
    digest = hashlib.sha256()
    for name, t in getattr(module, "module", module).state_dict().items():
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_trained_against(
    state: Mapping[str, Any],
    path: Path,
    what: str,
    classifier: torch.nn.Module | None,
    classifier_path: str | os.PathLike | None,
    allow_other_classifier: bool,
) -> None:
    """Refuse ``state`` (an explainer checkpoint) when it records another classifier than ``classifier`` (only read
    when ``state`` records one)."""
    recorded = state.get(CLASSIFIER_FINGERPRINT_KEY) if isinstance(state, Mapping) else None
    named = f" {classifier_path}" if classifier_path else ""
    if recorded is None:
        logger.warning(
            f"{what} {path} does not record the classifier it was trained against; it cannot be checked against "
            f"the classifier{named}"
        )
        return
    actual = state_fingerprint(classifier)
    if recorded == actual:
        return
    message = (
        f"{what} {path} was trained against another classifier than{named or ' the configured one'} "
        f"(classifier fingerprint {str(recorded)[:12]}… recorded, {actual[:12]}… given)"
    )
    if allow_other_classifier:
        logger.warning(message + "; explaining anyway (--allow_other_classifier true)")
        return
    raise BundleInputError(
        message + ": its maps would not explain this classifier. Train the explainer against it, or pass "
        "--allow_other_classifier true to explain anyway"
    )


def _upsample_hint(network: torch.nn.Module, state: dict) -> str:
    """If ``state`` fits ``network`` built with the other decoder (transposed convolutions, the generators up to
    bundle 0.5.0, or resize-convolutions) or the other trunk (``space_to_depth`` 1 or 2), the options that load it;
    else ``""``."""
    from .networks import SimAdvGenerator

    if not isinstance(network, SimAdvGenerator) or not hasattr(network, "build_kwargs"):
        return ""
    current = {"upsample": network.build_kwargs.get("upsample", "deconv"),
               "space_to_depth": network.build_kwargs.get("space_to_depth", 1)}
    for upsample in ("deconv", "resize"):
        for factor in (1, 2):
            other = {"upsample": upsample, "space_to_depth": factor}
            if other == current:
                continue
            try:
                candidate = type(network)(**{**network.build_kwargs, **other})
                candidate.load_state_dict(state)
            except Exception:
                continue
            changed = {k: v for k, v in other.items() if v != current[k]}
            when = " (the generators of bundle 0.5.0 and earlier)" if changed.get("upsample") == "deconv" else ""
            trained = ", ".join(f"{k}={v!r}" for k, v in changed.items())
            built = ", ".join(f"{k}={current[k]!r}" for k in changed)
            add = " ".join(f"--generator_{k} {v}" for k, v in changed.items())
            return f"it was trained with {trained}{when}, the config builds {built}; add {add}"
    return ""


def load_network(
    network: torch.nn.Module,
    path: str | os.PathLike,
    key: str | None = None,
    what: str = "checkpoint",
    hint: str = "",
    trained_against: torch.nn.Module | None = None,
    classifier_path: str | os.PathLike | None = None,
    allow_other_classifier: bool = False,
) -> torch.nn.Module:
    """Load weights into ``network`` from ``path`` (optionally from sub-key ``key``) and return it.

    A state dict that does not fit the network names the file and the first mismatching keys. With
    ``trained_against`` (the classifier to explain), a checkpoint that records another classifier's
    :func:`state_fingerprint` is refused naming both files, unless ``allow_other_classifier``; one that records
    none (saved before checkpoints recorded it) is loaded with a warning.
    """
    state = load_checkpoint(path, what, hint)
    if trained_against is not None:
        _check_trained_against(state, Path(path), what, trained_against, classifier_path, allow_other_classifier)
    if key is not None and key in state:
        state = state[key]
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        guess = _upsample_hint(network, state)
        if guess:
            raise BundleInputError(f"{what} {path} does not fit the configured network: {guess}") from e
        first = str(e).splitlines()[0:3]
        raise BundleInputError(f"{what} {path} does not fit the configured network: {' '.join(first)}") from e
    return network


def _command_line_checkpoint(argv: list[str]) -> str | None:
    """The value of ``--ckpt_file`` on a ``monai.bundle ckpt_export`` command line, if any."""
    for i, arg in enumerate(argv):
        if arg == "--ckpt_file" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--ckpt_file="):
            return arg.partition("=")[2]
    return None


def checked_for_export(
    factory: Callable[..., torch.nn.Module],
    checkpoint: str | os.PathLike,
    classifier_factory: Callable[[], torch.nn.Module],
    classifier_path: str | os.PathLike | None = None,
    allow_other_classifier: bool = False,
    argv: list[str] | None = None,
) -> Callable[..., torch.nn.Module]:
    """``factory`` (the deployable explainer's ``network_def``), which first refuses an explainer checkpoint trained
    against another classifier than ``classifier_factory()`` (:func:`load_network`'s check, same message and
    ``allow_other_classifier`` override).

    MONAI's ``ckpt_export`` loads ``--ckpt_file`` into the network itself and passes neither the file's name nor
    its other keys to the config, so the file checked is the command line's ``--ckpt_file`` when there is one
    (``argv``, default ``sys.argv``), else ``checkpoint`` (``explainer_checkpoint``). Nothing is checked when that
    file does not exist (``verify_net_in_out`` builds the network with random weights) or records no classifier
    (a warning); the classifier is loaded only to be compared.
    """
    import sys

    def build(**kwargs: Any) -> torch.nn.Module:
        path = Path(_command_line_checkpoint(sys.argv if argv is None else argv) or checkpoint)
        if path.is_file():
            state = load_checkpoint(path, "explainer checkpoint")
            records = isinstance(state, Mapping) and CLASSIFIER_FINGERPRINT_KEY in state
            classifier = classifier_factory() if records else None  # without a record: the warning only
            _check_trained_against(state, path, "explainer checkpoint", classifier, classifier_path,
                                   allow_other_classifier)
        return factory(**kwargs)

    return build


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
        extra: further entries written into both files (e.g. ``{"classifier_sha256": ...}``, the
            :func:`state_fingerprint` of the classifier an explainer is trained against).
    """

    def __init__(
        self,
        save_dict: Mapping[str, Any],
        best_path: str | None = None,
        best_dict: Mapping[str, Any] | None = None,
        key_metric_name: str | None = None,
        mode: str = "max",
        last_path: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.save_dict = save_dict
        self.extra = dict(extra or {})
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
                    save_atomic({**self._states(self.best_dict), **self.extra}, self.best_path)
                    self.logger.info(f"epoch {epoch}: best {name}={value:.4f}, saved {self.best_path}")
            elif self.best is None:
                # The metric is undefined (e.g. ROC-AUC when every decision is the same class): keep the latest
                # weights as the best so far, so that a run always leaves a usable checkpoint.
                save_atomic({**self._states(self.best_dict), **self.extra}, self.best_path)
                self.logger.warning(f"epoch {epoch}: {name} is undefined, saved the current weights to {self.best_path}")
        if self.last_path is not None:
            state = {**self._states(self.save_dict), **self.extra}
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
