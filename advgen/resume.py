"""One way to resume long work: every saved phase carries the fingerprint of what it depends on.

A fingerprint is a flat JSON object: the phase's settings, the SHA-256 of its input model and data,
the seed and the advgen version. A phase writes it beside its result before any work (``claim``);
``--resume`` reuses a result only when the fingerprint it would write now is the same, and otherwise
stops with one line naming the settings that differ. So a resumed run never mixes results made under
other settings, a changed checkpoint file, or another version of advgen.

Used by ``advgen attack`` (``run.json`` in its output), ``advgen augment``, ``advgen evaluate``
(``state/run.json`` plus one per phase), and every training loop: the GAN trainers and
:func:`advgen.train.fit` keep their progress after each epoch in one file (:func:`save_training`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch
from torch import nn

from .errors import InputError
from .files import atomic_torch_save, atomic_write_json, check_writable_dir, safe_torch_load

log = logging.getLogger("advgen")

T = TypeVar("T")


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over named tensors (sorted by name), bytes as stored: equal weights, equal digest."""
    h = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_sha256(model: nn.Module) -> str:
    """The digest of a model's parameters and buffers; every rank of a run must attack the same one."""
    return tensors_sha256(dict(model.state_dict()))


def data_sha256(data: Any) -> str:
    """The digest of a :class:`~advgen.data.Dataset`'s images, labels and level count."""
    return tensors_sha256({"images": data.images, "labels": data.labels,
                           "levels": torch.tensor([data.levels])})


def file_sha256(path: str | Path | None) -> str | None:
    """The digest of a file's bytes (a checkpoint a run was given); the path itself when it is not a file."""
    if path is None:
        return None
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path)


def fingerprint(settings: dict[str, Any], *, model: nn.Module | None = None, data: Any = None,
                seed: int | None = None) -> dict[str, Any]:
    """What a phase depends on, as the flat JSON object it is stored and compared as."""
    from ._version import __version__

    fp: dict[str, Any] = {"advgen": __version__}
    if seed is not None:
        fp["seed"] = seed
    if model is not None:
        fp["model_sha256"] = model_sha256(model)
    if data is not None:
        fp["data_sha256"] = data_sha256(data)
    fp.update(_flat(settings))
    return json.loads(json.dumps(fp, default=str))  # as it reads back: tuples become lists, paths strings


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``name (old -> new)`` for every setting that differs; empty when the two are the same."""
    keys = sorted({*saved, *wanted})
    return [f"{k} ({_show(saved.get(k))} -> {_show(wanted.get(k))})" for k in keys if saved.get(k) != wanted.get(k)]


def check(saved: dict[str, Any], wanted: dict[str, Any], where: str) -> None:
    """Refuse to continue ``where`` when it was made under another fingerprint (one line, exit 2)."""
    diff = differences(saved, wanted)
    if diff:
        raise InputError(f"{where} was made with different settings: {'; '.join(diff)}; use the same options "
                         f"to --resume, or --overwrite to start again")


def claim(path: Path, wanted: dict[str, Any], where: str) -> bool:
    """Check ``wanted`` against the fingerprint stored at ``path``, or store it there; True if it was there."""
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path} is unreadable ({exc}); --overwrite to start again") from None
        check(saved, wanted, where)
        return True
    atomic_write_json(path, wanted)
    return False


TRAINING_FORMAT = "advgen.training-state"


def save_training(path: Path, wanted: dict[str, Any], epochs: int, parts: dict[str, Any]) -> None:
    """A training's progress after ``epochs`` finished epochs, written atomically with its fingerprint ``wanted``.

    ``parts`` is what the trainer needs to go on (weights, optimizer moments, random streams), as tensors and
    plain values, so that the file loads with ``weights_only=True``.
    """
    atomic_torch_save(path, {"format": TRAINING_FORMAT, "fingerprint": json.dumps(wanted), "epochs": epochs,
                             "parts": parts})


def load_training(path: Path, wanted: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``(epochs, parts)`` as :func:`save_training` left them at ``path``, or ``(0, {})`` when there is no file.

    A file that is not a training state, or was saved under another fingerprint, is refused in one line
    naming what differs: continuing it would mix two different trainings.
    """
    if not path.exists():
        return 0, {}
    raw = safe_torch_load(path, what="training state")
    if not isinstance(raw, dict) or raw.get("format") != TRAINING_FORMAT:
        raise InputError(f"{path} is not an advgen training state of this version; delete it to start over")
    check(json.loads(raw["fingerprint"]), wanted, str(path))
    return int(raw["epochs"]), raw["parts"]


