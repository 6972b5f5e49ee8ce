import contextlib
import functools
import gc
import os
import subprocess
import sys
import textwrap
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from scipy.special import logsumexp as np_logsumexp

import jaxdrop
from jaxdrop import mc, uncertainty

# A warning this file does not expect (identical samples, a recompilation, a deprecated spelling) is a failure.
pytestmark = [
    pytest.mark.filterwarnings("error::jaxdrop.mc.IdenticalSamplesWarning"),
    pytest.mark.filterwarnings("error::jaxdrop.mc.RecompileWarning"),
    pytest.mark.filterwarnings(r"error:`jaxdrop\.mc\.sample\(fn, key:DeprecationWarning"),
    pytest.mark.filterwarnings(r"error:`\w+Prediction\.uncertainty` is deprecated:DeprecationWarning"),
]

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


def _loop(fn, key, num_samples, *args, jit=True):
    """The reference: a Python loop over the keys ``fold_in(key, i)`` (each pass jitted, to keep tests fast, unless
    ``fn`` reads arrays that change: ``jax.jit`` would keep the old ones)."""
    fn = jax.jit(fn) if jit else fn
    return jnp.stack([fn(jaxdrop.fold_in(key, i), *args) for i in range(num_samples)])


# --- sampling --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 3, 20])
def test_sample_equals_python_loop_and_samples_differ(chunk_size):
    key = jax.random.key(7)
    samples = mc.sample(classifier, X, key=key, num_samples=10, chunk_size=chunk_size)
    assert samples.shape == (10, BATCH, CLASSES)
    np.testing.assert_allclose(samples, _loop(classifier, key, 10, X), rtol=1e-6, atol=1e-6)
    flat = np.asarray(samples).reshape(10, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(10) for j in range(i))  # no shared masks


def test_sample_pytree_outputs_kwargs_and_legacy_key():
    def fn(key, x, *, scale):
        out = jaxdrop.dropout(x, 0.5, key=key)
        return {"a": out * scale, "b": out.sum()}

    key = jax.random.PRNGKey(3)
    samples = mc.sample(fn, X, key=key, num_samples=5, chunk_size=2, scale=2.0)
    assert samples["a"].shape == (5, BATCH, FEATURES) and samples["b"].shape == (5,)
    expected = _loop(lambda k, x: fn(k, x, scale=2.0)["b"], key, 5, X)
    np.testing.assert_allclose(samples["b"], expected, rtol=1e-6)


def test_sample_runs_under_user_jit():
    run = jax.jit(lambda key, x: mc.sample(classifier, x, key=key, num_samples=6, chunk_size=4))
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
    # train=False turns flax's own Dropout off (jaxdrop.stochastic() only reaches jaxdrop's layers): identical
    # samples, zero epistemic spread, and a warning that says so.
    with pytest.warns(mc.IdenticalSamplesWarning, match=r"flax's own `nn.Dropout`"):
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
    np.testing.assert_allclose(result.predictive_std, np.sqrt(samples.var(0) + 1 / tau), rtol=1e-4)
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

    with pytest.warns(mc.IdenticalSamplesWarning, match="all 7 samples are identical"):
        cls = mc.predict(deterministic, X, key=jax.random.key(0), num_samples=7, chunk_size=3)
    np.testing.assert_allclose(cls.mutual_information, 0.0, atol=1e-6)
    np.testing.assert_array_equal(cls.variation_ratio, 0.0)
    np.testing.assert_allclose(cls.probs, jax.nn.softmax(deterministic(None, X)), rtol=1e-5)
    with pytest.warns(mc.IdenticalSamplesWarning, match="a function that ignores its `key`"):
        reg = mc.predict(
            lambda k, x: deterministic(k, x)[:, 0],
            X,
            key=jax.random.key(0),
            num_samples=7,
            chunk_size=3,
            task="regression",
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


MC_PROGRAMS = ("jit(_sample_impl)", "jit(_predict_impl)")


@contextlib.contextmanager
def _compiles():
    """The names of the mc programs XLA compiles within the block (``jax.monitoring`` compile events)."""
    names = []

    def listener(event, duration, fun_name="", **kwargs):
        if event == "/jax/core/compile/backend_compile_duration" and fun_name in MC_PROGRAMS:
            names.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_calls_that_differ_only_in_arrays_share_one_compilation():
    # Options are static (one program per function and options) and arrays are traced: a new key, new inputs or
    # new variables reuse the compiled program; a changed option (a Python number in the kwargs) compiles a new one.
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, scale: float = 1.0):
            return nn.Dense(CLASSES)(nn.Dropout(0.5, deterministic=False)(x)) * scale

    def scaled(key, x, scale):
        return classifier(key, x) * scale

    model = Model()
    with _compiles() as compiled:
        for seed in range(3):
            key, x, variables = jax.random.key(seed), X + seed, model.init(jax.random.key(seed), X)
            mc.predict(scaled, x, key=key, num_samples=4, apply_kwargs={"scale": 2.0})
            mc.predict(model, x, key=key, num_samples=4, variables=variables, apply_kwargs={"scale": 2.0})
            mc.sample(scaled, x, key=key, num_samples=4, scale=2.0)
        assert len(compiled) == 3
        mc.predict(scaled, X, key=jax.random.key(0), num_samples=4, apply_kwargs={"scale": 3.0})
        assert len(compiled) == 4


