"""Attack methods behind one output format: the exact one-pixel attack and torchattacks baselines.

``METHODS`` maps a method name to a :class:`Method`; the CLI and the benchmark look names up there and
never branch on them. Every method yields one :class:`AttackRecord` per image with the same fields
(success, predicted class, L0/Linf distance), so results compare directly. The exact method also fills
``exact`` with its :class:`~advgen.onepixel.OnePixelResult` record (the full flip table or certificate).
"""

from __future__ import annotations

import base64
import inspect
import time
import types
import typing
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import autoattack, onepixel
from .data import as_labels, validate_images, validate_targets
from .errors import InputError
from .models import output_classes
from .runtime import evaluating, own_random_state, resolve_device, seed_everything


class Status(str, Enum):
    """One image's outcome under any method (stored as its plain string value)."""

    CERTIFIED = "certified"        # the exact method proved no one-pixel change works
    VULNERABLE = "vulnerable"      # an adversarial example was found
    ROBUST = "robust"              # a heuristic attack failed: no proof
    MISCLASSIFIED = "misclassified"  # the clean image is already wrong; not attacked
    TIMEOUT = "timeout"            # the exact method's time limit ran out first: nothing proved


@dataclass
class AttackOptions:
    """Everything a method may need besides model and images; each method reads what applies to it."""

    levels: int = 256
    mode: str = "full"
    bounds: bool = True
    batch_size: int | None = None
    device: str | torch.device = "auto"
    seed: int | None = None  # None: the run's seed in run_attack, 0 in a bare run_method
    params: dict[str, Any] = field(default_factory=dict)  # method-specific overrides (e.g. steps, popsize)


@dataclass
class AttackRecord:
    """One image's outcome under any method.

    ``status`` is a :class:`Status`. ``l0`` counts changed pixel values, ``linf`` is the largest
    change, both for ``adversarial`` (the example kept for this image, a float32 (C, H, W) tensor).
    """

    index: int
    method: str
    label: int
    clean_pred: int
    target: int | None
    status: Status
    success: bool
    adv_pred: int | None = None
    l0: int | None = None
    linf: float | None = None
    seconds: float = 0.0
    exact: dict | None = None
    adversarial: torch.Tensor | None = None

    def to_record(self) -> dict:
        rec = {k: v for k, v in asdict(self).items() if k != "adversarial"}
        rec["seconds"] = round(self.seconds, 6)
        if self.adversarial is not None and self.exact is None:  # the exact method rebuilds it from flips
            arr = self.adversarial.detach().cpu().float().contiguous().numpy()
            rec["adversarial_b64"] = base64.b64encode(arr.tobytes()).decode("ascii")
            rec["adversarial_shape"] = list(arr.shape)
        return rec

    @classmethod
    def from_record(cls, rec: dict, image: torch.Tensor | None = None, levels: int = 256) -> "AttackRecord":
        """Read a record back; the clean ``image`` is needed to rebuild an exact method's example."""
        fields = {k: rec[k] for k in ("index", "method", "label", "clean_pred", "target", "status", "success",
                                      "adv_pred", "l0", "linf", "seconds", "exact")}
        out = cls(**{**fields, "status": Status(fields["status"])})
        if "adversarial_b64" in rec:
            raw = np.frombuffer(base64.b64decode(rec["adversarial_b64"]), dtype=np.float32)
            out.adversarial = torch.from_numpy(raw.copy()).reshape(rec["adversarial_shape"])
        elif out.exact is not None and out.success and image is not None:
            out.adversarial = _representative(onepixel.OnePixelResult.from_record(out.exact), image, levels)[0]
        return out


def _representative(res: onepixel.OnePixelResult, image: torch.Tensor, levels: int) -> tuple[torch.Tensor, int]:
    """The flip with the smallest change (first in table order on ties): its image and index."""
    f = res.flips
    k = int(torch.argmin(onepixel.flip_changes(res, image.cpu(), levels)))
    return onepixel.adversarial_examples(onepixel.OnePixelResult(**{**res.__dict__, "flips": f[k:k + 1]}),
                                         image.cpu(), levels)[0], k


Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None, list[int], AttackOptions,
                   Callable[[list[AttackRecord]], None]], None]


@dataclass(frozen=True)
class Method:
    """A registered attack: what it is, whether it can aim at a class, and the function that runs it.

    ``unit``: how many consecutive images must be attacked together for their results not to depend on
    how the work was split. 1 when each image's result is its own (the exact method); a torchattacks
    batch shares one random stream and one batched computation, so sharding over ranks and resuming
    move whole units of ``unit`` images, which keeps results identical to a single uninterrupted run.
    """

    name: str
    description: str
    targeted: bool
    run: Runner
    unit: int = 1
    params: Callable[[], "Params | None"] = lambda: None  # the ``options.params`` it takes (None: any)


