"""One exception type for bad user input, and a hook that prints it as one line.

Every check on user input (datalist, images, masks, labels, checkpoints, config values) raises
:class:`BundleInputError` with a message naming the file or field. MONAI's ``ConfigParser`` wraps errors raised while
it evaluates a config expression, and PyTorch's ``DataLoader`` re-raises an error of a worker process as a new
exception whose message holds the worker's formatted traceback; :func:`find_input_error` finds the
``BundleInputError`` in both, so the hook prints only its message instead of a deep traceback, and the process ends
with exit status 1 at once (``os._exit`` after flushing: a normal interpreter shutdown with DataLoader workers or
thread pools still alive can abort with SIGABRT after the message).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from types import TracebackType


#: the command that makes each checkpoint, for "checkpoint not found" messages.
TRAIN_HINTS: dict[str, str] = {
    "classifier checkpoint": "Train it: python -m monai.bundle run training --config_file "
    "\"['configs/common.json','configs/train_classifier.json']\"",
    "explainer checkpoint": "Train it: python -m monai.bundle run training --config_file configs/train.json",
    "naive explainer checkpoint": "Train it: python -m monai.bundle run training --config_file "
    "\"['configs/train.json','configs/variants/naive.json']\"",
    "mask generator checkpoint": "Train it: python -m monai.bundle run training --config_file configs/train_mask_generator.json",
}

PREFIX = "simadv_explainer: error: "


class BundleInputError(ValueError):
    """Bad input from the user: a file, a datalist entry, a config field or a checkpoint."""


# The last "BundleInputError: <message>" of a traceback formatted in a DataLoader worker (``ExceptionWrapper``):
# the message runs up to the blank line that separates chained tracebacks, or to the end.
_WORKER_ERROR = re.compile(r"^(?:[\w.]+\.)?BundleInputError: (.*?)(?:\n\n|\Z)", re.MULTILINE | re.DOTALL)


def _from_worker(exc: BaseException) -> BundleInputError | None:
    """The :class:`BundleInputError` a DataLoader worker raised, from the message of its re-raised wrapper."""
    text = str(exc)
    if "DataLoader worker" not in text or "BundleInputError: " not in text:
        return None
    found = _WORKER_ERROR.findall(text)
    return BundleInputError(found[0].strip()) if found else None


def find_input_error(exc: BaseException | None) -> BundleInputError | None:
    """Return the first :class:`BundleInputError` in ``exc``'s cause/context chain, if any.

    An exception re-raised from a DataLoader worker counts too: its message holds the worker's traceback.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BundleInputError):
            return _from_worker(exc) or exc
        if (worker := _from_worker(exc)) is not None:
            return worker
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def report_and_exit(err: BaseException) -> None:
    """Print ``err`` as the one error line, flush every stream and log handler, and end the process with status 1."""
    message = str(err)
    sys.stderr.write(f"{PREFIX}{message}\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed stream must not hide the exit status
            pass
    logging.shutdown()
    os._exit(1)


def _excepthook(etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    err = find_input_error(value)
    if err is None:
        _previous_hook(etype, value, tb)
        return
    report_and_exit(err)


_previous_hook = sys.excepthook


def install_excepthook() -> None:
    """Make an uncaught :class:`BundleInputError` print one clear line and end the process with exit status 1."""
    if sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
