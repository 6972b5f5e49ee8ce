"""Property-based tests (hypothesis) over shapes, ranks, axes, broadcast dims, dtypes and rates, for every public
function: output shape and dtype, zeros exactly where the mask is zero (and nowhere else), expectation preserved,
no NaN/Inf created from finite inputs, finite gradients; and the ranges and identities of the uncertainty metrics.

Shapes are drawn from a few sizes so compiled programs are reused; keys come from drawn integer seeds. Each
property runs a handful of examples in the default run (the file's budget is ~30 s); set
``JAXDROP_PROPERTY_EXAMPLES=200`` for a thorough run.
"""

from __future__ import annotations

import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxdrop
from jaxdrop import _masks
from jaxdrop import uncertainty as unc
from jaxdrop.functional import _core

EXAMPLES = int(os.environ.get("JAXDROP_PROPERTY_EXAMPLES", "3"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
METRIC_SETTINGS = settings(max_examples=2 * EXAMPLES, deadline=None, derandomize=True)
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
SIZES = st.sampled_from([1, 3, 4])
RATES = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.1, 0.9]), st.floats(0.0, 1.0, allow_nan=False))


@st.composite
def inputs(draw, min_rank=1, max_rank=4):
    """A finite, nonzero input (|x| in [0.5, 4]), its dtype and a key."""
    shape = tuple(draw(st.lists(SIZES, min_size=min_rank, max_size=max_rank)))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 4.0, shape) * rng.choice([-1.0, 1.0], shape)
    return jnp.asarray(x, dtype), jax.random.key(seed)


def _expected_dropout(x, rate, key, shared_axes, generator="fast", inverted=True):
    """The definition: keep-mask of the shared shape, kept elements scaled once in float32, dropped exactly 0."""
    if rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    keep = _masks.keep_mask(key, rate, _core.mask_shape(x.shape, shared_axes), generator)
    scale = 1.0 / (1.0 - rate) if inverted else 1.0
    return jnp.where(keep, (x.astype(jnp.float32) * jnp.float32(scale)).astype(x.dtype), jnp.zeros((), x.dtype))


def _bitwise_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def _finite(*arrays):
    for array in arrays:
        assert np.isfinite(np.asarray(array, np.float32)).all()


@SETTINGS
@given(inputs(), RATES, st.data(), st.sampled_from(["fast", "jax"]), st.booleans())
def test_dropout_is_its_definition(x_key, rate, data, generator, inverted):
    x, key = x_key
    axes = data.draw(st.sets(st.integers(-x.ndim, x.ndim - 1), max_size=x.ndim))
    shared = tuple(sorted({axis % x.ndim for axis in axes}))
    if len(shared) != len(axes):
        return  # repeated axes (-1 and ndim-1) are an error, tested in test_bad_input
    y = jaxdrop.dropout(x, rate, key=key, broadcast_dims=tuple(axes), generator=generator, inverted=inverted)
    _bitwise_equal(y, _expected_dropout(x, rate, key, shared, generator, inverted))
    # zeros exactly where dropped: x has no zeros, so y == 0 is the dropped set, shared along the broadcast axes
    dropped = np.asarray(y == 0)
    for axis in shared:
        assert np.all(dropped == dropped.take([0], axis=axis))
    _finite(y)
    grad = jax.grad(
        lambda x: jnp.sum(jaxdrop.dropout(x, rate, key=key, broadcast_dims=tuple(axes)).astype(jnp.float32))
    )(x)
    assert grad.dtype == x.dtype
    _finite(grad)
    if 0.0 < rate < 1.0 and inverted:
        np.testing.assert_array_equal(
            np.asarray(grad) == 0, np.asarray(jaxdrop.dropout(x, rate, key=key, broadcast_dims=tuple(axes))) == 0
        )


