"""Alpha dropout (SELU), feature alpha dropout, Gaussian dropout and Gaussian noise."""

import contextlib
import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.ad_checkpoint import print_saved_residuals
from stat_bounds import binomial_bound
from variant_checks import check_eager_and_jit, check_variant, normal, random_primitives

import jaxdrop
from jaxdrop.functional import _noise

N = 200_000


def _saved_residuals(f, *args) -> list[str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_saved_residuals(f, *args)
    return buffer.getvalue().splitlines()


# Traced rates: one compiled program serves every rate of the parametrised tests.
_ALPHA = jax.jit(lambda x, rate, key: jaxdrop.alpha_dropout(x, rate, key=key))
_DROPOUT = jax.jit(lambda x, rate, key: jaxdrop.dropout(x, rate, key=key))


def _torch_alpha_dropout(x, keep, rate):
    """PyTorch's formula (aten/src/ATen/native/Dropout.cpp, `_dropout_impl` with alpha) in NumPy float64."""
    alpha_prime = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717
    a = ((1 - rate) * (1 + rate * alpha_prime**2)) ** -0.5
    b = -a * alpha_prime * rate
    return a * (x * keep + alpha_prime * (1 - keep)) + b


def test_selu_constants_match_jax_selu():
    x = jnp.array([-3.0, -1.0, 2.0])
    expected = _noise.SELU_SCALE * jnp.where(x > 0, x, _noise.SELU_ALPHA * (jnp.exp(x) - 1))
    np.testing.assert_allclose(jax.nn.selu(x), expected, rtol=1e-6)
    assert _noise.ALPHA_PRIME == pytest.approx(-1.7580993408473766, rel=1e-15)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_alpha_dropout_matches_torch_formula_and_keep_fraction(rate):
    x = normal(1, (1000,))
    key = jax.random.key(2)
    y = _ALPHA(x, rate, key)
    # Same key, same mask as dropout on the shifted input: recover the keep decisions from it.
    keep = np.asarray(_DROPOUT(x - _noise.ALPHA_PRIME, rate, key) != 0).astype(np.float64)
    assert abs(keep.mean() - (1 - rate)) <= binomial_bound(keep.size, 1 - rate)
    np.testing.assert_allclose(np.asarray(y), _torch_alpha_dropout(np.asarray(x, np.float64), keep, rate), atol=2e-6)


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.7])
def test_alpha_dropout_keeps_zero_mean_unit_variance(rate):
    x = normal(1, (N,))
    y = np.asarray(_ALPHA(x, rate, jax.random.key(5)), np.float64)
    assert abs(y.mean()) <= 4 / np.sqrt(N)
    assert abs(y.var() - 1.0) <= 0.02


def test_alpha_dropout_traced_rate_matches_static():
    x = normal(1, (64,))
    key = jax.random.key(2)
    static = jaxdrop.alpha_dropout(x, 0.25, key=key)
    traced = jax.jit(lambda x, r, k: jaxdrop.alpha_dropout(x, r, key=k))(x, 0.25, key)
    np.testing.assert_allclose(traced, static, rtol=1e-5, atol=1e-6)


def test_feature_alpha_dropout_shares_decision_per_map_and_keeps_moments():
    x = normal(1, (256, 4, 4, 64))
    y = np.asarray(jax.jit(lambda x, k: jaxdrop.feature_alpha_dropout(x, 0.4, key=k))(x, jax.random.key(3)))
    drop_value = np.float32((1 - 0.4) / (1 + 0.4 * _noise.ALPHA_PRIME**2)) ** 0.5 * _noise.ALPHA_PRIME
    dropped = np.isclose(y, drop_value)
    assert (dropped == dropped[:, :1, :1, :]).all()  # whole feature maps
    assert abs(dropped[:, 0, 0, :].mean() - 0.4) <= binomial_bound(256 * 64, 0.4)
    assert abs(y.mean()) <= 0.02 and abs(y.var() - 1.0) <= 0.03


def test_gaussian_dropout_moments_expectation_and_gradient():
    rate = 0.3
    variance = rate / (1 - rate)
    x = normal(3, (16,))
    keys = jax.random.split(jax.random.key(0), 4000)
    fn = jax.jit(lambda x, k: jaxdrop.gaussian_dropout(x, rate, key=k))
    noise = np.asarray(jax.vmap(fn, in_axes=(None, 0))(x, keys) / x, np.float64)  # 64000 samples of N(1, variance)
    assert (noise != 0).all()  # no unit is silenced
    assert abs(noise.mean() - 1.0) <= 4 * np.sqrt(variance / noise.size)
    assert abs(noise.var() - variance) <= 0.03 * variance
    stderr = np.sqrt(variance / keys.shape[0])
    assert (np.abs(noise.mean(0) - 1.0) <= 4 * stderr).all()  # expectation preserved for every element
    # The gradient of sum(x * noise) is the noise itself, regenerated from the key.
    grad = jax.jit(jax.grad(lambda x, k: fn(x, k).sum()))(x, keys[0])
    np.testing.assert_allclose(grad, noise[0], rtol=1e-4)


