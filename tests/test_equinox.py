"""jaxdrop.equinox: the same behaviour as equinox.nn.Dropout, and each variant layer equals its function."""

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

eqx = pytest.importorskip("equinox")

import jaxdrop  # noqa: E402
import jaxdrop.equinox as jeqx  # noqa: E402

BOTH = pytest.mark.parametrize("cls", [eqx.nn.Dropout, jeqx.Dropout], ids=["equinox", "jaxdrop"])


@pytest.fixture
def x():
    return jax.random.normal(jax.random.key(42), (3, 4, 5))


# ------------------------------------------------------------ Equinox's own usage, run on both classes


@BOTH
def test_training_zeroes_or_scales(cls, x, key):
    y = cls()(x, key=key)
    assert bool(jnp.all((y == 0) | jnp.isclose(y, x / 0.5)))
    assert 0 < int(jnp.sum(y == 0)) < x.size


@BOTH
def test_inference_is_identity_with_or_without_key(cls, x, key):
    assert bool(jnp.all(cls(inference=True)(x) == x))
    assert bool(jnp.all(cls(inference=True)(x, key=key) == x))
    assert bool(jnp.all(cls()(x, inference=True) == x))  # the call-time flag takes precedence
    y = cls(inference=True)(x, key=key, inference=False)
    assert bool(jnp.any(y != x))


@BOTH
def test_key_required_in_training(cls, x):
    with pytest.raises(RuntimeError, match=re.escape("Dropout requires a key when running in non-deterministic mode.")):
        cls(0.5)(x)
    with pytest.raises(RuntimeError, match="requires a key"):
        cls(0.5, inference=True)(x, inference=False)


@BOTH
def test_p_zero_needs_no_key(cls, x):
    assert bool(jnp.all(cls(p=0)(x) == x))
    assert bool(jnp.all(cls(p=0.0)(x) == x))


@BOTH
def test_inference_mode_switches_a_model(cls, x, key):
    model = [cls(0.5), {"inner": cls(0.3)}]
    off = eqx.nn.inference_mode(model)
    assert off[0].inference and off[1]["inner"].inference
    assert bool(jnp.all(off[0](x, key=key) == x))
    on = eqx.nn.inference_mode(off, value=False)
    assert not on[0].inference
    assert bool(jnp.any(on[0](x, key=key) != x))


@BOTH
def test_deprecated_deterministic(cls, x):
    with pytest.warns(UserWarning, match="deprecated"):
        layer = cls(deterministic=True)
    assert layer.inference and layer.deterministic
    with pytest.warns(UserWarning, match="deprecated"):
        assert bool(jnp.all(cls()(x, deterministic=True) == x))


@BOTH
def test_filter_jit_and_traced_p(cls, x, key):
    layer = cls(0.5)
    y = eqx.filter_jit(lambda m, x, k: m(x, key=k))(layer, x, key)
    assert bool(jnp.all(y == layer(x, key=key)))
    # p as an array leaf is traced by filter_jit: a schedule without recompiling
    traced = eqx.tree_at(lambda m: m.p, layer, jnp.asarray(0.25))
    y = eqx.filter_jit(lambda m, x, k: m(x, key=k))(traced, x, key)
    assert bool(jnp.all((y == 0) | jnp.isclose(y, x / 0.75)))


@BOTH
def test_vmap_over_keys_gives_different_masks(cls, x, key):
    layer = cls(0.5)
    ys = jax.vmap(lambda k: layer(x, key=k))(jax.random.split(key, 4))
    masks = np.asarray(ys != 0)
    assert len({m.tobytes() for m in masks}) == 4


@BOTH
def test_grad_is_the_mask_over_keep(cls, x, key):
    layer = cls(0.4)
    grad = jax.grad(lambda x: jnp.sum(layer(x, key=key)))(x)
    kept = layer(x, key=key) != 0
    np.testing.assert_allclose(grad, jnp.where(kept, 1 / 0.6, 0.0), rtol=1e-6)


# ------------------------------------------------------------ jaxdrop-specific


