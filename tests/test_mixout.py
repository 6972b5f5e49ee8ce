"""Mixout: a dropped weight falls back to its pre-trained value; the expectation is the current weight."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_bounds import binomial_bound
from variant_checks import normal

import jaxdrop

PARAMS = {"dense": {"kernel": normal(0, (6, 5)), "bias": normal(1, (5,))}, "embed": normal(2, (4, 3))}
PRETRAINED = jax.tree.map(lambda a: a * 0.5 - 1.0, PARAMS)


def test_each_weight_is_rescaled_current_or_pretrained_and_mean_is_current():
    rate, samples = 0.4, 4000
    keys = jax.random.split(jax.random.key(0), samples)
    mixed = jax.jit(jax.vmap(lambda k: jaxdrop.mixout(PARAMS, PRETRAINED, rate, key=k)))(keys)
    w, u = np.asarray(PARAMS["dense"]["kernel"]), np.asarray(PRETRAINED["dense"]["kernel"])
    out = np.asarray(mixed["dense"]["kernel"])
    kept_value = u + (w - u) / (1 - rate)
    kept = np.isclose(out, kept_value, atol=1e-5)
    assert (kept | np.isclose(out, u, atol=1e-6)).all()  # u + M (w - u) / (1 - p), M in {0, 1}
    assert abs((~kept).mean() - rate) <= binomial_bound(kept.size, rate)
    # E[w'] = w: the sample mean is within 4 standard errors (per weight, sd = |w - u| sqrt(p / (1 - p))).
    error = np.abs(w - u) * np.sqrt(rate / (1 - rate)) / np.sqrt(samples)
    assert (np.abs(out.mean(0) - w) <= 4 * error + 1e-6).all()
    # biases (rank 1) are not selected by default; another `where` selects them
    assert (np.asarray(mixed["dense"]["bias"]) == np.asarray(PARAMS["dense"]["bias"])).all()
    bias = jaxdrop.mixout(PARAMS, PRETRAINED, 1.0, where="bias")["dense"]["bias"]
    np.testing.assert_array_equal(bias, PRETRAINED["dense"]["bias"])


def test_gradient_is_mask_over_keep_and_none_to_pretrained():
    rate, key = 0.5, jax.random.key(3)

    def loss(params, pretrained):
        mixed = jaxdrop.mixout(params, pretrained, rate, key=key)["embed"]
        return jnp.sum(mixed * 3.0), mixed

    (grad_params, grad_pretrained), out = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(PARAMS, PRETRAINED)
    keep = ~np.isclose(np.asarray(out), np.asarray(PRETRAINED["embed"]))
    np.testing.assert_allclose(grad_params["embed"], 3.0 * keep / (1 - rate), rtol=1e-6)
    assert not np.asarray(grad_pretrained["embed"]).any()


def test_short_cuts_dtypes_traced_rate_and_keys():
    assert jaxdrop.mixout(PARAMS, PRETRAINED, 0.5, deterministic=True)["embed"] is PARAMS["embed"]
    assert jaxdrop.mixout(PARAMS, PRETRAINED, 0.0)["embed"] is PARAMS["embed"]  # rate 0: no key needed
    twins = {"a": jnp.ones((40, 40)), "b": jnp.ones((40, 40))}

    @jax.jit
    def outputs(rate):
        key = jax.random.key(0)
        cast = {dtype: jax.tree.map(lambda a, d=dtype: a.astype(d), PARAMS) for dtype in ("bfloat16", "float16")}
        low = {dtype: jaxdrop.mixout(params, PRETRAINED, 0.3, key=key) for dtype, params in cast.items()}
        zeros = jax.tree.map(jnp.zeros_like, twins)
        return (
            jaxdrop.mixout(PARAMS, PRETRAINED, rate, key=key),  # traced rate
            jaxdrop.mixout(PARAMS, PRETRAINED, 0.3, key=key),  # static rate
            jaxdrop.mixout(PARAMS, PRETRAINED, 1.0),  # static 1: the pre-trained weights, no key
            low,
            jaxdrop.mixout(twins, zeros, 0.5, key=jax.random.key(1)),
        )

    traced, static, ones, low, twins_out = outputs(0.3)
    np.testing.assert_allclose(traced["embed"], static["embed"], atol=1e-6)
    np.testing.assert_allclose(outputs(0.0)[0]["embed"], PARAMS["embed"], atol=1e-6)
    np.testing.assert_array_equal(ones["embed"], PRETRAINED["embed"])
    for dtype, out in low.items():
        assert out["embed"].dtype == dtype and out["dense"]["bias"].dtype == dtype
    assert not np.array_equal(twins_out["a"], twins_out["b"])  # each leaf has its own key and mask


@pytest.mark.parametrize(
    ("pretrained", "error", "pattern"),
    [
        ({"dense": PRETRAINED["dense"]}, ValueError, r"`pretrained` must have the tree structure of `params`"),
        ({**PRETRAINED, "embed": jnp.zeros((3, 4))}, ValueError, r"`pretrained` leaf 'embed' must have the shape"),
        ({**PRETRAINED, "embed": jnp.zeros((4, 3), jnp.int32)}, TypeError, r"`pretrained` leaf 'embed' must be a floa"),
    ],
)
def test_mismatched_pretrained_raises_naming_it(pretrained, error, pattern):
    with pytest.raises(error, match=pattern):
        jaxdrop.mixout(PARAMS, pretrained, 0.5, key=jax.random.key(0), deterministic=True)
