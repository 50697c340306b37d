"""`advgen attack`: run an attack method over test images; write records, a summary, examples, heatmaps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import torch

from .. import data as datasets
from ..errors import InputError
from ..files import append_jsonl, check_writable_dir, read_jsonl
from ..methods import METHODS, AttackOptions, AttackRecord, get_method, run_method
from ..outputs import adversarial_set, save_adversarial, save_examples, save_heatmaps, summarize, write_summary
from ..runtime import progress, resolve_device, seed_everything
from .model_source import checkpoint_or_train
from .options import common, data_option, model_options, overwrite_option

OUTPUT_FILES = ("summary.json", "records.jsonl", "run.json", "adversarial.pt", "examples.png", "heatmaps.png",
                "model.pt")


@click.command()
@click.option("--method", default="onepixel", show_default=True, metavar="NAME",
              help=f"Attack method: {', '.join(METHODS)}.")
@data_option
@click.option("--limit", type=click.IntRange(1, None), default=100, show_default=True,
              help="Attack the first N test images.")
@model_options
@click.option("--mode", type=click.Choice(["full", "first"]), default="full", show_default=True,
              help="onepixel: list every flip (full) or stop at the first per image.")
@click.option("--target", type=int, default=None, metavar="CLASS",
              help="Targeted attack towards CLASS (images of that class are skipped).")
@click.option("--no-bounds", is_flag=True, help="onepixel: skip interval pruning; evaluate every candidate.")
@click.option("--batch-size", type=click.IntRange(1, None), default=None,
              help="Candidates per forward pass [default: 1024 on CPU, 16384 on CUDA].")
@click.option("--max-examples", type=click.IntRange(1, None), default=64, show_default=True,
              help="onepixel: adversarial images kept per vulnerable image (smallest changes first).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/attack"),
              show_default=True, help="Output directory.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out, skipping recorded images.")
@overwrite_option
@common
def attack(method: str, data_source: str, limit: int, arch: str | None, checkpoint: Path | None, mode: str,
           target: int | None, no_bounds: bool, batch_size: int | None, max_examples: int, out: Path,
           resume: bool, overwrite: bool, seed: int, device: str, quiet: bool) -> None:
    """Attack test images and report which are fooled (exactly, for the default one-pixel method)."""
    spec = get_method(method)
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other; pick one")
    if target is not None and not spec.targeted:
        raise InputError(f"method {method!r} does not support --target")
    resolve_device(device)
    test = datasets.load(data_source, "test")
    if target is not None and not 0 <= target < test.num_classes:
        raise InputError(f"--target must be a class in 0..{test.num_classes - 1}, got {target}")
    indices = torch.arange(len(test)) if target is None else torch.nonzero(test.labels != target).flatten()
    indices = indices[:limit]
    chosen = test.subset(indices)
    config = {"method": method, "data": data_source, "limit": limit, "model": arch, "checkpoint": str(checkpoint),
              "mode": mode, "target": target, "bounds": not no_bounds, "levels": test.levels, "seed": seed}
    done = _prepare_out(out, config, resume, overwrite)

    seed_everything(seed)
    ckpt = checkpoint_or_train(checkpoint, arch, data_source, seed, device, quiet,
                               cache=out / "model.pt" if checkpoint is None else None)
    if tuple(ckpt.input_shape or chosen.input_shape) != chosen.input_shape:
        raise InputError(f"the model expects images of shape {tuple(ckpt.input_shape)}, "
                         f"but {data_source} has {chosen.input_shape}")
    todo = [k for k, i in enumerate(indices.tolist()) if i not in done]
    opts = AttackOptions(levels=test.levels, mode=mode, bounds=not no_bounds, batch_size=batch_size,
                         device=device, seed=seed)
    bar = progress(range(len(todo)), desc=f"attack {method}", total=len(todo), quiet=quiet, unit="img")
    bar_iter = iter(bar)

    def emit(recs: list[AttackRecord]) -> None:
        append_jsonl(out / "records.jsonl", [r.to_record() for r in recs])
        for _ in recs:
            next(bar_iter, None)

    if todo:
        pick = torch.tensor(todo)
        targets = None if target is None else torch.full((len(todo),), target, dtype=torch.long)
        run_method(method, ckpt.model, chosen.images[pick], chosen.labels[pick], targets,
                   indices[pick].tolist(), opts, emit)
    if hasattr(bar, "close"):
        bar.close()
    _finish(out, method, seed, config, chosen, indices, max_examples, quiet)


def _prepare_out(out: Path, config: dict, resume: bool, overwrite: bool) -> set[int]:
    """Refuse, clear, or resume the output directory; returns the image indices already recorded."""
    existing = out.exists() and any(out.iterdir())
    if existing and not (resume or overwrite):
        raise InputError(f"{out} already holds results; pass --resume to continue or --overwrite to replace")
    if existing and overwrite:
        for name in OUTPUT_FILES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
    check_writable_dir(out)
    run_file = out / "run.json"
    if resume and run_file.exists():
        before = json.loads(run_file.read_text())
        if before != config:
            changed = sorted(k for k in config if before.get(k) != config[k])
            raise InputError(f"{out} was made with different settings ({', '.join(changed)}); "
                             f"use the same options to --resume, or --overwrite")
    elif not run_file.exists():
        from ..files import atomic_write_json

        atomic_write_json(run_file, config)
    return {int(r["index"]) for r in read_jsonl(out / "records.jsonl")}


def _finish(out: Path, method: str, seed: int, config: dict, chosen: datasets.Dataset, indices: torch.Tensor,
            max_examples: int, quiet: bool) -> None:
    """Rebuild every output from records.jsonl, so a resumed run ends exactly like an uninterrupted one."""
    images = {int(i): chosen.images[k] for k, i in enumerate(indices.tolist())}
    by_index: dict[int, AttackRecord] = {}
    for rec in read_jsonl(out / "records.jsonl"):
        if int(rec["index"]) in images:
            by_index[int(rec["index"])] = AttackRecord.from_record(rec, images[int(rec["index"])], chosen.levels)
    records = [by_index[i] for i in sorted(by_index)]
    summary = summarize(records, method, seed, {"mode": config["mode"], "target": config["target"],
                                                 "levels": chosen.levels, "data": config["data"]})
    write_summary(out / "summary.json", summary)
    save_adversarial(out / "adversarial.pt", adversarial_set(records, images, chosen.levels, max_examples), method)
    save_examples(out / "examples.png", records)
    save_heatmaps(out / "heatmaps.png", records, images)
    shown = {k: summary[k] for k in ("images", "certified", "vulnerable", "robust", "misclassified",
                                     "robust_accuracy", "seconds")}
    click.echo(json.dumps(shown) if quiet else
               f"{method}: {summary['images']} images: {summary['certified']} certified, {summary['vulnerable']} "
               f"vulnerable, {summary['robust']} robust (not proven), {summary['misclassified']} misclassified; "
               f"robust accuracy {summary['robust_accuracy']:.3f}; {summary['seconds']:.1f}s; wrote {out}")
