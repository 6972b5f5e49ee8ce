"""jaxdrop.dropout: semantics, edge rates, transforms, dtypes, memory of the backward pass, bad input."""

import contextlib
import io
import subprocess
import sys
import textwrap

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.ad_checkpoint import print_saved_residuals
from jax.test_util import check_grads
from stat_bounds import binomial_bound

import jaxdrop
from jaxdrop import _checks

GENERATORS = ["fast", "jax"]
KEY = jax.random.key(0)
RANDOM_PRIMITIVES = ("random_bits", "random_seed", "random_wrap", "random_unwrap", "threefry2x32", "iota")


def _primitive_names(jaxpr) -> set[str]:
    """Primitive names in a jaxpr, including nested ones (pjit, remat, scan bodies)."""
    text = str(jaxpr)
    return {name for name in RANDOM_PRIMITIVES if f" {name}[" in text or f" {name} " in text}


class EagerAndJitTest(chex.TestCase):
    """The basic semantics, each test run twice by ``chex.variants``: eagerly and under ``jax.jit``."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(generator=GENERATORS, rate=(0.1, 0.5, 0.9))
    def test_inverted_dropout_values(self, generator, rate):
        x = jnp.full((500, 400), 3.0)
        y = self.variant(lambda x, key: jaxdrop.dropout(x, rate, key=key, generator=generator))(x, KEY)
        chex.assert_shape(y, x.shape)
        chex.assert_type(y, jnp.float32)
        kept = np.asarray(y != 0)
        np.testing.assert_allclose(np.asarray(y)[kept], 3.0 / (1 - rate), rtol=1e-6)
        assert abs(kept.mean() - (1 - rate)) < binomial_bound(kept.size, 1 - rate)
        assert abs(float(y.mean()) - 3.0) < 3.0 * binomial_bound(kept.size, 1 - rate) / (1 - rate)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*GENERATORS)
    def test_classic_dropout(self, generator):
        x = jnp.full((300, 300), 2.0)
        y = self.variant(lambda x, key: jaxdrop.dropout(x, 0.25, key=key, inverted=False, generator=generator))(x, KEY)
        assert set(np.unique(np.asarray(y)).tolist()) == {0.0, 2.0}
        at_inference = self.variant(lambda x: jaxdrop.dropout(x, 0.25, deterministic=True, inverted=False))(x)
        chex.assert_trees_all_close(at_inference, jnp.full_like(x, 1.5), rtol=1e-7)
        at_rate_zero = self.variant(lambda x, key: jaxdrop.dropout(x, 0.0, key=key, inverted=False))(x, KEY)
        chex.assert_trees_all_equal(at_rate_zero, x)

    @chex.variants(with_jit=True, without_jit=True)
    def test_key_not_needed_for_static_zero_or_one_or_deterministic(self):
        x = jnp.ones(3)
        chex.assert_trees_all_equal(self.variant(lambda x: jaxdrop.dropout(x, 0.0))(x), x)
        chex.assert_trees_all_equal(self.variant(lambda x: jaxdrop.dropout(x, 1.0))(x), jnp.zeros_like(x))
        chex.assert_trees_all_equal(self.variant(lambda x: jaxdrop.dropout(x, 0.4, deterministic=True))(x), x)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*GENERATORS)
    def test_rate_one_gives_zeros_and_zero_gradients(self, generator):
        x = jnp.array([1.0, -2.0, jnp.inf, 1e30])

        def loss(x, rate):
            return jnp.sum(jaxdrop.dropout(x, rate, key=KEY, generator=generator) * 3.0)

        for rate in [1.0, jnp.float32(1.0)]:
            y = self.variant(lambda x, r: jaxdrop.dropout(x, r, key=KEY, generator=generator))(x, rate)
            chex.assert_trees_all_equal(y, jnp.zeros_like(x))
            grad = self.variant(jax.grad(loss))(x, rate)
            chex.assert_trees_all_equal(grad, jnp.zeros_like(x))
            assert not np.isnan(np.asarray(grad)).any()

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(dtype=("float32", "bfloat16", "float16"), generator=GENERATORS)
    def test_dtype_preserved_and_scaled_once(self, dtype, generator):
        dtype = jnp.dtype(dtype)
        x = jnp.ones((200, 200), dtype)
        static_rate = self.variant(lambda x, key: jaxdrop.dropout(x, 0.1, key=key, generator=generator))
        traced_rate = self.variant(lambda x, key, rate: jaxdrop.dropout(x, rate, key=key, generator=generator))
        for y in (static_rate(x, KEY), traced_rate(x, KEY, jnp.float32(0.1))):
            chex.assert_type(y, dtype)
            kept = np.asarray(y != 0)
            # the keep decision is made in integer space: rate 0.1 is not quantised by the dtype
            assert abs(kept.mean() - 0.9) < binomial_bound(kept.size, 0.9)
            # one rounding of the exact 1/0.9 to the dtype (bf16 arithmetic would round 0.9 first)
            expected = np.asarray(jnp.asarray(1 / 0.9, jnp.float32).astype(dtype)).astype(np.float32)
            np.testing.assert_array_equal(np.asarray(y, np.float32)[kept], expected)
        grad = self.variant(jax.grad(lambda x: jaxdrop.dropout(x, 0.5, key=KEY).astype(jnp.float32).sum()))(x)
        chex.assert_type(grad, dtype)


def test_expectation_preserved_over_keys():
    x = jnp.linspace(-2.0, 2.0, 64)
    keys = jax.random.split(jax.random.key(1), 4000)
    mean = jax.vmap(lambda k: jaxdrop.dropout(x, 0.3, key=k))(keys).mean(0)
    # per-element std of the mean: |x| sqrt(rate / (1 - rate) / n)
    tol = 5 * np.abs(np.asarray(x)) * np.sqrt(0.3 / 0.7 / 4000) + 1e-6
    assert np.all(np.abs(np.asarray(mean - x)) <= tol)


def test_jax_generator_matches_flax_linen_dropout(key):
    x = jax.random.normal(jax.random.key(1), (37, 64))
    for rate in [0.1, 0.5, 0.7]:
        theirs = nn.Dropout(rate).apply({}, x, deterministic=False, rng=key)
        ours = jaxdrop.dropout(x, rate, key=key, generator="jax")
        np.testing.assert_array_equal(ours == 0, theirs == 0)
        np.testing.assert_allclose(ours, theirs, rtol=2e-7)  # flax divides, we multiply by 1/keep


def test_jax_generator_matches_flax_with_broadcast_dims(key):
    x = jnp.ones((4, 6, 8))
    theirs = nn.Dropout(0.5, broadcast_dims=(1,)).apply({}, x, deterministic=False, rng=key)
    ours = jaxdrop.dropout(x, 0.5, key=key, broadcast_dims=(1,), generator="jax")
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("broadcast_dims", [(0,), (-1,), (0, 2), (1, -1)])
def test_broadcast_dims_share_mask(key, broadcast_dims):
    x = jnp.ones((12, 13, 14))
    kept = np.asarray(jaxdrop.dropout(x, 0.5, key=key, broadcast_dims=broadcast_dims) != 0)
    for axis in broadcast_dims:
        assert np.all(kept == kept.take([0], axis=axis)), axis
    assert 0 < kept.mean() < 1


def test_static_zero_rate_and_deterministic_trace_no_random_ops():
    x = jnp.ones((4, 5))
    for kwargs in [dict(rate=0.0), dict(rate=0.5, deterministic=True), dict(rate=0.0, inverted=False)]:
        jaxpr = jax.make_jaxpr(lambda x, k, kw=kwargs: jaxdrop.dropout(x, key=k, **kw))(x, jax.random.key(0))
        assert not jaxpr.jaxpr.eqns, jaxpr
        assert jaxpr.jaxpr.outvars[0] is jaxpr.jaxpr.invars[0]
    jaxpr = jax.make_jaxpr(lambda x: jaxdrop.dropout(x, 0.3, deterministic=True, inverted=False))(x)
    assert not _primitive_names(jaxpr.jaxpr) & set(RANDOM_PRIMITIVES)


def test_traced_rate_no_recompile_and_correct_rates():
    x = jnp.ones((100_000,))
    f = jax.jit(lambda x, rate, key: jaxdrop.dropout(x, rate, key=key))
    for seed, rate in enumerate([0.1, 0.3, 0.6, 0.0, 1.0]):
        kept = float((f(x, jnp.float32(rate), jax.random.key(seed)) != 0).mean())
        assert abs(kept - (1 - rate)) < binomial_bound(x.size, 1 - rate)
    assert f._cache_size() == 1


def test_vmap_over_rates(key):
    x = jnp.ones((50_000,))
    rates = jnp.linspace(0.0, 0.9, 7)
    kept = jax.vmap(lambda r: (jaxdrop.dropout(x, r, key=key) != 0).mean())(rates)
    for rate, fraction in zip(rates.tolist(), kept.tolist(), strict=True):
        assert abs(fraction - (1 - rate)) < binomial_bound(x.size, 1 - rate)


def test_traced_invalid_rate_gives_nan_not_silent_result(key):
    x = jnp.ones(1000)
    f = jax.jit(lambda r: jaxdrop.dropout(x, r, key=key))
    for bad in [-0.1, 1.5, float("nan")]:
        assert np.isnan(np.asarray(f(jnp.float32(bad)))).all()


def test_no_gradient_to_rate(key):
    x = jnp.ones(100)
    grad = jax.grad(lambda r: jaxdrop.dropout(x, r, key=key).sum())(0.5)
    assert float(grad) == 0.0


@pytest.mark.parametrize("generator", GENERATORS)
def test_gradients_and_forward_mode(key, generator):
    x = jax.random.normal(jax.random.key(2), (5, 7))
    f = lambda x: jaxdrop.dropout(x, 0.4, key=key, generator=generator)
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))
    y, vjp = jax.vjp(f, x)
    (grad,) = vjp(jnp.ones_like(y))
    np.testing.assert_allclose(grad, jnp.where(y != 0, 1 / 0.6, 0.0), rtol=1e-6)


def test_jit_equals_eager_and_vmap_equals_loop():
    x = jax.random.normal(jax.random.key(3), (16, 9))
    keys = jax.random.split(jax.random.key(4), 6)
    f = lambda k: jaxdrop.dropout(x, 0.35, key=k, broadcast_dims=(0,))
    batched = jax.vmap(f)(keys)
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(batched[i], f(k))
        np.testing.assert_array_equal(jax.jit(f)(k), f(k))
    assert not np.array_equal(batched[0], batched[1])


def test_eager_call_runs_compiled_programs_and_matches_jit(key):
    # Eagerly (nothing traced), apply_keep_mask skips jax.checkpoint, which traced its body into a jaxpr and ran
    # it primitive by primitive on every call: the mask is one program and its application another, compiled
    # once per shape and dtype. The values are those of the jitted call, bit for bit (inf kept or exactly 0).
    x = jnp.asarray(np.random.default_rng(0).standard_normal((6, 9)), jnp.float32).at[0, :4].set(jnp.inf)
    rate = jnp.float32(0.3)  # a concrete array: the traced-rate path, run eagerly
    call = lambda x, k, r: jaxdrop.dropout(x, r, key=k, generator="fast16")
    eager = call(x, key, rate)
    chex.assert_trees_all_equal(eager, jax.jit(call)(x, key, rate))
    applied = jaxdrop.functional._core._apply_keep_compiled
    size = applied._cache_size()
    chex.assert_trees_all_equal(call(x, key, rate), eager)
    assert applied._cache_size() == size > 0  # the application compiled once, not again on a repeated call


def test_scan_equals_unrolled():
    x = jnp.ones((8, 10))
    keys = jax.random.split(jax.random.key(6), 5)

    def step(carry, key):
        out = jaxdrop.dropout(carry, 0.3, key=key)
        return out * 0.5 + 0.5, out

    _, scanned = jax.lax.scan(step, x, keys)
    carry = x
    for i, k in enumerate(keys):
        carry, out = step(carry, k)
        np.testing.assert_array_equal(scanned[i], out)


def _saved_residuals(f, *args) -> list[str]:
    """The lines `jax.ad_checkpoint.print_saved_residuals` prints: one per array kept for the backward pass."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_saved_residuals(f, *args)
    return buffer.getvalue().splitlines()


