"""jaxdrop.active: acquisition scores, top-k, BatchBALD, stochastic batches, EPIG and the loop helper."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_bounds import binomial_bound

import jaxdrop
from jaxdrop import active
from jaxdrop import uncertainty as unc

KEY = jax.random.key(0)


def _samples(key, shape, scale=2.0):
    return jax.nn.softmax(scale * jax.random.normal(key, shape), -1)


POOL = _samples(KEY, (6, 12, 3))  # (T, pool, classes)


def _entropy(p, axis=-1):
    p = np.asarray(p, np.float64)
    return -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis)


# --- scores ----------------------------------------------------------------------------------------------------------


def test_scores_are_the_uncertainty_metrics_oriented_for_acquisition():
    mean = POOL.mean(0)
    np.testing.assert_allclose(active.max_entropy(POOL), unc.predictive_entropy(mean), rtol=1e-6)
    np.testing.assert_allclose(active.bald(POOL), unc.mutual_information(POOL), rtol=1e-6)
    np.testing.assert_allclose(active.variation_ratios(POOL), unc.variation_ratio(POOL))
    np.testing.assert_allclose(active.margin(POOL), 1.0 - unc.margin(mean), rtol=1e-6)
    std = np.asarray(POOL, np.float64).std(0).mean(-1)  # Kampffmeyer et al.: mean over classes of the std
    np.testing.assert_allclose(active.mean_std(POOL), std, rtol=1e-5)
    # (pool, T, C) with sample_axis=1 reads the same
    np.testing.assert_allclose(active.bald(POOL.swapaxes(0, 1), sample_axis=1), active.bald(POOL), rtol=1e-6)


@pytest.mark.slow
def test_scores_in_bf16_and_f16_are_float32_and_close():
    for dtype in (jnp.bfloat16, jnp.float16):
        low = POOL.astype(dtype)
        low = low / low.astype(jnp.float32).sum(-1, keepdims=True).astype(dtype)
        for score in (active.max_entropy, active.bald, active.mean_std, active.margin):
            out = score(low)
            assert out.dtype == jnp.float32, (score.__name__, dtype)
            np.testing.assert_allclose(out, score(POOL), atol=3e-2)


@pytest.mark.slow
def test_random_scores_are_keyed_and_uniform():
    first, again = active.random(POOL, key=KEY), active.random(POOL, key=KEY)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, active.random(POOL, key=jax.random.key(1)))
    picks = jax.vmap(lambda k: active.top_k(active.random(POOL, key=k), 1))(jax.random.split(KEY, 2400))[:, 0]
    counts = np.bincount(np.asarray(picks), minlength=12) / 2400
    assert np.abs(counts - 1 / 12).max() <= binomial_bound(2400, 1 / 12)


# --- top-k -----------------------------------------------------------------------------------------------------------


def test_top_k_ties_to_lower_index_nan_first_and_mask():
    scores = jnp.array([0.5, 0.9, 0.9, jnp.nan, 0.1, -jnp.inf])
    np.testing.assert_array_equal(active.top_k(scores, 6), [3, 1, 2, 0, 4, 5])
    mask = jnp.array([True, False, True, False, True, True])
    np.testing.assert_array_equal(active.top_k(scores, 4, mask=mask), [2, 0, 4, 5])  # -inf allowed beats masked
    traced = jax.jit(lambda s, m: active.top_k(s, 3, mask=m))(scores, jnp.array([True] + [False] * 5))
    np.testing.assert_array_equal(traced, [0, -1, -1])  # inside jit too few candidates cannot raise
    np.testing.assert_array_equal(active.top_k(active.bald(POOL), 5), unc.bald_top_k(POOL, 5))


# --- BatchBALD -------------------------------------------------------------------------------------------------------


def _joint_mutual_information(sample_probs, indices):
    """I[y_indices; w] by brute force over every class configuration (NumPy, float64)."""
    p = np.asarray(sample_probs, np.float64)
    num_classes = p.shape[-1]
    joint = []
    for config in itertools.product(range(num_classes), repeat=len(indices)):
        joint.append(np.prod([p[:, i, c] for i, c in zip(indices, config, strict=True)], axis=0).mean())
    conditional = sum(_entropy(p[:, i]).mean() for i in indices)
    return _entropy(np.array(joint)) - conditional


def test_batchbald_exact_joint_matches_brute_force_and_is_greedy():
    result = active.batchbald(POOL, 4, num_configurations=10_000)
    indices = np.asarray(result.indices)
    assert len(set(indices.tolist())) == 4
    assert indices[0] == int(jnp.argmax(active.bald(POOL)))  # the first pick is BALD's
    for n in range(1, 5):
        expected = _joint_mutual_information(POOL, indices[:n])
        np.testing.assert_allclose(result.joint_mutual_information[n - 1], expected, rtol=1e-4, atol=1e-5)
    # greedy: no other candidate would have given a larger joint MI at the last step
    others = [i for i in range(12) if i not in indices]
    best_other = max(_joint_mutual_information(POOL, [*indices[:3], i]) for i in others)
    assert result.joint_mutual_information[3] >= best_other - 1e-5


def test_batchbald_avoids_duplicates_that_top_k_bald_takes():
    # 8 functions. Candidate 0 (and its copies 1, 2) tells k % 4 apart: MI log 4. Candidate 3 is softer (lower BALD)
    # but tells k from k + 4 apart, which candidate 0 cannot; candidate 4 is uninformative.
    k = np.arange(8)
    sharp = np.eye(4)[k % 4] * 0.96 + 0.01
    soft = np.eye(4)[(k // 2) % 4] * 0.6 + 0.1
    pool = jnp.asarray(np.stack([sharp, sharp, sharp, soft, np.full((8, 4), 0.25)], axis=1), jnp.float32)
    np.testing.assert_array_equal(unc.bald_top_k(pool, 2), [0, 1])  # top-k BALD takes a copy
    result = active.batchbald(pool, 2)
    np.testing.assert_array_equal(result.indices, [0, 3])  # BatchBALD takes the new information
    gain = result.joint_mutual_information[1] - result.joint_mutual_information[0]
    assert 0 < gain < float(active.bald(pool)[3]) + 1e-6  # submodular: less than candidate 3's own BALD


@pytest.mark.slow
def test_batchbald_sampled_estimator_is_unbiased():
    pool = _samples(jax.random.key(3), (16, 6, 3))
    truth = _joint_mutual_information(pool, range(6))  # all six end up chosen, in whatever order
    exact = active.batchbald(pool, 6, num_configurations=3**5)  # every step exact
    np.testing.assert_allclose(exact.joint_mutual_information[5], truth, rtol=1e-4)
    num_runs = 64
    runs = jax.vmap(lambda k: active.batchbald(pool, 6, key=k, num_configurations=200))(jax.random.split(KEY, num_runs))
    # 3**4 = 81 <= 200 < 3**5: five exact picks, then the sixth scored on 208 sampled configurations
    np.testing.assert_allclose(
        runs.joint_mutual_information[:, :5],
        jnp.broadcast_to(exact.joint_mutual_information[:5], (num_runs, 5)),
        rtol=1e-5,
    )
    estimates = np.asarray(runs.joint_mutual_information[:, 5], np.float64)
    assert estimates.std() > 0  # sampled: different keys, different estimates
    standard_error = estimates.std(ddof=1) / math.sqrt(num_runs)
    assert abs(estimates.mean() - truth) < 4 * standard_error + 1e-3, (estimates.mean(), truth, standard_error)


def test_batchbald_mask_jit_and_errors():
    mask = jnp.arange(12) % 2 == 0
    picks = active.batchbald(POOL, 3, mask=mask).indices
    assert (np.asarray(picks) % 2 == 0).all()
    jitted = jax.jit(lambda p, m: active.batchbald(p, 3, mask=m))(POOL, mask)
    np.testing.assert_array_equal(jitted.indices, picks)
    with pytest.raises(ValueError, match="`key` is required"):
        active.batchbald(POOL, 4, num_configurations=8)
    with pytest.raises(ValueError, match=r"`batch_size` must be in \[1, 12\]; got 13"):
        active.batchbald(POOL, 13)


# --- stochastic batch acquisition -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", ["power", pytest.param("softmax", marks=pytest.mark.slow), pytest.param("softrank", marks=pytest.mark.slow)]
)
def test_stochastic_batch_draws_in_proportion_to_the_weights(mode):
    scores = jnp.array([0.1, 0.4, 0.0, 0.8, 0.3])
    beta = 2.0
    weights = {
        "power": np.asarray(scores) ** beta,
        "softmax": np.exp(beta * np.asarray(scores)),
        "softrank": np.array([4, 2, 5, 1, 3], np.float64) ** -beta,
    }[mode]
    weights = weights / weights.sum()
    num_draws = 4000
    first = jax.vmap(lambda k: active.stochastic_batch(scores, 1, key=k, mode=mode, beta=beta))(
        jax.random.split(KEY, num_draws)
    )[:, 0]
    freq = np.bincount(np.asarray(first), minlength=5) / num_draws
    for f, w in zip(freq, weights, strict=True):
        assert abs(f - w) <= binomial_bound(num_draws, w)
    batch = active.stochastic_batch(scores, 5, key=KEY, mode=mode)
    assert sorted(np.asarray(batch).tolist()) == [0, 1, 2, 3, 4]  # without replacement


def test_stochastic_batch_mask_and_zero_weights():
    scores = jnp.array([0.0, 0.5, 0.0, 0.7])
    batch = active.stochastic_batch(scores, 3, key=KEY, mask=jnp.array([True, False, True, True]))
    np.testing.assert_array_equal(batch, [3, 0, 2])  # zero weights last, in index order
    with pytest.raises(ValueError, match="`scores` must be >= 0 with `mode`='power'"):
        active.stochastic_batch(-scores - 1, 2, key=KEY)


# --- EPIG ------------------------------------------------------------------------------------------------------------


def test_epig_matches_brute_force_and_is_zero_for_a_certain_model():
    pool, target = POOL[:, :5], POOL[:, 5:]
    got = active.epig(pool, target)
    p, q = np.asarray(pool, np.float64), np.asarray(target, np.float64)
    for i in range(5):
        values = []
        for j in range(7):
            joint = np.einsum("kc,kd->cd", p[:, i], q[:, j]) / 6
            values.append(_entropy(p[:, i].mean(0)) + _entropy(q[:, j].mean(0)) - _entropy(joint.ravel()))
        np.testing.assert_allclose(got[i], np.mean(values), rtol=1e-4, atol=1e-6)
    same = jnp.broadcast_to(POOL[:1], POOL.shape)  # every sample the same function: nothing to learn
    np.testing.assert_allclose(active.epig(same[:, :5], same[:, 5:]), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="`target_sample_probs` must hold the same number of samples"):
        active.epig(POOL, POOL[:3])


@pytest.mark.slow
def test_gradients_of_bald_and_epig_match_finite_differences():
    logits = jax.random.normal(KEY, (4, 3, 3))
    direction = jax.random.normal(jax.random.key(1), logits.shape)

    def bald_sum(x):
        return active.bald(jax.nn.softmax(x, -1)).sum()

    def epig_sum(x):
        probs = jax.nn.softmax(x, -1)
        return active.epig(probs[:, :2], probs[:, 2:]).sum()

    for fn in (jax.jit(bald_sum), jax.jit(epig_sum)):
        eps = 1e-2
        numeric = (fn(logits + eps * direction) - fn(logits - eps * direction)) / (2 * eps)
        analytic = jnp.vdot(jax.jit(jax.grad(fn))(logits), direction)
        np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=1e-3)


# --- the loop --------------------------------------------------------------------------------------------------------


def test_loop_start_step_add():
    state = active.start(12, [0, 5])
    assert state.num_labelled == 2 and not state.pool_mask[[0, 5]].any()
    state, picked = active.step(state, POOL, 3, method="bald")
    assert state.num_labelled == 5 and not set(picked.tolist()) & {0, 5}
    scores = np.where(np.isin(np.arange(12), [0, 5]), -np.inf, np.asarray(active.bald(POOL)))
    np.testing.assert_array_equal(picked, np.argsort(-scores, kind="stable")[:3])
    state, picked = active.step(state, POOL, 5, method="batchbald")
    assert state.num_labelled == 10 and state.pool_mask.sum() == 2
    with pytest.raises(ValueError, match=r"`mask` leaves 2 candidates to choose from; at least 3"):
        active.step(state, POOL, 3, method="random", key=KEY)
    with pytest.raises(ValueError, match="labelled already"):
        active.add(state, [0])
    with pytest.raises(ValueError, match="`target_sample_probs` must be given with `method`='epig'"):
        active.select(POOL, 2, method="epig")


@pytest.mark.slow
def test_select_is_one_program_that_jits_and_is_deterministic():
    mask = jnp.arange(12) >= 2
    for method in ("max_entropy", "bald", "variation_ratios", "mean_std", "margin"):
        eager = active.select(POOL, 3, method=method, mask=mask)
        np.testing.assert_array_equal(eager, active.top_k(getattr(active, method)(POOL), 3, mask=mask))
    jitted = jax.jit(lambda p, k: active.select(p, 3, method="random", key=k, stochastic="power"))
    np.testing.assert_array_equal(jitted(POOL, KEY), jitted(POOL, KEY))
    assert jaxdrop.active is active
