"""Dropout-rate schedules: callables ``step -> rate`` in the shape of optax schedules, for the traced-rate path.

Every jaxdrop function accepts a traced rate, so ``rate = schedule(step)`` with ``step`` an argument of the jitted
train step changes the rate every step without recompiling. The schedules are plain ``jax.numpy`` (no optax
import) and return float32 scalars; their own arguments are static and checked when the schedule is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from jaxdrop import _checks

RateSchedule = Callable[[jax.typing.ArrayLike], jax.Array]


def _static_rate(rate: jax.typing.ArrayLike, name: str = "rate") -> float:
    if isinstance(rate, jax.core.Tracer):
        raise TypeError(f"`{name}` of a schedule must be static (a Python float); got {_checks.describe(rate)}.")
    return float(_checks.probability(rate, name))


def _steps(value: object, name: str) -> int:
    return _checks.int_in_range(value, name, 0)


def _step(step: jax.typing.ArrayLike) -> jax.Array:
    return jnp.asarray(step, jnp.float32)


def constant_rate_schedule(rate: jax.typing.ArrayLike) -> RateSchedule:
    """The same rate at every step: ``step -> rate`` (the baseline against which the others are compared).

    Args:
      rate: the dropout rate, a static number in [0, 1].

    Returns:
      A schedule ``step -> float32 rate``.

    Raises:
      TypeError: ``rate`` is not a static real number.
      ValueError: ``rate`` outside [0, 1].

    Examples:
      >>> from jaxdrop import training
      >>> float(training.constant_rate_schedule(0.1)(1000))
      0.10000000149011612
    """
    rate = _static_rate(rate)
    return lambda step: jnp.full((), rate, jnp.float32) + 0.0 * _step(step)


def early_dropout_schedule(
    rate: jax.typing.ArrayLike, num_steps: int, *, decay: Literal["constant", "linear"] = "constant"
) -> RateSchedule:
    """Dropout in the first ``num_steps`` steps only, none after: early dropout (Liu et al. 2023).

    Liu et al. 2023 ("Dropout Reduces Underfitting", ICML) find that dropout only at the start of training
    helps models that *underfit* (small models, large data sets): it lowers the variance of the mini-batch
    gradients early, when their directions matter most, and then gets out of the way. ``decay="linear"`` lowers
    the rate linearly from ``rate`` to 0 over the ``num_steps`` steps (their linear variant) instead of holding
    it and stopping.

    Args:
      rate: the rate of the early phase, a static number in [0, 1].
      num_steps: length of the early phase, an int >= 0 (0: no dropout at all).
      decay: ``"constant"`` (default) or ``"linear"``.

    Returns:
      A schedule ``step -> float32 rate``.

    Raises:
      TypeError: a non-static or non-real ``rate``, a non-int ``num_steps``.
      ValueError: ``rate`` outside [0, 1], ``num_steps < 0``, or a bad ``decay``.

    Examples:
      >>> from jaxdrop import training
      >>> schedule = training.early_dropout_schedule(0.1, 100)
      >>> round(float(schedule(99)), 3), float(schedule(100))
      (0.1, 0.0)
    """
    rate = _static_rate(rate)
    num_steps = _steps(num_steps, "num_steps")
    _checks.choice(decay, ("constant", "linear"), "decay")

    def schedule(step):
        step = _step(step)
        if decay == "linear":
            value = rate * jnp.clip(1.0 - step / max(num_steps, 1), 0.0, 1.0)
        else:
            value = jnp.full((), rate, jnp.float32)
        return jnp.where(step < num_steps, value, 0.0).astype(jnp.float32)

    return schedule


def late_dropout_schedule(rate: jax.typing.ArrayLike, start_step: int) -> RateSchedule:
    """No dropout before ``start_step``, ``rate`` from then on: late dropout (Liu et al. 2023).

    The counterpart of early dropout in Liu et al. 2023 ("Dropout Reduces Underfitting", ICML), for models that
    *overfit*: train without dropout first (fast progress), then regularise once the model starts to memorise.

    Args:
      rate: the rate of the late phase, a static number in [0, 1].
      start_step: the first step with dropout, an int >= 0.

    Returns:
      A schedule ``step -> float32 rate``.

    Raises:
      TypeError: a non-static or non-real ``rate``, a non-int ``start_step``.
      ValueError: ``rate`` outside [0, 1] or ``start_step < 0``.

    Examples:
      >>> from jaxdrop import training
      >>> schedule = training.late_dropout_schedule(0.3, 50)
      >>> float(schedule(49)), round(float(schedule(50)), 3)
      (0.0, 0.3)
    """
    rate = _static_rate(rate)
    start_step = _steps(start_step, "start_step")
    return lambda step: jnp.where(_step(step) >= start_step, rate, 0.0).astype(jnp.float32)


def linear_warmup_rate_schedule(
    rate: jax.typing.ArrayLike, warmup_steps: int, *, init_rate: jax.typing.ArrayLike = 0.0
) -> RateSchedule:
    """The rate rises linearly from ``init_rate`` to ``rate`` over ``warmup_steps`` steps, then stays.

    A gentle start for large rates (a network that cannot fit anything at first under heavy dropout), in the
    spirit of curriculum dropout (Morerio et al. 2017, "Curriculum Dropout", ICCV), which raises the rate over
    training; optax's ``linear_schedule`` applied to the rate.

    Args:
      rate: the final rate, a static number in [0, 1].
      warmup_steps: length of the ramp, an int >= 0 (0: ``rate`` from the first step).
      init_rate: the rate at step 0, a static number in [0, 1].

    Returns:
      A schedule ``step -> float32 rate``.

    Raises:
      TypeError: a non-static or non-real rate, a non-int ``warmup_steps``.
      ValueError: a rate outside [0, 1] or ``warmup_steps < 0``.

    Examples:
      >>> from jaxdrop import training
      >>> schedule = training.linear_warmup_rate_schedule(0.4, 100)
      >>> [round(float(schedule(s)), 3) for s in (0, 50, 100, 1000)]
      [0.0, 0.2, 0.4, 0.4]
    """
    rate = _static_rate(rate)
    warmup_steps = _steps(warmup_steps, "warmup_steps")
    init_rate = _static_rate(init_rate, "init_rate")

    def schedule(step):
        fraction = jnp.clip(_step(step) / max(warmup_steps, 1), 0.0, 1.0) if warmup_steps else jnp.float32(1.0)
        return (init_rate + (rate - init_rate) * fraction).astype(jnp.float32)

    return schedule
