import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp as np_logsumexp
from sklearn import metrics

from jaxdrop import uncertainty as U

# Two MC samples, three examples, two classes: example 0 agrees (confident), 1 disagrees, 2 is uniform.
SAMPLE_PROBS = jnp.array(
    [
        [[0.9, 0.1], [1.0, 0.0], [0.5, 0.5]],
        [[0.9, 0.1], [0.0, 1.0], [0.5, 0.5]],
    ]
)


def _h(*p):
    return -sum(x * math.log(x) for x in p if x > 0)


# --- classification --------------------------------------------------------------------------------------------------


def test_entropies_mutual_information_hand_values():
    mean = SAMPLE_PROBS.mean(0)
    np.testing.assert_allclose(U.predictive_entropy(mean), [_h(0.9, 0.1), math.log(2), math.log(2)], rtol=1e-6)
    np.testing.assert_allclose(U.expected_entropy(SAMPLE_PROBS), [_h(0.9, 0.1), 0.0, math.log(2)], rtol=1e-6)
    np.testing.assert_allclose(U.mutual_information(SAMPLE_PROBS), [0.0, math.log(2), 0.0], atol=1e-7)
    np.testing.assert_allclose(U.variation_ratio(SAMPLE_PROBS), [0.0, 0.5, 0.0])
    np.testing.assert_allclose(U.margin(mean), [0.8, 0.0, 0.0], atol=1e-7)


def test_variation_ratio_and_margin_multiclass():
    votes = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    np.testing.assert_allclose(U.variation_ratio(votes[:, None]), [1 - 3 / 5])
    np.testing.assert_allclose(U.margin(jnp.array([0.2, 0.5, 0.3])), 0.2, rtol=1e-6)
    np.testing.assert_allclose(U.margin(jnp.array([[1.0]])), [1.0])


def test_entropy_stable_with_zeros_and_bf16():
    probs = jax.nn.softmax(jnp.array([[1000.0, 0.0, -1000.0]]))
    assert float(U.predictive_entropy(probs)[0]) == 0.0
    bf16 = U.mutual_information(SAMPLE_PROBS.astype(jnp.bfloat16))
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(bf16, [0.0, math.log(2), 0.0], atol=1e-2)


def test_bald_top_k_order_and_ties():
    # Pool of 4: MI = [0, log 2, 0, log 2]: ties go to the lower index, then the zeros in index order.
    pool = jnp.concatenate([SAMPLE_PROBS, SAMPLE_PROBS[:, 1:2]], axis=1)
    pool = pool[:, jnp.array([0, 1, 2, 3])]
    np.testing.assert_array_equal(U.bald_top_k(pool, 2), [1, 3])
    np.testing.assert_array_equal(U.bald_top_k(pool, 4), [1, 3, 0, 2])
    np.testing.assert_array_equal(jax.jit(U.bald_top_k, static_argnums=1)(pool, 1), [1])


# --- regression --------------------------------------------------------------------------------------------------


def test_regression_variances_and_gal_log_likelihood():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(20, 6)).astype(np.float32)
    targets = rng.normal(size=6).astype(np.float32) * 3 + 1
    tau, mean, std = 0.7, 1.0, 3.0
    np.testing.assert_allclose(U.epistemic_variance(samples), samples.var(0), rtol=1e-5)
    np.testing.assert_allclose(U.aleatoric_variance(tau=tau), 1 / tau, rtol=1e-6)
    np.testing.assert_allclose(U.predictive_variance(samples, tau=tau), samples.var(0) + 1 / tau, rtol=1e-5)
    # Gal & Ghahramani 2016, their code: predictions rescaled to original units, tau in original units.
    y_hat = samples.astype(np.float64) * std + mean
    ll = np_logsumexp(-0.5 * tau * (targets[None] - y_hat) ** 2, 0) - np.log(20) - 0.5 * np.log(2 * np.pi)
    ll = (ll + 0.5 * np.log(tau)).mean()
    got = U.gaussian_log_likelihood(samples, targets, tau=tau, target_mean=mean, target_std=std)
    np.testing.assert_allclose(got, ll, rtol=1e-5)
    np.testing.assert_allclose(
        U.rmse(jnp.asarray(y_hat.mean(0), jnp.float32), targets),
        math.sqrt(metrics.mean_squared_error(targets, y_hat.mean(0))),
        rtol=1e-5,
    )


