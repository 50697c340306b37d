"""Attack a dataset into an output directory that survives kills and scales over torchrun ranks.

:func:`run_attack` is what `advgen attack` does, as a function: prepare (refuse, clear or resume) the
output directory, run an attack method over the chosen images, append each image's record as soon as it
finishes, and rebuild every output from the records at the end. Because the outputs are rebuilt from the
records alone, a run that was killed and resumed, or split over several processes, ends with the same
files as one uninterrupted single-process run (apart from timing fields).

Files in ``out`` (see the README): ``run.json`` (the settings a resume must match), ``records.jsonl``
(one JSON line per image; rank 0 appends to it while attacking, other ranks append to
``records.rank-R.jsonl``, and rank 0 merges them into ``records.jsonl`` sorted by image index at the end
and on resume), ``summary.json``, ``adversarial.pt``, ``examples.png``, ``heatmaps.png``, and
``model.pt`` when the caller trains a model there.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .data import Dataset
from .distributed import World, device_for_rank, fingerprint
from .errors import InputError
from .files import append_jsonl, atomic_write_json, atomic_write_text, check_writable_dir, read_jsonl
from .methods import AttackOptions, AttackRecord, get_method, run_method
from .outputs import adversarial_set, save_adversarial, save_examples, save_heatmaps, summarize, write_summary
from .runtime import progress, resolve_device

RECORDS = "records.jsonl"
RUN_FILE = "run.json"
OUTPUT_FILES = ("summary.json", RECORDS, RUN_FILE, "adversarial.pt", "examples.png", "heatmaps.png", "model.pt")
_PART = re.compile(r"^records\.rank-(\d+)\.jsonl$")

ModelSource = nn.Module | Callable[[], nn.Module]


def records_file(out: Path, rank: int = 0) -> Path:
    """Where ``rank`` appends its records: ``records.jsonl`` for rank 0, ``records.rank-R.jsonl`` otherwise."""
    return out / RECORDS if rank == 0 else out / f"records.rank-{rank}.jsonl"


def part_files(out: Path) -> list[Path]:
    """The other ranks' record files in ``out``, in rank order (from a run of any world size)."""
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := _PART.match(p.name))]
    return [p for _, p in sorted(found)]


def merge_records(out: Path) -> list[dict]:
    """Fold every rank's records into ``records.jsonl``, one per image sorted by index, written atomically.

    Idempotent and kill-safe: the part files are removed only after the merged file is in place, and an
    image recorded twice (a unit redone after a kill) keeps its first record. Returns the merged records.
    """
    by_index: dict[int, dict] = {}
    for path in [out / RECORDS, *part_files(out)]:
        for rec in read_jsonl(path):
            by_index.setdefault(int(rec["index"]), rec)
    merged = [by_index[i] for i in sorted(by_index)]
    if merged or (out / RECORDS).exists():
        atomic_write_text(out / RECORDS, "".join(json.dumps(r) + "\n" for r in merged))
    for path in part_files(out):
        path.unlink(missing_ok=True)
    return merged


def run_attack(model: ModelSource, data: Dataset, indices: Sequence[int] | torch.Tensor | None = None,
               out: str | Path = "runs/attack", *, method: str = "onepixel", options: AttackOptions | None = None,
               config: dict | None = None, target: int | None = None, resume: bool = False,
               overwrite: bool = False, max_examples: int = 64, quiet: bool = False,
               world: World | None = None) -> dict:
    """Attack ``data`` images ``indices`` (all when None) with ``method``; write ``out``; return the summary.

    ``model`` is an ``nn.Module``, or a zero-argument callable returning one that is called once the output
    directory is ready: on rank 0 first, then on the other ranks, so it can train the model and cache it in
    ``out/model.pt`` on rank 0 while the others load that file. Every rank must end up with identical
    weights (checked by fingerprint). ``config`` is what ``run.json`` records and a ``resume`` must match
    (default: method, data name, image count and the options). ``target``: a targeted attack towards that
    class (no chosen image may have it as label). ``overwrite`` replaces earlier outputs; without it or
    ``resume`` a non-empty ``out`` is refused. ``max_examples``: exact-method adversarial images kept per
    image. ``quiet`` hides the progress bar.

    ``world`` (from :func:`advgen.distributed.session`) splits the work over torchrun ranks: images go to
    ranks in whole units of the method (see :class:`~advgen.methods.Method`), each rank appends records to
    its own file as images finish, and rank 0 alone prepares ``out``, merges the records and writes every
    output; every rank gets the summary. The result does not depend on the number of ranks, before or
    after a resume. On CUDA each local rank attacks on its own GPU (``cuda:LOCAL_RANK``).
    """
    spec = get_method(method)
    world = world or World()
    out = Path(out)
    opts = options or AttackOptions(levels=data.levels)
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other; pick one")
    if world.size > 1:  # each local rank on its own GPU
        opts = dataclasses.replace(opts, device=device_for_rank(resolve_device(opts.device)))
    if opts.levels != data.levels:
        raise InputError(f"options.levels ({opts.levels}) must match the data's levels ({data.levels})")
    if target is not None and not spec.targeted:
        raise InputError(f"method {method!r} does not support --target")
    idx = _check_indices(indices, len(data))
    chosen = data.subset(idx)
    if target is not None and bool((chosen.labels == target).any()):
        raise InputError(f"images of the target class {target} cannot be attacked towards it; leave them out")
    if config is None:
        config = {"method": method, "data": data.name, "images": len(idx), "mode": opts.mode, "target": target,
                  "bounds": opts.bounds, "levels": data.levels, "seed": opts.seed, "params": opts.params}
    config = json.loads(json.dumps(config))  # compare like run.json reads back (tuples become lists, ...)

    done = world.on_main(lambda: _prepare_out(out, config, resume, overwrite))
    _check_shared(out, config, world)
    net = world.main_first(model) if not isinstance(model, nn.Module) else model
    if world.size > 1 and len({*world.gather(fingerprint(net))}) > 1:
        raise InputError("the ranks loaded different model weights; give a --checkpoint every node can read, "
                         "or an --out directory every node shares")

    positions = list(range(len(idx)))
    units = [positions[s:s + spec.unit] for s in range(0, len(positions), spec.unit)]
    todo = [u for u in world.shard(units) if any(idx[p] not in done for p in u)]
    calls = [[p for u in todo for p in u]] if spec.unit == 1 else todo  # whole units keep results exact
    total = sum(map(len, calls))
    bar = progress(range(total), desc=f"attack {method}", total=total, quiet=quiet or not world.is_main, unit="img")
    ticks = iter(bar)
    part = records_file(out, world.rank)

    def emit(recs: list[AttackRecord]) -> None:
        append_jsonl(part, [r.to_record() for r in recs])
        for _ in recs:
            next(ticks, None)

    for call in calls:
        pick = torch.tensor(call, dtype=torch.long)
        targets = None if target is None else torch.full((len(call),), target, dtype=torch.long)
        run_method(method, net, chosen.images[pick], chosen.labels[pick], targets, [idx[p] for p in call], opts,
                   emit)
    if hasattr(bar, "close"):
        bar.close()
    world.barrier()  # every rank's records are on disk
    return world.on_main(lambda: _finish(out, method, opts, config, target, chosen, idx, max_examples))


