"""Flax Linen layers over the functional core: resolve ``deterministic``, get a key, call one function.

``jaxdrop.linen.Dropout`` takes the same arguments as ``flax.linen.Dropout`` and follows the same rules
(``nn.merge_param`` for ``deterministic``, ``make_rng(rng_collection)`` for the key, rates 0 and 1 need no key), so
replacing the import is enough. ``self.make_rng`` folds the module path and a per-call counter into the key, so two
layers, or two calls of one layer, never share a mask; inside ``nn.scan``/``nn.vmap`` pass
``split_rngs={'dropout': True}`` for a fresh mask per step or per sample.

What differs: the keep-mask comes from the fused generator by default (``generator="jax"`` reproduces flax's masks),
the mask is not stored for the backward pass, the rate is validated, and ``__call__`` accepts a traced ``rate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax

import jaxdrop.functional as F
from jaxdrop import _checks, _layer_utils, _masks

__all__ = ["Dropout"]


class _Stochastic(nn.Module):
    """Shared plumbing (no fields): the flag merge and the key, exactly as ``flax.linen.Dropout`` does them."""

    kind: ClassVar[str] = "dropout"
    # Static rates at which the layer returns without drawing a key (so no RNG is needed or consumed).
    key_free_rates: ClassVar[tuple[float, ...]] = (0.0, 1.0)

    def _resolve(
        self,
        rate: jax.typing.ArrayLike,
        deterministic: bool | None,
        rng: jax.Array | None,
    ) -> tuple[bool, jax.Array | None]:
        """Returns ``(deterministic, key)``; ``key`` is None when no randomness is needed."""
        deterministic = _checks.static_bool(
            nn.merge_param("deterministic", self.deterministic, deterministic), "deterministic"
        )
        if not _layer_utils.needs_key(rate, deterministic, self.key_free_rates):
            return deterministic, None
        if rng is None:
            rng = self.make_rng(self.rng_collection)  # folds in the module path and the call count
        return deterministic, _layer_utils.fold_axes(rng, self.axis_name)


class Dropout(_Stochastic):
    """Inverted dropout (Srivastava et al. 2014), a drop-in replacement for ``flax.linen.Dropout``.

    Attributes:
      rate: the probability of dropping an element (not the keep rate), in [0, 1].
      broadcast_dims: axes that share one mask value (e.g. the time axis for one mask per sequence).
      deterministic: if True, the input is returned unchanged; if None, it must be passed at call time.
      rng_collection: the RNG stream the key is drawn from with ``make_rng``.
      inverted: scale kept elements by ``1 / (1 - rate)`` in training (True) or scale by ``1 - rate`` at
        inference (False, classic dropout).
      generator: ``"fast"`` (fused Threefry-2x32-13, the default) or ``"jax"`` (the exact masks of
        ``flax.linen.Dropout`` for the same RNGs).
      axis_name: name(s) of mapped axes (``nn.vmap``/``jax.vmap``/``shard_map``) whose index is folded into the
        key, so each slice draws its own mask even when the RNG is not split along that axis.

    Example:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> layer = jaxdrop.linen.Dropout(rate=0.5)
      >>> x = jnp.ones((2, 4))
      >>> y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> bool(jnp.all((y == 0.0) | (y == 2.0)))
      True
      >>> bool(jnp.all(layer.apply({}, x, deterministic=True) == x))
      True
    """

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    inverted: bool = True
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None

    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
        *,
        rate: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies a random dropout mask to ``inputs``.

        Args:
          inputs: the floating-point array to mask.
          deterministic: overrides nothing: it may be given here or as an attribute, not both (``merge_param``).
          rng: a key to use instead of ``make_rng(rng_collection)``.
          rate: a call-time rate replacing the attribute; may be traced (a schedule) without recompiling.

        Returns:
          The masked inputs, scaled to preserve the mean; same shape and dtype.
        """
        rate = _layer_utils.resolve_rate(self.rate, rate)
        deterministic, key = self._resolve(rate, deterministic, rng)
        return F.dropout(
            inputs,
            rate,
            key=key,
            deterministic=deterministic,
            broadcast_dims=self.broadcast_dims,
            inverted=self.inverted,
            generator=self.generator,
        )
