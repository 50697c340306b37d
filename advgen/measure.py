"""One attack against one model, measured as per-image outcomes (a :class:`~advgen.report.Measurement`).

The evaluator runs these for each stage; each takes what it measures and how, and returns flags per
image, so the report can give every rate with its count and interval and pair stages image by image.
Caching and resuming stay with the caller (:mod:`advgen.evaluate`), which knows the phases; the exact
search keeps its own per-image records in ``where`` and so resumes by itself.
"""

from __future__ import annotations

import time
from pathlib import Path

from torch import nn

from . import gan
from .attack_run import run_attack, statuses
from .data import Dataset
from .methods import AttackOptions, Status, pgd, still_correct
from .outputs import AttackSummary
from .report import Measurement
from .run import Run
from .runtime import seed_everything
from .train import predict


def clean(model: nn.Module, data: Dataset) -> Measurement:
    """``correct`` per image of ``data``."""
    t0 = time.perf_counter()
    correct = predict(model, data.images) == data.labels
    return Measurement.from_flags({"correct": correct}, seconds=time.perf_counter() - t0,
                                  note=f"all {len(data)} test images")


def exact_search(run: Run, model: nn.Module, data: Dataset, where: Path, max_examples: int = 64) -> AttackSummary:
    """The exact one-pixel attack on ``data`` into ``where`` (records per image; resumes; shared over ranks)."""
    return run_attack(model, data, None, where, method="onepixel",
                      options=AttackOptions(levels=data.levels, seed=run.seed), resume=True,
                      max_examples=max_examples, run=run)


def onepixel(run: Run, model: nn.Module, data: Dataset, where: Path) -> Measurement:
    """``vulnerable`` and ``certified`` per image from the exact search, and how much the bounds settled."""
    t0 = time.perf_counter()
    summary = exact_search(run, model, data, where)
    status = statuses(where)
    order = sorted(status)
    settled = summary.pruned / max(1, summary.candidates_total)
    return Measurement.from_flags(
        {"vulnerable": [status[i] == Status.VULNERABLE for i in order],
         "certified": [status[i] == Status.CERTIFIED for i in order]},
        counts={"candidates": summary.candidates_total, "pruned": summary.pruned, "evaluated": summary.evaluated},
        seconds=time.perf_counter() - t0,
        note=f"exact search over all {summary.candidates_total} single-pixel candidates of the first "
             f"{summary.images} test images; bounds settled {settled:.2%} of them without running the model")


def pgd_flags(run: Run, model: nn.Module, data: Dataset, eps: float, steps: int) -> dict[str, list[bool]]:
    """``robust`` per image under PGD-``steps`` at L-inf ``eps`` (step 0.01, random start, seeded)."""
    seed_everything(run.seed)
    attack = pgd(model, eps=eps, steps=steps, alpha=0.01)
    return {"robust": still_correct(model, attack, data.images, data.labels, run.device).tolist()}


def pgd_measurement(flags: dict, seconds: float, eps: float, steps: int) -> Measurement:
    note = f"PGD-{steps}, L-inf eps {eps:g}, step 0.01, random start, first {len(flags['robust'])} test images"
    return Measurement.from_flags(flags, seconds=seconds, note=note)


def advgan(model: nn.Module, generator: "gan.AdvGAN", data: Dataset, cfg: "gan.AdvGANConfig",
           seconds: float) -> Measurement:
    """``correct``, ``robust`` and ``fooled`` per image of ``data`` under a trained AdvGAN generator."""
    return Measurement.from_flags(gan.outcomes(model, generator, data), seconds=seconds,
                                  note=f"a fresh AdvGAN (eps {cfg.eps:g}, {cfg.epochs} epochs), first "
                                       f"{len(data)} test images")

