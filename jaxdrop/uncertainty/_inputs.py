"""Input validation for ``jaxdrop.uncertainty`` (the domain checks of this namespace; generic ones are in
``jaxdrop._checks``): errors name the argument, the value and what is accepted.

Shapes and dtypes are always checked: they are static, even inside ``jit``. Values are checked by one jitted summary
per kind of input (``_probability_summary``, ``_label_range``, ``_nonfinite_counts``) that serves both cases:

- concrete inputs: the summary is read at call time and a bad value raises ``ValueError``;
- traced inputs (inside ``jit``, ``vmap``, ``scan``): nothing can raise, so each check returns a traced ``ok`` flag
  and `guard()` turns every floating-point output of the metric into NaN when a flag is False. An invalid traced
  input gives a visible NaN, never a plausible number (the rule of ``docs/bad_input.md`` for traced rates).

A check returns the checked array with its ``ok``, or its ``ok`` alone; ``ok`` is None when the values were concrete
(and therefore already checked).
"""

from __future__ import annotations

import functools
import numbers
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks, _stats

Ok = jax.Array | None
Result = TypeVar("Result")


def guard(result: Result, *oks: Ok) -> Result:
    """``result`` with every floating-point leaf set to NaN unless all traced ``oks`` hold (None: checked already).

    Integer and bool leaves (counts, indices, masks) cannot hold NaN and are returned unchanged.
    """
    ok = all_ok(*oks)
    if ok is None:
        return result

    def poison(leaf: jax.Array) -> jax.Array:
        return jnp.where(ok, leaf, jnp.nan) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(poison, result)


def all_ok(*oks: Ok) -> Ok:
    """The conjunction of the traced flags (None when every input was concrete)."""
    flags = [ok for ok in oks if ok is not None]
    return functools.reduce(jnp.logical_and, flags) if flags else None


def _tolerance(dtype: jnp.dtype) -> float:
    """Allowed deviation of a probability row's sum from 1: 1e-3 in float32, a few ulps for bf16/f16."""
    return max(1e-3, 4.0 * float(jnp.finfo(dtype).eps))


@jax.jit
def _probability_summary(probs: jax.Array) -> dict[str, jax.Array]:
    tol = _tolerance(probs.dtype)
    values = _stats.as_float(probs)
    finite = jnp.isfinite(values)
    low = jnp.where(finite, values, jnp.inf).min()
    high = jnp.where(finite, values, -jnp.inf).max()
    sums = values.sum(-1).ravel()
    worst = jnp.argmax(jnp.abs(sums - 1.0))  # a NaN row counts as the worst (argmax returns the first NaN)
    worst_sum = sums[worst]
    ok = finite.all() & (low >= -tol) & (high <= 1.0 + tol) & (jnp.abs(worst_sum - 1.0) <= tol)
    return {"ok": ok, "finite": finite.all(), "low": low, "high": high, "worst": worst, "worst_sum": worst_sum}


@jax.jit
def _label_range(values: jax.Array) -> tuple[jax.Array, jax.Array]:
    return values.min(), values.max()


@jax.jit
def _nonfinite_counts(values: jax.Array) -> tuple[jax.Array, jax.Array]:
    values = _stats.as_float(values)
    return jnp.isnan(values).sum(), jnp.isinf(values).sum()


