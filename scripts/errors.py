"""One exception type for bad user input, and a hook that prints it as one line.

Every check on user input (datalist, images, masks, labels, checkpoints) raises :class:`BundleInputError`
with a message naming the file or field. MONAI's ``ConfigParser`` wraps errors raised while it evaluates a
config expression, so the hook walks the exception chain and, when a ``BundleInputError`` is anywhere in
it, prints only that message instead of a deep traceback.
"""

from __future__ import annotations

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


class BundleInputError(ValueError):
    """Bad input from the user: a file, a datalist entry, a config field or a checkpoint."""


def find_input_error(exc: BaseException | None) -> BundleInputError | None:
    """Return the first :class:`BundleInputError` in ``exc``'s cause/context chain, if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BundleInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _excepthook(etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    err = find_input_error(value)
    if err is None:
        _previous_hook(etype, value, tb)
        return
    sys.stderr.write(f"simadv_explainer: error: {err}\n")
    sys.stderr.flush()


_previous_hook = sys.excepthook


def install_excepthook() -> None:
    """Make uncaught :class:`BundleInputError` print one clear line (exit status stays 1)."""
    if sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
