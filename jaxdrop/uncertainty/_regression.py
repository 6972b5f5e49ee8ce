"""Regression uncertainty from MC samples ``(T, *shape)`` of predicted means (Gal & Ghahramani 2016, section 4.5).

Epistemic variance is the spread of the samples; aleatoric variance is the observation noise, either a fixed
precision ``tau`` (variance ``1/tau``) or a heteroscedastic head's per-sample log-variances (Kendall & Gal 2017).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp, ndtr, ndtri

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs

_SQRT_PI = math.sqrt(math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _samples(
    samples: jax.typing.ArrayLike, sample_axis: int | None, name: str = "samples"
) -> tuple[jax.Array, _inputs.Ok]:
    """Finite floating-point samples (in at least float32), the sample axis moved first, ``T >= 1``."""
    samples = _inputs.sample_axis_first(_checks.floating_array(samples, name), sample_axis, name, 0)
    return _inputs.finite_array(samples, name)


def _noise_log_variance(
    samples: jax.Array | None,
    tau: jax.typing.ArrayLike | None,
    log_variance: jax.typing.ArrayLike | None,
    sample_axis: int | None,
) -> tuple[jax.Array, _inputs.Ok]:
    """Log observation variance from exactly one of ``tau`` and ``log_variance``, and its ``ok`` flag.

    With ``samples`` (sample axis first), per sample: broadcast to their shape, or checked to have it.
    """
    if tau is not None and log_variance is None:
        tau, ok = _inputs.positive(tau, "tau")
        log_var = -jnp.log(tau)
        return (log_var if samples is None else jnp.broadcast_to(log_var, samples.shape)), ok
    if log_variance is not None and tau is None:
        if samples is not None and sample_axis is None:
            sample_axis = 0  # the layout of `samples` was settled: `log_variance` has the same
        log_var, ok = _samples(log_variance, sample_axis, "log_variance")
        if samples is not None:
            _inputs.same_shape(log_var, samples, "log_variance", "samples")
        return log_var, ok
    raise ValueError(
        "Pass exactly one noise model: the precision `tau` (homoscedastic) or the per-sample "
        "`log_variance` of a heteroscedastic head."
    )


@jax.jit
def _variance(samples: jax.Array) -> jax.Array:
    # Shifted by the first sample: exactly 0 for identical samples (a deterministic model), and no cancellation
    # when the spread is small next to the mean.
    shifted = samples - samples[0]
    return jnp.var(shifted, axis=0)


@jax.jit
def _mixture_log_likelihood(samples, targets, log_variance, target_mean, target_std):
    means = samples * target_std + target_mean
    log_density = _stats.gaussian_log_density(_stats.as_float(targets), means, log_variance)
    return (logsumexp(log_density, axis=0) - jnp.log(samples.shape[0])).mean()


def epistemic_variance(samples: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """Variance of the MC samples over the sample axis (``1/T`` normalisation): the model's uncertainty.

    Args:
      samples: ``(T, *shape)`` sampled predictions, ``T >= 1``, finite.
      sample_axis: where the samples are, when not first (static). A 1-D ``(T,)`` input (the samples of one
        scalar prediction) needs ``sample_axis=0``: it could as well be one prediction per example, without
        samples, whose variance across examples is no uncertainty.

    Returns:
      ``(*shape,)`` float32; exactly 0 for a deterministic model; empty when ``shape`` is. Inside ``jit``, NaN or
      inf in ``samples`` make every entry NaN.

    Raises:
      TypeError: ``samples`` is not floating point.
      ValueError: a scalar, a 1-D input without ``sample_axis``, zero samples; (when concrete) NaN or inf.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.epistemic_variance(jnp.array([[1.0], [3.0]])).tolist()
      [1.0]
      >>> jaxdrop.uncertainty.epistemic_variance(jnp.array([1.0, 3.0]), sample_axis=0).tolist()
      1.0
    """
    samples, ok = _samples(samples, sample_axis)
    return _inputs.guard(_variance(samples), ok)


def aleatoric_variance(
    log_variance: jax.typing.ArrayLike | None = None,
    *,
    tau: jax.typing.ArrayLike | None = None,
    sample_axis: int | None = None,
) -> jax.Array:
    """Observation-noise variance: ``1/tau``, or ``mean_t exp(log_variance_t)`` for a heteroscedastic head.

    Args:
      log_variance: ``(T, *shape)`` per-sample predicted log-variances (heteroscedastic head), ``T >= 1``, finite.
      tau: model precision (homoscedastic), a finite scalar > 0; pass exactly one of the two.
      sample_axis: where the samples of ``log_variance`` are, when not first; required (``0``) for a 1-D input,
        see `epistemic_variance()`.

    Returns:
      ``(*shape,)`` float32 (a scalar for ``tau``). Inside ``jit``, a traced ``tau`` that is not a finite number
      > 0, or NaN/inf in ``log_variance``, make every entry NaN.

    Raises:
      ValueError: no or two noise models, ``tau`` not a finite number > 0 (when static), ``log_variance`` as
        ``samples`` in `epistemic_variance()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.aleatoric_variance(tau=4.0).tolist()
      0.25
      >>> jaxdrop.uncertainty.aleatoric_variance(jnp.log(jnp.array([1.0, 3.0])), sample_axis=0).tolist()
      2.0
    """
    log_var, ok = _noise_log_variance(None, tau, log_variance, sample_axis)
    return _inputs.guard(jnp.exp(log_var) if log_variance is None else jnp.exp(log_var).mean(0), ok)


def predictive_variance(
    samples: jax.typing.ArrayLike,
    *,
    tau: jax.typing.ArrayLike | None = None,
    log_variance: jax.typing.ArrayLike | None = None,
    sample_axis: int | None = None,
) -> jax.Array:
    """Epistemic plus aleatoric variance, ``var_t(y_t) + 1/tau`` (Gal & Ghahramani 2016, eq. 8).

    Args:
      samples: ``(T, *shape)`` sampled means, ``T >= 1``, finite.
      tau, log_variance: the noise model, exactly one (see `aleatoric_variance()`); ``log_variance`` has the
        layout of ``samples``.
      sample_axis: where the samples are, when not first; required (``0``) for a 1-D input, see
        `epistemic_variance()`.

    Returns:
      ``(*shape,)`` float32. Inside ``jit``, invalid values (as in `epistemic_variance()` and
      `aleatoric_variance()`) make every entry NaN.

    Raises:
      TypeError, ValueError: as `epistemic_variance()` and `aleatoric_variance()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.predictive_variance(jnp.array([1.0, 3.0]), tau=2.0, sample_axis=0).tolist()
      1.5
    """
    samples, samples_ok = _samples(samples, sample_axis)
    noise, noise_ok = _noise_log_variance(samples, tau, log_variance, sample_axis)
    return _inputs.guard(_variance(samples) + jnp.exp(noise).mean(0), samples_ok, noise_ok)


def gaussian_log_likelihood(
    samples: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    tau: jax.typing.ArrayLike | None = None,
    log_variance: jax.typing.ArrayLike | None = None,
    target_mean: jax.typing.ArrayLike = 0.0,
    target_std: jax.typing.ArrayLike = 1.0,
    sample_axis: int | None = None,
) -> jax.Array:
    """Mean test log-likelihood of the MC mixture, exactly as in Gal & Ghahramani 2016 (their code).

    Per point: ``logsumexp_t(-0.5 * tau * (y - y_t)**2) - log T - 0.5 log(2 pi) + 0.5 log tau``, i.e. the log
    density of ``y`` under the equal-weight mixture of ``N(y_t, 1/tau)``; computed in log space. With a
    heteroscedastic head each component has its own variance ``exp(log_variance_t)``.

    Args:
      samples: ``(T, *shape)`` sampled means, in standardised units if ``target_std``/``target_mean`` are given;
        ``T >= 1`` and at least one point, finite.
      targets: ``(*shape,)`` targets in original units, finite.
      tau: precision in original units, a finite scalar > 0; or ``log_variance``: ``(T, *shape)`` per-sample
        log-variances (in the samples' units), finite. Exactly one.
      target_mean, target_std: the standardisation of the training targets (finite scalars, ``target_std > 0``,
        as in ``jaxdrop.mc.predict``); samples are mapped back with ``y * target_std + target_mean`` (and
        log-variances shifted by ``2 log target_std``), as in the paper.
      sample_axis: where the samples are, when not first; required (``0``) for a 1-D input, see
        `epistemic_variance()`.

    Returns:
      A float32 scalar: the mean over points of the per-point log-likelihood. Inside ``jit``, invalid traced
      values (NaN or inf in the arrays, ``tau`` or ``target_std`` not a finite number > 0, a non-finite
      ``target_mean``) give NaN.

    Raises:
      TypeError: ``samples``, ``targets`` or ``log_variance`` not floating point, ``target_mean`` not a real number.
      ValueError: shapes do not match, no point, no or two noise models, ``tau`` or ``target_std`` not a finite
        number > 0 (when static), ``target_mean`` not a scalar; (when concrete) NaN or inf in any input.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> ll = jaxdrop.uncertainty.gaussian_log_likelihood(jnp.zeros((3, 1)), jnp.zeros(1), tau=1.0)
      >>> round(float(ll), 4)  # -0.5 log(2 pi)
      -0.9189
    """
    samples, samples_ok = _samples(samples, sample_axis)
    targets, targets_ok = _inputs.finite_array(targets, "targets")
    if targets.shape != samples.shape[1:]:
        raise ValueError(f"`targets` must have the shape of one sample {samples.shape[1:]}; got {targets.shape}.")
    _inputs.not_empty(targets, "targets")  # a mean over no points
    log_var, noise_ok = _noise_log_variance(samples, tau, log_variance, sample_axis)
    target_std, std_ok = _inputs.positive(target_std, "target_std")
    target_mean, mean_ok = _inputs.real_scalar(target_mean, "target_mean")
    if log_variance is not None:
        log_var = log_var + 2.0 * jnp.log(target_std)
    log_likelihood = _mixture_log_likelihood(samples, targets, log_var, target_mean, target_std)
    return _inputs.guard(log_likelihood, samples_ok, targets_ok, noise_ok, std_ok, mean_ok)


def rmse(predictions: jax.typing.ArrayLike, targets: jax.typing.ArrayLike) -> jax.Array:
    """Root mean squared error over every element.

    Args:
      predictions: an array of at least one element, finite.
      targets: an array of the same shape, finite.

    Returns:
      A float32 scalar. Inside ``jit``, NaN or inf in either input gives NaN.

    Raises:
      TypeError: an input is not floating point.
      ValueError: shapes differ, no element; (when concrete) NaN or inf.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.rmse(jnp.array([1.0, 3.0]), jnp.array([0.0, 2.0])).tolist()
      1.0
    """
    predictions, predictions_ok = _inputs.finite_array(predictions, "predictions")
    targets, targets_ok = _inputs.finite_array(targets, "targets")
    _inputs.same_shape(predictions, targets, "predictions", "targets")
    _inputs.not_empty(predictions, "predictions")
    return _inputs.guard(_rmse(predictions, targets), predictions_ok, targets_ok)


@jax.jit
def _rmse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(predictions - targets)))


# --- prediction intervals, calibration and proper scores of a predictive distribution -------------------------------
# Gaussian predictive (mean, std), e.g. the MC mean and sqrt(`predictive_variance()`), or the samples themselves.


@jax.jit
def _std_summary(std: jax.Array) -> tuple[jax.Array, jax.Array]:
    return std.min(), (std == 0).any()


def _std(std: jax.typing.ArrayLike, *, strict: bool) -> tuple[jax.Array, _inputs.Ok]:
    """Finite standard deviations ``>= 0`` (``> 0`` when ``strict``): raises when concrete, ``ok`` when traced."""
    std, finite_ok = _inputs.finite_array(std, "std")
    if std.size == 0:
        return std, finite_ok
    low, has_zero = _std_summary(std)
    bound = "> 0" if strict else ">= 0"
    if not _checks.is_static(low):
        return std, _inputs.all_ok(finite_ok, (low > 0) if strict else (low >= 0))
    if float(low) < 0 or (strict and bool(has_zero)):
        raise ValueError(f"`std` must hold standard deviations {bound}; got a minimum of {float(low):.6g}.")
    return std, finite_ok


def _gaussian(
    mean: jax.typing.ArrayLike, std: jax.typing.ArrayLike, *, strict: bool
) -> tuple[jax.Array, jax.Array, _inputs.Ok]:
    """Checked ``mean`` and ``std``: finite, one shape, at least one element."""
    mean, mean_ok = _inputs.finite_array(mean, "mean")
    std, std_ok = _std(std, strict=strict)
    _inputs.same_shape(mean, std, "mean", "std")
    _inputs.not_empty(mean, "mean")
    return mean, std, _inputs.all_ok(mean_ok, std_ok)


def _gaussian_and_targets(
    mean: jax.typing.ArrayLike, std: jax.typing.ArrayLike, targets: jax.typing.ArrayLike, *, strict: bool
) -> tuple[jax.Array, jax.Array, jax.Array, _inputs.Ok]:
    """`_gaussian` and finite ``targets`` of the same shape."""
    mean, std, ok = _gaussian(mean, std, strict=strict)
    targets, targets_ok = _inputs.finite_array(targets, "targets")
    _inputs.same_shape(mean, targets, "mean", "targets")
    return mean, std, targets, _inputs.all_ok(ok, targets_ok)


@jax.jit
def _gaussian_interval(mean: jax.Array, std: jax.Array, coverage: float) -> tuple[jax.Array, jax.Array]:
    half_width = std * ndtri(0.5 + 0.5 * coverage)
    return mean - half_width, mean + half_width


@jax.jit
def _sample_interval(samples: jax.Array, coverage: float) -> tuple[jax.Array, jax.Array]:
    tail = 0.5 - 0.5 * coverage
    lower, upper = jnp.quantile(samples, jnp.array([tail, 1.0 - tail]), axis=0)  # linear, as numpy's default
    return lower, upper


def _interval(
    mean: jax.typing.ArrayLike | None,
    std: jax.typing.ArrayLike | None,
    samples: jax.typing.ArrayLike | None,
    coverage: float,
    sample_axis: int | None,
) -> tuple[jax.Array, jax.Array, _inputs.Ok]:
    """The central ``coverage`` interval of a Gaussian (``mean``, ``std``) or of ``samples``: exactly one of them."""
    coverage = _inputs.level(coverage, "coverage")
    if samples is not None and mean is None and std is None:
        samples, ok = _samples(samples, sample_axis)
        _inputs.not_empty(samples[0], "samples")
        return *_sample_interval(samples, coverage), ok
    if samples is None and mean is not None and std is not None:
        mean, std, ok = _gaussian(mean, std, strict=False)
        return *_gaussian_interval(mean, std, coverage), ok
    raise ValueError("Pass either a Gaussian predictive (`mean` and `std`) or `samples`, not both and not neither.")


def picp(
    targets: jax.typing.ArrayLike,
    *,
    mean: jax.typing.ArrayLike | None = None,
    std: jax.typing.ArrayLike | None = None,
    samples: jax.typing.ArrayLike | None = None,
    coverage: float = 0.95,
    sample_axis: int | None = None,
) -> jax.Array:
    """Prediction interval coverage probability: the share of targets inside the central ``coverage`` prediction
    interval (Khosravi et al. 2011, "Lower Upper Bound Estimation Method for Construction of Neural Network-Based
    Prediction Intervals", IEEE TNN). A calibrated model gives about ``coverage``.

    ``PICP = mean_i 1[lower_i <= y_i <= upper_i]``, with ``[mean -+ z std]``, ``z = Phi^-1((1 + coverage) / 2)``,
    for a Gaussian predictive, or the ``(1 -+ coverage) / 2`` empirical quantiles of ``samples`` (linear
    interpolation, as ``numpy.quantile``). Read it with `interval_width()`: an interval can cover by being wide.

    Args:
      targets: ``(*shape,)`` observed values, finite, at least one.
      mean, std: ``(*shape,)`` Gaussian predictive mean and standard deviation (finite, ``std >= 0``; a zero
        ``std`` is a point prediction, covered only by an exact hit); or
      samples: ``(T, *shape)`` predictive samples (e.g. MC samples plus observation noise), ``T >= 1``, finite.
      coverage: nominal coverage of the interval, a static float in ``(0, 1)``.
      sample_axis: where the samples are, when not first; required (``0``) for a 1-D ``samples``, see
        `epistemic_variance()`.

    Returns:
      A float32 scalar in ``[0, 1]``. Inside ``jit``, NaN or inf anywhere or a negative traced ``std`` give NaN.

    Raises:
      TypeError: an array not floating point, ``coverage`` traced.
      ValueError: not exactly one of (``mean`` and ``std``) and ``samples``; shapes differ; no target;
        ``coverage`` outside ``(0, 1)``; (when concrete) NaN or inf, a negative ``std``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> targets = jnp.array([0.0, 1.0, 3.0])
      >>> picp = jaxdrop.uncertainty.picp(targets, mean=jnp.zeros(3), std=jnp.ones(3), coverage=0.95)  # +-1.96
      >>> round(float(picp), 4)
      0.6667
    """
    lower, upper, interval_ok = _interval(mean, std, samples, coverage, sample_axis)
    targets, targets_ok = _inputs.finite_array(targets, "targets")
    _inputs.same_shape(targets, lower, "targets", "mean" if samples is None else "samples[0]")
    return _inputs.guard(_covered(lower, upper, targets), interval_ok, targets_ok)


@jax.jit
def _covered(lower: jax.Array, upper: jax.Array, targets: jax.Array) -> jax.Array:
    return ((lower <= targets) & (targets <= upper)).mean(dtype=jnp.float32)


def interval_width(
    *,
    mean: jax.typing.ArrayLike | None = None,
    std: jax.typing.ArrayLike | None = None,
    samples: jax.typing.ArrayLike | None = None,
    coverage: float = 0.95,
    sample_axis: int | None = None,
) -> jax.Array:
    """Mean width of the central ``coverage`` prediction interval ("MPIW", Khosravi et al. 2011): the price paid
    for the coverage that `picp()` reports, in the targets' units.

    ``MPIW = mean_i (upper_i - lower_i)``: ``2 z std`` for a Gaussian, the spread between the empirical quantiles
    for ``samples`` (the same intervals as `picp()`).

    Args:
      mean, std, samples, coverage, sample_axis: as `picp()`.

    Returns:
      A float32 scalar ``>= 0``. Inside ``jit``, NaN or inf anywhere or a negative traced ``std`` give NaN.

    Raises:
      TypeError, ValueError: as `picp()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> round(float(jaxdrop.uncertainty.interval_width(mean=jnp.zeros(2), std=jnp.ones(2), coverage=0.95)), 4)
      3.9199
    """
    lower, upper, ok = _interval(mean, std, samples, coverage, sample_axis)
    return _inputs.guard(jnp.mean(upper - lower), ok)


@functools.partial(jax.jit, static_argnums=3)
def _ence(mean: jax.Array, std: jax.Array, targets: jax.Array, num_bins: int) -> jax.Array:
    mean, std, targets = mean.ravel(), std.ravel(), targets.ravel()
    num_examples = mean.shape[0]
    order = jnp.argsort(std, stable=True)
    ranks = jnp.zeros(num_examples, jnp.int32).at[order].set(jnp.arange(num_examples, dtype=jnp.int32))
    bins = (ranks * num_bins) // num_examples  # equal mass, as the "quantile" bins of `reliability_diagram`
    counts = jax.ops.segment_sum(jnp.ones_like(std), bins, num_segments=num_bins)
    variance = jax.ops.segment_sum(jnp.square(std), bins, num_segments=num_bins)
    squared_error = jax.ops.segment_sum(jnp.square(targets - mean), bins, num_segments=num_bins)
    safe = jnp.maximum(counts, 1.0)
    rmv, rmse_ = jnp.sqrt(variance / safe), jnp.sqrt(squared_error / safe)
    filled = counts > 0
    return jnp.where(filled, jnp.abs(rmv - rmse_) / jnp.where(filled, rmv, 1.0), 0.0).sum() / filled.sum()


def ence(
    mean: jax.typing.ArrayLike, std: jax.typing.ArrayLike, targets: jax.typing.ArrayLike, num_bins: int = 15
) -> jax.Array:
    """Expected normalized calibration error (Levi et al. 2022, "Evaluating and Calibrating Uncertainty Prediction
    in Regression Tasks", Sensors): the regression analogue of ECE; 0 when the predicted spread matches the error.

    Examples are sorted by ``std`` and split into ``num_bins`` equal-mass bins (sizes differ by at most one, ties
    by index); per bin, the root mean variance ``RMV_b = sqrt(mean std**2)`` is compared with the error
    ``RMSE_b = sqrt(mean (y - mean)**2)``: ``ENCE = (1/B) sum_b |RMV_b - RMSE_b| / RMV_b`` over the non-empty bins
    (all ``B`` of them when ``n >= num_bins``). Scale-free: a std half the size of the error gives 1, one twice the
    size 0.5.

    Args:
      mean: ``(*shape,)`` predictive means, finite, at least one.
      std: ``(*shape,)`` predictive standard deviations, finite and > 0 (``RMV_b`` divides).
      targets: ``(*shape,)`` observed values, finite.
      num_bins: number of bins, >= 1 (static).

    Returns:
      A float32 scalar ``>= 0``. Inside ``jit``, NaN or inf anywhere or a traced ``std <= 0`` give NaN.

    Raises:
      TypeError: an array not floating point.
      ValueError: shapes differ, no example, ``num_bins < 1``; (when concrete) NaN or inf, ``std <= 0``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> mean, std, targets = jnp.zeros(4), jnp.array([1.0, 1.0, 2.0, 2.0]), jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> jaxdrop.uncertainty.ence(mean, std, targets, num_bins=2).tolist()  # bins: |1 - 1| / 1, |2 - 1| / 2
      0.25
    """
    mean, std, targets, ok = _gaussian_and_targets(mean, std, targets, strict=True)
    num_bins = _checks.int_in_range(num_bins, "num_bins", 1, 2**31 - 1)
    return _inputs.guard(_ence(mean, std, targets, num_bins), ok)


@functools.partial(jax.jit, static_argnums=3)
def _uce(mean: jax.Array, std: jax.Array, targets: jax.Array, num_bins: int) -> jax.Array:
    variance, squared_error = jnp.square(std).ravel(), jnp.square(targets - mean).ravel()
    low, high = variance.min(), variance.max()
    position = (variance - low) / jnp.where(high > low, high - low, 1.0)
    bins = jnp.clip(jnp.ceil(position * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    sum_variance = jax.ops.segment_sum(variance, bins, num_segments=num_bins)
    sum_error = jax.ops.segment_sum(squared_error, bins, num_segments=num_bins)
    return jnp.abs(sum_error - sum_variance).sum() / variance.shape[0]  # sum_b (n_b / n) |MSE_b - MV_b|


def uce(
    mean: jax.typing.ArrayLike, std: jax.typing.ArrayLike, targets: jax.typing.ArrayLike, num_bins: int = 15
) -> jax.Array:
    """Uncertainty calibration error (Laves et al. 2020, "Well-Calibrated Regression Uncertainty in Medical
    Imaging with Deep Learning", MIDL): the ECE of regression, on variances, in squared target units.

    The predicted variances ``std**2`` are put in ``num_bins`` equal-width bins spanning ``[min, max]`` of the
    variances (``(lo_b, hi_b]``, the smallest variance in the first bin; one bin when all are equal), and
    ``UCE = sum_b (n_b / n) |MSE_b - MV_b|`` compares each bin's mean squared error with its mean variance.
    (The authors' code leaves the example with the smallest variance out of every bin; it is counted here.)

    Args:
      mean, targets: as `ence()`.
      std: ``(*shape,)`` predictive standard deviations, finite and ``>= 0``.
      num_bins: number of bins, >= 1 (static).

    Returns:
      A float32 scalar ``>= 0``. Inside ``jit``, NaN or inf anywhere or a negative traced ``std`` give NaN.

    Raises:
      TypeError: an array not floating point.
      ValueError: shapes differ, no example, ``num_bins < 1``; (when concrete) NaN or inf, a negative ``std``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> mean, std, targets = jnp.zeros(4), jnp.array([1.0, 1.0, 2.0, 2.0]), jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> jaxdrop.uncertainty.uce(mean, std, targets, num_bins=2).tolist()  # (1/2)|1 - 1| + (1/2)|1 - 4|
      1.5
    """
    mean, std, targets, ok = _gaussian_and_targets(mean, std, targets, strict=False)
    num_bins = _checks.int_in_range(num_bins, "num_bins", 1, 2**31 - 1)
    return _inputs.guard(_uce(mean, std, targets, num_bins), ok)


@jax.jit
def _crps_gaussian(mean: jax.Array, std: jax.Array, targets: jax.Array) -> jax.Array:
    residual = targets - mean
    point = std == 0  # the limit of a vanishing std: the absolute error
    z = residual / jnp.where(point, 1.0, std)
    score = std * (z * (2.0 * ndtr(z) - 1.0) + 2.0 * jnp.exp(-0.5 * jnp.square(z)) / _SQRT_2PI - 1.0 / _SQRT_PI)
    return jnp.where(point, jnp.abs(residual), score).mean()


def crps_gaussian(mean: jax.typing.ArrayLike, std: jax.typing.ArrayLike, targets: jax.typing.ArrayLike) -> jax.Array:
    """Mean continuous ranked probability score of Gaussian predictions, closed form (Gneiting & Raftery 2007,
    "Strictly Proper Scoring Rules, Prediction, and Estimation", JASA, eq. 21); lower is better, in target units.

    ``CRPS(N(mu, sigma**2), y) = sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]`` with ``z = (y - mu) / sigma``:
    the integral of ``(F(x) - 1[x >= y])**2`` over ``x``. A proper score that rewards sharpness and calibration
    together, and reduces to the absolute error for ``sigma = 0``.

    Args:
      mean: ``(*shape,)`` predictive means, finite, at least one.
      std: ``(*shape,)`` predictive standard deviations, finite and ``>= 0`` (0: a point prediction).
      targets: ``(*shape,)`` observed values, finite.

    Returns:
      A float32 scalar ``>= 0``: the mean over elements. Inside ``jit``, NaN or inf anywhere or a negative traced
      ``std`` give NaN.

    Raises:
      TypeError: an array not floating point.
      ValueError: shapes differ, no element; (when concrete) NaN or inf, a negative ``std``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> crps = jaxdrop.uncertainty.crps_gaussian(jnp.zeros(1), jnp.ones(1), jnp.zeros(1))
      >>> round(float(crps), 4)  # (sqrt(2) - 1) / sqrt(pi)
      0.2337
    """
    mean, std, targets, ok = _gaussian_and_targets(mean, std, targets, strict=False)
    return _inputs.guard(_crps_gaussian(mean, std, targets), ok)


@jax.jit
def _crps_samples(samples: jax.Array, targets: jax.Array) -> jax.Array:
    num_samples = samples.shape[0]
    absolute_error = jnp.abs(samples - targets).mean(0)
    # sum_{i,j} |x_i - x_j| = 2 sum_i (2i - T - 1) x_(i) over the sorted samples (1-based i): O(T log T), not O(T^2).
    ordered = jnp.sort(samples, axis=0)
    weights = (2.0 * jnp.arange(1, num_samples + 1, dtype=ordered.dtype) - num_samples - 1).reshape(
        (num_samples,) + (1,) * (samples.ndim - 1)
    )
    spread = (weights * ordered).sum(0) / num_samples**2  # = (1 / (2 T^2)) sum_{i,j} |x_i - x_j|
    return (absolute_error - spread).mean()


def crps_samples(
    samples: jax.typing.ArrayLike, targets: jax.typing.ArrayLike, *, sample_axis: int | None = None
) -> jax.Array:
    """Mean CRPS of the empirical distribution of predictive samples, energy form (Gneiting & Raftery 2007, eq. 22):
    ``CRPS = mean_t |x_t - y| - (1 / (2 T^2)) sum_{t,s} |x_t - x_s|``; lower is better, in target units.

    The second term is computed from the sorted samples in ``O(T log T)`` per element instead of ``O(T^2)``. This
    is the exact CRPS of the ``T``-point empirical distribution (as ``properscoring.crps_ensemble``), which tends to
    the CRPS of the sampled distribution as ``T`` grows (its "fair" variant, with ``T (T - 1)``, is unbiased for
    it at every ``T``). One sample gives the absolute error. Include observation noise in the samples (e.g.
    ``mean_t + noise``) if the target is noisy: MC samples of the mean alone are too narrow for ``y``.

    Args:
      samples: ``(T, *shape)`` predictive samples, ``T >= 1``, finite, at least one element per sample.
      targets: ``(*shape,)`` observed values, finite.
      sample_axis: where the samples are, when not first (static); required (``0``) for a 1-D ``samples``, see
        `epistemic_variance()`.

    Returns:
      A float32 scalar ``>= 0`` (up to rounding): the mean over elements. Inside ``jit``, NaN or inf give NaN.

    Raises:
      TypeError: an array not floating point.
      ValueError: shapes differ, no element, no sample, a 1-D ``samples`` without ``sample_axis``; (when
        concrete) NaN or inf.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> samples = jnp.array([[0.0], [2.0]])  # mean |x - 1| = 1, spread (1/8)(2 + 2) = 0.5
      >>> jaxdrop.uncertainty.crps_samples(samples, jnp.array([1.0])).tolist()
      0.5
    """
    samples, samples_ok = _samples(samples, sample_axis)
    targets, targets_ok = _inputs.finite_array(targets, "targets")
    if targets.shape != samples.shape[1:]:
        raise ValueError(f"`targets` must have the shape of one sample {samples.shape[1:]}; got {targets.shape}.")
    _inputs.not_empty(targets, "targets")
    return _inputs.guard(_crps_samples(samples, targets), samples_ok, targets_ok)