def test_heteroscedastic_log_likelihood_is_a_mixture_density():
    means = jnp.array([[0.0], [2.0]])
    log_var = jnp.log(jnp.array([[1.0], [4.0]]))
    y = jnp.array([1.0])
    expected = math.log(0.5 * (math.exp(-0.5) / math.sqrt(2 * math.pi) + math.exp(-0.125) / math.sqrt(8 * math.pi)))
    np.testing.assert_allclose(U.gaussian_log_likelihood(means, y, log_variance=log_var), expected, rtol=1e-6)
    np.testing.assert_allclose(U.aleatoric_variance(log_var), [2.5], rtol=1e-6)
    np.testing.assert_allclose(U.predictive_variance(means, log_variance=log_var), [1.0 + 2.5], rtol=1e-6)


def test_log_likelihood_is_stable_far_from_the_samples():
    got = U.gaussian_log_likelihood(jnp.zeros((3, 1)), jnp.array([1e3]), tau=10.0)
    np.testing.assert_allclose(got, -0.5 * 10 * 1e6 - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(10), rtol=1e-6)


def test_deterministic_samples_have_zero_epistemic_variance():
    np.testing.assert_array_equal(U.epistemic_variance(jnp.ones((50, 3)) * 0.1), 0.0)


# --- calibration ---------------------------------------------------------------------------------------------------


def _random_probs(n, classes, seed=0):
    rng = np.random.default_rng(seed)
    probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(n, classes)) * 2, jnp.float32))
    return probs, jnp.asarray(rng.integers(0, classes, n))


def test_nll_and_brier_match_sklearn():
    probs, labels = _random_probs(40, 3)
    np.testing.assert_allclose(U.nll(probs, labels), metrics.log_loss(labels, probs, labels=[0, 1, 2]), rtol=1e-5)
    np.testing.assert_allclose(
        U.brier_score(probs, labels),
        metrics.brier_score_loss(labels, probs, labels=[0, 1, 2], scale_by_half=False),
        rtol=1e-5,
    )
    binary, binary_labels = _random_probs(30, 2, seed=1)
    np.testing.assert_allclose(
        U.brier_score(binary, binary_labels), 2 * metrics.brier_score_loss(binary_labels, binary[:, 1]), rtol=1e-5
    )
    assert math.isfinite(float(U.nll(jnp.array([[1.0, 0.0]]), jnp.array([1]))))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.sampled_from([(40, 2), (40, 5), (1, 3)]), st.integers(0, 2**32 - 1), st.sampled_from([0.3, 3.0]))
def test_calibration_and_auroc_agree_with_sklearn_on_random_inputs(size, seed, sharpness):
    num_examples, num_classes = size  # a few shapes, so compiled programs are reused
    rng = np.random.default_rng(seed)
    probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(num_examples, num_classes)) * sharpness, jnp.float32))
    labels = rng.integers(0, num_classes, num_examples)
    classes = list(range(num_classes))
    reference = np.asarray(probs, np.float64)
    reference /= reference.sum(1, keepdims=True)  # float32 rows sum to 1 within 1e-7; sklearn asks for 1e-8
    np.testing.assert_allclose(U.nll(probs, labels), metrics.log_loss(labels, reference, labels=classes), rtol=1e-4)
    np.testing.assert_allclose(
        U.brier_score(probs, labels),
        metrics.brier_score_loss(labels, reference, labels=classes, scale_by_half=False),
        rtol=1e-4,
        atol=1e-6,
    )
    scores_in = rng.integers(0, 4, num_examples).astype(np.float32)  # many ties
    scores_out = rng.integers(1, 5, num_examples // 2 + 1).astype(np.float32)
    expected = metrics.roc_auc_score(
        np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))], np.r_[scores_in, scores_out]
    )
    np.testing.assert_allclose(U.ood_auroc(scores_in, scores_out), expected, rtol=1e-6)


