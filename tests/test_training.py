"""jaxdrop.training: R-Drop loss, multi-sample dropout and rate schedules on the traced-rate path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import training


def test_r_drop_is_the_symmetric_kl_and_the_regression_mse():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 5, 4)).astype(np.float32)
    p, q = jax.nn.softmax(a), jax.nn.softmax(b)
    kl = lambda p, q: np.sum(p * (np.log(p) - np.log(q)), -1)
    expected = np.mean(0.5 * (kl(p, q) + kl(q, p)))
    values = jax.jit(
        lambda a, b: (
            training.r_drop_loss(a, b),
            training.r_drop_loss(b, a),
            training.r_drop_loss(a, a),
            training.r_drop_loss(a, b, task="regression"),
            training.r_drop_loss(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)),
            jax.grad(training.r_drop_loss)(a, b),
        )
    )(a, b)
    forward, backward, same, regression, low, grad = values
    np.testing.assert_allclose(forward, expected, rtol=1e-5)
    np.testing.assert_allclose(forward, backward, rtol=1e-6)
    assert float(same) == 0.0
    np.testing.assert_allclose(regression, np.mean((a - b) ** 2), rtol=1e-6)
    assert low.dtype == jnp.float32 and abs(float(low) - expected) < 0.05
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0  # both passes get gradients, as in the paper
    with pytest.raises(ValueError, match=r"`outputs_a` and `outputs_b` must have the same shape"):
        training.r_drop_loss(a, b[:, :3])
    with pytest.raises(ValueError, match=r"`task` must be one of"):
        training.r_drop_loss(a, b, task="ranking")


def test_multi_sample_loss_averages_independent_masks():
    x = jnp.ones(1000)

    def loss_fn(key, w):
        return jnp.mean(jaxdrop.dropout(x * w, 0.5, key=key))

    key = jax.random.key(0)
    loss = lambda w: training.multi_sample_loss(loss_fn, w, key=key, num_samples=4)
    each = jax.vmap(lambda i: loss_fn(jaxdrop.fold_in(key, i), 2.0))(jnp.arange(4))
    value, grad = jax.jit(jax.value_and_grad(loss))(2.0)
    np.testing.assert_allclose(value, np.mean(each), rtol=1e-6)
    assert len(set(np.asarray(each).tolist())) == 4  # independent masks
    np.testing.assert_allclose(grad, np.mean(each) / 2.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"`num_samples` must be >= 1"):
        training.multi_sample_loss(loss_fn, 2.0, key=key, num_samples=0)
    with pytest.raises(ValueError, match=r"`loss_fn` must return a scalar"):
        training.multi_sample_loss(lambda k: jnp.ones(2), key=key, num_samples=2)


def test_schedules_values():
    early = training.early_dropout_schedule(0.2, 10)
    linear = training.early_dropout_schedule(0.2, 10, decay="linear")
    late = training.late_dropout_schedule(0.3, 5)
    warmup = training.linear_warmup_rate_schedule(0.4, 4, init_rate=0.2)
    values = jax.jit(lambda steps: [schedule(steps) for schedule in (early, linear, late, warmup)])(jnp.arange(12))
    np.testing.assert_allclose(values[0], [0.2] * 10 + [0.0] * 2, rtol=1e-6)
    np.testing.assert_allclose(values[1], [0.2 * (1 - s / 10) for s in range(10)] + [0, 0], atol=1e-6)
    np.testing.assert_allclose(values[2], [0.0] * 5 + [0.3] * 7, rtol=1e-6)
    np.testing.assert_allclose(values[3], [0.2, 0.25, 0.3, 0.35] + [0.4] * 8, rtol=1e-6)
    assert training.constant_rate_schedule(0.1)(7).dtype == jnp.float32
    with pytest.raises(ValueError, match=r"`rate` must be in \[0, 1\]; got 1.5"):
        training.late_dropout_schedule(1.5, 3)
    with pytest.raises(ValueError, match=r"`num_steps` must be >= 0; got -1"):
        training.early_dropout_schedule(0.1, -1)
    with pytest.raises(ValueError, match=r"`decay` must be one of"):
        training.early_dropout_schedule(0.1, 3, decay="cosine")


def test_scheduled_rate_compiles_the_train_step_once():
    traces = []
    schedule = training.early_dropout_schedule(0.5, 5)

    @jax.jit
    def train_step(w, step):
        traces.append(1)  # runs once per trace, never per call

        def loss(w):
            key = jaxdrop.fold_in(jax.random.key(0), step)
            return jnp.sum(jaxdrop.dropout(jnp.ones(64) * w, schedule(step), key=key) ** 2)

        return w - 0.01 * jax.grad(loss)(w), schedule(step)

    w, rates = jnp.float32(1.0), []
    for step in range(10):
        w, rate = train_step(w, jnp.int32(step))
        rates.append(float(rate))
    assert len(traces) == 1
    assert rates == [0.5] * 5 + [0.0] * 5
