"""The metrics of issue 15 (OOD, selective prediction, calibration, regression, sample disagreement), each compared
with an independent implementation on the same arrays: scikit-learn where it computes the metric, SciPy closed forms
and numerical integration, NumPy transcriptions of the papers' formulas, hand-computed tiny cases, and (where they
install) netcal and torch-uncertainty. scripts/compare_metrics_with_peers.py reports the peers' digits of agreement.
The random properties of every metric (raises or finite, jit agrees with eager) are in tests/test_metric_properties.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats
from sklearn import calibration, metrics

from jaxdrop import uncertainty as U

RNG = np.random.default_rng(0)
# Integer-valued scores: many ties, which is where implementations differ.
TIED_IN = RNG.integers(0, 6, 57).astype(np.float32)
TIED_OUT = RNG.integers(2, 9, 31).astype(np.float32)
SMOOTH_IN = RNG.normal(0.0, 1.0, 200).astype(np.float32)
SMOOTH_OUT = RNG.normal(1.0, 1.0, 120).astype(np.float32)


def _probs(n: int, classes: int, seed: int = 0, sharpness: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(rng.normal(size=(n, classes)) * sharpness, jnp.float32)))
    return probs, rng.integers(0, classes, n).astype(np.int32)


def _sklearn_labels(scores_in, scores_out):
    return np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))], np.r_[scores_in, scores_out]


# --- OOD -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores_in", "scores_out"), [(TIED_IN, TIED_OUT), pytest.param(SMOOTH_IN, SMOOTH_OUT, marks=pytest.mark.slow)]
)
def test_ood_aupr_and_fpr_match_sklearn(scores_in, scores_out):
    is_out, scores = _sklearn_labels(scores_in, scores_out)
    aupr_out = metrics.average_precision_score(is_out, scores)
    aupr_in = metrics.average_precision_score(1 - is_out, -scores)
    np.testing.assert_allclose(U.ood_aupr(scores_in, scores_out), aupr_out, rtol=1e-6)
    np.testing.assert_allclose(U.ood_aupr(scores_in, scores_out, positive="in"), aupr_in, rtol=1e-6)
    np.testing.assert_allclose(U.ood_auroc(scores_in, scores_out), metrics.roc_auc_score(is_out, scores), rtol=1e-6)
    fpr, tpr, _ = metrics.roc_curve(is_out, scores, drop_intermediate=False)
    for level in (0.95, 0.5, 0.8, 1.0, 1 / len(scores_out)):
        expected = fpr[np.searchsorted(tpr, level, side="left")]
        assert float(U.fpr_at_tpr(scores_in, scores_out, tpr=level)) == pytest.approx(expected, abs=1e-7), level
    # sklearn's default curve drops collinear points; the first point at TPR >= 95% keeps its FPR.
    fpr, tpr, _ = metrics.roc_curve(is_out, scores)
    np.testing.assert_allclose(U.fpr_at_tpr(scores_in, scores_out), fpr[np.searchsorted(tpr, 0.95)], atol=1e-7)


@pytest.mark.slow  # the docstring examples check hand values in the default run
def test_ood_detection_hand_values():
    separated_in, separated_out = jnp.array([0.1, 0.2, 0.3]), jnp.array([0.7, 0.9])
    assert float(U.ood_aupr(separated_in, separated_out)) == 1.0
    assert float(U.ood_aupr(separated_in, separated_out, positive="in")) == 1.0
    assert float(U.fpr_at_tpr(separated_in, separated_out)) == 0.0
    assert float(U.fpr_at_tpr(separated_out, separated_in)) == 1.0  # reversed: every in-distribution input flagged
    # All scores tied: one threshold, precision = share of positives.
    assert float(U.ood_aupr(jnp.zeros(3), jnp.zeros(1))) == 0.25
    assert float(U.ood_aupr(jnp.zeros(3), jnp.zeros(1), positive="in")) == 0.75
    # Booleans and +-inf rank like numbers.
    np.testing.assert_allclose(U.ood_aupr(jnp.array([False, True]), jnp.array([True])), 0.5)
    assert float(U.fpr_at_tpr(jnp.array([-jnp.inf, 0.0]), jnp.array([jnp.inf]), tpr=1.0)) == 0.0


@pytest.mark.slow  # the docstring examples check both scores in the default run
def test_energy_and_max_logit_scores():
    logits = jnp.asarray(RNG.normal(size=(5, 4)) * 3, jnp.float32)
    for temperature in (1.0, 2.5):
        expected = -temperature * special.logsumexp(np.asarray(logits, np.float64) / temperature, axis=-1)
        np.testing.assert_allclose(U.energy_score(logits, temperature=temperature), expected, rtol=1e-6)
    np.testing.assert_allclose(U.max_logit_score(logits), -np.asarray(logits).max(-1))
    # Stable for huge logits, and higher for the less confident row (the "higher = more uncertain" convention).
    energy = U.energy_score(jnp.array([[1000.0, 0.0], [1000.0, 1000.0]]))
    np.testing.assert_allclose(energy, [-1000.0, -1000.0 - math.log(2)], rtol=1e-6)
    confident, flat = U.energy_score(jnp.array([[8.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    assert confident < flat
    # The energy's gradient is the negated softmax at temperature T; a traced temperature works under jit.
    grad = jax.grad(lambda x: U.energy_score(x, temperature=2.0).sum())(logits)
    np.testing.assert_allclose(grad, -jax.nn.softmax(logits / 2.0), rtol=1e-5, atol=1e-7)
    jitted = jax.jit(lambda x, t: U.energy_score(x, temperature=t))
    np.testing.assert_allclose(jitted(logits, 2.5), U.energy_score(logits, temperature=2.5), rtol=1e-6)
    assert np.isnan(np.asarray(jitted(logits, -1.0))).all()  # a traced invalid temperature: NaN, not a number
    bf16 = U.max_logit_score(logits.astype(jnp.bfloat16))
    assert bf16.dtype == jnp.float32 and U.energy_score(logits.astype(jnp.float16)).dtype == jnp.float32


# --- selective prediction --------------------------------------------------------------------------------------------


def _curve(uncertainty, errors):
    order = np.argsort(uncertainty, kind="stable")
    return np.cumsum(np.asarray(errors, np.float64)[order]) / np.arange(1, len(errors) + 1)


def test_selective_metrics_match_their_formulas():
    rng = np.random.default_rng(3)
    uncertainty = rng.integers(0, 20, 300).astype(np.float32)  # ties, broken by index
    errors = (rng.random(300) < 0.2 + 0.03 * uncertainty).astype(np.int32)
    n = len(errors)
    risk = _curve(uncertainty, errors)
    oracle = _curve(errors, errors)
    coverage = np.arange(1, n + 1) / n
    np.testing.assert_allclose(U.eaurc(uncertainty, errors), risk.mean() - oracle.mean(), rtol=1e-5)
    np.testing.assert_allclose(U.augrc(uncertainty, errors), (coverage * risk).mean(), rtol=1e-5)
    for level in (0.1, 0.5, 0.95, 1.0, 0.3):
        np.testing.assert_allclose(U.risk_at_coverage(uncertainty, errors, level), risk[math.ceil(level * n) - 1])
    for budget in (0.0, 0.1, 0.2, 0.35, 1.0):
        expected = coverage[risk <= budget + 1e-12].max(initial=0.0)
        np.testing.assert_allclose(U.coverage_at_risk(uncertainty, errors, budget), expected, rtol=1e-6)
    # AUGRC for 0/1 errors is the mean over errors of the coverage at which each is kept.
    kept_at = np.empty(n)
    kept_at[np.argsort(uncertainty, kind="stable")] = np.arange(n)
    np.testing.assert_allclose(U.augrc(uncertainty, errors), (errors * (n - kept_at)).sum() / n**2, rtol=1e-5)


@pytest.mark.slow
def test_eaurc_and_augrc_limits():
    errors = jnp.array([0, 1, 0, 0, 1, 0])
    perfect = errors.astype(jnp.float32) + jnp.arange(6) * 1e-3  # every error ranked after every success
    assert float(U.eaurc(perfect, errors)) == 0.0
    assert float(U.augrc(perfect, errors)) == pytest.approx((1 / 6 + 2 / 6) / 6, rel=1e-6)  # kept at k = 5, 6
    assert float(U.eaurc(-perfect, errors)) > 0.0
    # The oracle AURC tends to Geifman et al.'s r + (1 - r) log(1 - r) (the continuous limit) as n grows.
    n, rate = 20_000, 0.3
    errors = (np.arange(n) < rate * n).astype(np.int32)
    oracle = float(U.aurc(errors.astype(np.float32), errors))
    assert oracle == pytest.approx(rate + (1 - rate) * math.log(1 - rate), abs=2e-3)
    assert float(U.eaurc(errors.astype(np.float32), errors)) == 0.0
    assert float(U.coverage_at_risk(jnp.arange(3.0), jnp.array([1, 0, 0]), 0.2)) == 0.0  # nothing safe to answer
    assert float(U.risk_at_coverage(jnp.arange(3.0), jnp.array([0, 1, 1]), 1.0)) == pytest.approx(2 / 3)


# --- calibration -----------------------------------------------------------------------------------------------------


def _gaps(confidence, correct, bins, num_bins):
    """Per bin: (count, |accuracy - confidence|), a NumPy loop (the papers' formulas, independent of ours)."""
    out = []
    for b in range(num_bins):
        members = bins == b
        if members.any():
            out.append((members.sum(), abs(correct[members].mean() - confidence[members].mean())))
    return out


def _uniform_bins(values, num_bins):
    edges = np.linspace(0, 1, num_bins + 1)
    return np.clip(np.searchsorted(edges, values, side="left") - 1, 0, num_bins - 1)


@pytest.mark.parametrize(
    ("classes", "num_bins"),
    [(3, 15), pytest.param(5, 7, marks=pytest.mark.slow), pytest.param(2, 10, marks=pytest.mark.slow)],
)
def test_calibration_errors_match_numpy_transcriptions(classes, num_bins):
    probs, labels = _probs(600, classes, seed=classes, sharpness=1.5)
    confidence = probs.max(1).astype(np.float64)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    uniform = _gaps(confidence, correct, _uniform_bins(confidence, num_bins), num_bins)
    np.testing.assert_allclose(U.max_calibration_error(probs, labels, num_bins), max(g for _, g in uniform), rtol=1e-5)
    # Equal mass: sorted by confidence, split into num_bins groups of near-equal size.
    ranks = np.empty(600, int)
    ranks[np.argsort(confidence, kind="stable")] = np.arange(600)
    adaptive = _gaps(confidence, correct, ranks * num_bins // 600, num_bins)
    expected = sum(count * gap for count, gap in adaptive) / 600
    np.testing.assert_allclose(U.adaptive_calibration_error(probs, labels, num_bins), expected, rtol=1e-5)
    np.testing.assert_allclose(
        U.adaptive_calibration_error(probs, labels, num_bins),
        U.expected_calibration_error(probs, labels, num_bins, binning="quantile"),
    )
    classwise = 0.0
    for c in range(classes):
        per_class = _gaps(
            probs[:, c].astype(np.float64), (labels == c) * 1.0, _uniform_bins(probs[:, c], num_bins), num_bins
        )
        classwise += sum(count * gap for count, gap in per_class) / 600 / classes
    np.testing.assert_allclose(U.classwise_calibration_error(probs, labels, num_bins), classwise, rtol=1e-5)


@pytest.mark.slow
def test_binary_classwise_error_matches_sklearn_calibration_curve():
    probs, labels = _probs(500, 2, seed=11)
    positive = probs[:, 1].astype(np.float64)
    frequency, mean_probability = calibration.calibration_curve(labels, positive, n_bins=10, strategy="uniform")
    counts = np.bincount(_uniform_bins(positive, 10), minlength=10)
    counts = counts[counts > 0]  # calibration_curve drops empty bins too
    expected = (counts * np.abs(frequency - mean_probability)).sum() / len(labels)
    np.testing.assert_allclose(U.classwise_calibration_error(probs, labels, 10), expected, rtol=1e-5)


@pytest.mark.slow
def test_calibration_error_hand_values_and_edges():
    perfect = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    assert float(U.max_calibration_error(perfect, jnp.array([0, 1]))) == 0.0
    assert float(U.classwise_calibration_error(perfect, jnp.array([0, 1]))) == 0.0
    assert float(U.max_calibration_error(perfect, jnp.array([1, 0]))) == 1.0  # confidently wrong
    one = jnp.array([[0.7, 0.3]])
    np.testing.assert_allclose(U.adaptive_calibration_error(one, jnp.array([1]), num_bins=15), 0.7, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs_give_float32_close_to_float32(dtype):
    probs, labels = _probs(64, 3, seed=5)
    low = jnp.asarray(probs).astype(dtype)
    reference = np.asarray(low.astype(jnp.float32))
    for fn in (U.max_calibration_error, U.adaptive_calibration_error, U.classwise_calibration_error):
        got = fn(low, labels, 5)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, fn(reference / reference.sum(1, keepdims=True), labels, 5), atol=2e-2)
    samples = jnp.asarray(RNG.normal(size=(8, 6)), dtype)
    assert U.crps_samples(samples, jnp.zeros(6, dtype)).dtype == jnp.float32
    assert U.sample_disagreement(jnp.asarray(probs[:8].reshape(2, 4, 3)).astype(dtype)).dtype == jnp.float32


# --- regression ------------------------------------------------------------------------------------------------------

MEAN = RNG.normal(size=400).astype(np.float32)
STD = (0.2 + RNG.gamma(2.0, 0.5, 400)).astype(np.float32)
TARGETS = (MEAN + STD * RNG.normal(size=400) * 1.3).astype(np.float32)


def test_gaussian_intervals_match_scipy():
    for coverage in (0.5, 0.9, 0.95):
        lower, upper = stats.norm.interval(coverage, MEAN.astype(np.float64), STD.astype(np.float64))
        inside = ((lower <= TARGETS) & (TARGETS <= upper)).mean()
        np.testing.assert_allclose(U.picp(TARGETS, mean=MEAN, std=STD, coverage=coverage), inside)
        width = U.interval_width(mean=MEAN, std=STD, coverage=coverage)
        np.testing.assert_allclose(width, (upper - lower).mean(), rtol=1e-5)
    # A zero std is a point prediction: covered only by an exact hit.
    assert float(U.picp(jnp.array([0.0, 1.0]), mean=jnp.zeros(2), std=jnp.zeros(2))) == 0.5


@pytest.mark.slow
def test_sample_intervals_match_numpy_quantiles():
    samples = RNG.normal(size=(50, 30)).astype(np.float32) * 2 + 1
    targets = RNG.normal(size=30).astype(np.float32) * 2 + 1
    lower, upper = np.quantile(samples.astype(np.float64), [0.05, 0.95], axis=0)
    np.testing.assert_allclose(
        U.picp(targets, samples=samples, coverage=0.9), ((lower <= targets) & (targets <= upper)).mean()
    )
    np.testing.assert_allclose(U.interval_width(samples=samples, coverage=0.9), (upper - lower).mean(), rtol=1e-5)
    np.testing.assert_allclose(
        U.interval_width(samples=samples.T, coverage=0.9, sample_axis=1), (upper - lower).mean(), rtol=1e-5
    )


@pytest.mark.slow
def test_ence_and_uce_match_numpy_transcriptions():
    for num_bins in (1, 8, 15):
        order = np.argsort(STD, kind="stable")
        rmv, rmse = [], []
        for members in np.array_split(order, num_bins):  # near-equal sizes, first bins larger: like ours at n % B == 0
            rmv.append(np.sqrt(np.mean(STD[members].astype(np.float64) ** 2)))
            rmse.append(np.sqrt(np.mean((TARGETS[members] - MEAN[members]).astype(np.float64) ** 2)))
        if 400 % num_bins == 0:
            expected = np.mean(np.abs(np.array(rmv) - np.array(rmse)) / np.array(rmv))
            np.testing.assert_allclose(U.ence(MEAN, STD, TARGETS, num_bins), expected, rtol=1e-5)
        variance = STD.astype(np.float64) ** 2
        error = (TARGETS - MEAN).astype(np.float64) ** 2
        edges = np.linspace(variance.min(), variance.max(), num_bins + 1)
        bins = np.clip(np.searchsorted(edges, variance, side="left") - 1, 0, num_bins - 1)
        expected = sum(
            (bins == b).mean() * abs(error[bins == b].mean() - variance[bins == b].mean())
            for b in range(num_bins)
            if (bins == b).any()
        )
        np.testing.assert_allclose(U.uce(MEAN, STD, TARGETS, num_bins), expected, rtol=1e-4)
    # Calibrated in expectation: the std is the spread of the error, so ENCE is small for many samples per bin.
    rng = np.random.default_rng(7)
    std = rng.gamma(2.0, 1.0, 50_000)
    assert float(U.ence(np.zeros(50_000), std, std * rng.normal(size=50_000), num_bins=10)) < 0.03


def _crps_by_integration(mean: float, std: float, target: float) -> float:
    cdf = stats.norm(mean, std).cdf
    left = integrate.quad(lambda x: cdf(x) ** 2, -np.inf, target)[0]
    return left + integrate.quad(lambda x: (1 - cdf(x)) ** 2, target, np.inf)[0]


def test_crps_gaussian_matches_numerical_integration_and_its_gradient():
    cases = [(0.0, 1.0, 0.0), (1.0, 0.5, -0.3), (-2.0, 3.0, 4.0), (0.0, 0.01, 0.5)]
    for mean, std, target in cases:
        got = U.crps_gaussian(jnp.array([mean]), jnp.array([std]), jnp.array([target]))
        np.testing.assert_allclose(got, _crps_by_integration(mean, std, target), rtol=1e-5, atol=1e-7)
    # std = 0: the absolute error (the limit), exactly.
    np.testing.assert_allclose(U.crps_gaussian(jnp.array([1.0]), jnp.zeros(1), jnp.array([3.5])), 2.5)
    # d CRPS / d mean = -(2 Phi(z) - 1) (Gneiting & Raftery 2007).
    z = (TARGETS[:5] - MEAN[:5]) / STD[:5]
    grad = jax.grad(lambda m: U.crps_gaussian(m, STD[:5], TARGETS[:5]) * 5)(jnp.asarray(MEAN[:5]))
    np.testing.assert_allclose(grad, -(2 * stats.norm.cdf(z) - 1), rtol=1e-4, atol=1e-6)


def test_crps_samples_matches_the_pairwise_form_and_the_gaussian():
    samples = RNG.normal(size=(33, 7)).astype(np.float32)
    targets = RNG.normal(size=7).astype(np.float32)
    pairwise = np.abs(samples[:, None] - samples[None]).astype(np.float64).mean((0, 1))  # O(T^2)
    expected = (np.abs(samples - targets).mean(0) - 0.5 * pairwise).mean()
    np.testing.assert_allclose(U.crps_samples(samples, targets), expected, rtol=1e-5)
    np.testing.assert_allclose(U.crps_samples(samples.T, targets, sample_axis=1), expected, rtol=1e-5)
    one = U.crps_samples(jnp.array([2.0]), jnp.array(0.5), sample_axis=0)
    np.testing.assert_allclose(one, 1.5)  # one sample: the absolute error


@pytest.mark.slow
def test_crps_samples_tends_to_the_gaussian_closed_form():
    # Many samples of N(mean, std): the empirical CRPS tends to the closed form (error O(1/sqrt T) per point,
    # averaged over 20 points; the bound is > 5 standard errors at this T).
    rng = np.random.default_rng(1)
    draws = (MEAN[:20] + STD[:20] * rng.normal(size=(20_000, 20))).astype(np.float32)
    gaussian = U.crps_gaussian(MEAN[:20], STD[:20], TARGETS[:20])
    np.testing.assert_allclose(U.crps_samples(draws, TARGETS[:20]), gaussian, rtol=5e-3)


# --- sample disagreement ---------------------------------------------------------------------------------------------


def test_sample_disagreement_against_numpy():
    sample_probs = np.asarray(jax.nn.softmax(jnp.asarray(RNG.normal(size=(9, 6, 4)), jnp.float32)))
    consensus = sample_probs.mean(0).argmax(-1)
    expected = (sample_probs.argmax(-1) != consensus).mean(0)
    np.testing.assert_allclose(U.sample_disagreement(sample_probs), expected)
    np.testing.assert_allclose(U.sample_disagreement(sample_probs.transpose(1, 0, 2), sample_axis=1), expected)
    assert U.sample_disagreement(np.zeros((3, 0, 2), np.float32)).shape == (0,)
    # Not the variation ratio: the mean prediction's class (0 here) is not the most voted one (1).
    votes = jnp.array([[[0.98, 0.02]], [[0.4, 0.6]], [[0.45, 0.55]]])
    assert float(U.sample_disagreement(votes)[0]) == pytest.approx(2 / 3)
    assert float(U.variation_ratio(votes)[0]) == pytest.approx(1 / 3)


# --- jit, vmap and bad input -----------------------------------------------------------------------------------------

PROBS, LABELS = _probs(30, 3, seed=2)
JIT_CASES = [
    (lambda a, b: U.ood_aupr(a, b, positive="in"), (TIED_IN, TIED_OUT)),
    (lambda a, b: U.fpr_at_tpr(a, b, tpr=0.9), (TIED_IN, TIED_OUT)),
    (U.eaurc, (TIED_IN, TIED_IN > 3)),
    (U.augrc, (TIED_IN, TIED_IN > 3)),
    (lambda u, e: U.risk_at_coverage(u, e, 0.5), (TIED_IN, TIED_IN > 3)),
    (lambda u, e: U.coverage_at_risk(u, e, 0.2), (SMOOTH_IN, SMOOTH_IN > 0.5)),
    (U.max_calibration_error, (PROBS, LABELS)),
    (U.adaptive_calibration_error, (PROBS, LABELS)),
    (U.classwise_calibration_error, (PROBS, LABELS)),
    (lambda y, m, s: U.picp(y, mean=m, std=s), (TARGETS, MEAN, STD)),
    (lambda m, s: U.interval_width(mean=m, std=s, coverage=0.8), (MEAN, STD)),
    (U.ence, (MEAN, STD, TARGETS)),
    (U.uce, (MEAN, STD, TARGETS)),
    (U.crps_gaussian, (MEAN, STD, TARGETS)),
    (U.crps_samples, (np.stack([MEAN, TARGETS]), TARGETS)),
    (U.sample_disagreement, (PROBS.reshape(3, 10, 3),)),
]


@pytest.mark.slow  # the default run checks jit through NAN_CASES and tests/test_metric_properties.py (slow too)
def test_every_new_metric_under_jit_matches_eager():
    for fn, args in JIT_CASES:
        np.testing.assert_allclose(jax.jit(fn)(*args), fn(*args), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_vmap_over_independent_problems():
    stacked_in, stacked_out = np.stack([TIED_IN, TIED_IN[::-1]]), np.stack([TIED_OUT, TIED_OUT[::-1]])
    batched = jax.vmap(U.ood_aupr)(stacked_in, stacked_out)
    np.testing.assert_allclose(
        batched, [U.ood_aupr(a, b) for a, b in zip(stacked_in, stacked_out, strict=True)], rtol=1e-6
    )
    means = np.stack([MEAN, MEAN + 1])
    batched = jax.vmap(U.crps_gaussian, in_axes=(0, None, None))(means, STD, TARGETS)
    np.testing.assert_allclose(batched, [U.crps_gaussian(m, STD, TARGETS) for m in means], rtol=1e-6)


NAN_CASES = [
    (U.ood_aupr, (jnp.array([0.1, jnp.nan]), jnp.array([0.5]))),
    (U.fpr_at_tpr, (jnp.array([0.1, 0.2]), jnp.array([jnp.nan]))),
    (U.energy_score, (jnp.array([[0.0, jnp.inf]]),)),
    (U.eaurc, (jnp.array([0.1, jnp.nan]), jnp.array([0, 1]))),
    (U.augrc, (jnp.array([0.1, 0.2]), jnp.array([0.0, jnp.nan]))),
    (U.max_calibration_error, (jnp.array([[0.5, 0.6]]), jnp.array([0]))),
    (U.classwise_calibration_error, (jnp.array([[0.5, 0.5]]), jnp.array([2]))),
    (U.ence, (jnp.zeros(2), jnp.array([1.0, 0.0]), jnp.zeros(2))),  # a zero std: RMV divides
    (U.crps_gaussian, (jnp.zeros(2), jnp.array([1.0, -1.0]), jnp.zeros(2))),
    (U.crps_samples, (jnp.array([[0.0], [jnp.nan]]), jnp.zeros(1))),
    (U.sample_disagreement, (jnp.array([[[0.5, jnp.nan]]]),)),
]


@pytest.mark.parametrize(
    ("fn", "args"),
    [case if i % 5 == 0 else pytest.param(*case, marks=pytest.mark.slow) for i, case in enumerate(NAN_CASES)],
)
def test_invalid_values_raise_eagerly_and_give_nan_under_jit(fn, args):
    with pytest.raises(ValueError):
        fn(*args)
    assert np.isnan(np.asarray(jax.jit(fn)(*args))).all()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: U.fpr_at_tpr(TIED_IN, TIED_OUT, tpr=0.0), ValueError, r"`tpr` must be in \(0, 1\]; got 0.0"),
        (lambda: jax.jit(lambda t: U.fpr_at_tpr(TIED_IN, TIED_OUT, tpr=t))(0.9), TypeError, r"`tpr` must be a static"),
        (lambda: U.ood_aupr(TIED_IN, TIED_OUT, positive="both"), ValueError, r"`positive` must be one of"),
        (lambda: U.risk_at_coverage(TIED_IN, TIED_IN, 1.2), ValueError, r"`coverage` must be in \(0, 1\]; got 1.2"),
        (lambda: U.coverage_at_risk(TIED_IN, TIED_IN, -0.5), ValueError, r"`risk` must be a finite number >= 0"),
        (
            lambda: U.picp(TARGETS, mean=MEAN, std=STD, coverage=1.0),
            ValueError,
            r"`coverage` must be in \(0, 1\); got 1.0",
        ),
        (
            lambda: U.picp(TARGETS, mean=MEAN),
            ValueError,
            r"either a Gaussian predictive \(`mean` and `std`\) or `samples`",
        ),
        (lambda: U.picp(TARGETS[:3], mean=MEAN, std=STD), ValueError, r"`targets` and `mean` must have the same shape"),
        (lambda: U.ence(MEAN, -STD, TARGETS), ValueError, r"`std` must hold standard deviations > 0"),
        (lambda: U.uce(MEAN, STD, TARGETS, num_bins=0), ValueError, r"`num_bins` must be in \[1, 2147483647\]; got 0"),
        (lambda: U.crps_gaussian(jnp.zeros(0), jnp.zeros(0), jnp.zeros(0)), ValueError, r"`mean` must not be empty"),
        (lambda: U.crps_samples(jnp.zeros(5), jnp.zeros(())), ValueError, r"ambiguous"),
        (lambda: U.energy_score(jnp.zeros((3, 0))), ValueError, r"`logits` must have a class axis"),
        (
            lambda: U.energy_score(jnp.zeros(3), temperature=0.0),
            ValueError,
            r"`temperature` must be a finite number > 0",
        ),
        (lambda: U.max_logit_score(jnp.ones(3, jnp.int32)), TypeError, r"`logits` must have a floating-point dtype"),
        (lambda: U.classwise_calibration_error(PROBS * 0.9, LABELS), ValueError, r"`probs` must sum to 1"),
        (lambda: U.adaptive_calibration_error(PROBS, LABELS + 3), ValueError, r"`labels` must be in \[0, 2\]"),
        (lambda: U.sample_disagreement(PROBS), ValueError, r"sample_axis=0"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- peers: netcal and torch-uncertainty (optional; scripts/compare_metrics_with_peers.py reports the digits) --------


def test_calibration_and_regression_match_netcal():
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs, labels = _probs(1500, 4, seed=9)  # 1500 = 15 x 100: equal-mass bins of one size in every implementation
    for ours, theirs in [
        (U.expected_calibration_error, netcal_metrics.ECE(bins=15)),
        (U.max_calibration_error, netcal_metrics.MCE(bins=15)),
        (U.adaptive_calibration_error, netcal_metrics.ECE(bins=15, equal_intervals=False)),
    ]:
        np.testing.assert_allclose(ours(probs, labels), theirs.measure(probs.astype(np.float64), labels), atol=1e-5)
    gaussian = (MEAN.astype(np.float64), STD.astype(np.float64))
    uce = netcal_metrics.UCE(bins=15).measure(gaussian, TARGETS.astype(np.float64), kind="meanstd")
    np.testing.assert_allclose(U.uce(MEAN, STD, TARGETS), np.mean(uce), rtol=1e-4)
    picp = netcal_metrics.PICP(bins=15).measure(gaussian, TARGETS.astype(np.float64), q=0.9, kind="meanstd")
    np.testing.assert_allclose(U.picp(TARGETS, mean=MEAN, std=STD, coverage=0.9), np.mean(picp.picp), atol=1e-6)


def test_selective_and_ood_match_torch_uncertainty():
    torch = pytest.importorskip("torch")
    tu = pytest.importorskip("torch_uncertainty.metrics")
    probs, labels = _probs(800, 5, seed=4)
    labels = labels.astype(np.int64)  # torch's one_hot takes int64 only
    confidence, errors = probs.max(1), (probs.argmax(1) != labels)

    def run(metric, *args):
        metric.update(*(torch.as_tensor(np.asarray(arg)) for arg in args))
        return float(metric.compute())

    # Their AURC and AUGRC integrate with trapezoids from coverage 1/n and rescale by 1 / (1 - 1/n): O(1/n) apart.
    assert float(U.aurc(-confidence, errors)) == pytest.approx(run(tu.AURC(), probs, labels), abs=2e-3)
    assert float(U.augrc(-confidence, errors)) == pytest.approx(run(tu.AUGRC(), probs, labels), abs=2e-3)
    risk = run(tu.RiskAtxCov(cov_threshold=0.8), probs, labels)
    assert float(U.risk_at_coverage(-confidence, errors, 0.8)) == pytest.approx(risk, abs=1e-6)
    # Random labels: about 80% errors. Where no coverage reaches the risk they return NaN and we 0 ("answer none").
    coverage = run(tu.CovAtxRisk(risk_threshold=0.78), probs, labels)
    assert 0 < coverage < 1 and float(U.coverage_at_risk(-confidence, errors, 0.78)) == pytest.approx(
        coverage, abs=1e-6
    )
    for ours, theirs in [
        (U.adaptive_calibration_error, tu.AdaptiveCalibrationError(task="multiclass", num_classes=5, num_bins=10)),
        (U.classwise_calibration_error, tu.ClasswiseCalibrationError(num_classes=5, num_bins=10)),
    ]:
        assert float(ours(probs, labels, 10)) == pytest.approx(run(theirs, probs, labels), abs=1e-6)
    is_out = _sklearn_labels(SMOOTH_IN, SMOOTH_OUT)[0]
    fpr95 = run(tu.FPR95(pos_label=1), np.r_[SMOOTH_IN, SMOOTH_OUT], is_out)
    assert float(U.fpr_at_tpr(SMOOTH_IN, SMOOTH_OUT)) == pytest.approx(fpr95, abs=1e-6)
