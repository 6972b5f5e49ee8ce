"""Argument validation shared by every public function.

Errors name the argument, the value received and the accepted range. Static values are checked at trace time;
traced values cannot raise inside ``jit`` and are handled where they are used (see ``_masks.drop_threshold``).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import SupportsFloat, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import debug as _debug


def is_static(value: object) -> bool:
    """True when ``value`` is known at trace time (a Python or NumPy number, or a concrete array)."""
    return not isinstance(value, jax.core.Tracer)


def static_float(value: object) -> float:
    """``float(value)``, typed for mypy: typeshed gives ``complex`` (part of ``ArrayLike``) no ``__float__``.

    The cast has no run-time effect: ``float`` accepts and rejects exactly what it did before.
    """
    return float(cast(SupportsFloat, value))


def floating_array(x: jax.typing.ArrayLike, name: str = "x") -> jax.Array:
    """Returns ``x`` as a JAX array, raising ``TypeError`` unless its dtype is floating point."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must have a floating-point dtype (float32, bfloat16, float16, float64); got {dtype}. "
            f"Cast it first, e.g. `{name}.astype(jnp.float32)`."
        )
    return jnp.asarray(x)


def probability(value: jax.typing.ArrayLike, name: str = "rate") -> float | jax.Array:
    """Validates a probability in ``[0, 1]``.

    Returns a Python float when the value is static (so callers can short-circuit ``0`` and ``1`` at trace time),
    otherwise the traced scalar as a float32 array.
    """
    if is_static(value):
        arr = np.asarray(value)
        if arr.ndim != 0:
            raise ValueError(f"`{name}` must be a scalar in [0, 1]; got an array of shape {arr.shape}.")
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise TypeError(f"`{name}` must be a real number in [0, 1]; got {value!r}.")
        out = float(arr)
        if not 0.0 <= out <= 1.0:  # also rejects NaN
            raise ValueError(f"`{name}` must be in [0, 1]; got {out}.")
        return out
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar in [0, 1]; got a traced array of shape {jnp.shape(value)}.")
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point scalar in [0, 1]; got dtype {jnp.result_type(value)}.")
    return jnp.asarray(value, jnp.float32)


def static_bool(value: object, name: str) -> bool:
    """A flag that selects between two programs must be a Python bool, not a traced value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"`{name}` must be a static Python bool (it chooses which program is traced); got a traced value. "
            f"Mark it static in `jax.jit(..., static_argnames=...)`."
        )
    raise TypeError(f"`{name}` must be a bool; got {value!r}.")


def axes(value: int | Iterable[int], ndim: int, name: str) -> tuple[int, ...]:
    """Normalises axes (negative allowed) to sorted non-negative ints, rejecting duplicates and out-of-range."""
    items: tuple[object, ...] = tuple(value) if isinstance(value, Iterable) else (value,)
    out = []
    for item in items:
        if not isinstance(item, numbers.Integral) or isinstance(item, bool):
            raise TypeError(f"`{name}` must contain integers; got {item!r}.")
        axis = int(item)
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"`{name}` entry {axis} is out of range for an input of rank {ndim}; "
                f"accepted range is [{-ndim}, {ndim - 1}]."
            )
        out.append(axis % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`{name}` has repeated axes: {items}.")
    return tuple(sorted(out))


def choice(value: str, options: Sequence[str], name: str) -> str:
    if value not in options:
        raise ValueError(f"`{name}` must be one of {tuple(options)}; got {value!r}.")
    return value


def key(value: object, name: str = "key", *, site: str | None = None) -> jax.Array:
    """Accepts a typed key (``jax.random.key``) or a legacy ``uint32[2]`` key (``jax.random.PRNGKey``).

    ``site`` names the public function that draws randomness from the key (``"dropout"``): the use is recorded for
    ``jaxdrop.debug.key_reuse_warnings``. Without it (a root key that is folded into others, a key already recorded
    by the caller) nothing is recorded.
    """
    if value is None:
        raise ValueError(
            f"`{name}` is required when `deterministic=False` and the rate is in (0, 1): pass "
            f"`{name}=jax.random.key(seed)`, or `deterministic=True` to turn dropout off."
        )
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        if value.ndim != 0:
            raise ValueError(
                f"`{name}` must be a single key (shape ()), got a batch of shape {value.shape}; "
                f"use `jax.vmap` to map over keys."
            )
        checked = value
    else:
        try:
            checked = jnp.asarray(value)
        except TypeError as err:
            raise TypeError(
                f"`{name}` must be a PRNG key from `jax.random.key` or `jax.random.PRNGKey`; "
                f"got {type(value).__name__}."
            ) from err
        if checked.dtype != jnp.uint32 or checked.shape != (2,):
            raise TypeError(
                f"`{name}` must be a PRNG key: a typed key from `jax.random.key(seed)` or a legacy uint32[2] key "
                f"from `jax.random.PRNGKey(seed)`; got an array of dtype {checked.dtype} and shape {checked.shape}."
            )
    if site is not None:
        _debug.record_key_use(value, site)  # a no-op unless `jaxdrop.debug.key_reuse_warnings()` is active
    return checked


def non_negative(value: jax.typing.ArrayLike, name: str, *, strict: bool = False) -> float | jax.Array:
    """Validates a finite scalar ``>= 0`` (``> 0`` when ``strict``): a noise scale, a temperature, a weight.

    Like ``probability``: a Python float when static, otherwise the traced scalar as a float32 array (a traced
    value cannot raise inside ``jit``).
    """
    bound = "> 0" if strict else ">= 0"
    if is_static(value):
        arr = np.asarray(value)
        if arr.ndim != 0:
            raise ValueError(f"`{name}` must be a scalar {bound}; got an array of shape {arr.shape}.")
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise TypeError(f"`{name}` must be a real number {bound}; got {value!r}.")
        out = float(arr)
        if not (out > 0.0 if strict else out >= 0.0) or out == float("inf"):  # also rejects NaN
            raise ValueError(f"`{name}` must be a finite number {bound}; got {out}.")
        return out
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar {bound}; got a traced array of shape {jnp.shape(value)}.")
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point scalar {bound}; got dtype {jnp.result_type(value)}.")
    return jnp.asarray(value, jnp.float32)


def positive(value: jax.typing.ArrayLike, name: str) -> jax.Array:
    """``non_negative(value, name, strict=True)`` as a float32 array: a value that is data of a jitted computation
    (a noise precision, a standard deviation) rather than a switch, so never a Python float."""
    return jnp.asarray(non_negative(value, name, strict=True), jnp.float32)


def positive_int(value: object, name: str) -> int:
    """Validates a static integer ``>= 1`` (a block size, a depth, a number of samples): see ``int_in_range``."""
    return int_in_range(value, name, 1)


def int_in_range(value: object, name: str, low: int, high: int | None = None) -> int:
    """Validates a static Python int in ``[low, high]`` (``>= low`` when ``high`` is None).

    Such an int sets a shape or a length (a block size, a number of samples, ``k``, a number of bins), so it
    cannot be traced: floats, bools and arrays are rejected, NumPy integers accepted.
    """
    accepted = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        expected = "a positive Python int" if (low, high) == (1, None) else f"a Python int {accepted}"
        raise TypeError(f"`{name}` must be {expected}; got {value!r}.")
    integer = int(value)  # exact for any Integral; typeshed's numbers.Integral has no `<=` with int
    if integer < low or (high is not None and integer > high):
        raise ValueError(f"`{name}` must be {accepted}; got {integer}.")
    return integer
