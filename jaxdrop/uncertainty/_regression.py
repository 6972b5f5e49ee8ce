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


def _samples(samples: jax.typing.ArrayLike, name: str = "samples") -> jax.Array:
    samples = _checks.floating_array(samples, name)
    if samples.ndim < 1 or samples.shape[0] < 1:
        raise ValueError(f"`{name}` must have a leading sample axis of size >= 1; got shape {samples.shape}.")
    return _stats.as_float(samples)


def _noise_log_variance(
    samples: jax.Array, tau: jax.typing.ArrayLike | None, log_variance: jax.typing.ArrayLike | None
) -> jax.Array:
    """Per-sample log observation variance from exactly one of ``tau`` and ``log_variance``."""
    if tau is not None and log_variance is None:
        return jnp.broadcast_to(-jnp.log(_checks.positive(tau, "tau")), samples.shape)
    if log_variance is not None and tau is None:
        log_variance = _samples(log_variance, "log_variance")
        _inputs.same_shape(log_variance, samples, "log_variance", "samples")
        return log_variance
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


def epistemic_variance(samples: jax.typing.ArrayLike) -> jax.Array:
    """Variance of the MC samples over the sample axis (``1/T`` normalisation): the model's uncertainty.

    Args:
      samples: ``(T, *shape)`` sampled predictions.

    Returns:
      ``(*shape,)`` float32; exactly 0 for a deterministic model.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.epistemic_variance(jnp.array([1.0, 3.0])).tolist()
      1.0
    """
    return _variance(_samples(samples))


def aleatoric_variance(
    log_variance: jax.typing.ArrayLike | None = None, *, tau: jax.typing.ArrayLike | None = None
) -> jax.Array:
    """Observation-noise variance: ``1/tau``, or ``mean_t exp(log_variance_t)`` for a heteroscedastic head.

    Args:
      log_variance: ``(T, *shape)`` per-sample predicted log-variances (heteroscedastic head).
      tau: model precision (homoscedastic); pass exactly one of the two.

    Returns:
      ``(*shape,)`` float32 (a scalar for ``tau``).

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.aleatoric_variance(tau=4.0).tolist()
      0.25
      >>> jaxdrop.uncertainty.aleatoric_variance(jnp.log(jnp.array([1.0, 3.0]))).tolist()
      2.0
    """
    if log_variance is None:
        return jnp.exp(_noise_log_variance(jnp.zeros(()), tau, None))
    return jnp.exp(_noise_log_variance(_samples(log_variance, "log_variance"), None, log_variance)).mean(0)


def predictive_variance(
    samples: jax.typing.ArrayLike,
    *,
    tau: jax.typing.ArrayLike | None = None,
    log_variance: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Epistemic plus aleatoric variance, ``var_t(y_t) + 1/tau`` (Gal & Ghahramani 2016, eq. 8).

    Args:
      samples: ``(T, *shape)`` sampled means.
      tau, log_variance: the noise model, exactly one (see `aleatoric_variance()`).

    Returns:
      ``(*shape,)`` float32.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.predictive_variance(jnp.array([1.0, 3.0]), tau=2.0).tolist()
      1.5
    """
    samples = _samples(samples)
    noise = jnp.exp(_noise_log_variance(samples, tau, log_variance)).mean(0)
    return _variance(samples) + noise


def gaussian_log_likelihood(
    samples: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    tau: jax.typing.ArrayLike | None = None,
    log_variance: jax.typing.ArrayLike | None = None,
    target_mean: jax.typing.ArrayLike = 0.0,
    target_std: jax.typing.ArrayLike = 1.0,
) -> jax.Array:
    """Mean test log-likelihood of the MC mixture, exactly as in Gal & Ghahramani 2016 (their code).

    Per point: ``logsumexp_t(-0.5 * tau * (y - y_t)**2) - log T - 0.5 log(2 pi) + 0.5 log tau``, i.e. the log
    density of ``y`` under the equal-weight mixture of ``N(y_t, 1/tau)``; computed in log space. With a
    heteroscedastic head each component has its own variance ``exp(log_variance_t)``.

    Args:
      samples: ``(T, *shape)`` sampled means, in standardised units if ``target_std``/``target_mean`` are given.
      targets: ``(*shape,)`` targets in original units.
      tau: precision in original units; or ``log_variance``: ``(T, *shape)`` per-sample log-variances (in the
        samples' units). Exactly one.
      target_mean, target_std: the standardisation of the training targets; samples are mapped back with
        ``y * target_std + target_mean`` (and log-variances shifted by ``2 log target_std``), as in the paper.

    Returns:
      A float32 scalar: the mean over points of the per-point log-likelihood.

    Raises:
      ValueError: shapes do not match, no or two noise models, ``tau <= 0``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> ll = jaxdrop.uncertainty.gaussian_log_likelihood(jnp.zeros((3, 1)), jnp.zeros(1), tau=1.0)
      >>> round(float(ll), 4)  # -0.5 log(2 pi)
      -0.9189
    """
    samples = _samples(samples)
    targets = _checks.floating_array(targets, "targets")
    if targets.shape != samples.shape[1:]:
        raise ValueError(f"`targets` must have the shape of one sample {samples.shape[1:]}; got {targets.shape}.")
    log_var = _noise_log_variance(samples, tau, log_variance)
    target_std = jnp.asarray(target_std, jnp.float32)
    if log_variance is not None:
        log_var = log_var + 2.0 * jnp.log(target_std)
    return _mixture_log_likelihood(samples, targets, log_var, jnp.asarray(target_mean, jnp.float32), target_std)


def rmse(predictions: jax.typing.ArrayLike, targets: jax.typing.ArrayLike) -> jax.Array:
    """Root mean squared error over every element.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.rmse(jnp.array([1.0, 3.0]), jnp.array([0.0, 2.0])).tolist()
      1.0
    """
    predictions = _stats.as_float(_checks.floating_array(predictions, "predictions"))
    targets = _stats.as_float(_checks.floating_array(targets, "targets"))
    _inputs.same_shape(predictions, targets, "predictions", "targets")
    return jnp.sqrt(jnp.mean(jnp.square(predictions - targets)))