def test_ece_uniform_and_quantile_hand_values():
    probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    labels = jnp.array([0, 1, 1, 1])  # correct, wrong, correct, correct; confidences 0.9, 0.8, 0.6, 0.7
    # 2 equal-width bins: (0, .5] empty, (.5, 1] all four: |3/4 - 0.75| = 0.
    np.testing.assert_allclose(U.expected_calibration_error(probs, labels, num_bins=2), 0.0, atol=1e-7)
    # 5 equal-width bins: (.4,.6]: conf .6 acc 1; (.6,.8]: conf .75 acc .5; (.8,1]: conf .9 acc 1.
    expected = 0.25 * 0.4 + 0.5 * 0.25 + 0.25 * 0.1
    np.testing.assert_allclose(U.expected_calibration_error(probs, labels, num_bins=5), expected, rtol=1e-5)
    # 2 equal-mass bins: {0.6, 0.7} (acc 1), {0.8, 0.9} (acc .5): 0.5 * 0.35 + 0.5 * 0.35.
    ece = U.expected_calibration_error(probs, labels, num_bins=2, binning="quantile")
    np.testing.assert_allclose(ece, 0.35, rtol=1e-5)
    diagram = U.reliability_diagram(probs, labels, num_bins=2, binning="quantile")
    np.testing.assert_array_equal(diagram.counts, [2, 2])
    np.testing.assert_allclose(diagram.bin_edges, [0.6, 0.8, 0.9], rtol=1e-6)
    np.testing.assert_allclose(diagram.accuracy, [1.0, 0.5])
    jitted = jax.jit(U.expected_calibration_error, static_argnames=("num_bins", "binning"))
    np.testing.assert_allclose(jitted(probs, labels, num_bins=5), expected, rtol=1e-5)


def test_quantile_bins_hold_equal_mass_and_match_uniform_when_spread():
    probs, labels = _random_probs(103, 4, seed=2)
    diagram = U.reliability_diagram(probs, labels, num_bins=10, binning="quantile")
    assert set(np.asarray(diagram.counts).tolist()) <= {10, 11} and int(diagram.counts.sum()) == 103
    uniform = U.reliability_diagram(probs, labels, num_bins=10)
    assert int(uniform.counts.sum()) == 103
    np.testing.assert_allclose(uniform.bin_edges, np.linspace(0, 1, 11), atol=1e-7)


def test_plot_reliability_diagram_draws_bars():
    import matplotlib

    matplotlib.use("Agg")
    probs, labels = _random_probs(50, 3)
    diagram = U.reliability_diagram(probs, labels, num_bins=5)
    ax = U.plot_reliability_diagram(diagram)
    assert len(ax.patches) == 5 and ax.get_xlabel() == "confidence"
    # every bar carries its example count (empty bins are unlabelled)
    assert [text.get_text() for text in ax.texts] == [str(int(n)) if n else "" for n in np.asarray(diagram.counts)]


# --- selective prediction and OOD -----------------------------------------------------------------------------------


def test_risk_coverage_and_aurc_hand_values():
    uncertainty = jnp.array([0.3, 0.1, 0.4, 0.2])
    errors = jnp.array([True, False, True, False])
    coverage, risk = U.risk_coverage_curve(uncertainty, errors)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.0, 1 / 3, 0.5], rtol=1e-6)
    np.testing.assert_allclose(U.aurc(uncertainty, errors), (0 + 0 + 1 / 3 + 0.5) / 4, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(U.aurc)(uncertainty, errors), (1 / 3 + 0.5) / 4, rtol=1e-6)


def test_flag_for_review_budget_ties_and_nan():
    scores = jnp.array([0.5, 0.9, jnp.nan, 0.9, 0.1])
    np.testing.assert_array_equal(U.flag_for_review(scores, budget=1), [False, False, True, False, False])
    np.testing.assert_array_equal(U.flag_for_review(scores, budget=2), [False, True, True, False, False])
    np.testing.assert_array_equal(U.flag_for_review(scores, budget=0.6), [False, True, True, True, False])
    np.testing.assert_array_equal(U.flag_for_review(scores, budget=1.0), [True] * 5)
    np.testing.assert_array_equal(U.flag_for_review(scores, budget=0), [False] * 5)
    assert int(U.flag_for_review(jnp.arange(10.0), budget=0.3).sum()) == 3  # 0.3 * 10 is 2.9999999999999996
    flag = jax.jit(U.flag_for_review, static_argnames="budget")
    np.testing.assert_array_equal(flag(scores, budget=2), [False, True, True, False, False])