def test_backward_pass_does_not_store_the_mask(key):
    x = jnp.ones((64, 256))
    ours = _saved_residuals(lambda x: jnp.sum(jaxdrop.dropout(x, 0.5, key=key)), x)
    assert all("64,256" not in line for line in ours), ours  # only the key and a scalar scale
    assert len(ours) <= 2, ours
    theirs = _saved_residuals(lambda x: jnp.sum(nn.Dropout(0.5).apply({}, x, deterministic=False, rng=key)), x)
    assert any("bool[64,256]" in line for line in theirs), theirs  # flax keeps the mask


def test_backward_temp_memory_small_compared_to_flax(key):
    x = jnp.ones((8, 8, 64, 64))
    ours = jax.jit(jax.grad(lambda x: jnp.sum(jaxdrop.dropout(x, 0.5, key=key) ** 2)))
    theirs = jax.jit(jax.grad(lambda x: jnp.sum(nn.Dropout(0.5).apply({}, x, deterministic=False, rng=key) ** 2)))
    ours_temp = ours.lower(x).compile().memory_analysis().temp_size_in_bytes
    theirs_temp = theirs.lower(x).compile().memory_analysis().temp_size_in_bytes
    assert ours_temp <= 0.05 * theirs_temp, (ours_temp, theirs_temp)


