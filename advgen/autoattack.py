"""AutoAttack (Croce & Hein 2020) from torchattacks' parts: an L-inf robust accuracy that holds up.

PGD alone overstates robustness when a model masks its gradients (Carlini et al. 2019); RobustBench
reports AutoAttack for that reason. AutoAttack adds step-size-free APGD with two losses (cross-entropy,
and the targeted DLR loss), the minimal-perturbation FAB attack and the gradient-free Square attack.
As in auto-attack, an image is robust only if every part failed on it: the per-image worst case.

Unlike auto-attack's cascade, every part runs on every image, so each part's own rate is known too.
That is what tells masking apart: on a model that hides its gradients the gradient-free Square attack
beats the gradient attacks, and the worst case falls well below PGD (:mod:`advgen.report.checks`).

Versions (printed in every report):

- ``standard`` (the default on a GPU): APGD-CE, APGD-T over the 9 most likely wrong classes, FAB-T over
  9 classes and Square with 5,000 queries; 100 iterations and 1 restart each, as in auto-attack's
  standard version.
- ``cpu`` (the default without a GPU): APGD-CE and APGD-T over 3 classes with 100 iterations, and Square
  with 1,000 queries; FAB-T is left out. Measured (docs/experiments.md) on a PGD-trained default CNN, 200 test
  images, one CPU thread: worst case 0.230 against the standard version's 0.215, in 31 s against 221 s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .data import Dataset
from .errors import InputError
from .models import output_classes
from .train import still_correct
from .runtime import evaluating, seeded

PARTS = ("apgd-ce", "apgd-t", "fab-t", "square")


@dataclass(frozen=True)
class AutoAttackConfig:
    """Which parts run, and how hard each tries; ``targets`` is the number of wrong classes aimed at."""

    version: str
    eps: float = 0.3
    parts: tuple[str, ...] = PARTS
    steps: int = 100
    targets: int = 9
    queries: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.parts) - set(PARTS)
        if unknown or not self.parts:
            raise InputError(f"unknown AutoAttack part(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                             f"choose from {', '.join(PARTS)}")

    @classmethod
    def named(cls, version: str, eps: float = 0.3, seed: int = 0) -> "AutoAttackConfig":
        """``standard`` or ``cpu`` (see the module docstring)."""
        if version == "standard":
            return cls("standard", eps, seed=seed)
        if version == "cpu":
            return cls("cpu", eps, ("apgd-ce", "apgd-t", "square"), targets=3, queries=1000, seed=seed)
        raise InputError(f"unknown AutoAttack version {version!r}; choose standard or cpu")

    @classmethod
    def for_device(cls, device: torch.device, eps: float = 0.3, seed: int = 0) -> "AutoAttackConfig":
        """The standard version on CUDA, the CPU subset elsewhere."""
        return cls.named("standard" if torch.device(device).type == "cuda" else "cpu", eps, seed)

    def settings(self) -> dict[str, Any]:
        """Every field as plain JSON values, for reports and resume fingerprints."""
        return {**asdict(self), "parts": list(self.parts)}

    def describe(self) -> str:
        """``AutoAttack cpu version (apgd-ce, apgd-t, square), L-inf eps 0.3, 100 steps, ...``."""
        return (f"AutoAttack {self.version} version ({', '.join(self.parts)}), L-inf eps {self.eps:g}, "
                f"{self.steps} steps, {self.targets} target classes, Square {self.queries} queries")

    def build(self, part: str, model: nn.Module, n_classes: int) -> Any:
        """The torchattacks attack for ``part``."""
        import torchattacks

        common = dict(norm="Linf", eps=self.eps, n_restarts=1, seed=self.seed)
        targets = min(self.targets, n_classes - 1)
        if part == "apgd-ce":
            return torchattacks.APGD(model, steps=self.steps, loss="ce", **common)
        if part == "apgd-t":  # torchattacks aims at the n_classes - 1 most likely wrong classes
            return torchattacks.APGDT(model, steps=self.steps, n_classes=targets + 1, **common)
        if part == "fab-t":
            return torchattacks.FAB(model, steps=self.steps, multi_targeted=True, n_classes=targets + 1, **common)
        if part == "square":
            return torchattacks.Square(model, n_queries=self.queries, **common)
        raise InputError(f"unknown AutoAttack part {part!r}; choose from {', '.join(PARTS)}")

    def robust(self, part: str, model: nn.Module, data: Dataset, device: torch.device) -> list[bool]:
        """Per image of ``data``: still classified correctly after ``part`` (seeded; the caller's random streams
        are left as they were)."""
        with seeded(self.seed, device), evaluating(model, device):
            attack = self.build(part, model, output_classes(model, data.images, data.labels))
            return still_correct(model, attack, data.images, data.labels, device).tolist()

    def cascade(self, model: nn.Module, n_classes: int) -> Any:
        """All parts as one torchattacks attack: each runs on the images the earlier ones did not break."""
        import torchattacks

        return torchattacks.MultiAttack([self.build(p, model, n_classes) for p in self.parts])


def worst_case(parts: dict[str, list[bool]], pgd_robust: str | None = None) -> dict[str, list[bool]]:
    """Each part's ``robust`` flags, ``robust`` (every part failed) and, given PGD's, ``worst`` (PGD too)."""
    flags = list(parts.values())
    robust = [all(f) for f in zip(*flags)]
    found = {"robust": robust, **parts}
    if pgd_robust is not None:
        if len(pgd_robust) != len(robust):
            raise ValueError(f"PGD has {len(pgd_robust)} images, AutoAttack {len(robust)}: not the same images")
        found["worst"] = [r and p == "1" for r, p in zip(robust, pgd_robust)]
    return found


def attack(model: nn.Module, eps: float = 0.3, version: str | None = None, seed: int = 0) -> Any:
    """``advgen attack --method autoattack``: the cascade of the device's version (standard on CUDA)."""
    device = next(model.parameters()).device
    config = AutoAttackConfig.named(version, eps, seed) if version else AutoAttackConfig.for_device(device, eps, seed)

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            n_classes = int(model(images[:1]).shape[1])
        return config.cascade(model, n_classes)(images, labels)

    return run
