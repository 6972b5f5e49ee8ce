"""DropBlock: contiguous blocks, the paper's gamma, the expected drop fraction, renormalisation, bad input."""

import contextlib
import io
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.ad_checkpoint import print_saved_residuals
from numpy.lib.stride_tricks import sliding_window_view
from variant_checks import check_eager_and_jit, check_variant, normal

import jaxdrop
from jaxdrop.functional._dropblock import seed_rate


def _is_union_of_blocks(dropped: np.ndarray, block: tuple[int, ...]) -> bool:
    """True when every dropped position lies in a fully dropped block that fits inside the map."""
    axes = tuple(range(-len(block), 0))
    full = sliding_window_view(dropped, block).all(axis=axes)  # blocks (by start) entirely dropped
    covered = sliding_window_view(np.pad(full, [(b - 1, b - 1) for b in block]), block).any(axis=axes)
    return bool(np.array_equal(covered, dropped))


def _expected_drop_fraction(rate: float, block: tuple[int, ...], feature: tuple[int, ...]) -> float:
    """Exact E[dropped fraction]: position p is dropped unless none of the valid seeds covering it fires."""
    gamma = seed_rate(rate, block, feature)
    counts = 1
    for b, f in zip(block, feature, strict=True):
        p = np.arange(f)
        counts = np.multiply.outer(counts, np.minimum(p, f - b) - np.maximum(p - b + 1, 0) + 1)
    return float(np.mean(1 - (1 - gamma) ** counts))


@pytest.mark.parametrize("block_size", [1, 3, 4])
@pytest.mark.parametrize("share", [False, True])
def test_drops_contiguous_blocks_and_renormalises(block_size, share):
    x = jnp.ones((4, 12, 12, 3))
    fn = jax.jit(lambda x, k: jaxdrop.dropblock2d(x, 0.3, key=k, block_size=block_size, share_across_channels=share))
    y = np.asarray(fn(x, jax.random.key(block_size)))
    dropped = y == 0
    assert dropped.any() and not dropped.all()
    for n in range(4):
        for c in range(3):
            assert _is_union_of_blocks(dropped[n, :, :, c], (block_size, block_size)), (n, c)
    if share:
        assert (dropped == dropped[..., :1]).all()
    else:
        assert not (dropped == dropped[..., :1]).all()
    # Renormalised by count / count_ones: kept values are numel / kept, and the sum is preserved.
    kept = (~dropped).sum()
    np.testing.assert_allclose(y[~dropped], x.size / kept, rtol=1e-6)
    np.testing.assert_allclose(y.sum(), x.size, rtol=1e-5)


def test_non_square_blocks_channels_first_and_3d():
    x = jnp.ones((2, 2, 10, 9))  # (N, C, H, W)
    fn = jax.jit(lambda x, k: jaxdrop.dropblock(x, 0.3, key=k, block_size=(2, 3), channel_axis=1))
    y = np.asarray(fn(x, jax.random.key(0)))
    for n in range(2):
        for c in range(2):
            assert _is_union_of_blocks(y[n, c] == 0, (2, 3))
    fn = jax.jit(lambda x, k: jaxdrop.dropblock3d(x, 0.3, key=k, block_size=3))
    cube = np.asarray(fn(jnp.ones((2, 6, 7, 8, 2)), jax.random.key(1)))
    assert (cube == 0).any()
    for n in range(2):
        for c in range(2):
            assert _is_union_of_blocks(cube[n, ..., c] == 0, (3, 3, 3))


@pytest.mark.parametrize(("rate", "block_size"), [(0.1, 3), (0.3, 4), (0.2, 7)])
def test_drop_fraction_matches_gamma(rate, block_size):
    feature = (16, 16)
    keys = jax.random.split(jax.random.key(0), 64)
    x = jnp.ones((4, *feature, 8))
    fn = jax.jit(jax.vmap(lambda k: jaxdrop.dropblock2d(x, rate, key=k, block_size=block_size) == 0))
    fractions = np.asarray(fn(keys)).mean(axis=(1, 2, 3, 4))
    expected = _expected_drop_fraction(rate, (block_size, block_size), feature)
    bound = 4 * fractions.std() / math.sqrt(keys.shape[0]) + 1e-3
    assert abs(fractions.mean() - expected) <= bound, (fractions.mean(), expected, bound)
    # Overlapping blocks: the dropped fraction is close to, and slightly below, the target rate.
    assert 0.75 * rate <= expected <= rate


