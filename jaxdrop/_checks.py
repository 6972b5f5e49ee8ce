"""Argument validation shared by every public function: one check per kind of argument.

Errors name the argument, the value received and the accepted range. Static values are checked at trace time;
traced values cannot raise inside ``jit`` and are handled where they are used (see ``_masks.drop_threshold``).

The kinds, and the check each has here:

- an input array: ``array`` (any array), ``floating_array``, ``integer_array``; Python lists and tuples are not
  arrays (as in ``jax.numpy``): convert them explicitly;
- a real scalar: ``probability`` (a rate), ``non_negative`` / ``positive`` (a noise scale, a temperature, a
  coefficient), ``floating_scalar`` (a learnable scalar such as ``p_logit``, kept as an array for its gradient).
  Static NaN and inf are rejected; any real 0-d value is accepted (Python and NumPy numbers, 0-d JAX or NumPy
  arrays of any integer or floating dtype, bfloat16 included), static or traced alike;
  Two bounds of a range: ``ordered``;
- an int that sets a size or a count: ``int_in_range`` / ``positive_int``;
- a shape: ``shape``; axes of an input: ``axis`` (one), ``axes`` (several);
- a flag that selects a program: ``static_bool``; one of a few names: ``choice``; a hook: ``optional_callable``;
  a name (an RNG or variable collection): ``identifier``; mapped axis names: ``axis_names``;
- a PRNG key: ``key`` (a key the call needs: None is a missing key) or ``prng_key``.

Each public function calls these before any short-cut (``deterministic``, a static rate 0), in the order that
``jaxdrop/functional/_core.py`` documents, so a bad value fails in evaluation exactly as in training.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any, SupportsFloat, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import debug as _debug

_MAX_REPR = 80


def describe(value: object) -> str:
    """``repr(value)`` cut to a readable length, with its type when the repr does not show it."""
    if isinstance(value, jax.core.Tracer):
        return f"a traced value of shape {jnp.shape(value)} and dtype {jnp.result_type(value)}"
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    if isinstance(value, (bool, int, float, str)) or value is None:
        return text
    return f"{text} ({type(value).__name__})"


def is_static(value: object) -> bool:
    """True when ``value`` is known at trace time (a Python or NumPy number, or a concrete array)."""
    return not isinstance(value, jax.core.Tracer)


def static_float(value: object) -> float:
    """``float(value)``, typed for mypy: typeshed gives ``complex`` (part of ``ArrayLike``) no ``__float__``.

    The cast has no run-time effect: ``float`` accepts and rejects exactly what it did before.
    """
    return float(cast(SupportsFloat, value))


def is_array_like(value: object) -> bool:
    """An array or a scalar as ``jax.numpy`` accepts it: a JAX or NumPy array, a NumPy or Python number.

    Python lists and tuples are not arrays: ``jax.numpy`` functions reject them too, because converting a long
    list element by element is slow and its dtype is a guess.
    """
    return isinstance(value, (jax.Array, jax.core.Tracer, np.ndarray, np.generic, bool, int, float, complex)) or (
        hasattr(value, "__jax_array__")
    )


def _dtype(value: object, name: str, what: str) -> np.dtype:
    """The dtype of an array-like ``value``; ``TypeError`` naming ``name`` and ``what`` is expected otherwise."""

    def error() -> TypeError:  # built only when raised: describing a concrete array formats its values
        message = f"`{name}` must be {what}; got {describe(value)}."
        if isinstance(value, (list, tuple)):
            message += f" Convert it first, e.g. `jnp.asarray({name})`."
        return TypeError(message)

    if not is_array_like(value):
        raise error()
    try:
        return np.dtype(jnp.result_type(value))
    except (TypeError, ValueError, OverflowError) as err:
        raise error() from err


def array(value: jax.typing.ArrayLike, name: str, what: str = "an array (a jax.Array or numpy.ndarray)") -> jax.Array:
    """Returns ``value`` as a JAX array, raising ``TypeError`` unless it is an array or a number (not a list)."""
    _dtype(value, name, what)
    return jnp.asarray(value)


def floating_array(x: jax.typing.ArrayLike, name: str = "x") -> jax.Array:
    """Returns ``x`` as a JAX array, raising ``TypeError`` unless it is an array of a floating-point dtype."""
    dtype = _dtype(x, name, "a floating-point array (float32, bfloat16, float16, float64)")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must have a floating-point dtype (float32, bfloat16, float16, float64); got {dtype}. "
            f"Cast it first, e.g. `{name}.astype(jnp.float32)`."
        )
    return jnp.asarray(x)


def integer_array(value: jax.typing.ArrayLike, name: str) -> jax.Array:
    """Returns ``value`` as a JAX array, raising ``TypeError`` unless its dtype is integer (not bool)."""
    dtype = _dtype(value, name, "an integer array (int32, uint32, ...)")
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"`{name}` must be an integer array; got dtype {dtype}.")
    return jnp.asarray(value)


def _real_scalar(value: Any, name: str, accepted: str) -> float | jax.Array:
    """A real 0-d value: a Python float when static, else the traced scalar in at least float32.

    Accepted: Python ints and floats, NumPy numbers, 0-d JAX or NumPy arrays of an integer or floating dtype
    (bfloat16 and float16 included). Rejected with ``TypeError``: bools, complex numbers, strings, None, lists.
    A traced floating scalar keeps its precision when wider than float32 (float64 under x64), so a scale computed
    from it is as precise as the input it scales.
    """
    wrong_type = f"`{name}` must be a real number {accepted}; got {describe(value)}."
    if isinstance(value, (bool, np.bool_)) or not is_array_like(value):
        raise TypeError(wrong_type)
    if is_static(value):
        if isinstance(value, (int, float)):  # Python numbers (np.float64 too): exact, whatever their size
            try:
                return float(value)
            except OverflowError:
                raise ValueError(f"`{name}` must be {accepted}; got {value}.") from None
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as err:
            raise TypeError(wrong_type) from err
        if arr.ndim != 0:
            raise ValueError(f"`{name}` must be a scalar {accepted}; got an array of shape {arr.shape}.")
        if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
            raise TypeError(wrong_type)
        return float(arr)
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar {accepted}; got a traced array of shape {jnp.shape(value)}.")
    dtype = jnp.result_type(value)
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.asarray(value, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a real scalar {accepted}; got a traced value of dtype {dtype}.")
    return jnp.asarray(value, jnp.promote_types(dtype, jnp.float32))


def probability(value: jax.typing.ArrayLike, name: str = "rate", *, open_interval: bool = False) -> float | jax.Array:
    """Validates a probability in ``[0, 1]`` (``(0, 1)`` when ``open_interval``).

    Returns a Python float when the value is static (so callers can short-circuit ``0`` and ``1`` at trace time),
    otherwise the traced scalar as a float array (float32, or float64 for a float64 value).
    """
    accepted = "in (0, 1)" if open_interval else "in [0, 1]"
    out = _real_scalar(value, name, accepted)
    if isinstance(out, float):
        inside = 0.0 < out < 1.0 if open_interval else 0.0 <= out <= 1.0
        if not inside:  # also rejects NaN
            raise ValueError(f"`{name}` must be {accepted}; got {out}.")
    return out


def ordered(low: float | jax.Array, high: float | jax.Array, low_name: str, high_name: str) -> None:
    """Two bounds of a range, checked when static: ``low <= high``."""
    if isinstance(low, float) and isinstance(high, float) and low > high:
        raise ValueError(f"`{low_name}` must be <= `{high_name}`; got {low} and {high}.")


def non_negative(value: jax.typing.ArrayLike, name: str, *, strict: bool = False) -> float | jax.Array:
    """Validates a finite scalar ``>= 0`` (``> 0`` when ``strict``): a noise scale, a temperature, a weight.

    Like ``probability``: a Python float when static, otherwise the traced scalar as a float array (a traced
    value cannot raise inside ``jit``).
    """
    bound = "> 0" if strict else ">= 0"
    out = _real_scalar(value, name, bound)
    if isinstance(out, float) and (not (out > 0.0 if strict else out >= 0.0) or out == float("inf")):
        raise ValueError(f"`{name}` must be a finite number {bound}; got {out}.")  # also rejects NaN
    return out


def positive(value: jax.typing.ArrayLike, name: str) -> jax.Array:
    """``non_negative(value, name, strict=True)`` as a float32 array: a value that is data of a jitted computation
    (a noise precision, a standard deviation) rather than a switch, so never a Python float."""
    return jnp.asarray(non_negative(value, name, strict=True), jnp.float32)


def floating_scalar(value: jax.typing.ArrayLike, name: str, hint: str = "") -> jax.Array:
    """A floating-point 0-d array that stays an array (a learnable parameter: gradients flow to it); finite when
    static. ``hint`` is appended to a dtype error (how to make a good value)."""
    arr = array(value, name, "a floating-point scalar")
    if arr.ndim != 0:
        raise ValueError(f"`{name}` must be a scalar; got shape {arr.shape}.")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point scalar; got dtype {arr.dtype}.{hint}")
    if is_static(value) and not np.isfinite(number := float(np.asarray(value))):
        raise ValueError(f"`{name}` must be a finite number; got {number}.")
    return arr


def static_bool(value: object, name: str) -> bool:
    """A flag that selects between two programs must be a Python bool, not a traced value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"`{name}` must be a static Python bool (it chooses which program is traced); got a traced value. "
            f"Mark it static in `jax.jit(..., static_argnames=...)`."
        )
    raise TypeError(f"`{name}` must be a bool; got {describe(value)}.")


