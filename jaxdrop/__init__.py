"""jaxdrop: dropout and Monte Carlo dropout for JAX and Flax.

This file is the whole public face. The functional API is at the top level (``jaxdrop.dropout``, ...), with
``fold_in``, ``inspect``, ``assert_deterministic`` and ``stochastic`` (MC dropout in evaluation mode); the
namespaces are ``functional``, ``keys``, ``debug``, ``mc``, ``uncertainty``, ``training``, ``active`` (active
learning), ``monitor`` (drift monitoring) and the layers ``linen``, ``nnx`` and ``equinox``. The layers import Flax
or Equinox, so they are imported on first use: ``import jaxdrop`` imports neither.
"""

import importlib
from typing import TYPE_CHECKING

from jaxdrop import active, debug, functional, keys, mc, monitor, training, uncertainty
from jaxdrop._inspect import DropoutSite, InspectReport, inspect
from jaxdrop._masks import GENERATORS, THREEFRY_ROUNDS
from jaxdrop._mode import stochastic
from jaxdrop.debug import assert_deterministic
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
    layer_drop,
    linear_drop_path_rates,
    locked_dropout,
    locked_mask,
    mixout,
    patch_dropout,
    prune_layers,
    residual_drop_path,
    scan_layer_drop,
    spatial_dropout,
    spatial_dropout1d,
    spatial_dropout2d,
    spatial_dropout3d,
    token_dropout,
    word_dropout,
)
from jaxdrop.keys import fold_in

if TYPE_CHECKING:  # for IDEs and type checkers; at run time these import Flax / Equinox on first use
    from jaxdrop import equinox, linen, nnx

__version__ = "0.1.0"

_LAZY_NAMESPACES = ("equinox", "linen", "nnx")


def __getattr__(name: str):
    if name in _LAZY_NAMESPACES:
        return importlib.import_module(f"jaxdrop.{name}")
    raise AttributeError(f"module 'jaxdrop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "GENERATORS",
    "THREEFRY_ROUNDS",
    "DropoutSite",
    "InspectReport",
    "__version__",
    "active",
    "alpha_dropout",
    "assert_deterministic",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "debug",
    "dot_product_attention",
    "drop_path",
    "dropblock",
    "dropblock2d",
    "dropblock3d",
    "dropconnect",
    "dropconnect_params",
    "dropout",
    "equinox",
    "feature_alpha_dropout",
    "fold_in",
    "functional",
    "gaussian_dropout",
    "gaussian_noise",
    "inspect",
    "keys",
    "layer_drop",
    "linear_drop_path_rates",
    "linen",
    "locked_dropout",
    "locked_mask",
    "mc",
    "mixout",
    "monitor",
    "nnx",
    "patch_dropout",
    "prune_layers",
    "residual_drop_path",
    "scan_layer_drop",
    "spatial_dropout",
    "spatial_dropout1d",
    "spatial_dropout2d",
    "spatial_dropout3d",
    "stochastic",
    "token_dropout",
    "training",
    "uncertainty",
    "word_dropout",
]
