"""Post-hoc calibration (``jaxdrop.uncertainty._posthoc``): the fits recover known parameters, agree with scipy to
1e-3, never make the fitting-set likelihood worse, and run under ``jit``/``vmap``; bad input is named."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import optimize
from scipy.special import logsumexp as np_logsumexp

from jaxdrop import uncertainty as U

NUM_CLASSES = 5
W_TRUE = jax.random.normal(jax.random.key(42), (20, NUM_CLASSES))


def tempered_data(key, num_examples, temperature):
    """Logits ``3 N(0, 1)`` whose labels are drawn from ``softmax(logits / temperature)``: the truth is known."""
    logits_key, labels_key = jax.random.split(key)
    logits = 3.0 * jax.random.normal(logits_key, (num_examples, NUM_CLASSES))
    return logits, jax.random.categorical(labels_key, logits / temperature)


def dropout_data(key, num_examples, *, true_scale, rate=0.5, num_samples=30):
    """MC-dropout-like samples: a linear classifier ``x @ W`` with dropout on its 20 inputs; labels drawn from
    ``softmax(true_scale * x @ W)`` (``true_scale < 1``: the samples are over-confident, ``> 1``: under-)."""
    x_key, labels_key, mask_key = jax.random.split(key, 3)
    x = jax.random.normal(x_key, (num_examples, 20))
    labels = jax.random.categorical(labels_key, true_scale * (x @ W_TRUE))
    keep = jax.random.bernoulli(mask_key, 1 - rate, (num_samples, num_examples, 20))
    return (x * keep / (1 - rate)) @ W_TRUE, labels


def scipy_temperature(logits, labels):
    """The same fit in float64 with scipy's bounded Brent search on ``log T`` (an independent implementation)."""
    samples = np.asarray(logits, np.float64)
    samples = samples[None] if samples.ndim == 2 else samples
    labels = np.asarray(labels)

    def nll(log_temperature):
        scaled = samples * np.exp(-log_temperature)
        log_probs = scaled - np_logsumexp(scaled, axis=-1, keepdims=True)
        label_log_probs = log_probs[:, np.arange(len(labels)), labels]
        return -np.mean(np_logsumexp(label_log_probs, axis=0) - np.log(len(samples)))

    bounds = (math.log(0.01), math.log(100.0))
    return math.exp(optimize.minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-10}).x)


