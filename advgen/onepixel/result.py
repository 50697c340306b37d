"""The per-image outcome of the exact one-pixel attack, and what can be derived from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .dense import level_values

STATUSES = ("certified", "vulnerable", "misclassified")
FLIP_COLUMNS = ("channel", "row", "col", "level", "new_class")


@dataclass
class OnePixelResult:
    """What the exact attack found for one image.

    ``status`` is ``certified`` (no single-pixel change to another level succeeds), ``vulnerable``
    (``flips`` lists every succeeding change, or only the first in mode ``first``) or ``misclassified``
    (the clean image already fails; not attacked). ``flips`` is an int64 (K, 5) tensor of
    (channel, row, col, level, new_class), sorted. ``candidates = evaluated + pruned`` in mode ``full``:
    ``evaluated`` went through the model, ``pruned`` were settled by the bounds (proved safe, or proved
    to flip to one class).
    """

    index: int
    label: int
    clean_pred: int
    target: int | None
    status: str
    flips: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 5, dtype=torch.long))
    candidates: int = 0
    evaluated: int = 0
    pruned: int = 0
    seconds: float = 0.0
    exhaustive: bool = True

    @property
    def vulnerable(self) -> bool:
        return self.status == "vulnerable"

    def to_record(self) -> dict:
        """A JSON-able dict (ints, floats, strings, lists) that :meth:`from_record` reads back."""
        return {"index": self.index, "label": self.label, "clean_pred": self.clean_pred, "target": self.target,
                "status": self.status, "flips": self.flips.tolist(), "candidates": self.candidates,
                "evaluated": self.evaluated, "pruned": self.pruned, "seconds": round(self.seconds, 6),
                "exhaustive": self.exhaustive}

    @classmethod
    def from_record(cls, rec: dict) -> "OnePixelResult":
        flips = torch.tensor(rec["flips"], dtype=torch.long).reshape(-1, 5)
        return cls(int(rec["index"]), int(rec["label"]), int(rec["clean_pred"]),
                   None if rec["target"] is None else int(rec["target"]), str(rec["status"]), flips,
                   int(rec["candidates"]), int(rec["evaluated"]), int(rec["pruned"]), float(rec["seconds"]),
                   bool(rec.get("exhaustive", True)))


def adversarial_examples(result: OnePixelResult, image: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """The (K, C, H, W) images of ``result.flips`` made from the clean (C, H, W) ``image``; values on the grid."""
    flips = result.flips.to(image.device)
    out = image.unsqueeze(0).repeat(len(flips), 1, 1, 1)
    values = level_values(levels, image.device)
    out[torch.arange(len(flips), device=image.device), flips[:, 0], flips[:, 1], flips[:, 2]] = values[flips[:, 3]]
    return out


def heatmap(result: OnePixelResult, shape: tuple[int, int, int]) -> torch.Tensor:
    """How many values of each pixel succeed: an int64 (C, H, W) count of ``result.flips`` per position."""
    counts = torch.zeros(shape, dtype=torch.long)
    f = result.flips.cpu()
    if len(f):
        counts.index_put_((f[:, 0], f[:, 1], f[:, 2]), torch.ones(len(f), dtype=torch.long), accumulate=True)
    return counts
