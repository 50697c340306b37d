"""advgen.stats: Wilson intervals and exact McNemar p-values against values computed by hand."""

from __future__ import annotations

import math

import pytest

from advgen.stats import Paired, Rate, mcnemar_exact, paired, percent, wilson


@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 10, 0.0, 3.8415 / 13.8415),  # k = 0: hi = z^2 / (n + z^2)
    (10, 10, 10 / 13.8415, 1.0),
    (3, 100, 0.0103, 0.0845),
    (35, 1000, 0.0253, 0.0483),
    (50, 100, 0.4038, 0.5962),
])
def test_wilson_matches_hand_values(k, n, lo, hi):
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)
    assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_edge_cases():
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0  # exact ends, no float dust
    with pytest.raises(ValueError):
        wilson(11, 10)


@pytest.mark.parametrize("b, c, p", [
    (26, 1, 2 * 28 / 2**27),  # (C(27,0) + C(27,1)) / 2^27, doubled: ~4.2e-7
    (5, 0, 0.0625),           # 2 / 2^5
    (0, 5, 0.0625),
    (10, 5, 2 * (1 + 15 + 105 + 455 + 1365 + 3003) / 2**15),
    (7, 7, 1.0),
    (0, 0, 1.0),
])
def test_mcnemar_exact_matches_hand_values(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_exact_survives_thousands_of_flips():
    p = mcnemar_exact(3000, 2000)
    assert 0.0 < p < 1e-40 and math.isfinite(p)
    assert mcnemar_exact(2500, 2500) == 1.0


def test_rate_and_paired():
    r = Rate(3, 100)
    assert r.value == 0.03 and r.ci95 == wilson(3, 100)
    assert Rate(0, 0).value == 0.0
    assert r.to_dict() == {"k": 3, "n": 100, "value": 0.03, "ci95": list(wilson(3, 100))}
    assert paired("0011", "0110") == Paired(gained=1, lost=1, p=1.0)
    assert paired("1" * 5 + "0", "0" * 6) == Paired(gained=0, lost=5, p=0.0625)
    with pytest.raises(ValueError, match="same images"):
        paired("01", "011")
    with pytest.raises(ValueError, match="only '0' and '1'"):
        paired("0_1", "011")


@pytest.mark.parametrize("k, n, text", [(322870, 376320, "85.80%"), (195520626, 195521760, "99.9994%"),
                                        (5, 10**9, "0.0000005%"), (0, 7, "0.00%"), (7, 7, "100.00%"),
                                        (999999, 1000000, "99.9999%")])
def test_percent_never_rounds_a_partial_share_to_all_or_nothing(k, n, text):
    assert percent(k, n) == text
