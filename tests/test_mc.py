import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from scipy.special import logsumexp as np_logsumexp

import jaxdrop
from jaxdrop import mc, uncertainty

BATCH, FEATURES, HIDDEN, CLASSES = 4, 3, 8, 5


def _weights(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (FEATURES, HIDDEN)), jax.random.normal(k2, (HIDDEN, CLASSES))


W1, W2 = _weights()
X = jax.random.normal(jax.random.key(1), (BATCH, FEATURES))
LABELS = jnp.array([0, 1, 2, 3])


def classifier(key, x):
    hidden = jnp.tanh(x @ W1)
    return jaxdrop.dropout(hidden, 0.5, key=key) @ W2


def regressor(key, x):
    return classifier(key, x)[:, 0]


def hetero_regressor(key, x):
    out = classifier(key, x)
    return out[:, 0], 0.3 * out[:, 1]


def _loop(fn, key, num_samples, *args):
    """The reference: a Python loop over the keys ``fold_in(key, i)`` (each pass jitted, to keep tests fast)."""
    fn = jax.jit(fn)
    return jnp.stack([fn(jaxdrop.fold_in(key, i), *args) for i in range(num_samples)])


# --- sampling -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 3, 20])
def test_sample_equals_python_loop_and_samples_differ(chunk_size):
    key = jax.random.key(7)
    samples = mc.sample(classifier, key, 10, X, chunk_size=chunk_size)
    assert samples.shape == (10, BATCH, CLASSES)
    np.testing.assert_allclose(samples, _loop(classifier, key, 10, X), rtol=1e-6, atol=1e-6)
    flat = np.asarray(samples).reshape(10, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(10) for j in range(i))  # no shared masks


def test_sample_pytree_outputs_kwargs_and_legacy_key():
    def fn(key, x, *, scale):
        out = jaxdrop.dropout(x, 0.5, key=key)
        return {"a": out * scale, "b": out.sum()}

    key = jax.random.PRNGKey(3)
    samples = mc.sample(fn, key, 5, X, chunk_size=2, scale=2.0)
    assert samples["a"].shape == (5, BATCH, FEATURES) and samples["b"].shape == (5,)
    expected = _loop(lambda k, x: fn(k, x, scale=2.0)["b"], key, 5, X)
    np.testing.assert_allclose(samples["b"], expected, rtol=1e-6)


def test_sample_runs_under_user_jit():
    run = jax.jit(lambda key, x: mc.sample(classifier, key, 6, x, chunk_size=4))
    np.testing.assert_allclose(run(jax.random.key(0), X), _loop(classifier, jax.random.key(0), 6, X), atol=1e-6)


