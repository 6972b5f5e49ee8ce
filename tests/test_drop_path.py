"""Drop path / stochastic depth: whole examples or the whole batch, linear rates, residual helper."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from stat_bounds import binomial_bound
from variant_checks import check_eager_and_jit, check_variant, normal

import jaxdrop


def test_row_mode_drops_whole_examples_with_expected_fraction():
    rate = 0.25
    x = jnp.ones((2000, 3, 4))
    y = np.asarray(jax.jit(lambda x, k: jaxdrop.drop_path(x, rate, key=k))(x, jax.random.key(0)))
    assert (y == y[:, :1, :1]).all()  # one decision per example
    assert set(np.unique(y).tolist()) == {0.0, np.float32(1 / (1 - rate))}
    dropped = y[:, 0, 0] == 0
    assert abs(dropped.mean() - rate) <= binomial_bound(dropped.size, rate)


def test_batch_axis_and_batch_mode():
    x = jnp.ones((3, 500, 2))  # batch on axis 1
    y = np.asarray(jaxdrop.drop_path(x, 0.5, key=jax.random.key(0), batch_axis=1))
    assert (y == y[:1, :, :1]).all() and 0 < (y[0, :, 0] == 0).mean() < 1
    keys = jax.random.split(jax.random.key(1), 400)
    whole = jax.jit(jax.vmap(lambda k: jaxdrop.drop_path(jnp.ones((4, 3)), 0.3, key=k, mode="batch")))(keys)
    whole = np.asarray(whole)
    assert (whole == whole[:, :1, :1]).all()  # one decision for the whole input
    dropped = whole[:, 0, 0] == 0
    assert abs(dropped.mean() - 0.3) <= binomial_bound(dropped.size, 0.3)


def test_scale_by_keep_false_and_expectation():
    x = jnp.ones((4000, 2))
    unscaled = np.asarray(jaxdrop.drop_path(x, 0.5, key=jax.random.key(0), scale_by_keep=False))
    assert set(np.unique(unscaled).tolist()) == {0.0, 1.0}
    assert jaxdrop.drop_path(x, 0.5, deterministic=True, scale_by_keep=False) is x  # no rescaling at inference
    scaled = np.asarray(jaxdrop.drop_path(x, 0.5, key=jax.random.key(0)))
    assert abs(scaled.mean() - 1.0) <= 4 * np.sqrt(1.0 / 4000)  # expectation preserved (variance 1 per example)


def test_linear_rates():
    assert jaxdrop.linear_drop_path_rates(0.3, 4) == pytest.approx((0.0, 0.1, 0.2, 0.3))
    assert jaxdrop.linear_drop_path_rates(0.3, 1) == (0.0,)
    assert all(isinstance(rate, float) for rate in jaxdrop.linear_drop_path_rates(0.2, 12))
    traced = jax.jit(lambda r: jaxdrop.linear_drop_path_rates(r, 3))(0.4)
    np.testing.assert_allclose(traced, [0.0, 0.2, 0.4], rtol=1e-6)


def test_residual_never_drops_the_skip_connection():
    residual = normal(1, (1000, 4))
    branch = jnp.ones((1000, 4))
    fn = jax.jit(lambda r, b, k: jaxdrop.residual_drop_path(r, b, 0.5, key=k))
    out = np.asarray(fn(residual, branch, jax.random.key(0)))
    added = out - np.asarray(residual)
    per_example = np.isclose(added, 0.0, atol=1e-6).all(1) | np.isclose(added, 2.0, atol=1e-6).all(1)
    assert per_example.all()  # each example: the skip alone, or skip + branch / (1 - rate)
    assert 0.4 < np.isclose(added[:, 0], 0.0, atol=1e-6).mean() < 0.6
    grad_residual = jax.grad(lambda r: fn(r, branch, jax.random.key(0)).sum())(residual)
    np.testing.assert_array_equal(grad_residual, jnp.ones_like(residual))  # the skip path is always there
    np.testing.assert_array_equal(jaxdrop.residual_drop_path(residual, branch, 1.0), residual)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_common_properties(mode):
    x = normal(3, (8, 3, 4))
    apply = lambda x, rate, key, det: jaxdrop.drop_path(x, rate, key=key, deterministic=det, mode=mode)
    check_variant(apply, x, 0.5)


class EagerAndJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("row", lambda x, rate, key, det: jaxdrop.drop_path(x, rate, key=key, deterministic=det)),
        ("batch", lambda x, rate, key, det: jaxdrop.drop_path(x, rate, key=key, deterministic=det, mode="batch")),
        (  # on a zero residual: the dropped branch alone
            "residual",
            lambda x, rate, key, det: jaxdrop.residual_drop_path(
                jnp.zeros_like(x), x, rate, key=key, deterministic=det
            ),
        ),
    )
    def test_shape_dtype_and_edge_rates(self, apply):
        check_eager_and_jit(self.variant, apply, normal(3, (8, 3, 4)), 0.5)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: jaxdrop.drop_path(jnp.ones((2, 3)), 0.5, key=jax.random.key(0), mode="col"), ValueError, "`mode`"),
        (lambda: jaxdrop.drop_path(jnp.ones((2, 3)), 0.5, key=jax.random.key(0), batch_axis=2), ValueError, "`batch_"),
        (lambda: jaxdrop.drop_path(jnp.ones(()), 0.5, key=jax.random.key(0)), ValueError, "batch axis"),
        (lambda: jaxdrop.drop_path(jnp.ones((2, 3), jnp.int32), 0.5), TypeError, "floating-point"),
        (lambda: jaxdrop.drop_path(jnp.ones((2, 3)), 2.0), ValueError, "`rate` must be in"),
        (lambda: jaxdrop.drop_path(jnp.ones((2, 3)), 0.5, scale_by_keep=1), TypeError, "`scale_by_keep` must be"),
        (lambda: jaxdrop.linear_drop_path_rates(0.1, 0), ValueError, "`depth` must be >= 1"),
        (lambda: jaxdrop.linear_drop_path_rates(0.1, 2.0), TypeError, "`depth` must be a positive Python int"),
        (lambda: jaxdrop.linear_drop_path_rates(1.1, 3), ValueError, "`max_rate` must be in"),
        (lambda: jaxdrop.residual_drop_path(jnp.ones(3), jnp.ones(4), 0.1), ValueError, "same shape"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_arguments_are_checked_before_the_deterministic_short_cut():
    # A bad value fails in evaluation mode as it would in training, in every variant (docs/bad_input.md checks all).
    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match=r"`rate` must be in \[0, 1\]; got 1.5"):
        jaxdrop.drop_path(x, 1.5, deterministic=True)
    with pytest.raises(ValueError, match=r"`rate` must be in \[0, 1\]; got 1.5"):
        jaxdrop.residual_drop_path(x, x, 1.5, deterministic=True)
    with pytest.raises(TypeError, match=r"`batch_axis` must be an int axis in \[-2, 1\]; got \(0, 1\)"):
        jaxdrop.drop_path(x, 0.5, deterministic=True, batch_axis=(0, 1))
    with pytest.raises(TypeError, match=r"`residual` must have a floating-point dtype"):
        jaxdrop.residual_drop_path(jnp.ones((2, 4), jnp.int32), x, 0.5, deterministic=True)