def _mask_variants(x, rate, key, data):
    """(name, output, shared axes of the equivalent dropout) for the variants that are dropout with shared axes."""
    rank = x.ndim
    out = [("dropconnect", jaxdrop.dropconnect(x, rate, key=key), ())]
    out.append(("locked_mask", jaxdrop.locked_mask(key, rate, x.shape)(x), ()))
    batch_axis = data.draw(st.integers(-rank, rank - 1))
    out.append(
        (
            "drop_path",
            jaxdrop.drop_path(x, rate, key=key, batch_axis=batch_axis),
            tuple(a for a in range(rank) if a != batch_axis % rank),
        )
    )
    out.append(("drop_path/batch", jaxdrop.drop_path(x, rate, key=key, mode="batch"), tuple(range(rank))))
    if rank >= 2:
        time_axis = data.draw(st.integers(-rank, rank - 1))
        out.append(
            ("locked_dropout", jaxdrop.locked_dropout(x, rate, key=key, time_axis=time_axis), (time_axis % rank,))
        )
        out.append(
            ("token_dropout", jaxdrop.token_dropout(x, rate, key=key, feature_axis=time_axis), (time_axis % rank,))
        )
        channel_axis = data.draw(st.integers(1, rank - 1))
        spatial = tuple(a for a in range(1, rank) if a != channel_axis)
        out.append(("spatial_dropout", jaxdrop.spatial_dropout(x, rate, key=key, channel_axis=channel_axis), spatial))
        if 3 <= rank <= 5:
            nd = getattr(jaxdrop, f"spatial_dropout{rank - 2}d")
            out.append(("spatial_dropoutNd", nd(x, rate, key=key), tuple(range(1, rank - 1))))
    return out


@pytest.mark.slow  # the default suite's 10-minute budget on 2 cores
@SETTINGS
@given(inputs(), RATES, st.data())
def test_mask_variants_are_dropout_with_shared_axes(x_key, rate, data):
    x, key = x_key
    for name, y, shared in _mask_variants(x, rate, key, data):
        assert y.shape == x.shape and y.dtype == x.dtype, name
        _bitwise_equal(y, _expected_dropout(x, rate, key, shared))
        _finite(y)


@SETTINGS
@given(inputs(min_rank=2, max_rank=3), RATES, st.integers(0, 4))
def test_word_dropout_drops_each_word_type_everywhere_in_its_sequence(x_key, rate, vocabulary):
    x, key = x_key
    ids = jnp.asarray(np.random.default_rng(vocabulary).integers(0, vocabulary + 1, x.shape[:-1]), jnp.int32)
    y = jaxdrop.word_dropout(x, ids, rate, key=key)
    assert y.shape == x.shape and y.dtype == x.dtype
    _finite(y)
    dropped = np.asarray(y == 0).all(-1)  # a token vector is dropped whole
    np.testing.assert_array_equal(np.asarray(y == 0).any(-1), dropped)
    ids_np = np.asarray(ids).reshape(-1, ids.shape[-1])
    for sequence, flags in zip(ids_np, dropped.reshape(-1, ids.shape[-1]), strict=True):
        for token in np.unique(sequence):
            assert len(set(flags[sequence == token].tolist())) == 1  # all or none of one word type
    if 0.0 < rate < 1.0:
        kept = ~dropped[..., None]
        expected = (x.astype(jnp.float32) * jnp.float32(1 / (1 - rate))).astype(x.dtype)
        np.testing.assert_array_equal(np.asarray(y), np.where(kept, np.asarray(expected), 0))


@pytest.mark.slow  # the default suite's 10-minute budget on 2 cores
@SETTINGS
@given(inputs(min_rank=3, max_rank=4), st.floats(0.0, 1.0), st.data())
def test_dropblock_zeros_whole_blocks_and_renormalises(x_key, rate, data):
    x, key = x_key
    spatial_sizes = x.shape[1:-1]
    block = data.draw(st.integers(1, min(spatial_sizes)))
    y = jaxdrop.dropblock(x, rate, key=key, block_size=block)
    assert y.shape == x.shape and y.dtype == x.dtype
    _finite(y)
    dropped = np.asarray(y == 0)
    if dropped.all() or not dropped.any():
        return
    scale = np.asarray(y, np.float32)[~dropped] / np.asarray(x, np.float32)[~dropped]
    # one renormaliser count / kept (within the dtype's rounding), and it is >= 1
    assert np.allclose(scale, scale[0], rtol=float(jnp.finfo(x.dtype).eps) * 2)
    np.testing.assert_allclose(scale[0], dropped.size / (~dropped).sum(), rtol=float(jnp.finfo(x.dtype).eps) * 2)


