import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
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
    ax = U.plot_reliability_diagram(U.reliability_diagram(probs, labels, num_bins=5))
    assert len(ax.patches) == 5 and ax.get_xlabel() == "confidence"


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


def test_value_checks_are_skipped_under_jit():
    # Traced values cannot be checked; the metric still runs (shapes are still checked).
    out = jax.jit(U.predictive_entropy)(jnp.array([[0.5, 0.6]]))
    assert out.shape == (1,)
