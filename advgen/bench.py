"""`advgen bench onepixel`: the exact attack (pruned and dense) against torchattacks' OnePixel, same images.

Each row runs one configuration on the first images of one set and reports time per image and the
vulnerable images it found. The exact rows also report candidates evaluated per second (the dense
throughput) and where the time went (bounds vs model evaluation). Slow configurations run on a prefix
of the images (``limit`` for each row), recorded in the row. Every row runs with the same number of
CPU threads (``threads``, default one: on shared cores a second thread made both attacks several times
slower), so the exact-to-DE ratio of one run compares like with like.
On colour data a joint-channel row attacks whole colours, DE's own threat model, and checks every
grid-snapped DE success against its flip set.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import onepixel
from .data import Dataset
from .methods import AttackOptions, AttackRecord, run_method
from .outputs import SCHEMA_VERSION, versions
from .runtime import cpu_threads, evaluating, machine_info, resolve_device

DE_CONFIGS = {"torchattacks OnePixel (steps=10, popsize=10)": {},
              "torchattacks OnePixel (steps=100, popsize=100)": {"steps": 100, "popsize": 100}}


@dataclass
class BenchRow:
    name: str
    images: int
    seconds: float
    seconds_per_image: float
    vulnerable: int
    vulnerable_indices: list[int]
    candidates_per_second: float | None = None
    evaluated: int | None = None
    pruned: int | None = None
    breakdown: dict = field(default_factory=dict)
    de_outside_flips: list[int] | None = None  # joint row: images with a grid-snapped DE flip it does not list
    de_checked: int | None = None              # joint row: grid-snapped DE flips checked against its flip set


def correctly_classified(model: nn.Module, data: Dataset, limit: int) -> Dataset:
    """The first ``limit`` images the model gets right: only those are attacked, so only they cost time."""
    from .train import predict

    ok = torch.nonzero(predict(model, data.images) == data.labels).flatten()[:limit]
    return data.subset(ok)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def exact_row(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, levels: int, bounds: bool,
              device: torch.device, batch_size: int | None, threads: int | None = 1, mode: str = "full") -> BenchRow:
    """Time the exact attack; with ``bounds=False`` every candidate is evaluated (dense throughput).
    Mode ``first`` stops at an image's first flip, as DE does (certified images still cost in full)."""
    run = lambda x, y, **kw: onepixel.attack(model, x, y, levels=levels, bounds=bounds, device=device,  # noqa: E731
                                             batch_size=batch_size, threads=threads, mode=mode, **kw)
    run(images[:1], labels[:1])  # warm-up: kernels, allocator
    _sync(device)
    start = time.perf_counter()
    res = run(images, labels)
    _sync(device)
    seconds = time.perf_counter() - start
    stats: dict = {}
    if bounds:  # a second, instrumented pass says which part costs what (it synchronises, so it is separate)
        run(images, labels, stats=stats)
    evaluated = sum(r.evaluated for r in res)
    vuln = [r.index for r in res if r.vulnerable]
    return BenchRow(name, len(images), round(seconds, 4), round(seconds / len(images), 5), len(vuln), vuln,
                    round(evaluated / seconds) if not bounds and evaluated else None, evaluated, sum(r.pruned for r in res),
                    {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()})


def de_row(name: str, params: dict, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
           device: torch.device, seed: int, threads: int | None = 1) -> tuple[BenchRow, list[AttackRecord]]:
    _sync(device)
    start = time.perf_counter()
    with cpu_threads(threads if device.type == "cpu" else None):
        recs = run_method("onepixel-de", model, images, labels, options=AttackOptions(device=device, seed=seed,
                                                                                       params=params))
    _sync(device)
    seconds = time.perf_counter() - start
    vuln = [r.index for r in recs if r.success]
    return BenchRow(name, len(images), round(seconds, 4), round(seconds / len(images), 5), len(vuln), vuln), recs


