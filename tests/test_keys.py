import jax
import jax.numpy as jnp
import numpy as np

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