def test_static_arguments_are_told_apart_by_type():
    """``0 == False`` and ``1 == 1.0 == True`` hash alike; each must still get its own program."""

    def typed(key, x, flag):
        if not isinstance(flag, bool):
            raise TypeError(f"`flag` must be a bool; got {flag!r}")
        return jaxdrop.dropout(x, 0.5, key=key) * (2.0 if flag else 1.0)

    def kind(key, x, value):
        return jaxdrop.dropout(x, 0.5, key=key).sum() * 0 + {bool: 1, int: 2, float: 3}[type(value)]

    key = jax.random.key(0)
    mc.sample(typed, X, False, key=key, num_samples=2)
    with pytest.raises(TypeError, match="`flag` must be a bool; got 0"):
        mc.sample(typed, X, 0, key=key, num_samples=2)
    kinds = [float(mc.sample(kind, X, value, key=key, num_samples=2)[0]) for value in (True, 1, 1.0)]
    assert kinds == [1.0, 2.0, 3.0]


def test_memory_does_not_grow_with_num_samples():
    def temp_bytes(num_samples):
        fn = jax.jit(
            lambda key, x: mc.predict(classifier, x, key=key, num_samples=num_samples, chunk_size=10, labels=LABELS)
        )
        return fn.lower(jax.random.key(0), X).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(10_000) == temp_bytes(100)


# --- bad input -------------------------------------------------------------------------------------------------------


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
        mc.sample(classifier, X, key=jax.random.key(0), num_samples=-1)
    with pytest.raises(ValueError, match=r"`mesh_axis='x'` was given without a `mesh`"):
        mc.sample(classifier, X, key=jax.random.key(0), num_samples=2, mesh_axis="x")
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
        sharded = mc.sample(fn, x, key=key, num_samples=12, mesh=mesh)
        assert len(sharded.sharding.device_set) == 4
        np.testing.assert_allclose(sharded, mc.sample(fn, x, key=key, num_samples=12), rtol=1e-6)
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


# --- fresh parameters: arrays read from outside the arguments --------------------------------------------------------


def _head(key, x, w):
    return jaxdrop.dropout(jnp.tanh(x @ W1), 0.5, key=key) @ w


_GLOBAL_PARAMS = {"w": W2}


def _reads_a_global(key, x):
    return _head(key, x, _GLOBAL_PARAMS["w"])


def _reads_a_dict(params, key, x):
    return _head(key, x, params["w"])


class _Head:
    def __init__(self, w):
        self.w = w

    def logits(self, key, x):
        return _head(key, x, self.w)


def _global_dict():
    def update(w):
        _GLOBAL_PARAMS["w"] = w

    return _reads_a_global, update


def _closure_over_dict():
    params = {"w": W2}
    return (lambda key, x: _head(key, x, params["w"])), lambda w: params.update(w=w)


def _partial():
    params = {"w": W2}
    return functools.partial(_reads_a_dict, params), lambda w: params.update(w=w)


def _bound_method():
    head = _Head(W2)
    return head.logits, lambda w: setattr(head, "w", w)


def _numpy_changed_in_place():
    w_np = np.array(W2)

    def update(w):
        w_np[...] = w

    return (lambda key, x: _head(key, x, w_np)), update


def _equinox_model_in_a_lambda():
    import equinox as eqx

    model = eqx.nn.Linear(HIDDEN, CLASSES, use_bias=False, key=jax.random.key(0))
    model = eqx.tree_at(lambda m: m.weight, model, W2.T)

    def update(w):
        nonlocal model
        model = eqx.tree_at(lambda m: m.weight, model, w.T)

    return (lambda key, x: jax.vmap(model)(jaxdrop.dropout(jnp.tanh(x @ W1), 0.5, key=key))), update


