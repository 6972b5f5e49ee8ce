"""What the layers of ``jaxdrop.linen``, ``jaxdrop.nnx`` and ``jaxdrop.equinox`` share: the resolved flag, when a
key is needed and how it is made.

No maths lives here: with these helpers a layer decides whether it needs a key and derives it; the maths is in
``jaxdrop.functional``.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax import lax

from jaxdrop import _checks, _mode
from jaxdrop.functional import dot_product_attention


def is_deterministic(flag: object, name: str = "deterministic", layer: Any = None) -> bool:
    """The layer's resolved flag as a Python bool; False inside ``jaxdrop.stochastic()``, whatever the flag.

    Every jaxdrop layer resolves its flag here, so the context turns them all on (MC dropout in evaluation mode)
    and no other layer: BatchNorm and flax's own dropout keep the mode the model's call gives them. ``layer`` (the
    module asking) lets per-site MC (``jaxdrop.mc.predict(..., sites=...)``) switch on only the chosen layers.
    """
    forced = _mode.is_stochastic(layer)  # asked first: per-site MC records every layer it meets, on or off
    return _checks.static_bool(flag, name) and not forced


def stochastic_note() -> str:
    """Appended to a missing-key error: inside ``jaxdrop.stochastic()`` a layer in evaluation mode needs a key too."""
    return " Inside `jaxdrop.stochastic()` dropout is applied in evaluation mode too." if _mode.is_stochastic() else ""


def needs_key(rate: jax.typing.ArrayLike, deterministic: bool, key_free_rates: Sequence[float] = (0.0, 1.0)) -> bool:
    """True when the layer must draw a key: it is active and its rate is not a static value that needs none.

    Mirrors ``flax.linen.Dropout``: rates 0 and 1 return before ``make_rng`` is called, so a model evaluated
    at those rates neither needs a ``'dropout'`` RNG nor advances the RNG counter.
    """
    if deterministic:
        return False
    if _checks.is_static(rate) and np.ndim(rate) == 0:
        try:
            return _checks.static_float(rate) not in key_free_rates
        except (TypeError, ValueError):
            return True  # let the functional core report the bad value
    return True


def fold_axes(key: jax.Array, axis_name: str | Sequence[str] | None) -> jax.Array:
    """Folds ``lax.axis_index`` of each named mapped axis into ``key``: one mask per slice of that axis.

    Inside ``vmap``/``nnx.vmap`` with the module (and so its RNG) broadcast, every slice would otherwise draw the
    same key, and so the same mask, silently.
    """
    if axis_name is None:
        return key
    for name in (axis_name,) if isinstance(axis_name, str) else tuple(axis_name):
        key = jax.random.fold_in(key, lax.axis_index(name))
    return key


_ATTENTION_SIGNATURE = inspect.signature(dot_product_attention)


@functools.wraps(dot_product_attention)  # flax reads the signature (through __wrapped__) to choose what to pass
def attention_fn(*args: Any, **kwargs: Any) -> jax.Array:
    """``jaxdrop.dot_product_attention`` as the ``attention_fn`` of flax's multi-head attention (linen and nnx).

    Flax's attention module decides the mode and hands over no key when it is deterministic, so
    ``jaxdrop.stochastic()`` cannot turn attention dropout on: this warns, at trace time, rather than leave it off
    silently.
    """
    call = _ATTENTION_SIGNATURE.bind(*args, **kwargs).arguments
    rate = call.get("dropout_rate", 0.0)
    no_dropout = _checks.is_static(rate) and not np.any(rate)
    if _mode.is_stochastic() and call.get("deterministic") and not no_dropout:
        warnings.warn(
            "jaxdrop.stochastic() does not switch attention dropout on: flax's attention module is deterministic "
            "and passes no key. Call it with deterministic=False to sample attention dropout as well.",
            stacklevel=2,
        )
    return dot_product_attention(*args, **kwargs)
