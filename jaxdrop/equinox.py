"""Equinox layers over the functional core: resolve ``inference``, check the key, call one function.

``jaxdrop.equinox.Dropout`` takes the arguments of ``equinox.nn.Dropout`` and behaves the same way: ``p`` is the
drop probability, ``inference=True`` makes it the identity, a call-time ``inference`` takes precedence over the
field, a key is required whenever dropout is applied (``RuntimeError`` otherwise), a static ``p == 0`` needs no
key, and ``equinox.nn.inference_mode(model)`` switches every layer of this module off (it sets fields named
``inference``). ``generator="jax"`` reproduces Equinox's masks for the same key. Inside ``jaxdrop.stochastic()``
the layers sample even in inference mode, and then need a key.

The variant layers follow Equinox's conventions: they see one example (``jax.vmap`` the model over the batch),
channels first; each resolves its flag, checks the key and calls one function of ``jaxdrop.functional``.

Equinox is an optional dependency: only this module imports it.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

try:
    import equinox as eqx
except ImportError as error:  # an optional dependency: say how to get it
    raise ImportError(
        "jaxdrop.equinox needs Equinox, which is not installed. Install it with `pip install equinox`."
    ) from error

import jaxdrop.functional as F
from jaxdrop import _checks, _layers, _masks

__all__ = ["AlphaDropout", "DropBlock", "DropPath", "Dropout", "GaussianDropout", "LockedDropout", "SpatialDropout"]

# As in equinox.nn.Dropout, only a static ``p == 0`` skips the key check: rate 1 still asks for one.
_KEY_FREE_RATES = (0.0,)


def _axes(value: int | Sequence[int]) -> int | tuple[int, ...]:
    """Lists become tuples: static fields are hashed by ``eqx.filter_jit``."""
    return tuple(value) if isinstance(value, Sequence) else value


def _static(default: Any, **kwargs: Any) -> Any:
    """A keyword-only static field: configuration that selects the traced program, not a leaf to train or swap."""
    return eqx.field(default=default, static=True, kw_only=True, **kwargs)


class _Stochastic(eqx.Module):
    """Shared plumbing: the documented ``__call__`` resolves the flag, checks the key and calls ``_forward``, each
    layer's one call into ``jaxdrop.functional``. Subclasses declare the fields ``p``, ``inference`` and
    ``generator``."""

    p: eqx.AbstractVar[jax.typing.ArrayLike]
    inference: eqx.AbstractVar[bool]
    generator: eqx.AbstractVar[_masks.Generator]

    def __check_init__(self) -> None:
        # Fail at construction, with the field's name, rather than at the first call.
        if _checks.is_static(self.p):
            _checks.probability(self.p, "p")
        _checks.static_bool(self.inference, "inference")
        _checks.choice(self.generator, _masks.GENERATORS, "generator")

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None) -> jax.Array:
        """Applies the layer to ``x``.

        Args:
          x: a floating-point array.
          key: a PRNG key; required unless the layer is in inference mode or ``p`` is statically 0.
          inference: takes precedence over the field when True or False; ``None`` uses the field.

        Returns:
          An array with the shape and dtype of ``x`` (``x`` itself in inference mode).

        Raises:
          RuntimeError: no ``key`` while dropout is applied.
        """
        name = type(self).__name__
        inference = _layers.is_deterministic(self.inference if inference is None else inference, "inference")
        if key is None and _layers.needs_key(self.p, inference, _KEY_FREE_RATES):
            note = _layers.stochastic_note()
            raise RuntimeError(f"{name} requires a key when running in non-deterministic mode.{note}")
        with jax.named_scope(f"jaxdrop.equinox.{name}"):
            return self._forward(x, key=key, deterministic=inference, generator=self.generator)

    @abc.abstractmethod
    def _forward(self, x: jax.Array, **common: Any) -> jax.Array:
        """The layer's one call into ``jaxdrop.functional``, given ``x``, ``self.p``, its own fields and ``common``:
        the checked ``key``, the resolved ``deterministic`` flag and ``generator``."""


def _one_example(fn: Callable[..., jax.Array], x: jax.typing.ArrayLike, *args: Any, **kwargs: Any) -> jax.Array:
    """``fn`` of a batch of one: for functions whose axis 0 is the batch, as an Equinox layer sees one example
    (the model is ``jax.vmap``-ed over the batch)."""
    return fn(jnp.asarray(x)[None], *args, **kwargs)[0]


def _batched(axis: int, x: jax.typing.ArrayLike, name: str) -> int:
    """An axis of one example ``x`` as an axis of the same example with a batch axis in front; checked against the
    example's rank, so an error names the value the user gave."""
    return _checks.axis(axis, jnp.ndim(x), name) + 1