def test_ood_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores_in = rng.integers(0, 5, 37).astype(np.float32)  # integers: many ties
    scores_out = rng.integers(2, 8, 23).astype(np.float32)
    expected = metrics.roc_auc_score(np.r_[np.zeros(37), np.ones(23)], np.r_[scores_in, scores_out])
    np.testing.assert_allclose(U.ood_auroc(scores_in, scores_out), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(U.ood_auroc)(scores_in, scores_out), expected, rtol=1e-6)
    assert float(U.ood_auroc(jnp.array([1.0, 1.0]), jnp.array([1.0]))) == 0.5


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: U.predictive_entropy(jnp.array([[0.5, 0.6]])), ValueError, r"sum to 1 .* sums to 1\.1"),
        (lambda: U.predictive_entropy(jnp.array([[1.5, -0.5]])), ValueError, r"probabilities in \[0, 1\]"),
        (lambda: U.predictive_entropy(jnp.array([[1, 0]])), TypeError, r"floating-point dtype"),
        (lambda: U.mutual_information(jnp.array([0.5, 0.5])), ValueError, r"at least 2 axes"),
        (lambda: U.bald_top_k(SAMPLE_PROBS, 4), ValueError, r"`k` must be in \[1, 3\]; got 4"),
        (lambda: U.nll(SAMPLE_PROBS[0], jnp.array([0, 1])), ValueError, r"batch shape .* \(3,\); got \(2,\)"),
        (lambda: U.nll(SAMPLE_PROBS[0], jnp.array([0, 1, 2])), ValueError, r"`labels` must be in \[0, 1\]"),
        (
            lambda: U.expected_calibration_error(SAMPLE_PROBS[0], jnp.zeros(3, int), num_bins=0),
            ValueError,
            r"`num_bins` must be in \[1, ",
        ),
        (
            lambda: U.expected_calibration_error(SAMPLE_PROBS[0], jnp.zeros(3, int), binning="kde"),
            ValueError,
            r"`binning` must be one of",
        ),
        (
            lambda: U.gaussian_log_likelihood(jnp.zeros((3, 2)), jnp.zeros(3), tau=1.0),
            ValueError,
            r"`targets` must have the shape of one sample \(2,\)",
        ),
        (lambda: U.gaussian_log_likelihood(jnp.zeros((3, 2)), jnp.zeros(2)), ValueError, r"exactly one noise"),
        (
            lambda: U.predictive_variance(jnp.zeros((3, 2)), tau=-1.0),
            ValueError,
            r"`tau` must be a finite number > 0; got -1",
        ),
        (lambda: U.rmse(jnp.zeros(3), jnp.zeros(4)), ValueError, r"same shape"),
        (lambda: U.risk_coverage_curve(jnp.zeros(3), jnp.zeros(2)), ValueError, r"same shape"),
        (lambda: U.flag_for_review(jnp.zeros(4), budget=1.5), ValueError, r"fraction must be in \(0, 1\]; got 1.5"),
        (lambda: U.flag_for_review(jnp.zeros(4), budget=0.0), ValueError, r"fraction must be in \(0, 1\]"),
        (lambda: U.flag_for_review(jnp.zeros(4), budget=5), ValueError, r"`budget` must be in \[0, 4\]; got 5"),
        (lambda: U.flag_for_review(jnp.zeros(4), budget=True), TypeError, r"`budget` must be a float fraction"),
        (lambda: U.ood_auroc(jnp.zeros((2, 2)), jnp.zeros(2)), ValueError, r"`scores_in` must be 1-D"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- meaningless input: a clear error, or NaN inside jit; never a plausible number ------------------------------------

PROBS = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]])
LABELS = jnp.array([0, 1, 2, 0])
EMPTY_PROBS, EMPTY_LABELS = jnp.zeros((0, 3)), jnp.zeros(0, jnp.int32)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: U.nll(EMPTY_PROBS, EMPTY_LABELS), r"`probs` must not be empty; got shape \(0, 3\)"),
        (lambda: U.brier_score(EMPTY_PROBS, EMPTY_LABELS), r"`probs` must not be empty; got shape \(0, 3\)"),
        (lambda: U.expected_calibration_error(EMPTY_PROBS, EMPTY_LABELS), r"`probs` must not be empty"),
        (
            lambda: U.expected_calibration_error(EMPTY_PROBS, EMPTY_LABELS, binning="quantile"),
            r"`probs` must not be empty",
        ),
        (lambda: U.reliability_diagram(EMPTY_PROBS, EMPTY_LABELS), r"`probs` must not be empty"),
        (lambda: U.rmse(jnp.zeros(0), jnp.zeros(0)), r"`predictions` must not be empty; got shape \(0,\)"),
        (
            lambda: U.gaussian_log_likelihood(jnp.zeros((3, 0)), jnp.zeros(0), tau=1.0),
            r"`targets` must not be empty; got shape \(0,\)",
        ),
        (lambda: U.aurc(jnp.zeros(0), jnp.zeros(0)), r"`uncertainty` must not be empty"),
        (lambda: U.ood_auroc(jnp.zeros(0), jnp.ones(2)), r"`scores_in` must not be empty"),
        (lambda: U.ood_auroc(jnp.zeros(2), jnp.ones(0)), r"`scores_out` must not be empty"),
        # zero samples
        (lambda: U.expected_entropy(jnp.zeros((0, 4, 3))), r"`sample_probs` must have a leading sample axis of size"),
        (
            lambda: U.mutual_information(jnp.zeros((0, 4, 3))),
            r"leading sample axis of size >= 1; got shape \(0, 4, 3\)",
        ),
        (lambda: U.variation_ratio(jnp.zeros((0, 4, 3))), r"`sample_probs` must have a leading sample axis of size"),
        (lambda: U.bald_top_k(jnp.zeros((0, 4, 3)), 1), r"`sample_probs` must have a leading sample axis of size"),
        (lambda: U.bald_top_k(jnp.zeros((2, 0, 3)), 1), r"`sample_probs` must hold a pool of at least one example"),
        (lambda: U.predictive_variance(jnp.zeros((0, 3)), tau=1.0), r"`samples` must have a leading sample axis"),
        (lambda: U.aleatoric_variance(jnp.zeros((0, 3))), r"`log_variance` must have a leading sample axis"),
        (
            lambda: U.gaussian_log_likelihood(jnp.zeros((0, 3)), jnp.zeros(3), tau=1.0),
            r"`samples` must have a leading sample axis",
        ),
        # zero classes
        (
            lambda: U.margin(jnp.zeros((4, 0))),
            r"`probs` must have at least one class \(last axis\); got shape \(4, 0\)",
        ),
        (lambda: U.predictive_entropy(jnp.zeros((4, 0))), r"`probs` must have at least one class"),
        (lambda: U.mutual_information(jnp.zeros((2, 4, 0))), r"`sample_probs` must have at least one class"),
        (lambda: U.nll(jnp.zeros((4, 0)), LABELS), r"`probs` must have at least one class"),
        (lambda: U.predictive_entropy(jnp.float32(1.0)), r"`probs` must have at least 1 axis \(classes last\)"),
    ],
)
def test_empty_input_zero_samples_and_zero_classes_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_shape_errors_raise_under_jit_too():
    with pytest.raises(ValueError, match=r"`probs` must not be empty"):
        jax.jit(U.expected_calibration_error)(EMPTY_PROBS, EMPTY_LABELS)
    with pytest.raises(ValueError, match=r"leading sample axis"):
        jax.jit(U.mutual_information)(jnp.zeros((0, 4, 3)))