@pytest.mark.parametrize("true_temperature", [pytest.param(0.5, marks=pytest.mark.slow), 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    """8 independent data sets in one ``vmap``: the mean fitted T is within 4 standard errors (+1% for the
    maximum-likelihood bias at n = 2000) of the temperature the labels were drawn with."""
    keys = jax.random.split(jax.random.key(0), 8)
    fitted = jax.jit(jax.vmap(lambda k: U.fit_temperature(*tempered_data(k, 2000, true_temperature))))(keys)
    fitted = np.asarray(fitted)
    error = fitted.std(ddof=1) / math.sqrt(len(fitted))
    assert abs(fitted.mean() - true_temperature) <= 4 * error + 0.01 * true_temperature, (fitted.mean(), error)


def test_fit_temperature_matches_scipy_and_never_worsens_the_fitting_nll():
    logits, labels = tempered_data(jax.random.key(1), 500, 1.7)
    temperature = float(U.fit_temperature(logits, labels))
    assert temperature == pytest.approx(scipy_temperature(logits, labels), rel=1e-3)
    fitted = U.nll(U.calibrated_probs(logits, temperature), labels)
    assert float(fitted) <= float(U.nll(jax.nn.softmax(logits), labels)) + 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("mc", [False, True])
def test_fit_temperature_matches_scipy_and_a_grid_search(mc):
    if mc:
        logits, labels = dropout_data(jax.random.key(1), 500, true_scale=0.4, num_samples=8)
    else:
        logits, labels = tempered_data(jax.random.key(1), 500, 1.7)
    temperature = float(U.fit_temperature(logits, labels))
    assert temperature == pytest.approx(scipy_temperature(logits, labels), rel=1e-3)
    fitted = U.nll(U.calibrated_probs(logits, temperature, mc_samples=mc), labels)
    untouched = U.nll(U.calibrated_probs(logits, 1.0, mc_samples=mc), labels)
    assert float(fitted) <= float(untouched) + 1e-6
    # a grid of 2001 temperatures finds nothing better either
    grid = np.exp(np.linspace(np.log(temperature) - 0.5, np.log(temperature) + 0.5, 2001))
    nll_on_grid = jax.vmap(lambda t: U.nll(U.calibrated_probs(logits, t, mc_samples=mc), labels))(jnp.asarray(grid))
    assert float(fitted) <= float(nll_on_grid.min()) + 1e-6
    assert abs(grid[int(jnp.argmin(nll_on_grid))] / temperature - 1) < 1e-3


@pytest.mark.slow
def test_temperature_of_mc_samples_vs_temperature_of_their_average():
    """What the docstring of `fit_temperature` says: tempering each sample (then averaging) beats a temperature on
    ``log mean_t p_t`` when the MC predictive is over-confident, and loses when it is under-confident (the
    samples' disagreement flattens the average, which sharpening each sample cannot undo). Held-out NLL."""
    outcomes = {}
    for true_scale in (0.3, 2.0):  # over-confident samples, under-confident samples
        samples, labels = dropout_data(jax.random.key(2), 3000, true_scale=true_scale)
        test_samples, test_labels = dropout_data(jax.random.key(3), 3000, true_scale=true_scale)
        per_sample = U.calibrated_probs(test_samples, U.fit_temperature(samples, labels), mc_samples=True)

        def log_mean(s):
            return jnp.log(jax.nn.softmax(s).mean(0))

        on_average = U.calibrated_probs(log_mean(test_samples), U.fit_temperature(log_mean(samples), labels))
        outcomes[true_scale] = float(U.nll(per_sample, test_labels)) - float(U.nll(on_average, test_labels))
    assert outcomes[0.3] < -0.01, outcomes  # measured -0.035
    assert outcomes[2.0] > 0.1, outcomes  # measured +0.27


@pytest.mark.slow
def test_vector_scaling_recovers_per_class_scales_and_beats_temperature_on_its_fitting_set():
    logits = 3.0 * jax.random.normal(jax.random.key(4), (6000, NUM_CLASSES))
    scale = jnp.array([0.3, 0.6, 1.0, 1.5, 2.0])
    bias = jnp.array([0.5, -0.5, 0.0, 0.2, -0.2])
    labels = jax.random.categorical(jax.random.key(5), logits * scale + bias)
    fitted = U.fit_vector_scaling(logits, labels)
    assert isinstance(fitted, U.VectorScaling) and fitted.scale.dtype == jnp.float32
    np.testing.assert_allclose(fitted.scale, scale, atol=0.15)
    np.testing.assert_allclose(fitted.bias, bias, atol=0.15)
    temperature = U.fit_temperature(logits, labels)
    vector_nll = U.nll(U.calibrated_probs(logits, fitted), labels)
    assert float(vector_nll) < float(U.nll(U.calibrated_probs(logits, temperature), labels)) - 0.01
    # MC samples and jit
    samples = jnp.stack([logits, logits + 0.1])
    jitted = jax.jit(U.fit_vector_scaling)(samples, labels)
    assert float(U.nll(U.calibrated_probs(samples, jitted, mc_samples=True), labels)) <= float(
        U.nll(U.calibrated_probs(samples, 1.0, mc_samples=True), labels)
    )


def test_calibrated_probs_values_dtypes_and_gradient():
    logits = jnp.array([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]])
    np.testing.assert_allclose(U.calibrated_probs(logits, 2.0), jax.nn.softmax(logits / 2.0), rtol=1e-6)
    samples = jnp.stack([logits, -logits])
    np.testing.assert_allclose(
        U.calibrated_probs(samples, 0.5, mc_samples=True),
        (jax.nn.softmax(2 * logits) + jax.nn.softmax(-2 * logits)) / 2,
        rtol=1e-6,
    )
    identity = U.VectorScaling(jnp.ones(3), jnp.zeros(3))
    np.testing.assert_allclose(U.calibrated_probs(logits, identity), jax.nn.softmax(logits), rtol=1e-6)
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        probs = U.calibrated_probs(logits.astype(dtype), 1.5)
        assert probs.dtype == dtype
        np.testing.assert_allclose(np.asarray(probs, np.float32), jax.nn.softmax(logits / 1.5), atol=1e-2)
    assert U.fit_temperature(logits.astype(jnp.bfloat16), jnp.array([2, 0])).dtype == jnp.float32
    check_grads(lambda t: U.calibrated_probs(logits, t), (1.3,), order=1, modes=("rev",))


@pytest.mark.slow  # the docstring example checks the same closed form in the default run
def test_fit_tau_is_the_maximum_likelihood_precision():
    # One sample (a deterministic model): 1 / tau is the residual variance in closed form.
    samples = jax.random.normal(jax.random.key(0), (1, 4000))
    targets = samples[0] + 0.5 * jax.random.normal(jax.random.key(1), (4000,))
    residual_variance = float(jnp.mean(jnp.square(targets - samples[0])))
    assert float(U.fit_tau(samples, targets)) == pytest.approx(1 / residual_variance, rel=1e-4)


@pytest.mark.slow
def test_fit_tau_beats_a_grid_search_on_mc_samples():
    # MC samples in standardised units: the fitted tau beats every tau of a grid search (Gal & Ghahramani's way)
    spread = 0.3 * jax.random.normal(jax.random.key(2), (20, 400))
    mc, truth = (
        spread + jnp.linspace(-2, 2, 400),
        jnp.linspace(-2, 2, 400) + jax.random.normal(jax.random.key(3), (400,)),
    )
    tau = float(U.fit_tau(mc, 10.0 * truth + 5.0, target_mean=5.0, target_std=10.0))
    best = U.gaussian_log_likelihood(mc, 10.0 * truth + 5.0, tau=tau, target_mean=5.0, target_std=10.0)
    grid = jnp.exp(jnp.linspace(math.log(tau) - 1, math.log(tau) + 1, 801))
    on_grid = jax.vmap(
        lambda t: U.gaussian_log_likelihood(mc, 10.0 * truth + 5.0, tau=t, target_mean=5.0, target_std=10.0)
    )(grid)
    assert float(best) >= float(on_grid.max()) - 1e-5
    assert abs(float(grid[jnp.argmax(on_grid)]) / tau - 1) < 3e-3
    assert jax.jit(U.fit_tau)(mc, truth) == pytest.approx(float(U.fit_tau(mc, truth)), rel=1e-5)


@pytest.mark.slow  # the docstring example checks the same closed form in the default run
def test_fit_variance_scale_closed_form_matches_numerical_maximum_likelihood():
    key_mean, key_var, key_noise = jax.random.split(jax.random.key(7), 3)
    mean = jax.random.normal(key_mean, (3000,))
    variance = jnp.exp(jax.random.normal(key_var, (3000,)))
    targets = mean + jnp.sqrt(2.0 * variance) * jax.random.normal(key_noise, (3000,))
    scale = float(U.fit_variance_scale(mean, variance, targets))
    residuals, var = np.asarray(targets - mean, np.float64), np.asarray(variance, np.float64)

    def negative_log_likelihood(log_scale):
        total = np.exp(log_scale) * var
        return np.mean(0.5 * np.log(total) + 0.5 * residuals**2 / total)

    reference = math.exp(optimize.minimize_scalar(negative_log_likelihood, bounds=(-5, 5), method="bounded").x)
    assert scale == pytest.approx(reference, rel=1e-3)
    assert abs(scale - 2.0) < 4 * 2.0 * math.sqrt(2 / 3000)  # chi-square: the scale the data were drawn with


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: U.fit_temperature(jnp.zeros((3, 2)), jnp.array([0, 1, 2])),
            ValueError,
            r"`labels` must be in \[0, 1\]",
        ),
        (lambda: U.fit_temperature(jnp.zeros((3, 2)), jnp.array([0, 1])), ValueError, "must have the batch shape"),
        (
            lambda: U.fit_temperature(jnp.zeros((0, 2)), jnp.zeros(0, jnp.int32)),
            ValueError,
            "`labels` must not be empty",
        ),
        (lambda: U.fit_temperature(jnp.zeros((3, 1)), jnp.zeros(3, jnp.int32)), ValueError, "at least two classes"),
        (
            lambda: U.fit_temperature(jnp.array([[0.0, jnp.nan]]), jnp.array([0])),
            ValueError,
            "`logits` must hold finite",
        ),
        (lambda: U.fit_temperature(jnp.zeros((3, 2)), jnp.zeros(3)), TypeError, "`labels` must be an integer array"),
        (lambda: U.fit_temperature(jnp.zeros((2, 2, 2, 2)), jnp.zeros(2, jnp.int32)), ValueError, "`logits` must be"),
        (lambda: U.calibrated_probs(jnp.zeros((3, 2)), 0.0), ValueError, "`calibration` must be a finite number > 0"),
        (lambda: U.calibrated_probs(jnp.zeros((3, 2)), "hot"), TypeError, "`calibration` must be a temperature"),
        (
            lambda: U.calibrated_probs(jnp.zeros((3, 2)), U.VectorScaling(jnp.ones(3), jnp.zeros(3))),
            ValueError,
            "`calibration` must scale 2 classes",
        ),
        (lambda: U.calibrated_probs(jnp.zeros(3), 1.0, mc_samples=True), ValueError, "num_samples"),
        (lambda: U.fit_tau(jnp.zeros((2, 3)), jnp.zeros(2)), ValueError, "`targets` must have the shape"),
        (lambda: U.fit_tau(jnp.zeros((2, 3)), jnp.zeros(3), target_std=0.0), ValueError, "`target_std` must be"),
        (lambda: U.fit_variance_scale(jnp.zeros(2), jnp.array([1.0, 0.0]), jnp.zeros(2)), ValueError, "`variance`"),
        (lambda: U.fit_variance_scale(jnp.zeros(0), jnp.zeros(0), jnp.zeros(0)), ValueError, "`mean` must not be"),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_traced_invalid_input_gives_nan():
    logits = jnp.array([[0.0, 1.0], [jnp.nan, 0.0]])
    assert np.isnan(float(jax.jit(U.fit_temperature)(logits, jnp.array([0, 1]))))
    assert np.isnan(float(jax.jit(U.fit_temperature)(jnp.zeros((2, 2)), jnp.array([0, 2]))))
    assert np.isnan(jax.jit(U.calibrated_probs)(jnp.zeros((2, 2)), -1.0)).all()
    assert np.isnan(float(jax.jit(U.fit_variance_scale)(jnp.zeros(2), jnp.array([1.0, -1.0]), jnp.zeros(2))))
