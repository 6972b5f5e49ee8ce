"""Spatial (channel) dropout: whole feature maps dropped, rank and axis checks."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from stat_bounds import binomial_bound
from variant_checks import check_eager_and_jit, check_variant, normal

import jaxdrop


@pytest.mark.parametrize(
    ("fn", "shape"),
    [
        (jaxdrop.spatial_dropout1d, (64, 7, 32)),
        (jaxdrop.spatial_dropout2d, (32, 5, 6, 32)),
        (jaxdrop.spatial_dropout3d, (16, 3, 4, 5, 32)),
    ],
)
def test_mask_constant_over_spatial_axes_and_keep_fraction(fn, shape):
    rate = 0.3
    y = np.asarray(jax.jit(lambda x, k: fn(x, rate, key=k))(jnp.ones(shape), jax.random.key(1)))
    spatial = tuple(range(1, len(shape) - 1))
    per_map = y.reshape(shape[0], -1, shape[-1])
    assert (per_map == per_map[:, :1, :]).all()  # one decision per (example, channel)
    assert set(np.unique(y).tolist()) <= {0.0, np.float32(1.0 / (1.0 - rate))}
    kept = (y.mean(axis=spatial) > 0).ravel()
    assert abs(kept.mean() - (1 - rate)) <= binomial_bound(kept.size, 1 - rate)


def test_channels_first():
    x = jnp.ones((64, 16, 5, 5))  # (N, C, H, W)
    y = np.asarray(jax.jit(lambda x, k: jaxdrop.spatial_dropout2d(x, 0.5, key=k, channel_axis=1))(x, jax.random.key(0)))
    assert (y == y[:, :, :1, :1]).all()
    assert 0 < (y[:, :, 0, 0] == 0).mean() < 1  # decisions differ across (example, channel)


def test_expectation_preserved_over_keys():
    x = normal(3, (2, 3, 3, 4))
    keys = jax.random.split(jax.random.key(0), 4000)
    samples = jax.jit(jax.vmap(lambda k: jaxdrop.spatial_dropout(x, 0.4, key=k)))(keys)
    # Each element is x / 0.6 with probability 0.6: standard error |x| * sqrt(0.4 / 0.6 / n).
    stderr = np.abs(np.asarray(x)) * np.sqrt(0.4 / 0.6 / keys.shape[0])
    assert (np.abs(np.asarray(samples.mean(0) - x)) <= 4 * stderr + 1e-6).all()


def test_same_mask_as_dropout_with_broadcast_dims():
    x = normal(3, (4, 5, 6, 8))
    key = jax.random.key(7)
    expected = jax.jit(lambda x, k: jaxdrop.dropout(x, 0.5, key=k, broadcast_dims=(1, 2)))(x, key)
    np.testing.assert_array_equal(jax.jit(lambda x, k: jaxdrop.spatial_dropout(x, 0.5, key=k))(x, key), expected)


def test_common_properties():
    x = normal(3, (4, 3, 3, 8))
    apply = lambda x, rate, key, det: jaxdrop.spatial_dropout2d(x, rate, key=key, deterministic=det)
    check_variant(apply, x)


class EagerAndJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("spatial_dropout", jaxdrop.spatial_dropout, (4, 3, 3, 8)),
        ("spatial_dropout1d", jaxdrop.spatial_dropout1d, (4, 3, 8)),
        ("spatial_dropout2d", jaxdrop.spatial_dropout2d, (4, 3, 3, 8)),
        ("spatial_dropout3d", jaxdrop.spatial_dropout3d, (4, 3, 3, 3, 8)),
    )
    def test_shape_dtype_and_edge_rates(self, fn, shape):
        apply = lambda x, rate, key, det: fn(x, rate, key=key, deterministic=det)
        check_eager_and_jit(self.variant, apply, normal(3, shape))


@pytest.mark.parametrize(
    ("fn", "shape", "kwargs", "error", "message"),
    [
        (jaxdrop.spatial_dropout2d, (4, 5, 6), {}, ValueError, "`x` must have rank 4 .* got shape \\(4, 5, 6\\)"),
        (jaxdrop.spatial_dropout1d, (4, 5, 6, 7), {}, ValueError, "`x` must have rank 3"),
        (jaxdrop.spatial_dropout3d, (4, 5, 6, 7), {}, ValueError, "`x` must have rank 5"),
        (jaxdrop.spatial_dropout, (4,), {}, ValueError, "rank >= 2"),
        (jaxdrop.spatial_dropout, (4, 5, 6), {"channel_axis": 3}, ValueError, "`channel_axis` entry 3 is out of range"),
        (jaxdrop.spatial_dropout, (4, 5, 6), {"channel_axis": 0}, ValueError, "`channel_axis`=0 names axis 0"),
        (jaxdrop.spatial_dropout, (4, 5, 6), {"channel_axis": -3}, ValueError, "the batch axis"),
        (jaxdrop.spatial_dropout, (4, 5, 6), {"channel_axis": (1,)}, TypeError, "`channel_axis` must be an int"),
        (jaxdrop.spatial_dropout, (4, 5, 6), {"rate": 1.5}, ValueError, "`rate` must be in \\[0, 1\\]; got 1.5"),
        (jaxdrop.spatial_dropout, (4, 5, 6), {"key": None}, ValueError, "`key` is required"),
    ],
)
def test_bad_input(fn, shape, kwargs, error, message):
    kwargs = {"rate": 0.5, "key": jax.random.key(0), **kwargs}
    with pytest.raises(error, match=message):
        fn(jnp.ones(shape), **kwargs)


def test_integer_input_rejected():
    with pytest.raises(TypeError, match="`x` must have a floating-point dtype"):
        jaxdrop.spatial_dropout2d(jnp.ones((2, 3, 3, 2), jnp.int32), 0.5, key=jax.random.key(0))


def _hashing_computations(fn, *args):
    """Output shapes of the compiled computations (fusions) that hash, i.e. contain Threefry's ``xor``."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    computations = re.finditer(r"^%\S+ \([^\n]*\) -> ([^\n]+) \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    return [match.group(1) for match in computations if " xor(" in match.group(2)]


@pytest.mark.parametrize("generator", ["fast", pytest.param("fast16", marks=pytest.mark.slow)])
def test_small_mask_hashed_once_not_once_per_input_element(generator):
    # Issue 19: XLA fused the (batch, 1, 1, channels) mask's hash into the loop over the whole feature map and
    # hashed once per input element (1.43x slower than flax). The mask is packed in its own computation (a
    # reduction, which XLA does not fuse into its consumer); the feature map's loop only unpacks bits.
    x, key = jnp.ones((4, 8, 8, 32)), jax.random.key(0)

    def forward(x, key):
        return jaxdrop.spatial_dropout(x, 0.3, key=key, generator=generator)

    def backward(x, key):
        return jax.grad(lambda x: jnp.sum(forward(x, key) ** 2))(x)

    for fn in (forward, backward):
        shapes = _hashing_computations(fn, x, key)
        assert shapes and not any("4,8,8,32" in shape for shape in shapes), shapes
