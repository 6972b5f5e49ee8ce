import math

import jax
import numpy as np
import pytest


def binomial_bound(n: int, p: float, sigmas: float = 4.0) -> float:
    """Half-width of a `sigmas`-sigma interval for the fraction of successes in n Bernoulli(p) trials."""
    return sigmas * math.sqrt(max(p * (1.0 - p), 1e-12) / n) + 1.0 / n


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
