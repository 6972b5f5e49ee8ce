"""Split conformal prediction (``jaxdrop.uncertainty._conformal``): coverage tested statistically over many
calibration draws (one ``vmap``), the scores against a reference loop, nesting of APS sets, and bad input."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdrop import uncertainty as U

NUM_CAL, NUM_TEST, NUM_CLASSES, NUM_DRAWS = 50, 50, 5, 1000


def classification_draw(key):
    """One exchangeable draw: deliberately miscalibrated probabilities (softmax of half the true logits)."""
    logits_key, labels_key = jax.random.split(key)
    logits = 2.0 * jax.random.normal(logits_key, (NUM_CAL + NUM_TEST, NUM_CLASSES))
    labels = jax.random.categorical(labels_key, logits)
    return jax.nn.softmax(0.5 * logits), labels


def assert_coverage(coverages, alpha, num_cal, *, exact=True):
    """Mean coverage over independent draws in ``[1 - alpha, 1 - alpha + 1/(n + 1)]`` within 4 standard errors;
    with continuous scores it is exactly ``k / (n + 1)``, ``k = ceil((n + 1)(1 - alpha))``."""
    coverages = np.asarray(coverages, np.float64)
    mean, error = coverages.mean(), coverages.std(ddof=1) / math.sqrt(len(coverages))
    assert 1 - alpha - 4 * error <= mean <= 1 - alpha + 1 / (num_cal + 1) + 4 * error, (mean, error)
    if exact:
        expected = math.ceil((num_cal + 1) * (1 - alpha)) / (num_cal + 1)
        assert abs(mean - expected) <= 4 * error, (mean, expected, error)


@pytest.mark.parametrize(
    ("score", "randomised", "alpha"),
    [
        pytest.param("lac", False, 0.1, marks=pytest.mark.slow),
        ("aps", True, 0.1),
        pytest.param("aps", False, 0.2, marks=pytest.mark.slow),
        pytest.param("raps", True, 0.05, marks=pytest.mark.slow),
    ],
)
def test_classification_sets_cover_as_guaranteed(score, randomised, alpha):
    """1,000 independent calibration/test draws (n = 50 each) in one jitted ``vmap``. A wrong quantile rank
    (``ceil(n (1 - alpha))`` instead of ``ceil((n + 1)(1 - alpha))``) moves the mean by 1/51 = 0.02, ~8 errors."""

    def one_draw(key):
        data_key, score_key = jax.random.split(key)
        probs, labels = classification_draw(data_key)
        sets = U.conformal_sets(
            probs[:NUM_CAL],
            labels[:NUM_CAL],
            probs[NUM_CAL:],
            alpha=alpha,
            score=score,
            key=score_key if randomised else None,
        )
        return U.set_coverage(sets, labels[NUM_CAL:])

    coverages = jax.jit(jax.vmap(one_draw))(jax.random.split(jax.random.key(0), NUM_DRAWS))
    assert_coverage(coverages, alpha, NUM_CAL)


@pytest.mark.parametrize("method", ["normalised", pytest.param("cqr", marks=pytest.mark.slow)])
def test_regression_intervals_cover_as_guaranteed(method):
    """Heteroscedastic data whose noise the "MC std" follows only roughly: coverage holds anyway."""
    alpha = 0.1

    def one_draw(key):
        x_key, noise_key, std_key = jax.random.split(key, 3)
        x = jax.random.uniform(x_key, (NUM_CAL + NUM_TEST,), minval=-2, maxval=2)
        true_std = 0.2 + jnp.abs(x)
        y = jnp.sin(x) + true_std * jax.random.normal(noise_key, x.shape)
        prediction = jnp.sin(x)
        std = true_std * jnp.exp(0.3 * jax.random.normal(std_key, x.shape))  # a noisy estimate of the spread
        if method == "cqr":
            lower, upper = prediction - 1.2 * std, prediction + 1.2 * std
            low, high = U.cqr_intervals(
                lower[:NUM_CAL], upper[:NUM_CAL], y[:NUM_CAL], lower[NUM_CAL:], upper[NUM_CAL:], alpha=alpha
            )
        else:
            low, high = U.conformal_intervals(
                prediction[:NUM_CAL],
                y[:NUM_CAL],
                prediction[NUM_CAL:],
                alpha=alpha,
                calibration_std=std[:NUM_CAL],
                test_std=std[NUM_CAL:],
            )
        return jnp.mean((low <= y[NUM_CAL:]) & (y[NUM_CAL:] <= high))

    coverages = jax.jit(jax.vmap(one_draw))(jax.random.split(jax.random.key(1), NUM_DRAWS))
    assert_coverage(coverages, alpha, NUM_CAL)


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = jax.random.uniform(jax.random.key(2), (37,))
    for alpha in (0.05, 0.1, 0.25, 0.5, 0.9):
        rank = math.ceil(38 * (1 - alpha))
        expected = np.sort(np.asarray(scores))[rank - 1]
        assert float(U.conformal_quantile(scores, alpha)) == expected
        assert float(jax.jit(U.conformal_quantile)(scores, alpha)) == expected  # traced alpha: the same rank
    assert float(U.conformal_quantile(jnp.arange(1.0, 11.0), 0.1)) == 10.0  # n = 9 is the least for alpha 0.1
    # a traced alpha too small for n cannot raise: the threshold is +inf (every label in the set: still covers)
    assert float(jax.jit(U.conformal_quantile)(jnp.arange(5.0), 0.01)) == math.inf
    assert math.isnan(float(jax.jit(U.conformal_quantile)(jnp.arange(5.0), 1.5)))
    # integer and bool scores give a float32 threshold, and +inf (not INT_MIN) when a traced alpha is too small
    integers = jnp.arange(1, 11, dtype=jnp.int32)
    assert U.conformal_quantile(integers, 0.1).dtype == jnp.float32
    assert float(U.conformal_quantile(integers, 0.1)) == 10.0
    assert float(U.conformal_quantile(integers > 5, 0.1)) == 1.0
    assert float(jax.jit(U.conformal_quantile)(integers[:5], 0.01)) == math.inf


def reference_scores(probs, uniform, score, penalty=0.0, k_reg=0):
    """Each class's score by a plain loop over the classes ranked by probability (ties by index)."""
    probs = np.asarray(probs, np.float64)
    out = np.zeros_like(probs)
    for i, row in enumerate(probs):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))
        for rank, c in enumerate(order):
            if score == "lac":
                out[i, c] = 1 - row[c]
            else:
                out[i, c] = sum(row[j] for j in order[:rank]) + uniform[i] * row[c]
                if score == "raps":
                    out[i, c] += penalty * max(0, rank + 1 - k_reg)
    return out


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_conformity_scores_match_a_reference_loop(score):
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(3), (6, 4)))
    probs = probs.at[0].set(jnp.array([0.25, 0.25, 0.25, 0.25]))  # ties
    ones = np.ones(6)
    got = U.conformity_scores(probs, score=score, penalty=0.1, k_reg=1)
    np.testing.assert_allclose(got, reference_scores(probs, ones, score, 0.1, 1), atol=1e-6)
    key = jax.random.key(4)
    randomised = U.conformity_scores(probs, score=score, key=key, penalty=0.1, k_reg=1)
    uniform = np.asarray(jax.random.uniform(key, (6,))) if score != "lac" else ones
    np.testing.assert_allclose(randomised, reference_scores(probs, uniform, score, 0.1, 1), atol=1e-6)
    assert U.conformity_scores(probs.astype(jnp.bfloat16), score=score).dtype == jnp.float32


