"""Spatial (channel) dropout: one keep decision per example and feature map, shared over the spatial axes."""

from __future__ import annotations

import numbers

import jax

from jaxdrop import _checks, _masks
from jaxdrop.functional._dropout import dropout

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
    if not isinstance(channel_axis, numbers.Integral) or isinstance(channel_axis, bool):
        raise TypeError(f"`{name}` must be an int; got {channel_axis!r}.")
    (channel,) = _checks.axes(channel_axis, ndim, name)
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
      generator: ``"fast"`` (default) or ``"jax"``, as in ``jaxdrop.dropout``.

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
    x = _checks.floating_array(x)
    _, spatial = feature_map_axes(x.ndim, channel_axis)
    return dropout(x, rate, key=key, deterministic=deterministic, broadcast_dims=spatial, generator=generator)


def _spatial_dropout_nd(num_spatial: int):
    fn_name = f"spatial_dropout{num_spatial}d"

    def spatial_dropout_nd(
        x: jax.typing.ArrayLike,
        rate: jax.typing.ArrayLike,
        *,
        key: jax.Array | None = None,
        deterministic: bool = False,
        channel_axis: int = -1,
        generator: _masks.Generator = "fast",
    ) -> jax.Array:
        x = _checks.floating_array(x)
        check_rank(x, num_spatial, fn_name)
        return spatial_dropout(
            x, rate, key=key, deterministic=deterministic, channel_axis=channel_axis, generator=generator
        )

    spatial_dropout_nd.__name__ = spatial_dropout_nd.__qualname__ = fn_name
    spatial_dropout_nd.__doc__ = f"""``spatial_dropout`` for inputs of rank {num_spatial + 2}, {_LAYOUTS[num_spatial]}.

    Use it after ``Conv`` layers with {num_spatial} spatial dimension(s) (Tompson et al. 2015); it checks the rank
    so a missing batch or channel axis fails loudly instead of sharing the mask over the wrong axes. Arguments,
    return value and errors are those of ``jaxdrop.spatial_dropout``; a wrong rank raises ``ValueError``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jnp.ones((2,) + (3,) * {num_spatial} + (4,))
      >>> jaxdrop.{fn_name}(x, 0.5, key=jax.random.key(0)).shape == x.shape
      True
    """
    return spatial_dropout_nd


spatial_dropout1d = _spatial_dropout_nd(1)
spatial_dropout2d = _spatial_dropout_nd(2)
spatial_dropout3d = _spatial_dropout_nd(3)