@pytest.mark.parametrize(("shape", "p"), [((7,), 0.1), ((3, 4, 5), 0.5), ((2, 33), 0.9)])
def test_jax_generator_reproduces_equinox_masks(p, shape, key):
    x = jax.random.normal(jax.random.key(1), shape)
    ours = jeqx.Dropout(p, generator="jax")(x, key=key)
    theirs = eqx.nn.Dropout(p)(x, key=key)
    np.testing.assert_array_equal(ours == 0, theirs == 0)
    np.testing.assert_array_max_ulp(ours, theirs, maxulp=1)


def test_jax_generator_legacy_key():
    x = jnp.ones((64,))
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(jeqx.Dropout(0.5, generator="jax")(x, key=key), eqx.nn.Dropout(0.5)(x, key=key))


def test_extras_broadcast_dims_and_inverted(x, key):
    y = jeqx.Dropout(0.5, broadcast_dims=[0, 1])(x, key=key)  # a list is stored as a (hashable) tuple
    assert bool(jnp.all((y == 0) == (y[:1, :1] == 0)))
    layer = jeqx.Dropout(0.5, broadcast_dims=(0,))
    assert layer.broadcast_dims == (0,)
    np.testing.assert_array_equal(
        layer(x, key=key), jaxdrop.dropout(x, 0.5, key=key, broadcast_dims=(0,), generator="fast")
    )
    classic = jeqx.Dropout(0.5, inverted=False)
    np.testing.assert_allclose(classic(x, inference=True), x * 0.5)


def test_p_one_drops_everything_with_zero_gradient(x, key):
    # equinox.nn.Dropout(1.0) gives NaN gradients (x / 0); jaxdrop gives zeros. A key is still required, as there.
    layer = jeqx.Dropout(1.0)
    with pytest.raises(RuntimeError, match="requires a key"):
        layer(x)
    assert bool(jnp.all(layer(x, key=key) == 0))
    grad = jax.grad(lambda x: jnp.sum(layer(x, key=key)))(x)
    assert bool(jnp.all(grad == 0))


def test_construction_validates():
    with pytest.raises(ValueError, match="`p` must be in"):
        jeqx.Dropout(1.5)
    with pytest.raises(ValueError, match="`p` must be in"):
        jeqx.DropPath(-0.1)
    with pytest.raises(ValueError, match="`generator` must be one of"):
        jeqx.SpatialDropout(0.1, generator="numpy")


def test_traced_inference_is_a_clear_error(x, key):
    layer = jeqx.Dropout(0.5)
    with pytest.raises(TypeError, match="`inference` must be a static Python bool"):
        jax.jit(lambda flag: layer(x, key=key, inference=flag))(True)


# ------------------------------------------------------------ each variant layer is its function


def _variants():
    feature_maps = jax.random.normal(jax.random.key(7), (4, 8, 8))  # (channels, height, width): one example
    sequence = jax.random.normal(jax.random.key(8), (6, 5))  # (time, features)
    vector = jax.random.normal(jax.random.key(9), (32,))
    return [
        (
            jeqx.SpatialDropout(0.5),
            feature_maps,
            lambda x, **kw: jaxdrop.spatial_dropout(x[None], 0.5, channel_axis=1, **kw)[0],
        ),
        (
            jeqx.SpatialDropout(0.5, channel_axis=-1, generator="jax"),
            feature_maps,
            lambda x, **kw: jaxdrop.spatial_dropout(x[None], 0.5, channel_axis=-1, generator="jax", **kw)[0],
        ),
        (jeqx.DropPath(0.5), vector, lambda x, **kw: jaxdrop.drop_path(x, 0.5, mode="batch", **kw)),
        (
            jeqx.DropBlock(0.2, block_size=3),
            feature_maps,
            lambda x, **kw: jaxdrop.dropblock(x[None], 0.2, block_size=3, channel_axis=1, **kw)[0],
        ),
        (
            jeqx.LockedDropout(0.5),
            sequence,
            lambda x, **kw: jaxdrop.locked_dropout(x[None], 0.5, time_axis=1, **kw)[0],
        ),
        (jeqx.AlphaDropout(0.2), vector, lambda x, **kw: jaxdrop.alpha_dropout(x, 0.2, **kw)),
        (jeqx.GaussianDropout(0.3), vector, lambda x, **kw: jaxdrop.gaussian_dropout(x, 0.3, **kw)),
    ]


