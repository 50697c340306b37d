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
What follows from the settings alone (budgets, what a resume must repeat, which retraining terms are on)
is :mod:`advgen.evaluate_config`'s; this module runs the phases.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from . import data as datasets
from . import gan, measure, sources
from .data import Dataset
from .evaluate_config import EvaluateConfig
from .harden import HardenConfig, harden
from .models import Checkpoint, load_checkpoint, save_checkpoint, user_factory
from .report import REPORT_FILES, GateSpec, Measurement, Report, evaluate_gates, parse_gate_specs, write_reports
from .resume import claim, file_sha256, fingerprint, forgotten_if_failed, prepare_dir
from .run import Run, start
from .runtime import machine_info
from .target import check_in_memory, load_target, model_target, preflight
from .workspace import Workspace

log = logging.getLogger("advgen")
PICTURES = ("examples_before.png", "examples_after.png", "heatmaps_before.png", "heatmaps_after.png",
            "advgan_before.png", "advgan_after.png", "cgan_samples.png")


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
                        artifacts={name: name for name in PICTURES if (ws.out / name).exists()},
                        notes=[config.coverage(len(ev.test))])
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

    def _run_fingerprint(self, ws: Workspace) -> dict:
        """Every setting that can change a result (as it takes effect), and the target's digest: what ``--resume``
        must repeat. A built-in ``arch`` beside a checkpoint is left out: the checkpoint brings its own."""
        settings = {**self.config.effective(ws.run.device), "arch": self._arch()}
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
        for line in config.past_the_split(len(self.train), len(self.test)):
            log.info(line)
        preflight(target.model, self.test.images, "every attack",  # said before minutes of measuring, not after
                  exact="--onepixel-images 0 measures the rest, with that caveat" if config.onepixel_images else None)
        self.arch = target.arch
        return target

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