def _dot_shapes(jaxpr):
    """Output shapes of every ``dot_general`` in ``jaxpr`` and its sub-jaxprs (jit, scan, cond bodies)."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.append(tuple(eqn.outvars[0].aval.shape))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    shapes += _dot_shapes(inner)
    return shapes


def test_deterministic_prefix_is_computed_once_per_adapter():
    """The matmul before the dropout stays unbatched (B, H); only the head is batched over samples."""
    num_samples = 7

    class Linen(nn.Module):
        @nn.compact
        def __call__(self, x):
            hidden = nn.Dense(HIDDEN)(x)
            return nn.Dense(CLASSES)(nn.Dropout(0.5, deterministic=False)(hidden))

    class Nnx(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.l2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.drop(self.l1(x)))

    linen = Linen()
    variables = linen.init(jax.random.key(0), X)
    models = [(classifier, None), (linen, variables), (Nnx(nnx.Rngs(0, dropout=1)), None)]
    for model, model_variables in models:
        jaxpr = jax.make_jaxpr(
            lambda key, x, m=model, v=model_variables: mc.predict(
                m, x, key=key, num_samples=num_samples, variables=v, chunk_size=3
            )
        )(jax.random.key(0), X)
        shapes = _dot_shapes(jaxpr.jaxpr)
        assert (BATCH, HIDDEN) in shapes, shapes
        assert not any(s[-1] == HIDDEN and len(s) == 3 for s in shapes), shapes  # prefix never batched
        assert any(s[-1] == CLASSES and len(s) == 3 for s in shapes), shapes  # head batched over samples


# --- predict: adapters -----------------------------------------------------------------------------------------------


def test_predict_linen_samples_differ_and_equal_loop():
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            hidden = nn.relu(nn.Dense(HIDDEN)(x))
            return nn.Dense(CLASSES)(nn.Dropout(0.5, deterministic=not train)(hidden))

    model = Model()
    variables = model.init(jax.random.key(0), X)
    key = jax.random.key(5)
    result = mc.predict(
        model,
        X,
        key=key,
        num_samples=6,
        variables=variables,
        apply_kwargs={"train": True},
        return_samples=True,
        chunk_size=4,
    )
    expected = _loop(lambda k, x: model.apply(variables, x, train=True, rngs={"dropout": k}), key, 6, X)
    np.testing.assert_allclose(result.samples, expected, rtol=1e-5, atol=1e-6)
    flat = np.asarray(result.samples).reshape(6, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(6) for j in range(i))
    # train=False through apply_kwargs turns dropout off: zero epistemic spread.
    off = mc.predict(model, X, key=key, num_samples=6, variables=variables, apply_kwargs={"train": False})
    np.testing.assert_allclose(off.mutual_information, 0.0, atol=1e-6)


def _numpy(x):
    return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


class NnxModel(nnx.Module):
    def __init__(self, rngs, deterministic=True):
        self.l1 = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
        self.drop1 = nnx.Dropout(0.5, rngs=rngs, deterministic=deterministic)
        self.l2 = nnx.Linear(HIDDEN, HIDDEN, rngs=rngs)
        self.drop2 = nnx.Dropout(0.5, rngs=rngs, deterministic=deterministic)
        self.l3 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.l3(self.drop2(nnx.relu(self.l2(self.drop1(nnx.relu(self.l1(x)))))))


def test_predict_nnx_samples_differ_equal_loop_and_leave_model_untouched():
    model = NnxModel(nnx.Rngs(0, dropout=1))  # built in eval mode: predict must turn dropout on
    before = jax.tree.map(_numpy, nnx.state(model, nnx.RngState))
    key = jax.random.key(2)
    result = mc.predict(model, X, key=key, num_samples=3, return_samples=True, chunk_size=2)

    # The reference loop: a copy in train mode whose streams are re-keyed from the sample key and stream path.
    expected = []
    for i in range(3):
        copy = nnx.clone(model)
        copy.train()
        for path, layer in nnx.iter_graph(copy):
            if isinstance(layer, nnx.Dropout):
                stream_path = "/".join((*path, "rngs", "key"))
                layer.rngs.key[...] = jaxdrop.fold_in(jaxdrop.fold_in(key, i), stream_path)
                layer.rngs.count[...] = 0
        expected.append(copy(X))
    np.testing.assert_allclose(result.samples, jnp.stack(expected), rtol=1e-5, atol=1e-6)
    flat = np.asarray(result.samples).reshape(3, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(3) for j in range(i))
    after = jax.tree.map(_numpy, nnx.state(model, nnx.RngState))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    assert model.drop1.deterministic  # the user's module is not switched to train mode


def test_predict_nnx_default_stream_gets_per_sample_masks():
    """flax issue 4950 family: a Dropout built from Rngs(0) holds a 'default' stream; samples must still differ."""
    model = NnxModel(nnx.Rngs(0))
    result = mc.predict(model, X, key=jax.random.key(0), num_samples=4, return_samples=True)
    flat = np.asarray(result.samples).reshape(4, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(4) for j in range(i))


def test_predict_nnx_without_streams_raises():
    class NoDropout(nnx.Module):
        def __init__(self):
            self.l = nnx.Linear(FEATURES, CLASSES, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.l(x)

    model = NoDropout()  # nnx.Linear keeps no RNG stream after init
    with pytest.raises(ValueError, match="no RNG stream tagged 'dropout'"):
        mc.predict(model, X, key=jax.random.key(0), num_samples=2)


# --- predict: streaming statistics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [3])
def test_classification_streaming_equals_materialised(chunk_size):
    key = jax.random.key(11)
    num_samples = 10
    streamed = mc.predict(classifier, X, key=key, num_samples=num_samples, chunk_size=chunk_size, labels=LABELS)
    full = mc.predict(classifier, X, key=key, num_samples=num_samples, labels=LABELS, return_samples=True)
    sample_probs = jax.nn.softmax(full.samples, -1)
    np.testing.assert_allclose(streamed.probs, sample_probs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        streamed.predictive_entropy, uncertainty.predictive_entropy(sample_probs.mean(0)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        streamed.expected_entropy, uncertainty.expected_entropy(sample_probs), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        streamed.mutual_information, uncertainty.mutual_information(sample_probs), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(streamed.variation_ratio, uncertainty.variation_ratio(sample_probs), atol=1e-7)
    np.testing.assert_allclose(streamed.margin, uncertainty.margin(sample_probs.mean(0)), atol=1e-6)
    log_probs = np.asarray(jax.nn.log_softmax(full.samples, -1), np.float64)
    label_log_probs = log_probs[:, np.arange(BATCH), np.asarray(LABELS)]
    np.testing.assert_allclose(streamed.nll, np.log(num_samples) - np_logsumexp(label_log_probs, axis=0), rtol=1e-5)
    np.testing.assert_allclose(streamed.nll.mean(), uncertainty.nll(sample_probs.mean(0), LABELS), rtol=1e-5)
    # The summaries of the full run equal the streamed ones too.
    for name in ("probs", "predictive_entropy", "expected_entropy", "variation_ratio", "nll"):
        np.testing.assert_allclose(getattr(full, name), getattr(streamed, name), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(streamed.predictions, jnp.argmax(streamed.probs, -1))
    np.testing.assert_array_equal(streamed.uncertainty, streamed.predictive_entropy)
    assert streamed.samples is None


@pytest.mark.parametrize("chunk_size", [4])
def test_regression_streaming_equals_materialised_and_gal_formula(chunk_size):
    key, tau, target_mean, target_std = jax.random.key(3), 2.5, 1.0, 3.0
    targets = jnp.array([0.5, -1.0, 2.0, 4.0])
    num_samples = 10
    result = mc.predict(
        regressor,
        X,
        key=key,
        num_samples=num_samples,
        task="regression",
        chunk_size=chunk_size,
        tau=tau,
        targets=targets,
        target_mean=target_mean,
        target_std=target_std,
    )
    samples = np.asarray(_loop(regressor, key, num_samples, X), np.float64) * target_std + target_mean
    np.testing.assert_allclose(result.mean, samples.mean(0), rtol=1e-5)
    np.testing.assert_allclose(result.epistemic_variance, samples.var(0), rtol=1e-4)
    np.testing.assert_allclose(result.aleatoric_variance, np.full(BATCH, 1 / tau), rtol=1e-6)
    np.testing.assert_allclose(result.variance, samples.var(0) + 1 / tau, rtol=1e-4)
    # Gal & Ghahramani 2016 (their code), per test point.
    ll = (
        np_logsumexp(-0.5 * tau * (np.asarray(targets)[None] - samples) ** 2, 0)
        - np.log(num_samples)
        - 0.5 * np.log(2 * np.pi)
        + 0.5 * np.log(tau)
    )
    np.testing.assert_allclose(result.log_likelihood, ll, rtol=1e-5)
    np.testing.assert_allclose(result.uncertainty, np.sqrt(samples.var(0) + 1 / tau), rtol=1e-4)
    standardised = _loop(regressor, key, num_samples, X)
    np.testing.assert_allclose(
        uncertainty.gaussian_log_likelihood(
            standardised, targets, tau=tau, target_mean=target_mean, target_std=target_std
        ),
        ll.mean(),
        rtol=1e-5,
    )


def test_heteroscedastic_regression_chunked_equals_unchunked():
    key = jax.random.key(4)
    targets = jnp.array([0.5, -1.0, 2.0, 4.0])
    kwargs = dict(key=key, num_samples=9, task="regression", heteroscedastic=True, targets=targets)
    chunked = mc.predict(hetero_regressor, X, chunk_size=4, **kwargs)
    full = mc.predict(hetero_regressor, X, return_samples=True, **kwargs)
    means, log_vars = full.samples
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), chunked, dataclass_without_samples(full)
    )
    np.testing.assert_allclose(chunked.aleatoric_variance, uncertainty.aleatoric_variance(log_vars), rtol=1e-5)
    np.testing.assert_allclose(chunked.epistemic_variance, uncertainty.epistemic_variance(means), rtol=1e-4)
    np.testing.assert_allclose(
        chunked.log_likelihood.mean(),
        uncertainty.gaussian_log_likelihood(means, targets, log_variance=log_vars),
        rtol=1e-5,
    )


def dataclass_without_samples(result):
    import dataclasses

    return dataclasses.replace(result, samples=None)


def test_deterministic_model_has_zero_epistemic_uncertainty():
    def deterministic(key, x):
        return jnp.tanh(x @ W1) @ W2

    cls = mc.predict(deterministic, X, key=jax.random.key(0), num_samples=7, chunk_size=3)
    np.testing.assert_allclose(cls.mutual_information, 0.0, atol=1e-6)
    np.testing.assert_array_equal(cls.variation_ratio, 0.0)
    np.testing.assert_allclose(cls.probs, jax.nn.softmax(deterministic(None, X)), rtol=1e-5)
    reg = mc.predict(
        lambda k, x: deterministic(k, x)[:, 0], X, key=jax.random.key(0), num_samples=7, chunk_size=3, task="regression"
    )
    np.testing.assert_allclose(reg.epistemic_variance, 0.0, atol=1e-10)
    assert reg.aleatoric_variance is None


def test_bf16_outputs_and_probs_outputs():
    key = jax.random.key(0)
    bf16 = mc.predict(lambda k, x: classifier(k, x).astype(jnp.bfloat16), X, key=key, num_samples=8)
    f32 = mc.predict(classifier, X, key=key, num_samples=8)
    assert bf16.probs.dtype == jnp.float32
    np.testing.assert_allclose(bf16.probs, f32.probs, atol=2e-2)
    probs = mc.predict(lambda k, x: jax.nn.softmax(classifier(k, x)), X, key=key, num_samples=8, outputs="probs")
    np.testing.assert_allclose(probs.expected_entropy, f32.expected_entropy, rtol=1e-4)


def test_result_is_a_pytree_under_jit():
    run = jax.jit(lambda key: mc.predict(classifier, X, key=key, num_samples=5))
    result = run(jax.random.key(0))
    assert isinstance(result, mc.ClassificationPrediction) and result.nll is None
    assert len(jax.tree.leaves(result)) == 6


def test_calls_that_differ_only_in_arrays_share_one_compilation():
    # Options are jit-static (hashed into one cache key) and arrays are traced: a new key, new inputs or new
    # variables reuse the compiled program; a changed option (a Python number in the kwargs) compiles a new one.
    from jaxdrop.mc import _sampling

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, scale: float = 1.0):
            return nn.Dense(CLASSES)(nn.Dropout(0.5, deterministic=False)(x)) * scale

    def scaled(key, x, scale):
        return classifier(key, x) * scale

    model = Model()
    cache_size = _sampling._jitted_call._cache_size
    start = cache_size()
    for seed in range(3):
        key, x, variables = jax.random.key(seed), X + seed, model.init(jax.random.key(seed), X)
        mc.predict(scaled, x, key=key, num_samples=4, apply_kwargs={"scale": 2.0})
        mc.predict(model, x, key=key, num_samples=4, variables=variables, apply_kwargs={"scale": 2.0})
        mc.sample(scaled, key, 4, x, scale=2.0)
    assert cache_size() == start + 3
    mc.predict(scaled, X, key=jax.random.key(0), num_samples=4, apply_kwargs={"scale": 3.0})
    assert cache_size() == start + 4


def test_memory_does_not_grow_with_num_samples():
    def temp_bytes(num_samples):
        fn = jax.jit(
            lambda key, x: mc.predict(classifier, x, key=key, num_samples=num_samples, chunk_size=10, labels=LABELS)
        )
        return fn.lower(jax.random.key(0), X).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(10_000) == temp_bytes(100)


# --- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(num_samples=0), ValueError, r"`num_samples` must be >= 1; got 0"),
        (dict(num_samples=2.5), TypeError, r"`num_samples` must be a positive Python int"),
        (dict(num_samples=True), TypeError, r"`num_samples` must be a positive Python int"),
        (dict(chunk_size=0), ValueError, r"`chunk_size` must be >= 1; got 0"),
        (dict(task="ranking"), ValueError, r"`task` must be one of"),
        (dict(outputs="scores"), ValueError, r"`outputs` must be one of"),
        (dict(labels=jnp.array([0, 1])), ValueError, r"`labels` must have the batch shape"),
        (dict(labels=jnp.array([0.0, 1.0, 0.0, 1.0])), TypeError, r"`labels` must be integer"),
        (dict(task="regression", targets=jnp.zeros(3), tau=1.0), ValueError, r"`targets` must have the shape"),
        (dict(task="regression", targets=jnp.zeros(4)), ValueError, r"needs a noise model"),
        (dict(task="regression", tau=0.0), ValueError, r"`tau` must be a finite number > 0; got 0.0"),
        (dict(task="regression", heteroscedastic=True), TypeError, r"pair \(mean, log_variance\)"),
        (dict(tau=1.0), ValueError, r"regression options"),
        (dict(key=None), ValueError, r"`key` is required"),
        (dict(variables={}), ValueError, r"`variables` is only for linen"),
    ],
)
def test_predict_bad_input(kwargs, error, match):
    model = regressor if kwargs.get("task") == "regression" and "heteroscedastic" not in kwargs else classifier
    args = dict(key=jax.random.key(0), num_samples=4) | kwargs
    with pytest.raises(error, match=match):
        mc.predict(model, X, **args)


def test_sample_bad_input():
    with pytest.raises(ValueError, match=r"`num_samples` must be >= 1; got -1"):
        mc.sample(classifier, jax.random.key(0), -1, X)
    with pytest.raises(ValueError, match=r"`mesh_axis='x'` was given without a `mesh`"):
        mc.sample(classifier, jax.random.key(0), 2, X, mesh_axis="x")
    with pytest.raises(ValueError, match=r"`variables` is required for a linen module"):
        mc.predict(nn.Dense(3), X, key=jax.random.key(0), num_samples=2)


def test_sharded_samples_equal_unsharded():
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, jaxdrop
        from jaxdrop import mc
        assert jax.device_count() == 4
        w = jax.random.normal(jax.random.key(0), (3, 5))
        fn = lambda key, x: jaxdrop.dropout(x, 0.5, key=key) @ w
        x = jnp.ones((2, 3))
        mesh = jax.make_mesh((4,), ("samples",))
        key = jax.random.key(1)
        sharded = mc.sample(fn, key, 12, x, mesh=mesh)
        assert len(sharded.sharding.device_set) == 4
        np.testing.assert_allclose(sharded, mc.sample(fn, key, 12, x), rtol=1e-6)
        a = mc.predict(fn, x, key=key, num_samples=12, chunk_size=8, mesh=mesh, labels=jnp.array([0, 1]))
        b = mc.predict(fn, x, key=key, num_samples=12, labels=jnp.array([0, 1]))
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)
        print("ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_jaxdrop_flax_layers_give_distinct_samples_chunking_invariant():
    """jaxdrop's own linen/nnx layers work through the adapters like flax's (per-sample masks, chunk-invariant)."""
    from jaxdrop import linen as jd_linen
    from jaxdrop import nnx as jd_nnx

    class Linen(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(CLASSES)(jd_linen.Dropout(0.5)(nn.relu(nn.Dense(HIDDEN)(x)), deterministic=not train))

    class Nnx(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
            self.drop = jd_nnx.Dropout(0.5, deterministic=True, rngs=rngs)
            self.l2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.drop(nnx.relu(self.l1(x))))

    linen = Linen()
    variables = linen.init(jax.random.key(0), X)
    models = [
        dict(model=linen, variables=variables, apply_kwargs={"train": True}),
        dict(model=Nnx(nnx.Rngs(0, dropout=1))),
    ]
    for spec in models:
        full = mc.predict(**spec, inputs=X, key=jax.random.key(3), num_samples=5, return_samples=True)
        chunked = mc.predict(**spec, inputs=X, key=jax.random.key(3), num_samples=5, chunk_size=2)
        flat = np.asarray(full.samples).reshape(5, -1)
        assert all(not np.allclose(flat[i], flat[j]) for i in range(5) for j in range(i))
        np.testing.assert_allclose(chunked.probs, full.probs, rtol=1e-5, atol=1e-6)
        assert float(chunked.mutual_information.min()) > 0.0
