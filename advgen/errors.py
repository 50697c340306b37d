"""The one exception type that means "the user asked for something we cannot do".

Anything raised as :class:`InputError` is reported by the CLI as a single line with exit code 2;
every other exception is a bug in advgen and is reported as such.
"""


class InputError(ValueError):
    """Bad input from the user: a wrong name, shape, range, file or option."""
