"""jaxdrop: dropout and Monte Carlo dropout for JAX and Flax.

The functional API lives at the top level; ``jaxdrop.linen``, ``jaxdrop.nnx``, ``jaxdrop.mc`` and
``jaxdrop.uncertainty`` are imported on first use so ``import jaxdrop`` does not import Flax.
"""

import importlib

from jaxdrop._masks import GENERATORS, THREEFRY_ROUNDS
from jaxdrop.functional import dropout
from jaxdrop.keys import fold_in

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("linen", "nnx", "mc", "uncertainty", "functional", "keys")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"jaxdrop.{name}")
    raise AttributeError(f"module 'jaxdrop' has no attribute {name!r}")


__all__ = ["GENERATORS", "THREEFRY_ROUNDS", "__version__", "dropout", "fold_in"]
