"""Machinery every mask-based variant shares: applying a keep-mask without storing it, and its scale.

``apply_keep_mask`` wraps the mask-and-scale step in ``jax.checkpoint`` with the ``nothing_saveable`` policy: the
forward and backward passes each regenerate the mask from the key inside one fused loop, so autodiff keeps only
the key (and scalars) as residuals, never a mask the size of the input. Unlike a ``custom_vjp`` this keeps
forward-mode autodiff (``jax.jvp``, ``jax.jacfwd``) working. A call on concrete arrays (eager, nothing to
differentiate) runs two compiled programs instead: the mask, and its application.

Every public function of ``jaxdrop.functional`` checks its arguments in one order, so the error reported for a
call with several bad arguments is predictable, and every argument is checked before any short-cut (a bad value is
an error in evaluation mode too, not only once training starts). Each kind of argument has one check in
``jaxdrop._checks`` (arrays, rates and other real scalars, axes, shapes, sizes, flags, names, keys):

1. the input arrays: arrays (not lists), their dtypes, and the shapes that must agree between inputs
   (``token_ids`` and ``tokens_embedded``, ``query``/``key``/``value``, ``bias``, ``mask``);
2. the rate (or the noise scale, ``p_logit``, the temperature): a real 0-d value; static NaN, inf and values out
   of range raise;
3. the flags, ``deterministic`` first;
4. ranks, axes, modes and sizes (``check_rank``, ``channel_axis``, ``broadcast_dims``, ``mode``, ``block_size``,
   ``shape``);
5. ``generator``;
6. the short-circuit: ``deterministic``, a static rate 0 or 1 (``output_without_mask``) need no key;
7. the key, only when randomness is drawn: ``jaxdrop._checks.key(key, site=name)`` records it under the public
   function's name for ``jaxdrop.debug.key_reuse_warnings``.

A function built on another (``spatial_dropout`` on ``dropout``) calls the other's private, already-checked form
(``bernoulli_dropout``), so one call checks each argument and records its key once.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks


def keep_scale(rate: float | jax.Array, inverted: bool) -> float | jax.Array:
    """The factor applied to kept elements: ``1 / (1 - rate)`` for inverted dropout, 1 for classic dropout.

    Rate 1 gives 0 (every element is dropped; no division by zero, so no NaN in values or gradients). A traced
    rate outside [0, 1] or NaN cannot raise inside ``jit``; it gives a NaN scale so the mistake shows up in the
    loss instead of being silently clipped.
    """
    if isinstance(rate, float):
        if not inverted:
            return 1.0
        return 0.0 if rate == 1.0 else 1.0 / (1.0 - rate)
    valid = (rate >= 0.0) & (rate <= 1.0)
    scale = jnp.where(rate < 1.0, 1.0 / jnp.maximum(1.0 - rate, jnp.finfo(jnp.float32).tiny), 0.0)
    scale = scale if inverted else jnp.ones_like(rate)
    return jnp.where(valid, scale, jnp.nan)


def output_without_mask(x: jax.Array, rate: float | jax.Array, deterministic: bool) -> jax.Array | None:
    """The output when nothing random is drawn, else None: ``x`` itself when ``deterministic`` or the rate is
    statically 0, zeros when it is statically 1 (every element dropped, zero gradient; no key needed)."""
    static = isinstance(rate, float)
    if deterministic or (static and rate == 0.0):
        return x
    if static and rate == 1.0:
        return jnp.zeros_like(x)
    return None


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Scaling happens in at least float32 and is rounded once to the input dtype (bf16 would round 1/0.9); a
    float64 input (x64 mode) is scaled in float64, so ``1 / (1 - rate)`` is not rounded to float32 first."""
    return jnp.promote_types(dtype, jnp.float32)


def scale_values(x: jax.Array, scale: float | jax.Array) -> jax.Array:
    """``x * scale`` computed in ``compute_dtype`` and returned in ``x.dtype``."""
    return (x.astype(compute_dtype(x.dtype)) * scale).astype(x.dtype)


def apply_keep_mask(
    x: jax.Array,
    make_keep: Callable[..., jax.Array],
    *operands: jax.typing.ArrayLike,
    scale: float | jax.Array,
) -> jax.Array:
    """``where(keep, x * scale, 0)`` with ``keep = make_keep(*operands)`` broadcast to ``x.shape``.

    ``make_keep`` closes over static configuration (shapes, static rates); ``operands`` are the arrays it needs
    (the key, traced rates). They and ``scale`` are the only residuals saved for the backward pass. Dropped
    elements are exactly zero even when ``x`` is inf or NaN there (NaN only if ``scale`` is NaN). ``scale`` is
    cast to ``compute_dtype(x.dtype)``: float32 for float32 and narrower inputs, float64 for float64 inputs.

    Called eagerly (no argument is traced: nothing is differentiated, batched or compiled around the call), the
    mask is made by one program and applied by another (``_apply_keep``, jitted once per shape and dtype): two
    dispatches, where ``jax.checkpoint`` would trace its body into a jaxpr on every call and run it primitive by
    primitive. The values are the same either way.
    """
    scale = lax.stop_gradient(jnp.asarray(scale, compute_dtype(x.dtype)))
    if all(_checks.is_static(value) for value in (x, scale, *operands)):
        return _apply_keep_compiled(make_keep(*operands), x, scale)

    def masked(x, operands, scale):
        return _apply_keep(make_keep(*operands), x, scale)

    remat = jax.checkpoint(masked, policy=jax.checkpoint_policies.nothing_saveable)
    return remat(x, operands, scale)


def _apply_keep(keep: jax.Array, x: jax.Array, scale: jax.Array) -> jax.Array:
    fill = (0.0 * scale).astype(x.dtype)  # 0, or NaN when a traced rate was invalid (see keep_scale)
    return jnp.where(jnp.broadcast_to(keep, x.shape), scale_values(x, scale), fill)


_apply_keep_compiled = jax.jit(_apply_keep)


def mask_shape(shape: tuple[int, ...], shared_axes: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with every axis in ``shared_axes`` set to 1: one mask value is shared along those axes."""
    return tuple(1 if axis in shared_axes else size for axis, size in enumerate(shape))
