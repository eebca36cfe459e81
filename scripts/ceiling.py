"""The ceiling reference of the localization benchmark: the ground-truth mask itself used as the map.

With ties kept, a binary map would keep every pixel at low percentiles; breaking them by tiny seeded noise gives
the best IoU any map can reach at each percentile (all lesion pixels first): the cap that lesion size puts on the
scores (the "Mask (ceiling)" row of the report).
"""

from __future__ import annotations

import torch
from ignite.engine import Engine
from torch import nn

__all__ = ["CEILING_ROW", "MaskCeilingEngine"]

#: the report's name of the row.
CEILING_ROW = "Mask (ceiling)"


class MaskCeilingEngine(Engine):
    """An Ignite engine whose output is ``{"explanation": mask + 1e-3 * noise, "mask": mask}`` for each batch.

    The noise is uniform, drawn on the CPU from a generator seeded with the iteration number (the same maps on every
    device and every run). Attach the benchmark's metric handlers and ``run(dataloader)``.

    With a ``classifier``, the output also has what the faithfulness metrics read (``scripts/faithfulness.py``):
    ``image``, the classifier's decision ``y_hat`` and, when the batch has one, ``label``: ROAD then scores the mask
    as a map (removing the lesion first), the reference for how much the decision rests on the lesion.
    """

    def __init__(self, device: torch.device | str, classifier: nn.Module | None = None) -> None:
        self.device = torch.device(device)
        self.classifier = classifier
        super().__init__(self._step)

    def _step(self, engine: Engine, batch: dict) -> dict:
        mask = torch.as_tensor(batch["mask"]).to(self.device).float()
        noise = torch.rand(mask.shape, generator=torch.Generator().manual_seed(engine.state.iteration))
        out = {"explanation": mask + 1e-3 * noise.to(self.device), "mask": mask}
        if self.classifier is not None:
            x = torch.as_tensor(batch["image"]).to(self.device)
            with torch.no_grad():
                out.update(image=x, y_hat=self.classifier(x).argmax(dim=1))
            if "label" in batch:
                out["label"] = torch.as_tensor(batch["label"]).to(self.device)
        return out