def test_per_example_metrics_of_an_empty_batch_are_empty():
    # Nothing is computed and nothing is invented: one (empty) output per (absent) example.
    assert U.predictive_entropy(EMPTY_PROBS).shape == (0,)
    assert U.margin(EMPTY_PROBS).shape == (0,)
    assert U.mutual_information(jnp.zeros((2, 0, 3))).shape == (0,)
    assert U.epistemic_variance(jnp.zeros((3, 0))).shape == (0,)
    assert U.predictive_variance(jnp.zeros((3, 0)), tau=1.0).shape == (0,)
    assert not U.flag_for_review(jnp.zeros(0), 0).any()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: U.ood_auroc(jnp.array([0.1, jnp.nan]), jnp.array([0.5])), r"`scores_in` must hold no NaN.*got 1 NaN"),
        (lambda: U.ood_auroc(jnp.array([0.1]), jnp.array([jnp.nan])), r"`scores_out` must hold no NaN"),
        (lambda: U.aurc(jnp.array([0.1, jnp.nan]), jnp.array([0, 1])), r"`uncertainty` must hold no NaN"),
        (lambda: U.risk_coverage_curve(jnp.zeros(2), jnp.array([0.0, jnp.nan])), r"`errors` must hold finite values"),
        (lambda: U.aurc(jnp.zeros(2), jnp.array([0.0, jnp.inf])), r"`errors` must hold finite values; got 0 NaN and 1"),
        (lambda: U.epistemic_variance(jnp.array([[1.0], [jnp.nan]])), r"`samples` must hold finite values"),
        (lambda: U.rmse(jnp.array([jnp.inf]), jnp.zeros(1)), r"`predictions` must hold finite values"),
        (lambda: U.rmse(jnp.zeros(1), jnp.array([jnp.nan])), r"`targets` must hold finite values"),
        (
            lambda: U.gaussian_log_likelihood(jnp.zeros((2, 1)), jnp.array([jnp.nan]), tau=1.0),
            r"`targets` must hold finite values",
        ),
        (
            lambda: U.gaussian_log_likelihood(jnp.zeros((2, 1)), jnp.zeros(1), log_variance=jnp.full((2, 1), -jnp.inf)),
            r"`log_variance` must hold finite values",
        ),
        (
            lambda: U.gaussian_log_likelihood(jnp.zeros((2, 1)), jnp.zeros(1), tau=1.0, target_mean=float("nan")),
            r"`target_mean` must be a finite number; got nan",
        ),
        (
            lambda: U.gaussian_log_likelihood(jnp.zeros((2, 1)), jnp.zeros(1), tau=1.0, target_mean=jnp.zeros(1)),
            r"`target_mean` must be a scalar; got shape \(1,\)",
        ),
        (lambda: U.mutual_information(jnp.array([[[0.5, jnp.nan]]])), r"`sample_probs` must hold probabilities"),
        (lambda: U.nll(jnp.array([[jnp.nan, 1.0]]), jnp.array([0])), r"`probs` must hold probabilities"),
    ],
)
def test_nan_where_the_result_would_be_meaningless_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("target_mean", ["0", None, True, 1 + 1j])
def test_target_mean_must_be_a_real_number(target_mean):
    with pytest.raises(TypeError, match=r"`target_mean` must be a finite real number; got "):
        U.gaussian_log_likelihood(jnp.zeros((2, 1)), jnp.zeros(1), tau=1.0, target_mean=target_mean)


