"""`advgen train`: fit the target classifier and save a checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from .. import data as datasets
from ..errors import InputError
from ..models import ARCHITECTURES, save_checkpoint
from ..resume import refuse_resume_and_overwrite
from ..run import start
from ..train import TrainConfig, train_classifier
from .options import common, data_option, overwrite_option, refuse_clobber


@click.command()
@data_option
@click.option("--model", "arch", default="cnn", show_default=True, metavar="NAME|MODULE:FACTORY",
              help=f"Architecture to train: {', '.join(ARCHITECTURES)} or package.module:factory.")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=TrainConfig.epochs, show_default=True,
              help="Passes over the training data.")
@click.option("--batch-size", type=click.IntRange(1, 65_536), default=TrainConfig.batch_size, show_default=True,
              help="Images per optimiser step.")
@click.option("--lr", type=click.FloatRange(0, 10, min_open=True), default=TrainConfig.lr, show_default=True,
              help="Peak learning rate of Adam's one-cycle schedule.")
@click.option("--extra-data", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              help="More labelled training data (.npz/.pt), e.g. from `advgen augment`. Repeatable.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("checkpoints/model.pt"),
              show_default=True, help="Where to write the checkpoint.")
@click.option("--resume", is_flag=True,
              help="Continue a killed training of --out from its state (OUT.state, saved after every epoch).")
@overwrite_option
@common
def train(data_source: str, arch: str, epochs: int, batch_size: int, lr: float, extra_data: tuple[Path, ...],
          out: Path, resume: bool, overwrite: bool, seed: int, device: str, quiet: bool) -> None:
    """Train the target classifier and print its test accuracy."""
    state = out.with_name(out.name + ".state")
    refuse_resume_and_overwrite(resume, overwrite)
    refuse_clobber(out, overwrite)
    if state.exists() and not (resume or overwrite):
        raise InputError(f"{state} holds a killed training of {out}; pass --resume to continue it or --overwrite "
                         f"to start again")
    if overwrite:
        state.unlink(missing_ok=True)
    train_set = datasets.load(data_source, "train")
    test_set = datasets.load(data_source, "test") if data_source in (datasets.EMBEDDED, *datasets.TORCHVISION) else None
    extra = [datasets.load_file(p) for p in extra_data]
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    with start(device, seed, quiet=quiet) as run:
        ckpt = train_classifier(train_set, test_set, arch, config, device=run.device, extra=extra, state=state)
    save_checkpoint(out, ckpt)
    state.unlink(missing_ok=True)
    acc = ckpt.meta.get("test_accuracy")
    shown = f"test accuracy {acc:.4f}" if acc is not None else "no test split"
    click.echo(f"{arch} trained on {ckpt.meta['train_images']} images in {ckpt.meta['train_seconds']:.1f}s; "
               f"{shown}; saved {out}")
