"""jaxdrop.nnx: thin layers (output == the functional core with the same key), RNG plumbing under nnx.scan /
nnx.vmap, DropConnect, ConcreteDropout and the attention_fn."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop
import jaxdrop.functional as F
from jaxdrop import nnx as jdn

KEY = jax.random.key(42)
X2 = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
SEQ = jax.random.normal(jax.random.key(2), (2, 6, 5))

VARIANTS = {
    "dropout": (functools.partial(jdn.Dropout, 0.3), F.dropout, X2, 0.3, {}),
    "spatial": (functools.partial(jdn.SpatialDropout, 0.3), F.spatial_dropout, X2, 0.3, {}),
    "alpha": (functools.partial(jdn.AlphaDropout, 0.2), F.alpha_dropout, SEQ, 0.2, {}),
    "gaussian": (functools.partial(jdn.GaussianDropout, 0.3), F.gaussian_dropout, SEQ, 0.3, {}),
    "noise": (functools.partial(jdn.GaussianNoise, 0.5), F.gaussian_noise, SEQ, 0.5, {}),
    "drop_path": (functools.partial(jdn.DropPath, 0.5), F.drop_path, X2, 0.5, {}),
    "dropblock": (functools.partial(jdn.DropBlock, 0.2, block_size=3), F.dropblock, X2, 0.2, dict(block_size=3)),
    "locked": (functools.partial(jdn.LockedDropout, 0.3), F.locked_dropout, SEQ, 0.3, {}),
    "token": (functools.partial(jdn.TokenDropout, 0.3), F.token_dropout, SEQ, 0.3, {}),
}
variants = pytest.mark.parametrize("name", VARIANTS)


@variants
def test_layer_is_the_functional_core_with_its_key(name):
    make, fn, x, rate, options = VARIANTS[name]
    layer = make()
    np.testing.assert_array_equal(layer(x, rngs=KEY), fn(x, rate, key=KEY, **options))
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    with pytest.raises(ValueError, match="no `rngs` argument was provided"):
        layer(x, deterministic=False)


def test_layer_stream_is_forked_like_flax():
    # The layer's own stream: key i is fold_in(fork key, i), exactly flax's RngStream.
    layer = jdn.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    stream = nnx.Rngs(dropout=3).dropout.fork()
    x = jnp.ones((64,))
    for _ in range(2):
        np.testing.assert_array_equal(layer(x), F.dropout(x, 0.5, key=stream()))


# ---------------------------------------------------------------- RNG plumbing: a test fails if masks repeat


def _distinct_rows(y):
    rows = np.asarray(y == 0).reshape(y.shape[0], -1)
    return len({row.tobytes() for row in rows})


class TwoDropouts(nnx.Module):
    def __init__(self, rngs):
        self.first = jdn.Dropout(0.5, rngs=rngs)
        self.second = jdn.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.first(x), self.second(x), self.first(x)


def test_masks_differ_per_layer_and_per_call_and_reproduce_per_seed():
    x = jnp.ones((64,))
    a, b, a_again = TwoDropouts(nnx.Rngs(0))(x)
    assert not np.array_equal(a == 0, b == 0), "two layers drew the same mask"
    assert not np.array_equal(a == 0, a_again == 0), "two calls of one layer drew the same mask"
    for first, second in zip((a, b, a_again), TwoDropouts(nnx.Rngs(0))(x), strict=True):
        np.testing.assert_array_equal(first, second)


def test_masks_advance_under_nnx_jit():
    model = TwoDropouts(nnx.Rngs(0))
    step = nnx.jit(lambda m, x: m(x)[0])
    x = jnp.ones((64,))
    assert not np.array_equal(step(model, x), step(model, x))


def test_scan_with_the_module_carried_draws_a_fresh_mask_per_step():
    layer = jdn.Dropout(0.5, rngs=nnx.Rngs(0))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def body(layer, x):
        return layer, layer(x)

    _, ys = body(layer, jnp.ones((5, 64)))
    assert _distinct_rows(ys) == 5


def test_scan_with_per_step_keys_draws_a_fresh_mask_per_step():
    # The module broadcast into the scan replays one key (flax's pitfall); per-step keys avoid it.
    layer = jdn.Dropout(0.5)

    @nnx.scan(in_axes=(None, nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0))
    def body(layer, carry, x, key):
        return carry, layer(x, rngs=key)

    _, ys = body(layer, 0, jnp.ones((5, 64)), jax.random.split(KEY, 5))
    assert _distinct_rows(ys) == 5


def test_vmap_with_split_rngs_draws_a_fresh_mask_per_sample():
    layer = jdn.Dropout(0.5, rngs=nnx.Rngs(0))

    @nnx.split_rngs(splits=6)
    @nnx.vmap(in_axes=(nnx.StateAxes({nnx.RngState: 0, ...: None}), 0))
    def apply(layer, x):
        return layer(x)

    assert _distinct_rows(apply(layer, jnp.ones((6, 64)))) == 6


@pytest.mark.parametrize("axis_name", [None, "batch"])
def test_vmap_with_a_broadcast_module(axis_name):
    # flax's silent pitfall: a broadcast module gives every sample the same key. `axis_name` fixes it.
    layer = jdn.Dropout(0.5, rngs=nnx.Rngs(0), axis_name=axis_name)
    ys = nnx.vmap(lambda layer, x: layer(x), in_axes=(None, 0), axis_name="batch")(layer, jnp.ones((6, 64)))
    assert _distinct_rows(ys) == (1 if axis_name is None else 6)


def test_traced_rate_at_call_time():
    layer = jdn.Dropout(0.0, rngs=nnx.Rngs(0))
    drop_fraction = nnx.jit(lambda layer, rate: jnp.mean(layer(jnp.ones((20_000,)), rate=rate) == 0))
    for rate in (0.1, 0.5, 0.8):
        assert abs(float(drop_fraction(layer, rate)) - rate) < 0.02


def test_view_and_eval_train():
    model = TwoDropouts(nnx.Rngs(0))
    x = jnp.ones((8,))
    eval_view = nnx.view(model, deterministic=True)
    assert all(np.array_equal(y, x) for y in eval_view(x))
    assert model.first.deterministic is False
    model.eval()
    assert all(np.array_equal(y, x) for y in model(x))
    model.train()
    assert not np.array_equal(model(x)[0], x)


# ---------------------------------------------------------------- DropConnect


def test_dropconnect_linear_is_linear_with_a_masked_kernel():
    x = jax.random.normal(jax.random.key(3), (5, 4))
    layer = jdn.DropConnectLinear(4, 3, rate=0.5, rngs=nnx.Rngs(0))
    kernel, bias = layer.kernel[...], layer.bias[...]
    np.testing.assert_allclose(layer(x, deterministic=True), x @ kernel + bias, rtol=1e-6)
    np.testing.assert_allclose(layer(x, rngs=KEY), x @ F.dropconnect(kernel, 0.5, key=KEY) + bias, rtol=1e-6)
    np.testing.assert_array_equal(layer.kernel[...], kernel)  # the parameter itself is untouched

    grads = nnx.grad(lambda layer: layer(x, rngs=KEY).sum())(layer)
    dropped = np.asarray(F.dropconnect(kernel, 0.5, key=KEY) == 0)
    assert np.all(np.asarray(grads.kernel[...])[dropped] == 0)
    assert np.all(np.asarray(grads.kernel[...])[~dropped] != 0)
    np.testing.assert_array_equal(layer.kernel[...], kernel)


def test_dropconnect_conv_masks_its_kernel():
    x = jax.random.normal(jax.random.key(3), (1, 5, 5, 2))
    layer = jdn.DropConnectConv(2, 2, (3, 3), rate=0.5, rngs=nnx.Rngs(0))
    plain = nnx.Conv(2, 2, (3, 3), rngs=nnx.Rngs(0))
    plain.kernel[...] = F.dropconnect(layer.kernel[...], 0.5, key=KEY)
    np.testing.assert_allclose(layer(x, rngs=KEY), plain(x), rtol=1e-5)


# ---------------------------------------------------------------- ConcreteDropout


def test_concrete_dropout_regulariser_and_rate_gradient():
    x = jax.random.normal(jax.random.key(3), (8, 4))

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.a = jdn.ConcreteDropout(
                nnx.Linear(4, 4, rngs=rngs), weight_regularizer=1e-2, dropout_regularizer=1e-1, rngs=rngs
            )
            self.b = jdn.ConcreteDropout(
                nnx.Linear(4, 2, rngs=rngs), weight_regularizer=1e-2, dropout_regularizer=1e-1, rngs=rngs
            )

        def __call__(self, x):
            return self.b(self.a(x))

    model = Model(nnx.Rngs(0))
    np.testing.assert_allclose(model.a.rate, 0.1, rtol=1e-6)

    def loss(model):
        return jnp.mean(model(x) ** 2) + jdn.concrete_regularization(model)

    grads = nnx.grad(loss)(model)
    assert float(grads.a.p_logit[...]) != 0.0
    expected = sum(
        F.concrete_dropout_regularizer(
            layer.p_logit[...], layer.layer.kernel[...], weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=4
        )
        for layer in (model.a, model.b)
    )
    np.testing.assert_allclose(jdn.concrete_regularization(model), expected, rtol=1e-6)


# ---------------------------------------------------------------- attention


def test_attention_fn_plugs_into_nnx_multi_head_attention():
    x = jax.random.normal(jax.random.key(5), (2, 6, 8))

    def mha(attention_fn):
        return nnx.MultiHeadAttention(
            num_heads=2, in_features=8, dropout_rate=0.2, attention_fn=attention_fn, decode=False, rngs=nnx.Rngs(0)
        )

    flax_mha = mha(nnx.dot_product_attention)
    ours = mha(functools.partial(jdn.attention_fn, generator="jax"))
    np.testing.assert_allclose(ours(x, deterministic=True), flax_mha(x, deterministic=True), atol=1e-6)
    np.testing.assert_allclose(ours(x, deterministic=False), flax_mha(x, deterministic=False), atol=1e-5)

    model = mha(jdn.attention_fn)
    loss = lambda model: jnp.mean((model(x, deterministic=False, rngs=nnx.Rngs(dropout=1)) - 1.0) ** 2)
    first = float(loss(model))
    grad = nnx.jit(nnx.grad(loss))
    for _ in range(3):
        grads = grad(model)
        assert all(np.isfinite(g).all() for g in jax.tree.leaves(nnx.state(grads)))
        nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, nnx.state(model, nnx.Param), nnx.state(grads)))
    assert float(loss(model)) < first


# ---------------------------------------------------------------- jaxdrop.stochastic(): MC dropout in eval mode


@variants
def test_stochastic_turns_an_eval_mode_layer_into_a_sampling_one(name):
    make, fn, x, rate, options = VARIANTS[name]
    layer = make()
    layer.eval()
    with jaxdrop.stochastic():
        np.testing.assert_array_equal(layer(x, rngs=KEY), fn(x, rate, key=KEY, **options))
        with jaxdrop.stochastic(False):  # nested: switched off again
            np.testing.assert_array_equal(layer(x, rngs=KEY), x)
        with pytest.raises(ValueError, match=r"no `rngs` argument(.|\n)*Inside `jaxdrop.stochastic\(\)`"):
            layer(x)  # a key is still needed
    np.testing.assert_array_equal(layer(x), x)  # and unchanged outside


class BatchNormMLP(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(5, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.drop = jdn.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(self.norm(nnx.relu(self.linear(x)))))


X = jax.random.normal(jax.random.key(4), (8, 5))


def test_stochastic_leaves_batchnorm_in_evaluation_mode_under_nnx_jit():
    model = BatchNormMLP(nnx.Rngs(0))
    model.eval()
    dropout_only = nnx.clone(model)
    dropout_only.drop.deterministic = False  # the reference: BatchNorm still uses its running averages
    statistics = np.asarray(model.norm.mean[...])
    forward = nnx.jit(lambda model, x: model(x))
    expected = forward(dropout_only, X)
    with jaxdrop.stochastic():
        np.testing.assert_allclose(forward(model, X), expected, rtol=1e-6)  # traced inside the context
        assert not np.allclose(forward(model, X), expected)  # the stream advanced: a new mask
        with jaxdrop.stochastic(False):
            evaluation = forward(model, X)
    np.testing.assert_array_equal(forward(model, X), evaluation)
    np.testing.assert_array_equal(model.norm.mean[...], statistics)
    assert model.norm.use_running_average and model.drop.deterministic


def test_attention_fn_warns_that_stochastic_cannot_turn_attention_dropout_on():
    mha = nnx.MultiHeadAttention(
        num_heads=2, in_features=8, dropout_rate=0.2, attention_fn=jdn.attention_fn, decode=False, rngs=nnx.Rngs(0)
    )
    with jaxdrop.stochastic(), pytest.warns(UserWarning, match="does not switch attention dropout on"):
        nnx.eval_shape(lambda mha: mha(jnp.ones((2, 6, 8)), deterministic=True), mha)  # the warning is at trace time


# ---------------------------------------------------------------- issue 13: train, then MC dropout in eval mode


@pytest.mark.slow  # two compilations: about 2 s of CPU
def test_train_with_batchnorm_then_mc_predict_in_evaluation_mode():
    model = BatchNormMLP(nnx.Rngs(0))
    x, labels = jax.random.normal(jax.random.key(4), (32, 5)), jnp.arange(32) % 3

    @nnx.jit
    def train_step(model):
        def loss(model):
            log_probs = jax.nn.log_softmax(model(x))
            return -jnp.take_along_axis(log_probs, labels[:, None], axis=1).mean()

        grads = nnx.grad(loss)(model)
        nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, nnx.state(model, nnx.Param), grads))

    for _ in range(2):
        train_step(model)
    assert not np.allclose(model.norm.mean[...], 0.0)  # trained: the statistics moved
    model.eval()
    raw = lambda leaf: jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf
    snapshot = lambda: [np.asarray(raw(leaf)) for leaf in jax.tree.leaves(nnx.state(model))]
    before = snapshot()
    result = jaxdrop.mc.predict(model, x, key=KEY, num_samples=8, return_samples=True)
    assert bool((result.mutual_information > 0).all())
    assert not np.allclose(result.samples[0], result.samples[1])
    for leaf, leaf_before in zip(snapshot(), before, strict=True):  # statistics and RNG state untouched
        np.testing.assert_array_equal(leaf, leaf_before)


def test_lazy_exports():
    assert jaxdrop.nnx is jdn