def test_infinite_scores_are_ranked_not_rejected():
    # +-inf has a rank (a -log p of a zero probability), so rank metrics accept it; sklearn's finite twin agrees.
    scores_in, scores_out = np.array([0.1, -np.inf, 2.0]), np.array([np.inf, 0.5])
    finite_in, finite_out = np.array([0.1, -1e9, 2.0]), np.array([1e9, 0.5])
    expected = metrics.roc_auc_score(np.r_[np.zeros(3), np.ones(2)], np.r_[finite_in, finite_out])
    np.testing.assert_allclose(U.ood_auroc(scores_in, scores_out), expected, rtol=1e-6)
    np.testing.assert_allclose(U.aurc(scores_in, np.array([0, 0, 1])), U.aurc(finite_in, np.array([0, 0, 1])))


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf")])
@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("target_std", lambda v: U.gaussian_log_likelihood(jnp.zeros((3, 1)), jnp.zeros(1), tau=1.0, target_std=v)),
        (
            "target_std",
            lambda v: U.gaussian_log_likelihood(
                jnp.zeros((3, 1)), jnp.zeros(1), log_variance=jnp.zeros((3, 1)), target_std=v
            ),
        ),
        ("tau", lambda v: U.gaussian_log_likelihood(jnp.zeros((3, 1)), jnp.zeros(1), tau=v)),
        ("tau", lambda v: U.predictive_variance(jnp.zeros((3, 1)), tau=v)),
        ("tau", lambda v: U.aleatoric_variance(tau=v)),
    ],
)
def test_positive_scalars_are_checked_everywhere(name, call, bad):
    with pytest.raises(ValueError, match=rf"`{name}` must be a finite number > 0; got {bad}"):
        call(bad)
    assert np.isnan(np.asarray(jax.jit(call)(bad))).all()  # traced: NaN, never a finite wrong value


def _all_float_leaves_nan(tree):
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    return bool(leaves) and all(np.isnan(leaf).all() for leaf in leaves)


