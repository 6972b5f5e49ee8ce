"""Regression uncertainty from MC samples ``(T, *shape)`` of predicted means (Gal & Ghahramani 2016, section 4.5).

Epistemic variance is the spread of the samples; aleatoric variance is the observation noise, either a fixed
precision ``tau`` (variance ``1/tau``) or a heteroscedastic head's per-sample log-variances (Kendall & Gal 2017).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs


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
