"""Plain functions and parametrized cases."""

import math

import pytest


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(0, 0, 0), (1, 2, 3), (-1, 1, 0), (10, 32, 42), (2**31, 2**31, 2**32), (7, -9, -2)],
)
def test_add(a, b, expected):
    assert a + b == expected


@pytest.mark.parametrize("n", range(1, 11))
def test_factorial_divides_by_n(n):
    assert math.factorial(n) % n == 0


@pytest.mark.parametrize(
    ("value", "root"), [(0, 0), (1, 1), (4, 2), (81, 9), (144, 12), (10**6, 1000)]
)
def test_isqrt(value, root):
    assert math.isqrt(value) == root


def test_gcd():
    assert math.gcd(84, 36) == 12


def test_floats_are_close():
    assert 0.1 + 0.2 == pytest.approx(0.3)