def joint_row(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, levels: int, device: torch.device,
              batch_size: int | None, threads: int | None = 1) -> tuple[BenchRow, list[onepixel.OnePixelResult]]:
    """Time the exact attack over whole colours (all channels of a location together, as DE searches)."""
    stats: dict = {}
    _sync(device)
    start = time.perf_counter()
    res = onepixel.attack(model, images, labels, levels=levels, device=device, batch_size=batch_size,
                          joint_channels=True, stats=stats, threads=threads)
    _sync(device)
    seconds = time.perf_counter() - start
    vuln = [r.index for r in res if r.vulnerable]
    breakdown = {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
    breakdown["flip_count"] = sum(r.flip_count for r in res)
    return BenchRow("advgen exact (joint channels)", len(images), round(seconds, 4), round(seconds / len(images), 5),
                    len(vuln), vuln, None, sum(r.evaluated for r in res), sum(r.pruned for r in res),
                    breakdown), res


def de_outside_joint(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, levels: int,
                     joint: list[onepixel.OnePixelResult], de: list[AttackRecord]) -> tuple[list[int], int]:
    """Each DE success on an image the joint row attacked, snapped to the level grid and re-checked by the
    model: when the snapped colour still succeeds it must lie in a flip box of that location. Returns the
    images where one does not (should be none) and how many snapped successes were checked."""
    outside, checked = [], 0
    for rec in de:
        i = rec.index
        if not rec.success or i >= len(joint) or rec.adversarial is None:
            continue
        x = images[i].cpu()
        moved = torch.nonzero((rec.adversarial.cpu() != x).any(0))
        if len(moved) != 1:
            continue
        r, c = moved[0].tolist()
        colour = torch.round(rec.adversarial[:, r, c].cpu().clamp(0, 1) * (levels - 1)).long()
        snapped = x.clone()
        snapped[:, r, c] = onepixel.level_values(levels)[colour]
        with torch.no_grad():
            pred = int(model(snapped[None].to(images.device)).argmax(1))
        if pred == int(labels[i]) or torch.equal(snapped, x):
            continue
        checked += 1
        f = joint[i].flips
        ch = x.shape[0]
        here = f[(f[:, 0] == r) & (f[:, 1] == c)]
        inside = ((here[:, 2:2 + ch] <= colour) & (colour <= here[:, 2 + ch:2 + 2 * ch])).all(1)
        if not bool(inside.any()):
            outside.append(i)
    return sorted(set(outside)), checked


def bench_onepixel(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, levels: int = 256,
                   dense_limit: int = 2, slow_limit: int = 3, joint_limit: int = 2,
                   device: str | torch.device = "auto", batch_size: int | None = None, seed: int = 0,
                   threads: int | None = 1, first: bool = True) -> list[BenchRow]:
    """All rows on prefixes of the same images: pruned exact on all (every flip, and with ``first``
    also stopping at the first flip per image), dense exact on ``dense_limit``,
    DE defaults on all, DE steps=100 popsize=100 on ``slow_limit`` (0 skips a row). On colour data also
    the joint-channel exact attack on ``joint_limit`` images, the threat model DE attacks: its row
    records every DE success there that, snapped to the grid, it does not list (``de_outside_flips``).
    Every row runs with ``threads`` CPU threads (None: torch's setting)."""
    dev = resolve_device(device)
    with evaluating(model, dev):
        return _rows(model, images, labels, levels, dense_limit, slow_limit, joint_limit, dev, batch_size, seed,
                     threads, first)


def _rows(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, levels: int, dense_limit: int,
          slow_limit: int, joint_limit: int, dev: torch.device, batch_size: int | None, seed: int,
          threads: int | None, first: bool) -> list[BenchRow]:
    """:func:`bench_onepixel`'s rows, with the model in eval mode on ``dev``."""
    rows = [exact_row("advgen exact (pruned)", model, images, labels, levels, True, dev, batch_size, threads)]
    if first:
        rows.append(exact_row("advgen exact (pruned, first flip)", model, images, labels, levels, True, dev,
                              batch_size, threads, mode="first"))
    if dense_limit:
        rows.append(exact_row("advgen exact (dense)", model, images[:dense_limit], labels[:dense_limit], levels,
                              False, dev, batch_size, threads))
    de_records: list[AttackRecord] = []
    for (name, params), limit in zip(DE_CONFIGS.items(), (len(images), slow_limit)):
        if limit:
            row, recs = de_row(name, params, model, images[:limit], labels[:limit], dev, seed, threads)
            rows.append(row)
            de_records.extend(recs)
    if joint_limit and images.shape[1] > 1:
        row, joint = joint_row(model, images[:joint_limit], labels[:joint_limit], levels, dev, batch_size, threads)
        row.de_outside_flips, row.de_checked = de_outside_joint(model, images.to(dev), labels, levels, joint,
                                                                de_records)
        rows.append(row)
    return rows


def exact_to_de_ratio(rows: list[BenchRow], name: str = "advgen exact (pruned)") -> float | None:
    """Time per image of the exact row ``name`` over DE with defaults, on the same images in one run
    (<= 1: the exact search is no slower than the heuristic); None when either row is missing."""
    exact = next((r for r in rows if r.name == name), None)
    de = next((r for r in rows if r.name.startswith("torchattacks") and r.images == (exact.images if exact else -1)), None)
    if exact is None or de is None or not de.seconds_per_image:
        return None
    return round(exact.seconds_per_image / de.seconds_per_image, 3)


def missed_by_exact(rows: list[BenchRow]) -> list[int]:
    """Images a DE row broke that the exact row on the same prefix did not report vulnerable (should be none
    unless DE found an off-grid value: it searches continuous values). On colour data the exact row of
    DE's threat model is the joint-channel one, and only its prefix is judged."""
    joint = [r for r in rows if r.name == "advgen exact (joint channels)"]
    exact, covered = (set(joint[0].vulnerable_indices), joint[0].images) if joint else \
        (set(rows[0].vulnerable_indices), None)
    broken = {i for r in rows if r.name.startswith("torchattacks") for i in r.vulnerable_indices}
    return sorted(i for i in broken - exact if covered is None or i < covered)


def table(rows: list[BenchRow]) -> str:
    head = f"{'method':<48} {'images':>6} {'s/image':>9} {'vulnerable':>10} {'cand/s':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        cps = f"{r.candidates_per_second:,.0f}" if r.candidates_per_second else "-"
        lines.append(f"{r.name:<48} {r.images:>6} {r.seconds_per_image:>9.4f} {r.vulnerable:>10} {cps:>10}")
    return "\n".join(lines)


def summary(rows: list[BenchRow], *, data: str, model: str, device: torch.device, threads: int,
            seed: int) -> dict:
    """The JSON ``advgen bench onepixel`` writes: the rows, both time ratios, DE's finds the exact rows missed,
    and the machine (the ratio is a property of the processor as much as of the code)."""
    return {"schema_version": SCHEMA_VERSION, "benchmark": "onepixel", "data": data, "model": model,
            "device": str(device), "threads": threads, "seed": seed, "machine": machine_info(device),
            "rows": [asdict(r) for r in rows], "exact_to_de_ratio": exact_to_de_ratio(rows),
            "exact_first_to_de_ratio": exact_to_de_ratio(rows, "advgen exact (pruned, first flip)"),
            "de_vulnerable_missed_by_exact": missed_by_exact(rows), "versions": versions()}
