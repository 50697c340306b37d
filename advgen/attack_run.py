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
``model.pt`` when the caller trains a model there (``model_training.pt`` while it trains, so that a killed
training resumes from its last epoch).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import resume as resume_mod
from .data import Dataset, validate_targets
from .errors import InputError
from .files import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from .methods import AttackOptions, AttackRecord, Method, Status, check_params, get_method, run_method
from .models import output_classes
from .outputs import AttackSummary, adversarial_set, save_adversarial, save_examples, save_heatmaps, summarize
from .run import Run, local, progress
from .target import preflight

RECORDS = "records.jsonl"
TIME_LIMIT = "time_limit"  # the one setting a resume may change (raise): see _allow_longer_limit
RUN_FILE = "run.json"
MODEL_FILE, TRAINING_FILE = "model.pt", "model_training.pt"  # a model the caller trains in ``out``, and its progress
OUTPUT_FILES = ("summary.json", RECORDS, RUN_FILE, "adversarial.pt", "examples.png", "heatmaps.png", MODEL_FILE,
                TRAINING_FILE)
_PART = re.compile(r"^records\.rank-(\d+)\.jsonl$")

ModelSource = nn.Module | Callable[[], nn.Module]
log = logging.getLogger("advgen")


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
               overwrite: bool = False, max_examples: int = 64, run: Run | None = None,
               reads: Sequence[str | Path] = ()) -> AttackSummary:
    """Attack ``data`` images ``indices`` (all when None) with ``method``; write ``out``; return the summary.

    ``model`` is an ``nn.Module``, or a zero-argument callable returning one that is called once the output
    directory is ready: on rank 0 first, then on the other ranks, so it can train the model and cache it in
    ``out/model.pt`` on rank 0 while the others load that file. Every rank must end up with identical
    weights (checked by digest). ``config`` holds the settings ``run.json`` records and a ``resume`` must
    match, beside the model's and data's digests, the seed and advgen's version (default: method, data
    name, image count and the options). The one exception is the time limit (``options.params["time_limit"]``),
    recorded beside them: a resume may raise or lift it, and then searches the images the old limit left
    unsettled again. ``target``: a targeted attack towards that class (no chosen image
    may have it as label). ``overwrite`` replaces earlier outputs; without it or ``resume`` a non-empty
    ``out`` is refused, and ``reads`` (files ``model`` loads, e.g. its checkpoint) are never deleted by it.
    ``max_examples``: exact-method adversarial images kept per image.

    ``run`` (from :func:`advgen.run.start`) splits the work over torchrun ranks: images go to ranks in
    whole units of the method (see :class:`~advgen.methods.Method`), each rank appends records to its own
    file as images finish, and rank 0 alone prepares ``out``, merges the records and writes every output.
    The result does not depend on the number of ranks, before or after a resume. ``options.device``
    defaults to the run's device.
    """
    if not isinstance(data, Dataset):
        raise InputError(f"data must be an advgen.data.Dataset (advgen.data.load(...), or "
                         f"Dataset(images, labels, name)), got {type(data).__name__}")
    if not isinstance(model, nn.Module) and not callable(model):
        raise InputError(f"model must be an nn.Module or a function returning one, got {type(model).__name__}")
    spec = get_method(method)
    run = run or local(options.device if options is not None else "auto")
    out = Path(out)
    opts = options or AttackOptions(levels=data.levels)
    opts = dataclasses.replace(opts, device=run.device, seed=run.seed if opts.seed is None else opts.seed)
    check_params(method, opts.params)
    if opts.levels != data.levels:
        raise InputError(f"options.levels ({opts.levels}) must match the data's levels ({data.levels})")
    if target is not None and not spec.targeted:
        raise InputError(f"method {method!r} does not support --target")
    idx = _check_indices(indices, len(data))
    chosen = data.subset(idx)
    validate_targets(target, chosen.labels, data.num_classes)
    if config is None:
        config = {"method": method, "data": data.name, "images": len(idx), "mode": opts.mode, "target": target,
                  "bounds": opts.bounds, "levels": data.levels,
                  "params": {k: v for k, v in opts.params.items() if k != TIME_LIMIT}}

    with run.main() as shared:
        if run.is_main:
            existed = out.exists()
            resume_mod.prepare_dir(out, [*OUTPUT_FILES, *(p.name for p in part_files(out))], resume, overwrite,
                                   (RUN_FILE, TRAINING_FILE), reads=[Path(p) for p in reads])
            shared.value = existed, resume_mod.contents(out)
    existed, before = shared.value
    try:
        return _attack(model, chosen, idx, out, spec, opts, config, target, max_examples, run)
    except Exception:  # not KeyboardInterrupt: an interrupted run keeps its run.json and model.pt to --resume
        if run.is_main:  # a claim and a cached model, with no record yet, go
            resume_mod.forget(out, before, existed, (RUN_FILE, MODEL_FILE))
        raise


