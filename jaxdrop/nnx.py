"""Flax NNX layers over the functional core: resolve ``deterministic``, get a key, call one function.

``jaxdrop.nnx.Dropout`` takes the same arguments as ``flax.nnx.Dropout`` and behaves the same way: it forks its own
RNG stream from ``rngs`` at construction (so two layers never share a mask), advances it on every call (so two
calls never share one), follows ``model.train()`` / ``model.eval()`` and ``nnx.view(model, deterministic=...)``,
and a call-time ``deterministic`` or ``rngs`` takes precedence over the attribute. Inside ``jaxdrop.stochastic()``
every layer here samples even when ``deterministic`` is True (after ``model.eval()``): MC dropout with the rest of
the model in evaluation mode.

Same-mask pitfalls this module addresses (and its tests check):

- ``nnx.vmap`` with the module broadcast (``in_axes=None``) gives every sample the same key. Either split the
  stream (``nnx.split_rngs`` + ``nnx.StateAxes({nnx.RngState: 0, ...: None})``) or set ``axis_name`` on the layer
  and on ``nnx.vmap``: the layer then folds ``lax.axis_index`` into its key.
- ``nnx.scan`` with the module broadcast replays the same key at every step; carry the module
  (``in_axes=(nnx.Carry, ...)``) or pass a per-step key with ``rngs=``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import rnglib

import jaxdrop.functional as F
from jaxdrop import _checks, _layers, _masks

__all__ = [
    "AlphaDropout",
    "ConcreteDropout",
    "ConcreteRegularizer",
    "DropBlock",
    "DropConnectConv",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "LockedDropout",
    "SpatialDropout",
    "TokenDropout",
    "WordDropout",
    "attention_fn",
    "concrete_regularization",
]

_T = TypeVar("_T")

# The wording of flax.nnx.Dropout's errors, so code and tests matching on them keep working.
_NO_DETERMINISTIC = (
    "No `deterministic` argument was provided to {name}. Consider one of the following options:\n\n"
    "1. Pass `deterministic` to the {name} constructor:\n\n"
    "  self.dropout = {name}(..., deterministic=True/False)\n\n"
    "2. Pass `deterministic` to the {name} __call__:\n\n"
    "  self.dropout(x, deterministic=True/False)\n\n"
    "3. Use `nnx.view` to create a view of the model with a specific `deterministic` value:\n\n"
    "  model_view = nnx.view(model, deterministic=True/False)\n"
)
_NO_RNGS = (
    "`deterministic` is False, but no `rngs` argument was provided to {name} as either a __call__ argument or "
    "class attribute. Pass `rngs=nnx.Rngs({collection}=seed)` to the constructor or `rngs=` at call time."
)


def _first_from(*values: _T | None, error_msg: str) -> _T:
    """The first value that is not None (the call-time argument, then the attribute), else ``ValueError(error_msg)``.

    What ``flax.nnx.Dropout`` does with ``flax.nnx.module.first_from``, which flax keeps private.
    """
    for value in values:
        if value is not None:
            return value
    raise ValueError(error_msg)


class _Stochastic(nnx.Module):
    """Shared plumbing: the RNG stream a layer owns, the flag resolution and ``set_view`` for ``nnx.view``."""

    kind: ClassVar[str] = "dropout"  # the dropout family ``jaxdrop.inspect`` reports
    rate_field: ClassVar[str] = "rate"  # the attribute ``jaxdrop.inspect`` reports as the rate
    # Static rates at which the layer returns without drawing a key (so no RNG is needed or consumed).
    key_free_rates: ClassVar[tuple[float, ...]] = (0.0, 1.0)

    def _init_stochastic(
        self,
        deterministic: bool | None,
        rng_collection: str,
        rngs: rnglib.Rngs | rnglib.RngStream | None,
        axis_name: str | Sequence[str] | None,
    ) -> None:
        # Checked here: a layer in evaluation mode never draws a key, so these would go unseen until training.
        _checks.identifier(rng_collection, "rng_collection")
        _checks.axis_names(axis_name, "axis_name")
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
        rate: jax.typing.ArrayLike | None,
        deterministic: bool | None,
        rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None,
    ) -> tuple[jax.typing.ArrayLike, bool, jax.Array | None]:
        """Returns ``(rate, deterministic, key)``: the call-time rate, else the layer's own; the call-time flag, else
        the attribute; and the key, None when no randomness is needed."""
        name = type(self).__name__
        rate = getattr(self, self.rate_field) if rate is None else rate
        deterministic = _first_from(deterministic, self.deterministic, error_msg=_NO_DETERMINISTIC.format(name=name))
        deterministic = _layers.is_deterministic(deterministic, layer=self)  # per-site MC chooses by the module
        if not _layers.needs_key(rate, deterministic, self.key_free_rates):
            return rate, deterministic, None
        no_rngs = _NO_RNGS.format(name=name, collection=self.rng_collection) + _layers.stochastic_note()
        rngs = _first_from(rngs, self.rngs, error_msg=no_rngs)
        if isinstance(rngs, rnglib.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, rnglib.RngStream):
            key = rngs()
        elif isinstance(rngs, jax.Array):
            key = rngs
        else:
            raise TypeError(f"rngs must be a Rngs, RngStream or jax.Array, but got {type(rngs)}.")
        return rate, deterministic, _layers.fold_axes(key, self.axis_name)

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, the layer is the identity (no masks are drawn).
        """
        if deterministic is not None:
            self.deterministic = deterministic


