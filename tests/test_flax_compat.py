"""Flax's own Dropout test cases, run against flax's classes and ours with the same assertions.

The cases follow flax's test suite (google/flax, Apache-2.0): ``tests/linen/linen_test.py::StochasticTest``
(``test_dropout``, ``test_dropout_rate_stats``, ``test_dropout_rate_limits``, ``test_dropout_manual_rng``),
``tests/nnx/nn/stochastic_test.py`` (internal rngs, rng override, argument override, ``nnx.view``) and the
docstring examples of ``flax.linen.Dropout`` / ``flax.nnx.Dropout``. The code here is written for jaxdrop; a user
swapping ``nn.Dropout`` for ``jaxdrop.linen.Dropout`` can see the same expectations hold.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop

LINEN = {
    "flax": nn.Dropout,
    "jaxdrop": jaxdrop.linen.Dropout,
    "jaxdrop-jaxgen": functools.partial(jaxdrop.linen.Dropout, generator="jax"),
}
NNX = {
    "flax": nnx.Dropout,
    "jaxdrop": jaxdrop.nnx.Dropout,
    "jaxdrop-jaxgen": functools.partial(jaxdrop.nnx.Dropout, generator="jax"),
}
linen_cls = pytest.mark.parametrize("dropout_cls", LINEN.values(), ids=LINEN.keys())
nnx_cls = pytest.mark.parametrize("dropout_cls", NNX.values(), ids=NNX.keys())


# ---------------------------------------------------------------- linen: flax tests/linen/linen_test.py


@linen_cls
def test_linen_dropout_keys_and_deterministic(dropout_cls):
    key1, key2 = jax.random.split(jax.random.key(0))
    module = dropout_cls(rate=0.5)
    x = jnp.ones((20, 20))
    y1 = module.apply({}, x, deterministic=False, rngs={"dropout": key1})
    y2 = module.apply({}, x, deterministic=False, rngs={"dropout": key2})
    assert not np.all(y1 == y2)
    y1 = module.apply({}, x, deterministic=True, rngs={"dropout": key1})
    y2 = module.apply({}, x, deterministic=True, rngs={"dropout": key2})
    assert np.all(y1 == y2)


@linen_cls
def test_linen_dropout_rate_stats(dropout_cls):
    root = jax.random.key(0)
    n_trials, shape = 2, (100, 100)
    for rate in (0.1, 0.5, 0.9):
        root, sub = jax.random.split(root)
        module = dropout_cls(rate=rate)
        apply = jax.jit(
            lambda k, module=module: module.apply({}, jnp.ones(shape), deterministic=False, rngs={"dropout": k})
        )
        kept = sum(int(np.sum(apply(k) > 0.0)) for k in jax.random.split(sub, n_trials))
        total = np.prod(shape) * n_trials
        keep_rate = 1.0 - rate
        delta = 3 * np.sqrt(rate * keep_rate) / np.sqrt(total)  # within 3 sigma, as flax checks
        assert keep_rate - delta < kept / total < keep_rate + delta


@linen_cls
def test_linen_dropout_rate_limits(dropout_cls):
    key1, key2, key3 = jax.random.split(jax.random.key(0), 3)
    inputs = jnp.ones((20, 20))
    y0 = dropout_cls(rate=0.0).apply({}, inputs, deterministic=False, rngs={"dropout": key1})
    np.testing.assert_array_equal(y0, inputs)
    d1 = dropout_cls(rate=1.0)
    y1 = d1.apply({}, inputs, deterministic=False, rngs={"dropout": key2})
    np.testing.assert_array_equal(y1, np.zeros_like(inputs))
    grad = jax.grad(lambda x, k: jnp.sum(d1.apply({}, x, rngs={"dropout": k}, deterministic=False)))(inputs, key3)
    assert not np.isnan(grad).any()


@linen_cls
def test_linen_dropout_manual_rng(dropout_cls):
    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x):
            key = self.make_rng("dropout")
            return (
                dropout_cls(rate=0.5, deterministic=False)(x, rng=key),
                dropout_cls(rate=0.5, deterministic=False)(x, rng=key),
            )

    y1, y2 = Twice().apply({}, jnp.ones((20, 20)), rngs={"dropout": jax.random.key(0)})
    np.testing.assert_array_equal(y1, y2)


@linen_cls
def test_linen_rates_zero_and_one_need_no_rng(dropout_cls):
    x = jnp.ones((3, 3))
    np.testing.assert_array_equal(dropout_cls(rate=0.0).apply({}, x, deterministic=False), x)
    np.testing.assert_array_equal(dropout_cls(rate=1.0).apply({}, x, deterministic=False), 0 * x)


@linen_cls
def test_linen_missing_rng_names_the_collection(dropout_cls):
    with pytest.raises(Exception, match='needs PRNG for "noise"'):
        dropout_cls(rate=0.5, rng_collection="noise").apply({}, jnp.ones((2, 2)), deterministic=False)


@linen_cls
def test_linen_deterministic_passed_twice_is_an_error(dropout_cls):
    with pytest.raises(ValueError, match='"deterministic" was passed to the constructor and at call time'):
        dropout_cls(rate=0.5, deterministic=True).apply({}, jnp.ones((2, 2)), deterministic=True)
    with pytest.raises(ValueError, match='"deterministic" must be passed to the constructor or at call time'):
        dropout_cls(rate=0.5).apply({}, jnp.ones((2, 2)))


@linen_cls
def test_linen_broadcast_dims_share_the_mask(dropout_cls):
    y = dropout_cls(rate=0.5, broadcast_dims=(0,)).apply(
        {}, jnp.ones((6, 50)), deterministic=False, rngs={"dropout": jax.random.key(2)}
    )
    np.testing.assert_array_equal(y, jnp.broadcast_to(y[:1], y.shape))
    assert 0 < np.mean(y[0] == 0) < 1


class _MLP(nn.Module):
    dropout_cls: type = nn.Dropout

    @nn.compact
    def __call__(self, x, train):
        x = nn.Dense(4)(x)
        return self.dropout_cls(0.5, deterministic=not train)(x)


def test_linen_docstring_example_is_bit_identical_with_jax_generator():
    # flax.linen.Dropout's docstring example, with flax's class and ours (generator="jax") in the same model.
    x = jnp.ones((1, 3))
    ours = functools.partial(jaxdrop.linen.Dropout, generator="jax")
    variables = _MLP().init(jax.random.key(0), x, train=False)
    rngs = {"dropout": jax.random.key(1)}
    expected = _MLP().apply(variables, x, train=True, rngs=rngs)
    got = _MLP(dropout_cls=ours).apply(variables, x, train=True, rngs=rngs)
    np.testing.assert_array_equal(got == 0, expected == 0)
    np.testing.assert_allclose(got, expected, rtol=2e-7)  # flax divides by keep_prob; we multiply by 1/keep_prob
    np.testing.assert_array_equal(
        _MLP(dropout_cls=ours).apply(variables, x, train=False), _MLP().apply(variables, x, train=False)
    )


@pytest.mark.parametrize("broadcast_dims", [(), (1,), (0, 2)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_linen_jax_generator_matches_flax_masks(broadcast_dims, dtype):
    x = jax.random.normal(jax.random.key(3), (4, 8, 16)).astype(dtype)
    rngs = {"dropout": jax.random.key(7)}
    expected = nn.Dropout(0.3, broadcast_dims=broadcast_dims).apply({}, x, deterministic=False, rngs=rngs)
    got = jaxdrop.linen.Dropout(0.3, broadcast_dims=broadcast_dims, generator="jax").apply(
        {}, x, deterministic=False, rngs=rngs
    )
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got == 0, expected == 0)
    # Within 1 ulp: flax divides in the input dtype, we scale in float32 and round once.
    ulp = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(expected, np.float32), rtol=ulp, atol=0)


# ---------------------------------------------------------------- nnx: flax tests/nnx/nn/stochastic_test.py


@nnx_cls
def test_nnx_dropout_internal_rngs(dropout_cls):
    traces = 0
    m1 = dropout_cls(rate=0.5, deterministic=False, rngs=nnx.Rngs(dropout=0))
    m2 = dropout_cls(rate=0.5, deterministic=False)
    rngs2 = nnx.Rngs(dropout=0).fork()

    @nnx.jit
    def f(m, x, rngs=None):
        nonlocal traces
        traces += 1
        return m(x, rngs=rngs)

    x = jnp.ones((1, 10))
    assert m1.rngs is not None and m1.rngs.count[...] == 0
    y1 = f(m1, x)
    assert traces == 1 and m1.rngs.count[...] == 1
    y2 = f(m2, x, rngs=rngs2)
    assert traces == 2 and rngs2.dropout.count[...] == 1
    np.testing.assert_allclose(y1, y2)
    y1 = f(m1, x)
    assert m1.rngs.count[...] == 2
    y2 = f(m2, x, rngs=rngs2)
    assert rngs2.dropout.count[...] == 2
    np.testing.assert_allclose(y1, y2)
    assert traces == 2


@nnx_cls
def test_nnx_dropout_rng_override(dropout_cls):
    m1 = dropout_cls(rate=0.5, deterministic=False, rngs=nnx.Rngs(dropout=0))
    m2 = dropout_cls(rate=0.5, deterministic=False, rngs=nnx.Rngs(dropout=1))
    x = jnp.ones((1, 10))
    y1, y2 = m1(x), m2(x)
    assert not np.array_equal(y1, y2)
    np.testing.assert_allclose(y1, m2(x, rngs=nnx.Rngs(dropout=0).fork()))


@nnx_cls
@pytest.mark.parametrize("use_view", [False, True])
def test_nnx_dropout_arg_override(dropout_cls, use_view):
    m = dropout_cls(rate=0.5, deterministic=False)
    x = jnp.ones((1, 10))
    m(x, deterministic=True)  # call-time flag: no rng needed
    if use_view:
        m_eval = nnx.view(m, deterministic=True)
    else:
        m.set_attributes(deterministic=True)
        m_eval = m
    y = m_eval(x)
    np.testing.assert_array_equal(y, x)
    # the call-time flag takes precedence over the attribute
    assert not np.array_equal(y, m_eval(x, deterministic=False, rngs=nnx.Rngs(dropout=0)))
    if use_view:
        m_train = nnx.view(m, deterministic=False)
    else:
        m.set_attributes(deterministic=False)
        m_train = m
    with pytest.raises(ValueError, match="`deterministic` is False, but no `rngs` argument was provided to Dropout"):
        m_train(x)


@nnx_cls
def test_nnx_dropout_no_deterministic_anywhere(dropout_cls):
    m = dropout_cls(rate=0.5, deterministic=None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="No `deterministic` argument was provided to Dropout"):
        m(jnp.ones((2, 2)))


@nnx_cls
def test_nnx_train_eval_toggle(dropout_cls):
    class Block(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 4, rngs=rngs)
            self.dropout = dropout_cls(0.5, rngs=rngs)

        def __call__(self, x):
            return self.dropout(self.linear(x))

    model = Block(nnx.Rngs(0))
    x = jnp.ones((1, 3))
    model.eval()
    assert model.dropout.deterministic is True
    np.testing.assert_array_equal(model(x), model.linear(x))
    model.train()
    assert model.dropout.deterministic is False
    y = model(x)
    np.testing.assert_array_equal((y == 0) | np.isclose(y, 2 * model.linear(x)), True)


def test_nnx_docstring_example_is_bit_identical_with_jax_generator():
    # flax.nnx.Dropout's docstring example: same Rngs, flax's class vs ours with generator="jax".
    def build(dropout_cls):
        class MLP(nnx.Module):
            def __init__(self, rngs):
                self.linear = nnx.Linear(in_features=3, out_features=4, rngs=rngs)
                self.dropout = dropout_cls(0.5, rngs=rngs)

            def __call__(self, x):
                return self.dropout(self.linear(x))

        return MLP(rngs=nnx.Rngs(0))

    expected_model = build(nnx.Dropout)
    model = build(functools.partial(jaxdrop.nnx.Dropout, generator="jax"))
    x = jnp.ones((1, 3))
    for _ in range(3):  # three successive training calls draw the same masks
        expected = expected_model(x)
        got = model(x)
        np.testing.assert_array_equal(got == 0, expected == 0)
        np.testing.assert_allclose(got, expected, rtol=2e-7)
    model.eval()
    expected_model.eval()
    np.testing.assert_array_equal(model(x), expected_model(x))


def test_nnx_constructor_signature_matches_flax():
    import inspect

    flax_params = inspect.signature(nnx.Dropout.__init__).parameters
    ours = inspect.signature(jaxdrop.nnx.Dropout.__init__).parameters
    for name, param in flax_params.items():
        assert name in ours and ours[name].kind == param.kind and ours[name].default == param.default, name
    call_flax = inspect.signature(nnx.Dropout.__call__).parameters
    call_ours = inspect.signature(jaxdrop.nnx.Dropout.__call__).parameters
    assert all(name in call_ours and call_ours[name].kind == p.kind for name, p in call_flax.items())


def test_linen_fields_match_flax():
    import dataclasses

    flax_fields = {f.name: f.default for f in dataclasses.fields(nn.Dropout)}
    ours = {f.name: f.default for f in dataclasses.fields(jaxdrop.linen.Dropout)}
    assert all(name in ours and ours[name] == default for name, default in flax_fields.items())
    ordered = [f.name for f in dataclasses.fields(jaxdrop.linen.Dropout)]
    assert ordered[:4] == ["rate", "broadcast_dims", "deterministic", "rng_collection"]  # positional order kept
