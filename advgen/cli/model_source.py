"""The model a command attacks: a checkpoint when given, otherwise the default model trained on the spot."""

from __future__ import annotations

from pathlib import Path

import click

from .. import data as datasets
from ..models import ARCHITECTURES, DEFAULT_ARCH, Checkpoint, build, load_checkpoint, save_checkpoint
from ..train import TrainConfig, train_classifier


def checkpoint_or_train(checkpoint: Path | None, arch: str | None, data_source: str, seed: int, device: str,
                        quiet: bool, cache: Path | None = None) -> Checkpoint:
    """Load ``checkpoint``; without one, train ``arch`` (default cnn) with `advgen train` defaults.

    Training is announced on stderr. ``cache`` (e.g. ``out/model.pt``) keeps the trained model so a
    resumed run attacks the very same weights.
    """
    if checkpoint is not None:
        return load_checkpoint(checkpoint, factory=arch if arch and arch not in ARCHITECTURES else None)
    if cache is not None and cache.is_file():
        return load_checkpoint(cache)
    arch = arch or DEFAULT_ARCH
    train = datasets.load(data_source, "train")
    build(arch, train.input_shape, train.num_classes)  # a bad name fails before the announcement
    if not quiet:
        click.echo(f"advgen: no --checkpoint given; training a {arch} on {data_source} (train split) "
                   f"with `advgen train` defaults, seed {seed}", err=True)
    ckpt = train_classifier(train, None, arch, TrainConfig(seed=seed), device=device, quiet=quiet)
    ckpt.model.eval()
    if cache is not None:
        save_checkpoint(cache, ckpt)
    return ckpt