@SETTINGS
@given(
    inputs(),
    RATES,
    st.sampled_from(
        ["alpha_dropout", "gaussian_dropout", "gaussian_noise", "feature_alpha_dropout", "concrete_dropout"]
    ),
)
def test_noise_variants_shape_dtype_finite_values_and_gradients(x_key, rate, name):
    x, key = x_key
    if name == "feature_alpha_dropout" and x.ndim < 2:
        return
    fn = {
        "alpha_dropout": lambda x: jaxdrop.alpha_dropout(x, rate, key=key),
        "feature_alpha_dropout": lambda x: jaxdrop.feature_alpha_dropout(x, rate, key=key),
        "gaussian_dropout": lambda x: jaxdrop.gaussian_dropout(x, rate, key=key),
        "gaussian_noise": lambda x: jaxdrop.gaussian_noise(x, rate, key=key),
        # p_logit over the whole real line where rates 0 and 1 sit at +-inf: clamp to +-30
        "concrete_dropout": lambda x: jaxdrop.concrete_dropout(
            x, float(np.clip(np.log(rate + 1e-30) - np.log1p(-rate + 1e-30), -30, 30)), key=key
        ),
    }[name]
    y = fn(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    _finite(y)
    _finite(jax.grad(lambda x: jnp.sum(fn(x).astype(jnp.float32)))(x))
    if name == "alpha_dropout" and 0.0 < rate < 1.0:
        # dropped units share one value, a(alpha') + b, where `dropout` with the same key drops
        dropped = np.asarray(jaxdrop.dropout(jnp.ones(x.shape), rate, key=key) == 0)
        if dropped.any():
            assert len(np.unique(np.asarray(y)[dropped])) == 1


@SETTINGS
@given(
    st.sampled_from(
        [
            "dropout",
            "spatial_dropout",
            "gaussian_dropout",
            "gaussian_noise",
            "drop_path",
            "dropblock",
            "word_dropout",
            "locked_mask",
        ]
    ),
    st.sampled_from([0.1, 0.5, 0.8]),
    st.integers(0, 2**31 - 1),
)
def test_expectation_preserved_over_keys(name, rate, seed):
    x = jnp.asarray(np.random.default_rng(seed).uniform(0.5, 2.0, (2, 3, 4)), jnp.float32)
    fn = {
        "dropout": lambda k: jaxdrop.dropout(x, rate, key=k, broadcast_dims=(1,)),
        "spatial_dropout": lambda k: jaxdrop.spatial_dropout(x, rate, key=k),
        "gaussian_dropout": lambda k: jaxdrop.gaussian_dropout(x, rate, key=k),
        "gaussian_noise": lambda k: jaxdrop.gaussian_noise(x, rate, key=k),
        "drop_path": lambda k: jaxdrop.drop_path(x, rate, key=k),
        "dropblock": lambda k: jaxdrop.dropblock(x, rate, key=k, block_size=1),
        "word_dropout": lambda k: jaxdrop.word_dropout(x, jnp.zeros((2, 3), jnp.int32), rate, key=k),
        "locked_mask": lambda k: jaxdrop.locked_mask(k, rate, x.shape)(x),
    }[name]
    num_keys = 4096
    samples = jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), num_keys))
    mean = np.asarray(samples.mean(0))
    # per-element std of the mean: x sqrt(rate / (1 - rate) / n) for dropout-like noise, stddev / sqrt(n) for additive
    spread = (
        rate / math.sqrt(num_keys)
        if name == "gaussian_noise"
        else np.asarray(x) * math.sqrt(rate / (1 - rate) / num_keys)
    )
    if name == "dropblock":  # renormalised by the kept count of each draw: unbiased only to O(1/size)
        spread = spread + np.asarray(x) * 0.1
    assert np.all(np.abs(mean - np.asarray(x)) <= 6 * spread + 1e-6), (name, np.abs(mean - np.asarray(x)).max())


