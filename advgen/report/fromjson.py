"""Build dataclasses from parsed JSON by their type hints, refusing anything else with the JSON path.

One generic walk replaces a hand-written validator per class: the type hints already say what each
field holds. Supported: ``int``, ``float``, ``str``, ``bool``, ``Any``, ``X | None``, ``dict[str, X]``,
``list[X]`` and nested dataclasses. Every field must be present (advgen always writes them all) and
unknown keys are refused, as they are usually typos; keys named in a class's ``DERIVED`` attribute
are skipped (numbers the writer adds for readers). Every number in a report is a count, a duration
or a fraction, so negative numbers are refused here too.

A dataclass may define ``check()`` for what types cannot say; it raises ``ValueError("field ...")``
and the object's path is put in front of the message.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from ..errors import InputError


def build(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as an instance of type ``tp``; an :class:`InputError` naming ``where`` if not."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return build(inner, value, where)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, where)
    if origin is dict:
        _expect(isinstance(value, dict), "a JSON object", value, where)
        return {k: build(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        _expect(isinstance(value, list), "a list", value, where)
        return [build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp in (bool, str):
        _expect(isinstance(value, tp), "true or false" if tp is bool else "a string", value, where)
        return value
    if tp in (int, float):
        number = isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool)
        _expect(number and math.isfinite(value) and value >= 0,
                "a non-negative " + ("integer" if tp is int else "number"), value, where)
        return tp(value)
    raise TypeError(f"fromjson cannot read type {tp!r} (at {where})")  # a bug in advgen, not bad input


def _build_dataclass(cls: type, value: Any, where: str) -> Any:
    _expect(isinstance(value, dict), "a JSON object", value, where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(value) - set(names) - set(getattr(cls, "DERIVED", ())))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [n for n in names if n not in value]
    if missing:
        raise InputError(f"{where}: missing field(s) {', '.join(missing)}")
    obj = cls(**{n: build(hints[n], value[n], f"{where}.{n}") for n in names})
    try:
        getattr(obj, "check", lambda: None)()
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(f"{where}.{exc}") from None
    return obj


def _expect(ok: bool, words: str, value: Any, where: str) -> None:
    if not ok:
        shown = repr(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else \
            "null" if value is None else type(value).__name__
        raise InputError(f"{where} must be {words}, got {shown}")
