"""jaxdrop.monitor: the per-window rank statistic, its false-alarm control on unchanged streams and detection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from stat_bounds import binomial_bound

from jaxdrop import monitor
from jaxdrop import uncertainty as unc

RS = np.random.RandomState(0)


def _window(reference, scores):
    return monitor.window_update(monitor.window_init(), jnp.sort(reference), scores)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_window_statistic_is_mann_whitney(alternative):
    reference, window = RS.rand(300).astype(np.float32), (RS.rand(40) + 0.1).astype(np.float32)
    z, p_value = monitor.window_test(_window(reference, window), 300, alternative=alternative)
    expected = stats.mannwhitneyu(window, reference, alternative=alternative, method="asymptotic", use_continuity=False)
    np.testing.assert_allclose(p_value, expected.pvalue, rtol=1e-4)
    assert (float(z) > 0) == (expected.statistic > 40 * 300 / 2)


def test_ties_make_the_test_conservative():
    reference = np.repeat(np.arange(5.0, dtype=np.float32), 40)  # heavy ties, like entropies stuck at 0
    window = np.repeat(np.arange(1.0, 6.0, dtype=np.float32), 8)
    _, p_value = monitor.window_test(_window(reference, window), 200)
    tie_corrected = stats.mannwhitneyu(
        window, reference, alternative="greater", method="asymptotic", use_continuity=False
    )
    assert tie_corrected.pvalue < float(p_value) < 0.5


def test_window_update_in_batches_under_jit_and_scan_is_one_update():
    reference = jnp.sort(jnp.asarray(RS.rand(100), jnp.float32))
    scores = jnp.asarray(RS.rand(60), jnp.float32)
    whole = _window(reference, scores)

    def step(stats, batch):
        return jax.jit(monitor.window_update)(stats, reference, batch), None

    batched, _ = jax.lax.scan(step, monitor.window_init(), scores.reshape(6, 10))
    for a, b in zip(whole, batched, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    padded = monitor.window_update(monitor.window_init(), reference, jnp.pad(scores, (0, 4)), jnp.arange(64) < 60)
    np.testing.assert_allclose(padded.rank_sum, whole.rank_sum, rtol=1e-6)
    assert int(padded.num_scores) == 60


def _stream_p_values(key, num_streams, reference_size, window_size, num_windows, shift_from=None, shift=0.0):
    """p-values ``(streams, windows)`` of exchangeable streams (i.i.d. scores, reference from the same law)."""
    ref_key, stream_key = jax.random.split(key)
    references = jnp.sort(jax.random.exponential(ref_key, (num_streams, reference_size)), -1)  # skewed, like MI
    streams = jax.random.exponential(stream_key, (num_streams, num_windows, window_size))
    if shift_from is not None:
        streams = streams + shift * (jnp.arange(num_windows) >= shift_from)[None, :, None]

    def one_stream(reference, windows):
        def one_window(scores):
            stats = monitor.window_update(monitor.window_init(), reference, scores)
            return monitor.window_test(stats, reference_size)[1]

        return jax.vmap(one_window)(windows)

    return np.asarray(jax.jit(jax.vmap(one_stream))(references, streams), np.float64)


def test_false_alarm_rate_on_unchanged_streams_is_within_the_budget():
    num_streams, num_windows, alpha = 2000, 30, 0.2
    p_values = _stream_p_values(jax.random.key(0), num_streams, 100, 25, num_windows)
    # the p-values are calibrated: each window alone rejects at 5% about 5% of the time (the test can fail)
    first_window_rate = (p_values[:, 0] <= 0.05).mean()
    assert abs(first_window_rate - 0.05) <= binomial_bound(num_streams, 0.05)
    thresholds = np.array([monitor.window_threshold(i, alpha) for i in range(num_windows)])
    any_alarm = (p_values <= thresholds).any(1).mean()
    assert any_alarm <= alpha + binomial_bound(num_streams, alpha)
    bonferroni = (p_values <= alpha / num_windows).any(1).mean()
    assert bonferroni <= alpha + binomial_bound(num_streams, alpha)


def test_monitor_detects_a_shift_and_reports_it():
    delays, early = [], 0
    for seed in range(20):
        rs = np.random.RandomState(seed)
        reference = rs.exponential(size=200).astype(np.float32)
        drift = DriftStream(rs, change=400, shift=1.0)
        watch = monitor.DriftMonitor(reference, window_size=40, alpha=0.05)
        for batch in np.split(drift.scores, 20):  # batches of 50: windows close in the middle of batches
            watch.update(batch)
        assert len(watch.windows) == 25
        first = monitor.first_alarm(watch.windows)
        early += first is not None and first < 10
        delays.append(first - 10 if first is not None and first >= 10 else np.inf)
    assert early <= 3  # alpha = 0.05 per stream: P(3 or more of 20) < 8%  (binomial)
    assert np.median(delays) <= 1 and np.isfinite(delays).mean() >= 0.9
    report = watch.alarms[0]
    assert report.alarm and report.p_value <= report.threshold and report.statistic > 0 and report.score > 1.0


class DriftStream:
    """1000 exponential scores; from ``change`` on, shifted up by ``shift`` (the uncertainty rises)."""

    def __init__(self, rs, change, shift):
        self.scores = rs.exponential(size=1000).astype(np.float32)
        self.scores[change:] += shift


@pytest.mark.slow
def test_monitor_takes_mc_samples():
    probs = jax.nn.softmax(2 * jax.random.normal(jax.random.key(0), (4, 60, 3)), -1)
    watch = monitor.DriftMonitor(probs, window_size=20, score="mutual_information")
    np.testing.assert_array_equal(watch.reference, jnp.sort(unc.mutual_information(probs)))
    watch.update(probs)
    assert len(watch.windows) == 3 and int(watch.stats.num_scores) == 0


def test_monitor_checks_its_arguments():
    reference = np.ones(50, np.float32)
    with pytest.raises(ValueError, match=r"`alpha` must be in \(0, 1\); got 1.0"):
        monitor.DriftMonitor(reference, window_size=10, alpha=1.0)
    with pytest.raises(ValueError, match="`reference` must hold at least `window_size`=60 scores"):
        monitor.DriftMonitor(reference, window_size=60)
    bounded = monitor.DriftMonitor(reference, window_size=25, budget="bonferroni", num_windows=1)
    with pytest.raises(ValueError, match="beyond `num_windows`=1"):
        bounded.update(reference)