class Dropout(_Stochastic):
    """Inverted dropout (Srivastava et al. 2014), a drop-in replacement for ``equinox.nn.Dropout``.

    Args:
      p: the fraction of entries to set to zero (on average), in [0, 1]. A static ``p == 0`` needs no key.
        ``p`` is a pytree leaf, as in Equinox, so it can be an array (traced under ``eqx.filter_jit``) or
        replaced with ``eqx.tree_at``.
      inference: if True, dropout is not applied. Toggled by ``eqx.nn.inference_mode`` or overridden at call time.
      deterministic: deprecated alternative to ``inference`` (as in Equinox; warns).
      broadcast_dims: axes along which one mask value is shared.
      inverted: scale kept elements by ``1 / (1 - p)`` in training (True) or scale by ``1 - p`` in inference.
      generator: ``"fast"`` (fused Threefry-2x32-13, the default), ``"fast16"`` (16-bit thresholds) or ``"jax"``
        (the exact masks of ``equinox.nn.Dropout``, ``jax.random.bernoulli(key, 1 - p, x.shape)``, for the same key).

    Examples:
      >>> import jax, jax.numpy as jnp, equinox as eqx, jaxdrop
      >>> layer = jaxdrop.equinox.Dropout(0.5)
      >>> x = jnp.ones((2, 4))
      >>> y = layer(x, key=jax.random.key(0))
      >>> bool(jnp.all((y == 0.0) | (y == 2.0)))
      True
      >>> bool(jnp.all(eqx.nn.inference_mode(layer)(x) == x))
      True
    """

    p: jax.typing.ArrayLike
    inference: bool
    broadcast_dims: int | Sequence[int] = eqx.field(static=True, converter=_axes)
    inverted: bool = eqx.field(static=True)
    generator: _masks.Generator = eqx.field(static=True)

    def __init__(
        self,
        p: jax.typing.ArrayLike = 0.5,
        inference: bool = False,
        *,
        deterministic: bool | None = None,
        broadcast_dims: int | Sequence[int] = (),
        inverted: bool = True,
        generator: _masks.Generator = "fast",
    ):
        if deterministic is not None:
            inference = _checks.static_bool(deterministic, "deterministic")
            warnings.warn("Dropout(deterministic=...) is deprecated in favour of Dropout(inference=...)", stacklevel=2)
        self.p = p
        self.inference = inference
        self.broadcast_dims = broadcast_dims
        self.inverted = inverted
        self.generator = generator

    @property
    def deterministic(self) -> bool:
        """Deprecated alias of ``inference``, as in Equinox."""
        return self.inference

    def __call__(
        self,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        inference: bool | None = None,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """Applies a random dropout mask to ``x``.

        Args:
          x: a floating-point array.
          key: a PRNG key; required unless the layer is in inference mode or ``p`` is statically 0.
          inference: takes precedence over the field when True or False; ``None`` uses the field.
          deterministic: deprecated alternative to ``inference`` (as in Equinox; warns).

        Returns:
          The masked ``x``, scaled to preserve the mean; same shape and dtype.

        Raises:
          RuntimeError: no ``key`` while dropout is applied.
        """
        if deterministic is not None:
            inference = deterministic
            warnings.warn(
                "Dropout()(deterministic=...) is deprecated in favour of Dropout()(inference=...)", stacklevel=2
            )
        return super().__call__(x, key=key, inference=inference)

    def _forward(self, x: jax.Array, **common: Any) -> jax.Array:
        return F.dropout(x, self.p, broadcast_dims=self.broadcast_dims, inverted=self.inverted, **common)


# The variant layers take ``(p, inference=False, *, <options>)`` and share the call ``layer(x, *, key=None,
# inference=None)``. As every Equinox layer, they see one example (``jax.vmap`` the model over the batch): axes
# are counted without a batch axis, and channels come first by default, as ``eqx.nn.Conv`` produces them.


class SpatialDropout(_Stochastic):
    """Drops whole feature maps of one example (Tompson et al. 2015): see `jaxdrop.spatial_dropout()`.

    Takes ``x`` of shape ``(channels, *spatial)`` (the output of ``eqx.nn.Conv``) or, with ``channel_axis=-1``,
    ``(*spatial, channels)``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.equinox.SpatialDropout(0.5)(jnp.ones((8, 5, 5)), key=jax.random.key(0))
      >>> bool(jnp.all(y == y[:, :1, :1]))  # one decision per channel
      True
    """

    p: jax.typing.ArrayLike
    inference: bool = False
    channel_axis: int = _static(0)
    generator: _masks.Generator = _static("fast")

    def _forward(self, x: jax.Array, **common: Any) -> jax.Array:
        channel_axis = _batched(self.channel_axis, x, "channel_axis")
        return _one_example(F.spatial_dropout, x, self.p, channel_axis=channel_axis, **common)


class DropPath(_Stochastic):
    """Stochastic depth: drops one example's residual branch as a whole (Huang et al. 2016); see
    `jaxdrop.drop_path()` (``mode="batch"``: one decision for the whole input, the example here).

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.equinox.DropPath(0.5)(jnp.ones((4, 3)), key=jax.random.key(0))
      >>> bool(jnp.all(y == 0.0) | jnp.all(y == 2.0))
      True
    """

    p: jax.typing.ArrayLike
    inference: bool = False
    scale_by_keep: bool = _static(True)
    generator: _masks.Generator = _static("fast")

    def _forward(self, x: jax.Array, **common: Any) -> jax.Array:
        return F.drop_path(x, self.p, mode="batch", scale_by_keep=self.scale_by_keep, **common)


class DropBlock(_Stochastic):
    """Drops contiguous blocks of one example's feature maps (Ghiasi et al. 2018): see `jaxdrop.dropblock()`.

    Takes ``x`` of shape ``(channels, *spatial)`` or, with ``channel_axis=-1``, ``(*spatial, channels)``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> layer = jaxdrop.equinox.DropBlock(0.1, block_size=3)
      >>> layer(jnp.ones((4, 8, 8)), key=jax.random.key(0)).shape
      (4, 8, 8)
    """

    p: jax.typing.ArrayLike
    inference: bool = False
    block_size: int | Sequence[int] = _static(7, converter=_axes)
    channel_axis: int = _static(0)
    share_across_channels: bool = _static(False)
    generator: _masks.Generator = _static("fast")

    def _forward(self, x: jax.Array, **common: Any) -> jax.Array:
        return _one_example(
            F.dropblock,
            x,
            self.p,
            block_size=self.block_size,
            channel_axis=_batched(self.channel_axis, x, "channel_axis"),
            share_across_channels=self.share_across_channels,
            **common,
        )


class LockedDropout(_Stochastic):
    """Variational (locked) dropout: one mask per sequence, shared over time; see `jaxdrop.locked_dropout()`.

    Takes one sequence, ``(time, features)`` by default (``time_axis=0``).

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.equinox.LockedDropout(0.5)(jnp.ones((6, 4)), key=jax.random.key(0))
      >>> bool(jnp.all(y == y[:1, :]))
      True
    """

    p: jax.typing.ArrayLike
    inference: bool = False
    time_axis: int = _static(0)
    generator: _masks.Generator = _static("fast")

    def _forward(self, x: jax.Array, **common: Any) -> jax.Array:
        return _one_example(F.locked_dropout, x, self.p, time_axis=_batched(self.time_axis, x, "time_axis"), **common)


class AlphaDropout(_Stochastic):
    """Alpha dropout for self-normalising networks (Klambauer et al. 2017): see `jaxdrop.alpha_dropout()`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> jaxdrop.equinox.AlphaDropout(0.1)(jnp.ones((4, 16)), key=jax.random.key(0)).shape
      (4, 16)
    """

    p: jax.typing.ArrayLike
    inference: bool = False
    generator: _masks.Generator = _static("fast")

    def _forward(self, x: jax.Array, **common: Any) -> jax.Array:
        return F.alpha_dropout(x, self.p, **common)


class GaussianDropout(_Stochastic):
    """Multiplicative Gaussian noise with dropout's variance: see `jaxdrop.gaussian_dropout()`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.equinox.GaussianDropout(0.5)(jnp.ones(100_000), key=jax.random.key(0))
      >>> round(float(y.mean()), 1), round(float(y.var()), 1)
      (1.0, 1.0)
    """

    p: jax.typing.ArrayLike
    inference: bool = False
    generator: _masks.Generator = _static("fast")

    def _forward(self, x: jax.Array, **common: Any) -> jax.Array:
        return F.gaussian_dropout(x, self.p, **common)