def test_gaussian_noise_moments_gradient_traced_stddev_and_dtypes():
    noisy = jax.jit(lambda x, stddev, k: jaxdrop.gaussian_noise(x, stddev, key=k))
    key = jax.random.key(0)
    y = np.asarray(noisy(jnp.zeros(N), 0.5, key))
    assert abs(y.mean()) <= 4 * 0.5 / np.sqrt(N) and abs(y.std() - 0.5) <= 0.005
    np.testing.assert_array_equal(noisy(jnp.ones(N), 0.0, key), jnp.ones(N))
    assert np.isnan(np.asarray(noisy(jnp.ones(N), -1.0, key))).all()  # a traced negative stddev cannot raise
    x = normal(1, (N,))
    grad = jax.jit(jax.grad(lambda x: jnp.sum(jaxdrop.gaussian_noise(x, 0.5, key=key) * 3.0)))(x)
    np.testing.assert_array_equal(grad, jnp.full_like(x, 3.0))
    for dtype in (jnp.bfloat16, jnp.float16):
        y = noisy(x[:64].astype(dtype), 0.1, key)
        assert y.dtype == dtype and np.isfinite(np.asarray(y, np.float32)).all()
        np.testing.assert_allclose(np.asarray(y, np.float32), noisy(x[:64], 0.1, key), atol=0.02)
    assert jaxdrop.gaussian_noise(x, 0.0) is x
    assert jaxdrop.gaussian_noise(x, 0.5, deterministic=True) is x
    assert not random_primitives(lambda x: jaxdrop.gaussian_noise(x, 0.0), x)


@pytest.mark.parametrize("name", ["alpha_dropout", "gaussian_dropout", "gaussian_noise"])
def test_noise_is_not_stored_for_the_backward_pass(name):
    x = jnp.ones((64, 256))
    fn = getattr(jaxdrop, name)
    saved = _saved_residuals(lambda x: jnp.sum(fn(x, 0.5, key=jax.random.key(0)) ** 2), x)
    # Only the input (the square's own residual or the value needed by the mask) may be input-sized.
    assert sum("64,256" in line for line in saved) <= 1, saved
    assert not any("bool[64,256]" in line for line in saved), saved


@pytest.mark.parametrize("name", ["alpha_dropout", "feature_alpha_dropout", "gaussian_dropout"])
def test_common_properties(name):
    fn = getattr(jaxdrop, name)
    x = normal(3, (4, 3, 8))
    apply = lambda x, rate, key, det: fn(x, rate, key=key, deterministic=det)
    check_variant(apply, x)


class EagerAndJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("alpha_dropout", "alpha_dropout", "zeros"),
        ("feature_alpha_dropout", "feature_alpha_dropout", "zeros"),
        ("gaussian_dropout", "gaussian_dropout", "zeros"),
        ("gaussian_noise", "gaussian_noise", None),  # the rate is a standard deviation: 1 is no special case
    )
    def test_shape_dtype_and_edge_rates(self, name, at_one):
        fn = getattr(jaxdrop, name)
        apply = lambda x, rate, key, det: fn(x, rate, key=key, deterministic=det)
        check_eager_and_jit(self.variant, apply, normal(3, (4, 3, 8)), at_one=at_one)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: jaxdrop.alpha_dropout(jnp.ones(3), 1.5, key=jax.random.key(0)), ValueError, "`rate` must be in"),
        (lambda: jaxdrop.alpha_dropout(jnp.ones(3, jnp.int32), 0.5, key=jax.random.key(0)), TypeError, "`x` must"),
        (lambda: jaxdrop.alpha_dropout(jnp.ones(3), 0.5), ValueError, "`key` is required"),
        (lambda: jaxdrop.feature_alpha_dropout(jnp.ones(3), 0.5, key=jax.random.key(0)), ValueError, "rank >= 2"),
        (
            lambda: jaxdrop.feature_alpha_dropout(jnp.ones((2, 3)), 0.5, key=jax.random.key(0), channel_axis=2),
            ValueError,
            "`channel_axis` entry 2 is out of range",
        ),
        (lambda: jaxdrop.gaussian_dropout(jnp.ones(3), -0.1, key=jax.random.key(0)), ValueError, "`rate` must be"),
        (lambda: jaxdrop.gaussian_dropout(jnp.ones(3, jnp.int8), 0.5), TypeError, "floating-point dtype"),
        (lambda: jaxdrop.gaussian_noise(jnp.ones(3), -1.0, key=jax.random.key(0)), ValueError, "`stddev` must be"),
        (lambda: jaxdrop.gaussian_noise(jnp.ones(3), float("nan")), ValueError, "`stddev` must be a finite number"),
        (lambda: jaxdrop.gaussian_noise(jnp.ones(3), jnp.ones(2)), ValueError, "`stddev` must be a scalar"),
        (lambda: jaxdrop.gaussian_noise(jnp.ones(3), 0.1), ValueError, "`key` is required"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_bfloat16_stddev_is_accepted_eagerly_and_under_jit():
    x, key = jnp.zeros(64), jax.random.key(0)
    stddev = jnp.asarray(0.5, jnp.bfloat16)
    assert jaxdrop.gaussian_noise(x, stddev, deterministic=True) is x  # accepted eagerly (was a TypeError)
    outputs = jax.jit(
        lambda x, s: (
            jaxdrop.gaussian_noise(x, stddev, key=key),  # concrete: static
            jaxdrop.gaussian_noise(x, s, key=key),  # traced
            jaxdrop.gaussian_noise(x, 0.5, key=key),  # 0.5 is exact in bfloat16
        )
    )(x, stddev)
    chex.assert_trees_all_equal(*outputs)