def run_exact(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
              indices: list[int], opts: AttackOptions, emit: Callable[[list[AttackRecord]], None]) -> None:
    """The exact exhaustive one-pixel attack; emits each image's record as its group finishes."""
    by_index = {i: k for k, i in enumerate(indices)}

    def to_record(res: onepixel.OnePixelResult) -> None:
        rec = AttackRecord(res.index, "onepixel", res.label, res.clean_pred, res.target, Status(res.status),
                           res.status == Status.VULNERABLE, seconds=res.seconds, exact=res.to_record())
        if rec.success:
            image = images[by_index[res.index]]
            rec.adversarial, k = _representative(res, image, opts.levels)
            rec.adv_pred, rec.l0 = int(onepixel.flip_classes(res)[k]), int((rec.adversarial != image.cpu()).sum())
            if rec.adv_pred < 0:  # a joint box of several classes: ask the model about the colour kept
                with torch.no_grad():
                    rec.adv_pred = int(model(rec.adversarial[None].to(resolve_device(opts.device))).argmax(1))
            rec.linf = float((rec.adversarial - image.cpu()).abs().max())
        emit([rec])

    onepixel.attack(model, images, labels, levels=opts.levels, targets=targets, mode=opts.mode,
                    bounds=opts.bounds, batch_size=opts.batch_size, device=opts.device,
                    indices=indices, callback=to_record, **opts.params)


TORCHATTACKS_BATCH = 64  # images per torchattacks call; also these methods' unit of work


def _torchattacks_runner(name: str, factory: Callable[..., Any], batch: int = TORCHATTACKS_BATCH) -> Runner:
    """Wrap a torchattacks class: batches of images, seeded per batch by its first image's index.

    Given the same batches (whole units, see :class:`Method`), a resumed or sharded run repeats exactly.
    """

    def run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
            indices: list[int], opts: AttackOptions, emit: Callable[[list[AttackRecord]], None]) -> None:
        dev = resolve_device(opts.device)
        with evaluating(model, dev):
            for s in range(0, len(images), batch):
                seed_everything(opts.seed + indices[s])
                x, y = images[s:s + batch].to(dev), labels[s:s + batch].to(dev)
                t = None if targets is None else targets[s:s + batch].to(dev)
                emit(_run_batch(name, factory, model, x, y, t, indices[s:s + batch], opts))

    return run


def _run_batch(name: str, factory: Callable[..., Any], model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               t: torch.Tensor | None, indices: list[int], opts: AttackOptions) -> list[AttackRecord]:
    start = time.perf_counter()
    with torch.no_grad():
        clean = model(x).argmax(1)
    ok = clean == y
    adv = x.clone()
    if bool(ok.any()):
        atk = factory(model, **opts.params)
        if t is not None:
            tt = t[ok]
            atk.set_mode_targeted_by_function(lambda images, labels: tt, quiet=True)
        adv[ok] = atk(x[ok], y[ok]).detach()
    with torch.no_grad():
        pred = model(adv).argmax(1)
    hit = (pred != y) if t is None else (pred == t)
    seconds = (time.perf_counter() - start) / len(x)
    records = []
    for i in range(len(x)):
        common = dict(index=indices[i], method=name, label=int(y[i]), clean_pred=int(clean[i]),
                      target=None if t is None else int(t[i]), seconds=seconds)
        if not bool(ok[i]):
            records.append(AttackRecord(status=Status.MISCLASSIFIED, success=False, **common))
        elif bool(hit[i]):
            delta = (adv[i] - x[i]).abs()
            records.append(AttackRecord(status=Status.VULNERABLE, success=True, adv_pred=int(pred[i]),
                                        l0=int((delta > 0).sum()), linf=float(delta.max()),
                                        adversarial=adv[i].cpu(), **common))
        else:
            records.append(AttackRecord(status=Status.ROBUST, success=False, adv_pred=int(pred[i]), **common))
    return records


def pgd(model: nn.Module, eps: float = 0.3, steps: int = 40, alpha: float = 0.01,
        random_start: bool = True) -> Any:
    """The one PGD advgen uses (L-inf, Madry et al. 2018, torchattacks): for ``advgen attack --method pgd``,
    the evaluator's robust accuracy and the adversarial retraining."""
    import torchattacks

    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)


@dataclass(frozen=True)
class _Factory:
    """A torchattacks attack (by class name, or one of ours) built with ``defaults`` under the user's params."""

    attack: str | Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)

    def builder(self) -> Callable[..., Any]:
        import torchattacks

        return getattr(torchattacks, self.attack) if isinstance(self.attack, str) else self.attack

    def __call__(self, model: nn.Module, **overrides: Any) -> Any:
        build = self.builder()
        try:
            return build(model, **{**self.defaults, **overrides})
        except TypeError as exc:
            raise InputError(f"bad parameters for {getattr(build, '__name__', self.attack)}: {exc}") from exc

    def params(self) -> Params | None:
        """The keyword parameters the attack takes besides the model, with their types (None: it takes any)."""
        return _keywords(self.builder(), {"model"}, self.defaults)


#: A method's parameters: name -> the types its value may have (None: any; int is taken where float is).
Params = dict[str, tuple[type, ...] | None]


