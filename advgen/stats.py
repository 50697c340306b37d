"""Small-sample statistics for robustness numbers: Wilson intervals and exact McNemar tests.

A robust accuracy measured on 100 images is not the same claim as one measured on 10 000, and a
before/after change of two images out of 500 is usually noise. Reports therefore carry every rate
as ``k/n`` with a 95% Wilson interval (good coverage near 0 and 1, where robustness numbers live,
unlike the normal approximation), and judge a change on the SAME images with McNemar's exact test,
which looks only at the images whose outcome flipped.

Per-image outcomes travel as strings of ``'0'``/``'1'``: compact in JSON, exact, and easy to
re-analyse. Pure Python, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval ``(lo, hi)`` for ``k`` successes in ``n`` trials; ``(0, 1)`` when ``n == 0``."""
    if not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At k == 0 or k == n one end is exactly 0 or 1; say so instead of leaving float dust.
    return (0.0 if k == 0 else max(0.0, center - half)), (1.0 if k == n else min(1.0, center + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` and ``c`` are the two kinds of discordant pairs.

    Under "no change" each flipped image is equally likely to flip either way, so ``min(b, c)`` is
    Binomial(b + c, 1/2); the p-value doubles its lower tail (capped at 1). Exact integer sums, so
    thousands of flips neither overflow nor lose the tiny p-values of a large, real change; each
    binomial coefficient comes from the previous one, so the cost is linear in ``min(b, c)``.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact needs counts >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0)
    for i in range(min(b, c)):
        term = term * (n - i) // (i + 1)  # C(n, i + 1), exact
        tail += term
    return min(1.0, 2 * tail / 2**n)


def percent(k: int, n: int) -> str:
    """``k/n`` as a percentage with two decimals, or with as many as it takes to show the first digit of
    its distance from 0% or 100%: bounds settled 195,520,626 of 195,521,760 candidates, 99.9994%, and
    "100.00%" would hide the 1,134 the model had to run on."""
    if n <= 0:
        return "n/a"
    share = 100 * k / n
    rest = min(share, 100 - share)
    decimals = 2 if rest == 0 or rest >= 0.01 else -math.floor(math.log10(rest))
    return f"{share:.{decimals}f}%"


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` images; ``value`` is ``k/n`` (0.0 for no images), ``ci95`` its Wilson interval."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form readers see: ``{"k", "n", "value", "ci95": [lo, hi]}``."""
        return {"k": self.k, "n": self.n, "value": self.value, "ci95": list(self.ci95)}


@dataclass(frozen=True)
class Paired:
    """A before/after test on the same images: how many flipped 0 -> 1 and 1 -> 0, and McNemar's p."""

    gained: int
    lost: int
    p: float


def check_flags(flags: str, what: str = "outcome") -> None:
    """Refuse anything but ``'0'``/``'1'`` characters (``int(s, 2)`` alone would accept ``'_'`` and spaces)."""
    if flags.strip("01"):
        raise ValueError(f"{what} must hold only '0' and '1' characters")


def ones(flags: str) -> int:
    """How many images have outcome 1."""
    return flags.count("1")


def both(a: str, b: str) -> str:
    """The per-image AND of two equally long outcome strings."""
    if len(a) != len(b):
        raise ValueError(f"outcome strings differ in length ({len(a)} and {len(b)})")
    return "".join("1" if x == y == "1" else "0" for x, y in zip(a, b))


def paired(before: str, after: str) -> Paired:
    """McNemar on two outcome strings of the same images, in the same order."""
    if len(before) != len(after):
        raise ValueError(f"paired outcomes must cover the same images; got {len(before)} and {len(after)} flags")
    check_flags(before, "before")
    check_flags(after, "after")
    gained = sum(x == "0" and y == "1" for x, y in zip(before, after))
    lost = sum(x == "1" and y == "0" for x, y in zip(before, after))
    return Paired(gained=gained, lost=lost, p=mcnemar_exact(gained, lost))
