"""Drop path (stochastic depth): drop a whole residual branch per example or for the whole batch."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks, _masks
from jaxdrop.functional._dropout import bernoulli_dropout

DropPathMode = Literal["row", "batch"]


def drop_path(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    mode: DropPathMode = "row",
    batch_axis: int = 0,
    scale_by_keep: bool = True,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Zeroes the output of a residual branch for whole examples (``"row"``) or the whole batch (``"batch"``).

    Use it on the branch of residual blocks in deep networks (Huang et al. 2016, "Deep Networks with Stochastic
    Depth", ECCV; the ``DropPath`` of timm, ``StochasticDepth`` of torchvision): a dropped branch turns the block
    into the identity, which trains an implicit ensemble of shallower networks. Apply it to the branch only, never
    to the skip connection (``residual_drop_path`` does both), and use ``linear_drop_path_rates`` for the usual
    linearly increasing rates over depth.

    ``mode="row"`` draws one decision per example along ``batch_axis`` (timm, torchvision ``"row"``);
    ``mode="batch"`` one decision for the whole input (Huang et al.'s original, torchvision ``"batch"``). Kept
    inputs are scaled by ``1 / (1 - rate)`` when ``scale_by_keep`` so the expectation is preserved.

    Args:
      x: floating-point output of a residual branch; the output has the same dtype.
      rate: probability of dropping the branch, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged (stochastic depth needs no rescaling at inference
        whether or not ``scale_by_keep``).
      mode: ``"row"`` (per example) or ``"batch"`` (whole input).
      batch_axis: the batch axis for ``mode="row"`` (negative allowed).
      scale_by_keep: scale kept inputs by ``1 / (1 - rate)`` (default, as timm); if False they are unchanged.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, ``key`` is not a PRNG key, or a flag is not a bool.
      ValueError: a bad ``mode`` or ``batch_axis``, a static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> branch = jnp.ones((8, 4, 16))
      >>> y = jaxdrop.drop_path(branch, 0.5, key=jax.random.key(0))
      >>> bool((y == y[:, :1, :1]).all())  # each example is all kept (2.0) or all dropped (0.0)
      True
    """
    x = _checks.floating_array(x)
    return _drop_path(x, rate, key, deterministic, mode, batch_axis, scale_by_keep, generator, site="drop_path")


def _drop_path(
    x: jax.Array,
    rate: jax.typing.ArrayLike,
    key: jax.Array | None,
    deterministic: bool,
    mode: DropPathMode,
    batch_axis: int,
    scale_by_keep: bool,
    generator: _masks.Generator,
    *,
    site: str,
) -> jax.Array:
    """``drop_path`` once its input arrays are checked: the rest of the arguments in the functional order."""
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    scale_by_keep = _checks.static_bool(scale_by_keep, "scale_by_keep")
    _checks.choice(mode, ("row", "batch"), "mode")
    if mode == "row":
        if x.ndim == 0:
            raise ValueError("`x` must have a batch axis for `mode='row'` (rank >= 1); got a scalar.")
        batch = _checks.axis(batch_axis, x.ndim, "batch_axis")
        shared = tuple(axis for axis in range(x.ndim) if axis != batch)
    else:
        shared = tuple(range(x.ndim))
    _checks.choice(generator, _masks.GENERATORS, "generator")
    if deterministic:
        return x  # also when not scale_by_keep: classic dropout (`inverted=False`) would scale by 1 - rate here
    return bernoulli_dropout(x, rate, key, site=site, shared_axes=shared, inverted=scale_by_keep, generator=generator)


def linear_drop_path_rates(max_rate: jax.typing.ArrayLike, depth: int) -> tuple[float, ...] | jax.Array:
    """Drop-path rates that increase linearly over depth: 0 for the first block, ``max_rate`` for the last.

    Huang et al. 2016 ("Deep Networks with Stochastic Depth", ECCV, §3 "linear decay rule") found rates that grow
    linearly with depth better than a uniform rate: early blocks extract features every later block needs. This
    is the ``torch.linspace(0, drop_path_rate, depth)`` schedule of timm (the first block is never dropped).

    Args:
      max_rate: the rate of the last block, in [0, 1]; static or traced.
      depth: the number of residual blocks, ``>= 1``. With one block the single rate is 0, as in timm.

    Returns:
      A tuple of ``depth`` Python floats when ``max_rate`` is static (so blocks with rate 0 are short-circuited
      at trace time), else a float32 array of shape ``(depth,)``.

    Raises:
      ValueError: a static ``max_rate`` outside [0, 1], or ``depth < 1``.
      TypeError: ``depth`` is not an int.

    Examples:
      >>> import jaxdrop
      >>> [round(rate, 6) for rate in jaxdrop.linear_drop_path_rates(0.2, 5)]
      [0.0, 0.05, 0.1, 0.15, 0.2]
    """
    max_rate = _checks.probability(max_rate, "max_rate")
    depth = _checks.positive_int(depth, "depth")
    if isinstance(max_rate, float):
        return tuple(float(rate) for rate in np.linspace(0.0, max_rate, depth))
    return jnp.linspace(0.0, max_rate, depth, dtype=jnp.float32)


def residual_drop_path(
    residual: jax.typing.ArrayLike,
    branch: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    mode: DropPathMode = "row",
    batch_axis: int = 0,
    scale_by_keep: bool = True,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """``residual + drop_path(branch)``: a residual block with stochastic depth that never drops the skip path.

    Use it at the end of each residual block (Huang et al. 2016): ``x = residual_drop_path(x, block(x), rate,
    key=...)``. Only the branch is dropped; the skip connection always passes through, so a dropped block is the
    identity. Arguments are those of ``drop_path``.

    Args:
      residual: the skip-connection input; added unchanged.
      branch: the residual branch output, of the same shape as ``residual``.
      rate: probability of dropping the branch, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, no branch is dropped.
      mode: ``"row"`` (per example) or ``"batch"`` (whole input).
      batch_axis: the batch axis for ``mode="row"``.
      scale_by_keep: scale kept branches by ``1 / (1 - rate)``.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      ``residual + drop_path(branch, ...)``, with the shape of ``residual`` and the dtype of ``residual + branch``.

    Raises:
      ValueError: ``residual`` and ``branch`` have different shapes, or any error of ``drop_path``.
      TypeError: as ``drop_path``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jnp.ones((4, 3))
      >>> y = jaxdrop.residual_drop_path(x, 10 * x, 1.0)  # every branch dropped: the skip path remains
      >>> bool((y == x).all())
      True
    """
    residual = _checks.floating_array(residual, "residual")
    branch = _checks.floating_array(branch, "branch")
    if residual.shape != branch.shape:
        raise ValueError(f"`residual` and `branch` must have the same shape; got {residual.shape} and {branch.shape}.")
    dropped = _drop_path(
        branch, rate, key, deterministic, mode, batch_axis, scale_by_keep, generator, site="residual_drop_path"
    )
    return residual + dropped