def _keywords(fn: Callable[..., Any], besides: set[str], defaults: dict[str, Any] | None = None) -> Params | None:
    """``fn``'s keyword parameters and their types: from its annotations, else from the type of its default
    (torchattacks' constructors are not annotated; ``defaults`` replace theirs), else any."""
    found = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in found):
        return None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not evaluate: fall back to the defaults
        hints = {}
    return {p.name: _types(hints.get(p.name), (defaults or {}).get(p.name, p.default)) for p in found
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in besides}


def _types(hint: Any, default: Any) -> tuple[type, ...] | None:
    if hint is None:
        return None if default is inspect.Parameter.empty or default is None else (type(default),)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    found = tuple(typing.get_origin(a) or a for a in (typing.get_args(hint) if union else (hint,)))
    return found if all(isinstance(t, type) for t in found) else None


def _fits(value: Any, accepted: tuple[type, ...] | None) -> bool:
    if accepted is None:
        return True
    if isinstance(value, bool):  # a bool is an int to isinstance, but steps=true is a mistake
        return bool in accepted
    return isinstance(value, accepted) or (type(value) is int and float in accepted)


def _torchattacks(name: str, description: str, targeted: bool, factory: _Factory) -> Method:
    return Method(name, description, targeted, _torchattacks_runner(name, factory), TORCHATTACKS_BATCH,
                  factory.params)


#: What ``run_exact`` sets from the options itself; the rest of ``onepixel.attack``'s keywords are params.
_EXACT_FROM_OPTIONS = {"model", "images", "labels", "levels", "targets", "mode", "bounds", "batch_size", "device",
                       "indices", "callback"}

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("onepixel", "exact exhaustive one-pixel attack with certificate (advgen)", True, run_exact,
           params=lambda: _keywords(onepixel.attack, _EXACT_FROM_OPTIONS)),
    _torchattacks("onepixel-de", "one-pixel differential evolution (torchattacks.OnePixel, steps=10 popsize=10)", True,
                  _Factory("OnePixel")),
    _torchattacks("fgsm", "fast gradient sign, eps 0.3 (torchattacks.FGSM)", True, _Factory("FGSM", {"eps": 0.3})),
    _torchattacks("pgd", "projected gradient descent, eps 0.3, 40 steps (torchattacks.PGD)", True, _Factory(pgd)),
    _torchattacks("autoattack", "AutoAttack, L-inf eps 0.3: APGD-CE, APGD-T, FAB-T, Square as a cascade "
                                "(torchattacks; the cpu subset without a GPU, see advgen.autoattack)", False,
                  _Factory(autoattack.attack)),
    _torchattacks("cw", "Carlini-Wagner L2, c=1, 50 steps (torchattacks.CW)", True,
                  _Factory("CW", {"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01})),
    _torchattacks("deepfool", "DeepFool, 50 steps (torchattacks.DeepFool)", False,
                  _Factory("DeepFool", {"steps": 50, "overshoot": 0.02})),
)}


def check_params(name: str, params: dict[str, Any]) -> None:
    """Parameters method ``name`` does not take, or values of a type it does not take, are an input error
    before any work, naming what it does take."""
    known = get_method(name).params()
    if known is None:
        return
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"{name} takes no parameter {', '.join(map(repr, unknown))}; it takes "
                         f"{', '.join(sorted(known)) or 'none'}")
    for key, value in params.items():
        if not _fits(value, known[key]):
            kinds = " or ".join("none" if t is type(None) else t.__name__ for t in known[key])
            raise InputError(f"{name} parameter {key} must be {kinds}, got {value!r}")


def get_method(name: str) -> Method:
    """The registered method called ``name``; an unknown name is an input error listing the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def run_method(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               targets: torch.Tensor | None = None, indices: list[int] | None = None,
               options: AttackOptions | None = None,
               emit: Callable[[list[AttackRecord]], None] | None = None) -> list[AttackRecord]:
    """Attack ``images`` (N, C, H, W) in memory with method ``name``: one :class:`AttackRecord` per image
    (status, success, adversarial prediction, L0/Linf, the adversarial image), in order; each batch of
    records is also passed to ``emit`` as it finishes. The model is left as it was (modes, device), and so are
    the caller's random streams: the attack seeds its own (``options.seed``), inside.

    >>> records = advgen.run_method("pgd", model, test.images[:64], test.labels[:64])
    >>> robust = sum(r.status == "robust" for r in records) / len(records)
    """
    method = get_method(name)
    opts = options or AttackOptions()
    opts = replace(opts, seed=0) if opts.seed is None else opts
    check_params(name, opts.params)
    if targets is not None and not method.targeted:
        raise InputError(f"method {name!r} does not support targeted attacks")
    indices = list(range(len(images))) if indices is None else list(indices)
    if len(images):
        validate_images(images)
        labels = as_labels(labels, len(images))
        classes = output_classes(model, images, labels)
        if targets is not None:
            targets = validate_targets(targets, labels, classes)
    out: list[AttackRecord] = []

    def collect(recs: list[AttackRecord]) -> None:
        out.extend(recs)
        if emit is not None:
            emit(recs)

    if len(images):
        with own_random_state(resolve_device(opts.device)):  # seeded inside; the caller's streams left alone
            method.run(model, images, labels, targets, indices, opts, collect)
    return out
