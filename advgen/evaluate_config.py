"""What an evaluation is asked to do: its settings, the budgets' measured recipes, and which settings take effect.

:mod:`advgen.evaluate` runs the phases; this module decides everything that follows from the settings alone
(and the sizes of the splits and the device they meet): what the report records, what a ``--resume`` must
repeat, which retraining terms are on, which AutoAttack version runs, and what the report says it covered.
Keeping it apart lets the CLI, the ablation and the tests read a config without running anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

import torch

from . import data as datasets
from .autoattack import AutoAttackConfig
from .errors import InputError, check_fields
from .harden import HardenConfig
from .models import check_arch
from .sources import SOURCES as AUGMENTATIONS, SourceConfig

#: What the default run retrains on. The GAN sources are opt-in: measured (README), they cost clean
#: accuracy and retraining time, and did not lower the one-pixel vulnerable rate.
DEFAULT_AUGMENT = ("onepixel", "pgd", "certified")
ATTACKS = ("onepixel", "pgd", "autoattack", "advgan")  # each has an ``{attack}_images`` count of test images


class Budget(str, Enum):
    """A measured recipe for a whole run, chosen by what it must reach in what time (README: "Budgets").

    ``default`` fits 10 minutes on 2 CPU cores and aims at the one-pixel threat (certified training
    beside PGD). ``robust`` aims at L-inf robust accuracy (issue 11's bar: 0.80 under PGD-40 and the worst
    case): the twice-as-wide CNN retrained for 40 epochs on PGD-10 examples, the training data topped up
    with 2,000 conditional-GAN digits (Gowal et al. 2021: generated data helps adversarial training). It
    takes several times longer and leaves the one-pixel threat to PGD: on this small data the two pull
    against each other (README).
    """

    DEFAULT = "default"
    ROBUST = "robust"


#: What each budget sets: :class:`EvaluateConfig` fields, and ``retrain`` as :class:`HardenConfig` fields.
BUDGETS: dict[Budget, dict] = {
    Budget.DEFAULT: {},
    Budget.ROBUST: {"arch": "cnn-wide", "augment": ("pgd", "cgan"),
                    "retrain": {"epochs": 40, "pgd_steps": 10, "clean_weight": 0.0, "certified_weight": 0.0}},
}
#: What only retraining reads: unused, and left out of the settings, when the run measures only.
RETRAINING_FIELDS = ("augment", "onepixel_train_images", "onepixel_flips_per_image", "advgan_samples", "cgan_samples",
                     "cgan_epochs", "retrain")
#: The settings of each generated source, which take no effect when the source is not asked for.
SOURCE_FIELDS = {"onepixel": ("onepixel_train_images", "onepixel_flips_per_image"),
                 "advgan": ("advgan_samples",), "cgan": ("cgan_samples", "cgan_epochs")}


@dataclass
class EvaluateConfig:
    """What to measure and how to retrain; the defaults fit 10 minutes on 2 CPU cores.

    ``autoattack_version`` is ``standard`` or ``cpu`` (:mod:`advgen.autoattack`); unset, the device
    decides: the standard version on CUDA, the CPU subset elsewhere. ``onepixel_time_limit``: seconds of
    exact search per image (test and mined training images), for models too slow to search to the end;
    an image left undecided counts as neither vulnerable nor certified (its own ``timeout`` outcome).
    ``measure_only``: measure the target and stop (no generated data, no retraining, no AFTER stage), for a
    CI check of a model as it is; the retraining fields are then unused.
    """

    data: str = datasets.EMBEDDED
    arch: str = "cnn"
    train_images: int | None = None
    onepixel_images: int = 1000
    onepixel_time_limit: float | None = None
    pgd_images: int = 1000
    pgd_eps: float = 0.3
    pgd_steps: int = 40
    autoattack_images: int = 500
    autoattack_version: str | None = None
    advgan_images: int = 1000
    augment: tuple[str, ...] = DEFAULT_AUGMENT
    onepixel_train_images: int = 200
    onepixel_flips_per_image: int = 16
    advgan_samples: int = 4000
    cgan_samples: int = 2000
    advgan_epochs: int | None = None
    cgan_epochs: int | None = None
    retrain: HardenConfig = field(default_factory=HardenConfig)
    seed: int = 0
    measure_only: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise InputError(f"unknown augmentation {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(AUGMENTATIONS)}")
        check_fields(self, dict.fromkeys((*(f"{a}_images" for a in ATTACKS), "onepixel_train_images",
                                          "advgan_samples", "cgan_samples"), 0))
        if not 0 < self.pgd_eps <= 1:
            raise InputError(f"pgd eps must be in (0, 1], got {self.pgd_eps}")
        if self.onepixel_time_limit is not None and not self.onepixel_time_limit > 0:
            raise InputError(f"onepixel_time_limit must be a number of seconds > 0, got {self.onepixel_time_limit}")
        if self.autoattack_version is not None:
            AutoAttackConfig.named(self.autoattack_version)
        check_arch(self.arch)

    @classmethod
    def for_budget(cls, budget: Budget | str = Budget.DEFAULT, retrain: dict | None = None,
                   **fields) -> "EvaluateConfig":
        """``budget``'s recipe, then ``fields`` and the :class:`HardenConfig` fields in ``retrain`` on top."""
        try:
            preset = dict(BUDGETS[Budget(budget)])
        except ValueError:
            raise InputError(f"unknown budget {budget!r}; choose from {', '.join(b.value for b in Budget)}") from None
        harden = HardenConfig(**{**preset.pop("retrain", {}), **(retrain or {})})
        return cls(**{**preset, **fields, "retrain": harden})

    def settings(self) -> dict:
        """Every field as plain JSON values: what the report records (an unset time limit and
        ``measure_only=False`` are left out, as before those options existed, so earlier reports and runs read
        the same; a measure-only run leaves out the retraining it does not do)."""
        fields = {**asdict(self), "augment": list(self.augment)}
        if self.onepixel_time_limit is None:
            del fields["onepixel_time_limit"]
        if not self.measure_only:
            del fields["measure_only"]
        for unused in RETRAINING_FIELDS if self.measure_only else ():
            del fields[unused]
        return fields

    def effective(self, device: torch.device) -> dict:
        """The settings as they take effect on ``device``: what a ``--resume`` must repeat.

        Equal runs are not refused: an unset AutoAttack version is the device's, the settings of a source
        not asked for are left out, and so are AdvGAN's epochs when no AdvGAN is trained.
        """
        unused = {k for source, keys in SOURCE_FIELDS.items() if source not in self.augment for k in keys}
        if not (self.advgan_images or "advgan" in self.augment and not self.measure_only):
            unused.add("advgan_epochs")
        settings = {k: v for k, v in self.settings().items() if k not in unused}
        settings["autoattack_version"] = self.autoattack(device).version if self.autoattack_images else None
        return settings

    def sources(self) -> SourceConfig:
        """What :mod:`advgen.sources` needs to make the generated retraining data."""
        return SourceConfig(self.augment, self.onepixel_train_images, self.onepixel_flips_per_image,
                            self.advgan_samples, self.cgan_samples, self.cgan_epochs, self.onepixel_time_limit)

    def retraining(self, sources: tuple[str, ...] | None = None) -> HardenConfig:
        """The retraining recipe, with the on-the-fly terms of the sources not asked for switched off."""
        on, r = set(self.augment if sources is None else sources), self.retrain
        return HardenConfig(**{**asdict(r), "seed": self.seed, "pgd_eps": r.pgd_eps if "pgd" in on else 0.0,
                               "onepixel_weight": r.onepixel_weight if "onepixel" in on else 0.0,
                               "certified_weight": r.certified_weight if "certified" in on else 0.0})

    def autoattack(self, device: torch.device) -> AutoAttackConfig:
        """The AutoAttack version asked for, else the device's (standard on CUDA, the cpu subset elsewhere)."""
        if self.autoattack_version:
            return AutoAttackConfig.named(self.autoattack_version, self.pgd_eps, self.seed)
        return AutoAttackConfig.for_device(device, self.pgd_eps, self.seed)

    def coverage(self, test_images: int) -> str:
        """The report's note: which test images each attack read (every attack reads the first N)."""
        n = {a: min(getattr(self, f"{a}_images"), test_images) for a in ATTACKS}
        return (f"one-pixel: exact enumeration of the first {n['onepixel']} test images; PGD: the first {n['pgd']}; "
                f"AutoAttack: the first {n['autoattack']}; AdvGAN: the first {n['advgan']}; clean accuracy: all "
                f"{test_images}")

    def past_the_split(self, train_images: int, test_images: int) -> list[str]:
        """One line per split naming the image counts asked for that are larger than it (each uses all of it)."""
        train = {"train_images": self.train_images or 0, "onepixel_train_images": self.onepixel_train_images}
        test = {f"{a}_images": getattr(self, f"{a}_images") for a in ATTACKS}
        lines = []
        for size, asked, what in ((train_images, train, "training"), (test_images, test, "test")):
            over = [f"{name} {n}" for name, n in asked.items() if n > size]
            if over:
                lines.append(f"{', '.join(over)}: more than the {size} {what} images there are, so all {size} are used")
        return lines
