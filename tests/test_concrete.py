"""Concrete dropout: the reference maths, gradients to the rate, learning the rate, the regulariser."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from variant_checks import normal, random_primitives

import jaxdrop
from jaxdrop import _masks
from jaxdrop.functional import _concrete

EPS = 1e-7


def _reference(x, p, u, temperature):
    """Gal's Keras ConcreteDropout.concrete_dropout, line by line, in NumPy float64."""
    drop_prob = np.log(p + EPS) - np.log(1.0 - p + EPS) + np.log(u + EPS) - np.log(1.0 - u + EPS)
    drop_prob = 1.0 / (1.0 + np.exp(-drop_prob / temperature))
    return x * (1.0 - drop_prob) / (1.0 - p)


@pytest.mark.parametrize("generator", ["fast", "jax"])
@pytest.mark.parametrize("temperature", [0.1, 2.0 / 3.0])
def test_matches_reference_maths(temperature, generator):
    x = normal(0, (64, 8))
    p_logit = jnp.float32(np.log(0.2 / 0.8))
    key = jax.random.key(1)
    fn = lambda x, p, k: jaxdrop.concrete_dropout(x, p, key=k, temperature=temperature, generator=generator)
    y = jax.jit(fn)(x, p_logit, key)
    u = np.asarray(_masks.uniform(key, x.shape, generator), np.float64)  # the documented noise source
    expected = _reference(np.asarray(x, np.float64), 0.2, u, temperature)
    np.testing.assert_allclose(y, expected, rtol=2e-4, atol=2e-5)


def test_relaxed_mask_fraction_expectation_and_spatial_sharing():
    p_logit = jnp.float32(np.log(0.3 / 0.7))
    fn = jax.jit(lambda x, k: jaxdrop.concrete_dropout(x, p_logit, key=k))
    y = np.asarray(fn(jnp.ones((200, 100)), jax.random.key(0)))
    # y < 0.5  <=>  retain < 0.35  <=>  logit(u) > logit(0.35)... solved exactly: u > sigmoid(-logit(0.35) * 0.1 -
    # logit(0.3)); at temperature 0.1 the mask is nearly binary, so this is close to (not exactly) p = 0.3.
    logit = lambda q: np.log(q / (1 - q))
    threshold = 1 / (1 + np.exp(-(-logit(0.5 * 0.7) * 0.1 - logit(0.3))))
    expected = 1 - threshold
    assert abs(expected - 0.3) < 0.02
    assert abs((y < 0.5).mean() - expected) <= 4 * np.sqrt(expected * (1 - expected) / y.size)
    # E[(1 - drop)] / (1 - p) is close to 1 (exact as the temperature goes to 0).
    assert abs(y.mean() - 1.0) <= 0.02
    spatial = jax.jit(
        lambda x, k: jaxdrop.concrete_dropout(
            x, p_logit, key=k, temperature=_concrete.SPATIAL_TEMPERATURE, broadcast_dims=(1, 2)
        )
    )(jnp.ones((4, 5, 5, 3)), jax.random.key(0))
    assert (np.asarray(spatial) == np.asarray(spatial)[:, :1, :1, :]).all()


def test_rate_receives_gradients_and_gradients_match_finite_differences():
    x = normal(0, (32, 8))
    key = jax.random.key(1)
    loss = jax.jit(lambda p: jnp.sum(jaxdrop.concrete_dropout(x, p, key=key) ** 2))
    p_logit = jnp.float32(-1.0)
    grad = jax.grad(loss)(p_logit)
    assert np.isfinite(grad) and grad != 0
    numeric = (loss(p_logit + 1e-2) - loss(p_logit - 1e-2)) / 2e-2
    np.testing.assert_allclose(grad, numeric, rtol=2e-2)


