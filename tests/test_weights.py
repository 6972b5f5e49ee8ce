"""DropConnect on a weight array and on chosen leaves of a params pytree."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from stat_bounds import binomial_bound
from variant_checks import check_eager_and_jit, check_variant, normal

import jaxdrop
from jaxdrop.functional._weights import path_name


def test_dropconnect_masks_weights_shared_over_the_batch():
    rate = 0.4
    w = jnp.ones((64, 32))
    dropped = np.asarray(jax.jit(lambda w, k: jaxdrop.dropconnect(w, rate, key=k))(w, jax.random.key(0)))
    assert set(np.unique(dropped).tolist()) == {0.0, np.float32(1 / (1 - rate))}
    assert abs((dropped == 0).mean() - rate) <= binomial_bound(dropped.size, rate)
    x = normal(1, (5, 64))
    np.testing.assert_allclose(x @ dropped, x @ (np.asarray(w) * dropped), rtol=1e-5)  # a weight mask, not units


def test_dropconnect_expectation_over_keys():
    w = normal(2, (4, 4))
    keys = jax.random.split(jax.random.key(0), 4000)
    samples = jax.jit(jax.vmap(lambda k: jaxdrop.dropconnect(w, 0.5, key=k)))(keys)
    stderr = np.abs(np.asarray(w)) * np.sqrt(1.0 / keys.shape[0])
    assert (np.abs(np.asarray(samples.mean(0) - w)) <= 4 * stderr + 1e-6).all()


def test_dropconnect_params_default_selects_matrices_with_distinct_keys():
    params = {"dense": {"kernel": jnp.ones((16, 16)), "bias": jnp.ones(16)}, "embed": {"embedding": jnp.ones((16, 16))}}
    out = jaxdrop.dropconnect_params(params, 0.5, key=jax.random.key(0))
    assert out["dense"]["bias"] is params["dense"]["bias"]
    kernel, embedding = np.asarray(out["dense"]["kernel"]), np.asarray(out["embed"]["embedding"])
    assert 0.3 < (kernel == 0).mean() < 0.7 and 0.3 < (embedding == 0).mean() < 0.7
    assert not np.array_equal(kernel == 0, embedding == 0)  # one key per leaf
    # The key of a leaf is fold_in(key, path): stable whatever other leaves exist.
    expected = jaxdrop.dropconnect(
        params["dense"]["kernel"], 0.5, key=jaxdrop.fold_in(jax.random.key(0), "dense/kernel")
    )
    np.testing.assert_array_equal(kernel, expected)


def test_dropconnect_params_where_names_and_callable_on_a_flax_model():
    model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
    x = jnp.ones((3, 4))
    params = model.init(jax.random.key(0), x)["params"]
    last = lambda path, leaf: path == "layers_2/kernel"
    only_last = jax.jit(lambda p, k: jaxdrop.dropconnect_params(p, 0.5, key=k, where=last))(params, jax.random.key(1))
    np.testing.assert_array_equal(only_last["layers_0"]["kernel"], params["layers_0"]["kernel"])
    assert (np.asarray(only_last["layers_2"]["kernel"]) == 0).any()
    kernels = jax.jit(lambda p, k: jaxdrop.dropconnect_params(p, 0.5, key=k, where="kernel"))(params, jax.random.key(1))
    np.testing.assert_array_equal(kernels["layers_0"]["bias"], params["layers_0"]["bias"])
    assert (np.asarray(kernels["layers_0"]["kernel"]) == 0).any()
    # Differentiable through the mask, inside jit, with a traced rate.
    loss = jax.jit(lambda p, r, k: jnp.sum(model.apply({"params": jaxdrop.dropconnect_params(p, r, key=k)}, x) ** 2))
    grads = jax.grad(loss)(params, 0.5, jax.random.key(2))
    assert np.isfinite(np.asarray(grads["layers_0"]["kernel"])).all()
    for same in (jaxdrop.dropconnect_params(params, 0.5, deterministic=True), jaxdrop.dropconnect_params(params, 0.0)):
        assert same["layers_0"]["kernel"] is params["layers_0"]["kernel"]  # no key needed, nothing computed


def test_path_names():
    paths = []
    jax.tree_util.tree_map_with_path(lambda p, leaf: paths.append(path_name(p)), {"a": [1.0, {"b": 2.0}]})
    assert paths == ["a/0", "a/1/b"]


def test_common_properties():
    w = normal(3, (8, 6))
    apply = lambda w, rate, key, det: jaxdrop.dropconnect(w, rate, key=key, deterministic=det)
    check_variant(apply, w)


class EagerAndJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("dropconnect", lambda w, rate, key, det: jaxdrop.dropconnect(w, rate, key=key, deterministic=det)),
        (
            "dropconnect_params",
            lambda w, rate, key, det: jaxdrop.dropconnect_params({"w": w}, rate, key=key, deterministic=det)["w"],
        ),
    )
    def test_shape_dtype_and_edge_rates(self, apply):
        check_eager_and_jit(self.variant, apply, normal(3, (8, 6)))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: jaxdrop.dropconnect(jnp.ones(3, jnp.int32), 0.5, key=jax.random.key(0)), TypeError, "`w` must"),
        (lambda: jaxdrop.dropconnect(jnp.ones(3), 1.5, key=jax.random.key(0)), ValueError, "`rate` must be in"),
        (lambda: jaxdrop.dropconnect(jnp.ones(3), 0.5), ValueError, "`key` is required"),
        (lambda: jaxdrop.dropconnect_params({"w": jnp.ones((2, 2))}, 0.5), ValueError, "`key` is required"),
        (
            lambda: jaxdrop.dropconnect_params(
                {"step": jnp.ones((2, 2), jnp.int32)}, 0.5, key=jax.random.key(0), where="step"
            ),
            TypeError,
            "selected the leaf 'step' of dtype int32",
        ),
        (lambda: jaxdrop.dropconnect_params({}, 0.5, key=jax.random.key(0), where=[1]), TypeError, "`where` must be"),
        (lambda: jaxdrop.dropconnect_params({}, -0.5, key=jax.random.key(0)), ValueError, "`rate` must be in"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_dropconnect_params_checks_selected_leaves_first_and_never_shares_a_mask():
    ids = {"ids": jnp.ones((3, 3), jnp.int32)}
    with pytest.raises(TypeError, match="`where` selected the leaf 'ids' of dtype int32"):
        jaxdrop.dropconnect_params(ids, 0.5, where="ids")  # the input's error before the missing key's
    with pytest.raises(TypeError, match="`where` selected the leaf 'ids' of dtype int32"):
        jaxdrop.dropconnect_params(ids, 0.5, deterministic=True, where="ids")
    clash = {"a/b": jnp.ones((2, 2)), "a": {"b": jnp.ones((2, 2))}}  # two paths that read "a/b"
    with pytest.raises(ValueError, match="`params` has two selected leaves named 'a/b'"):
        jaxdrop.dropconnect_params(clash, 0.5, key=jax.random.key(0))
