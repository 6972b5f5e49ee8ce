"""Statistical bounds shared by the tests (a module of its own: ``conftest`` is ambiguous with the root one)."""

import math


def binomial_bound(n: int, p: float, sigmas: float = 4.0) -> float:
    """Half-width of a `sigmas`-sigma interval for the fraction of successes in n Bernoulli(p) trials."""
    return sigmas * math.sqrt(max(p * (1.0 - p), 1e-12) / n) + 1.0 / n
