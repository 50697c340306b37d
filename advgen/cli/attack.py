"""`advgen attack`: parse options, load the data and the model, and hand over to :func:`advgen.run_attack`.

Under ``torchrun`` every rank runs this same command; :func:`advgen.distributed.session` joins them and
rank 0 alone loads data first, trains a missing model, and prints the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch
from torch import nn

from .. import data as datasets
from .. import distributed
from ..attack_run import run_attack
from ..errors import InputError
from ..methods import METHODS, AttackOptions, get_method
from ..runtime import resolve_device, seed_everything
from .model_source import checkpoint_or_train
from .options import common, data_option, model_options, overwrite_option


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
    dev = resolve_device(device)
    with distributed.session(dev) as world:
        dev = distributed.device_for_rank(dev)
        quiet = quiet or not world.is_main
        test = world.main_first(lambda: datasets.load(data_source, "test"))  # one download, then the cache
        if target is not None and not 0 <= target < test.num_classes:
            raise InputError(f"--target must be a class in 0..{test.num_classes - 1}, got {target}")
        indices = torch.arange(len(test)) if target is None else torch.nonzero(test.labels != target).flatten()
        indices = indices[:limit]
        config = {"method": method, "data": data_source, "limit": limit, "model": arch,
                  "checkpoint": str(checkpoint), "mode": mode, "target": target, "bounds": not no_bounds,
                  "levels": test.levels, "seed": seed}

        def load_model() -> nn.Module:
            seed_everything(seed)
            ckpt = checkpoint_or_train(checkpoint, arch, data_source, seed, str(dev), quiet,
                                       cache=out / "model.pt" if checkpoint is None else None)
            if tuple(ckpt.input_shape or test.input_shape) != test.input_shape:
                raise InputError(f"the model expects images of shape {tuple(ckpt.input_shape)}, "
                                 f"but {data_source} has {test.input_shape}")
            return ckpt.model

        opts = AttackOptions(levels=test.levels, mode=mode, bounds=not no_bounds, batch_size=batch_size,
                             device=dev, seed=seed)
        summary = run_attack(load_model, test, indices, out, method=method, options=opts, config=config,
                             target=target, resume=resume, overwrite=overwrite, max_examples=max_examples,
                             quiet=quiet, world=world)
    if world.is_main:
        _report(summary, method, out, quiet)


def _report(summary: dict, method: str, out: Path, quiet: bool) -> None:
    """One JSON line of counts with --quiet, otherwise one sentence."""
    shown = {k: summary[k] for k in ("images", "certified", "vulnerable", "robust", "misclassified",
                                     "robust_accuracy", "seconds")}
    click.echo(json.dumps(shown) if quiet else
               f"{method}: {summary['images']} images: {summary['certified']} certified, {summary['vulnerable']} "
               f"vulnerable, {summary['robust']} robust (not proven), {summary['misclassified']} misclassified; "
               f"robust accuracy {summary['robust_accuracy']:.3f}; {summary['seconds']:.1f}s; wrote {out}")
