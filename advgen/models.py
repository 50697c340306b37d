"""Classifier architectures by name, user models by ``package.module:factory``, and safe checkpoints.

Built-in models are plain ``nn.Sequential`` stacks so that the one-pixel bound propagation can walk them
layer by layer. A checkpoint records the architecture name, input shape, class count and training
metadata next to the weights and is always read with ``weights_only=True``: loading one never runs code,
and a checkpoint naming a user factory only loads when the caller names the same factory.
"""

from __future__ import annotations

import copy
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import InputError
from .files import atomic_torch_save, safe_torch_load
from .runtime import evaluating, own_random_state

CHECKPOINT_FORMAT = "advgen.checkpoint"
CHECKPOINT_VERSION = 1
DEFAULT_ARCH = "cnn"
#: How a checkpoint names a model that was handed over as an object: no name can rebuild it, only the object.
IN_MEMORY = " (in memory)"
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


def small_cnn(input_shape: tuple[int, int, int], num_classes: int, width: int = 16,
              hidden: int = 64) -> nn.Sequential:
    """The default target: two 3x3 conv blocks and a small dense head (about 1.1M MACs on 28x28)."""
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(*features, nn.Linear(_flat_size(features, input_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def wide_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """The default CNN twice as wide, with a 256-unit head (about 4x the MACs): room for L-inf robustness."""
    return small_cnn(input_shape, num_classes, width=32, hidden=256)


def mlp(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """A two-hidden-layer perceptron on flattened pixels."""
    n = int(torch.tensor(input_shape).prod())
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, num_classes))


def lenet5(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """LeCun et al. 1998, with ReLU and average pooling, padded so 28x28 inputs work."""
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(*features, nn.Linear(_flat_size(features, input_shape), 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))


ARCHITECTURES: dict[str, Callable[[tuple[int, int, int], int], nn.Module]] = {
    "cnn": small_cnn,
    "cnn-wide": wide_cnn,
    "mlp": mlp,
    "lenet5": lenet5,
}


def build(arch: str, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """A fresh, untrained model: a built-in name (``cnn``, ``cnn-wide``, ``mlp``, ``lenet5``) or ``package.module:factory``.

    A user factory is called with no arguments and must return an ``nn.Module``.
    """
    if arch in ARCHITECTURES:
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise InputError(f"input shape must be (C, H, W), got {tuple(input_shape)}")
        try:
            return ARCHITECTURES[arch](tuple(input_shape), num_classes)
        except RuntimeError as exc:
            raise InputError(f"model {arch!r} does not fit input shape {tuple(input_shape)}: "
                             f"{str(exc).splitlines()[0]}") from exc
    return _call_factory(check_arch(arch))


@torch.no_grad()
def output_classes(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> int:
    """How many classes ``model`` scores, from one image of ``images`` (on the model's device, in eval mode);
    an :class:`InputError` when the images do not fit the model, its output is not (N, classes) logits, or
    ``labels`` fall outside its classes. Called where a model meets data, so a mismatch is named there and
    not by a matrix product deep inside an attack."""
    if not isinstance(model, nn.Module):
        raise InputError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    first = next(model.parameters(), None)
    probe = images[:1] if first is None else images[:1].to(first.device)
    if probe.dtype != torch.float32 and (first is None or first.dtype == torch.float32):
        raise InputError(f"images must be float32 in [0, 1], got {probe.dtype}")
    seen = probe.clone()  # the model gets a copy: the caller's images are never written to
    try:
        with evaluating(model):
            out = model(seen)
    except RuntimeError as exc:
        raise InputError(f"images of shape {tuple(images.shape[1:])} do not fit the model: "
                         f"{str(exc).splitlines()[0][:160]}") from exc
    if not torch.allclose(seen, probe, rtol=0, atol=0, equal_nan=True):
        raise InputError("the model writes into its input (an in-place op such as x.sub_() on the images); attacks "
                         "pass the same images again, so write x = x - mean instead")
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise InputError(f"the model must return (N, classes) logits, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    k = int(out.shape[1])
    if labels is not None and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise InputError(f"labels must lie in 0..{k - 1}, the model's classes; got {int(labels.min())}.."
                         f"{int(labels.max())}")
    return k


def check_arch(arch: str) -> str:
    """``arch`` when it is a built-in name or spelled ``package.module:factory``; else an :class:`InputError`
    (so ``--model cnnn`` is named, not ignored beside a checkpoint that decides the model itself)."""
    if arch in ARCHITECTURES or _FACTORY_RE.match(arch):
        return arch
    raise InputError(f"unknown model {arch!r}; choose one of {', '.join(ARCHITECTURES)} "
                     f"or give package.module:factory")


def user_factory(arch: str | None) -> str | None:
    """``arch`` when it names user code (``package.module:factory``), else None: the one rule for that."""
    return arch if arch is not None and arch not in ARCHITECTURES and _FACTORY_RE.match(arch) else None


def _call_factory(spec: str) -> nn.Module:
    module_name, attr = spec.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import model factory {spec!r}: {exc}") from exc
    if not callable(factory):
        raise InputError(f"model factory {spec!r} is a {type(factory).__name__}, not a function or class to call")
    try:
        model = factory()
    except Exception as exc:  # the user's code: named in one line (--debug shows its traceback)
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise InputError(f"model factory {spec!r} failed when called with no arguments: "
                         f"{type(exc).__name__}{': ' + first if first else ''}") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"model factory {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def _probe(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The first 8 images on the model's device: what the pre-flight checks below show it."""
    first = next(model.parameters(), None)
    return images[:8] if first is None else images[:8].to(first.device)


RANDOM_MODEL = ("the model gives different outputs for the same images in eval mode: randomness in forward, such as "
                "F.dropout(x, p) without training=self.training (it defaults to True), input noise or random "
                "transforms")


@torch.no_grad()
def random_in_eval(model: nn.Module, images: torch.Tensor) -> bool:
    """Whether ``model`` in eval mode answers the first 8 ``images`` differently on two calls (auto-attack's
    pre-flight check for randomised defences). An exact answer, or a certificate, means nothing for such a model.
    The global random streams are restored, so checking changes no result of a deterministic model."""
    probe = _probe(model, images)
    with own_random_state(probe.device), evaluating(model):
        a, b = model(probe.clone()), model(probe.clone())
    return not torch.allclose(a, b, rtol=1e-5, atol=1e-6)


PROBABILITIES = ("the model returns probabilities (each row non-negative, summing to 1), not logits; cross-entropy on "
                 "them saturates, so gradient attacks (PGD, AutoAttack, AdvGAN) overstate its robustness: return the "
                 "logits before the softmax")


@torch.no_grad()
def outputs_probabilities(model: nn.Module, images: torch.Tensor) -> bool:
    """Whether ``model`` in eval mode answers the first 8 ``images`` with probability rows rather than logits
    (auto-attack's output check). The exact search is not affected: it reads the argmax."""
    with evaluating(model):
        out = model(_probe(model, images).clone())
    return bool(out.min() >= 0) and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-4)


@dataclass
class Checkpoint:
    """A model together with what it was built for and how it was trained."""

    model: nn.Module
    arch: str
    input_shape: tuple[int, int, int]
    num_classes: int
    meta: dict = field(default_factory=dict)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write weights plus metadata atomically; metadata must be JSON-like (str, int, float, bool, list, dict)."""
    state = {k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()}
    return atomic_torch_save(path, {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": ckpt.arch,
        "input_shape": list(ckpt.input_shape), "num_classes": int(ckpt.num_classes),
        "meta": ckpt.meta, "state_dict": state,
    })


def load_checkpoint(path: str | Path, factory: str | None = None, template: nn.Module | None = None) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`, or a bare state_dict for ``factory``.

    The file is read with ``weights_only=True``. A checkpoint whose architecture is a user factory is
    only rebuilt when ``factory`` names that same factory: a file alone never decides what code runs.
    ``template``, a model the caller holds, is copied and given the weights instead (a model handed over
    in memory, whose retrained weights come back from a file).
    """
    raw = safe_torch_load(path, what="checkpoint")
    if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
        try:
            arch = str(raw["arch"])
            input_shape = tuple(int(s) for s in raw["input_shape"])
            num_classes = int(raw["num_classes"])
            state, meta = dict(raw["state_dict"]), dict(raw.get("meta") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"checkpoint {path} is damaged: its {exc if isinstance(exc, KeyError) else 'fields'} "
                             f"{'is missing' if isinstance(exc, KeyError) else 'have the wrong types'}") from exc
        if template is None and arch.endswith(IN_MEMORY):
            raise InputError(f"checkpoint {path} holds the weights of a model handed over in memory ({arch}); "
                             f"load them into that model with advgen.load_checkpoint(path, template=model)")
        if template is None and arch not in ARCHITECTURES and arch != factory:
            raise InputError(f"checkpoint {path} was made with model {arch!r}; pass --model {arch} "
                             f"to allow importing that code")
    elif isinstance(raw, dict) and factory is not None and all(isinstance(v, torch.Tensor) for v in raw.values()):
        arch, state, meta = factory, raw, {}
        input_shape, num_classes = (), 0
    else:
        raise InputError(f"{path} is not an advgen checkpoint (give --model package.module:factory "
                         f"to load a bare state_dict)")
    model = copy.deepcopy(template) if template is not None else build(arch, input_shape or (1, 28, 28),
                                                                         num_classes or 10)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        said = " ".join(str(exc).split()).removeprefix(f"Error(s) in loading state_dict for {type(model).__name__}: ")
        raise InputError(f"checkpoint {path} does not match model {arch!r}: "
                         f"{said[:300]}{'...' if len(said) > 300 else ''}") from exc
    model.eval()
    return Checkpoint(model, arch, input_shape, num_classes, meta)
