"""`advgen augment`: parse options and call :func:`advgen.augment.augment` (see there for what it writes)."""

from __future__ import annotations

from pathlib import Path

import click

from ..augment import augment as run_augment
from ..gan import AdvGANConfig, CGANConfig
from ..run import start
from .options import common, data_option, model_options, overwrite_option


@click.command()
@click.option("--gan", "kind", type=click.Choice(["advgan", "cgan"]), required=True,
              help="advgan: adversarial examples against the target; cgan: class-conditional samples.")
@data_option
@model_options
@click.option("--generator", "generator_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Use this generator checkpoint instead of training one.")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=None,
              help=f"Training epochs [default: advgan {AdvGANConfig.epochs}, cgan {CGANConfig.epochs}].")
@click.option("--eps", type=click.FloatRange(0, 1, min_open=True), default=None,
              help=f"AdvGAN L-infinity bound on the perturbation [default: {AdvGANConfig.eps}].")
@click.option("--num-samples", type=click.IntRange(1, 10_000_000), default=4000, show_default=True,
              help="How many labelled samples to write.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/augment"),
              show_default=True, help="Output directory.")
@click.option("--resume", is_flag=True, help="Continue an interrupted training run from OUT/state.")
@overwrite_option
@common
def augment(kind: str, data_source: str, arch: str | None, checkpoint: Path | None, generator_path: Path | None,
            epochs: int | None, eps: float | None, num_samples: int, out: Path, resume: bool, overwrite: bool,
            seed: int, device: str, quiet: bool) -> None:
    """Train a GAN (AdvGAN or conditional) and write generated, labelled augmentation data."""
    with start(device, seed, out, quiet) as run:
        result = run_augment(kind, data_source, checkpoint=checkpoint, arch=arch, generator=generator_path,
                             epochs=epochs, eps=eps, num_samples=num_samples, out=out, resume=resume,
                             overwrite=overwrite, run=run)
    click.echo(f"{kind}: {result.shown} ({result.eval_split} split); wrote {result.num_samples} samples to "
               f"{out / 'samples.pt'} in {result.seconds:.1f}s")
