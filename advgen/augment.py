"""`advgen augment` as a function: train (or load) a GAN and write generated, labelled training data.

``kind="advgan"`` writes adversarial versions of training images with their true labels (adversarial
training data) and measures the attack success rate; ``kind="cgan"`` writes class-balanced generated
images and measures GAN-test and GAN-train. Both write into ``out``:

* ``generator.pt`` -- the generator checkpoint (``generator=`` reads it back);
* ``samples.pt`` -- the samples as a dataset file for ``advgen train --extra-data``, on the data's level
  grid (8-bit for MNIST), so ``advgen attack --data`` can search them exactly too;
* ``samples.png`` -- a picture grid of the first 100 samples;
* ``summary.json`` -- the figures, seconds and seed;
* ``state/`` -- per-epoch training state with its fingerprint, so ``resume`` continues an interrupted
  run (and refuses one made under other settings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from . import data as datasets
from .errors import InputError
from .files import atomic_write_json
from .gan import (AdvGANConfig, CGANConfig, adversarial_dataset, attack_success_rate, gan_test, gan_train,
                  load_generator, sample, save_generator, train_advgan, train_cgan)
from .pictures import save_grid
from .resume import claim, file_sha256, fingerprint, forgotten_if_failed, prepare_dir
from .run import Run, local
from .target import check_in_memory, load_target, model_target
from .train import accuracy

SCHEMA_VERSION = 1
OUTPUTS = ("generator.pt", "samples.pt", "samples.png", "summary.json", "state")
KINDS = ("advgan", "cgan")


@dataclass
class AugmentResult:
    """What :func:`augment` made: the headline figure in words, the sample count and the full summary."""

    kind: str
    shown: str
    num_samples: int
    seconds: float
    eval_split: str
    summary: dict[str, Any]


def augment(kind: str, data_source: str = datasets.EMBEDDED, *, checkpoint: Path | None = None,
            arch: str | None = None, generator: Path | None = None, epochs: int | None = None,
            eps: float | None = None, num_samples: int = 4000, out: str | Path = "runs/augment",
            resume: bool = False, overwrite: bool = False, run: Run | None = None,
            model: nn.Module | None = None) -> AugmentResult:
    """Train (or load with ``generator``) a ``kind`` GAN on ``data_source`` and write samples into ``out``.

    The target classifier (AdvGAN's victim, and the judge of GAN-test) comes from ``checkpoint``, from
    ``model`` (handed over in memory; a copy is used), or is trained now with `advgen train` defaults.
    ``epochs`` and ``eps`` override the GAN's defaults.
    """
    start = time.perf_counter()
    run = run or local()
    out = Path(out)
    if kind not in KINDS:
        raise InputError(f"unknown GAN {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "cgan" and eps is not None:
        raise InputError("--eps applies to --gan advgan only")
    if generator is not None and (resume or epochs is not None or eps is not None):
        raise InputError("--generator loads a trained generator; it cannot be combined with --resume, "
                         "--epochs or --eps")
    check_in_memory(model, checkpoint)
    with forgotten_if_failed(out):
        return _augment(kind, data_source, checkpoint, model, arch, generator, epochs, eps, num_samples, out,
                        resume, overwrite, run, start)


def _augment(kind: str, data_source: str, checkpoint: Path | None, given: nn.Module | None, arch: str | None,
             generator: Path | None, epochs: int | None, eps: float | None, num_samples: int, out: Path,
             resume: bool, overwrite: bool, run: Run, start: float) -> AugmentResult:
    """:func:`augment` once its arguments are known good: claim ``out``, train or load, sample, write."""
    prepare_dir(out, OUTPUTS, resume, overwrite, "state", reads=(checkpoint, generator))
    (out / "state").mkdir(parents=True, exist_ok=True)
    # what the whole command must repeat to resume; the GAN's own state adds its config (epochs may grow)
    claim(out / "state" / "run.json", fingerprint({"gan": kind, "data": data_source, "num_samples": num_samples,
                                                   "checkpoint_sha256": file_sha256(checkpoint)}, seed=run.seed,
                      model=given),
          str(out))

    loaded = load_generator(generator, kind=kind).to(run.device) if generator is not None else None
    train_set = datasets.load(data_source, "train")
    named = data_source in (datasets.EMBEDDED, *datasets.TORCHVISION)
    eval_set = datasets.load(data_source, "test") if named else train_set
    target = (model_target(run, given, train_set) if given is not None
              else load_target(run, train_set, checkpoint, arch, data_source))
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "command": "augment", "gan": kind, "data": data_source,
        "seed": run.seed, "eval_split": "test" if named else "train",
        "target": {"arch": target.arch, "checkpoint": str(checkpoint) if checkpoint else None,
                   "clean_accuracy": round(accuracy(target.model, eval_set), 5)}}

    if loaded is not None:
        model = loaded
        if tuple(model.input_shape) != train_set.input_shape:
            raise InputError(f"generator {generator} makes images shaped {tuple(model.input_shape)}, "
                             f"but the data has {train_set.input_shape}")
        summary["generator_loaded_from"] = str(generator)
    elif kind == "advgan":
        config = AdvGANConfig(seed=run.seed, **_given(epochs=epochs, eps=eps))
        model = train_advgan(target.model, train_set, config, device=run.device, state_dir=out / "state")
    else:
        config = CGANConfig(seed=run.seed, **_given(epochs=epochs))
        model = train_cgan(train_set, config, device=run.device, state_dir=out / "state")
    summary["generator_train_seconds"] = model.metrics.get("train_seconds") if generator is None else None
    summary["epochs"] = model.config.epochs
    summary["config"] = dict(vars(model.config))

    if kind == "advgan":
        samples = adversarial_dataset(model, train_set, num_samples, seed=run.seed, grid=True)
        summary["eps"] = model.config.eps
        summary["success_rate"] = round(attack_success_rate(target.model, model, eval_set), 5)
        shown = f"attack success rate {summary['success_rate']:.4f} at eps {model.config.eps:g}"
    else:
        made = sample(model, num_samples, seed=run.seed)
        samples = replace(made, images=datasets.on_grid(made.images, train_set.levels), levels=train_set.levels)
        summary["gan_test"] = round(gan_test(target.model, model, max(num_samples, 1000), seed=run.seed), 5)
        summary["gan_train"] = round(gan_train(model, eval_set, num_samples, seed=run.seed, device=run.device), 5)
        shown = f"GAN-test {summary['gan_test']:.4f}, GAN-train {summary['gan_train']:.4f}"
    summary["num_samples"] = len(samples)

    save_generator(out / "generator.pt", model)
    datasets.save_file(out / "samples.pt", samples)
    save_grid(out / "samples.png", samples.images[:100], nrow=10)
    summary["outputs"] = {name: str(out / name) for name in OUTPUTS if name != "state"}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    atomic_write_json(out / "summary.json", summary)
    return AugmentResult(kind, shown, len(samples), summary["seconds"], summary["eval_split"], summary)


def _given(**values: Any) -> dict[str, Any]:
    """Only the options the user set, so unset ones keep the config's defaults."""
    return {k: v for k, v in values.items() if v is not None}