VARIANTS = _variants()
VARIANT_IDS = ["spatial", "spatial-last-jax", "drop_path", "dropblock", "locked", "alpha", "gaussian"]


@pytest.mark.parametrize(("layer", "x", "function"), VARIANTS, ids=VARIANT_IDS)
def test_variant_equals_its_function(layer, x, function, key):
    y = layer(x, key=key)
    np.testing.assert_array_equal(y, function(x, key=key))
    assert y.shape == x.shape and bool(jnp.any(y != x))


@pytest.mark.parametrize(("layer", "x", "function"), VARIANTS, ids=VARIANT_IDS)
def test_variant_flags_and_key(layer, x, function, key):
    del function
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=re.escape(f"{name} requires a key when running in non-deterministic mode.")):
        layer(x)
    assert bool(jnp.all(layer(x, inference=True) == x))
    assert bool(jnp.all(eqx.nn.inference_mode(layer)(x) == x))
    assert bool(jnp.all(eqx.tree_at(lambda m: m.p, layer, 0.0)(x) == x))  # static p == 0: no key needed


def test_variants_under_vmap_over_a_batch(key):
    # The Equinox way: a per-example model, vmapped over the batch with one key per example.
    batch = jnp.ones((6, 4, 5, 5))
    keys = jax.random.split(key, 6)
    y = jax.vmap(lambda x, k: jeqx.SpatialDropout(0.5)(x, key=k))(batch, keys)
    assert bool(jnp.all(y == y[:, :, :1, :1]))  # one decision per (example, channel)
    decisions = np.asarray(y[:, :, 0, 0] != 0)
    assert len({row.tobytes() for row in decisions}) > 1
    paths = jax.vmap(lambda x, k: jeqx.DropPath(0.5)(x, key=k))(batch, keys)
    assert bool(jnp.all((paths == 0).reshape(6, -1).all(1) | (paths == 2).reshape(6, -1).all(1)))


# ------------------------------------------------------------ jaxdrop.stochastic(): MC dropout in inference mode


@pytest.mark.parametrize(("layer", "x", "function"), VARIANTS, ids=VARIANT_IDS)
def test_stochastic_turns_an_inference_mode_layer_into_a_sampling_one(layer, x, function, key):
    layer = eqx.nn.inference_mode(layer)
    with jaxdrop.stochastic():
        np.testing.assert_array_equal(layer(x, key=key), function(x, key=key))
        with jaxdrop.stochastic(False):  # nested: switched off again
            assert bool(jnp.all(layer(x, key=key) == x))
        with pytest.raises(RuntimeError, match=r"requires a key(.|\n)*Inside `jaxdrop.stochastic\(\)`"):
            layer(x)
    assert bool(jnp.all(layer(x) == x))  # and unchanged outside


def test_stochastic_dropout_keep_rate_and_filter_jit(key):
    x = jnp.ones((20_000,))
    model = eqx.nn.inference_mode(jeqx.Dropout(0.3))
    forward = eqx.filter_jit(lambda model, x, key: model(x, key=key, inference=True))
    with jaxdrop.stochastic():
        y = forward(model, x, key)  # traced inside the context
    assert abs(float(jnp.mean(y == 0)) - 0.3) < 0.02 and np.allclose(np.unique(y), [0.0, 1 / 0.7])
    np.testing.assert_array_equal(y, jaxdrop.dropout(x, 0.3, key=key))
    if hasattr(jax, "make_user_context"):  # jax >= 0.7.2: outside, the deterministic program is traced anew
        assert bool(jnp.all(forward(model, x, key) == x))


# ------------------------------------------------------------ optional dependency


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_equinox_is_optional():
    # `import jaxdrop` leaves Equinox alone; without Equinox, `jaxdrop.equinox` says how to install it.
    done = _run(
        "import sys, jaxdrop\n"
        "print('equinox' in sys.modules)\n"
        "sys.modules['equinox'] = None\n"
        "try:\n    import jaxdrop.equinox\nexcept ImportError as e:\n    print(e)\n"
    )
    assert done.returncode == 0, done.stderr
    imported, message = done.stdout.strip().split("\n", 1)
    assert imported == "False"
    assert "pip install equinox" in message
