"""The determinism contract (docs/determinism.md), tested for every public random function.

Same key, shape, rate and generator give bit-identical outputs: under ``jit`` and eagerly, ``vmap`` over keys and a
loop, ``lax.scan`` and unrolled calls, and with inputs sharded over 1, 2 and 8 devices (one subprocess with 8 fake
CPU devices; it also checks packed masks whose last-axis shards are not a multiple of 8 elements, and the collective
ops XLA adds for them). The fast generator's bits are pinned against a pure-Python Threefry so a change to them
(which would silently change every user's masks) fails here. Also: the ``jaxdrop.debug`` key-reuse warnings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import _masks
from jaxdrop.debug import KeyReuseWarning, key_reuse_warnings

# Every public function that draws randomness, adapted to ``fn(x, rate, key)``, with an input shape whose axes are
# divisible by 8 (so every axis can be sharded over 8 devices). The mesh subprocess imports this table.
RANK3, RANK4, RANK5 = (8, 16, 8), (8, 8, 8, 8), (8, 8, 8, 8, 8)


def _word_ids(shape):
    return (jnp.arange(np.prod(shape[:-1])).reshape(shape[:-1]) * 7) % 5  # repeated token ids


VARIANTS = {
    "dropout": (lambda x, r, k: jaxdrop.dropout(x, r, key=k), RANK3),
    "dropout/broadcast(1,)": (lambda x, r, k: jaxdrop.dropout(x, r, key=k, broadcast_dims=(1,)), RANK3),
    "dropout/broadcast(0,2)": (lambda x, r, k: jaxdrop.dropout(x, r, key=k, broadcast_dims=(0, 2)), RANK3),
    "dropout/classic": (lambda x, r, k: jaxdrop.dropout(x, r, key=k, inverted=False), RANK3),
    "dropout/jax": (lambda x, r, k: jaxdrop.dropout(x, r, key=k, generator="jax"), RANK3),
    "dropout/fast16": (lambda x, r, k: jaxdrop.dropout(x, r, key=k, generator="fast16"), RANK3),
    "dropout/jax/broadcast(0,)": (
        lambda x, r, k: jaxdrop.dropout(x, r, key=k, broadcast_dims=(0,), generator="jax"),
        RANK3,
    ),
    "spatial_dropout": (lambda x, r, k: jaxdrop.spatial_dropout(x, r, key=k), RANK4),
    "spatial_dropout1d": (lambda x, r, k: jaxdrop.spatial_dropout1d(x, r, key=k), RANK3),
    "spatial_dropout2d/channel1": (lambda x, r, k: jaxdrop.spatial_dropout2d(x, r, key=k, channel_axis=1), RANK4),
    "spatial_dropout3d": (lambda x, r, k: jaxdrop.spatial_dropout3d(x, r, key=k), RANK5),
    "alpha_dropout": (lambda x, r, k: jaxdrop.alpha_dropout(x, r, key=k), RANK3),
    "feature_alpha_dropout": (lambda x, r, k: jaxdrop.feature_alpha_dropout(x, r, key=k), RANK4),
    "gaussian_dropout": (lambda x, r, k: jaxdrop.gaussian_dropout(x, r, key=k), RANK3),
    "gaussian_noise": (lambda x, r, k: jaxdrop.gaussian_noise(x, r, key=k), RANK3),
    "drop_path": (lambda x, r, k: jaxdrop.drop_path(x, r, key=k), RANK3),
    "drop_path/batch": (lambda x, r, k: jaxdrop.drop_path(x, r, key=k, mode="batch"), RANK3),
    "residual_drop_path": (lambda x, r, k: jaxdrop.residual_drop_path(x, 2.0 * x, r, key=k), RANK3),
    "dropblock": (lambda x, r, k: jaxdrop.dropblock(x, r, key=k, block_size=3), RANK4),
    "dropblock2d/shared": (
        lambda x, r, k: jaxdrop.dropblock2d(x, r, key=k, block_size=2, share_across_channels=True),
        RANK4,
    ),
    "dropblock3d": (lambda x, r, k: jaxdrop.dropblock3d(x, r, key=k, block_size=2), RANK5),
    "dropconnect": (lambda x, r, k: jaxdrop.dropconnect(x, r, key=k), RANK3),
    "dropconnect_params": (lambda x, r, k: jaxdrop.dropconnect_params({"w": x}, r, key=k)["w"], RANK3),
    "locked_dropout": (lambda x, r, k: jaxdrop.locked_dropout(x, r, key=k), RANK3),
    "locked_mask": (lambda x, r, k: jaxdrop.locked_mask(k, r, x.shape)(x), RANK3),
    "token_dropout": (lambda x, r, k: jaxdrop.token_dropout(x, r, key=k), RANK3),
    "word_dropout": (lambda x, r, k: jaxdrop.word_dropout(x, _word_ids(x.shape), r, key=k), RANK3),
    "dot_product_attention": (
        lambda x, r, k: jaxdrop.dot_product_attention(x, x, x, dropout_rng=k, dropout_rate=r),
        RANK4,
    ),
    "dot_product_attention/per-head": (
        lambda x, r, k: jaxdrop.dot_product_attention(x, x, x, dropout_rng=k, dropout_rate=r, broadcast_dropout=False),
        RANK4,
    ),
    "concrete_dropout": (lambda x, r, k: jaxdrop.concrete_dropout(x, jnp.log(r) - jnp.log1p(-r), key=k), RANK3),
}
RATE = 0.3


def _inputs(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def _assert_bitwise_equal(a, b, what=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=what)


# Variants whose output is ``where(keep, x * scale, 0)``: one rounding, so bit-identical in every program. The others
# do more float arithmetic after the mask (an affine map, a residual add, a matmul, Gaussian noise) which XLA may
# fuse differently in different programs (e.g. contract ``a * b + c`` into an FMA under ``jit`` but not eagerly):
# their random draws are identical, their values agree to a few ulps (docs/determinism.md).
NOT_BITWISE_ACROSS_PROGRAMS = {
    "alpha_dropout",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "residual_drop_path",
    "dot_product_attention",
    "dot_product_attention/per-head",
    "concrete_dropout",
}
# One per family in the default run; the rest run with `-m slow` (the mesh test below covers all in the default run).
DEFAULT_RUN = {"dropout/jax", "spatial_dropout3d", "alpha_dropout", "dropblock", "word_dropout"}


def _assert_same_program_result(name, a, b, what):
    if name in NOT_BITWISE_ACROSS_PROGRAMS:
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(a == 0, b == 0, err_msg=what)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=what)
    else:
        _assert_bitwise_equal(a, b, what)


@pytest.mark.parametrize(
    "name", [name if name in DEFAULT_RUN else pytest.param(name, marks=pytest.mark.slow) for name in VARIANTS]
)
def test_jit_eager_vmap_and_loop_agree(name):
    fn, shape = VARIANTS[name]
    x = _inputs(shape)
    keys = jax.random.split(jax.random.key(1), 2)
    jitted = jax.jit(fn, static_argnums=1)
    looped = [jitted(x, RATE, k) for k in keys]
    mapped = jax.jit(jax.vmap(fn, in_axes=(None, None, 0)), static_argnums=1)(x, RATE, keys)
    for i in range(len(keys)):
        _assert_same_program_result(name, mapped[i], looped[i], f"{name}: vmap vs loop")
    _assert_same_program_result(name, fn(x, RATE, keys[0]), looped[0], f"{name}: eager vs jit")
    # A fresh key object with the same data gives the same output; another key another output.
    _assert_bitwise_equal(jitted(x, RATE, jax.random.split(jax.random.key(1), 2)[0]), looped[0], name)
    if name != "drop_path/batch":  # one decision for the whole input: two keys agree with probability 0.58
        assert not np.array_equal(np.asarray(looped[0]), np.asarray(looped[1])), f"{name}: two keys, same output"


@pytest.mark.parametrize(
    "name", ["dropout", "dropout/jax", "spatial_dropout", "drop_path", "dropblock", "word_dropout"]
)
def test_traced_rate_equals_static_rate_when_representable(name):
    # 0.25 * 2**32 is exact in float32, so the static (float64) and traced (float32) thresholds agree exactly.
    fn, shape = VARIANTS[name]
    x, key = _inputs(shape), jax.random.key(2)
    static = jax.jit(lambda x, k: fn(x, 0.25, k))(x, key)
    traced = jax.jit(fn)(x, jnp.float32(0.25), key)
    if name == "dropblock":  # the traced path renormalises with a float32 seed rate: same mask, ulp-close values
        np.testing.assert_array_equal(np.asarray(static) == 0, np.asarray(traced) == 0)
        np.testing.assert_allclose(static, traced, rtol=1e-6)
    else:
        _assert_bitwise_equal(static, traced, name)


@pytest.mark.parametrize("name", ["dropout", "alpha_dropout", "token_dropout"])
def test_scan_equals_unrolled(name):
    fn, shape = VARIANTS[name]
    x = _inputs(shape)
    keys = jax.random.split(jax.random.key(3), 4)

    def step(carry, key):
        out = fn(carry, RATE, key)
        # The next carry depends on the output through exact arithmetic (times 0.5 is exact, FMA or not): a tanh
        # here came out 1 ulp apart in the two programs without backend optimisation (tests/conftest.py).
        return out * 0.5 + 0.5, out

    _, scanned = jax.jit(lambda x, keys: jax.lax.scan(step, x, keys))(x, keys)
    carry = x
    for i in range(len(keys)):
        carry, out = jax.jit(step)(carry, keys[i])
        _assert_same_program_result(name, scanned[i], out, f"{name}: scan step {i}")


def test_typed_legacy_and_key_data_give_one_mask():
    x = _inputs(RANK3)
    typed = jaxdrop.dropout(x, RATE, key=jax.random.key(4))
    legacy = jaxdrop.dropout(x, RATE, key=jax.random.PRNGKey(4))
    rewrapped = jaxdrop.dropout(x, RATE, key=jax.random.wrap_key_data(jax.random.key_data(jax.random.key(4))))
    _assert_bitwise_equal(typed, legacy)
    _assert_bitwise_equal(typed, rewrapped)


def test_mask_depends_on_shape_not_on_values_or_dtype():
    key = jax.random.key(5)
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        for x in (jnp.ones(RANK3, dtype), _inputs(RANK3).astype(dtype) + 10):
            kept = np.asarray(jaxdrop.dropout(x, RATE, key=key) != 0)
            np.testing.assert_array_equal(kept, np.asarray(_masks.keep_mask(key, RATE, RANK3, "fast")))


def test_gradient_uses_the_forward_mask():
    x = _inputs(RANK3) + 5.0  # no zeros
    key = jax.random.key(6)
    for name in ("dropout", "spatial_dropout1d", "drop_path", "word_dropout", "locked_mask"):
        fn = VARIANTS[name][0]
        y, vjp = jax.vjp(lambda x, fn=fn: fn(x, RATE, key), x)
        (grad,) = vjp(jnp.ones_like(y))
        np.testing.assert_array_equal(np.asarray(grad) == 0, np.asarray(y) == 0, err_msg=name)


# --- the fast generator's bits are pinned ------------------------------------------------------------------------

MASK64 = "1010111111101011000100100011110010000011011110110011110011001010"  # key(0), rate 0.5, shape (64,)


def _threefry13_reference(key_words, counter_words):
    """Threefry-2x32-13 in plain Python integers (Salmon et al. 2011), independent of the jnp implementation:
    both output words."""
    mask = 0xFFFFFFFF
    rotations = (13, 15, 26, 6, 17, 29, 16, 24)
    k0, k1 = key_words
    schedule = (k0, k1, k0 ^ k1 ^ 0x1BD11BDA)
    x0, x1 = (counter_words[0] + k0) & mask, (counter_words[1] + k1) & mask
    for r in range(13):
        x0 = (x0 + x1) & mask
        x1 = ((x1 << rotations[r % 8]) | (x1 >> (32 - rotations[r % 8]))) & mask
        x1 ^= x0
        if r % 4 == 3:
            s = (r + 1) // 4
            x0 = (x0 + schedule[s % 3]) & mask
            x1 = (x1 + schedule[(s + 1) % 3] + s) & mask
    return x0, x1


def test_fast_generator_bits_are_pinned():
    # Fast generator v2 (since 0.2.0): element (..., c) of a last axis of n is word c % 2 of the block at counter
    # (..., c // 2) of the grid (..., ceil(n / 2)). Key derivation is JAX's (`jax.random.bits(key, (2,))`): if
    # this changes in a JAX release, every fast mask changes with it; docs/determinism.md says so.
    words = [int(w) for w in jax.random.bits(jax.random.key(0), (2,), jnp.uint32)]
    assert words == [0xF29A4FA7, 0xFA843692], [hex(w) for w in words]
    bits = np.asarray(_masks.random_bits(jax.random.key(0), (4, 5, 7)))
    expected = [
        _threefry13_reference(words, ((row * 4 + column // 2), 0))[column % 2]
        for row in range(4 * 5)
        for column in range(7)
    ]
    np.testing.assert_array_equal(bits.ravel(), np.array(expected, np.uint32))
    mask = np.asarray(jaxdrop.dropout(jnp.ones(64), 0.5, key=jax.random.key(0)) != 0)
    assert "".join("1" if kept else "0" for kept in mask) == MASK64


def test_large_mask_counters_use_both_words():
    # Beyond the word limit the leading axes go to the high counter word: bits equal the reference at (low, high).
    # Shape (3, 4, 8) pairs into blocks (3, 4, 4); with a 16-element word the low word is the last axis' block.
    words = [int(w) for w in jax.random.bits(jax.random.key(7), (2,), jnp.uint32)]
    key_words = tuple(jnp.uint32(w) for w in words)
    bits = _masks.per_element(key_words, (3, 4, 8), 2, lambda w0, w1: (w0, w1), _word_limit=16)
    expected = [
        _threefry13_reference(words, (column // 2, row))[column % 2] for row in range(3 * 4) for column in range(8)
    ]
    np.testing.assert_array_equal(np.asarray(bits).ravel(), np.array(expected, np.uint32))


# --- device meshes: one subprocess with 8 fake CPU devices -------------------------------------------------------

MESH_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
sys.path.insert(0, {tests_dir!r})
from test_determinism import VARIANTS, NOT_BITWISE_ACROSS_PROGRAMS, RATE, _inputs
import jaxdrop.linen, jaxdrop.nnx, flax.linen as nn
from flax import nnx
from jaxdrop.cli.bench._sharded import collective_ops
assert len(jax.devices()) == 8, jax.devices()
devices = np.array(jax.devices())

class LinenModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jaxdrop.linen.Dropout(0.3, broadcast_dims=(1,))(x, deterministic=False)
        return jaxdrop.linen.Dropout(0.5)(x, deterministic=False)

def linen_fn(x, rate, key):
    return LinenModel().apply({{}}, x, rngs={{"dropout": key}})

def nnx_fn(x, rate, key):
    return jaxdrop.nnx.Dropout(rate, broadcast_dims=(0,), rngs=nnx.Rngs(dropout=key))(x, deterministic=False)

variants = dict(VARIANTS)
variants["linen.Dropout"] = (linen_fn, VARIANTS["dropout"][1])
variants["nnx.Dropout"] = (nnx_fn, VARIANTS["dropout"][1])
shapes = sorted({{shape for _, shape in variants.values()}})
inputs = {{shape: _inputs(shape) for shape in shapes}}

@jax.jit
def every_variant(inputs, key):  # one program for all variants: one compilation per layout
    return {{name: fn(inputs[shape], RATE, key) for name, (fn, shape) in variants.items()}}

def spec(axes, rank):  # axes: mesh axis name per array axis, clipped to the rank
    return P(*[axes.get(axis) for axis in range(rank)])

# (devices, mesh axis names, {{array axis: mesh axis name}}); the first is the unsharded reference
layouts = [((1,), ("d",), {{0: "d"}}), ((8,), ("d",), {{0: "d"}}), ((2,), ("d",), {{1: "d"}})]
if {full}:
    layouts += [((2, 4), ("a", "b"), {{0: "a", -1: "b"}})]
    layouts += [((n,), ("d",), {{axis: "d"}}) for n in (2, 8) for axis in range(2, 5)]
    layouts += [((8,), ("d",), {{1: "d"}}), ((8,), ("d",), {{-1: "d"}})]
key = jax.random.key(11)
reference, checked, failures, bitwise = None, 0, [], 0
for shape_, names, axes in layouts:
    mesh = Mesh(devices[: int(np.prod(shape_))].reshape(shape_), names)
    placed = {{}}
    for shape, x in inputs.items():
        rank_axes = {{(a if a >= 0 else len(shape) + a): n for a, n in axes.items() if a < len(shape)}}
        placed[shape] = jax.device_put(x, NamedSharding(mesh, spec(rank_axes, len(shape))))
    out = {{name: np.asarray(y) for name, y in every_variant(placed, key).items()}}
    if reference is None:
        reference = out
        continue
    for name, y in out.items():
        checked += 1
        if np.array_equal(y.view(np.uint8), reference[name].view(np.uint8)):
            bitwise += 1
        elif name not in NOT_BITWISE_ACROSS_PROGRAMS or not np.allclose(y, reference[name], rtol=1e-5, atol=1e-6):
            failures.append(f"{{name}} on {{shape_}} devices, axes {{axes}}")
print("checked", checked, "bitwise", bitwise)

# Packed masks on a sharded pairing axis (docs/determinism.md): the decisions are packed 8 to a byte along it, so
# a shard whose length is not a multiple of 8 starts inside a byte. Per mesh: (shape, partition spec) and whether
# the shard length is a multiple of 8 (then each device hashes its own blocks and the program has no collective).
packed_cases = {{
    (4,): [((8, 12), (None, "d")), ((4, 6, 20), (None, None, "d")), ((8, 36), (None, "d")),
           ((4, 12, 1), (None, "d", None))],  # shards of 3, 5, 9; the pairing axis is not the last axis
    (2, 4): [((6, 20), ("a", "b")), ((4, 6, 20), ("a", None, "b"))],  # a 2-D mesh, shards of 5
    (3,): [((4, 24), (None, "d"))],  # shards of 8 on an odd number of devices: 3 bytes a row
    (5,): [((2, 40), (None, "d"))],  # 5 bytes a row
}}
packed_checked, packed_collectives = 0, {{}}
for mesh_shape, cases in packed_cases.items():
    names = ("a", "b") if len(mesh_shape) == 2 else ("d",)
    mesh = Mesh(devices[: int(np.prod(mesh_shape))].reshape(mesh_shape), names)
    shardings = [NamedSharding(mesh, P(*spec)) for _, spec in cases]
    xs = [jax.device_put(_inputs(shape), sharding) for (shape, _), sharding in zip(cases, shardings)]
    for generator in ("fast", "fast16"):
        fn = lambda xs, k: [jaxdrop.dropout(x, RATE, key=k, generator=generator) for x in xs]
        unsharded = jax.jit(fn)([_inputs(shape) for shape, _ in cases], key)  # one device
        compiled = jax.jit(fn, in_shardings=(shardings, None), out_shardings=shardings).lower(xs, key).compile()
        ops = collective_ops(compiled.as_text())
        packed_collectives[f"{{mesh_shape}} {{generator}}"] = ops
        if mesh_shape in ((3,), (5,)):  # shards of 8: no communication
            as_expected = not ops
        else:  # jax 0.10.2: a few unpacked decisions (uint8 or bool) move to the next device along the mesh axis
            decisions = ("collective-permute u8[", "collective-permute pred[")
            as_expected = bool(ops) and all(op.startswith(decisions) for op in ops)
        if not as_expected:
            failures.append(f"packed {{generator}} on mesh {{mesh_shape}}: collectives {{ops}}")
        for (shape, spec), sharding, y, expected in zip(cases, shardings, compiled(xs, key), unsharded):
            packed_checked += 1
            assert y.sharding.is_equivalent_to(sharding, y.ndim), (y.sharding, spec)
            if not np.array_equal(np.asarray(y).view(np.uint8), np.asarray(expected).view(np.uint8)):
                failures.append(f"packed {{generator}} {{shape}} on mesh {{mesh_shape}}, spec {{spec}}")
# Odd-sized last axes split unevenly inside a program (31 as shards of 8, 8, 8, 7; 27 as 7, 7, 7, 6): JAX accepts
# an uneven sharding only as a constraint inside `jit` (not for its inputs and outputs), where XLA pads the shards.
uneven = NamedSharding(Mesh(devices[:4], ("d",)), P(None, "d"))
odd_inputs = [_inputs((4, 31)), _inputs((3, 27))]
for generator in ("fast", "fast16"):
    constrain = lambda x: jax.lax.with_sharding_constraint(x, uneven)
    fn = lambda xs: [constrain(jaxdrop.dropout(constrain(x), RATE, key=key, generator=generator)) for x in xs]
    for x, y in zip(odd_inputs, jax.jit(fn)(odd_inputs)):
        packed_checked += 1
        expected = jaxdrop.dropout(x, RATE, key=key, generator=generator)
        if not np.array_equal(np.asarray(y).view(np.uint8), np.asarray(expected).view(np.uint8)):
            failures.append(f"packed {{generator}} {{x.shape}} unevenly sharded over 4 devices")
print("packed checked", packed_checked, "collectives", packed_collectives)
print("FAILURES", failures)
"""


