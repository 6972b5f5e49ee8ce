"""Post-hoc calibration: a few parameters fitted on held-out data by maximum likelihood, the network untouched.

Classification: temperature scaling and vector scaling of the logits (Guo et al. 2017, "On Calibration of Modern
Neural Networks", ICML), for one deterministic prediction or for MC samples of logits (Laves et al. 2019,
"Well-calibrated Model Uncertainty with Temperature Scaling for Dropout Variational Inference"). Regression: the
model precision ``tau`` of Gal & Ghahramani (2016), fitted by maximum likelihood instead of their grid search, and a
scale on the predictive variance (Levi et al. 2019, "Evaluating and Calibrating Uncertainty Prediction in
Regression Tasks"; Kuleshov et al. 2018 recalibrate the same quantity non-parametrically).

Every fit is a ``jax.numpy`` program (no optax): the 1-D fits are a safeguarded Newton iteration in the log of the
parameter, a fixed number of steps so the fit can be ``jit``-ed and ``vmap``-ed; vector scaling uses
``jax.scipy.optimize.minimize`` (BFGS).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.optimize
from jax.scipy.special import logsumexp

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs, _regression

TEMPERATURE_BOUNDS = (1e-2, 1e2)  # T outside this range means the logits carry no usable signal (or are all ties)
_NEWTON_STEPS = 64  # each step at least halves the bracket when Newton is refused: 2**-64 of the log-range
_BFGS_MAX_ITERATIONS = 200


def _minimise_scalar(objective, low: float | jax.Array, high: float | jax.Array, start: float | jax.Array):
    """Minimiser of a unimodal ``objective`` on ``[low, high]``: safeguarded Newton (``jit``-able, fixed steps).

    The sign of the derivative shrinks the bracket (a unimodal function's minimiser lies on the side where it
    falls); a Newton step is taken when the curvature is positive and the step lands inside the bracket, bisection
    otherwise. So the iteration converges like Newton near a smooth minimum and never worse than bisection; a
    minimiser at an end of the bracket is approached by bisection and returned as that end.
    """
    gradient = jax.grad(objective)
    curvature = jax.grad(gradient)

    def step(_, state):
        low, high, x = state
        slope, bend = gradient(x), curvature(x)
        low = jnp.where(slope < 0, x, low)
        high = jnp.where(slope > 0, x, high)
        newton = x - slope / bend
        accept = (bend > 0) & (newton > low) & (newton < high) & jnp.isfinite(newton)
        return low, high, jnp.where(accept, newton, 0.5 * (low + high))

    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    start = jnp.clip(jnp.asarray(start, jnp.float32), low, high)
    return jax.lax.fori_loop(0, _NEWTON_STEPS, step, (low, high, start))[2]


# --- classification ----------------------------------------------------------------------------------------------


class VectorScaling(NamedTuple):
    """Vector scaling of logits, ``z * scale + bias`` (Guo et al. 2017, section 4.2); a pytree.

    Attributes:
      scale: ``(num_classes,)`` float32 per-class factors (temperature scaling is ``scale = 1/T``, ``bias = 0``).
      bias: ``(num_classes,)`` float32 per-class offsets, centred to sum to 0 (softmax ignores a common shift).
    """

    scale: jax.Array
    bias: jax.Array


def _logits_and_labels(
    logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array, _inputs.Ok]:
    """Logits as ``(T, n, num_classes)`` float32 (``T = 1`` without samples), labels ``(n,)``, the ``ok`` flag.

    The labels' shape says whether ``logits`` holds MC samples: ``(n, C)`` with ``(n,)`` labels is one prediction
    per example, ``(T, n, C)`` with ``(n,)`` labels is ``T`` samples per example. The two cannot be confused.
    """
    logits = _checks.floating_array(logits, "logits")
    labels = _checks.integer_array(labels, "labels")
    if logits.ndim == 2 and labels.ndim == 1:
        samples = logits[None]
    elif logits.ndim == 3 and labels.ndim == 1:
        samples = logits
    else:
        raise ValueError(
            "`logits` must be (num_examples, num_classes), or (num_samples, num_examples, num_classes) for MC "
            f"samples, with `labels` of shape (num_examples,); got `logits` {logits.shape} and `labels` "
            f"{labels.shape}."
        )
    if samples.shape[0] == 0:
        raise ValueError(f"`logits` must have at least one sample; got shape {logits.shape}.")
    if samples.shape[-1] < 2:
        raise ValueError(f"`logits` must have at least two classes (last axis); got shape {logits.shape}.")
    _inputs.not_empty(labels, "labels")  # a fit on no example has no answer
    labels, labels_ok = _inputs.labels(labels, samples.shape[1:-1], samples.shape[-1])
    samples, logits_ok = _inputs.finite_array(samples, "logits")
    return samples, labels, _inputs.all_ok(labels_ok, logits_ok)


def _mixture_nll(scaled_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-mean_i log mean_t softmax(z_ti)[y_i]``: the NLL of the averaged (MC) predictive, in log space."""
    log_probs = jax.nn.log_softmax(scaled_logits, axis=-1)
    label_log_probs = jnp.take_along_axis(log_probs, labels[None, :, None], axis=-1)[..., 0]
    return -(logsumexp(label_log_probs, axis=0) - math.log(scaled_logits.shape[0])).mean()


