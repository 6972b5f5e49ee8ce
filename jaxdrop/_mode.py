"""``jaxdrop.stochastic()``: turn jaxdrop's dropout layers on without touching any other layer's mode.

Monte Carlo dropout needs dropout sampling at prediction time while everything else (BatchNorm's running
statistics, flax's own ``Dropout`` when you want it off, any ``train`` flag of your model) stays in evaluation mode.
A model's ``train``/``deterministic`` flag switches all of them at once; this context switches only jaxdrop's layers
(linen, nnx, equinox), which read it when they are traced. ``jaxdrop.mc.predict`` and ``jaxdrop.mc.sample`` enter it
for you.

``jaxdrop.mc.predict(..., sites=...)`` narrows the context to chosen layers (per-site MC): it installs a selector
(``sites``) that each layer consults with itself (``is_stochastic(layer)``); layers it does not choose keep the mode
their call gives them. The selector is private to ``jaxdrop.mc``: the public context switches every jaxdrop layer.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jax

from jaxdrop import _checks

_FORCED: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxdrop_stochastic", default=False)
# ``select(layer) -> bool`` of per-site MC, or None: every layer is switched on. Consulted only inside the context.
_SELECT: contextvars.ContextVar[Callable[[Any], bool] | None] = contextvars.ContextVar("jaxdrop_sites", default=None)
# Part of jax.jit's cache key (jax >= 0.7.2): a function traced outside the context is traced again inside it, and
# the reverse, instead of replaying the program of the other mode. Older jax has no such hook.
_JIT_KEY = jax.make_user_context(default_value=False) if hasattr(jax, "make_user_context") else None


@contextlib.contextmanager
def stochastic(enabled: bool = True) -> Iterator[None]:
    """Within this context jaxdrop's layers sample dropout masks even when called with ``deterministic=True``.

    Only jaxdrop's layers (``jaxdrop.linen``, ``jaxdrop.nnx``, ``jaxdrop.equinox``) read it; BatchNorm and every other
    layer keep the mode your call gives them, so ``model.apply(variables, x, train=False)`` inside the context is
    "evaluation mode with MC dropout". The flag is read when a layer is traced. With jax >= 0.7.2 it is part of
    ``jax.jit``'s cache key, so a jitted function is traced once in each mode; with older jax a function jitted
    outside the context replays its deterministic program inside it (and the reverse): jit a separate function for
    MC, or use ``jaxdrop.mc.predict``/``jaxdrop.mc.sample``, which enter the context while they trace. Rates, keys
    and RNG collections are unchanged: a linen model still needs its ``"dropout"`` RNG, an equinox layer its
    ``key``.

    Args:
      enabled: ``False`` leaves the layers to their own flags (e.g. to switch the context off inside it).

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> layer = jaxdrop.linen.Dropout(0.5)
      >>> x = jnp.ones(8)
      >>> bool((layer.apply({}, x, deterministic=True) == x).all())
      True
      >>> with jaxdrop.stochastic():
      ...     y = layer.apply({}, x, deterministic=True, rngs={"dropout": jax.random.key(0)})
      >>> bool((y == 0).any())
      True
    """
    enabled = _checks.static_bool(enabled, "enabled")
    token = _FORCED.set(enabled)
    try:
        if _JIT_KEY is None:
            yield
        else:
            with _JIT_KEY(enabled):
                yield
    finally:
        _FORCED.reset(token)


def is_stochastic(layer: Any = None) -> bool:
    """True inside ``jaxdrop.stochastic()`` (read by the layers when they resolve their ``deterministic`` flag).

    Under a site selector (``sites``) only the layers it chooses are switched on; ``layer`` is the layer asking
    (a linen or nnx module), and ``None`` (a layer that cannot say which it is) is never chosen.
    """
    if not _FORCED.get():
        return False
    select = _SELECT.get()
    return select is None or (layer is not None and select(layer))


@contextlib.contextmanager
def sites(select: Callable[[Any], bool] | None) -> Iterator[None]:
    """Within this context ``jaxdrop.stochastic()`` switches on only the layers for which ``select(layer)`` is True.

    For ``jaxdrop.mc.predict(..., sites=...)``: ``select`` is called with each jaxdrop layer as it is traced (so it
    may also record the layers met, in call order); ``None`` switches every layer on again.
    """
    token = _SELECT.set(select)
    try:
        yield
    finally:
        _SELECT.reset(token)
