"""What a run writes down about itself: JSON-safe values and the machine the numbers came from.

The lowest layer of the bundle's records: the benchmark report, the metrics files and the speed benchmark all
convert their values with :func:`jsonable` and name their processor with :func:`cpu_name`.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["cpu_name", "jsonable"]


def cpu_name() -> str:
    """The processor model (for the record of where numbers came from)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def jsonable(obj: Any) -> Any:
    """Deep copy to plain JSON types; NaN / inf -> None; tensors and arrays -> lists; anything else -> ``str``.

    Also usable as ``json.dump(..., default=jsonable)`` for the values ``json`` cannot write itself.
    """
    if hasattr(obj, "detach"):  # torch.Tensor
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)
