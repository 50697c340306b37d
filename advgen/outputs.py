"""What `advgen attack` leaves behind: the JSON summary, the adversarial images, and two pictures."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .files import atomic_torch_save
from .methods import AttackRecord, Status
from .onepixel import OnePixelResult, adversarial_examples, flip_changes, flip_classes, heatmap
from .pictures import save_figure, save_grid
from .stats import Rate

SCHEMA_VERSION = 1


def versions() -> dict[str, str]:
    import torchattacks

    return {"advgen": __version__, "torch": torch.__version__, "torchattacks": torchattacks.__version__,
            "python": platform.python_version()}


@dataclass
class AttackSummary:
    """What one `advgen attack` run found (``summary.json``): counts per status and where the time went."""

    method: str
    images: int
    certified: int
    vulnerable: int
    robust: int
    misclassified: int
    timeout: int
    robust_accuracy: float
    robust_accuracy_ci95: list[float]  # Wilson, 95%: of ``images``, the certified and robust ones
    candidates_total: int
    evaluated: int
    pruned: int
    flips_total: int
    seconds: float
    seconds_per_image: float
    seed: int
    mode: str
    target: int | None
    levels: int
    data: str
    versions: dict[str, str]
    time_limit: float | None = None  # seconds of exact search per image; None: none
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        """What ``summary.json`` holds: every field as plain JSON values."""
        d = asdict(self)
        return {"schema_version": d.pop("schema_version"), **d}


def summarize(records: list[AttackRecord], method: str, seed: int, mode: str, target: int | None, levels: int,
              data: str, time_limit: float | None = None) -> AttackSummary:
    """Counts per status, robust accuracy with its interval, the exact method's candidate accounting, and the time.

    Robust accuracy counts what is known robust: an image whose search ran out of time counts as not robust.
    """
    count = {s: sum(r.status == s for r in records) for s in Status}
    n = len(records)
    robust = Rate(count[Status.CERTIFIED] + count[Status.ROBUST], n)
    exact = [r.exact for r in records if r.exact is not None]
    seconds = sum(r.seconds for r in records)
    return AttackSummary(
        method, n, count[Status.CERTIFIED], count[Status.VULNERABLE], count[Status.ROBUST],
        count[Status.MISCLASSIFIED], count[Status.TIMEOUT],
        robust_accuracy=robust.value, robust_accuracy_ci95=[round(b, 6) for b in robust.ci95],
        candidates_total=sum(e["candidates"] for e in exact if e["status"] != Status.MISCLASSIFIED),
        evaluated=sum(e["evaluated"] for e in exact), pruned=sum(e["pruned"] for e in exact),
        flips_total=sum(e.get("flip_count", len(e["flips"])) for e in exact), seconds=round(seconds, 4),
        seconds_per_image=round(seconds / n, 6) if n else 0.0, seed=seed, mode=mode, target=target,
        levels=levels, data=data, versions=versions(), time_limit=time_limit)


def adversarial_set(records: list[AttackRecord], images: dict[int, torch.Tensor], levels: int,
                    max_per_image: int) -> dict:
    """The adversarial images with labels, new classes and source indices.

    For the exact method every flip (up to ``max_per_image`` per image, smallest changes first) is an
    image whose values lie exactly on the level grid (for a joint-channel box, its colour closest to the
    clean one; ``new_class`` -1 when the box holds several classes); other methods give one float image per
    success.
    """
    xs, labels, new, src = [], [], [], []
    for r in records:
        if not r.success:
            continue
        if r.exact is not None:
            res = OnePixelResult.from_record(r.exact)
            img = images[r.index]
            order = torch.sort(flip_changes(res, img, levels), stable=True).indices[:max_per_image]
            res.flips = res.flips[order]
            xs.append(adversarial_examples(res, img, levels))
            new.extend(flip_classes(res).tolist())
            labels.extend([r.label] * len(order))
            src.extend([r.index] * len(order))
        elif r.adversarial is not None:
            xs.append(r.adversarial.unsqueeze(0))
            new.append(r.adv_pred)
            labels.append(r.label)
            src.append(r.index)
    shape = next(iter(images.values())).shape if images else (1, 1, 1)
    return {"images": torch.cat(xs) if xs else torch.zeros(0, *shape), "labels": torch.tensor(labels, dtype=torch.long),
            "new_class": torch.tensor(new, dtype=torch.long), "source_index": torch.tensor(src, dtype=torch.long),
            "levels": levels}


def save_adversarial(path: Path, adv: dict, method: str) -> None:
    atomic_torch_save(path, {**adv, "method": method})


def save_examples(path: Path, records: list[AttackRecord], limit: int = 64) -> bool:
    """A grid of one adversarial example per vulnerable image (PNG); False when there is none."""
    picks = [r.adversarial for r in records if r.success and r.adversarial is not None][:limit]
    if not picks:
        return False
    save_grid(path, torch.stack(picks))
    return True


def vulnerability_map(record: AttackRecord, image: torch.Tensor) -> torch.Tensor:
    """(H, W) map: flipping values (or colours, joint channels) per pixel (exact method) or the size of the
    change (other methods)."""
    if record.exact is not None:
        return heatmap(OnePixelResult.from_record(record.exact), tuple(image.shape)).sum(0).float()
    if record.adversarial is None:
        return torch.zeros(image.shape[1:])
    return (record.adversarial - image).abs().sum(0)


def save_heatmaps(path: Path, records: list[AttackRecord], images: dict[int, torch.Tensor], limit: int = 16) -> bool:
    """Per-image vulnerability heatmaps over the clean image; False when none is vulnerable."""
    picks = [r for r in records if r.success][:limit]
    if not picks:
        return False
    cols = min(4, len(picks))
    rows = (len(picks) + cols - 1) // cols

    def draw(fig: Any) -> None:
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, r in zip(axes.flat, picks):
            img = images[r.index]
            ax.imshow(img.mean(0).numpy(), cmap="gray", vmin=0, vmax=1)
            heat = vulnerability_map(r, img)
            im = ax.imshow(heat.masked_fill(heat == 0, float("nan")).numpy(), cmap="hot", alpha=0.8)
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"#{r.index}: {r.label} -> {r.adv_pred}", fontsize=9)

    save_figure(path, 3 * cols, 3 * rows, draw)
    return True
