"""PatchDropout: a random subset of tokens gathered per example, prefix tokens kept, deterministic = identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_bounds import binomial_bound

import jaxdrop


def tokens(batch=3, length=17, features=2):
    return jnp.arange(batch * length * features, dtype=jnp.float32).reshape(batch, length, features)


def test_keeps_sorted_subsets_and_the_prefix():
    x = tokens()
    y, indices = jaxdrop.patch_dropout(x, 0.5, key=jax.random.key(0), num_prefix_tokens=1, return_indices=True)
    assert y.shape == (3, 1 + 8, 2) and indices.shape == (3, 8) and indices.dtype == jnp.int32
    np.testing.assert_array_equal(y[:, 0], x[:, 0])  # the class token, always first
    indices = np.asarray(indices)
    assert (np.diff(indices, axis=1) > 0).all()  # increasing: original order, no repeats
    np.testing.assert_array_equal(y[:, 1:], np.take_along_axis(np.asarray(x)[:, 1:], indices[..., None], axis=1))
    assert len({row.tobytes() for row in indices}) > 1  # each example draws its own subset
    assert jaxdrop.patch_dropout(x, 4, key=jax.random.key(0)).shape == (3, 4, 2)  # a count
    assert jaxdrop.patch_dropout(x, 0.01, key=jax.random.key(0)).shape == (3, 1, 2)  # at least one token


def test_each_token_is_kept_with_probability_keep():
    keys = jax.random.split(jax.random.key(1), 500)
    indices = jax.jit(
        jax.vmap(lambda k: jaxdrop.patch_dropout(jnp.zeros((4, 16, 1)), 0.25, key=k, return_indices=True)[1])
    )(keys)
    counts = np.bincount(np.asarray(indices).ravel(), minlength=16) / (500 * 4)
    assert np.abs(counts - 0.25).max() <= binomial_bound(500 * 4, 0.25)


def test_deterministic_identity_dtypes_and_gradient():
    x = tokens()
    assert jaxdrop.patch_dropout(x, 0.5, deterministic=True) is x
    out, indices = jaxdrop.patch_dropout(x, 0.5, deterministic=True, num_prefix_tokens=1, return_indices=True)
    assert out is x and indices.shape == (3, 16)
    for dtype in (jnp.bfloat16, jnp.float16):
        assert jaxdrop.patch_dropout(x.astype(dtype), 0.5, key=jax.random.key(0)).dtype == dtype
    grad = jax.jit(jax.grad(lambda x: jnp.sum(jaxdrop.patch_dropout(x, 0.5, key=jax.random.key(2)))))(x)
    kept = np.asarray(grad[..., 0]) == 1.0
    assert set(np.unique(grad).tolist()) == {0.0, 1.0} and (kept.sum(1) == 8).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"keep": 0}, ValueError, r"`keep` must be in \[1, 17\]; got 0"),
        ({"keep": 18}, ValueError, r"`keep` must be in \[1, 17\]; got 18"),
        ({"keep": 0.0}, ValueError, r"`keep` must be a fraction in \(0, 1\]"),
        ({"keep": 1.5}, ValueError, r"`keep` must be in \[0, 1\]; got 1.5"),
        ({"keep": 0.5, "num_prefix_tokens": 17}, ValueError, r"`num_prefix_tokens` must be in \[0, 16\]; got 17"),
    ],
)
def test_bad_keep_and_prefix_raise_naming_them(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        jaxdrop.patch_dropout(tokens(), key=jax.random.key(0), deterministic=True, **kwargs)