def _run_mesh_script(full: bool) -> str:
    code = MESH_SCRIPT.format(tests_dir=os.path.dirname(__file__), full=full)
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow  # the default run checks the same on a 2-process job: tests/test_multiprocess.py
def test_every_variant_bit_identical_on_1_2_8_devices():
    out = _run_mesh_script(full=False)
    assert "FAILURES []" in out, out
    assert f"checked {2 * (len(VARIANTS) + 2)}" in out, out
    assert "packed checked 20 " in out, out  # 10 sharded shapes x ("fast", "fast16")


@pytest.mark.slow
def test_every_variant_bit_identical_with_every_axis_sharded():
    out = _run_mesh_script(full=True)
    assert "FAILURES []" in out, out


# --- jaxdrop.debug: key reuse in one trace ----------------------------------------------------------------------


def _reuse_warnings(fn, *args):
    with warnings.catch_warnings(record=True) as caught, key_reuse_warnings():
        warnings.simplefilter("always")
        fn(*args)
    return [str(w.message) for w in caught if issubclass(w.category, KeyReuseWarning)]


def _twice(first, second):
    def run(x, key):
        return first(x, RATE, key) + second(x, RATE, key)

    return run


@pytest.mark.parametrize(
    ("first", "second"),
    [("dropout", "dropout"), ("token_dropout", "word_dropout")],
)
def test_debug_warns_on_key_reuse_under_jit_and_vmap_and_eagerly(first, second):
    x, key = _inputs(RANK3), jax.random.key(0)
    run = _twice(VARIANTS[first][0], VARIANTS[second][0])
    for fn, keys in [(run, key), (jax.jit(run), key), (jax.vmap(run, in_axes=(None, 0)), jax.random.split(key, 2))]:
        messages = _reuse_warnings(fn, x, keys)
        assert len(messages) == 1, messages
        assert "two dropout calls" in messages[0] and "jax.random.split" in messages[0]
    # legacy keys too (JAX's own checker ignores them)
    assert len(_reuse_warnings(run, x, jax.random.PRNGKey(0))) == 1


