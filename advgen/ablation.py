"""Did the generated data help? Retrain the same target once per subset of sources and attack each afresh.

The variants: clean fine-tuning only; each source alone; all but one source, for each source; all
sources. Every variant starts from the same target with the same recipe, epochs, batch size,
learning rate and seed; only its data differ (which static sets are mixed in, and whether the PGD and
certified terms are on). The static sets themselves (one-pixel flips, AdvGAN examples, cGAN samples)
are made once, so two variants that use a set use the same one. Each variant is then measured from
scratch, a fresh AdvGAN included, on the same test images, and judged against clean-only with
paired tests (:mod:`advgen.report.ablation`).

The target, BEFORE and the static sets are the evaluator's phases in ``out/state``. Each variant
lives in ``out/variants/<name>`` with its own phases, so a killed ablation resumes per variant; under
torchrun the variants are shared out, one per rank at a time, and rank 0 writes the report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .errors import InputError
from .evaluate import Evaluation
from .evaluate_config import EvaluateConfig
from .report import Measurement
from .report.ablation import BASELINE, FILES, Ablation, write
from .resume import forgotten_if_failed
from .run import start
from .runtime import machine_info
from .sources import SOURCES
from .workspace import Workspace

log = logging.getLogger("advgen")


@dataclass(frozen=True)
class Variant:
    """One retraining of the ablation: its name and the sources it uses."""

    name: str
    sources: tuple[str, ...]


def variants(used: tuple[str, ...] = SOURCES) -> list[Variant]:
    """clean-only, ``only-S`` and ``all-but-S`` for each source S, and ``all``; each set of sources once."""
    found = [Variant(BASELINE, ())]
    found += [Variant(f"only-{s}", (s,)) for s in used]
    found += [Variant(f"all-but-{s}", tuple(x for x in used if x != s)) for s in used]
    found.append(Variant("all", tuple(used)))
    unique: dict[frozenset[str], Variant] = {}
    for v in found:
        unique.setdefault(frozenset(v.sources), v)
    return list(unique.values())


def ablate(config: EvaluateConfig | None = None, out: str | Path = "runs/ablation", checkpoint: Path | None = None,
           used: tuple[str, ...] = SOURCES, resume: bool = False, overwrite: bool = False,
           device: str | torch.device = "auto", quiet: bool = False, model: nn.Module | None = None) -> Ablation:
    """Run every variant of ``used`` (see :func:`variants`) and write the ablation's report into ``out``.

    The target is ``checkpoint``, ``model`` (handed over in memory), or the default model trained now.
    """
    config = replace(config or EvaluateConfig(), augment=tuple(used))
    if config.measure_only:
        raise InputError("an ablation compares retrainings; measure_only (--measure-only) has none")
    with start(device, config.seed, out, quiet) as run:
        ws, ev = Workspace(run, Path(out)), Evaluation(config, checkpoint, model)
        with forgotten_if_failed(ws.out, enabled=run.is_main):
            started = time.perf_counter()
            ev.begin(ws, ["state", "variants", *FILES], resume, overwrite)
            target, before, extra, _ = ev.prepare(ws)  # every source's data, made once
            extra = run.broadcast(extra)

            planned = variants(tuple(used))
            solo = replace(run, rank=0, size=1)  # a variant is one rank's work from start to end
            mine: dict[str, dict[str, Measurement]] = {}
            for v in run.shard(planned):
                log.info(f"variant {v.name}: retraining on {', '.join(v.sources) or 'the clean data only'}")
                vws = Workspace(solo, ws.out / "variants" / v.name)
                with ws.timer(f"variant_{v.name}"):
                    retrained = ev.retrain(vws, target, [d for s, d in extra.items() if s in v.sources],
                                           config.retraining(v.sources))
                    mine[v.name], _ = ev.measure(vws, retrained.model, "after")

            with run.main() as shared:
                found = {k: m for part in run.gather(mine) for k, m in part.items()}
                if run.is_main:
                    ws.timings["total"] = round(time.perf_counter() - started, 3)
                    ablation = Ablation(seed=config.seed, machine=machine_info(run.device), config=ev.provenance(run),
                                        variants={v.name: list(v.sources) for v in planned},
                                        stages={"before": before, **{v.name: found[v.name] for v in planned}},
                                        timings=ws.timings)
                    write(ablation, ws.out)
                    shared.value = ablation
        return shared.value
