"""DropBlock: drop contiguous square (2D) or cubic (3D) regions of feature maps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks, _masks
from jaxdrop.functional import _core
from jaxdrop.functional._spatial import check_rank, feature_map_axes


def _block_sizes(block_size: int | Sequence[int], feature_sizes: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(block_size, Sequence) and not isinstance(block_size, str):
        sizes = tuple(_checks.positive_int(size, "block_size") for size in block_size)
        if len(sizes) != len(feature_sizes):
            raise ValueError(
                f"`block_size` must be an int or have one entry per spatial axis "
                f"({len(feature_sizes)}); got {block_size!r}."
            )
    else:
        sizes = (_checks.positive_int(block_size, "block_size"),) * len(feature_sizes)
    for size, feature_size in zip(sizes, feature_sizes, strict=True):
        if size > feature_size:
            raise ValueError(
                f"`block_size` {block_size!r} is larger than the feature map {feature_sizes}; "
                f"accepted range is [1, {min(feature_sizes)}]."
            )
    return sizes


def seed_rate(rate: float | jax.Array, block_sizes: Sequence[int], feature_sizes: Sequence[int]) -> float | jax.Array:
    """The paper's gamma: the seed probability whose blocks drop about ``rate`` of the map (Ghiasi et al. eq. 1).

    ``gamma = rate / prod(block) * prod(feature) / prod(feature - block + 1)``, per spatial axis for non-square
    maps or blocks. Never above ``rate`` (so within [0, 1]).
    """
    valid = math.prod(f - b + 1 for f, b in zip(feature_sizes, block_sizes, strict=True))
    return rate * (math.prod(feature_sizes) / (math.prod(block_sizes) * valid))


def dropblock(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    block_size: int | Sequence[int] = 7,
    channel_axis: int = -1,
    share_across_channels: bool = False,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Drops contiguous ``block_size``-wide regions of each feature map and renormalises (DropBlock).

    Use it on convolutional feature maps (Ghiasi et al. 2018, "DropBlock: A regularization method for
    convolutional networks", NeurIPS), where dropping single activations leaves their correlated neighbours to
    carry the same information. Block seeds are drawn with the paper's ``gamma`` (``seed_rate``) only where a whole
    block fits; each seed zeroes the block that starts at it, so odd and even block sizes both work and every
    dropped region lies inside the map. The output is renormalised by ``count(mask) / count_ones(mask)`` (zero,
    not NaN, when everything is dropped). With overlapping blocks the dropped fraction is close to, and slightly
    below, ``rate``; rate 1 drops everything. ``block_size=1`` is element-wise dropout (with renormalisation by
    the kept count).

    Axis 0 is the batch axis, ``channel_axis`` the channel axis, every other axis spatial. The mask is never
    stored for the backward pass.

    Args:
      x: floating-point input ``(batch, *spatial, channels)``, at least one spatial axis; same dtype out.
      rate: the target fraction of dropped activations, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      block_size: the block side, an int or one int per spatial axis, at most the feature map size.
      channel_axis: the channel axis (negative allowed), not 0.
      share_across_channels: one block pattern per example shared by all channels (True), or an independent
        pattern per channel (False, the default and the paper's choice).
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, ``key`` is not a PRNG key, or ``block_size`` is not an int.
      ValueError: no spatial axis, a bad ``channel_axis``, a ``block_size`` below 1 or larger than the map, a
        static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jnp.ones((1, 8, 8, 1))
      >>> y = jaxdrop.dropblock(x, 0.3, key=jax.random.key(0), block_size=3)
      >>> bool(jnp.isclose(y.mean(), 1.0))  # renormalised: the sum is preserved
      True
    """
    return _dropblock(
        x,
        rate,
        key,
        deterministic,
        block_size,
        channel_axis,
        share_across_channels,
        generator,
        num_spatial=None,
        site="dropblock",
    )