NOT_NORMALISED = jnp.array([[0.5, 0.6], [0.5, 0.5]])
WITH_NAN = jnp.array([[0.5, jnp.nan], [0.5, 0.5]])
NEGATIVE = jnp.array([[1.5, -0.5], [0.5, 0.5]])
OUT_OF_RANGE = jnp.array([0, 2])


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (U.predictive_entropy, (NOT_NORMALISED,)),
        (U.predictive_entropy, (WITH_NAN,)),
        (U.margin, (NEGATIVE,)),
        (U.expected_entropy, (NOT_NORMALISED[None],)),
        (U.mutual_information, (WITH_NAN[None],)),
        (U.variation_ratio, (WITH_NAN[None],)),  # an argmax of NaN would vote for class 0: a plausible 0.0
        (U.nll, (NOT_NORMALISED, jnp.array([0, 1]))),
        (U.nll, (SAMPLE_PROBS[0][:2], OUT_OF_RANGE)),
        (U.brier_score, (SAMPLE_PROBS[0][:2], OUT_OF_RANGE)),  # one_hot(2) of 2 classes is all zeros: plausible
        (U.brier_score, (SAMPLE_PROBS[0][:2], jnp.array([-1, 0]))),
        (U.expected_calibration_error, (SAMPLE_PROBS[0][:2], OUT_OF_RANGE)),
        (U.expected_calibration_error, (WITH_NAN, jnp.array([0, 1]))),
        (U.reliability_diagram, (NEGATIVE, jnp.array([0, 1]))),
        (U.ood_auroc, (jnp.array([0.1, jnp.nan]), jnp.array([0.5]))),  # was a plausible 0.5
        (U.aurc, (jnp.array([0.1, jnp.nan]), jnp.array([0, 1]))),
        (U.risk_coverage_curve, (jnp.array([0.1, 0.2]), jnp.array([0.0, jnp.inf]))),
        (U.rmse, (jnp.array([jnp.nan]), jnp.zeros(1))),
        (U.epistemic_variance, (jnp.array([[jnp.inf], [1.0]]),)),
        (lambda s, t: U.gaussian_log_likelihood(s, t, tau=1.0), (jnp.zeros((2, 1)), jnp.array([jnp.nan]))),
        (lambda m: U.gaussian_log_likelihood(jnp.zeros((2, 1)), jnp.zeros(1), tau=1.0, target_mean=m), (jnp.nan,)),
    ],
)
def test_invalid_traced_values_give_nan_not_a_plausible_number(fn, args):
    # Inside jit a value cannot raise: every floating-point output turns NaN (docs/bad_input.md, traced values).
    with pytest.raises(ValueError):
        fn(*args)
    assert _all_float_leaves_nan(jax.jit(fn)(*args))


def test_valid_traced_values_match_eager():
    for fn, args in [
        (U.nll, (PROBS, LABELS)),
        (U.brier_score, (PROBS, LABELS)),
        (U.expected_calibration_error, (PROBS, LABELS)),
        (U.mutual_information, (SAMPLE_PROBS,)),
        (U.ood_auroc, (jnp.array([0.1, 0.4]), jnp.array([0.4, 0.8]))),
        (
            lambda s, t, sd: U.gaussian_log_likelihood(s, t, tau=2.0, target_std=sd),
            (jnp.ones((3, 2)), jnp.ones(2), 2.0),
        ),
    ]:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), jax.jit(fn)(*args), fn(*args))


def test_bald_top_k_indices_cannot_be_nan_under_jit():
    # Documented: an integer output has no NaN; an example whose samples hold NaN ranks first.
    pool = SAMPLE_PROBS.at[:, 2].set(jnp.nan)
    np.testing.assert_array_equal(jax.jit(U.bald_top_k, static_argnums=1)(pool, 1), [2])


@pytest.mark.parametrize("fn", [U.nll, U.brier_score, U.expected_calibration_error, U.reliability_diagram])
def test_labels_are_checked_the_same_way_everywhere(fn):
    with pytest.raises(TypeError, match=r"`labels` must be integer class indices; got dtype float32"):
        fn(PROBS, LABELS.astype(jnp.float32))  # integer-valued floats too: no silent truncation
    with pytest.raises(TypeError, match=r"`labels` must be integer class indices; got dtype bool"):
        fn(PROBS, LABELS > 0)
    with pytest.raises(ValueError, match=r"`labels` must be in \[0, 2\]; got values in \[-1, 2\]"):
        fn(PROBS, LABELS.at[0].set(-1))
    with pytest.raises(ValueError, match=r"`labels` must be in \[0, 2\]; got values in \[0, 3\]"):
        fn(PROBS, LABELS.at[0].set(3))


@pytest.mark.parametrize(
    "fn",
    [
        U.predictive_entropy,
        U.margin,
        lambda p: U.expected_entropy(p[None]),
        lambda p: U.mutual_information(p[None]),
        lambda p: U.variation_ratio(p[None]),
        lambda p: U.bald_top_k(p[None], 1),
        lambda p: U.nll(p, jnp.zeros(2, jnp.int32)),
        lambda p: U.brier_score(p, jnp.zeros(2, jnp.int32)),
        lambda p: U.expected_calibration_error(p, jnp.zeros(2, jnp.int32)),
        lambda p: U.reliability_diagram(p, jnp.zeros(2, jnp.int32)),
    ],
)
def test_probabilities_are_checked_the_same_way_everywhere(fn):
    with pytest.raises(ValueError, match=r"must sum to 1 along the last \(class\) axis .* sums to 1\.1"):
        fn(NOT_NORMALISED)
    with pytest.raises(ValueError, match=r"must hold probabilities in \[0, 1\].*NaN/inf present: True"):
        fn(WITH_NAN)
    with pytest.raises(ValueError, match=r"must hold probabilities in \[0, 1\]; got values in \[-0\.5, 1\.5\]"):
        fn(NEGATIVE)