def refuse_resume_and_overwrite(resume: bool, overwrite: bool) -> None:
    """``resume`` keeps earlier results and ``overwrite`` deletes them: asking for both is refused in one line."""
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other; pick one")


def prepare_dir(out: Path, outputs: Iterable[str], resume: bool, overwrite: bool, state: str | tuple[str, ...],
                reads: Iterable[Path | None] = ()) -> None:
    """Refuse, clear or keep ``out`` for a run: earlier results are reused only with ``resume``.

    ``outputs`` names what a run writes in ``out`` (files or folders); ``overwrite`` removes just those.
    ``state`` is the one of them that holds a run's fingerprint (or several, each checked when it is read, such
    as a training's state before the run's claim): outputs without one (a report copied in, say) are not a
    run ``resume`` could continue, and are refused rather than silently replaced.
    ``reads`` are the files the run reads (its checkpoint): ``overwrite`` refuses to delete one of them,
    as it would when a model kept by an earlier run in ``out`` is given back as the checkpoint.
    """
    refuse_resume_and_overwrite(resume, overwrite)
    names = list(outputs)
    earlier = [out / n for n in names if (out / n).exists()]
    if earlier and not (resume or overwrite):
        raise InputError(f"{out} already holds results of an earlier run; pass --resume to continue it or "
                         f"--overwrite to start again")
    states = (state,) if isinstance(state, str) else state
    if resume and earlier and not any((out / s).exists() for s in states):
        raise InputError(f"{out} holds {earlier[0].name} but no saved state ({states[0]}) of a run to continue; "
                         f"pass --overwrite to start again")
    if resume and not earlier:
        log.info(f"--resume: nothing saved in {out} yet; starting a fresh run")
    if overwrite:
        for p in earlier:
            for read in reads:
                if read is not None and (Path(read).resolve() == p.resolve() or p.resolve() in
                                         Path(read).resolve().parents):
                    raise InputError(f"--overwrite would delete {read}, which this run reads; move it out of "
                                     f"{out} or write to another --out")
        for p in earlier:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    check_writable_dir(out)


def contents(out: Path) -> set[str]:
    """Everything under ``out``, as paths relative to it (empty when ``out`` does not exist)."""
    return {p.relative_to(out).as_posix() for p in out.rglob("*")} if out.is_dir() else set()


def forget(out: Path, before: set[str], existed: bool, claims: Iterable[str]) -> None:
    """Undo a run's claim on ``out`` after it failed, when all it made there since ``before`` (its
    :func:`contents` then) is ``claims``: its fingerprint file and what it keeps beside it, relative to
    ``out``. ``out`` itself goes too when it did not exist (``existed``) and is left empty.

    A failed start (a model that does not fit the data, say) would otherwise leave its claim behind, and
    the corrected retry would be refused as a resume of a run that did nothing. Anything more, such as
    a first record or a finished phase, is work to resume, and stays.
    """
    made = contents(out) - before
    if not made <= set(claims):
        return
    for rel in sorted(made, reverse=True):  # a folder's files before the folder
        path = out / rel
        path.rmdir() if path.is_dir() else path.unlink()
    if not existed and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


@contextlib.contextmanager
def forgotten_if_failed(out: Path, claims: Iterable[str] = ("state", "state/run.json"),
                        enabled: bool = True) -> Iterator[None]:
    """:func:`forget` what the block claimed in ``out`` if it fails with an exception. Ctrl-C is not a
    failure: an interrupted run keeps its claim, to be resumed."""
    existed, before = out.exists(), contents(out)
    try:
        yield
    except Exception:
        if enabled:
            forget(out, before, existed, claims)
        raise


class Phases:
    """The phases of one long run under ``root``: each result saved once, beside its fingerprint."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def claim(self, name: str, wanted: dict[str, Any]) -> bool:
        """Begin phase ``name`` under ``wanted`` (or check it against the earlier run's); True if it was begun."""
        self.root.mkdir(parents=True, exist_ok=True)
        return claim(self.root / f"{name}.fingerprint.json", wanted, f"{self.root.parent} (phase {name})")

    def cached(self, name: str, wanted: dict[str, Any], compute: Callable[[], T], save: Callable[[Path, T], object],
               load: Callable[[Path], T], suffix: str = ".pt") -> T:
        """The phase's result: loaded when an earlier run finished it under the same fingerprint, else computed."""
        result = self.root / f"{name}{suffix}"
        self.claim(name, wanted)
        if result.exists():
            return load(result)
        value = compute()
        save(result, value)
        return value

    def json(self, name: str, wanted: dict[str, Any], compute: Callable[[], T]) -> T:
        return self.cached(name, wanted, compute, atomic_write_json, lambda p: json.loads(p.read_text()), ".json")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value) if not isinstance(value, str) else value