def _attack(model: ModelSource, chosen: Dataset, idx: list[int], out: Path, spec: Method, opts: AttackOptions,
            config: dict, target: int | None, max_examples: int, run: Run) -> AttackSummary:
    """:func:`run_attack` once ``out`` is ready: build the model, claim ``out``, attack, and write the outputs."""
    method = spec.name
    net = model if isinstance(model, nn.Module) else None
    if net is None:  # rank 0 first: it may train the model and cache it where the others then read it
        with run.main():
            if run.is_main:
                net = model()
        if not run.is_main:
            net = model()
    output_classes(net, chosen.images, chosen.labels)  # a model that does not fit the data stops here
    if method != "onepixel" and run.is_main:  # the exact search refuses a random model and reads only the argmax
        preflight(net, chosen.images, method)
    wanted = resume_mod.fingerprint({**config, TIME_LIMIT: opts.params.get(TIME_LIMIT)}, model=net, data=chosen,
                                    seed=opts.seed)
    with run.main() as shared:
        if run.is_main:
            _allow_longer_limit(out, wanted, opts.mode)
            resume_mod.claim(out / RUN_FILE, wanted, str(out))
            shared.value = {int(r["index"]) for r in merge_records(out)}
    done = shared.value
    _check_shared(out, wanted, run)

    positions = list(range(len(idx)))
    units = [positions[s:s + spec.unit] for s in range(0, len(positions), spec.unit)]
    todo = [u for u in run.shard(units) if any(idx[p] not in done for p in u)]
    calls = [[p for u in todo for p in u]] if spec.unit == 1 else todo  # whole units keep results exact
    total = sum(map(len, calls))
    bar = progress(range(total), desc=f"attack {method}", total=total, unit="img")
    ticks = iter(bar)
    part = records_file(out, run.rank)

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
    run.barrier()  # every rank's records are on disk
    with run.main() as shared:
        if run.is_main:
            shared.value = _finish(out, method, opts, target, chosen, idx, max_examples)
    return shared.value


def _allow_longer_limit(out: Path, wanted: dict, mode: str) -> None:
    """Let a resume raise the time limit, or lift it: the images the earlier limit left unsettled are searched
    again, and every other record stays.

    An image's answer does not depend on the limit once the search settled it (certified, misclassified, every
    flip listed, or, in mode ``first``, a flip found), so only ``timeout`` records and cut-short flip lists are
    dropped. The records go first, then ``run.json`` takes the new limit: a kill in between leaves a run that
    either limit resumes. A shorter limit is refused: the records kept would be more than that limit gives.
    """
    path = out / RUN_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # no earlier run, or one the claim reports
    old, new = saved.get(TIME_LIMIT), wanted[TIME_LIMIT]
    if old == new or resume_mod.differences({**saved, TIME_LIMIT: new}, wanted):
        return  # nothing to do, or other settings differ too: the claim names them all
    if new is not None and (old is None or new < old):
        raise InputError(f"{out} was made with time limit {'none' if old is None else f'{old:g} s'}; a resume may "
                         f"raise the limit or lift it, not lower it to {new:g} s (--overwrite to start again)")
    records = merge_records(out)
    kept = [r for r in records if settled(r, mode)]
    atomic_write_text(out / RECORDS, "".join(json.dumps(r) + "\n" for r in kept))
    atomic_write_json(path, wanted)
    log.info(f"--resume under a longer time limit ({old:g} s -> {'none' if new is None else f'{new:g} s'}): "
             f"searching the {len(records) - len(kept)} unsettled image(s) again")


def settled(record: dict, mode: str = "full") -> bool:
    """Whether a record is an image's final answer, whatever the time limit (see :func:`_allow_longer_limit`)."""
    if record["status"] == Status.TIMEOUT:
        return False
    cut_short = record["status"] == Status.VULNERABLE and not (record.get("exact") or {}).get("exhaustive", True)
    return not (cut_short and mode == "full")


def statuses(out: str | Path) -> dict[int, Status]:
    """Each attacked image's :class:`~advgen.methods.Status` in a finished run's ``out``, by image index."""
    return {int(r["index"]): Status(r["status"]) for r in read_jsonl(Path(out) / RECORDS)}


def _check_indices(indices: Sequence[int] | torch.Tensor | None, n: int) -> list[int]:
    """Image indices as a list of distinct ints in ``0..n-1``."""
    idx = list(range(n)) if indices is None else [int(i) for i in torch.as_tensor(indices).reshape(-1).tolist()]
    if any(not 0 <= i < n for i in idx):
        raise InputError(f"image indices must lie in 0..{n - 1}")
    if len(set(idx)) != len(idx):
        raise InputError("image indices must be distinct")
    return idx


def _check_shared(out: Path, wanted: dict, run: Run) -> None:
    """Every rank must see rank 0's ``run.json`` and hold the same weights: records only meet through ``out``."""
    if run.size == 1:
        return
    try:
        seen = json.loads((out / RUN_FILE).read_text()) == wanted
    except (OSError, ValueError):
        seen = False
    blind = [r for r, ok in enumerate(run.gather(seen)) if not ok]
    if blind:
        raise InputError(f"rank(s) {', '.join(map(str, blind))} do not see {out / RUN_FILE} that rank 0 wrote "
                         f"with the same model; put --out on a filesystem every node shares, and give a "
                         f"--checkpoint every node can read")


def _finish(out: Path, method: str, opts: AttackOptions, target: int | None, chosen: Dataset,
            idx: list[int], max_examples: int) -> AttackSummary:
    """Merge the records and rebuild every output from them, so any run of the same settings ends alike."""
    images = {i: chosen.images[k] for k, i in enumerate(idx)}
    records = [AttackRecord.from_record(rec, images[int(rec["index"])], chosen.levels)
               for rec in merge_records(out) if int(rec["index"]) in images]
    summary = summarize(records, method, opts.seed, opts.mode, target, chosen.levels, chosen.name,
                        opts.params.get(TIME_LIMIT))
    atomic_write_json(out / "summary.json", summary.to_dict())
    save_adversarial(out / "adversarial.pt", adversarial_set(records, images, chosen.levels, max_examples), method)
    save_examples(out / "examples.png", records)
    save_heatmaps(out / "heatmaps.png", records, images)
    return summary