@pytest.mark.parametrize(
    "make",
    [_global_dict, _closure_over_dict, _partial, _bound_method, _numpy_changed_in_place, _equinox_model_in_a_lambda],
)
def test_sample_follows_parameters_updated_outside_the_arguments(make):
    fn, update = make()
    key = jax.random.key(4)
    try:
        before = mc.sample(fn, X, key=key, num_samples=3)
        np.testing.assert_allclose(before, _loop(fn, key, 3, X, jit=False), rtol=1e-5, atol=1e-6)
        update(2 * W2)
        with pytest.warns(mc.RecompileWarning, match="pass the parameters as arguments"):
            after = mc.sample(fn, X, key=key, num_samples=3)
        np.testing.assert_allclose(after, _loop(fn, key, 3, X, jit=False), rtol=1e-5, atol=1e-6)  # computed afresh
        np.testing.assert_allclose(after, 2 * before, rtol=1e-5, atol=1e-6)
    finally:
        _GLOBAL_PARAMS["w"] = W2


def test_recompiles_only_when_an_array_changed_warns_once_and_frees_the_old_program():
    params = {"w": W2 + 0.0}  # an array of its own, to see it freed
    old = weakref.ref(params["w"])
    key = jax.random.key(0)

    def fn(key, x):
        return _head(key, x, params["w"])

    with _compiles() as compiled, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = mc.sample(fn, X, key=key, num_samples=3)
        mc.sample(fn, X, key=key, num_samples=3)  # nothing changed: same program, no warning
        assert len(compiled) == 1 and not caught
        params["w"] = params["w"] * 2
        second = mc.sample(fn, X, key=key, num_samples=3)
        params["w"] = params["w"] * 2
        mc.sample(fn, X, key=key, num_samples=3)
    assert len(compiled) == 3
    assert [w.category for w in caught] == [mc.RecompileWarning]  # once per function and options
    assert "`params['w']`" in str(caught[0].message) and "`fn`" in str(caught[0].message)
    np.testing.assert_allclose(second, 2 * first, rtol=1e-5, atol=1e-6)
    gc.collect()
    assert old() is None  # the first program, and the array it baked in, were dropped


def test_predict_follows_updated_linen_variables():
    class Linen(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(CLASSES)(nn.Dropout(0.5, deterministic=False)(nn.relu(nn.Dense(HIDDEN)(x))))

    linen, key = Linen(), jax.random.key(6)
    variables = linen.init(jax.random.key(0), X)
    before = mc.predict(linen, X, key=key, num_samples=3, variables=variables, return_samples=True).samples
    doubled = jax.tree.map(lambda a: 2 * a, variables)
    doubled["params"]["Dense_0"] = variables["params"]["Dense_0"]  # only the head: the logits double
    after = mc.predict(linen, X, key=key, num_samples=3, variables=doubled, return_samples=True).samples
    np.testing.assert_allclose(after, 2 * before, rtol=1e-5, atol=1e-6)


def test_predict_follows_nnx_parameters_updated_in_place():
    model, key = NnxModel(nnx.Rngs(0, dropout=1)), jax.random.key(6)
    before = mc.predict(model, X, key=key, num_samples=3, return_samples=True).samples
    model.l3.kernel[...] = 2 * model.l3.kernel[...]  # in place, as `model.l3.kernel.value = ...` would
    model.l3.bias[...] = 2 * model.l3.bias[...]
    after = mc.predict(model, X, key=key, num_samples=3, return_samples=True).samples
    np.testing.assert_allclose(after, 2 * before, rtol=1e-5, atol=1e-6)
    nnx.update(model.l3, jax.tree.map(lambda a: 2 * a, nnx.state(model.l3, nnx.Param)))
    again = mc.predict(model, X, key=key, num_samples=3, return_samples=True).samples
    np.testing.assert_allclose(again, 4 * before, rtol=1e-5, atol=1e-6)


def test_predict_follows_an_equinox_model_closed_over_by_a_lambda():
    fn, update = _equinox_model_in_a_lambda()
    key = jax.random.key(6)
    before = mc.predict(fn, X, key=key, num_samples=3, return_samples=True).samples
    update(2 * W2)
    with pytest.warns(mc.RecompileWarning, match=r"`model\.weight`"):
        after = mc.predict(fn, X, key=key, num_samples=3, return_samples=True).samples
    np.testing.assert_allclose(after, 2 * before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after, _loop(fn, key, 3, X, jit=False), rtol=1e-5, atol=1e-6)


# --- evaluation mode with MC dropout, and samples that cannot differ -------------------------------------------------


def test_linen_eval_mode_keeps_batchnorm_in_eval_and_samples_jaxdrop_dropout():
    """apply_kwargs={"train": False}: BatchNorm reads its running statistics (it would need a mutable
    ``batch_stats`` otherwise) while jaxdrop's Dropout samples, because mc traces inside jaxdrop.stochastic()."""
    from jaxdrop import linen as jd_linen

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            hidden = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(HIDDEN)(x)))
            return nn.Dense(CLASSES)(jd_linen.Dropout(0.5)(hidden, deterministic=not train))

    model = Model()
    variables = model.init(jax.random.key(0), X, train=False)
    key = jax.random.key(2)
    result = mc.predict(
        model, X, key=key, num_samples=4, variables=variables, apply_kwargs={"train": False}, return_samples=True
    )
    with jaxdrop.stochastic():
        expected = jnp.stack(
            [model.apply(variables, X, train=False, rngs={"dropout": jaxdrop.fold_in(key, i)}) for i in range(4)]
        )
    np.testing.assert_allclose(result.samples, expected, rtol=1e-5, atol=1e-6)
    flat = np.asarray(result.samples).reshape(4, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(4) for j in range(i))
    sampled = mc.sample(
        lambda k, v, x: model.apply(v, x, train=False, rngs={"dropout": k}), variables, X, key=key, num_samples=4
    )
    np.testing.assert_allclose(sampled, result.samples, rtol=1e-5, atol=1e-6)


