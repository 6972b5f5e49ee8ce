"""jaxdrop: dropout and Monte Carlo dropout for JAX and Flax.

The functional API lives at the top level; ``jaxdrop.linen``, ``jaxdrop.nnx``, ``jaxdrop.mc`` and
``jaxdrop.uncertainty`` are imported on first use so ``import jaxdrop`` does not import Flax.
"""

import importlib

from jaxdrop._masks import GENERATORS, THREEFRY_ROUNDS
from jaxdrop.functional import (
    alpha_dropout,
    concrete_dropout,
    concrete_dropout_regularizer,
    dot_product_attention,
    drop_path,
    dropblock,
    dropblock2d,
    dropblock3d,
    dropconnect,
    dropconnect_params,
    dropout,
    feature_alpha_dropout,
    gaussian_dropout,
    gaussian_noise,
    linear_drop_path_rates,
    locked_dropout,
    locked_mask,
    residual_drop_path,
    spatial_dropout,
    spatial_dropout1d,
    spatial_dropout2d,
    spatial_dropout3d,
    token_dropout,
    word_dropout,
)
from jaxdrop.keys import fold_in

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("linen", "nnx", "equinox", "mc", "uncertainty", "functional", "keys", "inspect")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"jaxdrop.{name}")
    if name == "assert_deterministic":  # lazy: it needs Flax
        return importlib.import_module("jaxdrop.inspect").assert_deterministic
    raise AttributeError(f"module 'jaxdrop' has no attribute {name!r}")


__all__ = [
    "GENERATORS",
    "THREEFRY_ROUNDS",
    "__version__",
    "alpha_dropout",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "dot_product_attention",
    "drop_path",
    "dropblock",
    "dropblock2d",
    "dropblock3d",
    "dropconnect",
    "dropconnect_params",
    "dropout",
    "feature_alpha_dropout",
    "fold_in",
    "gaussian_dropout",
    "gaussian_noise",
    "linear_drop_path_rates",
    "locked_dropout",
    "locked_mask",
    "residual_drop_path",
    "spatial_dropout",
    "spatial_dropout1d",
    "spatial_dropout2d",
    "spatial_dropout3d",
    "token_dropout",
    "word_dropout",
]
