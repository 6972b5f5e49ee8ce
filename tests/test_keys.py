import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop


def test_fold_in_names_and_steps_give_distinct_reproducible_keys():
    root = jax.random.key(0)
    keys = {
        (name, step): jaxdrop.fold_in(root, name, step)
        for name in ["encoder/dropout_0", "encoder/dropout_1", "decoder/dropout_0"]
        for step in [0, 1, 2]
    }
    data = {k: tuple(np.asarray(jax.random.key_data(v)).tolist()) for k, v in keys.items()}
    assert len(set(data.values())) == len(data)
    again = jaxdrop.fold_in(root, "encoder/dropout_1", 2)
    assert tuple(np.asarray(jax.random.key_data(again)).tolist()) == data[("encoder/dropout_1", 2)]


def test_fold_in_accepts_traced_step_and_legacy_keys():
    root = jax.random.PRNGKey(3)
    f = jax.jit(lambda step: jaxdrop.fold_in(root, "layer", step))
    assert not np.array_equal(f(jnp.int32(1)), f(jnp.int32(2)))
    np.testing.assert_array_equal(f(jnp.int32(5)), jaxdrop.fold_in(root, "layer", 5))


def _data(key):
    return tuple(np.asarray(jax.random.key_data(key)).tolist())


def test_fold_in_keeps_the_keys_of_ints_and_names():
    # Ints in [0, 2**32) are folded as they are, strings as their 32-bit BLAKE2s hash: keys derived before stay valid.
    root = jax.random.key(0)
    for item in (0, 7, 2**32 - 1):
        assert _data(jaxdrop.fold_in(root, item)) == _data(jax.random.fold_in(root, item))
    name_hash = int.from_bytes(hashlib.blake2s(b"encoder/dropout_1", digest_size=4).digest(), "little")
    assert _data(jaxdrop.fold_in(root, "encoder/dropout_1")) == _data(jax.random.fold_in(root, name_hash))


def test_fold_in_gives_one_key_per_integer_however_it_is_spelled():
    root = jax.random.key(0)
    spellings = [3, np.int64(3), np.uint32(3), np.array(3), jnp.int32(3), jnp.uint32(3)]
    assert len({_data(jaxdrop.fold_in(root, item)) for item in spellings}) == 1
    traced = jax.jit(lambda step: jaxdrop.fold_in(root, step))
    assert _data(traced(jnp.int32(3))) == _data(jaxdrop.fold_in(root, 3))
    mapped = jax.vmap(lambda i: jaxdrop.fold_in(root, i))(jnp.arange(4))
    assert len({_data(key) for key in mapped}) == 4


@pytest.mark.parametrize(
    ("item", "error", "pattern"),
    [
        (0.3, TypeError, r"`data\[1\]` must be a str, an int in \[0, 4294967295\].*got 0.3.*0.3 and 0.7"),
        (0.0, TypeError, r"`data\[1\]` must be a str, an int"),
        (float("nan"), TypeError, r"`data\[1\]`"),
        (np.float32(2.0), TypeError, r"`data\[1\]`"),
        (jnp.float32(2.0), TypeError, r"`data\[1\]`"),
        (True, TypeError, r"`data\[1\]` .*got True: a bool would give the key of 1"),
        (None, TypeError, r"`data\[1\]`.*got None"),
        (b"layer", TypeError, r"`data\[1\]`.*bytes"),
        (-1, ValueError, r"`data\[1\]` must be in \[0, 4294967295\]; got -1"),
        (2**32, ValueError, r"`data\[1\]` must be in \[0, 4294967295\]; got 4294967296"),
        (np.int64(-5), ValueError, r"`data\[1\]` must be in \[0, 4294967295\]; got -5"),
        (jnp.arange(3), ValueError, r"`data\[1\]` must be a scalar; got an array of shape \(3,\)"),
    ],
)
def test_fold_in_rejects_data_that_would_repeat_a_key(item, error, pattern):
    # Before: 0.3 and 0.7 were truncated to the key of 0 (the same masks), -1 raised OverflowError naming nothing.
    with pytest.raises(error, match=pattern):
        jaxdrop.fold_in(jax.random.key(0), "layer", item)


def test_fold_in_rejects_traced_floats_and_bad_keys():
    with pytest.raises(TypeError, match=r"`data\[0\]` .*got a traced value of dtype float32"):
        jax.jit(lambda step: jaxdrop.fold_in(jax.random.key(0), step))(jnp.float32(1))
    with pytest.raises(TypeError, match="`key` must be a PRNG key"):
        jaxdrop.fold_in(None, 1)
    with pytest.raises(TypeError, match="`key` must be a PRNG key"):
        jaxdrop.fold_in(jnp.zeros(2), 1)
