"""The classifier a command works on: a checkpoint when given, otherwise the default model trained now.

Every command that needs a target (attack, augment, bench, evaluate) gets it here, so the rules are
written once: a user factory is named by ``package.module:factory`` (:func:`~advgen.models.user_factory`),
a checkpoint must fit the data's image shape, and a model trained on the spot can be cached so that a
resumed run attacks the very same weights, and what would make the figures mean less is said before the
minutes of work (:func:`preflight`). From Python the target can also be a model object
(:func:`model_target`): a copy of it is used, so the caller's model is left as it was.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from . import data as datasets
from .data import Dataset
from .errors import InputError
from .models import (ARCHITECTURES, DEFAULT_ARCH, IN_MEMORY, PROBABILITIES, RANDOM_MODEL, Checkpoint, build,
                     check_arch, load_checkpoint, output_classes, outputs_probabilities, random_in_eval,
                     save_checkpoint, user_factory)
from .resume import model_sha256
from .run import Run
from .train import TrainConfig, train_classifier

log = logging.getLogger("advgen")


def refuse_other_model(checkpoint: Path, arch: str | None, held: str) -> None:
    """A built-in ``--model`` beside a checkpoint must name the model the checkpoint holds (``held``)."""
    if arch in ARCHITECTURES and arch != held:
        raise InputError(f"--model {arch} was given, but {checkpoint} holds a {held}; leave --model out "
                         f"to use the checkpoint's own")


def load_target(run: Run, data: Dataset, checkpoint: Path | None = None, arch: str | None = None,
                data_source: str = datasets.EMBEDDED, cache: Path | None = None, train: Dataset | None = None,
                test: Dataset | None = None, state: Path | None = None) -> Checkpoint:
    """Load ``checkpoint`` or train ``arch`` (default cnn) on ``train`` (default: ``data_source``'s train split).

    ``data`` is what the model will see: its image shape must match the model's. ``cache`` keeps a
    model trained here (e.g. ``out/model.pt``) and is read back when present; ``state`` keeps its training's
    progress after every epoch (:func:`advgen.train.fit`). ``test``, when given, is scored into the trained
    model's metadata. The model is returned in eval mode on ``run.device``. Once the model is in ``cache``, its
    training's ``state`` is removed; a cache found beside a state (a kill between the two) is not read, since
    only the state's fingerprint says which settings made it: the training resumes from the state instead.
    """
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint, factory=user_factory(check_arch(arch) if arch else None))
        refuse_other_model(checkpoint, arch, ckpt.arch)
    elif cache is not None and cache.is_file() and not (state is not None and Path(state).exists()):
        ckpt = load_checkpoint(cache, factory=user_factory(arch))  # beside a training state, the state decides
    else:
        arch = arch or DEFAULT_ARCH
        train = train if train is not None else datasets.load(data_source, "train")
        build(arch, train.input_shape, train.num_classes)  # a bad name fails before the announcement
        log.info(f"no --checkpoint given; training a {arch} on {data_source} (train split) with "
                 f"`advgen train` defaults, seed {run.seed}")
        ckpt = train_classifier(train, test, arch, TrainConfig(seed=run.seed), device=run.device, state=state)
        if cache is not None:
            save_checkpoint(cache, ckpt)
            if state is not None:
                Path(state).unlink(missing_ok=True)
    if ckpt.input_shape and tuple(ckpt.input_shape) != data.input_shape:
        raise InputError(f"the model expects images of shape {tuple(ckpt.input_shape)}, "
                         f"but {data.name} has {data.input_shape}")
    ckpt.model.to(run.device).eval()
    return ckpt


def check_in_memory(model: object, checkpoint: Path | None) -> None:
    """A target handed over in memory must be an ``nn.Module``, and cannot come beside a checkpoint; said before
    any work, since the run's fingerprint already reads its weights."""
    if model is None:
        return
    if checkpoint is not None:
        raise InputError("the target is a checkpoint or a model in memory, not both")
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def model_target(run: Run, model: nn.Module, data: Dataset) -> Checkpoint:
    """A target handed over in memory (RobustBench's ``benchmark(model, ...)``): a copy, checked against ``data``.

    The copy is what gets measured, moved and retrained, so the caller's model keeps its weights, mode and
    device. Under torchrun every rank hands over its own, and the weights must be the same on every rank.
    """
    check_in_memory(model, None)
    if run.size > 1:  # one process has no other rank to differ from, and its run fingerprint hashed the weights
        run.check_same(model_sha256(model), "the model's weights")
    target = copy.deepcopy(model).to(run.device).eval()
    classes = output_classes(target, data.images, data.labels)
    return Checkpoint(target, type(model).__qualname__ + IN_MEMORY, data.input_shape, classes)


def preflight(model: nn.Module, images: torch.Tensor, attacks: str, exact: str | None = None) -> None:
    """auto-attack's pre-flight checks on the first images, said before minutes of work rather than after.

    A model that answers one image two ways has no exact answer: when the exact search is asked for, ``exact``
    says how to measure the rest, and the model is refused; otherwise ``attacks`` (who sees one draw per step)
    are warned of. So is a model that returns probabilities, whose gradients overstate its robustness.
    """
    if random_in_eval(model, images):
        if exact is not None:
            raise InputError(f"{RANDOM_MODEL}; the exact one-pixel search needs a model that answers the same image "
                             f"the same way ({exact})")
        log.warning(f"{RANDOM_MODEL}; {attacks} sees one draw per step, so the figures overstate robustness "
                    f"(auto-attack's rand version averages gradients over draws)")
    if outputs_probabilities(model, images):
        log.warning(PROBABILITIES)
