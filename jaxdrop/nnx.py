"""Flax NNX layers over the functional core: resolve ``deterministic``, get a key, call one function.

``jaxdrop.nnx.Dropout`` takes the same arguments as ``flax.nnx.Dropout`` and behaves the same way: it forks its own
RNG stream from ``rngs`` at construction (so two layers never share a mask), advances it on every call (so two
calls never share one), follows ``model.train()`` / ``model.eval()`` and ``nnx.view(model, deterministic=...)``,
and a call-time ``deterministic`` or ``rngs`` takes precedence over the attribute.

Same-mask pitfalls this module addresses (and its tests check):

- ``nnx.vmap`` with the module broadcast (``in_axes=None``) gives every sample the same key. Either split the
  stream (``nnx.split_rngs`` + ``nnx.StateAxes({nnx.RngState: 0, ...: None})``) or set ``axis_name`` on the layer
  and on ``nnx.vmap``: the layer then folds ``lax.axis_index`` into its key.
- ``nnx.scan`` with the module broadcast replays the same key at every step; carry the module
  (``in_axes=(nnx.Carry, ...)``) or pass a per-step key with ``rngs=``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import jax
from flax import nnx
from flax.nnx import rnglib
from flax.nnx.module import first_from

import jaxdrop.functional as F
from jaxdrop import _checks, _layer_utils, _masks

__all__ = ["Dropout"]

_NO_DETERMINISTIC = (
    "No `deterministic` argument was provided to {name}. Consider one of the following options:\n\n"
    "1. Pass `deterministic` to the {name} constructor:\n\n"
    "  self.dropout = {name}(..., deterministic=True/False)\n\n"
    "2. Pass `deterministic` to the {name} __call__:\n\n"
    "  self.dropout(x, deterministic=True/False)\n\n"
    "3. Use `nnx.view` to create a view of the model with a specific `deterministic` value:\n\n"
    "  model_view = nnx.view(model, deterministic=True/False)\n"
)
# The wording of flax.nnx.Dropout's error, so code and tests matching on it keep working.
_NO_RNGS = (
    "`deterministic` is False, but no `rngs` argument was provided to {name} as either a __call__ argument or "
    "class attribute. Pass `rngs=nnx.Rngs({collection}=seed)` to the constructor or `rngs=` at call time."
)


class _Stochastic(nnx.Module):
    """Shared plumbing: the RNG stream a layer owns, the flag resolution and ``set_view`` for ``nnx.view``."""

    kind: ClassVar[str] = "dropout"
    # Static rates at which the layer returns without drawing a key (so no RNG is needed or consumed).
    key_free_rates: ClassVar[tuple[float, ...]] = (0.0, 1.0)

    def _init_stochastic(
        self,
        deterministic: bool | None,
        rng_collection: str,
        rngs: rnglib.Rngs | rnglib.RngStream | None,
        axis_name: str | Sequence[str] | None,
    ) -> None:
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.axis_name = axis_name
        if isinstance(rngs, rnglib.Rngs):
            self.rngs = rngs[rng_collection].fork()  # a stream of its own: a different mask from every other layer
        elif isinstance(rngs, rnglib.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise TypeError(f"rngs must be a Rngs, RngStream or None, but got {type(rngs)}.")

    def _resolve(
        self,
        rate: jax.typing.ArrayLike,
        deterministic: bool | None,
        rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None,
    ) -> tuple[bool, jax.Array | None]:
        """Returns ``(deterministic, key)``; ``key`` is None when no randomness is needed."""
        name = type(self).__name__
        deterministic = first_from(deterministic, self.deterministic, error_msg=_NO_DETERMINISTIC.format(name=name))
        deterministic = _checks.static_bool(deterministic, "deterministic")
        if not _layer_utils.needs_key(rate, deterministic, self.key_free_rates):
            return deterministic, None
        rngs = first_from(rngs, self.rngs, error_msg=_NO_RNGS.format(name=name, collection=self.rng_collection))
        if isinstance(rngs, rnglib.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, rnglib.RngStream):
            key = rngs()
        elif isinstance(rngs, jax.Array):
            key = rngs
        else:
            raise TypeError(f"rngs must be a Rngs, RngStream or jax.Array, but got {type(rngs)}.")
        return deterministic, _layer_utils.fold_axes(key, self.axis_name)

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, the layer is the identity (no masks are drawn).
        """
        if deterministic is not None:
            self.deterministic = deterministic


class Dropout(_Stochastic):
    """Inverted dropout (Srivastava et al. 2014), a drop-in replacement for ``flax.nnx.Dropout``.

    Args:
      rate: the probability of dropping an element (not the keep rate), in [0, 1].
      broadcast_dims: axes that share one mask value.
      deterministic: if True, the input is returned unchanged. ``model.eval()`` sets it to True,
        ``model.train()`` to False; a call-time value takes precedence.
      rng_collection: the stream taken from ``rngs`` when ``rngs`` is an ``nnx.Rngs``.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream``; the layer forks its own stream from it. May be left out and
        passed at call time instead.
      inverted: scale kept elements by ``1 / (1 - rate)`` in training (True) or by ``1 - rate`` at inference.
      generator: ``"fast"`` (fused Threefry-2x32-13, the default) or ``"jax"`` (the exact masks of
        ``flax.nnx.Dropout`` for the same RNG state).
      axis_name: name(s) of ``nnx.vmap``/``jax.vmap`` axes whose index is folded into the key, so each sample
        draws its own mask even when the module is broadcast over that axis.

    Example:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> layer = jaxdrop.nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
      >>> x = jnp.ones((2, 4))
      >>> y1, y2 = layer(x), layer(x)  # a fresh mask per call
      >>> bool(jnp.all((y1 == 0.0) | (y1 == 2.0))), bool(jnp.any(y1 != y2))
      (True, True)
      >>> layer.eval()
      >>> bool(jnp.all(layer(x) == x))
      True
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        inverted: bool = True,
        generator: _masks.Generator = "fast",
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        self.inverted = inverted
        self.generator = generator
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None = None,
        rate: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies a random dropout mask to ``inputs``.

        Args:
          inputs: the floating-point array to mask.
          deterministic: takes precedence over the attribute when given.
          rngs: a key, ``RngStream`` or ``Rngs`` used instead of the layer's own stream.
          rate: a call-time rate replacing the attribute; may be traced (a schedule) without recompiling.

        Returns:
          The masked inputs, scaled to preserve the mean; same shape and dtype.
        """
        rate = _layer_utils.resolve_rate(self.rate, rate)
        deterministic, key = self._resolve(rate, deterministic, rngs)
        return F.dropout(
            inputs,
            rate,
            key=key,
            deterministic=deterministic,
            broadcast_dims=self.broadcast_dims,
            inverted=self.inverted,
            generator=self.generator,
        )