@pytest.mark.slow  # the default suite's 10-minute budget on 2 cores
@SETTINGS
@given(
    st.just(2),
    st.sampled_from([1, 4]),
    st.sampled_from([1, 2]),
    st.just(4),
    st.sampled_from(DTYPES),
    RATES,
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_attention_shape_dtype_finite_and_rate_zero_is_plain(batch, length, heads, depth, dtype, rate, broadcast, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(batch, length, heads, depth)), dtype) for _ in range(3))
    key = jax.random.key(seed)

    def attend(q, rate=rate):
        return jaxdrop.dot_product_attention(q, k, v, dropout_rng=key, dropout_rate=rate, broadcast_dropout=broadcast)

    out = attend(q)
    assert out.shape == q.shape and out.dtype == dtype
    _finite(out, jax.grad(lambda q: attend(q).astype(jnp.float32).sum())(q))
    if rate == 0.0:
        _bitwise_equal(out, jaxdrop.dot_product_attention(q, k, v, deterministic=True))


@pytest.mark.slow  # the default suite's 10-minute budget on 2 cores
@SETTINGS
@given(st.floats(-30.0, 30.0), st.sampled_from([0.1, 2 / 3, 1.0]), inputs())
def test_concrete_dropout_gradients_finite_for_any_logit(p_logit, temperature, x_key):
    x, key = x_key
    value, grads = jax.value_and_grad(
        lambda x, p: jaxdrop.concrete_dropout(x, p, key=key, temperature=temperature).astype(jnp.float32).sum(),
        argnums=(0, 1),
    )(x, jnp.float32(p_logit))
    _finite(value, *grads)
    regularizer = jax.grad(
        lambda p: jaxdrop.concrete_dropout_regularizer(
            p, x, weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=max(x.shape[-1], 1)
        )
    )(jnp.float32(p_logit))
    _finite(regularizer)


@SETTINGS
@given(st.floats(0.0, 1.0), st.integers(1, 12))
def test_linear_drop_path_rates_monotone_from_zero_to_max(max_rate, depth):
    rates = jaxdrop.linear_drop_path_rates(max_rate, depth)
    assert len(rates) == depth and rates[0] == 0.0
    assert all(0.0 <= r <= max_rate + 1e-12 for r in rates)
    assert all(b >= a for a, b in itertools.pairwise(rates))
    if depth > 1:
        assert math.isclose(rates[-1], max_rate)


# --- uncertainty metrics -----------------------------------------------------------------------------------------


@st.composite
def sample_probs(draw):
    num_samples, batch, classes = draw(st.sampled_from([(1, 1, 1), (3, 4, 2), (5, 8, 5), (2, 1, 3)]))
    seed = draw(st.integers(0, 2**31 - 1))
    sharpness = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))  # up to one-hot-like samples
    logits = np.random.default_rng(seed).normal(size=(num_samples, batch, classes)) * sharpness
    dtype = draw(st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]))
    probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1).astype(dtype)
    return probs, seed


