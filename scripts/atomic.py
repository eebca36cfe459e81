"""Atomic file writes: every checkpoint, report, figure and CSV of the bundle goes through :func:`atomic_write`.

The content is written to a temporary file in the target's folder and ``os.replace``-d into place, so a reader (or a
run interrupted mid-write) only ever sees the old file or the new one, never a half-written one. A write also removes
the temporary files an earlier, killed write of the same target left behind (``.<name>.*.tmp`` next to it).
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "remove_stale_temporaries"]

_IN_FLIGHT: set[str] = set()  # temporary files this process is writing now


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.*.tmp`` files :func:`atomic_write` makes for ``path``, left by a write that was killed.

    Only one process writes a given target (rank 0 in multi-GPU runs), so every such file is stale, except the
    ones this process is writing right now (another thread's write of the same target). Returns the files removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if os.path.abspath(tmp) in _IN_FLIGHT:
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then ``os.replace`` it into place.

    The file gets the usual permissions (``0666`` minus the umask; ``mkstemp`` alone would leave ``0600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    _IN_FLIGHT.add(os.path.abspath(tmp))
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        _IN_FLIGHT.discard(os.path.abspath(tmp))
