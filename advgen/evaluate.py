"""The robustness evaluator: measure a classifier, retrain it on generated data, measure it again.

Every attack in the AFTER stage is run from scratch against the retrained model: a fresh exact
one-pixel enumeration, fresh PGD, and a freshly trained AdvGAN. Nothing made against the old model is
scored against the new one. Each phase stores its result under ``out/state`` beside the fingerprint of
what it depends on (:mod:`advgen.resume`), so a killed run resumes where it stopped and a resume under
other settings is refused. Each phase seeds itself, so a resumed result equals an uninterrupted one.
Under torchrun the exact one-pixel searches (the costly part) are shared out between the ranks; rank 0
does every other phase and writes the reports.

Each attack yields a :class:`~advgen.report.Measurement`: per-image outcomes on the first test images,
so the report can give every rate with its count and interval and pair BEFORE with AFTER image by image.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import torch
from torch import nn

from . import data as datasets
from . import gan, measure, sources
from .autoattack import AutoAttackConfig
from .data import Dataset
from .errors import InputError, check_fields
from .harden import HardenConfig, harden
from .models import (PROBABILITIES, RANDOM_MODEL, Checkpoint, check_arch, load_checkpoint, outputs_probabilities,
                     random_in_eval, save_checkpoint, user_factory)
from .report import REPORT_FILES, GateSpec, Measurement, Report, evaluate_gates, parse_gate_specs, write_reports
from .resume import claim, file_sha256, fingerprint, forgotten_if_failed, prepare_dir
from .run import Run, start
from .runtime import machine_info
from .sources import SOURCES as AUGMENTATIONS, SourceConfig
from .target import check_in_memory, load_target, model_target
from .workspace import Workspace

log = logging.getLogger("advgen")
#: What the default run retrains on. The GAN sources are opt-in: measured (README), they cost clean
#: accuracy and retraining time, and did not lower the one-pixel vulnerable rate.
DEFAULT_AUGMENT = ("onepixel", "pgd", "certified")


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
PICTURES = ("examples_before.png", "examples_after.png", "heatmaps_before.png", "heatmaps_after.png",
            "advgan_before.png", "advgan_after.png", "cgan_samples.png")


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
        check_fields(self, dict.fromkeys(("onepixel_images", "pgd_images", "autoattack_images", "advgan_images",
                                          "onepixel_train_images", "advgan_samples", "cgan_samples"), 0))
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
        """Every field as plain JSON values: what the report records and a ``--resume`` must repeat (an unset
        time limit and ``measure_only=False`` are left out, as before those options existed, so earlier
        reports and runs read the same; a measure-only run leaves out the retraining it does not do)."""
        fields = {**asdict(self), "augment": list(self.augment)}
        if self.onepixel_time_limit is None:
            del fields["onepixel_time_limit"]
        if not self.measure_only:
            del fields["measure_only"]
        for unused in RETRAINING_FIELDS if self.measure_only else ():
            del fields[unused]
        return fields

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


def evaluate(config: EvaluateConfig | None = None, out: str | Path = "reports", checkpoint: Path | None = None,
             fail_under: list[str | GateSpec] | None = None, resume: bool = False, overwrite: bool = False,
             device: str | torch.device = "auto", quiet: bool = False, model: nn.Module | None = None) -> Report:
    """Measure the target BEFORE, retrain it on generated data, measure AFTER from scratch; write reports.

    With ``config.measure_only`` it stops after BEFORE: the report has that stage alone.
    ``fail_under`` holds gate specs such as ``clean=0.97`` (read at the final stage unless they name one);
    the returned report says whether they passed.
    Without ``resume`` or ``overwrite`` an earlier run in ``out`` is refused, never mixed in; with
    ``resume`` it must have been made with the same settings. ``config.arch`` may name a user factory
    (``package.module:factory``) that rebuilds ``checkpoint``. Or the target is ``model``, handed over in
    memory (a copy is measured and retrained; a resume must hand over the same weights).
    """
    config = config or EvaluateConfig()
    gates = parse_gate_specs(fail_under or [], "before" if config.measure_only else "after")  # now, not after minutes
    with start(device, config.seed, out, quiet) as run:
        ws, ev = Workspace(run, Path(out)), Evaluation(config, checkpoint, model)
        with forgotten_if_failed(ws.out, enabled=run.is_main):
            started = time.perf_counter()
            ev.begin(ws, ["state", *REPORT_FILES.values(), *PICTURES], resume, overwrite)
            target, before, extra, counts = ev.prepare(ws, generate=not config.measure_only)
            stages = {"before": before}
            if not config.measure_only:
                log.info("retraining")
                with ws.timer("retrain"):
                    retrained = ev.retrain(ws, target, list(extra.values()), config.retraining())
                log.info("measuring AFTER (every attack from scratch against the retrained model)")
                stages["after"], _ = ev.measure(ws, retrained.model, "after")

            with run.main() as shared:
                if run.is_main:
                    ws.timings["total"] = round(time.perf_counter() - started, 3)
                    report = Report(
                        seed=config.seed, machine=machine_info(run.device), config=ev.provenance(run),
                        timings=ws.timings, stages=stages, augmentation=counts,
                        artifacts={name: name for name in PICTURES if (ws.out / name).exists()}, notes=[ev.note()])
                    report.set_gates(evaluate_gates(report, gates))
                    for warning in report.warnings():
                        log.warning(warning)
                    write_reports(report, ws.out)
                    shared.value = report
        return shared.value


class Evaluation:
    """The phases of an evaluation, for one config and target; each works in the workspace it is given.

    :func:`evaluate` runs them once in ``out``; the ablation (:mod:`advgen.ablation`) shares the target,
    BEFORE and generated data, and retrains and measures each variant in a workspace of its own.
    """

    def __init__(self, config: EvaluateConfig, checkpoint: Path | None, model: nn.Module | None = None) -> None:
        check_in_memory(model, checkpoint)
        self.config, self.checkpoint, self.model = config, checkpoint, model
        self.arch: str | None = None  # the target's, once it is loaded
        self.train = datasets.load(config.data, "train").head(config.train_images)
        self.test = datasets.load(config.data, "test")

    def begin(self, ws: Workspace, outputs: list[str], resume: bool, overwrite: bool) -> None:
        """Refuse, clear or keep ``ws.out`` (see :func:`~advgen.resume.prepare_dir`) and claim its settings."""
        with ws.run.main():
            if ws.run.is_main:
                prepare_dir(ws.out, outputs, resume, overwrite, "state", reads=(self.checkpoint,))
                ws.phases.root.mkdir(exist_ok=True)
                claim(ws.phases.path("run.json"), self._run_fingerprint(ws), str(ws.out))

    def provenance(self, run: Run) -> dict:
        """The settings as the report records them; ``arch`` is the model's (a checkpoint brings its own)."""
        return {**self.config.settings(), "arch": self.arch or self.config.arch,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None, "processes": run.size}

    def note(self) -> str:
        c, n = self.config, len(self.test)
        return (f"one-pixel: exact enumeration of the first {min(c.onepixel_images, n)} test images; PGD: the first "
                f"{min(c.pgd_images, n)}; AutoAttack: the first {min(c.autoattack_images, n)}; AdvGAN: the first "
                f"{min(c.advgan_images, n)}; clean accuracy: all {n}")

    def _run_fingerprint(self, ws: Workspace) -> dict:
        """Every setting that can change a result, and the checkpoint file's digest: what ``--resume`` must repeat.

        Settings are compared as they take effect, so equal runs are not refused: an unset AutoAttack
        version is the device's, the settings of a source not asked for are left out, and so is a
        built-in ``arch`` beside a checkpoint (the checkpoint brings its own).
        """
        c = self.config
        unused = {"onepixel": ("onepixel_train_images", "onepixel_flips_per_image"),
                  "advgan": ("advgan_samples",), "cgan": ("cgan_samples", "cgan_epochs")}
        settings = {k: v for k, v in c.settings().items()
                    if not any(k in keys and source not in c.augment for source, keys in unused.items())}
        if not (c.advgan_images or "advgan" in c.augment and not c.measure_only):
            del settings["advgan_epochs"]
        settings.update(arch=self._arch(), autoattack_version=c.autoattack(ws.run.device).version
                        if c.autoattack_images else None)
        return ws.fingerprint({**settings, "checkpoint_sha256": file_sha256(self.checkpoint)}, model=self.model)

    def prepare(self, ws: Workspace,
                generate: bool = True) -> tuple[Checkpoint, dict[str, Measurement], dict[str, Dataset], dict[str, int]]:
        """The target, its BEFORE measurements, and (``generate``) the generated retraining data with each
        source's count: the work :func:`evaluate` and the ablation share."""
        with ws.timer("train_target"):
            target = self.target(ws)
        log.info("measuring BEFORE")
        before, advgan_before = self.measure(ws, target.model, "before")
        if not generate:
            return target, before, {}, {}
        log.info("making the generated retraining data")
        extra, counts = sources.generate(ws, self.config.sources(), self.config.retraining(), self.train,
                                         target.model, advgan_before)
        return target, before, extra, counts

    # --- the target and the retrained model: made on rank 0, read from the state by the others -------

    def target(self, ws: Workspace) -> Checkpoint:
        run, config = ws.run, self.config
        cache = ws.phases.path("target.pt") if self.checkpoint is None else None
        if self.model is not None:
            target = model_target(run, self.model, self.test)
        else:
            with run.main():
                if run.is_main:
                    if cache is not None:
                        ws.phases.claim("target", ws.fingerprint({"arch": config.arch}, data=self.train))
                    target = load_target(run, self.test, self.checkpoint, self._arch(), config.data, cache=cache,
                                         train=self.train, test=self.test,
                                         state=ws.phases.path("target_training.pt") if cache is not None else None)
            if not run.is_main:
                target = load_target(run, self.test, self.checkpoint, self._arch(), config.data, cache=cache)
        if config.data not in (datasets.EMBEDDED, *datasets.TORCHVISION):  # said once the inputs are known good
            log.warning(f"--data {config.data}: a file has no train/test split, so the target is trained, retrained "
                        f"and measured on the same images; every figure is on training images")
        self._say_clipped()
        if random_in_eval(target.model, self.test.images):  # said before minutes of measuring, not after
            if config.onepixel_images:
                raise InputError(f"{RANDOM_MODEL}; the exact one-pixel search needs a model that answers the same "
                                 f"image the same way (--onepixel-images 0 measures the rest, with that caveat)")
            log.warning(f"{RANDOM_MODEL}; every attack sees one draw per step, so the figures overstate robustness")
        if outputs_probabilities(target.model, self.test.images):
            log.warning(PROBABILITIES)
        self.arch = target.arch
        return target

    def _say_clipped(self) -> None:
        """One line naming the image counts asked for that are larger than their split (each uses all of it)."""
        c = self.config
        for split, asked, what in ((self.train, {"train_images": c.train_images or 0,
                                                 "onepixel_train_images": c.onepixel_train_images}, "training"),
                                   (self.test, {f"{a}_images": getattr(c, f"{a}_images")
                                                for a in ("onepixel", "pgd", "autoattack", "advgan")}, "test")):
            over = [f"{name} {n}" for name, n in asked.items() if n > len(split)]
            if over:
                log.info(f"{', '.join(over)}: more than the {len(split)} {what} images there are, so all "
                         f"{len(split)} are used")

    def _arch(self) -> str | None:
        """The model to train, or the user factory that rebuilds the checkpoint; a checkpoint of a built-in
        model brings its own (the budget's ``cnn-wide`` applies only to a target trained on the spot), and a
        model in memory is its own."""
        arch = self.config.arch
        if self.model is not None:
            return None
        return arch if self.checkpoint is None or user_factory(arch) else None

    def retrain(self, ws: Workspace, target: Checkpoint, extra: list[Dataset], recipe: HardenConfig) -> Checkpoint:
        """``target`` retrained by ``recipe`` on the training split plus ``extra`` (saved as ``retrained.pt``)."""
        run = ws.run
        load = lambda p: load_checkpoint(p, factory=user_factory(self.config.arch), template=self.model)  # noqa: E731

        def fit() -> Checkpoint:
            model, info = harden(target.model, self.train, extra, recipe, device=run.device,
                                 state=ws.phases.path("retrained_training.pt"))  # a kill loses one epoch at most
            return Checkpoint(model, target.arch, target.input_shape or self.test.input_shape,
                              target.num_classes or self.test.num_classes, {"retrain": info})

        with run.main():
            if run.is_main:
                wanted = ws.fingerprint({"retrain": asdict(recipe),
                                         "extra": [fingerprint({}, data=d)["data_sha256"] for d in extra]},
                                        model=target.model, data=self.train)
                ws.phases.cached("retrained", wanted, fit, save_checkpoint, load)
        retrained = load(ws.phases.path("retrained.pt"))
        retrained.model.to(run.device).eval()
        return retrained

    # --- measurements: every attack of a stage, freshly run against its model -------------------------

    def measure(self, ws: Workspace, model: nn.Module,
                stage: str) -> tuple[dict[str, Measurement], "gan.AdvGAN | None"]:
        """One stage's measurements, keyed by attack; and its AdvGAN, which the augmentation reuses."""
        config, test, run = self.config, self.test, ws.run
        model = model.to(run.device).eval()
        found: dict[str, Measurement] = {}
        if config.onepixel_images:
            with ws.timer(f"onepixel_{stage}"):
                found["onepixel"] = measure.onepixel(ws, model, test.head(config.onepixel_images), stage,
                                                     config.onepixel_time_limit)
        generator = None
        with run.main():
            if run.is_main:
                found["clean"] = measure.clean(model, test)
                if config.pgd_images:
                    with ws.timer(f"pgd_{stage}"):
                        found["pgd"] = measure.pgd(ws, model, test.head(config.pgd_images), config.pgd_eps,
                                                   config.pgd_steps, stage)
                if config.autoattack_images:
                    n = min(config.autoattack_images, len(test))
                    pgd = found["pgd"].outcomes["robust"][:n] if config.pgd_images >= n else None
                    with ws.timer(f"autoattack_{stage}"):
                        found["autoattack"] = measure.autoattack(ws, model, test.head(n),
                                                                 config.autoattack(run.device), stage, pgd)
                if config.advgan_images:
                    cfg = gan.AdvGANConfig(eps=config.pgd_eps, seed=config.seed)
                    cfg.epochs = config.advgan_epochs or cfg.epochs
                    with ws.timer(f"advgan_{stage}"):
                        found["advgan"], generator = measure.advgan(ws, model, self.train,
                                                                    test.head(config.advgan_images), cfg, stage)
        return found, generator