def test_dropped_elements_are_exact_zeros_even_for_inf_input(key):
    x = jnp.full((1000,), jnp.inf)
    y = jaxdrop.dropout(x, 0.5, key=key)
    assert set(np.unique(np.asarray(y)).tolist()) == {0.0, np.inf}


@pytest.mark.slow  # the default run checks every variant on 8x1/1x8/2x4/4x2 meshes: tests/test_multiprocess.py
def test_masks_identical_across_device_meshes():
    code = textwrap.dedent(
        """
        import os
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import jaxdrop
        assert len(jax.devices()) == 4
        x = jax.random.normal(jax.random.key(0), (8, 16, 12))
        key = jax.random.key(1)
        for dims in [(), (0,), (1,), (0, 2)]:
            reference = np.asarray(jaxdrop.dropout(x, 0.4, key=key, broadcast_dims=dims))
            for n in (1, 2, 4):
                mesh = Mesh(np.array(jax.devices()[:n]), ("d",))
                for spec in [P("d"), P(None, "d")]:
                    xs = jax.device_put(x, NamedSharding(mesh, spec))
                    f = jax.jit(lambda x, k: jaxdrop.dropout(x, 0.4, key=k, broadcast_dims=dims))
                    np.testing.assert_array_equal(np.asarray(f(xs, key)), reference)
        print("ok")
        """
    )
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    import os

    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


