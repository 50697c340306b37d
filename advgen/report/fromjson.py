"""Build dataclasses from parsed JSON by their type hints, refusing anything else with the JSON path.

One generic walk replaces a hand-written validator per class: the type hints already say what each
field holds. Supported: ``int``, ``float``, ``str``, ``bool``, ``Any``, ``X | None``, ``dict[str, X]``,
``list[X]`` and nested dataclasses. Every field must be present (what advgen writes always is), and
unknown fields are refused, since they are usually typos; keys a class lists in its ``DERIVED``
class attribute are skipped (computed fields the writer adds for readers).

Checks that types cannot express live in a dataclass's optional ``check()`` method, which raises
``ValueError("field ...")``; the message is prefixed with the object's path here.
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
        _expect(value, dict, "a JSON object", where)
        return {k: build(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        _expect(value, list, "a list", where)
        return [build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        return _expect(value, bool, "true or false", where)
    if tp is str:
        return _expect(value, str, "a string", where)
    if tp is int:
        return _expect(value, int, "an integer", where)
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise InputError(f"{where} must be a finite number, got {_kind(value)}")
        return float(value)
    raise TypeError(f"fromjson cannot read type {tp!r} (at {where})")  # a bug in advgen, not bad input


def _build_dataclass(cls: type, value: Any, where: str) -> Any:
    _expect(value, dict, "a JSON object", where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(value) - set(names) - set(getattr(cls, "DERIVED", ())))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [n for n in names if n not in value]
    if missing:
        raise InputError(f"{where}: missing field(s) {', '.join(missing)}")
    obj = cls(**{n: build(hints[n], value[n], f"{where}.{n}") for n in names})
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except InputError:
            raise
        except ValueError as exc:
            raise InputError(f"{where}.{exc}") from None
    return obj


def _expect(value: Any, kind: type, words: str, where: str) -> Any:
    # bool is an int in Python but never in a report.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{where} must be {words}, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
