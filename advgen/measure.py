"""One attack against one model, measured as per-image outcomes (a :class:`~advgen.report.Measurement`).

The evaluator runs these for each stage. Each takes what it measures and how, saves its result as a
phase of the :class:`~advgen.workspace.Workspace` (so a killed run resumes and a changed setting is
refused), and returns flags per image, so the report can give every rate with its count and interval
and pair the stages image by image. The exact search keeps its own per-image records and so resumes
image by image; the others resume per phase.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from . import gan
from .attack_run import run_attack, statuses
from .autoattack import AutoAttackConfig, worst_case
from .data import Dataset
from .files import atomic_write_bytes
from .gan.state import settings as gan_settings
from .methods import AttackOptions, Status, pgd as make_pgd
from .outputs import AttackSummary
from .pictures import save_grid
from .report import Measurement
from .run import Run
from .runtime import seed_everything
from .stats import percent
from .train import predict, still_correct
from .workspace import Workspace


def clean(model: nn.Module, data: Dataset) -> Measurement:
    """``correct`` per image of ``data``."""
    t0 = time.perf_counter()
    correct = predict(model, data.images) == data.labels
    return Measurement.from_flags({"correct": correct}, seconds=time.perf_counter() - t0,
                                  note=f"all {len(data)} test images")


def exact_search(run: Run, model: nn.Module, data: Dataset, where: Path, max_examples: int = 64,
                 time_limit: float | None = None) -> AttackSummary:
    """The exact one-pixel attack on ``data`` into ``where`` (records per image; resumes; shared over ranks).

    A phase continues whatever its folder holds; with nothing there it starts fresh as a plain run, so
    the log does not announce a ``--resume`` the user never gave. ``time_limit``: seconds per image.
    """
    started = where.is_dir() and any(where.iterdir())
    params = {} if time_limit is None else {"time_limit": time_limit}
    return run_attack(model, data, None, where, method="onepixel",
                      options=AttackOptions(levels=data.levels, seed=run.seed, params=params), resume=started,
                      max_examples=max_examples, run=run)


def onepixel(ws: Workspace, model: nn.Module, data: Dataset, stage: str,
             time_limit: float | None = None) -> Measurement:
    """``vulnerable`` and ``certified`` per image from the exact search, and how much the bounds settled.

    With a ``time_limit`` (seconds per image) the images it left undecided get a ``timeout`` outcome of
    their own: neither vulnerable nor certified, so the vulnerable rate is then a lower bound. Every rank
    searches its share; rank 0 copies the search's pictures next to the report.
    """
    t0, where = time.perf_counter(), ws.phases.path(f"onepixel_{stage}")
    summary = exact_search(ws.run, model, data, where, time_limit=time_limit)
    status = statuses(where)
    order = sorted(status)
    if ws.run.is_main:
        for picture in ("heatmaps", "examples"):
            if (where / f"{picture}.png").exists():
                atomic_write_bytes(ws.out / f"{picture}_{stage}.png", (where / f"{picture}.png").read_bytes())
    flags = {"vulnerable": [status[i] == Status.VULNERABLE for i in order],
             "certified": [status[i] == Status.CERTIFIED for i in order]}
    limited = ""
    if time_limit is not None:
        flags["timeout"] = [status[i] == Status.TIMEOUT for i in order]
        limited = (f"; {time_limit:g} s per image: {summary.timeout} undecided (nothing proved), so the vulnerable "
                   f"rate is a lower bound" if summary.timeout else f"; {time_limit:g} s per image: every image decided")
    return Measurement.from_flags(
        flags, counts={"candidates": summary.candidates_total, "pruned": summary.pruned, "evaluated": summary.evaluated},
        seconds=time.perf_counter() - t0,
        note=f"exact search over all {summary.candidates_total} single-pixel candidates of the first "
             f"{summary.images} test images; bounds settled {percent(summary.pruned, summary.candidates_total)} "
             f"of them without running the model{limited}")


def pgd_flags(run: Run, model: nn.Module, data: Dataset, eps: float, steps: int) -> dict[str, list[bool]]:
    """``robust`` per image under PGD-``steps`` at L-inf ``eps`` (step 0.01, random start, seeded)."""
    seed_everything(run.seed)
    attack = make_pgd(model, eps=eps, steps=steps, alpha=0.01)
    return {"robust": still_correct(model, attack, data.images, data.labels, run.device).tolist()}


def pgd(ws: Workspace, model: nn.Module, data: Dataset, eps: float, steps: int, stage: str) -> Measurement:
    """PGD's ``robust`` flags, saved as the phase ``pgd_<stage>``."""
    t0 = time.perf_counter()
    wanted = ws.fingerprint({"eps": eps, "steps": steps}, model=model, data=data)
    flags = ws.phases.json(f"pgd_{stage}", wanted, lambda: pgd_flags(ws.run, model, data, eps, steps))
    return Measurement.from_flags(flags, seconds=time.perf_counter() - t0,
                                  note=f"PGD-{steps}, L-inf eps {eps:g}, step 0.01, random start, first "
                                       f"{len(data)} test images")


def autoattack(ws: Workspace, model: nn.Module, data: Dataset, config: AutoAttackConfig, stage: str,
               pgd_robust: str | None = None) -> Measurement:
    """AutoAttack's parts, each run on every image, and the per-image worst case (see :mod:`.autoattack`).

    ``robust`` is 1 only where every part failed; with ``pgd_robust`` (PGD's flags on the same
    images) ``worst`` is 1 only where PGD failed too. Each part is its own phase, so a killed run
    keeps the parts it finished.
    """
    t0, found = time.perf_counter(), {}
    for part in config.parts:
        wanted = ws.fingerprint({"part": part, **config.settings()}, model=model, data=data)
        found[part] = ws.phases.json(f"autoattack_{stage}_{part}", wanted,
                                     lambda part=part: config.robust(part, model, data, ws.run.device))
    flags = worst_case(found, pgd_robust)
    return Measurement.from_flags(flags, seconds=time.perf_counter() - t0,
                                  note=f"{config.describe()}; first {len(data)} test images; robust only "
                                       f"if every part failed{' (worst: and PGD too)' if pgd_robust else ''}")


def advgan(ws: Workspace, model: nn.Module, train: Dataset, scored: Dataset, cfg: "gan.AdvGANConfig",
           stage: str) -> tuple[Measurement, "gan.AdvGAN"]:
    """A generator trained from scratch against ``model`` (resumed per epoch), scored on ``scored``."""
    t0, dev = time.perf_counter(), ws.run.device

    def fit() -> "gan.AdvGAN":
        return gan.train_advgan(model, train, cfg, device=dev, state_dir=ws.phases.path(f"advgan_{stage}_training"))

    wanted = ws.fingerprint(gan_settings(cfg) | {"epochs": cfg.epochs}, model=model, data=train)
    generator = ws.phases.cached(f"advgan_{stage}", wanted, fit, gan.save_generator,
                                 lambda p: gan.load_generator(p, kind="advgan")).to(dev)
    first = scored.images[:16]
    save_grid(ws.out / f"advgan_{stage}.png", torch.cat([first, generator.perturb(first)]), nrow=16)
    found = Measurement.from_flags(gan.outcomes(model, generator, scored), seconds=time.perf_counter() - t0,
                                   note=f"a fresh AdvGAN (eps {cfg.eps:g}, {cfg.epochs} epochs), first "
                                        f"{len(scored)} test images")
    return found, generator
