"""The one exception type that means "the user asked for something we cannot do".

Anything raised as :class:`InputError` is reported by the CLI as a single line with exit code 2;
every other exception is a bug in advgen and is reported as such.
"""

import dataclasses
import math
import numbers


class InputError(ValueError):
    """Bad input from the user: a wrong name, shape, range, file or option."""


def check_fields(config: object, lowest: dict[str, float], fractions: tuple[str, ...] = (),
                 positive: tuple[str, ...] = ()) -> None:
    """An :class:`InputError` naming the first field of a config dataclass out of range: below its entry in
    ``lowest``, outside [0, 1] for ``fractions``, not above 0 for ``positive``. NaN fails every test; an
    infinite value, or a fraction where the field is declared ``int`` (``epochs=1.5``), is refused too."""
    name = type(config).__name__
    declared = {f.name: str(f.type) for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else {}
    for field in (*lowest, *fractions, *positive):
        value = getattr(config, field)
        whole = declared.get(field) in ("int", str(int))
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real) \
                or not math.isfinite(value):
            raise InputError(f"{name}.{field} must be a finite {'integer' if whole else 'number'}, got {value!r}")
    for field, low in lowest.items():
        if not getattr(config, field) >= low:
            raise InputError(f"{name}.{field} must be at least {low:g}, got {getattr(config, field)!r}")
    for field in fractions:
        if not 0 <= getattr(config, field) <= 1:
            raise InputError(f"{name}.{field} must be in [0, 1], got {getattr(config, field)!r}")
    for field in positive:
        if not getattr(config, field) > 0:
            raise InputError(f"{name}.{field} must be above 0, got {getattr(config, field)!r}")
