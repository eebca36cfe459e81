"""MONAI's ``DataLoader`` with bad input from worker processes reported as the one :class:`BundleInputError`.

A transform that raises in a DataLoader worker process reaches the main process as a new exception (PyTorch's
``ExceptionWrapper``: the worker's exception type, or ``RuntimeError``, with the whole formatted worker traceback as
its message), and MONAI wraps every transform error in ``RuntimeError("applying transform ...")``. Ignite then logs
that message, tracebacks and all, before the error reaches the exception hook. This loader's iterator finds the
:class:`BundleInputError` in what a batch raised (:func:`scripts.errors.find_input_error`) and raises it alone, so
the log and the hook show one line naming the file, with or without workers.
"""

from __future__ import annotations

from typing import Any

from monai.data import DataLoader as _MonaiDataLoader

from ..errors import find_input_error

__all__ = ["DataLoader"]


class _InputErrorIterator:
    """Forward a DataLoader iterator; a batch that fails on bad input raises the :class:`BundleInputError`."""

    def __init__(self, iterator: Any) -> None:
        self._iterator = iterator

    def __iter__(self) -> _InputErrorIterator:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._iterator)
        except StopIteration:
            raise
        except Exception as e:
            err = find_input_error(e)
            if err is None:
                raise
            raise err from None

    def __len__(self) -> int:
        return len(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)


class DataLoader(_MonaiDataLoader):
    """:class:`monai.data.DataLoader` (same arguments) whose batches raise bad input as one BundleInputError."""

    def __iter__(self) -> Any:
        return _InputErrorIterator(super().__iter__())