def test_sample_warns_when_the_key_is_ignored():
    with pytest.warns(mc.IdenticalSamplesWarning, match="all 3 samples are identical"):
        mc.sample(lambda key, x: jnp.tanh(x @ W1), X, key=jax.random.key(0), num_samples=3)
    mc.sample(lambda key, x: jnp.tanh(x @ W1), X, key=jax.random.key(0), num_samples=1)  # one sample: nothing to say


# --- calling conventions ---------------------------------------------------------------------------------------------


def test_sample_old_positional_spelling_warns_and_gives_the_same_samples():
    key = jax.random.key(1)
    new = mc.sample(classifier, X, key=key, num_samples=3)
    with pytest.warns(DeprecationWarning, match=r"sample\(fn, \*args, key=key, num_samples=num_samples\)"):
        old = mc.sample(classifier, key, 3, X)
    np.testing.assert_array_equal(old, new)
    with pytest.warns(DeprecationWarning):
        only_key = mc.sample(lambda k: classifier(k, X), key, num_samples=3)  # sample(fn, key, num_samples=T)
    np.testing.assert_allclose(only_key, new, rtol=1e-5, atol=1e-6)
    legacy = jax.random.PRNGKey(1)
    with pytest.warns(DeprecationWarning):
        old = mc.sample(classifier, legacy, 3, X)
    np.testing.assert_array_equal(old, mc.sample(classifier, X, key=legacy, num_samples=3))


def test_sample_without_key_or_num_samples_names_them():
    with pytest.raises(TypeError, match=r"`key` is required"):
        mc.sample(classifier, X, num_samples=3)
    with pytest.raises(TypeError, match=r"`key` is required"):
        mc.sample(classifier, jax.random.key(0), X)  # a key then an array: not the old spelling either
    with pytest.raises(TypeError, match=r"`num_samples` is required"):
        mc.sample(classifier, X, key=jax.random.key(0))


def test_uncertainty_alias_is_deprecated_and_names_the_explicit_field():
    key = jax.random.key(0)
    cls = mc.predict(classifier, X, key=key, num_samples=3)
    with pytest.warns(DeprecationWarning, match=r"use `\.predictive_entropy`"):
        np.testing.assert_array_equal(cls.uncertainty, cls.predictive_entropy)
    reg = mc.predict(regressor, X, key=key, num_samples=3, task="regression", tau=2.0)
    np.testing.assert_allclose(reg.predictive_std, np.sqrt(reg.variance), rtol=1e-6)
    with pytest.warns(DeprecationWarning, match=r"use `\.predictive_std`"):
        np.testing.assert_array_equal(reg.uncertainty, reg.predictive_std)