def _dropblock(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    key: jax.Array | None,
    deterministic: bool,
    block_size: int | Sequence[int],
    channel_axis: int,
    share_across_channels: bool,
    generator: _masks.Generator,
    *,
    num_spatial: int | None,
    site: str,
) -> jax.Array:
    """The DropBlocks, arguments checked in the functional order; ``num_spatial`` fixes the rank (None: any)."""
    x = _checks.floating_array(x)
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    share = _checks.static_bool(share_across_channels, "share_across_channels")
    if num_spatial is not None:
        check_rank(x, num_spatial, site)
    channel, spatial = feature_map_axes(x.ndim, channel_axis)
    if not spatial:
        raise ValueError(f"`x` must have at least one spatial axis (rank >= 3); got shape {x.shape}.")
    feature_sizes = tuple(x.shape[axis] for axis in spatial)
    block_sizes = _block_sizes(block_size, feature_sizes)
    _checks.choice(generator, _masks.GENERATORS, "generator")
    # Rate 1 short-circuits to zeros: gamma alone would leave gaps between blocks.
    skipped = _core.output_without_mask(x, rate, deterministic)
    if skipped is not None:
        return skipped
    key = _checks.key(key, site=site)
    static = isinstance(rate, float)

    mask_shape = _core.mask_shape(x.shape, (channel,) if share else ())
    block_of = dict(zip(spatial, block_sizes, strict=True))
    seed_shape = tuple(size - block_of[axis] + 1 if axis in block_of else size for axis, size in enumerate(mask_shape))
    window = tuple(block_of.get(axis, 1) for axis in range(x.ndim))
    # Padding block - 1 on both sides of the valid-seed grid: position i is dropped when a seed lies in
    # [i - block + 1, i], i.e. the block starts at its seed, for odd and even sizes alike.
    padding = tuple((size - 1, size - 1) for size in window)

    def make_keep(key, *traced_gamma):
        gamma = traced_gamma[0] if traced_gamma else seed_rate(rate, block_sizes, feature_sizes)
        seeds = ~_masks.keep_mask(key, gamma, seed_shape, generator)
        dropped = lax.reduce_window(seeds, False, lax.max, window, (1,) * x.ndim, padding)
        return ~dropped

    operands = (key,) if static else (key, lax.stop_gradient(seed_rate(rate, block_sizes, feature_sizes)))
    # The renormaliser needs the kept count before the mask is applied; this extra pass only counts (it is
    # identical to the one inside apply_keep_mask, which XLA may merge) and nothing is kept for the backward pass.
    num_kept = jnp.sum(make_keep(*operands), dtype=jnp.int32)
    wide = _core.compute_dtype(x.dtype)  # float32, or float64 for float64 inputs
    scale = jnp.where(num_kept > 0, math.prod(mask_shape) / jnp.maximum(num_kept, 1).astype(wide), 0.0)
    if not static:  # rate 1 drops everything, as above; a traced rate outside [0, 1] cannot raise: NaN
        scale = jnp.where(rate < 1.0, scale, 0.0)
        scale = jnp.where((rate >= 0.0) & (rate <= 1.0), scale, jnp.nan)
    return _core.apply_keep_mask(x, make_keep, *operands, scale=scale)


def dropblock2d(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    block_size: int | Sequence[int] = 7,
    channel_axis: int = -1,
    share_across_channels: bool = False,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """``dropblock`` for 2D feature maps, rank 4 ``(batch, height, width, channels)``: square blocks.

    Use it after 2D convolutions (Ghiasi et al. 2018; the paper uses ``block_size=7`` on ResNet-50 groups 3 and
    4). The rank is checked, so a missing batch or channel axis fails loudly instead of dropping blocks along the
    wrong axes.

    Args:
      x: floating-point input ``(batch, height, width, channels)``, or ``(batch, channels, height, width)`` with
        ``channel_axis=1``; the output has the same dtype.
      rate: the target fraction of dropped activations, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      block_size: the block side, an int or ``(height, width)``, at most the feature map size.
      channel_axis: the channel axis (negative allowed), not 0.
      share_across_channels: one block pattern per example shared by all channels, or one per channel (default).
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, ``key`` is not a PRNG key, or ``block_size`` is not an int.
      ValueError: ``x`` is not of rank 4, a bad ``channel_axis``, a ``block_size`` below 1 or larger than the map, a
        static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> jaxdrop.dropblock2d(jnp.ones((2, 9, 9, 3)), 0.1, key=jax.random.key(0), block_size=4).shape
      (2, 9, 9, 3)
    """
    return _dropblock(
        x,
        rate,
        key,
        deterministic,
        block_size,
        channel_axis,
        share_across_channels,
        generator,
        num_spatial=2,
        site="dropblock2d",
    )


def dropblock3d(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    block_size: int | Sequence[int] = 7,
    channel_axis: int = -1,
    share_across_channels: bool = False,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """``dropblock`` for 3D feature maps, rank 5 ``(batch, depth, height, width, channels)``: cubic blocks.

    Use it after 3D convolutions (video, volumetric images; Ghiasi et al. 2018 extended to three axes). The rank is
    checked, so a missing batch or channel axis fails loudly instead of dropping blocks along the wrong axes.

    Args:
      x: floating-point input ``(batch, depth, height, width, channels)``, or channels-first with
        ``channel_axis=1``; the output has the same dtype.
      rate: the target fraction of dropped activations, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      block_size: the block side, an int or ``(depth, height, width)``, at most the feature map size.
      channel_axis: the channel axis (negative allowed), not 0.
      share_across_channels: one block pattern per example shared by all channels, or one per channel (default).
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, ``key`` is not a PRNG key, or ``block_size`` is not an int.
      ValueError: ``x`` is not of rank 5, a bad ``channel_axis``, a ``block_size`` below 1 or larger than the map, a
        static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> jaxdrop.dropblock3d(jnp.ones((1, 5, 5, 5, 2)), 0.1, key=jax.random.key(0), block_size=3).shape
      (1, 5, 5, 5, 2)
    """
    return _dropblock(
        x,
        rate,
        key,
        deterministic,
        block_size,
        channel_axis,
        share_across_channels,
        generator,
        num_spatial=3,
        site="dropblock3d",
    )