def _static_int(value: object, name: str, expected: str) -> int:
    """A static integer: a Python or NumPy int, or a concrete 0-d integer array; never a bool, float or tracer."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (jax.Array, np.ndarray)) and is_static(value) and np.ndim(value) == 0:
        if jnp.issubdtype(value.dtype, jnp.integer):
            return int(value)
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"`{name}` must be {expected}, known at trace time; got {describe(value)}.")
    raise TypeError(f"`{name}` must be {expected}; got {describe(value)}.")


def axis(value: object, ndim: int, name: str) -> int:
    """Normalises one axis of an input of rank ``ndim`` (negative allowed) to a non-negative int."""
    index = _static_int(value, name, f"an int axis in [{-ndim}, {ndim - 1}]")
    if not -ndim <= index < ndim:
        raise ValueError(
            f"`{name}` entry {index} is out of range for an input of rank {ndim}; accepted range is "
            f"[{-ndim}, {ndim - 1}]."
        )
    return index % ndim


def axes(value: int | Iterable[int], ndim: int, name: str) -> tuple[int, ...]:
    """Normalises axes (an int or a sequence of ints, negative allowed) to sorted non-negative ints, rejecting
    duplicates and out-of-range axes."""
    expected = "an int or a sequence of ints"
    if isinstance(value, (jax.Array, np.ndarray)):  # a concrete integer array of axes
        if not is_static(value):
            raise TypeError(f"`{name}` must be {expected}, known at trace time; got {describe(value)}.")
        value = np.asarray(value).tolist()
    if isinstance(value, numbers.Integral):
        items: tuple[object, ...] = (value,)
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        items = tuple(value)
    else:
        raise TypeError(f"`{name}` must be {expected}; got {describe(value)}.")
    out = []
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise TypeError(f"`{name}` must contain integers; got {describe(item)}.")
        out.append(axis(item, ndim, name))
    if len(set(out)) != len(out):
        raise ValueError(f"`{name}` has repeated axes: {items}.")
    return tuple(sorted(out))


def shape(value: object, name: str = "shape") -> tuple[int, ...]:
    """A static shape: a tuple or list of ints ``>= 0``, or one int ``n`` for ``(n,)`` (as ``jax.random``)."""
    expected = "a tuple of ints >= 0, e.g. (batch, hidden)"
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"`{name}` must be {expected}; got {describe(value)}.")
    sizes = tuple(_static_int(size, name, expected) for size in value)
    if any(size < 0 for size in sizes):
        raise ValueError(f"`{name}` must have non-negative sizes; got {sizes}.")
    return sizes


def choice(value: object, options: Sequence[str], name: str) -> str:
    """One of a few names (``generator``, ``mode``)."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {tuple(options)}; got {describe(value)}.")
    if value not in options:
        raise ValueError(f"`{name}` must be one of {tuple(options)}; got {value!r}.")
    return value