@pytest.mark.slow
def test_aps_sets_nest_as_alpha_shrinks():
    probs, labels = classification_draw(jax.random.key(5))
    key = jax.random.key(6)
    sets = [
        np.asarray(U.conformal_sets(probs[:NUM_CAL], labels[:NUM_CAL], probs[NUM_CAL:], alpha=a, key=key))
        for a in (0.5, 0.2, 0.05)
    ]
    for smaller, larger in itertools.pairwise(sets):
        assert (smaller <= larger).all()  # a set for a larger alpha is inside the set for a smaller one
    sizes = [s.sum() for s in sets]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_set_metrics():
    sets = jnp.array([[True, False, True], [False, False, False], [True, True, True]])
    assert float(U.set_coverage(sets, jnp.array([2, 0, 1]))) == pytest.approx(2 / 3)
    assert float(U.mean_set_size(sets)) == pytest.approx(5 / 3)


PROBS = jnp.array([[0.7, 0.3], [0.4, 0.6]] * 10)
LABELS = jnp.array([0, 1] * 10)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: U.conformal_sets(PROBS, LABELS, PROBS, alpha=0.0),
            ValueError,
            r"`alpha` must be in \(0, 1\); got 0.0",
        ),
        (lambda: U.conformal_sets(PROBS, LABELS, PROBS, alpha=1.0), ValueError, r"`alpha` must be in \(0, 1\)"),
        (lambda: U.conformal_sets(PROBS, LABELS, PROBS, alpha="x"), TypeError, "`alpha` must be a real number"),
        (
            lambda: U.conformal_sets(PROBS, LABELS, PROBS, alpha=0.01),
            ValueError,
            "`alpha`=0.01 needs at least 99 calibration scores",
        ),
        (lambda: U.conformal_sets(PROBS, LABELS + 1, PROBS, alpha=0.1), ValueError, r"`calibration_labels` must be in"),
        (lambda: U.conformal_sets(PROBS * 0.9, LABELS, PROBS, alpha=0.1), ValueError, "`calibration_probs` must sum"),
        (lambda: U.conformal_sets(PROBS, LABELS, PROBS - 0.5, alpha=0.1), ValueError, "`test_probs` must hold prob"),
        (
            lambda: U.conformal_sets(PROBS[:0], LABELS[:0], PROBS, alpha=0.1),
            ValueError,
            "`calibration_probs` must not be empty",
        ),
        (lambda: U.conformal_sets(PROBS, LABELS, PROBS, alpha=0.1, score="bayes"), ValueError, "`score`"),
        (lambda: U.conformal_quantile(jnp.array([]), 0.1), ValueError, "`scores` must not be empty"),
        (lambda: U.conformal_quantile(jnp.array([1.0, jnp.nan] * 10), 0.1), ValueError, "`scores` must hold no NaN"),
        (lambda: U.conformity_scores(PROBS, score="raps", penalty=-1.0), ValueError, "`penalty` must be"),
        (
            lambda: U.conformal_intervals(jnp.zeros(20), jnp.zeros(20), jnp.zeros(2), alpha=0.1, test_std=jnp.ones(2)),
            ValueError,
            "both `calibration_std` and `test_std`",
        ),
        (
            lambda: U.conformal_intervals(
                jnp.zeros(20),
                jnp.zeros(20),
                jnp.zeros(2),
                alpha=0.1,
                calibration_std=jnp.zeros(20),
                test_std=jnp.ones(2),
            ),
            ValueError,
            "`calibration_std` must be > 0",
        ),
        (
            lambda: U.conformal_intervals(jnp.zeros(20), jnp.zeros(19), jnp.zeros(2), alpha=0.1),
            ValueError,
            "same shape",
        ),
        (lambda: U.cqr_intervals(*[jnp.zeros(5)] * 5, alpha=0.1), ValueError, "needs at least 9 calibration scores"),
        (lambda: U.set_coverage(jnp.ones((2, 2)), jnp.array([0, 1])), ValueError, "`sets` must be a bool array"),
        (lambda: U.mean_set_size(jnp.ones((0, 2), bool)), ValueError, "`sets` must not be empty"),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_traced_invalid_probabilities_give_empty_sets_and_nan_intervals():
    bad = PROBS.at[0].set(jnp.array([jnp.nan, 0.5]))
    sets = jax.jit(lambda p: U.conformal_sets(p, LABELS, PROBS, alpha=0.1))(bad)
    assert not np.asarray(sets).any()
    low, high = jax.jit(lambda y: U.conformal_intervals(jnp.zeros(20), y, jnp.zeros(2), alpha=0.1))(
        jnp.zeros(20).at[3].set(jnp.inf)
    )
    assert np.isnan(low).all() and np.isnan(high).all()
