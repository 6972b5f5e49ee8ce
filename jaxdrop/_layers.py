"""What the layers of ``jaxdrop.linen``, ``jaxdrop.nnx`` and ``jaxdrop.equinox`` share: when a key is needed and
how it is made.

No maths lives here: with these helpers a layer decides whether it needs a key and derives it; the maths is in
``jaxdrop.functional``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax import lax

from jaxdrop import _checks


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