def test_seed_rate_is_the_papers_gamma():
    # Ghiasi et al. eq. 1: gamma = rate / block^2 * feat^2 / (feat - block + 1)^2.
    assert seed_rate(0.1, (7, 7), (14, 14)) == pytest.approx(0.1 / 49 * 196 / 64)
    assert seed_rate(1.0, (5, 5), (5, 5)) == pytest.approx(1.0)  # one valid seed covering the map


def test_traced_rate_and_all_dropped_guard():
    x = jnp.ones((2, 8, 8, 2))
    fn = jax.jit(lambda x, r: jaxdrop.dropblock2d(x, r, key=jax.random.key(0), block_size=8))
    y = np.asarray(fn(x, 0.5))  # block = map: each map is all kept or all dropped
    assert set(np.unique(y[y != 0]).tolist()) <= {np.float32(x.size / (y != 0).sum())}
    np.testing.assert_array_equal(fn(x, 1.0), jnp.zeros_like(x))  # count_ones = 0: zeros, not NaN
    grad = jax.grad(lambda x: fn(x, 1.0).sum())(x)
    assert (np.asarray(grad) == 0).all()
    assert np.isnan(np.asarray(fn(x, 1.5))).all()  # a traced invalid rate cannot raise: NaN


def test_mask_is_not_stored_for_the_backward_pass():
    buffer = io.StringIO()
    x = jnp.ones((2, 16, 16, 8))
    with contextlib.redirect_stdout(buffer):
        print_saved_residuals(lambda x: jnp.sum(jaxdrop.dropblock2d(x, 0.2, key=jax.random.key(0), block_size=3)), x)
    saved = buffer.getvalue().splitlines()
    assert not any("16,16" in line for line in saved), saved


def test_common_properties():
    x = normal(3, (4, 6, 6, 3))
    apply = lambda x, rate, key, det: jaxdrop.dropblock2d(x, rate, key=key, deterministic=det, block_size=3)
    check_variant(apply, x)


class EagerAndJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("dropblock", jaxdrop.dropblock, (4, 6, 6, 3)),
        ("dropblock2d", jaxdrop.dropblock2d, (4, 6, 6, 3)),
        ("dropblock3d", jaxdrop.dropblock3d, (2, 4, 4, 4, 3)),
    )
    def test_shape_dtype_and_edge_rates(self, fn, shape):
        apply = lambda x, rate, key, det: fn(x, rate, key=key, deterministic=det, block_size=3)
        check_eager_and_jit(self.variant, apply, normal(3, shape))


@pytest.mark.parametrize(
    ("shape", "kwargs", "error", "message"),
    [
        ((2, 5, 5, 3), {"block_size": 6}, ValueError, "`block_size` 6 is larger than the feature map \\(5, 5\\)"),
        ((2, 5, 5, 3), {"block_size": 0}, ValueError, "`block_size` must be >= 1"),
        ((2, 5, 5, 3), {"block_size": 2.5}, TypeError, "`block_size` must be a positive Python int"),
        ((2, 5, 5, 3), {"block_size": (2, 2, 2)}, ValueError, "one entry per spatial axis"),
        ((2, 5, 5, 3), {"channel_axis": 0}, ValueError, "`channel_axis`=0 names axis 0"),
        ((2, 5, 5, 3), {"channel_axis": 4}, ValueError, "`channel_axis` entry 4 is out of range"),
        ((2, 5, 3), {}, ValueError, "`x` must have rank 4"),
        ((2, 5, 5, 3), {"rate": -0.5}, ValueError, "`rate` must be in \\[0, 1\\]"),
        ((2, 5, 5, 3), {"key": None}, ValueError, "`key` is required"),
    ],
)
def test_bad_input(shape, kwargs, error, message):
    kwargs = {"rate": 0.2, "key": jax.random.key(0), "block_size": 3, **kwargs}
    with pytest.raises(error, match=message):
        jaxdrop.dropblock2d(jnp.ones(shape), **kwargs)


def test_bad_input_rank_and_dtype():
    with pytest.raises(ValueError, match="at least one spatial axis"):
        jaxdrop.dropblock(jnp.ones((2, 3)), 0.2, key=jax.random.key(0), block_size=1)
    with pytest.raises(ValueError, match="`x` must have rank 5"):
        jaxdrop.dropblock3d(jnp.ones((2, 5, 5, 3)), 0.2, key=jax.random.key(0), block_size=1)
    with pytest.raises(TypeError, match="`x` must have a floating-point dtype"):
        jaxdrop.dropblock2d(jnp.ones((2, 5, 5, 3), jnp.int32), 0.2, key=jax.random.key(0), block_size=3)
