"""Numerical safety at the edges: rates exactly 0 and 1, subnormals, huge activations, low-precision overflow,
saturated logits, fully masked attention, and uncertainty metrics with tiny variances or zero probabilities.

What "safe" means here (docs/determinism.md, "Numerics"): no NaN from finite input, a value overflows to inf only
when the exact result exceeds the dtype's range, rate 1 gives exact zeros with zero (never NaN) gradients, rate 0
gives the input itself, and metrics are finite where the mathematical value is finite.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import uncertainty as unc

KEY = jax.random.key(0)

# Every public random function as fn(x, rate, key); x has rank 4 (batch, h, w, channels).
FUNCTIONS = {
    "dropout": lambda x, r, k: jaxdrop.dropout(x, r, key=k),
    "dropout/classic": lambda x, r, k: jaxdrop.dropout(x, r, key=k, inverted=False),
    "dropout/jax": lambda x, r, k: jaxdrop.dropout(x, r, key=k, generator="jax"),
    "spatial_dropout2d": lambda x, r, k: jaxdrop.spatial_dropout2d(x, r, key=k),
    "alpha_dropout": lambda x, r, k: jaxdrop.alpha_dropout(x, r, key=k),
    "feature_alpha_dropout": lambda x, r, k: jaxdrop.feature_alpha_dropout(x, r, key=k),
    "gaussian_dropout": lambda x, r, k: jaxdrop.gaussian_dropout(x, r, key=k),
    "drop_path": lambda x, r, k: jaxdrop.drop_path(x, r, key=k),
    "residual_drop_path": lambda x, r, k: jaxdrop.residual_drop_path(x, x, r, key=k),
    "dropblock2d": lambda x, r, k: jaxdrop.dropblock2d(x, r, key=k, block_size=2),
    "dropconnect": lambda x, r, k: jaxdrop.dropconnect(x, r, key=k),
    "locked_dropout": lambda x, r, k: jaxdrop.locked_dropout(x, r, key=k),
    "locked_mask": lambda x, r, k: jaxdrop.locked_mask(k, r, x.shape)(x),
    "token_dropout": lambda x, r, k: jaxdrop.token_dropout(x, r, key=k),
    "word_dropout": lambda x, r, k: jaxdrop.word_dropout(x, jnp.zeros(x.shape[:-1], jnp.int32), r, key=k),
    "dot_product_attention": lambda x, r, k: jaxdrop.dot_product_attention(x, x, x, dropout_rng=k, dropout_rate=r),
}
# At rate 0 and 1, what each function returns when it is not the input (rate 0) or zeros (rate 1):
# residual_drop_path(x, x) adds the skip path.
AT_RATE_ZERO = {"residual_drop_path": lambda x: 2 * x}
AT_RATE_ONE = {"residual_drop_path": lambda x: x}
# A traced rate of 0 runs the random path with scale 1: alpha dropout's affine map (x - a') + a' is exact only
# up to rounding, attention's matmul may be fused differently than without dropout.
ULP_CLOSE_AT_TRACED_ZERO = {"alpha_dropout", "feature_alpha_dropout", "dot_product_attention"}


def _x(dtype=jnp.float32, value=None):
    if value is not None:
        return jnp.full((2, 4, 4, 3), value, dtype)
    return (jax.random.normal(jax.random.key(1), (2, 4, 4, 3)) * 3).astype(dtype)


# One per family in the default run (the machine is shared); `pytest -m slow` runs every function.
DEFAULT_RUN = {
    "dropout/classic",
    "alpha_dropout",
    "gaussian_dropout",
    "residual_drop_path",
    "dropblock2d",
    "word_dropout",
    "dot_product_attention",
}


@pytest.mark.parametrize(
    "name", [name if name in DEFAULT_RUN else pytest.param(name, marks=pytest.mark.slow) for name in FUNCTIONS]
)
def test_rate_zero_is_identity_and_rate_one_is_exact_zeros_with_zero_gradients(name):
    fn = FUNCTIONS[name]
    x = _x()
    for rate in (0.0, jnp.float32(0.0)):
        y = (
            jax.jit(lambda x, k, rate=rate: fn(x, rate, k))(x, KEY)
            if isinstance(rate, float)
            else jax.jit(fn)(x, rate, KEY)
        )
        if name == "dot_product_attention":  # rate 0 is plain attention
            expected = jaxdrop.dot_product_attention(x, x, x, deterministic=True)
        else:
            expected = AT_RATE_ZERO.get(name, lambda x: x)(x)
        if isinstance(rate, float) and name != "dot_product_attention":
            np.testing.assert_array_equal(y, expected)  # a static 0 short-circuits: the input itself
        elif name in ULP_CLOSE_AT_TRACED_ZERO:
            np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(y, expected)
    for rate in (1.0, jnp.float32(1.0)):
        y = np.asarray(jax.jit(lambda x, k, rate=rate: fn(x, rate, k))(x, KEY))
        expected = AT_RATE_ONE.get(name, lambda x: jnp.zeros_like(x))
        if name == "dot_product_attention":
            np.testing.assert_array_equal(y, 0.0)  # every attention weight dropped
        else:
            np.testing.assert_array_equal(y, np.asarray(expected(x)))
        grad = jax.jit(jax.grad(lambda x, rate=rate: jnp.sum(fn(x, rate, KEY) * 2.0)))(x)
        assert not np.isnan(np.asarray(grad)).any(), name
        if name not in ("residual_drop_path", "dot_product_attention"):
            np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize(
    "name",
    ["dropout", "alpha_dropout", pytest.param("gaussian_dropout", marks=pytest.mark.slow), "dropblock2d", "concrete"],
)
def test_rates_next_to_zero_and_one_stay_finite(name):
    fn = FUNCTIONS.get(name) or (lambda x, r, k: jaxdrop.concrete_dropout(x, math.log(r) - math.log1p(-r), key=k))
    x = _x()
    for rate in (1e-7, 2**-32, 1 - 1e-7, 1 - 2**-24):
        y = np.asarray(fn(x, rate, KEY))
        assert np.isfinite(y).all(), (name, rate)
        grad = jax.grad(lambda x, rate=rate: jnp.sum(fn(x, rate, KEY)))(x)
        assert np.isfinite(np.asarray(grad)).all(), (name, rate)


def test_subnormal_inputs_never_become_nan():
    # XLA on CPU (and GPUs by default) flushes subnormals to zero in arithmetic, eagerly and under jit alike, so a
    # kept subnormal may come out as 0 (docs/determinism.md). Dropped elements are exactly 0; nothing is NaN.
    tiny = float(np.finfo(np.float32).smallest_subnormal) * 16
    for dtype, value in ((jnp.float32, tiny), (jnp.float16, 2.0**-20), (jnp.bfloat16, 1e-39)):
        x = jnp.full((4096,), value, dtype)
        y = np.asarray(jaxdrop.dropout(x, 0.5, key=KEY), np.float64)
        scaled = float(np.asarray(jnp.asarray(value, jnp.float32).astype(dtype), np.float64)) * 2
        assert set(np.unique(y).tolist()) <= {0.0, scaled}, (dtype, np.unique(y))
        keep = np.asarray(jaxdrop.dropout(jnp.ones(4096, dtype), 0.5, key=KEY)) != 0
        assert np.all(y[~keep] == 0.0)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_scaling_overflows_only_when_the_exact_result_does(dtype):
    # Inverted dropout multiplies by 1 / (1 - rate) in float32 and rounds once to the dtype: no intermediate
    # overflow, no double rounding. A result beyond the dtype's range is inf, as IEEE rounding says.
    big = float(jnp.finfo(dtype).max)
    x = jnp.array([big, -big, big * 0.5, big * 0.45, 1.0], dtype)
    for rate in (1e-4, 0.5):
        y = np.asarray(jaxdrop.dropout(jnp.tile(x, 512), rate, key=KEY).astype(jnp.float32)).reshape(512, 5)
        kept = y[np.all(y != 0, axis=1)]
        assert len(kept) > 0
        # float32 product of x and the float32 scale, one rounding to the dtype
        with np.errstate(over="ignore"):
            product = np.asarray(x, np.float32) * np.float32(1.0 / (1.0 - rate))
        rounded = np.asarray(jnp.asarray(product).astype(dtype).astype(jnp.float32))
        np.testing.assert_array_equal(kept, np.broadcast_to(rounded, kept.shape))
        # inf exactly where the exact result is beyond the largest finite value (plus half an ulp)
        exact = np.asarray(x, np.float64) / (1.0 - rate)
        half_ulp = big * float(jnp.finfo(dtype).eps) / 4
        np.testing.assert_array_equal(np.isinf(kept[0]), np.abs(exact) >= big + half_ulp)
    # (so float16's 65504 / (1 - 1e-4) = 65510.6 rounds back to 65504, while float32's max overflows: it has no
    # wider type to compute in)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize(
    "name",
    ["alpha_dropout", "gaussian_dropout", pytest.param("feature_alpha_dropout", marks=pytest.mark.slow), "dropblock2d"],
)
def test_low_precision_variants_finite_for_large_activations(name, dtype):
    # 1/4 of the dtype's range: scaled by at most 1/(1 - 0.1) (alpha, dropblock) or by Gaussian noise of
    # stddev 1/3 (so up to ~2.7x in 2**-15 of elements: here 96 elements)
    x = jnp.full((2, 4, 4, 3), float(jnp.finfo(dtype).max) / 4, dtype)
    y = np.asarray(FUNCTIONS[name](x, 0.1, KEY).astype(jnp.float32))
    assert y.dtype == np.float32 and np.isfinite(y).all(), name


def test_no_nan_for_inf_input_where_dropped_and_huge_finite_inputs():
    x = jnp.array([jnp.inf, -jnp.inf, 3e38, -3e38] * 256, jnp.float32)
    y = np.asarray(jaxdrop.dropout(x, 0.5, key=KEY))
    assert not np.isnan(y).any()
    assert np.all((y == 0) | (np.abs(y) == np.inf))  # 3e38 * 2 overflows float32: inf, never NaN
    # the drop decision does not depend on the value
    np.testing.assert_array_equal(y == 0, np.asarray(jaxdrop.dropout(jnp.ones_like(x), 0.5, key=KEY)) == 0)


def test_concrete_dropout_saturated_logits_finite_values_and_gradients():
    x = _x()
    for p_logit in (-60.0, -20.0, 20.0, 60.0):
        y = jaxdrop.concrete_dropout(x, p_logit, key=KEY)
        assert np.isfinite(np.asarray(y)).all(), p_logit
        grads = jax.grad(lambda x, p: jaxdrop.concrete_dropout(x, p, key=KEY).sum(), argnums=(0, 1))(x, p_logit)
        assert all(np.isfinite(np.asarray(g)).all() for g in grads), p_logit
        reg = jax.value_and_grad(
            lambda p: jaxdrop.concrete_dropout_regularizer(
                p, x, weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=3
            )
        )(p_logit)
        assert all(np.isfinite(np.asarray(v)) for v in reg), p_logit


@pytest.mark.slow  # the default suite's 10-minute budget on 2 cores (v2 masks made every compile slower)
def test_attention_fully_masked_rows_and_huge_bf16_logits_stay_finite():
    q = jax.random.normal(jax.random.key(2), (1, 6, 2, 4))
    mask = jnp.zeros((1, 2, 6, 6), bool).at[..., :3, :].set(True)  # queries 3-5 see nothing
    out = jaxdrop.dot_product_attention(q, q, q, mask=mask, dropout_rng=KEY, dropout_rate=0.5)
    assert np.isfinite(np.asarray(out)).all()
    big = (q * 1e3).astype(jnp.bfloat16)  # logits ~1e6: softmax in float32
    out = jaxdrop.dot_product_attention(big, big, big, dropout_rng=KEY, dropout_rate=0.5)
    assert out.dtype == jnp.bfloat16 and np.isfinite(np.asarray(out.astype(jnp.float32))).all()
    grad = jax.grad(
        lambda q: jaxdrop.dot_product_attention(q, q, q, mask=mask, dropout_rng=KEY, dropout_rate=0.3).sum()
    )(q)
    assert np.isfinite(np.asarray(grad)).all()


# --- uncertainty metrics ---------------------------------------------------------------------------------------------


def test_entropies_with_zero_probabilities_are_exact_and_finite():
    one_hot = jnp.eye(4)[None]  # (1 sample, 4 examples, 4 classes)
    np.testing.assert_array_equal(unc.predictive_entropy(one_hot[0]), 0.0)
    np.testing.assert_array_equal(unc.expected_entropy(jnp.concatenate([one_hot, one_hot])), 0.0)
    np.testing.assert_array_equal(unc.mutual_information(jnp.concatenate([one_hot, one_hot])), 0.0)
    disagree = jnp.stack([jnp.eye(4), jnp.roll(jnp.eye(4), 1, axis=1)])  # two confident samples that disagree
    np.testing.assert_allclose(unc.mutual_information(disagree), math.log(2), rtol=1e-6)
    # tiny (subnormal-adjacent) probabilities: no NaN, entropy near 0
    probs = jnp.array([[1.0 - 1e-30, 1e-30], [1.0, 1e-45]], jnp.float32)
    entropy = np.asarray(unc.predictive_entropy(probs))
    assert np.isfinite(entropy).all() and (entropy >= 0).all() and entropy.max() < 1e-27
    # nll of a zero probability is large but finite (clamped at float32 tiny)
    assert np.isfinite(float(unc.nll(jnp.array([[1.0, 0.0]]), jnp.array([1]))))


def test_metrics_of_low_precision_probabilities_accumulate_in_float32():
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(3), (16, 200, 10)), -1)
    reference = np.asarray(unc.mutual_information(probs))
    for dtype in (jnp.bfloat16, jnp.float16):
        low = probs.astype(dtype)
        low = low / low.sum(-1, keepdims=True)
        mi = unc.mutual_information(low)
        assert mi.dtype == jnp.float32
        np.testing.assert_allclose(mi, reference, atol=3e-2)


def test_gaussian_log_likelihood_tiny_variances_in_log_space():
    samples = jnp.zeros((4, 3))
    targets = jnp.array([0.0, 1e-3, 1.0])
    for log_variance in (-20.0, -60.0, -80.0):
        ll = float(unc.gaussian_log_likelihood(samples, targets, log_variance=jnp.full((4, 3), log_variance)))
        d2 = np.square(np.asarray(targets, np.float64))
        expected = np.mean(-0.5 * (math.log(2 * math.pi) + log_variance + d2 * math.exp(-log_variance)))
        assert math.isfinite(ll) or expected < -3e38, log_variance
        if math.isfinite(expected) and abs(expected) < 1e30:
            assert math.isclose(ll, expected, rel_tol=1e-5), (log_variance, ll, expected)
    # a huge precision (1e30) at the target itself: log density 0.5 log(tau / 2 pi), no overflow to NaN
    ll = float(unc.gaussian_log_likelihood(samples, jnp.zeros(3), tau=1e30))
    assert math.isclose(ll, 0.5 * math.log(1e30 / (2 * math.pi)), rel_tol=1e-6)
    # a far target under a tiny variance: a very negative, finite log-likelihood (logsumexp, no underflow to -inf)
    ll = float(unc.gaussian_log_likelihood(samples, jnp.full(3, 10.0), tau=1e6))
    assert math.isfinite(ll) and math.isclose(ll, -0.5 * 1e6 * 100 + 0.5 * math.log(1e6 / (2 * math.pi)), rel_tol=1e-6)


def test_gaussian_log_likelihood_log_variance_below_minus_88_at_the_mean():
    samples = jnp.zeros((4, 3))
    ll = float(unc.gaussian_log_likelihood(samples, jnp.zeros(3), log_variance=jnp.full((4, 3), -90.0)))
    assert math.isclose(ll, -0.5 * (math.log(2 * math.pi) - 90.0), rel_tol=1e-6)


def test_mixture_log_likelihood_stable_with_many_samples():
    # logsumexp over 4096 samples whose densities underflow individually (exp(-5e5) == 0 in float64 too)
    samples = jnp.linspace(-1.0, 1.0, 4096)[:, None]
    ll = float(unc.gaussian_log_likelihood(samples, jnp.array([1000.0]), tau=1.0))
    expected = -0.5 * math.log(2 * math.pi) - 0.5 * (1000.0 - 1.0) ** 2  # the nearest sample dominates
    assert math.isfinite(ll) and abs(ll - expected) < 20.0


def test_mc_predict_streaming_log_likelihood_matches_materialised():
    def regressor(key, x):
        return jaxdrop.dropout(x, 0.5, key=key) * 3.0

    x = jnp.linspace(-1.0, 1.0, 8)
    targets = x * 2.0
    streamed = jaxdrop.mc.predict(
        regressor, x, key=KEY, num_samples=64, chunk_size=16, task="regression", targets=targets, tau=1e4
    )
    samples = jaxdrop.mc.sample(regressor, x, key=KEY, num_samples=64)
    direct = unc.gaussian_log_likelihood(samples, targets, tau=1e4)
    value = np.asarray(streamed.log_likelihood)
    assert np.isfinite(value).all()
    np.testing.assert_allclose(np.mean(value), float(direct), rtol=1e-4)


# --- float64 inputs (x64 mode) are scaled in float64 ------------------------------------------------------------------
# Before: the scale was cast to float32, so dropout(float64 ones, 0.1) kept 1.1111111640930176, not 1/0.9.

X64_KEPT_SCALE = {
    "dropout": lambda x, r: jaxdrop.dropout(x, r, key=KEY),
    "dropconnect": lambda x, r: jaxdrop.dropconnect(x, r, key=KEY),
    "drop_path": lambda x, r: jaxdrop.drop_path(x, r, key=KEY),
    "spatial_dropout": lambda x, r: jaxdrop.spatial_dropout(x, r, key=KEY),
    "locked_dropout": lambda x, r: jaxdrop.locked_dropout(x, r, key=KEY),
    "token_dropout": lambda x, r: jaxdrop.token_dropout(x, r, key=KEY),
    "locked_mask": lambda x, r: jaxdrop.locked_mask(KEY, r, x.shape)(x),
    "word_dropout": lambda x, r: jaxdrop.word_dropout(x, jnp.zeros(x.shape[:-1], jnp.int32), r, key=KEY),
}


X64_DEFAULT_RUN = {"dropout", "word_dropout"}  # `pytest -m slow` runs them all


@pytest.mark.parametrize(
    "name", [n if n in X64_DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow) for n in X64_KEPT_SCALE]
)
def test_float64_inputs_are_scaled_in_float64(name):
    fn = X64_KEPT_SCALE[name]
    with jax.enable_x64(True):
        x = jnp.ones((8, 16, 4), jnp.float64)
        for y in (jax.jit(lambda x: fn(x, 0.1))(x), jax.jit(fn)(x, jnp.float64(0.1))):  # a static, a traced rate
            assert y.dtype == jnp.float64
            values = set(np.unique(np.asarray(y)).tolist())
            assert 1 / 0.9 in values and values <= {0.0, 1 / 0.9}, (name, values)


def test_float64_alpha_and_gaussian_noise_compute_in_float64():
    from jaxdrop.functional._noise import ALPHA_PRIME

    with jax.enable_x64(True):
        ones = jnp.ones(4096, jnp.float64)
        alpha, noise, gaussian = jax.jit(
            lambda x: (
                jaxdrop.alpha_dropout(x, 0.1, key=KEY),
                jaxdrop.gaussian_noise(0 * x, 0.3, key=KEY),
                jaxdrop.gaussian_dropout(x, 0.1, key=KEY),
            )
        )(ones)
        # Alpha dropout: kept units a (1 - a') / (1 - p) + a a', dropped ones a a', with a in float64.
        affine = ((1 - 0.1) / (1 + 0.1 * ALPHA_PRIME**2)) ** 0.5
        expected = sorted({affine * (1 - ALPHA_PRIME) / 0.9 + affine * ALPHA_PRIME, affine * ALPHA_PRIME})
        np.testing.assert_allclose(sorted(np.unique(alpha)), expected, rtol=1e-15)
        # Gaussian noise and dropout add level * n, n a float32 normal: with a float32 level, (y - x) / level
        # would be off float32's grid by about 1e-8.
        for y, level, shift in ((noise, 0.3, 0.0), (gaussian, (0.1 / 0.9) ** 0.5, 1.0)):
            standard = (np.asarray(y) - shift) / level
            np.testing.assert_allclose(standard, standard.astype(np.float32), rtol=1e-13, atol=1e-13)


@pytest.mark.slow
def test_float64_dropblock_and_attention_compute_in_float64():
    with jax.enable_x64(True):
        # DropBlock: the renormaliser count / kept, in float64.
        y = np.asarray(jax.jit(lambda x: jaxdrop.dropblock(x, 0.2, key=KEY, block_size=2))(jnp.ones((2, 8, 8, 3))))
        assert set(np.unique(y)) == {0.0, y.size / np.count_nonzero(y)}
        # Attention: uniform weights 1/4 (exact), kept ones scaled by 1 / 0.9 in float64.
        q, k, v = (
            jnp.full(shape, fill, jnp.float64)
            for shape, fill in (((1, 3, 1, 2), 0), ((1, 4, 1, 2), 0), ((1, 4, 1, 2), 1))
        )
        out = jax.jit(lambda q, k, v: jaxdrop.dot_product_attention(q, k, v, dropout_rng=KEY, dropout_rate=0.1))(
            q, k, v
        )
        assert out.dtype == jnp.float64
        assert set(np.unique(out)) <= {kept * 0.25 / 0.9 for kept in range(5)}


@pytest.mark.slow
def test_float64_concrete_dropout_matches_a_float64_reference():
    from jaxdrop import _masks
    from jaxdrop.functional._concrete import EPSILON

    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).standard_normal(512), jnp.float64)
        logit, temperature = -1.3, 0.1
        y = jax.jit(lambda x, logit: jaxdrop.concrete_dropout(x, logit, key=KEY, temperature=temperature))
        y = np.asarray(y(x, jnp.float64(logit)))
        u = np.asarray(_masks.uniform(KEY, x.shape, "fast"), np.float64)
        p = 1 / (1 + np.exp(-logit))
        drop_logit = np.log(p + EPSILON) - np.log(1 - p + EPSILON) + np.log(u + EPSILON) - np.log(1 - u + EPSILON)
        retain = 1 / (1 + np.exp(drop_logit / temperature))
        np.testing.assert_allclose(y, np.asarray(x) * retain / (1 - p), rtol=1e-12, atol=1e-20)