def _check_indices(indices: Sequence[int] | torch.Tensor | None, n: int) -> list[int]:
    """Image indices as a list of distinct ints in ``0..n-1``."""
    idx = list(range(n)) if indices is None else [int(i) for i in torch.as_tensor(indices).reshape(-1).tolist()]
    if any(not 0 <= i < n for i in idx):
        raise InputError(f"image indices must lie in 0..{n - 1}")
    if len(set(idx)) != len(idx):
        raise InputError("image indices must be distinct")
    return idx


def _prepare_out(out: Path, config: dict, resume: bool, overwrite: bool) -> set[int]:
    """Refuse, clear, or resume the output directory; returns the image indices already recorded.

    On resume the records of every rank of the earlier run (whatever its world size) are merged first.
    """
    existing = out.exists() and any(out.iterdir())
    if existing and not (resume or overwrite):
        raise InputError(f"{out} already holds results; pass --resume to continue or --overwrite to replace")
    if existing and overwrite:
        for p in [*(out / name for name in OUTPUT_FILES), *part_files(out)]:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
    check_writable_dir(out)
    run_file = out / RUN_FILE
    if resume and run_file.exists():
        before = json.loads(run_file.read_text())
        if before != config:
            changed = sorted(k for k in {*config, *before} if before.get(k) != config.get(k))
            raise InputError(f"{out} was made with different settings ({', '.join(changed)}); "
                             f"use the same options to --resume, or --overwrite")
    elif not run_file.exists():
        atomic_write_json(run_file, config)
    return {int(r["index"]) for r in merge_records(out)}


def _check_shared(out: Path, config: dict, world: World) -> None:
    """Every rank must see rank 0's ``run.json``: records only meet again through a shared ``out``."""
    if world.size == 1:
        return
    try:
        seen = json.loads((out / RUN_FILE).read_text()) == config
    except (OSError, ValueError):
        seen = False
    blind = [r for r, ok in enumerate(world.gather(seen)) if not ok]
    if blind:
        raise InputError(f"rank(s) {', '.join(map(str, blind))} do not see {out / RUN_FILE} that rank 0 wrote; "
                         f"put --out on a filesystem every node shares")


def _finish(out: Path, method: str, opts: AttackOptions, config: dict, target: int | None, chosen: Dataset,
            idx: list[int], max_examples: int) -> dict:
    """Merge the records and rebuild every output from them, so any run of the same settings ends alike."""
    images = {i: chosen.images[k] for k, i in enumerate(idx)}
    records = [AttackRecord.from_record(rec, images[int(rec["index"])], chosen.levels)
               for rec in merge_records(out) if int(rec["index"]) in images]
    summary = summarize(records, method, opts.seed, {"mode": opts.mode, "target": target, "levels": chosen.levels,
                                                      "data": config.get("data", chosen.name)})
    write_summary(out / "summary.json", summary)
    save_adversarial(out / "adversarial.pt", adversarial_set(records, images, chosen.levels, max_examples), method)
    save_examples(out / "examples.png", records)
    save_heatmaps(out / "heatmaps.png", records, images)
    return summary
