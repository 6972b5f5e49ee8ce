"""Flax Linen layers over the functional core: resolve ``deterministic``, get a key, call one function.

``jaxdrop.linen.Dropout`` takes the same arguments as ``flax.linen.Dropout`` and follows the same rules
(``nn.merge_param`` for ``deterministic``, ``make_rng(rng_collection)`` for the key, rates 0 and 1 need no key), so
replacing the import is enough. ``self.make_rng`` folds the module path and a per-call counter into the key, so two
layers, or two calls of one layer, never share a mask; inside ``nn.scan``/``nn.vmap`` pass
``split_rngs={'dropout': True}`` for a fresh mask per step or per sample.

What differs: the keep-mask comes from the fused generator by default (``generator="jax"`` reproduces flax's masks),
the mask is not stored for the backward pass, the rate is validated, and ``__call__`` accepts a traced ``rate``.
Inside ``jaxdrop.stochastic()`` every layer here samples even when ``deterministic`` is True (MC dropout with the
rest of the model, BatchNorm included, in evaluation mode).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxdrop.functional as F
from jaxdrop import _checks, _layers, _masks

__all__ = [
    "AlphaDropout",
    "ConcreteDropout",
    "DropBlock",
    "DropConnectConv",
    "DropConnectDense",
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


class _Stochastic(nn.Module):
    """Shared plumbing (no fields): the flag merge and the key, exactly as ``flax.linen.Dropout`` does them."""

    kind: ClassVar[str] = "dropout"  # the dropout family ``jaxdrop.inspect`` reports
    rate_field: ClassVar[str] = "rate"  # the attribute ``jaxdrop.inspect`` reports as the rate
    # Static rates at which the layer returns without drawing a key (so no RNG is needed or consumed).
    key_free_rates: ClassVar[tuple[float, ...]] = (0.0, 1.0)

    def __post_init__(self) -> None:
        # Fields only used when a key is drawn are checked at construction: evaluation would never see them.
        _checks.identifier(self.rng_collection, "rng_collection")
        _checks.axis_names(self.axis_name, "axis_name")
        super().__post_init__()

    def _resolve(
        self,
        rate: jax.typing.ArrayLike | None,
        deterministic: bool | None,
        rng: jax.Array | None,
    ) -> tuple[jax.typing.ArrayLike, bool, jax.Array | None]:
        """Returns ``(rate, deterministic, key)``: the call-time rate, else the layer's own; the flag merged with
        the attribute; and the key, None when no randomness is needed."""
        rate = getattr(self, self.rate_field) if rate is None else rate
        merged = nn.merge_param("deterministic", self.deterministic, deterministic)
        deterministic = _layers.is_deterministic(merged, layer=self)  # per-site MC chooses by the module's path
        if not _layers.needs_key(rate, deterministic, self.key_free_rates):
            return rate, deterministic, None
        if rng is None:
            rng = self.make_rng(self.rng_collection)  # folds in the module path and the call count
        return rate, deterministic, _layers.fold_axes(rng, self.axis_name)


class _Functional(_Stochastic):
    """A layer whose call is one function of ``jaxdrop.functional``, given the layer's ``options`` fields."""

    function: ClassVar[Callable[..., jax.Array]]  # ``function(inputs, rate, *, key, deterministic, **options)``
    options: ClassVar[tuple[str, ...]] = ()  # the fields passed on to ``function`` by keyword

    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
        *,
        rate: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies the layer to ``inputs``.

        Args:
          inputs: the floating-point array.
          deterministic: given here or as an attribute, not both (``merge_param``); True is the identity.
          rng: a key to use instead of ``make_rng(rng_collection)``.
          rate: a call-time value replacing the attribute (``stddev`` for ``GaussianNoise``); may be traced (a
            schedule) without recompiling.

        Returns:
          An array with the shape and dtype of ``inputs``.
        """
        rate, deterministic, key = self._resolve(rate, deterministic, rng)
        options = {name: getattr(self, name) for name in self.options}
        return self.function(inputs, rate, key=key, deterministic=deterministic, **options)


class Dropout(_Functional):
    """Inverted dropout (Srivastava et al. 2014), a drop-in replacement for ``flax.linen.Dropout``.

    Attributes:
      rate: the probability of dropping an element (not the keep rate), in [0, 1].
      broadcast_dims: axes that share one mask value (e.g. the time axis for one mask per sequence).
      deterministic: if True, the input is returned unchanged; if None, it must be passed at call time.
      rng_collection: the RNG stream the key is drawn from with ``make_rng``.
      inverted: scale kept elements by ``1 / (1 - rate)`` in training (True) or scale by ``1 - rate`` at
        inference (False, classic dropout).
      generator: ``"fast"`` (fused Threefry-2x32-13, the default), ``"fast16"`` (16-bit thresholds) or ``"jax"``
        (the exact masks of ``flax.linen.Dropout`` for the same RNGs).
      axis_name: name(s) of mapped axes (``nn.vmap``/``jax.vmap``/``shard_map``) whose index is folded into the
        key, so each slice draws its own mask even when the RNG is not split along that axis.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> layer = jaxdrop.linen.Dropout(rate=0.5)
      >>> x = jnp.ones((2, 4))
      >>> y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> bool(jnp.all((y == 0.0) | (y == 2.0)))
      True
      >>> bool(jnp.all(layer.apply({}, x, deterministic=True) == x))
      True
    """

    function = staticmethod(F.dropout)
    options = ("broadcast_dims", "inverted", "generator")

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    inverted: bool = True
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None


# The variant layers below share Dropout's call, ``(inputs, deterministic=None, rng=None, *, rate=None)``, and its
# fields ``deterministic``, ``rng_collection`` and ``axis_name``.


class SpatialDropout(_Functional):
    """Drops whole feature maps (Tompson et al. 2015): see `jaxdrop.spatial_dropout()`.

    Inputs are ``(batch, *spatial, channels)`` (or channels-first with ``channel_axis=1``).

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jnp.ones((2, 5, 5, 8))
      >>> y = jaxdrop.linen.SpatialDropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> bool(jnp.all(y == y[:, :1, :1, :]))  # one decision per example and channel
      True
    """

    kind = "spatial"
    function = staticmethod(F.spatial_dropout)
    options = ("channel_axis", "generator")

    rate: float
    channel_axis: int = -1
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None


class AlphaDropout(_Functional):
    """Alpha dropout for self-normalising networks (Klambauer et al. 2017): see `jaxdrop.alpha_dropout()`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jax.random.normal(jax.random.key(1), (4, 16))
      >>> layer = jaxdrop.linen.AlphaDropout(0.1)
      >>> layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}).shape
      (4, 16)
    """

    kind = "alpha"
    function = staticmethod(F.alpha_dropout)
    options = ("generator",)

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None


class FeatureAlphaDropout(_Functional):
    """Alpha dropout of whole feature maps: see `jaxdrop.feature_alpha_dropout()`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jax.random.normal(jax.random.key(1), (2, 6, 6, 4))
      >>> layer = jaxdrop.linen.FeatureAlphaDropout(0.2)
      >>> layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}).shape
      (2, 6, 6, 4)
    """

    kind = "alpha"
    function = staticmethod(F.feature_alpha_dropout)
    options = ("channel_axis", "generator")

    rate: float
    channel_axis: int = -1
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None


class GaussianDropout(_Functional):
    """Multiplicative Gaussian noise with dropout's variance: see `jaxdrop.gaussian_dropout()`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.linen.GaussianDropout(0.5).apply(
      ...     {}, jnp.ones(100_000), deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> round(float(y.mean()), 1), round(float(y.var()), 1)
      (1.0, 1.0)
    """

    kind = "gaussian"
    function = staticmethod(F.gaussian_dropout)

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    axis_name: str | Sequence[str] | None = None


class GaussianNoise(_Functional):
    """Additive zero-mean Gaussian noise of standard deviation ``stddev``: see `jaxdrop.gaussian_noise()`.

    The call-time override is ``rate=`` (the new standard deviation), like every layer here.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.linen.GaussianNoise(0.1).apply(
      ...     {}, jnp.zeros(100_000), deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> round(float(y.std()), 2)
      0.1
    """

    kind = "noise"
    rate_field = "stddev"
    key_free_rates = (0.0,)
    function = staticmethod(F.gaussian_noise)

    stddev: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    axis_name: str | Sequence[str] | None = None


class DropPath(_Functional):
    """Stochastic depth: drops a whole residual branch per example (Huang et al. 2016); see `jaxdrop.drop_path()`.

    Apply it to the branch before adding the skip: ``x + DropPath(rate)(branch(x), deterministic=...)``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.linen.DropPath(0.5).apply(
      ...     {}, jnp.ones((8, 3)), deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> bool(jnp.all((y == 0.0) | (y == 2.0))), bool(jnp.all(y == y[:, :1]))  # one decision per row
      (True, True)
    """

    kind = "drop_path"
    function = staticmethod(F.drop_path)
    options = ("mode", "batch_axis", "scale_by_keep", "generator")

    rate: float
    mode: str = "row"
    batch_axis: int = 0
    scale_by_keep: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None


class DropBlock(_Functional):
    """Drops contiguous blocks of feature maps (Ghiasi et al. 2018): see `jaxdrop.dropblock()`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> layer = jaxdrop.linen.DropBlock(0.1, block_size=3)
      >>> layer.apply({}, jnp.ones((2, 8, 8, 4)), deterministic=False, rngs={"dropout": jax.random.key(0)}).shape
      (2, 8, 8, 4)
    """

    kind = "dropblock"
    function = staticmethod(F.dropblock)
    options = ("block_size", "channel_axis", "share_across_channels", "generator")

    rate: float
    block_size: int | Sequence[int] = 7
    channel_axis: int = -1
    share_across_channels: bool = False
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None


# ---------------------------------------------------------------- DropConnect: a masked kernel per call

# (key, rate, deterministic) of the DropConnect call in progress, read by ``param`` (which takes ``inverted`` and
# ``generator`` from the layer's fields).
_DROPCONNECT_CALL: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("jaxdrop_dropconnect", default=None)


class _DropConnect(_Stochastic):
    """Masks the ``kernel`` parameter as the wrapped flax layer reads it; the layer's own maths is unchanged."""

    kind = "dropconnect"
    key_free_rates = (0.0,)

    rate: float = 0.5
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    inverted: bool = True
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None

    def param(self, name, init_fn, *init_args, **init_kwargs):
        value = super().param(name, init_fn, *init_args, **init_kwargs)
        call = _DROPCONNECT_CALL.get()
        if name != "kernel" or call is None:
            return value
        key, rate, deterministic = call
        return F.dropconnect(
            value, rate, key=key, deterministic=deterministic, inverted=self.inverted, generator=self.generator
        )

    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
        *,
        rate: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies the wrapped flax layer with its kernel masked by DropConnect.

        Args:
          inputs: the layer's input.
          deterministic: given here or as an attribute, not both (``merge_param``); True uses the plain kernel.
          rng: a key to use instead of ``make_rng(rng_collection)``.
          rate: a call-time value replacing the attribute; may be traced without recompiling.

        Returns:
          The wrapped layer's output.
        """
        rate, deterministic, key = self._resolve(rate, deterministic, rng)
        token = _DROPCONNECT_CALL.set((key, rate, deterministic))
        try:
            return super(_Stochastic, self).__call__(inputs)  # the next class in the MRO: nn.Dense or nn.Conv
        finally:
            _DROPCONNECT_CALL.reset(token)


class DropConnectDense(_DropConnect, nn.Dense):
    """``flax.linen.Dense`` whose kernel is masked by DropConnect on each call (Wan et al. 2013).

    Parameters are those of ``nn.Dense`` (``kernel``, ``bias``), so checkpoints are interchangeable. One mask
    is drawn per call and shared by the batch; deterministic calls use the plain kernel. See
    `jaxdrop.dropconnect()`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> layer = jaxdrop.linen.DropConnectDense(features=3, rate=0.5)
      >>> x = jnp.ones((2, 4))
      >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
      >>> y = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
      >>> y.shape, bool(jnp.all(layer.apply(variables, x, deterministic=True) == x @ variables["params"]["kernel"]))
      ((2, 3), True)
    """


class DropConnectConv(_DropConnect, nn.Conv):
    """``flax.linen.Conv`` whose kernel is masked by DropConnect on each call (Wan et al. 2013).

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> layer = jaxdrop.linen.DropConnectConv(features=2, kernel_size=(3, 3), rate=0.3)
      >>> x = jnp.ones((1, 5, 5, 1))
      >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
      >>> layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
      (1, 5, 5, 2)
    """


# ---------------------------------------------------------------- sequences


class LockedDropout(_Functional):
    """Variational (locked) dropout: one mask per sequence, shared over time; see `jaxdrop.locked_dropout()`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.linen.LockedDropout(0.5).apply(
      ...     {}, jnp.ones((2, 6, 4)), deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> bool(jnp.all(y == y[:, :1, :]))
      True
    """

    kind = "locked"
    function = staticmethod(F.locked_dropout)
    options = ("time_axis", "generator")

    rate: float
    time_axis: int = 1
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None


class TokenDropout(_Functional):
    """Drops whole token vectors (every feature of a position at once); see `jaxdrop.token_dropout()`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.linen.TokenDropout(0.5).apply(
      ...     {}, jnp.ones((2, 6, 4)), deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> bool(jnp.all(y == y[..., :1]))  # one decision per token
      True
    """

    kind = "token"
    function = staticmethod(F.token_dropout)
    options = ("feature_axis", "generator")

    rate: float
    feature_axis: int = -1
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    generator: _masks.Generator = "fast"
    axis_name: str | Sequence[str] | None = None


class WordDropout(_Stochastic):
    """Drops word types: every occurrence of a dropped token id in a sequence; see `jaxdrop.word_dropout()`.

    Called as ``layer(embedded, token_ids, deterministic=None, rng=None, *, rate=None)``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> ids = jnp.array([[3, 5, 3, 3, 5, 7]])
      >>> y = jaxdrop.linen.WordDropout(0.5).apply(
      ...     {}, jnp.ones((1, 6, 2)), ids, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> len({float(v) for v in y[0, ids[0] == 3, 0]})  # a word is kept or dropped everywhere it occurs
      1
    """

    kind = "word"

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    axis_name: str | Sequence[str] | None = None

    def __call__(
        self,
        inputs: jax.Array,
        token_ids: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
        *,
        rate: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies word dropout to ``inputs`` given their ``token_ids``.

        Args:
          inputs: the embedded tokens, ``(..., time, features)``.
          token_ids: the integer ids of the tokens, ``(..., time)``.
          deterministic: given here or as an attribute, not both (``merge_param``); True is the identity.
          rng: a key to use instead of ``make_rng(rng_collection)``.
          rate: a call-time value replacing the attribute; may be traced without recompiling.

        Returns:
          An array with the shape and dtype of ``inputs``.
        """
        rate, deterministic, key = self._resolve(rate, deterministic, rng)
        return F.word_dropout(inputs, token_ids, rate, key=key, deterministic=deterministic)


# ---------------------------------------------------------------- concrete dropout: a learned rate


def _uniform_logit(init_min: float, init_max: float):
    """Initialiser of ``p_logit``: uniform in logit space between ``logit(init_min)`` and ``logit(init_max)``."""
    low, high = (math.log(p) - math.log1p(-p) for p in (init_min, init_max))
    return lambda key, shape=(), dtype=jnp.float32: jax.random.uniform(key, shape, dtype, low, high)


def _kernel_or_params(params) -> jax.Array:
    """The weight the regulariser decays: the layer's ``kernel`` (the reference) or, failing that, all params."""
    return params["kernel"] if "kernel" in params else params


class ConcreteDropout(_Stochastic):
    """Concrete dropout: a dropout layer that learns its own rate (Gal, Hron & Kendall 2017).

    Owns the parameter ``p_logit`` (initialised uniformly in logit space between ``logit(init_min)`` and
    ``logit(init_max)``, i.e. ``p = 0.1`` by default as in the reference implementation). On every call it
    ``sow``\\s its regulariser (`jaxdrop.concrete_dropout_regularizer()`) into ``collection`` (``"losses"``);
    add `concrete_regularization()` of that collection to the training loss, or the rate collapses to 0.

    If ``layer`` is given, the layer is applied to the dropped input, its kernel enters the weight term and
    ``input_dim`` defaults to the input's last axis; otherwise pass the weight at call time (``weight=``), or
    only the entropy term is used.

    Attributes:
      layer: the layer that consumes the dropped input (e.g. ``nn.Dense(64)``), or None.
      weight_regularizer, dropout_regularizer: the coefficients of the two terms (``l^2 / N`` and ``2 / N`` in the
        reference, for ``N`` training examples).
      init_min, init_max: the range of the initial drop rate.
      temperature: the relaxation temperature (0.1 for dense inputs, 2/3 for spatial).
      broadcast_dims: axes sharing one noise value (the spatial axes for spatial concrete dropout).
      input_dim: ``K`` of the regulariser; defaults to ``inputs.shape[-1]``.
      collection: the collection the regulariser is sown into.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> import flax.linen as nn
      >>> layer = jaxdrop.linen.ConcreteDropout(nn.Dense(3), weight_regularizer=1e-4, dropout_regularizer=1e-3)
      >>> x = jnp.ones((2, 4))
      >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
      >>> round(float(jax.nn.sigmoid(variables["params"]["p_logit"])), 3)
      0.1
      >>> y, state = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)},
      ...                        mutable=["losses"])
      >>> y.shape, jaxdrop.linen.concrete_regularization(state).shape
      ((2, 3), ())
    """

    kind = "concrete"
    rate_field = "p_logit"
    key_free_rates = ()

    layer: nn.Module | None = None
    weight_regularizer: float = 1e-6
    dropout_regularizer: float = 1e-5
    init_min: float = 0.1
    init_max: float = 0.1
    temperature: float = 0.1
    broadcast_dims: Sequence[int] = ()
    input_dim: int | None = None
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    collection: str = "losses"
    axis_name: str | Sequence[str] | None = None

    def __post_init__(self) -> None:
        _checks.optional_callable(self.layer, "layer")
        init_min = _checks.probability(self.init_min, "init_min", open_interval=True)
        init_max = _checks.probability(self.init_max, "init_max", open_interval=True)
        _checks.ordered(init_min, init_max, "init_min", "init_max")
        if self.input_dim is not None:
            _checks.positive_int(self.input_dim, "input_dim")
        _checks.identifier(self.collection, "collection")
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
        *,
        weight: Any = None,
    ) -> jax.Array:
        """Drops ``inputs`` with the learned rate, applies ``layer`` if any, and sows the regulariser.

        Args:
          inputs: the floating-point array.
          deterministic: given here or as an attribute, not both; True is the identity before ``layer``.
          rng: a key to use instead of ``make_rng(rng_collection)``.
          weight: the weight of the next layer for the regulariser when no ``layer`` is wrapped.

        Returns:
          ``layer(dropped)`` if a layer is wrapped, else the dropped inputs.
        """
        p_logit = self.param("p_logit", _uniform_logit(self.init_min, self.init_max), ())
        _, deterministic, key = self._resolve(p_logit, deterministic, rng)  # the rate is the learned one
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
                weight = _kernel_or_params(self.layer.variables["params"])
        regularizer = F.concrete_dropout_regularizer(
            p_logit,
            jnp.zeros(()) if weight is None else weight,
            weight_regularizer=self.weight_regularizer,
            dropout_regularizer=self.dropout_regularizer,
            input_dim=self.input_dim or inputs.shape[-1],
        )
        self.sow(self.collection, "concrete_regularizer", regularizer)
        return out


def concrete_regularization(variables, collection: str = "losses") -> jax.Array:
    """Sums every ``ConcreteDropout`` regulariser sown into ``variables[collection]`` (0 if there are none).

    Args:
      variables: the mutable state returned by ``apply(..., mutable=[collection])``, or its ``collection``.
      collection: the collection name the layers sow into.

    Returns:
      A float32 scalar to add to the training loss.
    """
    _checks.identifier(collection, "collection")
    tree = variables.get(collection, variables) if hasattr(variables, "get") else variables
    total = jnp.zeros((), jnp.float32)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if any(getattr(entry, "key", None) == "concrete_regularizer" for entry in path):
            total = total + leaf
    return total


# ---------------------------------------------------------------- attention

attention_fn = _layers.attention_fn
"""``attention_fn`` for ``nn.MultiHeadDotProductAttention``: attention dropout from the core, mask not stored.

Inside `jaxdrop.stochastic()` a deterministic attention call warns: flax passes it no key, so the context cannot
turn attention dropout on (give the attention module `deterministic=False` for that).

``nn.MultiHeadDotProductAttention(num_heads=8, dropout_rate=0.1, attention_fn=jaxdrop.linen.attention_fn)``.
"""