class _Functional(_Stochastic):
    """A layer whose call is one function of ``jaxdrop.functional``, given the layer's ``options`` attributes."""

    function: ClassVar[Callable[..., jax.Array]]  # ``function(inputs, rate, *, key, deterministic, **options)``
    options: ClassVar[tuple[str, ...]] = ()  # the attributes passed on to ``function`` by keyword

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None = None,
        rate: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies the layer to ``inputs``.

        Args:
          inputs: the floating-point array.
          deterministic: takes precedence over the attribute when given; True is the identity.
          rngs: a key, ``RngStream`` or ``Rngs`` used instead of the layer's own stream.
          rate: a call-time value replacing the attribute (``stddev`` for ``GaussianNoise``); may be traced (a
            schedule) without recompiling.

        Returns:
          An array with the shape and dtype of ``inputs``.
        """
        rate, deterministic, key = self._resolve(rate, deterministic, rngs)
        options = {name: getattr(self, name) for name in self.options}
        return self.function(inputs, rate, key=key, deterministic=deterministic, **options)


class Dropout(_Functional):
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
      generator: ``"fast"`` (fused Threefry-2x32-13, the default), ``"fast16"`` (16-bit thresholds) or ``"jax"``
        (the exact masks of ``flax.nnx.Dropout`` for the same RNG state).
      axis_name: name(s) of ``nnx.vmap``/``jax.vmap`` axes whose index is folded into the key, so each sample
        draws its own mask even when the module is broadcast over that axis.

    Examples:
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

    function = staticmethod(F.dropout)
    options = ("broadcast_dims", "inverted", "generator")

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


# The variant layers below share Dropout's call, ``(inputs, *, deterministic=None, rngs=None, rate=None)``, and the
# tail of its constructor, ``deterministic=False, rng_collection="dropout", rngs=None, axis_name=None``.


class SpatialDropout(_Functional):
    """Drops whole feature maps (Tompson et al. 2015): see `jaxdrop.spatial_dropout()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> y = jaxdrop.nnx.SpatialDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 5, 8)))
      >>> bool(jnp.all(y == y[:, :1, :1, :]))
      True
    """

    kind = "spatial"
    function = staticmethod(F.spatial_dropout)
    options = ("channel_axis", "generator")

    def __init__(
        self,
        rate: float,
        *,
        channel_axis: int = -1,
        generator: _masks.Generator = "fast",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate, self.channel_axis, self.generator = rate, channel_axis, generator
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)


class AlphaDropout(_Functional):
    """Alpha dropout for self-normalising networks (Klambauer et al. 2017): see `jaxdrop.alpha_dropout()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> jaxdrop.nnx.AlphaDropout(0.1, rngs=nnx.Rngs(0))(jnp.ones((4, 16))).shape
      (4, 16)
    """

    kind = "alpha"
    function = staticmethod(F.alpha_dropout)
    options = ("generator",)

    def __init__(
        self,
        rate: float,
        *,
        generator: _masks.Generator = "fast",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate, self.generator = rate, generator
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)


class FeatureAlphaDropout(_Functional):
    """Alpha dropout of whole feature maps: see `jaxdrop.feature_alpha_dropout()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> jaxdrop.nnx.FeatureAlphaDropout(0.2, rngs=nnx.Rngs(0))(jnp.ones((2, 6, 6, 4))).shape
      (2, 6, 6, 4)
    """

    kind = "alpha"
    function = staticmethod(F.feature_alpha_dropout)
    options = ("channel_axis", "generator")

    def __init__(
        self,
        rate: float,
        *,
        channel_axis: int = -1,
        generator: _masks.Generator = "fast",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate, self.channel_axis, self.generator = rate, channel_axis, generator
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)


class GaussianDropout(_Functional):
    """Multiplicative Gaussian noise with dropout's variance: see `jaxdrop.gaussian_dropout()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> y = jaxdrop.nnx.GaussianDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones(100_000))
      >>> round(float(y.mean()), 1), round(float(y.var()), 1)
      (1.0, 1.0)
    """

    kind = "gaussian"
    function = staticmethod(F.gaussian_dropout)

    def __init__(
        self,
        rate: float,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate = rate
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)


class GaussianNoise(_Functional):
    """Additive zero-mean Gaussian noise of standard deviation ``stddev``: see `jaxdrop.gaussian_noise()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> y = jaxdrop.nnx.GaussianNoise(0.1, rngs=nnx.Rngs(0))(jnp.zeros(100_000))
      >>> round(float(y.std()), 2)
      0.1
    """

    kind = "noise"
    rate_field = "stddev"
    key_free_rates = (0.0,)
    function = staticmethod(F.gaussian_noise)

    def __init__(
        self,
        stddev: float,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.stddev = stddev
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)


class DropPath(_Functional):
    """Stochastic depth: drops a whole residual branch per example (Huang et al. 2016); see `jaxdrop.drop_path()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> y = jaxdrop.nnx.DropPath(0.5, rngs=nnx.Rngs(0))(jnp.ones((8, 3)))
      >>> bool(jnp.all((y == 0.0) | (y == 2.0))), bool(jnp.all(y == y[:, :1]))
      (True, True)
    """

    kind = "drop_path"
    function = staticmethod(F.drop_path)
    options = ("mode", "batch_axis", "scale_by_keep", "generator")

    def __init__(
        self,
        rate: float,
        *,
        mode: str = "row",
        batch_axis: int = 0,
        scale_by_keep: bool = True,
        generator: _masks.Generator = "fast",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate, self.mode, self.batch_axis, self.scale_by_keep = rate, mode, batch_axis, scale_by_keep
        self.generator = generator
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)


class DropBlock(_Functional):
    """Drops contiguous blocks of feature maps (Ghiasi et al. 2018): see `jaxdrop.dropblock()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> jaxdrop.nnx.DropBlock(0.1, block_size=3, rngs=nnx.Rngs(0))(jnp.ones((2, 8, 8, 4))).shape
      (2, 8, 8, 4)
    """

    kind = "dropblock"
    function = staticmethod(F.dropblock)
    options = ("block_size", "channel_axis", "share_across_channels", "generator")

    def __init__(
        self,
        rate: float,
        *,
        block_size: int | Sequence[int] = 7,
        channel_axis: int = -1,
        share_across_channels: bool = False,
        generator: _masks.Generator = "fast",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate, self.block_size, self.channel_axis = rate, block_size, channel_axis
        self.share_across_channels, self.generator = share_across_channels, generator
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)


class LockedDropout(_Functional):
    """Variational (locked) dropout: one mask per sequence, shared over time; see `jaxdrop.locked_dropout()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> y = jaxdrop.nnx.LockedDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones((2, 6, 4)))
      >>> bool(jnp.all(y == y[:, :1, :]))
      True
    """

    kind = "locked"
    function = staticmethod(F.locked_dropout)
    options = ("time_axis", "generator")

    def __init__(
        self,
        rate: float,
        *,
        time_axis: int = 1,
        generator: _masks.Generator = "fast",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate, self.time_axis, self.generator = rate, time_axis, generator
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)


class TokenDropout(_Functional):
    """Drops whole token vectors (every feature of a position at once); see `jaxdrop.token_dropout()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> y = jaxdrop.nnx.TokenDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones((2, 6, 4)))
      >>> bool(jnp.all(y == y[..., :1]))
      True
    """

    kind = "token"
    function = staticmethod(F.token_dropout)
    options = ("feature_axis", "generator")

    def __init__(
        self,
        rate: float,
        *,
        feature_axis: int = -1,
        generator: _masks.Generator = "fast",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate, self.feature_axis, self.generator = rate, feature_axis, generator
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)


class WordDropout(_Stochastic):
    """Drops word types: every occurrence of a dropped token id in a sequence; see `jaxdrop.word_dropout()`.

    Called as ``layer(embedded, token_ids, *, deterministic=None, rngs=None, rate=None)``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> ids = jnp.array([[3, 5, 3, 3, 5, 7]])
      >>> y = jaxdrop.nnx.WordDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones((1, 6, 2)), ids)
      >>> len({float(v) for v in y[0, ids[0] == 3, 0]})
      1
    """

    kind = "word"

    def __init__(
        self,
        rate: float,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        self.rate = rate
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)

    def __call__(
        self,
        inputs: jax.Array,
        token_ids: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None = None,
        rate: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies word dropout to ``inputs`` given their ``token_ids``.

        Args:
          inputs: the embedded tokens, ``(..., time, features)``.
          token_ids: the integer ids of the tokens, ``(..., time)``.
          deterministic: takes precedence over the attribute when given; True is the identity.
          rngs: a key, ``RngStream`` or ``Rngs`` used instead of the layer's own stream.
          rate: a call-time value replacing the attribute; may be traced without recompiling.

        Returns:
          An array with the shape and dtype of ``inputs``.
        """
        rate, deterministic, key = self._resolve(rate, deterministic, rngs)
        return F.word_dropout(inputs, token_ids, rate, key=key, deterministic=deterministic)


# ---------------------------------------------------------------- DropConnect: a masked kernel per call


class _DropConnect(_Stochastic):
    """Masks ``self.kernel`` for the duration of the wrapped flax layer's call; the layer's maths is unchanged."""

    kind = "dropconnect"
    key_free_rates = (0.0,)

    kernel: nnx.Param  # for type checkers: the parameter of the wrapped nnx.Linear or nnx.Conv

    def _init_dropconnect(
        self,
        rate: float,
        inverted: bool,
        generator: _masks.Generator,
        deterministic: bool | None,
        rng_collection: str,
        rngs: rnglib.Rngs,
        axis_name: str | Sequence[str] | None,
    ) -> None:
        # Checked here: a deterministic call uses the plain kernel and never reaches `F.dropconnect`.
        _checks.probability(rate, "rate")
        _checks.static_bool(inverted, "inverted")
        _checks.choice(generator, _masks.GENERATORS, "generator")
        self.rate, self.inverted, self.generator = rate, inverted, generator
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None = None,
        rate: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies the wrapped flax layer with its kernel masked by DropConnect.

        Args:
          inputs: the layer's input.
          deterministic: takes precedence over the attribute when given; True uses the plain kernel (scaled by
            ``1 - rate`` for classic, non-inverted DropConnect).
          rngs: a key, ``RngStream`` or ``Rngs`` used instead of the layer's own stream.
          rate: a call-time value replacing the attribute; may be traced without recompiling.

        Returns:
          The wrapped layer's output.
        """
        layer_call = super(_Stochastic, self).__call__  # the next class in the MRO: nnx.Linear or nnx.Conv
        rate, deterministic, key = self._resolve(rate, deterministic, rngs)
        kernel = self.kernel[...]
        # The masked kernel is a function of the parameter, so gradients reach the parameter through it. A
        # deterministic call goes through the same function: it checks the rate and, for classic (non-inverted)
        # DropConnect, scales the kernel by 1 - rate, as linen's layer does.
        self.kernel[...] = F.dropconnect(
            kernel, rate, key=key, deterministic=deterministic, inverted=self.inverted, generator=self.generator
        )
        try:
            return layer_call(inputs)
        finally:
            self.kernel[...] = kernel


class DropConnectLinear(_DropConnect, nnx.Linear):  # type: ignore[misc]  # our call: no `out_sharding`
    """``flax.nnx.Linear`` whose kernel is masked by DropConnect on each call (Wan et al. 2013).

    Takes ``nnx.Linear``'s arguments plus ``rate`` and the usual dropout arguments; its parameters are those of
    ``nnx.Linear``. One mask per call, shared by the batch; deterministic calls use the plain kernel.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> layer = jaxdrop.nnx.DropConnectLinear(4, 3, rate=0.5, rngs=nnx.Rngs(0))
      >>> x = jnp.ones((2, 4))
      >>> layer(x).shape, bool(jnp.all(layer(x, deterministic=True) == x @ layer.kernel[...] + layer.bias[...]))
      ((2, 3), True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rate: float = 0.5,
        inverted: bool = True,
        generator: _masks.Generator = "fast",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs,
        axis_name: str | Sequence[str] | None = None,
        **linear_kwargs: Any,
    ):
        nnx.Linear.__init__(self, in_features, out_features, rngs=rngs, **linear_kwargs)
        self._init_dropconnect(rate, inverted, generator, deterministic, rng_collection, rngs, axis_name)


class DropConnectConv(_DropConnect, nnx.Conv):  # type: ignore[misc]  # our call: no `out_sharding`
    """``flax.nnx.Conv`` whose kernel is masked by DropConnect on each call (Wan et al. 2013).

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> layer = jaxdrop.nnx.DropConnectConv(1, 2, kernel_size=(3, 3), rate=0.3, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((1, 5, 5, 1))).shape
      (1, 5, 5, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        rate: float = 0.5,
        inverted: bool = True,
        generator: _masks.Generator = "fast",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs,
        axis_name: str | Sequence[str] | None = None,
        **conv_kwargs: Any,
    ):
        nnx.Conv.__init__(self, in_features, out_features, kernel_size, rngs=rngs, **conv_kwargs)
        self._init_dropconnect(rate, inverted, generator, deterministic, rng_collection, rngs, axis_name)


# ---------------------------------------------------------------- concrete dropout: a learned rate


class ConcreteRegularizer(nnx.Variable):
    """The regulariser a ``ConcreteDropout`` layer computed on its last call (a scalar)."""


def _uniform_logit(key, init_min: float, init_max: float) -> jax.Array:
    """The initial ``p_logit``: uniform in logit space between ``logit(init_min)`` and ``logit(init_max)``."""
    low, high = (math.log(p) - math.log1p(-p) for p in (init_min, init_max))
    if low == high:
        return jnp.asarray(low, jnp.float32)
    return jax.random.uniform(key, (), jnp.float32, low, high)


class ConcreteDropout(_Stochastic):
    """Concrete dropout: a dropout layer that learns its own rate (Gal, Hron & Kendall 2017).

    Owns ``p_logit`` (an ``nnx.Param``, initialised uniformly in logit space between ``logit(init_min)`` and
    ``logit(init_max)``: ``p = 0.1`` by default, as the reference implementation). Every call stores its
    regulariser (`jaxdrop.concrete_dropout_regularizer()`) in ``self.regularizer`` (a
    ``ConcreteRegularizer`` variable); add `concrete_regularization()` of the model to the loss.

    If ``layer`` is given, it is applied to the dropped input and its ``kernel`` enters the weight term;
    otherwise pass ``weight=`` at call time, or only the entropy term is used. ``input_dim`` defaults to the
    input's last axis.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> rngs = nnx.Rngs(0)
      >>> layer = jaxdrop.nnx.ConcreteDropout(nnx.Linear(4, 3, rngs=rngs), weight_regularizer=1e-4,
      ...                                     dropout_regularizer=1e-3, rngs=rngs)
      >>> round(float(layer.rate), 3), layer(jnp.ones((2, 4))).shape
      (0.1, (2, 3))
      >>> bool(jaxdrop.nnx.concrete_regularization(layer) == layer.regularizer[...])
      True
    """

    kind = "concrete"
    key_free_rates = ()

    def __init__(
        self,
        layer: nnx.Module | None = None,
        *,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        init_min: float = 0.1,
        init_max: float = 0.1,
        temperature: float = 0.1,
        broadcast_dims: Sequence[int] = (),
        input_dim: int | None = None,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | None = None,
        axis_name: str | Sequence[str] | None = None,
    ):
        _checks.optional_callable(layer, "layer")
        _checks.ordered(
            _checks.probability(init_min, "init_min", open_interval=True),
            _checks.probability(init_max, "init_max", open_interval=True),
            "init_min",
            "init_max",
        )
        if input_dim is not None:
            _checks.positive_int(input_dim, "input_dim")
        self.layer = layer
        self.weight_regularizer, self.dropout_regularizer = weight_regularizer, dropout_regularizer
        self.temperature, self.broadcast_dims, self.input_dim = temperature, broadcast_dims, input_dim
        init_key = None
        if init_min != init_max:
            if rngs is None:
                raise ValueError("`rngs` is required to draw the initial rate when `init_min != init_max`.")
            init_key = rngs.params()
        self.p_logit = nnx.Param(_uniform_logit(init_key, init_min, init_max))
        self.regularizer = ConcreteRegularizer(jnp.zeros((), jnp.float32))
        self._init_stochastic(deterministic, rng_collection, rngs, axis_name)

    @property
    def rate(self) -> jax.Array:
        """The current drop rate, ``sigmoid(p_logit)``."""
        return jax.nn.sigmoid(self.p_logit[...])

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None = None,
        weight: Any = None,
    ) -> jax.Array:
        """Drops ``inputs`` with the learned rate, applies ``layer`` if any, and stores the regulariser.

        Args:
          inputs: the floating-point array.
          deterministic: takes precedence over the attribute when given; True is the identity before ``layer``.
          rngs: a key, ``RngStream`` or ``Rngs`` used instead of the layer's own stream.
          weight: the weight of the next layer for the regulariser when no ``layer`` is wrapped.

        Returns:
          ``layer(dropped)`` if a layer is wrapped, else the dropped inputs.
        """
        p_logit = self.p_logit[...]
        _, deterministic, key = self._resolve(p_logit, deterministic, rngs)  # the rate is the learned one
        out = F.concrete_dropout(
            inputs,
            p_logit,
            key=key,
            deterministic=deterministic,
            temperature=self.temperature,
            broadcast_dims=self.broadcast_dims,
        )
        if self.layer is not None:
            out = self.layer(out)
            if weight is None:
                weight = self.layer.kernel[...] if hasattr(self.layer, "kernel") else nnx.state(self.layer, nnx.Param)
        self.regularizer[...] = F.concrete_dropout_regularizer(
            p_logit,
            jnp.zeros(()) if weight is None else weight,
            weight_regularizer=self.weight_regularizer,
            dropout_regularizer=self.dropout_regularizer,
            input_dim=self.input_dim or inputs.shape[-1],
        )
        return out


def concrete_regularization(model: nnx.Module) -> jax.Array:
    """Sums the regularisers of every ``ConcreteDropout`` layer in ``model`` (as of their last call).

    Args:
      model: any NNX module.

    Returns:
      A float32 scalar to add to the training loss (0 if the model has no concrete dropout).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"`model` must be an nnx.Module; got {_checks.describe(model)}.")
    total = jnp.zeros((), jnp.float32)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, ConcreteDropout):
            total = total + module.regularizer[...]
    return total


# ---------------------------------------------------------------- attention

attention_fn = _layers.attention_fn
"""``attention_fn`` for ``nnx.MultiHeadAttention``: attention dropout from the core, mask not stored.

Inside `jaxdrop.stochastic()` a deterministic attention call warns: flax passes it no key, so the context cannot
turn attention dropout on (give the attention module `deterministic=False` for that).

``nnx.MultiHeadAttention(..., dropout_rate=0.1, attention_fn=jaxdrop.nnx.attention_fn, rngs=rngs)``.
"""
