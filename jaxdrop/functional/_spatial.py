"""Spatial (channel) dropout: one keep decision per example and feature map, shared over the spatial axes."""

from __future__ import annotations

import jax

from jaxdrop import _checks, _masks
from jaxdrop.functional._dropout import bernoulli_dropout

_LAYOUTS = {
    1: "(batch, length, channels)",
    2: "(batch, height, width, channels)",
    3: "(batch, depth, height, width, channels)",
}


def feature_map_axes(ndim: int, channel_axis: int, name: str = "channel_axis") -> tuple[int, tuple[int, ...]]:
    """The channel axis and the spatial axes of a batched feature map ``(batch, *spatial, channels)``.

    Axis 0 is the batch axis; ``channel_axis`` (negative allowed) names the channel axis, every other axis is
    spatial. Shared by spatial dropout, feature alpha dropout and DropBlock.
    """
    if ndim < 2:
        raise ValueError(f"`x` must have a batch axis and a channel axis (rank >= 2); got rank {ndim}.")
    channel = _checks.axis(channel_axis, ndim, name)
    if channel == 0:
        raise ValueError(
            f"`{name}`={channel_axis} names axis 0, the batch axis; accepted range is "
            f"[1, {ndim - 1}] or [{-ndim + 1}, -1]."
        )
    return channel, tuple(axis for axis in range(1, ndim) if axis != channel)


def check_rank(x: jax.Array, num_spatial: int, fn_name: str) -> None:
    """Raises ``ValueError`` unless ``x`` has ``num_spatial`` spatial axes plus batch and channel axes."""
    if x.ndim != num_spatial + 2:
        raise ValueError(
            f"`x` must have rank {num_spatial + 2} {_LAYOUTS[num_spatial]} for {fn_name} (channels-first inputs "
            f"work too, with `channel_axis=1`); got shape {x.shape} of rank {x.ndim}."
        )


