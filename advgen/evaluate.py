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

import contextlib
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from . import data as datasets
from . import gan, measure
from .gan.state import settings as gan_settings
from .data import Dataset
from .errors import InputError
from .files import atomic_write_bytes, safe_torch_load
from .harden import HardenConfig, harden
from .models import Checkpoint, load_checkpoint, save_checkpoint, user_factory
from .outputs import save_grid
from .report import (REPORT_FILES, GateSpec, Measurement, Report, evaluate_gates, parse_gate_specs,
                     write_reports)
from .resume import Phases, claim, fingerprint, prepare_dir
from .run import Run, start
from .runtime import machine_info
from .target import load_target

log = logging.getLogger("advgen")
#: Sources of retraining data. ``pgd`` and ``certified`` are made on the fly while retraining (PGD
#: examples, and the certified one-pixel bound of :mod:`advgen.onepixel.certified`); the others first.
AUGMENTATIONS = ("onepixel", "advgan", "pgd", "cgan", "certified")
#: What the default run retrains on. The GAN sources are opt-in: measured (README), they cost clean
#: accuracy and retraining time, and did not lower the one-pixel vulnerable rate.
DEFAULT_AUGMENT = ("onepixel", "pgd", "certified")
PICTURES = ("examples_before.png", "examples_after.png", "heatmaps_before.png", "heatmaps_after.png",
            "advgan_before.png", "advgan_after.png", "cgan_samples.png")


@dataclass
class EvaluateConfig:
    """What to measure and how to retrain; the defaults fit 10 minutes on 2 CPU cores."""

    data: str = datasets.EMBEDDED
    arch: str = "cnn"
    train_images: int | None = None
    onepixel_images: int = 1000
    pgd_images: int = 1000
    pgd_eps: float = 0.3
    pgd_steps: int = 40
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

    def __post_init__(self) -> None:
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise InputError(f"unknown augmentation {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(AUGMENTATIONS)}")
        for name in ("onepixel_images", "pgd_images", "advgan_images", "onepixel_train_images", "advgan_samples",
                     "cgan_samples"):
            if getattr(self, name) < 0:
                raise InputError(f"{name.replace('_', '-')} must be >= 0")
        if not 0 < self.pgd_eps <= 1:
            raise InputError(f"pgd eps must be in (0, 1], got {self.pgd_eps}")

    def settings(self) -> dict:
        return {**asdict(self), "augment": list(self.augment)}


def evaluate(config: EvaluateConfig | None = None, out: str | Path = "reports", checkpoint: Path | None = None,
             fail_under: list[str | GateSpec] | None = None, resume: bool = False, overwrite: bool = False,
             device: str | torch.device = "auto", quiet: bool = False) -> Report:
    """Measure the target BEFORE, retrain it on generated data, measure AFTER from scratch; write reports.

    ``fail_under`` holds gate specs such as ``clean=0.97``; the returned report says whether they passed.
    Without ``resume`` or ``overwrite`` an earlier run in ``out`` is refused, never mixed in; with
    ``resume`` it must have been made with the same settings. ``config.arch`` may name a user factory
    (``package.module:factory``) that rebuilds ``checkpoint``.
    """
    config = config or EvaluateConfig()
    gates = parse_gate_specs(fail_under or [])  # a typo fails now, not after minutes of work
    with start(device, config.seed, out, quiet) as run:
        return _Evaluation(run, config, Path(out), checkpoint).report(gates, resume, overwrite)