def identifier(value: object, name: str) -> str:
    """A non-empty string naming something: an RNG collection, a variable collection."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a non-empty str; got {describe(value)}.")
    if not value:
        raise ValueError(f"`{name}` must be a non-empty str; got ''.")
    return value


def axis_names(value: object, name: str) -> str | tuple[str, ...] | None:
    """Names of mapped axes (``vmap``/``shard_map`` ``axis_name``): None, a name, or a sequence of names."""
    if value is None:
        return None
    if isinstance(value, str):
        return identifier(value, name)
    if not isinstance(value, Sequence):
        raise TypeError(
            f"`{name}` must be None, an axis name (str) or a sequence of axis names; got {describe(value)}."
        )
    return tuple(identifier(item, name) for item in value)


def optional_callable(value: Any, name: str) -> Any:
    """A hook: a callable or None."""
    if value is not None and not callable(value):
        raise TypeError(f"`{name}` must be a callable or None; got {describe(value)}.")
    return value


def key(value: object, name: str = "key", *, site: str | None = None) -> jax.Array:
    """Accepts a typed key (``jax.random.key``) or a legacy ``uint32[2]`` key (``jax.random.PRNGKey``).

    ``None`` is reported as a missing key (the caller needs randomness: see ``prng_key`` where None is simply not a
    key). ``site`` names the public function that draws randomness from the key (``"dropout"``): the use is recorded
    for ``jaxdrop.debug.key_reuse_warnings``. Without it (a root key that is folded into others, a key already
    recorded by the caller) nothing is recorded.
    """
    if value is None:
        raise ValueError(
            f"`{name}` is required when `deterministic=False` and the rate is in (0, 1): pass "
            f"`{name}=jax.random.key(seed)`, or `deterministic=True` to turn dropout off."
        )
    checked = prng_key(value, name)
    if site is not None:
        _debug.record_key_use(value, site)  # a no-op unless `jaxdrop.debug.key_reuse_warnings()` is active
    return checked


def prng_key(value: object, name: str = "key") -> jax.Array:
    """``key`` without the missing-key message and the recording: None is not a key."""
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        if value.ndim != 0:
            raise ValueError(
                f"`{name}` must be a single key (shape ()), got a batch of shape {value.shape}; "
                f"use `jax.vmap` to map over keys."
            )
        return value
    if not is_array_like(value):
        raise TypeError(
            f"`{name}` must be a PRNG key from `jax.random.key` or `jax.random.PRNGKey`; got {type(value).__name__}."
        )
    checked = jnp.asarray(value)
    if checked.dtype != jnp.uint32 or checked.shape != (2,):
        raise TypeError(
            f"`{name}` must be a PRNG key: a typed key from `jax.random.key(seed)` or a legacy uint32[2] key "
            f"from `jax.random.PRNGKey(seed)`; got an array of dtype {checked.dtype} and shape {checked.shape}."
        )
    return checked


def positive_int(value: object, name: str) -> int:
    """Validates a static integer ``>= 1`` (a block size, a depth, a number of samples): see ``int_in_range``."""
    return int_in_range(value, name, 1)


def int_in_range(value: object, name: str, low: int, high: int | None = None) -> int:
    """Validates a static int in ``[low, high]`` (``>= low`` when ``high`` is None).

    Such an int sets a shape or a length (a block size, a number of samples, ``k``, a number of bins), so it
    cannot be traced: floats, bools and traced values are rejected; Python and NumPy ints, and concrete 0-d
    integer arrays, are accepted.
    """
    accepted = f">= {low}" if high is None else f"in [{low}, {high}]"
    expected = "a positive Python int" if (low, high) == (1, None) else f"a Python int {accepted}"
    integer = _static_int(value, name, expected)
    if integer < low or (high is not None and integer > high):
        raise ValueError(f"`{name}` must be {accepted}; got {integer}.")
    return integer