def test_debug_warning_names_both_calls_and_points_at_user_code():
    key = jax.random.key(0)  # a concrete key closed over by the traced function

    def model(x):
        h = jaxdrop.spatial_dropout2d(x, RATE, key=key)  # validated once, though it delegates to dropout
        return jaxdrop.dot_product_attention(h, h, h, dropout_rng=key, dropout_rate=RATE)  # and so is this one

    first = model.__code__.co_firstlineno + 1
    with warnings.catch_warnings(record=True) as caught, key_reuse_warnings():
        warnings.simplefilter("always")
        jax.eval_shape(model, _inputs(RANK4))  # tracing is enough
    (warning,) = [w for w in caught if issubclass(w.category, KeyReuseWarning)]
    assert (warning.filename, warning.lineno) == (__file__, first + 1)  # the stacklevel names the user's line
    message = str(warning.message)
    assert f"jaxdrop.spatial_dropout2d called at {__file__}:{first} and " in message, message
    assert f"jaxdrop.dot_product_attention called at {__file__}:{first + 1}." in message, message


def test_debug_warns_for_equal_concrete_keys_and_layers_sharing_a_key():
    x = _inputs(RANK3)
    messages = _reuse_warnings(
        lambda: (jaxdrop.dropout(x, 0.5, key=jax.random.key(3)), jaxdrop.dropout(x, 0.5, key=jax.random.key(3)))
    )
    assert len(messages) == 1
    layer = jaxdrop.linen.Dropout(0.5)
    key = jax.random.key(4)
    messages = _reuse_warnings(lambda: [layer.apply({}, x, deterministic=False, rng=key) for _ in range(2)])
    assert len(messages) == 1, messages