class _Evaluation:
    """One evaluation's run, settings, phase store and clock, so the phases below take only their data."""

    def __init__(self, run: Run, config: EvaluateConfig, out: Path, checkpoint: Path | None) -> None:
        self.run, self.config, self.out, self.checkpoint = run, config, out, checkpoint
        self.phases = Phases(out / "state")
        self.timings: dict[str, float] = {}
        self.train = datasets.load(config.data, "train").head(config.train_images)
        self.test = datasets.load(config.data, "test")

    def report(self, gates: list[GateSpec], resume: bool, overwrite: bool) -> Report:
        run, config = self.run, self.config
        started = time.perf_counter()
        with run.main():
            if run.is_main:
                prepare_dir(self.out, ["state", *REPORT_FILES.values(), *PICTURES], resume, overwrite)
                self.phases.root.mkdir(exist_ok=True)
                claim(self.phases.path("run.json"), self._run_fingerprint(), str(self.out))

        with self.timer("train_target"):
            target = self._target()
        log.info("measuring BEFORE")
        before, advgan_before = self._measure(target.model, "before")
        log.info("making augmentation data")
        extra, counts = self._augmentation(target.model, advgan_before)
        log.info("retraining")
        with self.timer("retrain"):
            retrained = self._retrain(target, extra)
        log.info("measuring AFTER (every attack from scratch against the retrained model)")
        after, _ = self._measure(retrained.model, "after")

        with run.main() as shared:
            if run.is_main:
                self.timings["total"] = round(time.perf_counter() - started, 3)
                report = Report(
                    seed=config.seed, machine=machine_info(run.device),
                    config={**config.settings(), "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                            "processes": run.size},
                    timings=self.timings, stages={"before": before, "after": after}, augmentation=counts,
                    artifacts={name: name for name in PICTURES if (self.out / name).exists()},
                    notes=[f"one-pixel: exact enumeration of the first {config.onepixel_images} test images; PGD: "
                           f"the first {config.pgd_images}; AdvGAN: the first {config.advgan_images}; clean "
                           f"accuracy: all {len(self.test)}"])
                report.set_gates(evaluate_gates(report, gates))
                write_reports(report, self.out)
                shared.value = report
        return shared.value

    @contextlib.contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Add the block's wall time to ``timings[name]``."""
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)

    def _fingerprint(self, settings: dict, model: nn.Module | None = None, data: Dataset | None = None) -> dict:
        return fingerprint(settings, model=model, data=data, seed=self.config.seed)

    def _run_fingerprint(self) -> dict:
        """Every setting of the run, and the checkpoint file's digest: what ``--resume`` must repeat."""
        given = None
        if self.checkpoint is not None:
            given = hashlib.sha256(Path(self.checkpoint).read_bytes()).hexdigest() \
                if Path(self.checkpoint).is_file() else str(self.checkpoint)
        return self._fingerprint({**self.config.settings(), "checkpoint_sha256": given})

    # --- the target and the retrained model: made on rank 0, read from the state by the others -------

    def _target(self) -> Checkpoint:
        run, config = self.run, self.config
        cache = self.phases.path("target.pt") if self.checkpoint is None else None
        with run.main():
            if run.is_main:
                if cache is not None:
                    self.phases.claim("target", self._fingerprint({"arch": config.arch}, data=self.train))
                target = load_target(run, self.test, self.checkpoint, config.arch, config.data, cache=cache,
                                     train=self.train, test=self.test)
        if not run.is_main:
            target = load_target(run, self.test, self.checkpoint, config.arch, config.data, cache=cache)
        return target

    def _retrain(self, target: Checkpoint, extra: list[Dataset]) -> Checkpoint:
        run, config = self.run, self.config
        retrain_cfg = HardenConfig(**{
            **asdict(config.retrain), "seed": config.seed,
            "pgd_eps": config.retrain.pgd_eps if "pgd" in config.augment else 0.0,
            "onepixel_weight": config.retrain.onepixel_weight if "onepixel" in config.augment else 0.0,
            "certified_weight": config.retrain.certified_weight if "certified" in config.augment else 0.0})
        path = self.phases.path("retrained.pt")
        load = lambda p: load_checkpoint(p, factory=user_factory(config.arch))  # noqa: E731

        def fit() -> Checkpoint:
            model, info = harden(target.model, self.train, extra, retrain_cfg, device=run.device)
            return Checkpoint(model, target.arch, target.input_shape or self.test.input_shape,
                              target.num_classes or self.test.num_classes, {"retrain": info})

        with run.main():
            if run.is_main:
                wanted = self._fingerprint({"retrain": asdict(retrain_cfg),
                                            "extra": [fingerprint({}, data=d)["data_sha256"] for d in extra]},
                                           model=target.model, data=self.train)
                self.phases.cached("retrained", wanted, fit, save_checkpoint, load)
        retrained = load(path)
        retrained.model.to(run.device).eval()
        return retrained

    # --- measurements --------------------------------------------------------------------------------

    def _measure(self, model: nn.Module, stage: str) -> tuple[dict[str, Measurement], "gan.AdvGAN | None"]:
        """Every attack of one stage, each freshly run against ``model``; the AdvGAN for augmentation."""
        run, config = self.run, self.config
        model = model.to(run.device).eval()
        found: dict[str, Measurement] = {}
        if config.onepixel_images:
            with self.timer(f"onepixel_{stage}"):
                found["onepixel"] = self._onepixel(model, stage)
        generator = None
        with run.main():
            if run.is_main:
                found["clean"] = measure.clean(model, self.test)
                if config.pgd_images:
                    with self.timer(f"pgd_{stage}"):
                        found["pgd"] = self._pgd(model, stage)
                if config.advgan_images:
                    with self.timer(f"advgan_{stage}"):
                        found["advgan"], generator = self._advgan(model, stage)
        return found, generator

    def _onepixel(self, model: nn.Module, stage: str) -> Measurement:
        """The exact search on the first test images (shared over ranks); rank 0 copies its pictures."""
        where = self.phases.path(f"onepixel_{stage}")
        found = measure.onepixel(self.run, model, self.test.head(self.config.onepixel_images), where)
        if self.run.is_main:
            for picture in ("heatmaps", "examples"):
                made = where / f"{picture}.png"
                if made.exists():
                    atomic_write_bytes(self.out / f"{picture}_{stage}.png", made.read_bytes())
        return found

    def _pgd(self, model: nn.Module, stage: str) -> Measurement:
        config, t0 = self.config, time.perf_counter()
        data = self.test.head(config.pgd_images)
        wanted = self._fingerprint({"eps": config.pgd_eps, "steps": config.pgd_steps}, model=model, data=data)
        flags = self.phases.json(f"pgd_{stage}", wanted,
                                 lambda: measure.pgd_flags(self.run, model, data, config.pgd_eps, config.pgd_steps))
        return measure.pgd_measurement(flags, time.perf_counter() - t0, config.pgd_eps, config.pgd_steps)

    def _advgan(self, model: nn.Module, stage: str) -> tuple[Measurement, "gan.AdvGAN"]:
        """A generator trained from scratch against ``model`` (resumed per epoch), scored on test images."""
        config, dev, t0 = self.config, self.run.device, time.perf_counter()
        cfg = gan.AdvGANConfig(eps=config.pgd_eps, seed=config.seed)
        if config.advgan_epochs:
            cfg.epochs = config.advgan_epochs

        def train() -> "gan.AdvGAN":
            return gan.train_advgan(model, self.train, cfg, device=dev,
                                    state_dir=self.phases.path(f"advgan_{stage}_training"))

        wanted = self._fingerprint(gan_settings(cfg) | {"epochs": cfg.epochs}, model=model, data=self.train)
        generator = self.phases.cached(f"advgan_{stage}", wanted, train, gan.save_generator,
                                       lambda p: gan.load_generator(p, kind="advgan")).to(dev)
        scored = self.test.head(config.advgan_images)
        first = scored.images[:16]
        save_grid(self.out / f"advgan_{stage}.png", torch.cat([first, generator.perturb(first)]), nrow=16)
        return measure.advgan(model, generator, scored, cfg, time.perf_counter() - t0), generator

    # --- generated training data -----------------------------------------------------------------------

    def _augmentation(self, target: nn.Module, advgan: "gan.AdvGAN | None") -> tuple[list[Dataset], dict]:
        """The generated training sets (PGD and worst-pixel examples are made on the fly while retraining)."""
        run, config = self.run, self.config
        flips = self._onepixel_flips(target)
        extra: list[Dataset] = []
        counts: dict[str, int] = {}
        with run.main():
            if run.is_main:
                if "onepixel" in config.augment:
                    counts["onepixel"] = len(flips) if flips is not None else 0
                    extra += [flips] if flips is not None else []
                if "advgan" in config.augment and advgan is not None and config.advgan_samples:
                    source = self.train.head(config.advgan_samples)
                    with self.timer("augment_advgan"):
                        adv = self.phases.cached(
                            "augment_advgan", self._fingerprint({}, model=advgan.generator, data=source),
                            lambda: Dataset(advgan.perturb(source.images.to(run.device)).cpu(),
                                            source.labels.clone(), "advgan", source.levels, source.num_classes),
                            datasets.save_file, datasets.load_file)
                    extra.append(adv)
                    counts["advgan"] = len(adv)
                if "cgan" in config.augment and config.cgan_samples:
                    with self.timer("augment_cgan"):
                        samples = self._cgan_samples()
                    order = torch.argsort(samples.labels, stable=True)[:: max(1, len(samples) // 100)][:100]
                    save_grid(self.out / "cgan_samples.png", samples.images[order], nrow=10)
                    extra.append(samples)
                    counts["cgan"] = len(samples)
                if "pgd" in config.augment:
                    counts["pgd"] = len(self.train) * config.retrain.epochs  # one PGD example per image per epoch
                if "certified" in config.augment and config.retrain.certified_weight > 0:
                    per_image = config.retrain.certified_top + config.retrain.certified_random
                    counts["certified"] = len(self.train) * config.retrain.epochs * per_image  # bounded boxes
        return extra, counts

    def _onepixel_flips(self, target: nn.Module) -> Dataset | None:
        """Every flip the exact attack finds on the first training images (a few per image), as training data."""
        config = self.config
        if "onepixel" not in config.augment or not config.onepixel_train_images:
            return None
        subset = self.train.head(config.onepixel_train_images)
        where = self.phases.path("onepixel_train")
        with self.timer("augment_onepixel"):
            measure.exact_search(self.run, target, subset, where, max_examples=config.onepixel_flips_per_image)
        if not self.run.is_main:
            return None
        adv = safe_torch_load(where / "adversarial.pt", what="one-pixel examples")
        if not len(adv["labels"]):
            return None
        return Dataset(adv["images"], adv["labels"], "onepixel", subset.levels, subset.num_classes)

    def _cgan_samples(self) -> Dataset:
        config = self.config
        cfg = gan.CGANConfig(seed=config.seed)
        if config.cgan_epochs:
            cfg.epochs = config.cgan_epochs

        def make() -> Dataset:
            cgan = gan.train_cgan(self.train, cfg, device=self.run.device,
                                  state_dir=self.phases.path("cgan_training"))
            return gan.sample(cgan, config.cgan_samples, seed=config.seed)

        wanted = self._fingerprint(gan_settings(cfg) | {"epochs": cfg.epochs, "samples": config.cgan_samples},
                                   data=self.train)
        return self.phases.cached("augment_cgan", wanted, make, datasets.save_file, datasets.load_file)
