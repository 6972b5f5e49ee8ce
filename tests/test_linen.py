"""jaxdrop.linen: thin layers (output == the functional core with the same key), RNG plumbing, DropConnect,
ConcreteDropout and the attention_fn."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
import jaxdrop.functional as F
from jaxdrop import linen as jdl

KEY = jax.random.key(42)
X2 = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))  # (batch, h, w, channels)
SEQ = jax.random.normal(jax.random.key(2), (2, 6, 5))  # (batch, time, features)

# (layer, functional, input, options passed to both)
VARIANTS = {
    "dropout": (jdl.Dropout(0.3, broadcast_dims=(1,)), F.dropout, X2, dict(broadcast_dims=(1,))),
    "spatial": (jdl.SpatialDropout(0.3), F.spatial_dropout, X2, {}),
    "alpha": (jdl.AlphaDropout(0.2), F.alpha_dropout, SEQ, {}),
    "feature_alpha": (jdl.FeatureAlphaDropout(0.2), F.feature_alpha_dropout, X2, {}),
    "gaussian": (jdl.GaussianDropout(0.3), F.gaussian_dropout, SEQ, {}),
    "noise": (jdl.GaussianNoise(0.5), F.gaussian_noise, SEQ, {}),
    "drop_path": (jdl.DropPath(0.5), F.drop_path, X2, {}),
    "dropblock": (jdl.DropBlock(0.2, block_size=3), F.dropblock, X2, dict(block_size=3)),
    "locked": (jdl.LockedDropout(0.3), F.locked_dropout, SEQ, {}),
    "token": (jdl.TokenDropout(0.3), F.token_dropout, SEQ, {}),
}
variants = pytest.mark.parametrize("name", VARIANTS)


@variants
def test_layer_is_the_functional_core_with_its_key(name):
    layer, fn, x, options = VARIANTS[name]
    got = layer.apply({}, x, deterministic=False, rng=KEY)
    np.testing.assert_array_equal(got, fn(x, layer.rate if name != "noise" else 0.5, key=KEY, **options))
    assert not np.array_equal(got, x)
    np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)


@variants
def test_missing_rng_and_conflicting_flags_are_clear_errors(name):
    layer, _, x, _ = VARIANTS[name]
    with pytest.raises(Exception, match='needs PRNG for "dropout"'):
        layer.apply({}, x, deterministic=False)
    with pytest.raises(ValueError, match="passed to the constructor and at call time"):
        layer.clone(deterministic=True).apply({}, x, deterministic=False)


def test_word_dropout_layer_matches_the_functional_core():
    ids = jnp.array([[1, 2, 1, 3, 2, 1], [4, 4, 5, 6, 4, 5]])
    got = jdl.WordDropout(0.5).apply({}, SEQ, ids, deterministic=False, rng=KEY)
    np.testing.assert_array_equal(got, F.word_dropout(SEQ, ids, 0.5, key=KEY))


# ---------------------------------------------------------------- RNG plumbing: a test fails if masks repeat


class TwoDropouts(nn.Module):
    @nn.compact
    def __call__(self, x):
        first = jdl.Dropout(0.5, deterministic=False)
        second = jdl.Dropout(0.5, deterministic=False)
        return first(x), second(x), first(x)  # two layers, and the first one called twice


def test_masks_differ_per_layer_and_per_call_and_reproduce_per_key():
    x = jnp.ones((64,))
    a, b, a_again = TwoDropouts().apply({}, x, rngs={"dropout": KEY})
    assert not np.array_equal(a == 0, b == 0), "two layers drew the same mask"
    assert not np.array_equal(a == 0, a_again == 0), "two calls of one layer drew the same mask"
    for first, second in zip((a, b, a_again), TwoDropouts().apply({}, x, rngs={"dropout": KEY}), strict=True):
        np.testing.assert_array_equal(first, second)
    other = TwoDropouts().apply({}, x, rngs={"dropout": jax.random.key(43)})
    assert not np.array_equal(a, other[0])


class Step(nn.Module):
    @nn.compact
    def __call__(self, carry, x):
        return carry, jdl.Dropout(0.5, deterministic=False)(x)


def _distinct_rows(y):
    rows = np.asarray(y == 0).reshape(y.shape[0], -1)
    return len({row.tobytes() for row in rows})


def test_scan_draws_a_fresh_mask_per_step():
    scan = nn.scan(Step, variable_broadcast="params", split_rngs={"params": False, "dropout": True})
    _, ys = scan().apply({}, 0, jnp.ones((5, 64)), rngs={"dropout": KEY})
    assert _distinct_rows(ys) == 5


@pytest.mark.parametrize("split", [True, False])
def test_vmap_draws_a_fresh_mask_per_sample(split):
    # With the RNG split over the batch, or with `axis_name` folding the sample index into a broadcast key.
    layer = functools.partial(jdl.Dropout, 0.5, deterministic=False, axis_name=None if split else "batch")
    vmapped = nn.vmap(
        lambda module, x: layer()(x),
        variable_axes={},
        split_rngs={"dropout": split},
        axis_name="batch",
    )

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return vmapped(self, x)

    ys = Model().apply({}, jnp.ones((6, 64)), rngs={"dropout": KEY})
    assert _distinct_rows(ys) == 6


def test_traced_rate_at_call_time_does_not_recompile():
    traces = 0

    @jax.jit
    def drop_fraction(rate):
        nonlocal traces
        traces += 1
        y = jdl.Dropout(0.0).apply({}, jnp.ones((20_000,)), deterministic=False, rngs={"dropout": KEY}, rate=rate)
        return jnp.mean(y == 0)

    for rate in (0.1, 0.5, 0.8):
        assert abs(float(drop_fraction(rate)) - rate) < 0.02
    assert traces == 1


# ---------------------------------------------------------------- DropConnect


def test_dropconnect_dense_is_dense_with_a_masked_kernel():
    x = jax.random.normal(jax.random.key(3), (5, 4))
    layer = jdl.DropConnectDense(features=3, rate=0.5)
    variables = layer.init(jax.random.key(0), x, deterministic=True)
    dense_vars = nn.Dense(3).init(jax.random.key(0), x)
    assert jax.tree.structure(variables) == jax.tree.structure(dense_vars)  # checkpoints interchangeable
    np.testing.assert_array_equal(layer.apply(variables, x, deterministic=True), nn.Dense(3).apply(variables, x))
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
    got = layer.apply(variables, x, deterministic=False, rng=KEY)
    np.testing.assert_allclose(got, x @ F.dropconnect(kernel, 0.5, key=KEY) + bias, rtol=1e-6)
    # the gradient reaches the kernel only through kept weights
    grad = jax.grad(lambda v: layer.apply(v, x, deterministic=False, rng=KEY).sum())(variables)
    dropped = F.dropconnect(kernel, 0.5, key=KEY) == 0
    assert np.all(np.asarray(grad["params"]["kernel"])[np.asarray(dropped)] == 0)
    assert np.all(np.asarray(grad["params"]["kernel"])[~np.asarray(dropped)] != 0)


def test_dropconnect_conv_masks_its_kernel():
    x = jax.random.normal(jax.random.key(3), (1, 5, 5, 2))
    layer = jdl.DropConnectConv(features=2, kernel_size=(3, 3), rate=0.5)
    variables = layer.init(jax.random.key(0), x, deterministic=True)
    masked = {"params": {**variables["params"], "kernel": F.dropconnect(variables["params"]["kernel"], 0.5, key=KEY)}}
    expected = nn.Conv(2, (3, 3)).apply(masked, x)
    np.testing.assert_allclose(layer.apply(variables, x, deterministic=False, rng=KEY), expected, rtol=1e-5)


# ---------------------------------------------------------------- ConcreteDropout


def test_concrete_dropout_sows_its_regulariser_and_learns_its_rate():
    x = jax.random.normal(jax.random.key(3), (8, 4))
    layer = jdl.ConcreteDropout(nn.Dense(2), weight_regularizer=1e-2, dropout_regularizer=1e-1)
    variables = layer.init(jax.random.key(0), x, deterministic=True)
    np.testing.assert_allclose(jax.nn.sigmoid(variables["params"]["p_logit"]), 0.1, rtol=1e-6)

    def loss(params):
        y, state = layer.apply({"params": params}, x, deterministic=False, rng=KEY, mutable=["losses"])
        return jnp.mean(y**2) + jdl.concrete_regularization(state), state

    (_, state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    expected = F.concrete_dropout_regularizer(
        variables["params"]["p_logit"],
        variables["params"]["layer"]["kernel"],
        weight_regularizer=1e-2,
        dropout_regularizer=1e-1,
        input_dim=4,
    )
    np.testing.assert_allclose(jdl.concrete_regularization(state), expected, rtol=1e-6)
    assert float(grads["p_logit"]) != 0.0


# ---------------------------------------------------------------- attention


def test_attention_fn_plugs_into_flax_multi_head_attention():
    x = jax.random.normal(jax.random.key(5), (2, 6, 8))

    def mha(attention_fn):
        return nn.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.2, attention_fn=attention_fn)

    variables = mha(nn.dot_product_attention).init(jax.random.key(0), x, deterministic=True)
    flax_eval = mha(nn.dot_product_attention).apply(variables, x, deterministic=True)
    np.testing.assert_allclose(mha(jdl.attention_fn).apply(variables, x, deterministic=True), flax_eval, atol=1e-6)
    rngs = {"dropout": KEY}
    flax_train = mha(nn.dot_product_attention).apply(variables, x, deterministic=False, rngs=rngs)
    same_masks = functools.partial(jdl.attention_fn, generator="jax")
    np.testing.assert_allclose(
        mha(same_masks).apply(variables, x, deterministic=False, rngs=rngs), flax_train, atol=1e-5
    )

    def loss(params):
        y = mha(jdl.attention_fn).apply({"params": params}, x, deterministic=False, rngs=rngs)
        return jnp.mean((y - 1.0) ** 2)

    params = variables["params"]
    loss, grad = jax.jit(loss), jax.jit(jax.grad(loss))
    first = float(loss(params))
    for _ in range(3):
        grads = grad(params)
        assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    assert float(loss(params)) < first


# ---------------------------------------------------------------- jaxdrop.stochastic(): MC dropout in eval mode


@variants
def test_stochastic_turns_a_deterministic_call_into_a_sampling_one(name):
    layer, _, x, _ = VARIANTS[name]
    sampled = layer.apply({}, x, deterministic=False, rng=KEY)
    with jaxdrop.stochastic():
        np.testing.assert_array_equal(layer.apply({}, x, deterministic=True, rng=KEY), sampled)
        with jaxdrop.stochastic(False):  # nested: switched off again
            np.testing.assert_array_equal(layer.apply({}, x, deterministic=True, rng=KEY), x)
    np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)  # and unchanged outside


def test_stochastic_keep_rate_and_a_key_is_still_needed():
    x = jnp.ones((20_000,))
    layer = jdl.Dropout(0.3, deterministic=True)
    with jaxdrop.stochastic():
        y = layer.apply({}, x, rngs={"dropout": KEY})
        assert abs(float(jnp.mean(y == 0)) - 0.3) < 0.02 and np.allclose(np.unique(y), [0.0, 1 / 0.7])
        with pytest.raises(Exception, match='needs PRNG for "dropout"'):
            layer.apply({}, x)


def test_stochastic_reaches_word_dropout_dropconnect_and_concrete_dropout():
    x = jax.random.normal(jax.random.key(3), (5, 4))
    ids = jnp.array([[1, 2, 1, 3, 2]])
    kernel, bias = jnp.ones((4, 3)), jnp.zeros(3)  # the variables, spelled out: no init to run

    @functools.partial(jax.jit, static_argnums=0)
    def outputs(deterministic):
        rngs = {"dropout": KEY}
        dense = {"params": {"kernel": kernel, "bias": bias}}
        concrete = {"params": {"p_logit": jnp.zeros(()), "layer": {"kernel": kernel, "bias": bias}}}
        return (
            jdl.WordDropout(0.5).apply({}, x[None], ids, deterministic=deterministic, rngs=rngs),
            jdl.DropConnectDense(3).apply(dense, x, deterministic=deterministic, rngs=rngs),
            jdl.ConcreteDropout(nn.Dense(3)).apply(
                concrete, x, deterministic=deterministic, rngs=rngs, mutable=["losses"]
            )[0],
        )

    sampled = outputs(False)
    with jaxdrop.stochastic():
        inside = outputs(True)
    for got, expected, plain in zip(inside, sampled, outputs(True), strict=True):
        np.testing.assert_array_equal(got, expected)
        assert not np.array_equal(plain, expected)


class BatchNormMLP(nn.Module):
    """The model of issue 13: one `train` flag drives BatchNorm and dropout; `mc` turns on dropout alone."""

    @nn.compact
    def __call__(self, x, train: bool, mc: bool = False):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = jdl.Dropout(0.5, deterministic=not (train or mc))(x)
        return nn.Dense(3)(x)


def test_stochastic_leaves_batchnorm_in_evaluation_mode_under_jit():
    x = jax.random.normal(jax.random.key(4), (8, 5))
    variables = BatchNormMLP().init(jax.random.key(0), x, train=False)

    @functools.partial(jax.jit, static_argnames="mc")
    def predict(key, mc=False):  # no `mutable`: BatchNorm updating its statistics would raise
        return BatchNormMLP().apply(variables, x, train=False, mc=mc, rngs={"dropout": key})

    dropout_only = predict(KEY, mc=True)
    with jaxdrop.stochastic():
        np.testing.assert_array_equal(predict(KEY), dropout_only)
        assert not np.array_equal(predict(jax.random.key(7)), dropout_only)
        with jaxdrop.stochastic(False):
            evaluation = predict(KEY)
    np.testing.assert_array_equal(predict(jax.random.key(7)), evaluation)
    if hasattr(jax, "make_user_context"):  # jax >= 0.7.2: the mode is part of jit's cache key
        assert predict._cache_size() == 3


def test_attention_fn_warns_that_stochastic_cannot_turn_attention_dropout_on():
    x = jax.random.normal(jax.random.key(5), (2, 6, 8))
    mha = nn.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.2, attention_fn=jdl.attention_fn)
    variables = jax.eval_shape(functools.partial(mha.init, deterministic=True), jax.random.key(0), x)  # trace only
    with jaxdrop.stochastic(), pytest.warns(UserWarning, match="does not switch attention dropout on"):
        jax.eval_shape(functools.partial(mha.apply, deterministic=True), variables, x)


# ---------------------------------------------------------------- issue 13: train, then MC dropout in eval mode


@pytest.mark.slow  # three compilations: about 3 s of CPU
def test_train_with_batchnorm_then_mc_predict_in_evaluation_mode():
    x = jax.random.normal(jax.random.key(4), (32, 5))
    labels = jnp.arange(32) % 3
    variables = jax.jit(BatchNormMLP().init, static_argnames="train")(jax.random.key(0), x, train=False)

    @jax.jit
    def train_step(params, batch_stats, key):
        def loss(params):
            logits, updates = BatchNormMLP().apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                train=True,
                rngs={"dropout": key},
                mutable=["batch_stats"],
            )
            log_probs = jax.nn.log_softmax(logits)
            return -jnp.take_along_axis(log_probs, labels[:, None], axis=1).mean(), updates["batch_stats"]

        grads, batch_stats = jax.grad(loss, has_aux=True)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), batch_stats

    params, batch_stats = variables["params"], variables["batch_stats"]
    for step in range(2):
        params, batch_stats = train_step(params, batch_stats, jax.random.fold_in(KEY, step))
    assert not np.allclose(batch_stats["BatchNorm_0"]["mean"], 0.0)  # trained: the statistics moved
    variables = {"params": params, "batch_stats": batch_stats}
    before = jax.tree.map(np.asarray, variables)
    result = jaxdrop.mc.predict(
        BatchNormMLP(),
        x,
        key=KEY,
        num_samples=8,
        variables=variables,
        apply_kwargs={"train": False},
        return_samples=True,
    )
    assert bool((result.mutual_information > 0).all())
    assert not np.allclose(result.samples[0], result.samples[1])
    jax.tree.map(np.testing.assert_array_equal, variables, before)  # the statistics were not updated


def test_lazy_exports():
    assert jaxdrop.linen is jdl
