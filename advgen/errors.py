"""The one exception type that means "the user asked for something we cannot do".

Anything raised as :class:`InputError` is reported by the CLI as a single line with exit code 2;
every other exception is a bug in advgen and is reported as such.
"""


class InputError(ValueError):
    """Bad input from the user: a wrong name, shape, range, file or option."""


def check_fields(config: object, lowest: dict[str, float], fractions: tuple[str, ...] = (),
                 positive: tuple[str, ...] = ()) -> None:
    """An :class:`InputError` naming the first field of a config dataclass out of range: below its entry in
    ``lowest``, outside [0, 1] for ``fractions``, not above 0 for ``positive``. NaN fails every test."""
    name = type(config).__name__
    for field, low in lowest.items():
        if not getattr(config, field) >= low:
            raise InputError(f"{name}.{field} must be at least {low:g}, got {getattr(config, field)!r}")
    for field in fractions:
        if not 0 <= getattr(config, field) <= 1:
            raise InputError(f"{name}.{field} must be in [0, 1], got {getattr(config, field)!r}")
    for field in positive:
        if not getattr(config, field) > 0:
            raise InputError(f"{name}.{field} must be above 0, got {getattr(config, field)!r}")
