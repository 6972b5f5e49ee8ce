"""Input validation for ``jaxdrop.uncertainty`` (the domain checks of this namespace; generic ones are in
``jaxdrop._checks``): errors name the argument, the value and what is accepted.

Value checks (probabilities in [0, 1] summing to 1) run only on concrete arrays; inside ``jit`` the values are
traced and only shapes and dtypes can be checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks


def _tolerance(dtype: jnp.dtype) -> float:
    """Allowed deviation of a probability row's sum from 1: 1e-3 in float32, a few ulps for bf16/f16."""
    return max(1e-3, 4.0 * float(jnp.finfo(dtype).eps))


def probabilities(probs: jax.typing.ArrayLike, name: str = "probs", min_ndim: int = 1) -> jax.Array:
    """Floating array of probabilities on the last axis: in [0, 1] and summing to 1 (checked when concrete)."""
    probs = _checks.floating_array(probs, name)
    if probs.ndim < min_ndim:
        raise ValueError(f"`{name}` must have at least {min_ndim} axes (classes last); got shape {probs.shape}.")
    if _checks.is_static(probs) and probs.size:
        values = np.asarray(probs, np.float64)
        tol = _tolerance(probs.dtype)
        if not np.isfinite(values).all() or values.min() < -tol or values.max() > 1.0 + tol:
            raise ValueError(
                f"`{name}` must hold probabilities in [0, 1]; got values in "
                f"[{np.nanmin(values):.4g}, {np.nanmax(values):.4g}] (NaN/inf present: "
                f"{not np.isfinite(values).all()}). Apply `jax.nn.softmax` to logits first."
            )
        sums = values.sum(-1)
        worst = np.unravel_index(np.argmax(np.abs(sums - 1.0)), sums.shape)
        if abs(sums[worst] - 1.0) > tol:
            raise ValueError(
                f"`{name}` must sum to 1 along the last (class) axis within {tol:.1e}; the row at "
                f"index {tuple(int(i) for i in worst)} sums to {sums[worst]:.6g}. Apply "
                f"`jax.nn.softmax` to logits first."
            )
    return probs


def labels(
    values: jax.typing.ArrayLike, batch_shape: tuple[int, ...], num_classes: int, name: str = "labels"
) -> jax.Array:
    """Integer class indices with the given batch shape, in ``[0, num_classes)`` (checked when concrete)."""
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.integer):
        raise TypeError(f"`{name}` must be integer class indices; got dtype {values.dtype}.")
    if values.shape != batch_shape:
        raise ValueError(f"`{name}` must have the batch shape of the probabilities {batch_shape}; got {values.shape}.")
    if _checks.is_static(values) and values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"`{name}` must be in [0, {num_classes - 1}]; got values in [{low}, {high}].")
    return values


def same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(f"`{name_a}` and `{name_b}` must have the same shape; got {jnp.shape(a)} and {jnp.shape(b)}.")


def vector(values: jax.typing.ArrayLike, name: str, allow_empty: bool = False) -> jax.Array:
    """A 1-D array with at least one element (unless ``allow_empty``)."""
    values = jnp.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one value per example); got shape {values.shape}.")
    if not allow_empty and values.shape[0] == 0:
        raise ValueError(f"`{name}` must not be empty.")
    return values