# --- the sample axis: explicit where an input could be read without one -----------------------------------------------


def test_a_2d_input_is_ambiguous_without_sample_axis():
    predictive = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])  # (N, C): no samples at all (issue 13)
    for fn in (U.expected_entropy, U.mutual_information, U.variation_ratio):
        with pytest.raises(ValueError, match=r"`sample_probs` of shape \(3, 2\) is ambiguous.*`sample_axis=0`"):
            fn(predictive)
        # Said explicitly: the samples of one example, as the 3-D call with a batch of one.
        np.testing.assert_allclose(fn(predictive, sample_axis=0), fn(predictive[:, None])[0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"`samples` of shape \(2,\) is ambiguous.*\(num_examples,\)"):
        U.epistemic_variance(jnp.array([1.0, 3.0]))
    for fn in (U.epistemic_variance, lambda s, **kw: U.predictive_variance(s, tau=1.0, **kw)):
        with pytest.raises(ValueError, match=r"`samples` of shape \(2,\) is ambiguous"):
            fn(jnp.array([1.0, 3.0]))
    with pytest.raises(ValueError, match=r"`log_variance` of shape \(2,\) is ambiguous"):
        U.aleatoric_variance(jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`samples` of shape \(2,\) is ambiguous"):
        U.gaussian_log_likelihood(jnp.zeros(2), jnp.float32(0.0), tau=1.0)
    np.testing.assert_allclose(U.epistemic_variance(jnp.array([1.0, 3.0]), sample_axis=0), 1.0)
    np.testing.assert_allclose(
        U.gaussian_log_likelihood(jnp.zeros(3), jnp.float32(0.0), tau=1.0, sample_axis=0), -0.5 * math.log(2 * math.pi)
    )


def test_sample_axis_names_samples_that_are_not_first():
    batch_first = SAMPLE_PROBS.transpose(1, 0, 2)  # (N, T, C)
    for fn in (U.expected_entropy, U.mutual_information, U.variation_ratio):
        np.testing.assert_allclose(fn(batch_first, sample_axis=1), fn(SAMPLE_PROBS), atol=1e-7)
        np.testing.assert_allclose(fn(batch_first, sample_axis=-2), fn(SAMPLE_PROBS), atol=1e-7)
    np.testing.assert_array_equal(U.bald_top_k(batch_first, 1, sample_axis=1), U.bald_top_k(SAMPLE_PROBS, 1))
    samples = jnp.arange(12.0).reshape(3, 4)
    log_var = jnp.log(jnp.arange(1.0, 13.0)).reshape(3, 4)
    np.testing.assert_allclose(U.epistemic_variance(samples.T, sample_axis=1), U.epistemic_variance(samples))
    np.testing.assert_allclose(
        U.predictive_variance(samples.T, log_variance=log_var.T, sample_axis=1),
        U.predictive_variance(samples, log_variance=log_var),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        U.gaussian_log_likelihood(samples.T, jnp.zeros(4), tau=2.0, sample_axis=-1),
        U.gaussian_log_likelihood(samples, jnp.zeros(4), tau=2.0),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match=r"`sample_axis`=-1 names the class axis \(last\).*\[-3, -2\] or \[0, 1\]"):
        U.mutual_information(SAMPLE_PROBS, sample_axis=-1)
    with pytest.raises(ValueError, match=r"`sample_axis` entry 3 is out of range"):
        U.mutual_information(SAMPLE_PROBS, sample_axis=3)
    with pytest.raises(TypeError, match=r"`sample_axis` must be a static Python int; got 1\.0"):
        U.epistemic_variance(samples, sample_axis=1.0)
    with pytest.raises(ValueError, match=r"sample axis \(`sample_axis`=1\) of size >= 1; got shape \(3, 0\)"):
        U.epistemic_variance(jnp.zeros((3, 0)), sample_axis=1)