@jax.jit
def _fit_temperature(samples: jax.Array, labels: jax.Array) -> jax.Array:
    def objective(log_temperature):
        return _mixture_nll(samples * jnp.exp(-log_temperature), labels)

    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    return jnp.exp(_minimise_scalar(objective, low, high, 0.0))


def fit_temperature(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on held-out data (Guo et al. 2017).

    ``T > 1`` softens over-confident predictions, ``T < 1`` sharpens under-confident ones; the predicted class never
    changes. Fit it on a calibration split the network was not trained on, never on the test set.

    With MC samples of logits ``(T_mc, n, C)``, one temperature divides every sample's logits and the fitted
    objective is the NLL of the *average* of the tempered softmaxes, ``mean_t softmax(z_t / T)``: the prediction
    that is used (Laves et al. 2019). Tempering each sample keeps the samples' disagreement (the mutual
    information stays an epistemic signal). The other choice, a temperature on ``log mean_t p_t`` (pass those as
    ``logits``, without a sample axis), treats the average as one softmax. Neither family contains the other, and
    which fits better depends on the model: tempering each sample wins when the MC average is over-confident;
    when it is under-confident (large dropout rates on a small network, as in ``python -m jaxdrop demo``),
    sharpening each sample cannot undo the flattening that their disagreement causes, and tempering the average
    wins (``tests/test_posthoc.py`` pins both directions). Fit both on the calibration split and keep the better.

    The objective in ``log T`` is minimised by a safeguarded Newton iteration (64 fixed steps: Newton where the
    curvature is positive and the step stays in the bracket, bisection on the sign of the derivative otherwise)
    on ``T`` in ``[0.01, 100]``. Without samples the NLL is convex in ``1/T``, so its minimiser is unique; with
    MC samples the tests check the fit against SciPy and a grid to 1e-3.

    Args:
      logits: ``(n, num_classes)`` held-out logits, or ``(num_samples, n, num_classes)`` MC samples of them
        (samples first); finite, at least two classes.
      labels: ``(n,)`` integer labels in ``[0, num_classes)``, at least one.

    Returns:
      A float32 scalar ``T`` in ``[0.01, 100]``: apply it with `calibrated_probs()`. Inside ``jit``, invalid traced
      values (NaN/inf logits, labels out of range) give NaN.

    Raises:
      TypeError: ``logits`` not floating point or ``labels`` not integer.
      ValueError: shapes that do not match, no example, fewer than two classes; (when concrete) NaN/inf logits,
        labels out of range.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> logits = 3.0 * jax.random.normal(jax.random.key(0), (2000, 4))
      >>> labels = jax.random.categorical(jax.random.key(1), logits / 3.0)  # the truth is softmax(logits / 3)
      >>> round(float(jaxdrop.uncertainty.fit_temperature(logits, labels)))
      3
    """
    samples, labels, ok = _logits_and_labels(logits, labels)
    return _inputs.guard(_fit_temperature(samples, labels), ok)


@jax.jit
def _fit_vector_scaling(samples: jax.Array, labels: jax.Array) -> VectorScaling:
    num_classes = samples.shape[-1]

    def objective(params):
        scale, bias = params[:num_classes], params[num_classes:]
        # softmax ignores a common shift of the biases; pinning their mean keeps the Hessian non-singular
        return _mixture_nll(samples * scale + bias, labels) + jnp.square(bias.mean())

    start = jnp.concatenate([jnp.ones(num_classes), jnp.zeros(num_classes)])
    options = {"maxiter": _BFGS_MAX_ITERATIONS}
    params = jax.scipy.optimize.minimize(objective, start, method="BFGS", options=options).x
    bias = params[num_classes:]
    return VectorScaling(scale=params[:num_classes], bias=bias - bias.mean())


def fit_vector_scaling(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> VectorScaling:
    """Per-class scale and bias of the logits minimising the held-out NLL (vector scaling, Guo et al. 2017).

    ``2 * num_classes`` parameters instead of temperature scaling's one: more flexible, so it can fit the
    calibration split better and, with few examples per class, generalise worse (Guo et al. found temperature
    scaling as good or better on most data sets). Unlike temperature scaling it can change the predicted class.
    With MC samples the objective is, as in `fit_temperature()`, the NLL of the average of the scaled softmaxes.
    Fitted by ``jax.scipy.optimize.minimize`` (BFGS, at most 200 iterations) from the identity.

    Args:
      logits: ``(n, num_classes)`` held-out logits, or ``(num_samples, n, num_classes)`` MC samples of them.
      labels: ``(n,)`` integer labels in ``[0, num_classes)``, at least one.

    Returns:
      A `VectorScaling` (float32); apply it with `calibrated_probs()`. Inside ``jit``, invalid traced values give
      NaN.

    Raises:
      TypeError, ValueError: as `fit_temperature()`.
    """
    samples, labels, ok = _logits_and_labels(logits, labels)
    return _inputs.guard(_fit_vector_scaling(samples, labels), ok)


def calibrated_probs(
    logits: jax.typing.ArrayLike,
    calibration: jax.typing.ArrayLike | VectorScaling,
    *,
    mc_samples: bool = False,
) -> jax.Array:
    """``softmax`` of the calibrated logits, averaged over MC samples when ``mc_samples``.

    Args:
      logits: ``(*batch, num_classes)`` logits, or ``(num_samples, *batch, num_classes)`` with ``mc_samples``.
      calibration: a temperature ``T > 0`` (from `fit_temperature()`; the logits are divided by it) or a
        `VectorScaling` (from `fit_vector_scaling()`).
      mc_samples: the first axis of ``logits`` holds MC samples: the result is ``mean_t softmax(calibrated z_t)``.

    Returns:
      ``(*batch, num_classes)`` probabilities in the dtype of ``logits`` (computed in float32). Inside ``jit``, a
      traced temperature that is not a finite number > 0, or NaN/inf logits, give NaN.

    Raises:
      TypeError: ``logits`` not floating point; ``calibration`` neither a number nor a `VectorScaling`.
      ValueError: ``logits`` without a class axis (or without a sample axis with ``mc_samples``), a temperature
        that is not a finite number > 0 (when static), a `VectorScaling` of another number of classes; (when
        concrete) NaN/inf logits.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> probs = jaxdrop.uncertainty.calibrated_probs(jnp.log(jnp.array([0.2, 0.8])), 2.0)
      >>> [round(p, 4) for p in probs.tolist()]  # sqrt(0.2) : sqrt(0.8)
      [0.3333, 0.6667]
    """
    logits = _checks.floating_array(logits, "logits")
    mc_samples = _checks.static_bool(mc_samples, "mc_samples")
    min_ndim = 2 if mc_samples else 1
    if logits.ndim < min_ndim or logits.shape[-1] == 0:
        layout = "(num_samples, *batch, num_classes)" if mc_samples else "(*batch, num_classes)"
        raise ValueError(f"`logits` must be {layout} with at least one class; got shape {logits.shape}.")
    if mc_samples and logits.shape[0] == 0:
        raise ValueError(f"`logits` must have at least one MC sample (first axis); got shape {logits.shape}.")
    values, logits_ok = _inputs.finite_array(logits, "logits")
    if isinstance(calibration, VectorScaling):
        scale, bias = (jnp.asarray(a, jnp.float32) for a in calibration)
        if scale.shape != (logits.shape[-1],) or bias.shape != scale.shape:
            raise ValueError(
                f"`calibration` must scale {logits.shape[-1]} classes; got scale {scale.shape} and bias {bias.shape}."
            )
        calibration_ok = _inputs.all_ok(
            _inputs.finite(scale, "calibration.scale"), _inputs.finite(bias, "calibration.bias")
        )
    else:
        if not _checks.is_array_like(calibration):
            raise TypeError(
                f"`calibration` must be a temperature (a number > 0) or a VectorScaling; got {type(calibration)}."
            )
        temperature, calibration_ok = _inputs.positive(calibration, "calibration")
        scale, bias = 1.0 / temperature, jnp.zeros((), jnp.float32)
    probs = _calibrated_probs(values, scale, bias, mc_samples, logits.dtype)
    return _inputs.guard(probs, logits_ok, calibration_ok)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _calibrated_probs(logits, scale, bias, mc_samples, dtype):
    probs = jax.nn.softmax(logits * scale + bias, axis=-1)
    return (probs.mean(0) if mc_samples else probs).astype(dtype)


# --- regression --------------------------------------------------------------------------------------------------


@jax.jit
def _fit_tau(samples, targets, target_mean, target_std):
    means = samples * target_std + target_mean
    residual_variance = jnp.maximum(jnp.mean(jnp.square(targets - means.mean(0))), jnp.finfo(jnp.float32).tiny)

    def objective(log_tau):
        log_variance = jnp.broadcast_to(-log_tau, means.shape)
        log_density = _stats.gaussian_log_density(targets, means, log_variance)
        return -(logsumexp(log_density, axis=0) - math.log(samples.shape[0])).mean()

    # The noise variance 1/tau never needs to exceed the residual variance (the samples' spread only adds to it),
    # and 1e-8 of it is already negligible: the bracket in log tau.
    center = -jnp.log(residual_variance)
    return jnp.exp(_minimise_scalar(objective, center + math.log(0.1), center + math.log(1e8), center))


def fit_tau(
    samples: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    target_mean: jax.typing.ArrayLike = 0.0,
    target_std: jax.typing.ArrayLike = 1.0,
    sample_axis: int | None = None,
) -> jax.Array:
    """The model precision ``tau`` maximising the MC test log-likelihood on held-out data (Gal & Ghahramani 2016).

    Gal & Ghahramani chose ``tau`` from a grid by the validation log-likelihood of the MC mixture
    ``mean_t N(y; y_t, 1/tau)`` (`jaxdrop.uncertainty.gaussian_log_likelihood`). This fits the same criterion
    continuously: a safeguarded Newton iteration in ``log tau`` (as in `fit_temperature()`), with ``1/tau`` searched in
    ``[1e-8, 10]`` times the residual variance of the predictive mean. A returned end of that range means the
    samples' spread alone already explains the residuals (or, at the other end, is far too small).

    Args:
      samples: ``(T, *shape)`` sampled means on held-out points, in standardised units if ``target_mean`` and
        ``target_std`` are given (as in ``jaxdrop.mc.predict``); finite, at least one point.
      targets: ``(*shape,)`` held-out targets in original units, finite.
      target_mean, target_std: the targets' standardisation (finite scalars, ``target_std > 0``).
      sample_axis: where the samples are, when not first; required (``0``) for a 1-D input.

    Returns:
      A float32 scalar: ``tau`` in original units, to pass to ``jaxdrop.mc.predict`` or
      `gaussian_log_likelihood()`. Inside ``jit``, invalid traced values give NaN.

    Raises:
      TypeError, ValueError: as `gaussian_log_likelihood()`.

    Examples:
      >>> import jax, jaxdrop
      >>> samples = jax.random.normal(jax.random.key(0), (1, 5000))  # one sample: a deterministic model
      >>> targets = samples[0] + 0.5 * jax.random.normal(jax.random.key(1), (5000,))
      >>> round(float(jaxdrop.uncertainty.fit_tau(samples, targets)), 1)  # 1 / 0.5**2
      4.0
    """
    samples, samples_ok = _regression._samples(samples, sample_axis)  # the checks of every regression metric
    targets, targets_ok = _inputs.finite_array(targets, "targets")
    if targets.shape != samples.shape[1:]:
        raise ValueError(f"`targets` must have the shape of one sample {samples.shape[1:]}; got {targets.shape}.")
    _inputs.not_empty(targets, "targets")
    target_std, std_ok = _inputs.positive(target_std, "target_std")
    target_mean, mean_ok = _inputs.real_scalar(target_mean, "target_mean")
    tau = _fit_tau(samples, targets, target_mean, target_std)
    return _inputs.guard(tau, samples_ok, targets_ok, std_ok, mean_ok)


def fit_variance_scale(
    mean: jax.typing.ArrayLike, variance: jax.typing.ArrayLike, targets: jax.typing.ArrayLike
) -> jax.Array:
    """The factor ``s`` maximising the held-out likelihood of ``N(y; mean, s * variance)``, in closed form.

    ``s = mean((y - mean)**2 / variance)`` (set the derivative of the Gaussian log-likelihood in ``s`` to 0; Levi
    et al. 2019 fit the same scale by gradient descent). ``s > 1``: the predictive variance was too small. Multiply
    the variance (``RegressionPrediction.variance``) of new predictions by it.

    Args:
      mean: ``(*shape,)`` predictive means on held-out points, finite, at least one.
      variance: ``(*shape,)`` predictive variances, finite and > 0.
      targets: ``(*shape,)`` held-out targets, finite.

    Returns:
      A float32 scalar ``s > 0`` (0 only when every residual is 0). Inside ``jit``, invalid traced values give NaN.

    Raises:
      TypeError: an input not floating point.
      ValueError: shapes differ, no point; (when concrete) NaN/inf anywhere, a variance <= 0.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.fit_variance_scale(jnp.zeros(2), jnp.ones(2), jnp.array([1.0, -3.0])).tolist()
      5.0
    """
    mean, mean_ok = _inputs.finite_array(mean, "mean")
    variance, variance_ok = _inputs.finite_array(variance, "variance")
    targets, targets_ok = _inputs.finite_array(targets, "targets")
    _inputs.same_shape(mean, variance, "mean", "variance")
    _inputs.same_shape(mean, targets, "mean", "targets")
    _inputs.not_empty(mean, "mean")
    smallest = variance.min()
    positive_ok: _inputs.Ok = smallest > 0
    if _checks.is_static(smallest):
        if float(smallest) <= 0:
            raise ValueError(f"`variance` must be > 0 everywhere; got a minimum of {float(smallest):.4g}.")
        positive_ok = None
    scale = jnp.mean(jnp.square(targets - mean) / variance)
    return _inputs.guard(scale, mean_ok, variance_ok, targets_ok, positive_ok)
