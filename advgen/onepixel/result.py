"""The per-image outcome of the exact one-pixel attack, and what can be derived from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .dense import level_values

STATUSES = ("certified", "vulnerable", "misclassified", "timeout")
FLIP_COLUMNS = ("channel", "row", "col", "level", "new_class")


@dataclass
class OnePixelResult:
    """What the exact attack found for one image.

    ``status`` is ``certified`` (no single-pixel change to another level succeeds), ``vulnerable``
    (``flips`` lists every succeeding change, or only the first in mode ``first``) or ``misclassified``
    (the clean image already fails; not attacked), or ``timeout`` (the search's ``time_limit`` ran out
    before any flip was found or every candidate was settled: nothing is proved). ``flips`` is an int64 (K, 5) tensor of
    (channel, row, col, level, new_class), sorted. ``candidates = evaluated + pruned`` in mode ``full``:
    ``evaluated`` went through the model, ``pruned`` were settled by the bounds (proved safe, or proved
    to flip to one class).

    With ``joint_channels = C`` (the joint attack, :mod:`.joint`: all C channels of a location change
    together) a candidate is a colour and ``flips`` is (K, 3 + 2C): (row, col, lo_0..lo_{C-1},
    hi_0..hi_{C-1}, new_class), each row a box of colours that all succeed (a single colour when lo ==
    hi; ``new_class`` -1 when the box is not proven to be one class). ``flip_count`` counts the
    succeeding changes either way.
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
    joint_channels: int = 0  # C when colours of a location were attacked (flips are colour boxes), else 0

    @property
    def vulnerable(self) -> bool:
        return self.status == "vulnerable"

    @property
    def flip_count(self) -> int:
        """How many succeeding changes ``flips`` holds: rows, or colours in the boxes (joint mode)."""
        return int(box_sizes(self).sum()) if self.joint_channels else len(self.flips)

    def to_record(self) -> dict:
        """A JSON-able dict (ints, floats, strings, lists) that :meth:`from_record` reads back."""
        return {"index": self.index, "label": self.label, "clean_pred": self.clean_pred, "target": self.target,
                "status": self.status, "flips": self.flips.tolist(), "candidates": self.candidates,
                "evaluated": self.evaluated, "pruned": self.pruned, "seconds": round(self.seconds, 6),
                "exhaustive": self.exhaustive,
                **({"joint_channels": self.joint_channels, "flip_count": self.flip_count}
                   if self.joint_channels else {})}

    @classmethod
    def from_record(cls, rec: dict) -> "OnePixelResult":
        joint = int(rec.get("joint_channels", 0))
        flips = torch.tensor(rec["flips"], dtype=torch.long).reshape(-1, 3 + 2 * joint if joint else 5)
        return cls(int(rec["index"]), int(rec["label"]), int(rec["clean_pred"]),
                   None if rec["target"] is None else int(rec["target"]), str(rec["status"]), flips,
                   int(rec["candidates"]), int(rec["evaluated"]), int(rec["pruned"]), float(rec["seconds"]),
                   bool(rec.get("exhaustive", True)), joint)


def outcome(correct: bool, flipped: bool, unfinished: bool, full: bool) -> tuple[str, bool]:
    """An image's ``status`` and whether its result is ``exhaustive``: the one rule of both searches.

    ``flipped``: a flip was found; ``unfinished``: work was left when the time limit ran out; ``full``: the
    search accounts for every candidate (mode ``full``), rather than stopping at an image's first flip.
    """
    if not correct:
        return "misclassified", True
    if flipped:
        return "vulnerable", full and not unfinished
    return ("timeout", False) if unfinished else ("certified", True)


def box_sizes(result: OnePixelResult) -> torch.Tensor:
    """(K,) colours in each flip box of a joint result (none is the clean colour: it never succeeds)."""
    c = result.joint_channels
    f = result.flips
    return (f[:, 2 + c:2 + 2 * c] - f[:, 2:2 + c] + 1).prod(1)


def flip_classes(result: OnePixelResult) -> torch.Tensor:
    """(K,) the new class of each flip (-1 for a joint box of several or unknown classes)."""
    return result.flips[:, -1]


def flip_colours(result: OnePixelResult, image: torch.Tensor, levels: int) -> torch.Tensor:
    """(K, C) levels: per flip box of a joint result, its colour closest to the clean (C, H, W) ``image``
    in every channel. The clean colour lies outside every flip box, so this colour differs from it."""
    c = result.joint_channels
    f = result.flips.to(image.device)
    own = torch.round(image[:, f[:, 0], f[:, 1]].T * (levels - 1)).long()  # (K, C)
    return torch.minimum(torch.maximum(own, f[:, 2:2 + c]), f[:, 2 + c:2 + 2 * c])


def flip_changes(result: OnePixelResult, image: torch.Tensor, levels: int) -> torch.Tensor:
    """(K,) the L-inf size of each flip's change (of its closest colour, for a joint box)."""
    values = level_values(levels, image.device)
    f = result.flips.to(image.device)
    if result.joint_channels:
        return (values[flip_colours(result, image, levels)] - image[:, f[:, 0], f[:, 1]].T).abs().amax(1)
    return (values[f[:, 3]] - image[f[:, 0], f[:, 1], f[:, 2]]).abs()


def adversarial_examples(result: OnePixelResult, image: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """The (K, C, H, W) images of ``result.flips`` made from the clean (C, H, W) ``image``; values on the grid.

    For a joint result, one image per flip box: its colour closest to the clean one (:func:`flip_colours`).
    """
    flips = result.flips.to(image.device)
    out = image.unsqueeze(0).repeat(len(flips), 1, 1, 1)
    values = level_values(levels, image.device)
    rows = torch.arange(len(flips), device=image.device)
    if result.joint_channels:
        out[rows, :, flips[:, 0], flips[:, 1]] = values[flip_colours(result, image, levels)]
    else:
        out[rows, flips[:, 0], flips[:, 1], flips[:, 2]] = values[flips[:, 3]]
    return out


def heatmap(result: OnePixelResult, shape: tuple[int, int, int]) -> torch.Tensor:
    """How many values of each pixel succeed: an int64 (C, H, W) count of ``result.flips`` per position.

    For a joint result, how many colours of each location succeed: (1, H, W).
    """
    f = result.flips.cpu()
    if result.joint_channels:
        counts = torch.zeros((1, *shape[1:]), dtype=torch.long)
        if len(f):
            counts[0].index_put_((f[:, 0], f[:, 1]), box_sizes(result).cpu(), accumulate=True)
        return counts
    counts = torch.zeros(shape, dtype=torch.long)
    if len(f):
        counts.index_put_((f[:, 0], f[:, 1], f[:, 2]), torch.ones(len(f), dtype=torch.long), accumulate=True)
    return counts