@pytest.mark.slow  # the default suite's 10-minute budget on 2 cores
@METRIC_SETTINGS
@given(sample_probs())
def test_classification_metrics_ranges_and_identities(probs_seed):
    sample_probs_, seed = probs_seed
    num_samples, batch, classes = sample_probs_.shape
    mean = sample_probs_.astype(jnp.float32).mean(0)
    mean = mean / mean.sum(-1, keepdims=True)
    log_k = math.log(classes)
    tol = 2e-2 if sample_probs_.dtype != jnp.float32 else 1e-5
    total = np.asarray(unc.predictive_entropy(mean))
    aleatoric = np.asarray(unc.expected_entropy(sample_probs_))
    epistemic = np.asarray(unc.mutual_information(sample_probs_))
    for values in (total, aleatoric, epistemic):
        assert values.shape == (batch,) and values.dtype == np.float32
        assert np.all(values >= 0) and np.all(values <= log_k + tol)
    np.testing.assert_allclose(epistemic, np.maximum(total - aleatoric, 0), atol=tol)  # BALD = H - E[H]
    ratio = np.asarray(unc.variation_ratio(sample_probs_))
    assert np.all(ratio >= 0) and np.all(ratio <= 1 - 1 / classes + 1e-6)
    gap = np.asarray(unc.margin(mean))
    assert np.all(gap >= -1e-6) and np.all(gap <= 1 + 1e-6)
    labels = jnp.asarray(np.random.default_rng(seed).integers(0, classes, batch), jnp.int32)
    assert 0.0 <= float(unc.nll(mean, labels)) < 100.0
    assert 0.0 <= float(unc.brier_score(mean, labels)) <= 2.0 + 1e-6
    for binning in ("uniform", "quantile"):
        assert 0.0 <= float(unc.expected_calibration_error(mean, labels, num_bins=5, binning=binning)) <= 1.0 + 1e-6
    if batch >= 1 and num_samples >= 1:
        k = max(1, batch // 2)
        top = np.asarray(unc.bald_top_k(sample_probs_, k))
        assert len(set(top.tolist())) == k and np.all(epistemic[top] >= np.sort(epistemic)[::-1][k - 1] - 1e-6)


@METRIC_SETTINGS
@given(st.sampled_from([1, 7, 20]), st.sampled_from([1, 5, 20]), st.integers(0, 2**31 - 1), st.booleans())
def test_selective_metrics_ranges_and_symmetry(n_in, n_out, seed, ties):
    rng = np.random.default_rng(seed)
    draw = (lambda n: rng.integers(0, 3, n).astype(np.float32)) if ties else (lambda n: rng.normal(size=n))
    scores_in, scores_out = jnp.asarray(draw(n_in)), jnp.asarray(draw(n_out))
    auroc = float(unc.ood_auroc(scores_in, scores_out))
    assert 0.0 <= auroc <= 1.0
    assert math.isclose(auroc + float(unc.ood_auroc(scores_out, scores_in)), 1.0, abs_tol=1e-5)
    errors = jnp.asarray(rng.integers(0, 2, n_in))
    coverage, risk = unc.risk_coverage_curve(scores_in, errors)
    assert np.all((np.asarray(risk) >= 0) & (np.asarray(risk) <= 1)) and math.isclose(float(coverage[-1]), 1.0)
    assert 0.0 <= float(unc.aurc(scores_in, errors)) <= 1.0
    budget = int(rng.integers(0, n_in + 1))
    flagged = np.asarray(unc.flag_for_review(scores_in, budget))
    assert flagged.sum() == budget
    if 0 < budget < n_in:  # the flagged are the most uncertain
        assert np.asarray(scores_in)[flagged].min() >= np.asarray(scores_in)[~flagged].max()


@METRIC_SETTINGS
@given(
    st.sampled_from([1, 4]),
    st.sampled_from([1, 3]),
    st.floats(-40.0, 40.0),
    st.floats(1e-3, 1e3),
    st.integers(0, 2**31 - 1),
)
def test_regression_metrics_finite_and_consistent(num_samples, size, log_variance, scale, seed):
    rng = np.random.default_rng(seed)
    samples = jnp.asarray(rng.normal(size=(num_samples, size)) * scale, jnp.float32)
    targets = jnp.asarray(rng.normal(size=size) * scale, jnp.float32)
    log_var = jnp.full((num_samples, size), log_variance, jnp.float32)
    epistemic = np.asarray(unc.epistemic_variance(samples))
    total = np.asarray(unc.predictive_variance(samples, log_variance=log_var))
    assert np.all(epistemic >= 0) and np.all(total >= epistemic)
    np.testing.assert_allclose(total, epistemic + np.asarray(unc.aleatoric_variance(log_var)), rtol=1e-5)
    ll = float(unc.gaussian_log_likelihood(samples, targets, log_variance=log_var))
    assert math.isfinite(ll)
    # the mixture's log-likelihood is at most that of its best component, at least its mean component's
    component = -0.5 * (
        math.log(2 * math.pi)
        + log_variance
        + (np.asarray(targets) - np.asarray(samples)) ** 2 * math.exp(-log_variance)
    )
    per_point = np.asarray(component, np.float64)
    assert ll <= per_point.max(0).mean() + 1e-3 * (1 + abs(ll))
    assert ll >= per_point.mean(0).mean() - 1e-3 * (1 + abs(ll))
    assert float(unc.rmse(samples[0], targets)) >= 0
