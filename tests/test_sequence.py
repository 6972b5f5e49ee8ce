"""Locked (variational) dropout, the recurrent mask inside lax.scan, token dropout and word-type dropout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from stat_bounds import binomial_bound
from variant_checks import check_eager_and_jit, check_variant, normal, randint

import jaxdrop


def test_locked_mask_constant_over_time_with_expected_fraction():
    rate = 0.3
    x = jnp.ones((64, 10, 32))
    y = np.asarray(jax.jit(lambda x, k: jaxdrop.locked_dropout(x, rate, key=k))(x, jax.random.key(0)))
    assert (y == y[:, :1, :]).all()
    dropped = y[:, 0, :] == 0
    assert abs(dropped.mean() - rate) <= binomial_bound(dropped.size, rate)
    time_major = jaxdrop.locked_dropout(jnp.ones((5, 4, 3)), 0.5, key=jax.random.key(0), time_axis=0)
    assert (np.asarray(time_major) == np.asarray(time_major)[:1]).all()


def test_locked_expectation_over_keys():
    x = normal(3, (2, 3, 4))
    keys = jax.random.split(jax.random.key(0), 4000)
    samples = jax.jit(jax.vmap(lambda k: jaxdrop.locked_dropout(x, 0.5, key=k)))(keys)
    stderr = np.abs(np.asarray(x)) * np.sqrt(1.0 / keys.shape[0])
    assert (np.abs(np.asarray(samples.mean(0) - x)) <= 4 * stderr + 1e-6).all()


def test_scan_with_locked_mask_equals_unrolled_and_matches_locked_dropout():
    batch, hidden, steps = 3, 8, 5
    w = normal(1, (hidden, hidden)) / np.sqrt(hidden)
    xs = normal(2, (steps, batch, hidden))
    key = jax.random.key(7)

    def run_scan(w, xs, key):
        apply_mask = jaxdrop.locked_mask(key, 0.4, (batch, hidden))

        def step(h, x):
            h = jnp.tanh(apply_mask(h) @ w + x)
            return h, h

        return jax.lax.scan(step, jnp.ones((batch, hidden)), xs)[1]

    def run_unrolled(w, xs, key):
        # The same mask from locked_dropout on a (batch, time, hidden) array: slice one step of it.
        dropped_ones = jaxdrop.locked_dropout(jnp.ones((batch, steps, hidden)), 0.4, key=key)[:, 0]
        h, outs = jnp.ones((batch, hidden)), []
        for t in range(steps):
            h = jnp.tanh((h * dropped_ones) @ w + xs[t])
            outs.append(h)
        return jnp.stack(outs)

    scanned = jax.jit(run_scan)(w, xs, key)
    np.testing.assert_allclose(scanned, jax.jit(run_unrolled)(w, xs, key), rtol=1e-5, atol=1e-6)
    loss = lambda f: jax.jit(jax.grad(lambda w: jnp.sum(f(w, xs, key) ** 2)))(w)
    np.testing.assert_allclose(loss(run_scan), loss(run_unrolled), rtol=1e-4, atol=1e-5)


def test_locked_mask_edges():
    h = jnp.ones((2, 3))
    np.testing.assert_array_equal(jaxdrop.locked_mask(None, 0.5, (2, 3), deterministic=True)(h), h)
    np.testing.assert_array_equal(jaxdrop.locked_mask(None, 0.0, (2, 3))(h), h)
    np.testing.assert_array_equal(jaxdrop.locked_mask(None, 1.0, (2, 3))(h), jnp.zeros_like(h))
    traced = jax.jit(lambda h, r: jaxdrop.locked_mask(jax.random.key(0), r, (2, 3))(h))
    np.testing.assert_array_equal(traced(h, 1.0), jnp.zeros_like(h))
    assert (np.asarray(jax.grad(lambda h: traced(h, 1.0).sum())(h)) == 0).all()
    assert traced(h.astype(jnp.bfloat16), 0.5).dtype == jnp.bfloat16


def test_token_dropout_drops_whole_vectors():
    rate = 0.25
    y = np.asarray(jax.jit(lambda k: jaxdrop.token_dropout(jnp.ones((32, 50, 16)), rate, key=k))(jax.random.key(0)))
    assert (y == y[..., :1]).all()
    dropped = y[..., 0] == 0
    assert abs(dropped.mean() - rate) <= binomial_bound(dropped.size, rate)
    channels_first = jaxdrop.token_dropout(jnp.ones((2, 16, 9)), 0.5, key=jax.random.key(0), feature_axis=1)
    assert (np.asarray(channels_first) == np.asarray(channels_first)[:, :1, :]).all()


def test_word_dropout_same_token_same_decision_within_a_sequence():
    rate = 0.4
    batch, length, vocab = 64, 200, 50
    ids = randint(1, (batch, length), vocab)
    fn = jax.jit(lambda x, ids, k: jaxdrop.word_dropout(x, ids, rate, key=k))
    y = np.asarray(fn(jnp.ones((batch, length, 4)), ids, jax.random.key(0)))
    assert (y == y[..., :1]).all()
    kept = y[..., 0] != 0
    ids = np.asarray(ids)
    decisions = np.full((batch, vocab), -1)
    for b in range(batch):
        for token, keep in zip(ids[b], kept[b], strict=True):
            assert decisions[b, token] in (-1, keep), (b, token)  # one decision per (sequence, word type)
            decisions[b, token] = keep
    drawn = decisions[decisions >= 0]
    assert abs((drawn == 0).mean() - rate) <= binomial_bound(drawn.size, rate)
    # Sequences draw independently: a word type agrees across two sequences with probability p^2 + (1 - p)^2.
    both = (decisions[:-1] >= 0) & (decisions[1:] >= 0)
    agree = (decisions[:-1] == decisions[1:])[both]
    expected = rate**2 + (1 - rate) ** 2
    assert abs(agree.mean() - expected) <= binomial_bound(agree.size, expected)
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)


def test_word_dropout_expectation_and_gradients():
    ids = jnp.array([[1, 2, 1, 3]])
    x = normal(3, (1, 4, 2))
    keys = jax.random.split(jax.random.key(0), 4000)
    samples = jax.jit(jax.vmap(lambda k: jaxdrop.word_dropout(x, ids, 0.5, key=k)))(keys)
    stderr = np.abs(np.asarray(x)) * np.sqrt(1.0 / keys.shape[0])
    assert (np.abs(np.asarray(samples.mean(0) - x)) <= 4 * stderr + 1e-6).all()
    grad = jax.jit(jax.grad(lambda x, k: jaxdrop.word_dropout(x, ids, 0.5, key=k).sum()))(x, keys[0])
    np.testing.assert_array_equal(grad, samples[0] / x)


IDS = randint(4, (4, 6), 5)
APPLY = {
    "locked_dropout": lambda x, rate, key, det: jaxdrop.locked_dropout(x, rate, key=key, deterministic=det),
    "token_dropout": lambda x, rate, key, det: jaxdrop.token_dropout(x, rate, key=key, deterministic=det),
    "word_dropout": lambda x, rate, key, det: jaxdrop.word_dropout(x, IDS, rate, key=key, deterministic=det),
    "locked_mask": lambda x, rate, key, det: jaxdrop.locked_mask(key, rate, (4, 1, 8), deterministic=det)(x),
}


@pytest.mark.parametrize("variant", list(APPLY))
def test_common_properties(variant):
    check_variant(APPLY[variant], normal(3, (4, 6, 8)))


class EagerAndJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters((name, name) for name in APPLY)
    def test_shape_dtype_and_edge_rates(self, name):
        check_eager_and_jit(self.variant, APPLY[name], normal(3, (4, 6, 8)))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: jaxdrop.locked_dropout(jnp.ones(3), 0.5, key=jax.random.key(0)), ValueError, "rank >= 2"),
        (
            lambda: jaxdrop.locked_dropout(jnp.ones((2, 3)), 0.5, key=jax.random.key(0), time_axis=2),
            ValueError,
            "`time_axis` entry 2 is out of range",
        ),
        (lambda: jaxdrop.locked_dropout(jnp.ones((2, 3), jnp.int32), 0.5), TypeError, "floating-point"),
        (
            lambda: jaxdrop.token_dropout(jnp.ones((2, 3)), 0.5, key=jax.random.key(0), feature_axis=-3),
            ValueError,
            "`feature_axis` entry -3 is out of range",
        ),
        (lambda: jaxdrop.locked_mask(None, 0.5, (2, 3)), ValueError, "`key` is required"),
        (lambda: jaxdrop.locked_mask(jax.random.key(0), 1.5, (2, 3)), ValueError, "`rate` must be in"),
        (lambda: jaxdrop.locked_mask(jax.random.key(0), 0.5, (2, -3)), ValueError, "`shape` must have non-negative"),
        (lambda: jaxdrop.locked_mask(None, 0.0, (2, 3))(jnp.ones(3, int)), TypeError, "`h` must have a floating"),
        (
            lambda: jaxdrop.word_dropout(jnp.ones((2, 3, 4)), jnp.ones((2, 3)), 0.5, key=jax.random.key(0)),
            TypeError,
            "`token_ids` must be an integer array",
        ),
        (
            lambda: jaxdrop.word_dropout(jnp.ones((2, 3, 4)), jnp.ones((2, 4), int), 0.5, key=jax.random.key(0)),
            ValueError,
            "`token_ids` must have the shape of `tokens_embedded` without its feature axis",
        ),
        (lambda: jaxdrop.word_dropout(jnp.ones((2, 3), int), jnp.ones(2, int), 0.5), TypeError, "`tokens_embedded`"),
        (lambda: jaxdrop.word_dropout(jnp.ones((2, 3)), jnp.ones(2, int), 0.5), ValueError, "`key` is required"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_locked_mask_checks_its_shape_and_the_shape_it_is_applied_to():
    key = jax.random.key(0)
    # Before: (2.7, 4) was truncated to (2, 4), 5 raised "'int' object is not iterable", a mismatched `h` a raw
    # broadcasting error.
    with pytest.raises(TypeError, match=r"`shape` must be a tuple of ints >= 0, e.g. \(batch, hidden\); got 2.7"):
        jaxdrop.locked_mask(key, 0.5, (2.7, 4))
    with pytest.raises(TypeError, match=r"`shape` must be a tuple of ints"):
        jaxdrop.locked_mask(key, 0.5, "24")
    for rate, deterministic in ((0.5, False), (0.5, True), (0.0, False)):  # checked in every mode
        apply = jax.jit(lambda h, r=rate, d=deterministic: jaxdrop.locked_mask(key, r, (1, 4), deterministic=d)(h))
        with pytest.raises(ValueError, match=r"`h` of shape \(2, 5\) does not match .* `shape` \(1, 4\)"):
            apply(jnp.ones((2, 5)))
        with pytest.raises(ValueError, match=r"`h` of shape \(4,\) does not match"):
            apply(jnp.ones(4))  # ranks must agree: a mask is never broadcast silently over a batch axis
    shared = jax.jit(lambda h: jaxdrop.locked_mask(key, 0.5, (1, 4))(h))(jnp.ones((3, 4)))
    assert bool((shared == shared[:1]).all())  # size 1: one mask shared by the batch, by choice
    with pytest.raises(ValueError, match=r"`h` of shape \(3, 4\) does not match .* `shape` \(4,\)"):
        jaxdrop.locked_mask(key, 0.5, 4, deterministic=True)(jnp.ones((3, 4)))  # an int n is the shape (n,)
