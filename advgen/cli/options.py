"""Options every command shares, so flags are spelled and validated the same way everywhere."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import click

from ..data import EMBEDDED, TORCHVISION
from ..errors import InputError
from ..files import check_writable_dir
from ..models import ARCHITECTURES
from ..runtime import DEVICES


def common(f: Callable) -> Callable:
    """--seed, --device, --quiet: reproducibility, placement and noise."""
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bars or chatter; results only.")(f)
    f = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     help="Where to compute; auto picks CUDA when present.")(f)
    f = click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
                     help="Random seed; the same seed gives the same results.")(f)
    return f


def data_option(f: Callable) -> Callable:
    return click.option("--data", "data_source", default=EMBEDDED, show_default=True, metavar="NAME|FILE",
                        help=f"{EMBEDDED} (embedded, offline), {', '.join(TORCHVISION)} (downloaded), "
                             f"or a .npz/.pt file with images and labels.")(f)


def model_options(f: Callable) -> Callable:
    f = click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Trained weights (an advgen checkpoint, or a state_dict with --model "
                          "package.module:factory).")(f)
    f = click.option("--model", "arch", default=None, metavar="NAME|MODULE:FACTORY",
                     help=f"Architecture: {', '.join(ARCHITECTURES)} or package.module:factory "
                          f"[default: cnn, or the checkpoint's].")(f)
    return f


def overwrite_option(f: Callable) -> Callable:
    return click.option("--overwrite", is_flag=True, help="Replace existing outputs instead of refusing.")(f)


def refuse_clobber(path: Path, overwrite: bool) -> Path:
    """Stop before any work when the output file exists (unless --overwrite) or cannot be written there."""
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass --overwrite to replace it")
    check_writable_dir(path.parent)
    return path


def _parse_fail_under(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list:
    """Turn each ``--fail-under`` into a :class:`~advgen.report.gates.GateSpec` at parse time, so a typo
    stops the command before any work is done."""
    from ..report.gates import parse_gate_specs

    try:
        return parse_gate_specs(value)
    except InputError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def fail_under_option(f: Callable) -> Callable:
    """--fail-under [STAGE.]NAME=X (repeatable): the command exits 1 unless every gated metric is >= X.

    The parameter arrives as ``fail_under: list[GateSpec]`` (already validated).
    """
    return click.option("--fail-under", "fail_under", multiple=True, metavar="[STAGE.]NAME=X",
                        callback=_parse_fail_under,
                        help="Exit 1 unless the metric is at least X, a fraction in [0, 1]. NAME is clean, "
                             "onepixel, pgd, autoattack, worst or advgan, read at the final stage (after retraining; before with "
                             "--measure-only) unless prefixed 'before.' or 'after.'. "
                             "Repeatable, e.g. --fail-under clean=0.97 --fail-under onepixel=0.99.")(f)


def _parse_params(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as a dict; a value reads as true/false, none, an integer, a number or a fraction
    (``8/255``), else as text. The method checks names and types (:func:`advgen.methods.check_params`)."""
    params: dict[str, Any] = {}
    for text in value:
        name, sep, raw = (part.strip() for part in text.partition("="))
        if not sep or not name.isidentifier():
            raise click.BadParameter(f"{text!r} must look like NAME=VALUE, e.g. eps=0.1", ctx=ctx, param=param)
        if name in params:
            raise click.BadParameter(f"{name} given twice; give it once", ctx=ctx, param=param)
        params[name] = _value(raw)
        if isinstance(params[name], float) and not math.isfinite(params[name]):
            raise click.BadParameter(f"{text!r}: the value must be finite", ctx=ctx, param=param)
    return params


def _value(raw: str) -> Any:
    words = {"true": True, "false": False, "none": None, "null": None}
    if raw.lower() in words:
        return words[raw.lower()]
    for number in (int, float):
        try:
            return number(raw)
        except ValueError:
            pass
    top, slash, bottom = raw.partition("/")
    try:
        return float(top) / float(bottom) if slash and float(bottom) else raw
    except ValueError:
        return raw


def params_option(f: Callable) -> Callable:
    """--param NAME=VALUE (repeatable): a parameter of the attack method, as its keyword argument.

    The parameter arrives as ``params: dict[str, Any]``.
    """
    return click.option("--param", "params", multiple=True, metavar="NAME=VALUE", callback=_parse_params,
                        help="A parameter of the method, by its keyword (torchattacks' for the baselines), "
                             "repeatable: --param eps=0.1 --param steps=100. Values read as numbers (8/255 too), "
                             "true/false or text; a name the method does not take is refused, listing those it "
                             "does.")(f)
