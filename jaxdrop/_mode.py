"""``jaxdrop.stochastic()``: turn jaxdrop's dropout layers on without touching any other layer's mode.

Monte Carlo dropout needs dropout sampling at prediction time while everything else (BatchNorm's running
statistics, flax's own ``Dropout`` when you want it off, any ``train`` flag of your model) stays in evaluation mode.
A model's ``train``/``deterministic`` flag switches all of them at once; this context switches only jaxdrop's layers
(linen, nnx, equinox), which read it when they are traced. ``jaxdrop.mc.predict`` and ``jaxdrop.mc.sample`` enter it
for you.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_FORCED: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxdrop_stochastic", default=False)


@contextlib.contextmanager
def stochastic(enabled: bool = True) -> Iterator[None]:
    """Within this context jaxdrop's layers sample dropout masks even when called with ``deterministic=True``.

    Only jaxdrop's layers (``jaxdrop.linen``, ``jaxdrop.nnx``, ``jaxdrop.equinox``) read it; BatchNorm and every other
    layer keep the mode your call gives them, so ``model.apply(variables, x, train=False)`` inside the context is
    "evaluation mode with MC dropout". The flag is read when a layer is traced: a function already compiled by
    ``jax.jit`` outside the context keeps the program it was compiled with (call it inside the context before it is
    first traced, or use ``jaxdrop.mc.predict``/``jaxdrop.mc.sample``, which enter the context while they trace).
    Rates, keys and RNG collections are unchanged: a linen model still needs its ``"dropout"`` RNG.

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
    token = _FORCED.set(bool(enabled))
    try:
        yield
    finally:
        _FORCED.reset(token)


def is_stochastic() -> bool:
    """True inside ``jaxdrop.stochastic()`` (read by the layers when they resolve their ``deterministic`` flag)."""
    return _FORCED.get()