BAD_CALLS = [
    (dict(rate=-0.1), ValueError, "`rate` must be in \\[0, 1\\]; got -0.1"),
    (dict(rate=1.5), ValueError, "`rate` must be in \\[0, 1\\]; got 1.5"),
    (dict(rate=float("nan")), ValueError, "`rate` must be in \\[0, 1\\]; got nan"),
    (dict(rate=np.array([0.1, 0.2])), ValueError, "`rate` must be a scalar"),
    (dict(rate="0.5"), TypeError, "`rate` must be a real number"),
    (dict(rate=True), TypeError, "`rate` must be a real number"),
    (dict(rate=0.5, key=None), ValueError, "`key` is required"),
    (dict(rate=0.5, key=jnp.zeros(3, jnp.uint32)), TypeError, "`key` must be a PRNG key"),
    (dict(rate=0.5, key=jnp.zeros(2, jnp.float32)), TypeError, "`key` must be a PRNG key"),
    (dict(rate=0.5, key="seed"), TypeError, "`key` must be a PRNG key"),
    (dict(rate=0.5, broadcast_dims=(2,)), ValueError, "`broadcast_dims` entry 2 is out of range"),
    (dict(rate=0.5, broadcast_dims=(0, -2)), ValueError, "`broadcast_dims` has repeated axes"),
    (dict(rate=0.5, broadcast_dims=(0.5,)), TypeError, "`broadcast_dims` must contain integers"),
    (dict(rate=0.5, generator="philox"), ValueError, "`generator` must be one of"),
    (dict(rate=0.5, deterministic=None), TypeError, "`deterministic` must be a bool"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_CALLS)
def test_bad_input_raises_clear_errors(kwargs, error, message):
    kwargs = {"key": jax.random.key(0), **kwargs}
    with pytest.raises(error, match=message):
        jaxdrop.dropout(jnp.ones((2, 3)), **kwargs)


def test_bad_input_integer_x_and_batched_key_and_traced_flag():
    with pytest.raises(TypeError, match="`x` must have a floating-point dtype"):
        jaxdrop.dropout(jnp.ones(3, jnp.int32), 0.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`key` must be a single key"):
        jaxdrop.dropout(jnp.ones(3), 0.5, key=jax.random.split(jax.random.key(0), 2))
    with pytest.raises(TypeError, match="`deterministic` must be a static Python bool"):
        jax.jit(lambda d: jaxdrop.dropout(jnp.ones(3), 0.5, key=jax.random.key(0), deterministic=d))(True)
    with pytest.raises(TypeError, match="`rate` must be a real scalar in \\[0, 1\\]; got a traced value of dtype bool"):
        jax.jit(lambda r: jaxdrop.dropout(jnp.ones(3), r, key=jax.random.key(0)))(True)


def test_rate_of_any_real_dtype_is_accepted_eagerly_and_under_jit():
    # Before: a concrete bfloat16 rate was rejected eagerly ("must be a real number") but accepted under jit.
    x, key = jnp.ones((4, 8)), jax.random.key(0)
    for rate in (jnp.asarray(0.5, jnp.bfloat16), jnp.float16(0.5), np.float32(0.5), np.asarray(0.5), 0.5):
        assert _checks.probability(rate, "rate") == 0.5  # static: a Python float, whatever the dtype
        assert jaxdrop.dropout(x, rate, deterministic=True) is x
    traced = jax.jit(lambda r: jnp.stack([_checks.probability(r, "rate")]))
    assert traced(jnp.asarray(0.5, jnp.bfloat16)).dtype == jnp.float32 and traced(jnp.int32(1))[0] == 1.0
    bf16_rate = jnp.asarray(0.5, jnp.bfloat16)
    static, traced_bf16 = jax.jit(
        lambda x, r: (jaxdrop.dropout(x, bf16_rate, key=key), jaxdrop.dropout(x, r, key=key))
    )(x, bf16_rate)
    chex.assert_trees_all_equal(static, traced_bf16, jax.jit(lambda x: jaxdrop.dropout(x, 0.5, key=key))(x))


def test_inputs_must_be_arrays_not_lists():
    with pytest.raises(TypeError, match=r"`x` must be a floating-point array .* got \[1, 2, 3\] \(list\)"):
        jaxdrop.dropout([1, 2, 3], 0.5, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"`x` must be a floating-point array"):
        jaxdrop.dropout([1.0, 2.0], 0.5, deterministic=True)
