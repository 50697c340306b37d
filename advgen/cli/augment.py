"""`advgen augment`: train (or load) a GAN and write generated, labelled data that hardens the target.

``--gan advgan`` writes adversarial versions of training images with their true labels (adversarial
training data) and reports the attack success rate; ``--gan cgan`` writes class-balanced generated
images and reports GAN-test and GAN-train. Both write into ``--out``:

* ``generator.pt`` -- the generator checkpoint (``advgen augment --generator`` reads it back);
* ``samples.pt`` -- the samples as a dataset file for ``advgen train --extra-data``;
* ``samples.png`` -- a picture grid of the first 100 samples;
* ``summary.json`` -- the figures, seconds and seed;
* ``state/`` -- per-epoch training state, so ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from .. import data as datasets
from ..errors import InputError
from ..files import atomic_write_json, check_writable_dir
from ..gan import (AdvGANConfig, CGANConfig, adversarial_dataset, attack_success_rate, gan_test, gan_train,
                   load_generator, sample, save_generator, train_advgan, train_cgan)
from ..gan.state import state_path
from ..models import Checkpoint
from ..runtime import resolve_device
from ..train import accuracy
from .model_source import checkpoint_or_train
from .options import common, data_option, model_options, overwrite_option, refuse_clobber

SCHEMA_VERSION = 1
OUTPUTS = ("generator.pt", "samples.pt", "samples.png", "summary.json")


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
    start = time.perf_counter()
    if kind == "cgan" and eps is not None:
        raise InputError("--eps applies to --gan advgan only")
    if generator_path is not None and (resume or epochs is not None or eps is not None):
        raise InputError("--generator loads a trained generator; it cannot be combined with --resume, "
                         "--epochs or --eps")
    for name in OUTPUTS:
        refuse_clobber(out / name, overwrite)
    dev = resolve_device(device)
    check_writable_dir(out)
    state_dir = out / "state"
    if state_path(state_dir, kind).exists() and not resume and generator_path is None:
        if not overwrite:
            raise InputError(f"{state_path(state_dir, kind)} holds the training state of an earlier run; "
                             f"pass --resume to continue it or --overwrite to start over")
        state_path(state_dir, kind).unlink()

    loaded = load_generator(generator_path, kind=kind).to(dev) if generator_path is not None else None
    train_set = datasets.load(data_source, "train")
    named = data_source in (datasets.EMBEDDED, *datasets.TORCHVISION)
    eval_set = datasets.load(data_source, "test") if named else train_set
    target = _target(arch, checkpoint, data_source, train_set, seed, dev, quiet)
    summary: dict = {"schema_version": SCHEMA_VERSION, "command": "augment", "gan": kind, "data": data_source,
                     "seed": seed, "eval_split": "test" if named else "train",
                     "target": {"arch": target.arch, "checkpoint": str(checkpoint) if checkpoint else None,
                                "clean_accuracy": round(accuracy(target.model, eval_set), 5)}}

    if loaded is not None:
        model = loaded
        if tuple(model.input_shape) != train_set.input_shape:
            raise InputError(f"generator {generator_path} makes images shaped {tuple(model.input_shape)}, "
                             f"but the data has {train_set.input_shape}")
        summary["generator_loaded_from"] = str(generator_path)
    elif kind == "advgan":
        config = AdvGANConfig(seed=seed, **_given(epochs=epochs, eps=eps))
        model = train_advgan(target.model, train_set, config, device=str(dev), quiet=quiet, state_dir=state_dir)
    else:
        config = CGANConfig(seed=seed, **_given(epochs=epochs))
        model = train_cgan(train_set, config, device=str(dev), quiet=quiet, state_dir=state_dir)
    summary["generator_train_seconds"] = model.metrics.get("train_seconds") if generator_path is None else None
    summary["epochs"] = model.config.epochs
    summary["config"] = dict(vars(model.config))

    if kind == "advgan":
        samples = adversarial_dataset(model, train_set, num_samples, seed=seed)
        summary["eps"] = model.config.eps
        summary["success_rate"] = round(attack_success_rate(target.model, model, eval_set), 5)
        shown = f"attack success rate {summary['success_rate']:.4f} at eps {model.config.eps:g}"
    else:
        samples = sample(model, num_samples, seed=seed)
        summary["gan_test"] = round(gan_test(target.model, model, max(num_samples, 1000), seed=seed), 5)
        trained = gan_train(model, eval_set, num_samples, seed=seed, device=str(dev), quiet=quiet)
        summary["gan_train"] = round(trained, 5)
        shown = f"GAN-test {summary['gan_test']:.4f}, GAN-train {summary['gan_train']:.4f}"
    summary["num_samples"] = len(samples)

    _write(out, model, samples, summary, start)
    click.echo(f"{kind}: {shown} ({summary['eval_split']} split); wrote {len(samples)} samples to "
               f"{out / 'samples.pt'} in {summary['seconds']:.1f}s")


def _given(**values) -> dict:
    """Only the options the user set, so unset ones keep the config's defaults."""
    return {k: v for k, v in values.items() if v is not None}


def _target(arch: str | None, checkpoint: Path | None, data_source: str, train_set: datasets.Dataset, seed: int,
            dev: torch.device, quiet: bool) -> Checkpoint:
    """The classifier to attack or judge with: from --checkpoint, or trained now with default settings."""
    ckpt = checkpoint_or_train(checkpoint, arch, data_source, seed, str(dev), quiet)
    if ckpt.input_shape and tuple(ckpt.input_shape) != train_set.input_shape:
        raise InputError(f"the target expects images shaped {tuple(ckpt.input_shape)}, "
                         f"but the data has {train_set.input_shape}")
    ckpt.model.to(dev).eval()
    return ckpt


def _write(out: Path, model, samples: datasets.Dataset, summary: dict, start: float) -> None:
    from torchvision.utils import save_image

    save_generator(out / "generator.pt", model)
    datasets.save_file(out / "samples.pt", samples)
    save_image(samples.images[:100], out / "samples.png", nrow=10, padding=2)
    summary["outputs"] = {name: str(out / name) for name in OUTPUTS}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    atomic_write_json(out / "summary.json", summary)