def spatial_dropout(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    channel_axis: int = -1,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Drops whole feature maps: one keep decision per example and channel, shared over the spatial axes.

    Use it after convolutions (Tompson et al. 2015, "Efficient Object Localization Using Convolutional Networks",
    CVPR): neighbouring activations of a feature map are strongly correlated, so element-wise dropout barely
    regularises them; dropping the whole map does. Kept maps are scaled by ``1 / (1 - rate)``. This is PyTorch's
    ``Dropout1d/2d/3d`` and Keras' ``SpatialDropout*D``, channels-last by default (the JAX convention).

    Axis 0 is the batch axis, ``channel_axis`` the channel axis, and every other axis is spatial. The mask is
    never stored for the backward pass.

    Args:
      x: floating-point input of shape ``(batch, *spatial, channels)`` (or channels-first with
        ``channel_axis=1``); the output has the same dtype.
      rate: probability of dropping a feature map, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      channel_axis: the channel axis (negative allowed), not 0.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``, as in ``jaxdrop.dropout``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: rank below 2, ``channel_axis`` out of range or naming the batch axis, a static ``rate`` outside
        [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jnp.ones((2, 5, 5, 8))  # (batch, height, width, channels)
      >>> y = jaxdrop.spatial_dropout(x, 0.5, key=jax.random.key(0))
      >>> bool((y == y[:, :1, :1, :]).all())  # each feature map is all kept (2.0) or all dropped (0.0)
      True
    """
    return _spatial_dropout(
        x, rate, key, deterministic, channel_axis, generator, num_spatial=None, site="spatial_dropout"
    )


def spatial_dropout1d(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    channel_axis: int = -1,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """``spatial_dropout`` for sequences of feature vectors, rank 3 ``(batch, length, channels)``.

    Use it after 1D convolutions (Tompson et al. 2015; PyTorch's ``Dropout1d``, Keras' ``SpatialDropout1D``): each
    channel of each example is kept or dropped along the whole length. The rank is checked, so a missing batch or
    channel axis fails loudly instead of sharing the mask over the wrong axes.

    Args:
      x: floating-point input ``(batch, length, channels)``, or ``(batch, channels, length)`` with
        ``channel_axis=1``; the output has the same dtype.
      rate: probability of dropping a feature map, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      channel_axis: the channel axis (negative allowed), not 0.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``, as in ``jaxdrop.dropout``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: ``x`` is not of rank 3, a bad ``channel_axis``, a static ``rate`` outside [0, 1], or a missing
        ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.spatial_dropout1d(jnp.ones((2, 7, 4)), 0.5, key=jax.random.key(0))
      >>> bool((y == y[:, :1, :]).all())  # each channel all kept or all dropped along the length
      True
    """
    return _spatial_dropout(
        x, rate, key, deterministic, channel_axis, generator, num_spatial=1, site="spatial_dropout1d"
    )


def spatial_dropout2d(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    channel_axis: int = -1,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """``spatial_dropout`` for images, rank 4 ``(batch, height, width, channels)``.

    Use it after 2D convolutions (Tompson et al. 2015; PyTorch's ``Dropout2d``, Keras' ``SpatialDropout2D``): each
    feature map of each example is kept or dropped as a whole. The rank is checked, so a missing batch or channel
    axis fails loudly instead of sharing the mask over the wrong axes.

    Args:
      x: floating-point input ``(batch, height, width, channels)``, or ``(batch, channels, height, width)`` with
        ``channel_axis=1``; the output has the same dtype.
      rate: probability of dropping a feature map, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      channel_axis: the channel axis (negative allowed), not 0.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``, as in ``jaxdrop.dropout``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: ``x`` is not of rank 4, a bad ``channel_axis``, a static ``rate`` outside [0, 1], or a missing
        ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.spatial_dropout2d(jnp.ones((2, 5, 5, 8)), 0.5, key=jax.random.key(0))
      >>> bool((y == y[:, :1, :1, :]).all())  # each feature map all kept (2.0) or all dropped (0.0)
      True
    """
    return _spatial_dropout(
        x, rate, key, deterministic, channel_axis, generator, num_spatial=2, site="spatial_dropout2d"
    )


def spatial_dropout3d(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    channel_axis: int = -1,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """``spatial_dropout`` for volumes, rank 5 ``(batch, depth, height, width, channels)``.

    Use it after 3D convolutions (video, volumetric images; Tompson et al. 2015; PyTorch's ``Dropout3d``, Keras'
    ``SpatialDropout3D``): each feature map of each example is kept or dropped as a whole. The rank is checked, so
    a missing batch or channel axis fails loudly instead of sharing the mask over the wrong axes.

    Args:
      x: floating-point input ``(batch, depth, height, width, channels)``, or channels-first with
        ``channel_axis=1``; the output has the same dtype.
      rate: probability of dropping a feature map, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      channel_axis: the channel axis (negative allowed), not 0.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``, as in ``jaxdrop.dropout``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: ``x`` is not of rank 5, a bad ``channel_axis``, a static ``rate`` outside [0, 1], or a missing
        ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.spatial_dropout3d(jnp.ones((2, 3, 3, 3, 4)), 0.5, key=jax.random.key(0))
      >>> bool((y == y[:, :1, :1, :1, :]).all())  # each feature map all kept or all dropped
      True
    """
    return _spatial_dropout(
        x, rate, key, deterministic, channel_axis, generator, num_spatial=3, site="spatial_dropout3d"
    )


def _spatial_dropout(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    key: jax.Array | None,
    deterministic: bool,
    channel_axis: int,
    generator: _masks.Generator,
    *,
    num_spatial: int | None,
    site: str,
) -> jax.Array:
    """The spatial dropouts, arguments checked in the functional order; ``num_spatial`` fixes the rank (None: any)."""
    x = _checks.floating_array(x)
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    if num_spatial is not None:
        check_rank(x, num_spatial, site)
    _, spatial = feature_map_axes(x.ndim, channel_axis)
    _checks.choice(generator, _masks.GENERATORS, "generator")
    return bernoulli_dropout(
        x, rate, key, site=site, deterministic=deterministic, shared_axes=spatial, generator=generator
    )
