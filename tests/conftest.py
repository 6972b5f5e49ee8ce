"""Fixtures shared by the tests, and how the test session compiles.

Most of the default run's time is XLA compiling small programs, not running them: ``pytest -n 0
tests/test_linen.py`` spent 39-42 s of its 61-67 s in XLA's backend compiler. The session therefore compiles
without LLVM's backend optimisation (``--xla_backend_optimization_level=0``, which ``python -m jaxdrop bench
--tiny`` also uses): 16-24 s of compiling, 32-48 s in all, for the same file (two alternating rounds each, load 4).
The HLO passes (fusion, buffer assignment) run as before, so ``memory_analysis`` and the HLO text the tests read do
not change; only the machine code is less optimised, and no test here times it. Masks and dropout's scaling stay
bit for bit equal across programs; a transcendental such as ``tanh`` may differ by an ulp between two programs (so
a test that compares programs bit for bit keeps its own arithmetic exact). Set ``JAXDROP_TEST_XLA_DEFAULTS=1`` to
run the tests with XLA's default options; subprocesses that tests start inherit the setting unless they set
``XLA_FLAGS`` themselves.
"""

import os

if os.environ.get("JAXDROP_TEST_XLA_DEFAULTS") != "1" and "xla_backend_optimization_level" not in os.environ.get(
    "XLA_FLAGS", ""
):
    # Before jax is imported: XLA reads XLA_FLAGS once, when the first backend starts.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax
import numpy as np
import pytest


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