def test_debug_silent_for_distinct_keys_grad_and_when_off():
    x, key = _inputs(RANK3), jax.random.key(0)

    def model(x, key):
        keys = jax.random.split(key, 4)
        h = jaxdrop.dropout(x, 0.1, key=keys[0])
        h = jaxdrop.spatial_dropout1d(h, 0.1, key=keys[1])
        h = jaxdrop.dot_product_attention(
            h[..., None], h[..., None], h[..., None], dropout_rng=keys[2], dropout_rate=0.1
        )
        return jaxdrop.dropout(h[..., 0], 0.1, key=jaxdrop.fold_in(key, "last"))

    assert _reuse_warnings(model, x, key) == []
    assert _reuse_warnings(jax.jit(model), x, key) == []
    assert _reuse_warnings(jax.grad(lambda x: model(x, key).sum()), x) == []  # JAX's own checker raises here

    def mc_fn(k, x):
        return jaxdrop.dropout(x, 0.5, key=k)

    assert _reuse_warnings(lambda: jaxdrop.mc.sample(mc_fn, x, key=key, num_samples=2)) == []
    # The same key in two separate traces is not a reuse within one trace.
    assert (
        _reuse_warnings(lambda: [jax.jit(lambda x, s=s: jaxdrop.dropout(x * s, 0.5, key=key))(x) for s in (1, 2)]) == []
    )
    # Off: nothing recorded, nothing warned.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _twice(VARIANTS["dropout"][0], VARIANTS["dropout"][0])(x, key)
    assert not [w for w in caught if issubclass(w.category, KeyReuseWarning)]