def probabilities(probs: jax.typing.ArrayLike, name: str = "probs", min_ndim: int = 1) -> tuple[jax.Array, Ok]:
    """Floating array of probabilities on the last (class) axis: at least one class, values in [0, 1] and each row
    summing to 1 within `_tolerance` (raises when concrete, ``ok`` flag when traced). NaN and inf are rejected."""
    probs = _checks.floating_array(probs, name)
    if probs.ndim < min_ndim:
        axes = "axis" if min_ndim == 1 else "axes"
        raise ValueError(f"`{name}` must have at least {min_ndim} {axes} (classes last); got shape {probs.shape}.")
    if probs.shape[-1] == 0:
        raise ValueError(f"`{name}` must have at least one class (last axis); got shape {probs.shape}.")
    if probs.size == 0:
        return probs, None  # an empty batch: nothing to check, and the per-example output is empty too
    summary = _probability_summary(probs)
    if not _checks.is_static(summary["ok"]):  # traced (inside jit, vmap, scan): cannot raise
        return probs, summary["ok"]
    if bool(summary["ok"]):
        return probs, None
    tol = _tolerance(probs.dtype)
    low, high, finite = float(summary["low"]), float(summary["high"]), bool(summary["finite"])
    if not finite or low < -tol or high > 1.0 + tol:
        raise ValueError(
            f"`{name}` must hold probabilities in [0, 1]; got values in [{low:.4g}, {high:.4g}] (NaN/inf present: "
            f"{not finite}). Apply `jax.nn.softmax` to logits first."
        )
    worst = np.unravel_index(int(summary["worst"]), probs.shape[:-1])
    raise ValueError(
        f"`{name}` must sum to 1 along the last (class) axis within {tol:.1e}; the row at index "
        f"{tuple(int(i) for i in worst)} sums to {float(summary['worst_sum']):.6g}. Apply `jax.nn.softmax` to "
        f"logits first."
    )


def sample_axis_first(values: jax.Array, sample_axis: int | None, name: str, event_ndim: int) -> jax.Array:
    """``values`` with its sample axis moved to the front, at least one sample on it.

    ``event_ndim`` trailing axes belong to one prediction (1 for the classes, 0 for a regression output) and cannot
    be the sample axis. An input with no other axis (``(T, num_classes)``, ``(T,)``) reads just as well as one
    prediction per example without any sample axis (``(N, num_classes)``, ``(N,)``), a mistake that would give a
    plausible number, so there the sample axis must be named: ``sample_axis=0``. ``sample_axis`` is a static int.
    """
    shape, min_ndim = values.shape, event_ndim + 1
    if values.ndim < min_ndim:
        if event_ndim:
            raise ValueError(f"`{name}` must have at least {min_ndim} axes (classes last); got shape {values.shape}.")
        raise ValueError(f"`{name}` must have a leading sample axis of size >= 1; got shape {values.shape}.")
    if sample_axis is None:
        if values.ndim == min_ndim:
            event_axes = ", num_classes" if event_ndim else ""
            one_axis = event_axes or ","
            raise ValueError(
                f"`{name}` of shape {values.shape} is ambiguous: it reads as (num_samples{one_axis}), the samples "
                f"of one example, but just as well as one prediction per example (num_examples{one_axis}) "
                f"without samples. Pass Monte Carlo samples as (num_samples, *batch{event_axes}), or pass "
                f"`sample_axis=0` if this is the samples of one example."
            )
        axis = 0
    else:
        if isinstance(sample_axis, bool) or not isinstance(sample_axis, numbers.Integral):
            raise TypeError(f"`sample_axis` must be a static Python int; got {sample_axis!r}.")
        num_sample_axes = values.ndim - event_ndim  # the trailing event axes cannot hold the samples
        (axis,) = _checks.axes(sample_axis, values.ndim, "sample_axis")
        if axis >= num_sample_axes:
            raise ValueError(
                f"`sample_axis`={sample_axis} names the class axis (last) of `{name}` (shape {values.shape}); accepted "
                f"range is [{-values.ndim}, {num_sample_axes - values.ndim - 1}] or [0, {num_sample_axes - 1}]."
            )
        values = jnp.moveaxis(values, axis, 0)
    if values.shape[0] == 0:
        where = "leading sample axis" if axis == 0 else f"sample axis (`sample_axis`={sample_axis})"
        raise ValueError(f"`{name}` must have a {where} of size >= 1; got shape {shape}.")
    return values


def sample_probabilities(
    sample_probs: jax.typing.ArrayLike, sample_axis: int | None, name: str = "sample_probs"
) -> tuple[jax.Array, Ok]:
    """Per-sample probabilities, the sample axis moved first: ``(T, *batch, num_classes)`` with ``T >= 1``."""
    sample_probs = _checks.floating_array(sample_probs, name)
    return probabilities(sample_axis_first(sample_probs, sample_axis, name, 1), name)