def test_rate_moves_under_training_on_a_toy_problem():
    # Regression with a linear model behind concrete dropout, trained by SGD on the rate and the weights. With a
    # weak regulariser (plentiful data) the fit pushes the rate down; a strong entropy term pushes it up.
    data = normal(0, (256, 4))
    targets = data @ jnp.array([1.0, -2.0, 0.5, 3.0])

    def train(start_rate, dropout_regularizer, weight_regularizer):
        def loss(params, key):
            dropped = jaxdrop.concrete_dropout(data, params["p_logit"], key=key)
            mse = jnp.mean((dropped @ params["w"] - targets) ** 2)
            reg = jaxdrop.concrete_dropout_regularizer(
                params["p_logit"],
                params["w"],
                weight_regularizer=weight_regularizer,
                dropout_regularizer=dropout_regularizer,
                input_dim=4,
            )
            return mse + reg

        @jax.jit
        def run(params):
            def step(params, key):
                grads = jax.grad(loss)(params, key)
                return jax.tree.map(lambda p, g: p - 0.05 * g, params, grads), None

            keys = jax.random.split(jax.random.key(0), 300)
            return jax.lax.scan(step, params, keys)[0]

        start = {"p_logit": jnp.float32(np.log(start_rate / (1 - start_rate))), "w": jnp.array([1.0, -2.0, 0.5, 3.0])}
        return float(jax.nn.sigmoid(run(start)["p_logit"]))

    assert train(0.5, dropout_regularizer=1e-4, weight_regularizer=1e-6) < 0.3  # the fit wants less dropout
    assert train(0.1, dropout_regularizer=10.0, weight_regularizer=0.0) > 0.2  # the entropy term raises the rate


def test_regularizer_matches_reference_formula():
    w = normal(1, (4, 3))
    for p in (0.01, 0.2, 0.5, 0.9):
        logit = np.log(p / (1 - p))
        reg = jaxdrop.concrete_dropout_regularizer(
            logit, {"kernel": w}, weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=4
        )
        kernel_term = 1e-2 * np.sum(np.asarray(w, np.float64) ** 2) / (1 - p)
        dropout_term = (p * np.log(p) + (1 - p) * np.log(1 - p)) * 1e-1 * 4
        np.testing.assert_allclose(reg, kernel_term + dropout_term, rtol=1e-5)
    grads = jax.grad(
        lambda p, w: jaxdrop.concrete_dropout_regularizer(
            p, w, weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=4
        ),
        argnums=(0, 1),
    )(jnp.float32(40.0), w)  # a saturated rate: finite values and gradients
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_dtypes_transforms_and_saturated_rate():
    x = normal(3, (4, 6))
    fn = jax.jit(lambda x, p, k: jaxdrop.concrete_dropout(x, p, key=k))
    key = jax.random.key(0)
    reference = fn(x, jnp.float32(-1.0), key)
    for dtype in (jnp.bfloat16, jnp.float16):
        y = fn(x.astype(dtype), jnp.float32(-1.0), key)
        assert y.dtype == dtype
        np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=2e-2, atol=2e-2)
    keys = jax.random.split(key, 3)
    mapped = jax.vmap(fn, in_axes=(None, None, 0))(x, jnp.float32(-1.0), keys)
    np.testing.assert_allclose(mapped[1], fn(x, jnp.float32(-1.0), keys[1]), rtol=1e-6)
    # p_logit = 30: p rounds to 1 in float32; the output and gradients stay finite (almost everything dropped).
    y = fn(x, jnp.float32(30.0), key)
    grads = jax.grad(lambda x, p: jnp.sum(fn(x, p, key)), argnums=(0, 1))(x, jnp.float32(30.0))
    assert np.isfinite(np.asarray(y)).all() and all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert jaxdrop.concrete_dropout(x, 0.0, deterministic=True) is x
    assert not random_primitives(lambda x: jaxdrop.concrete_dropout(x, 0.0, deterministic=True), x)
    traced_temperature = jax.jit(lambda x, t: jaxdrop.concrete_dropout(x, -1.0, key=key, temperature=t))
    np.testing.assert_allclose(traced_temperature(x, 0.1), reference, rtol=1e-5, atol=1e-6)
    assert np.isnan(np.asarray(traced_temperature(x, -1.0))).all()


class EagerAndJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("dense", 0.1, ()),
        ("spatial", _concrete.SPATIAL_TEMPERATURE, (1,)),
    )
    def test_shape_dtype_and_deterministic(self, temperature, broadcast_dims):
        x = normal(3, (4, 6, 8))
        drop = self.variant(
            lambda x, p, key: jaxdrop.concrete_dropout(
                x, p, key=key, temperature=temperature, broadcast_dims=broadcast_dims
            )
        )
        y = drop(x, jnp.float32(-1.0), jax.random.key(0))
        chex.assert_shape(y, x.shape)
        chex.assert_type(y, jnp.float32)
        chex.assert_tree_all_finite(y)
        if broadcast_dims:
            factor = y / x  # the relaxed mask, shared along axis 1 (up to the rounding of the product and quotient)
            chex.assert_trees_all_close(factor, jnp.broadcast_to(factor[:, :1], x.shape), rtol=1e-6)
        at_inference = self.variant(lambda x, p: jaxdrop.concrete_dropout(x, p, deterministic=True))
        chex.assert_trees_all_equal(at_inference(x, jnp.float32(-1.0)), x)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: jaxdrop.concrete_dropout(jnp.ones(3), 0.0, key=jax.random.key(0), temperature=-0.1),
            ValueError,
            "`temperature` must be a finite number > 0; got -0.1",
        ),
        (
            lambda: jaxdrop.concrete_dropout(jnp.ones(3), 0.0, key=jax.random.key(0), temperature=0),
            ValueError,
            "`temperature` must be a finite number > 0",
        ),
        (
            lambda: jaxdrop.concrete_dropout(jnp.ones(3, jnp.int32), 0.0, key=jax.random.key(0)),
            TypeError,
            "`x` must have a floating-point dtype",
        ),
        (
            lambda: jaxdrop.concrete_dropout(jnp.ones(3), jnp.zeros(2), key=jax.random.key(0)),
            ValueError,
            "`p_logit` must be a scalar",
        ),
        (
            lambda: jaxdrop.concrete_dropout(jnp.ones(3), 1, key=jax.random.key(0)),
            TypeError,
            "`p_logit` must be a floating-point scalar",
        ),
        (lambda: jaxdrop.concrete_dropout(jnp.ones(3), 0.0), ValueError, "`key` is required"),
        (
            lambda: jaxdrop.concrete_dropout(jnp.ones(3), 0.0, key=jax.random.key(0), broadcast_dims=1),
            ValueError,
            "`broadcast_dims` entry 1 is out of range",
        ),
        (
            lambda: jaxdrop.concrete_dropout_regularizer(
                0.0, jnp.ones(2), weight_regularizer=-1.0, dropout_regularizer=0.1, input_dim=2
            ),
            ValueError,
            "`weight_regularizer` must be a finite number >= 0",
        ),
        (
            lambda: jaxdrop.concrete_dropout_regularizer(
                0.0, jnp.ones(2), weight_regularizer=1.0, dropout_regularizer=0.1, input_dim=0
            ),
            ValueError,
            "`input_dim` must be >= 1",
        ),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), jnp.float32(jnp.nan)])
def test_static_nan_or_infinite_p_logit_raises_instead_of_a_nan_output(bad):
    # Before: concrete_dropout(x, nan) returned an all-NaN output.
    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match=r"`p_logit` must be a finite number; got (nan|inf|-inf)"):
        jaxdrop.concrete_dropout(x, bad, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`p_logit` must be a finite number"):
        jaxdrop.concrete_dropout(x, bad, deterministic=True)  # checked before the short-cut too
    with pytest.raises(ValueError, match=r"`p_logit` must be a finite number"):
        jaxdrop.concrete_dropout_regularizer(bad, x, weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=4)


def test_traced_nan_p_logit_gives_nan_and_bad_weight_leaves_raise():
    x = jnp.ones((2, 4))
    out = jax.jit(lambda p: jaxdrop.concrete_dropout(x, p, key=jax.random.key(0)))(jnp.float32(jnp.nan))
    assert np.isnan(np.asarray(out)).all()  # a traced value cannot raise: NaN, never a plausible number
    with pytest.raises(TypeError, match=r"`weight` must be a floating-point array.*got 'abc'"):
        jaxdrop.concrete_dropout_regularizer(
            0.0, {"w": "abc"}, weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=4
        )
