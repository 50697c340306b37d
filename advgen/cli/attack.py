"""`advgen attack`: parse options, load the data and the model, and hand over to :func:`advgen.run_attack`.

Under ``torchrun`` every rank runs this same command; :func:`advgen.run.start` joins them and rank 0
alone downloads the data first, trains a missing model, and prints the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch

from .. import data as datasets
from ..attack_run import MODEL_FILE, TRAINING_FILE, run_attack
from ..errors import InputError
from ..methods import METHODS, AttackOptions, check_params
from ..outputs import AttackSummary
from ..run import start
from ..target import load_target
from .options import common, data_option, model_options, overwrite_option, params_option


@click.command()
@click.option("--method", default="onepixel", show_default=True, metavar="NAME",
              help=f"Attack method: {', '.join(METHODS)}.")
@data_option
@click.option("--limit", type=click.IntRange(1, None), default=100, show_default=True,
              help="Attack the first N test images (with --target, the first N not of that class).")
@model_options
@click.option("--mode", type=click.Choice(["full", "first"]), default="full", show_default=True,
              help="onepixel: list every flip (full) or stop at the first per image.")
@click.option("--target", type=int, default=None, metavar="CLASS",
              help="Targeted attack towards CLASS (images of that class are skipped).")
@click.option("--no-bounds", is_flag=True, help="onepixel: skip interval pruning; evaluate every candidate.")
@click.option("--joint-channels", is_flag=True,
              help="onepixel: a pixel is a location with all its channels (a colour, as in torchattacks' "
                   "OnePixel): search every colour of the level grid there, not one channel at a time.")
@click.option("--time-limit", type=click.FloatRange(0, None, min_open=True), default=None, metavar="SECONDS",
              help="onepixel: give up an image after SECONDS of search; an image left undecided is recorded "
                   "as 'timeout', nothing proved; --resume with a longer limit searches those again. "
                   "[default: no limit: every image gets its exact answer]")
@params_option
@click.option("--batch-size", type=click.IntRange(1, None), default=None,
              help="Candidates per forward pass [default: 512 on CPU, 16384 on CUDA].")
@click.option("--max-examples", type=click.IntRange(1, None), default=64, show_default=True,
              help="onepixel: adversarial images kept per vulnerable image (smallest changes first).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/attack"),
              show_default=True, help="Output directory.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out, skipping recorded images.")
@overwrite_option
@common
def attack(method: str, data_source: str, limit: int, arch: str | None, checkpoint: Path | None, mode: str,
           target: int | None, no_bounds: bool, joint_channels: bool, time_limit: float | None,
           params: dict[str, Any], batch_size: int | None, max_examples: int,
           out: Path, resume: bool, overwrite: bool, seed: int, device: str, quiet: bool) -> None:
    """Attack test images and report which are fooled (exactly, for the default one-pixel method)."""
    for flag, given in (("--joint-channels", joint_channels), ("--time-limit", time_limit is not None)):
        if given and method != "onepixel":
            raise InputError(f"{flag} applies to the onepixel method only, not {method!r}")
    flags = {**({"joint_channels": True} if joint_channels else {}),
             **({"time_limit": time_limit} if time_limit is not None else {})}
    twice = sorted(set(flags) & set(params))
    if twice:
        raise InputError(f"--param {twice[0]} and --{twice[0].replace('_', '-')} both given; give one")
    params = {**flags, **params}
    check_params(method, params)  # before any data or model is loaded
    with start(device, seed, out, quiet) as run:
        with run.main():
            if run.is_main:
                datasets.load(data_source, "test")  # one download, then every rank reads the cache
        test = datasets.load(data_source, "test")
        indices = torch.arange(len(test)) if target is None else torch.nonzero(test.labels != target).flatten()
        # the checkpoint enters through the model's digest, so the same weights resume from any path to them
        config = {"method": method, "data": data_source, "limit": limit, "model": arch, "mode": mode,
                  "target": target, "bounds": not no_bounds, "levels": test.levels, **params}
        cache, state = (out / MODEL_FILE, out / TRAINING_FILE) if checkpoint is None else (None, None)

        def target_model() -> torch.nn.Module:
            return load_target(run, test, checkpoint, arch, data_source, cache, state=state).model

        summary = run_attack(target_model, test, indices[:limit], out, method=method,
                             options=AttackOptions(levels=test.levels, mode=mode, bounds=not no_bounds,
                                                   batch_size=batch_size, seed=seed, params=params),
                             config=config, target=target, resume=resume, overwrite=overwrite,
                             max_examples=max_examples, run=run, reads=[checkpoint] if checkpoint else [])
        if run.is_main:
            _report(summary, out, quiet)


def _report(s: AttackSummary, out: Path, quiet: bool) -> None:
    """One JSON line of counts with --quiet, otherwise one sentence."""
    shown = {k: getattr(s, k) for k in ("images", "certified", "vulnerable", "robust", "misclassified", "timeout",
                                        "robust_accuracy", "robust_accuracy_ci95", "seconds")}
    click.echo(json.dumps(shown) if quiet else
               f"{s.method}: {s.images} images: {s.certified} certified, {s.vulnerable} vulnerable, {s.robust} "
               f"robust (not proven), {s.misclassified} misclassified"
               f"{f', {s.timeout} timed out (nothing proved)' if s.timeout else ''}; "
               f"robust accuracy {s.robust_accuracy:.3f} [{s.robust_accuracy_ci95[0]:.3f}, "
               f"{s.robust_accuracy_ci95[1]:.3f}]; "
               f"{s.seconds:.1f}s; wrote {out}")