def pool_samples(
    sample_probs: jax.typing.ArrayLike, sample_axis: int | None = None, name: str = "sample_probs"
) -> tuple[jax.Array, Ok]:
    """MC samples on a pool of candidates (acquisition, ``jaxdrop.active``): exactly ``(T, pool_size, num_classes)``
    after moving ``sample_axis`` first, with at least one sample, one candidate and one class."""
    sample_probs = _checks.floating_array(sample_probs, name)
    shape = sample_probs.shape
    if len(shape) != 3:
        raise ValueError(f"`{name}` must have shape (num_samples, pool_size, num_classes); got {shape}.")
    sample_probs, ok = sample_probabilities(sample_probs, 0 if sample_axis is None else sample_axis, name)
    if sample_probs.shape[1] == 0:
        raise ValueError(f"`{name}` must hold a pool of at least one example; got shape {shape}.")
    return sample_probs, ok


def pool_mask(mask: jax.typing.ArrayLike, pool_size: int, min_available: int, name: str = "mask") -> jax.Array:
    """A boolean ``(pool_size,)`` mask of the candidates that may be chosen, with at least ``min_available`` True
    entries when concrete (inside ``jit`` the count cannot raise; the caller returns -1 for missing picks)."""
    values = _checks.array(mask, name, "a boolean array (True: the candidate may be chosen)")
    if values.dtype != jnp.bool_:
        raise TypeError(
            f"`{name}` must be a boolean array (True: the candidate may be chosen); got dtype {values.dtype}."
        )
    if values.shape != (pool_size,):
        raise ValueError(f"`{name}` must have shape (pool_size,) = ({pool_size},); got {values.shape}.")
    if _checks.is_static(values):
        available = int(values.sum())
        if available < min_available:
            raise ValueError(
                f"`{name}` leaves {available} candidates to choose from; at least {min_available} are needed (the "
                f"batch size)."
            )
    return values


def labels(
    values: jax.typing.ArrayLike, batch_shape: tuple[int, ...], num_classes: int, name: str = "labels"
) -> tuple[jax.Array, Ok]:
    """Integer class indices with the given batch shape, in ``[0, num_classes)`` (raises when concrete, ``ok`` flag
    when traced). Floats, even integer-valued, and bools are rejected: cast with ``.astype(jnp.int32)``."""
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.integer):
        raise TypeError(f"`{name}` must be integer class indices; got dtype {values.dtype}.")
    if values.shape != batch_shape:
        raise ValueError(f"`{name}` must have the batch shape of the probabilities {batch_shape}; got {values.shape}.")
    if values.size == 0:
        return values, None
    low, high = _label_range(values)
    if not _checks.is_static(low):
        return values, (low >= 0) & (high < num_classes)
    if int(low) < 0 or int(high) >= num_classes:
        raise ValueError(f"`{name}` must be in [0, {num_classes - 1}]; got values in [{int(low)}, {int(high)}].")
    return values, None


def finite(values: jax.Array, name: str, *, allow_inf: bool = False) -> Ok:
    """Checks a floating-point array has no NaN (and no inf unless ``allow_inf``): raises when concrete, ``ok`` flag
    when traced. Integer and bool arrays are always finite."""
    if values.size == 0 or not jnp.issubdtype(values.dtype, jnp.floating):
        return None
    num_nan, num_inf = _nonfinite_counts(values)
    if not _checks.is_static(num_nan):
        return (num_nan == 0) & (allow_inf | (num_inf == 0))
    if values.ndim == 0 and (int(num_nan) or (int(num_inf) and not allow_inf)):
        raise ValueError(f"`{name}` must be a finite number; got {float(values)}.")
    if allow_inf and int(num_nan):
        raise ValueError(
            f"`{name}` must hold no NaN (a NaN has no rank; +-inf is accepted); got {int(num_nan)} NaN of "
            f"{values.size} values (shape {values.shape})."
        )
    if not allow_inf and (int(num_nan) or int(num_inf)):
        raise ValueError(
            f"`{name}` must hold finite values; got {int(num_nan)} NaN and {int(num_inf)} infinite of "
            f"{values.size} values (shape {values.shape})."
        )
    return None


def finite_array(values: jax.typing.ArrayLike, name: str) -> tuple[jax.Array, Ok]:
    """A floating-point array (in at least float32) of finite values: regression data."""
    values = _stats.as_float(_checks.floating_array(values, name))
    return values, finite(values, name)


