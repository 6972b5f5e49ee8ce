"""``function_samples=True``: within one MC sample every input of the batch gets the same dropout masks."""

import os
import re
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from stat_bounds import binomial_bound

import jaxdrop
from jaxdrop import mc

pytestmark = [
    pytest.mark.filterwarnings("error::jaxdrop.mc.IdenticalSamplesWarning"),
    pytest.mark.filterwarnings("error::jaxdrop.mc.RecompileWarning"),
]

BATCH, FEATURES, HIDDEN, CLASSES = 4, 3, 16, 5
T = 6
X = jax.random.normal(jax.random.key(1), (BATCH, FEATURES))
# X[1] twice, X[0] not at all, a new row: the batch around X[1] and X[3] changes, and so does their position.
OTHER = jnp.concatenate([X[1:2], X[3:4], X[1:2], jax.random.normal(jax.random.key(9), (1, FEATURES))])
W1 = jax.random.normal(jax.random.key(2), (FEATURES, HIDDEN))
W2 = jax.random.normal(jax.random.key(3), (HIDDEN, CLASSES))


def classifier(key, x):
    return jaxdrop.dropout(jnp.tanh(x @ W1), 0.5, key=key) @ W2


class LinenJaxdrop(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        hidden = nn.BatchNorm(use_running_average=not train)(nn.Dense(HIDDEN)(x))
        return nn.Dense(CLASSES)(jaxdrop.linen.Dropout(0.5)(nn.relu(hidden), deterministic=not train))


class LinenFlax(nn.Module):  # flax's own Dropout, switched on by its flag
    @nn.compact
    def __call__(self, x):
        return nn.Dense(CLASSES)(nn.Dropout(0.5, deterministic=False)(nn.relu(nn.Dense(HIDDEN)(x))))


class Nnx(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
        self.flax_drop = nnx.Dropout(0.3, rngs=rngs)
        self.drop = jaxdrop.nnx.Dropout(0.5, rngs=rngs)
        self.l2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(self.flax_drop(nnx.relu(self.l1(x)))))


def _equinox_fn():
    mlp = eqx.nn.Sequential(
        [eqx.nn.Linear(FEATURES, HIDDEN, key=jax.random.key(4)), jaxdrop.equinox.Dropout(0.5, inference=True)]
    )
    # equinox layers take one example: the model is vmapped over the batch with the key shared (the usual idiom)
    return lambda key, x: jax.vmap(lambda row: mlp(row, key=key))(x)


def _samples(kind, inputs, key, **options):
    """``(T, batch, ...)`` samples of one model kind with function samples on."""
    if kind == "function":
        return mc.sample(classifier, inputs, key=key, num_samples=T, function_samples=True, **options)
    if kind == "equinox":
        return mc.sample(_equinox_fn(), inputs, key=key, num_samples=T, function_samples=True, **options)
    if kind == "linen-jaxdrop":
        model = LinenJaxdrop()
        variables = model.init(jax.random.key(0), X)
        kw = {"variables": variables, "apply_kwargs": {"train": False}}
    elif kind == "linen-flax":
        model = LinenFlax()
        kw = {"variables": model.init(jax.random.key(0), X)}
    else:
        model = Nnx(nnx.Rngs(0, dropout=1))
        model.eval()
        kw = {}
    result = mc.predict(
        model, inputs, key=key, num_samples=T, return_samples=True, function_samples=True, **kw, **options
    )
    return result.samples


@pytest.mark.parametrize(
    "kind",
    [
        "function",
        "linen-jaxdrop",
        "nnx",
        pytest.param("equinox", marks=pytest.mark.slow),  # -m slow: the default suite's time budget
        pytest.param("linen-flax", marks=pytest.mark.slow),
    ],
)
def test_an_input_gets_the_same_samples_whatever_else_is_in_the_batch(kind):
    key = jax.random.key(5)
    here, there = _samples(kind, X, key), _samples(kind, OTHER, key)
    assert here.shape[:2] == (T, BATCH)
    np.testing.assert_array_equal(there[:, 0], there[:, 2])  # two copies of one input: identical samples
    np.testing.assert_allclose(there[:, 0], here[:, 1], rtol=1e-5, atol=1e-6)  # X[1] moved and among others
    np.testing.assert_allclose(there[:, 1], here[:, 3], rtol=1e-5, atol=1e-6)
    flat = np.asarray(here).reshape(T, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(T) for j in range(i))  # the samples still differ


def test_one_mask_per_sample_shared_by_the_batch_and_independent_across_samples():
    """Dropout of ones: each sample's mask is one row repeated over the batch; across samples the masks are
    independent Bernoulli(0.7) draws (the kept fraction, and the agreement of two samples, within binomial bounds).
    """
    rate, num_samples, width = 0.3, 64, 256
    ones = jnp.ones((3, width))
    masks = np.asarray(
        mc.sample(
            lambda k, x: jaxdrop.dropout(x, rate, key=k) != 0,
            ones,
            key=jax.random.key(0),
            num_samples=num_samples,
            function_samples=True,
        )
    )
    assert (masks == masks[:, :1]).all()  # every example of a sample has the sample's mask
    rows = masks[:, 0]
    assert abs(rows.mean() - (1 - rate)) < binomial_bound(rows.size, 1 - rate)
    agree = rows[1:] == rows[:-1]
    expected = (1 - rate) ** 2 + rate**2
    assert abs(agree.mean() - expected) < binomial_bound(agree.size, expected)
    default = np.asarray(
        mc.sample(lambda k, x: jaxdrop.dropout(x, rate, key=k) != 0, ones, key=jax.random.key(0), num_samples=4)
    )
    assert not (default == default[:, :1]).all()  # off: one mask per example, as before


def test_off_is_the_default_program_bit_for_bit():
    key = jax.random.key(3)
    off = mc.sample(classifier, X, key=key, num_samples=T, function_samples=False)
    loop = jnp.stack([jax.jit(classifier)(jaxdrop.fold_in(key, i), X) for i in range(T)])
    np.testing.assert_array_equal(off, mc.sample(classifier, X, key=key, num_samples=T))
    np.testing.assert_allclose(off, loop, rtol=1e-6, atol=1e-6)


def test_composes_with_chunks_a_mesh_regression_and_return_samples():
    key = jax.random.key(11)
    mesh = jax.make_mesh((1,), ("samples",))
    whole = mc.sample(classifier, X, key=key, num_samples=7, chunk_size=3, function_samples=True, mesh=mesh)
    # sample t is the model run on each example alone (a batch of one) with the key fold_in(key, t), whatever the
    # chunking: samples 0 and 6 lie in the first and the last (smaller) chunk
    one_example = jax.jit(lambda k, row: classifier(k, row[None])[0])
    rows = jnp.stack([jnp.stack([one_example(jaxdrop.fold_in(key, t), row) for row in X]) for t in (0, 6)])
    np.testing.assert_allclose(whole[jnp.array([0, 6])], rows, rtol=1e-5, atol=1e-6)
    result = mc.predict(
        lambda k, x: classifier(k, x)[:, 0],
        X,
        key=key,
        num_samples=7,
        task="regression",
        tau=4.0,
        chunk_size=3,
        function_samples=True,
        return_samples=True,
    )
    np.testing.assert_allclose(result.samples, whole[..., 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.mean, whole[..., 0].mean(0), rtol=1e-5, atol=1e-6)


def test_batch_axes_share_parameters_and_read_the_batch_where_it_is():
    """``batch_axes=(None, 1)``: the parameters are shared, the inputs are time-major (time, batch, features)."""

    def fn(key, params, sequences):
        return jaxdrop.dropout(jnp.tanh(sequences.mean(0) @ params["w1"]), 0.5, key=key) @ params["w2"]

    params = {"w1": W1, "w2": W2}
    sequences = jax.random.normal(jax.random.key(6), (7, BATCH, FEATURES))
    key = jax.random.key(1)
    samples = mc.sample(fn, params, sequences, key=key, num_samples=T, function_samples=True, batch_axes=(None, 1))
    swapped = mc.sample(
        fn, params, sequences[:, ::-1], key=key, num_samples=T, function_samples=True, batch_axes=(None, 1)
    )
    np.testing.assert_allclose(swapped[:, ::-1], samples, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"`batch_axes`: the batched arrays must share one batch size"):
        mc.sample(fn, params, sequences, key=key, num_samples=T, function_samples=True)  # the default batches params


@pytest.mark.slow  # the default suite's time budget
def test_parameters_updated_outside_the_arguments_are_followed():
    weights = {"w": W2}
    fn = lambda k, x: jaxdrop.dropout(jnp.tanh(x @ W1), 0.5, key=k) @ weights["w"]
    key = jax.random.key(2)
    before = mc.sample(fn, X, key=key, num_samples=3, function_samples=True)
    weights["w"] = 2 * W2
    with pytest.warns(mc.RecompileWarning):
        after = mc.sample(fn, X, key=key, num_samples=3, function_samples=True)
    np.testing.assert_allclose(after, 2 * before, rtol=1e-5, atol=1e-5)


def test_identical_samples_still_warn():
    with pytest.warns(mc.IdenticalSamplesWarning):
        mc.sample(lambda k, x: jnp.tanh(x @ W1), X, key=jax.random.key(0), num_samples=3, function_samples=True)


def test_the_mask_is_drawn_once_per_sample_not_per_example():
    """The shared mask's bits are hashed on (T, hidden), not on (T, batch, hidden).

    A fused producer is evaluated once per element of its consumer: if the hash sat in the batched multiply,
    the shared mask would be redrawn for every example. The fast generator packs its decisions in a reduction
    (``jaxdrop._masks``), which XLA never duplicates, so each block is hashed once.
    """
    num_samples, batch, hidden = 5, 12, 24
    w1 = jax.random.normal(jax.random.key(1), (FEATURES, hidden))

    def fn(key, x):
        return jaxdrop.dropout(jnp.tanh(x @ w1), 0.5, key=key).sum(-1, keepdims=True)

    x = jax.random.normal(jax.random.key(2), (batch, FEATURES))
    sample = jax.jit(lambda x, key: mc.sample(fn, x, key=key, num_samples=num_samples, function_samples=True))
    hlo = sample.lower(x, jax.random.key(0)).compile().as_text()
    assert re.search(rf"u8\[{num_samples},(1,)?{hidden // 8}\]", hlo), "no packed mask per sample"
    assert not re.search(rf"u32\[{num_samples},{batch},", hlo), "mask bits drawn per example"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: mc.sample(classifier, X, key=jax.random.key(0), num_samples=2, function_samples=1),
            TypeError,
            r"`function_samples` must be a bool; got 1",
        ),
        (
            lambda: mc.predict(classifier, X, key=jax.random.key(0), num_samples=2, function_samples="yes"),
            TypeError,
            r"`function_samples` must be a bool",
        ),
        (
            lambda: mc.sample(classifier, X, key=jax.random.key(0), num_samples=2, batch_axes=0),
            ValueError,
            r"`batch_axes=0` .* with `function_samples=False`",
        ),
        (
            lambda: mc.sample(
                classifier, X, key=jax.random.key(0), num_samples=2, function_samples=True, batch_axes=(0, 0)
            ),
            ValueError,
            r"one entry .* per positional argument of `fn`: 1 ",
        ),
        (
            lambda: mc.sample(
                classifier, X, key=jax.random.key(0), num_samples=2, function_samples=True, batch_axes=(2,)
            ),
            ValueError,
            r"`batch_axes\[0\]` entry 2 is out of range .* \[-2, 1\]",
        ),
        (
            lambda: mc.sample(
                classifier, X, key=jax.random.key(0), num_samples=2, function_samples=True, batch_axes="0"
            ),
            TypeError,
            r"`batch_axes` must be None .*; got '0'",
        ),
        (
            lambda: mc.sample(
                classifier, X, key=jax.random.key(0), num_samples=2, function_samples=True, batch_axes=(None,)
            ),
            ValueError,
            r"`batch_axes` batches no array",
        ),
        (
            lambda: mc.predict(classifier, (X, X[:2]), key=jax.random.key(0), num_samples=2, function_samples=True),
            ValueError,
            r"`inputs`: the batched arrays must share one batch size; got array 0: 4, array 1: 2",
        ),
        (
            lambda: mc.sample(
                lambda k, x: jaxdrop.dropout(x, 0.5, key=k).sum(),
                X,
                key=jax.random.key(0),
                num_samples=2,
                function_samples=True,
            ),
            ValueError,
            r"every output of the model must keep the batch axis first.* shape \(\)",
        ),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.slow
def test_sharded_function_samples_equal_unsharded():
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, jaxdrop
        from jaxdrop import mc
        w = jax.random.normal(jax.random.key(0), (3, 5))
        fn = lambda key, x: jaxdrop.dropout(x, 0.5, key=key) @ w
        x = jax.random.normal(jax.random.key(2), (6, 3))
        mesh = jax.make_mesh((4,), ("samples",))
        key = jax.random.key(1)
        sharded = mc.sample(fn, x, key=key, num_samples=12, chunk_size=8, mesh=mesh, function_samples=True)
        assert len(sharded.sharding.device_set) == 4
        np.testing.assert_allclose(sharded, mc.sample(fn, x, key=key, num_samples=12, function_samples=True), rtol=1e-6)
        print("ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