def real_scalar(value: jax.typing.ArrayLike, name: str) -> tuple[jax.Array, Ok]:
    """A finite real scalar of any sign (a shift in the data's units), as a float array: raises when concrete,
    ``ok`` flag when traced. Python and NumPy ints and floats and 0-d arrays are accepted; bools, complex numbers,
    strings and None are not."""
    wrong_type = f"`{name}` must be a finite real number; got {value!r}."
    if value is None or isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(wrong_type)
    try:
        scalar = jnp.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(wrong_type) from err
    if not (jnp.issubdtype(scalar.dtype, jnp.floating) or jnp.issubdtype(scalar.dtype, jnp.integer)):
        raise TypeError(wrong_type)
    if scalar.ndim:
        raise ValueError(f"`{name}` must be a scalar; got shape {scalar.shape}.")
    scalar = scalar.astype(jnp.promote_types(scalar.dtype, jnp.float32))
    return scalar, finite(scalar, name)


def not_empty(values: jax.Array, name: str) -> None:
    """A metric that summarises examples (a mean, a curve, a rank statistic) is undefined on none."""
    if values.size == 0:
        raise ValueError(f"`{name}` must not be empty; got shape {values.shape}.")


def positive(value: jax.typing.ArrayLike, name: str) -> tuple[jax.Array, Ok]:
    """`_checks.positive` (a finite scalar > 0; raises when static) with the ``ok`` flag of a traced value."""
    checked = _checks.positive(value, name)
    return checked, None if _checks.is_static(value) else (checked > 0) & jnp.isfinite(checked)


def same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(f"`{name_a}` and `{name_b}` must have the same shape; got {jnp.shape(a)} and {jnp.shape(b)}.")


def vector(values: jax.typing.ArrayLike, name: str, allow_empty: bool = False) -> jax.Array:
    """A 1-D array with at least one element (unless ``allow_empty``)."""
    values = jnp.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one value per example); got shape {values.shape}.")
    if not allow_empty:
        not_empty(values, name)
    return values


def numeric_vector(values: jax.typing.ArrayLike, name: str, allow_empty: bool = False) -> jax.Array:
    """A 1-D array of scores or errors: bool, integer or floating point (cast to float inside the jitted core)."""
    values = vector(values, name, allow_empty)
    if jnp.issubdtype(values.dtype, jnp.bool_) or jnp.issubdtype(values.dtype, jnp.integer):
        return values
    return _checks.floating_array(values, name)


def scores(values: jax.typing.ArrayLike, name: str) -> tuple[jax.Array, Ok]:
    """Scores to rank, one per example: no NaN (it has no rank), while +-inf ranks last or first."""
    values = numeric_vector(values, name)
    return values, finite(values, name, allow_inf=True)


def level(value: jax.typing.ArrayLike, name: str, *, include_one: bool = False) -> float:
    """A static level in ``(0, 1)`` (``(0, 1]`` with ``include_one``): a coverage, a true-positive rate, a
    confidence. Static because it picks an index or a quantile that the result is read at."""
    accepted = "in (0, 1]" if include_one else "in (0, 1)"
    if not _checks.is_static(value):
        raise TypeError(f"`{name}` must be a static Python float {accepted}; got a traced value (mark it static).")
    try:
        number = _checks.probability(value, name)
    except ValueError:  # its message says [0, 1]; name the range accepted here
        raise ValueError(f"`{name}` must be {accepted}; got {value!r}.") from None
    if not (0.0 < float(number) < 1.0 or (include_one and number == 1.0)):
        raise ValueError(f"`{name}` must be {accepted}; got {number}.")
    return float(number)


def count_at(level: float, num_examples: int) -> int:
    """The smallest ``k`` in ``[1, n]`` with ``k / n >= level`` (float64, as scikit-learn's curves): how many
    examples a coverage or a true-positive rate asks for."""
    start = max(1, int(level * num_examples) - 1)  # int() is within one of the answer; float error cannot exceed it
    return next(k for k in range(start, num_examples + 1) if k / num_examples >= level)
