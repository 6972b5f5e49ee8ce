"""Attention dropout: flax-compatible dot_product_attention that never stores the dropout mask."""

import contextlib
import io

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals
from stat_bounds import binomial_bound
from variant_checks import normal, random_primitives

import jaxdrop

B, Q, KV, H, D = 2, 5, 7, 3, 4


def _qkv(dtype=jnp.float32):
    q = normal(0, (B, Q, H, D))
    k = normal(1, (B, KV, H, D))
    v = normal(2, (B, KV, H, D))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def test_matches_flax_without_dropout_with_bias_mask_and_causal():
    q, k, v = _qkv()
    bias = normal(5, (B, H, Q, KV))
    mask = (normal(6, (B, 1, Q, KV)) > -0.5).at[..., 0].set(True)

    def both(q, k, v, bias, mask):
        ours = jaxdrop.dot_product_attention(q, k, v, bias=bias, mask=mask)
        theirs = nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
        causal = jaxdrop.dot_product_attention(q, k, v, is_causal=True)
        causal_nnx = nnx.dot_product_attention(q, k, v, is_causal=True)
        return ours, theirs, causal, causal_nnx

    ours, theirs, causal, causal_nnx = jax.jit(both)(q, k, v, bias, mask)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(causal, causal_nnx, rtol=1e-5, atol=1e-6)


def test_jax_generator_matches_flax_dropout_exactly():
    q, k, v = _qkv()
    rng = jax.random.key(1)

    def both(q, k, v):
        pairs = []
        for broadcast in (True, False):
            kwargs = dict(dropout_rng=rng, dropout_rate=0.3, broadcast_dropout=broadcast)
            ours = jaxdrop.dot_product_attention(q, k, v, generator="jax", **kwargs)
            pairs.append((ours, nn.dot_product_attention(q, k, v, **kwargs)))
        return pairs

    for ours, theirs in jax.jit(both)(q, k, v):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_drops_attention_weights_after_softmax():
    # With value = identity over kv positions, the output is the (dropped) attention weights themselves.
    rate = 0.4
    q = normal(0, (8, 16, 2, 4))
    k = normal(1, (8, 32, 2, 4))
    v = jnp.broadcast_to(jnp.eye(32)[None, :, None, :], (8, 32, 2, 32))
    weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / 2.0)  # (b, h, q, kv)
    for broadcast in (True, False):
        fn = jax.jit(
            lambda q, k, v, b=broadcast: jaxdrop.dot_product_attention(
                q, k, v, dropout_rng=jax.random.key(2), dropout_rate=rate, broadcast_dropout=b
            )
        )
        out = np.asarray(fn(q, k, v)).transpose(0, 2, 1, 3)  # (b, h, q, kv)
        kept = out != 0
        np.testing.assert_allclose(out[kept], np.asarray(weights)[kept] / (1 - rate), rtol=1e-5)
        assert abs((~kept).mean() - rate) <= binomial_bound(kept.size if not broadcast else 16 * 32, rate)
        if broadcast:  # one mask shared over batch and heads
            assert (kept == kept[:1, :1]).all()
        else:
            assert not (kept == kept[:1, :1]).all()


def test_mask_and_dropped_weights_are_not_stored_for_the_backward_pass():
    q, k, v = _qkv()
    rng = jax.random.key(1)

    def saved(fn):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            print_saved_residuals(
                lambda q, k, v: jnp.sum(fn(q, k, v, dropout_rng=rng, dropout_rate=0.3, broadcast_dropout=False) ** 2),
                q,
                k,
                v,
            )
        return [line for line in buffer.getvalue().splitlines() if f"[{B},{H},{Q},{KV}]" in line]

    ours = saved(jaxdrop.dot_product_attention)
    assert len(ours) == 1 and ours[0].startswith("f32"), ours  # only the logits: no mask, no dropped weights
    theirs = saved(nn.dot_product_attention)
    assert len(theirs) >= 3, theirs  # flax: softmax exponentials, the keep multiplier, the dropped weights


def test_gradients_match_flax_with_the_same_mask():
    q, k, v = _qkv()
    kwargs = dict(dropout_rng=jax.random.key(1), dropout_rate=0.3)
    ours = jax.jit(
        jax.grad(
            lambda q, k, v: jnp.sum(jaxdrop.dot_product_attention(q, k, v, generator="jax", **kwargs) ** 2),
            argnums=(0, 1, 2),
        )
    )(q, k, v)
    theirs_loss = lambda q, k, v: jnp.sum(nn.dot_product_attention(q, k, v, **kwargs) ** 2)
    theirs = jax.jit(jax.grad(theirs_loss, argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_dtype_preserved_and_close_to_float32():
    q, k, v = _qkv()
    attend = lambda q, k, v: jaxdrop.dot_product_attention(q, k, v, dropout_rng=jax.random.key(1), dropout_rate=0.2)
    dtypes = (jnp.float32, jnp.bfloat16, jnp.float16)
    outs = jax.jit(lambda q, k, v: [attend(q.astype(d), k.astype(d), v.astype(d)) for d in dtypes])(q, k, v)
    for dtype, out in zip(dtypes, outs, strict=True):
        assert out.dtype == dtype
        np.testing.assert_allclose(np.asarray(out, np.float32), outs[0], atol=0.1 if dtype != jnp.float32 else 1e-6)
    low = [a.astype(jnp.bfloat16) for a in (q, k, v)]
    grads = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32)), argnums=(0, 1, 2)))(*low)
    assert all(g.dtype == jnp.bfloat16 and np.isfinite(np.asarray(g, np.float32)).all() for g in grads)


def test_edge_rates_traced_rate_and_vmap():
    q, k, v = _qkv()
    rng = jax.random.key(1)
    fn = jax.jit(lambda q, k, v, rate, rng: jaxdrop.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=rate))
    plain = jax.jit(nn.dot_product_attention)(q, k, v)
    np.testing.assert_allclose(fn(q, k, v, 0.0, rng), plain, rtol=1e-5, atol=1e-6)  # traced 0: no dropout
    np.testing.assert_array_equal(fn(q, k, v, 1.0, rng), jnp.zeros_like(plain))
    grads = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v, 1.0, rng) * q), argnums=(0, 1, 2))(q, k, v)
    assert all((np.asarray(g) == 0).all() for g in grads)
    keys = jax.random.split(rng, 3)
    mapped = jax.vmap(fn, in_axes=(None, None, None, None, 0))(q, k, v, 0.5, keys)
    for i in range(3):
        np.testing.assert_allclose(mapped[i], fn(q, k, v, 0.5, keys[i]), rtol=1e-6, atol=1e-6)
    assert not np.array_equal(mapped[0], mapped[1])


class EagerAndJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_shape_dtype_and_static_edge_rates(self):
        q, k, v = _qkv()
        out = self.variant(
            lambda q, k, v, rng: jaxdrop.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=0.3)
        )(q, k, v, jax.random.key(1))
        chex.assert_shape(out, (B, Q, H, D))
        chex.assert_type(out, jnp.float32)
        chex.assert_tree_all_finite(out)
        plain = jax.jit(nn.dot_product_attention)(q, k, v)
        for kwargs in (dict(dropout_rate=0.0), dict(dropout_rate=0.5, deterministic=True), dict(dropout_rate=1.0)):
            static = lambda q, k, v, kw=kwargs: jaxdrop.dot_product_attention(q, k, v, **kw)  # no dropout_rng needed
            assert not random_primitives(static, q, k, v)
            expected = jnp.zeros_like(plain) if kwargs["dropout_rate"] == 1.0 else plain
            chex.assert_trees_all_close(self.variant(static)(q, k, v), expected, rtol=1e-5, atol=1e-6)


def test_usable_as_flax_attention_fn_in_linen_and_nnx():
    x = normal(0, (2, 5, 8))
    layer = nn.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.2, attention_fn=jaxdrop.dot_product_attention)
    reference = nn.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.2)

    @jax.jit
    def run(x, init_key, dropout_key):
        params = layer.init(init_key, x, deterministic=True)
        ours = layer.apply(params, x, deterministic=True)
        theirs = reference.apply(params, x, deterministic=True)
        train = layer.apply(params, x, deterministic=False, rngs={"dropout": dropout_key})
        _, state = layer.apply(params, x, deterministic=True, sow_weights=True, mutable=["intermediates"])
        return ours, theirs, train, state["intermediates"]["attention_weights"][0]

    ours, theirs, train_a, weights = run(x, jax.random.key(1), jax.random.key(2))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    _, _, train_b, _ = run(x, jax.random.key(1), jax.random.key(3))
    assert train_a.shape == x.shape and not np.allclose(train_a, train_b)
    assert weights.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)

    @jax.jit
    def run_nnx(x):
        module = nnx.MultiHeadAttention(
            num_heads=2,
            in_features=8,
            dropout_rate=0.2,
            decode=False,
            attention_fn=jaxdrop.dot_product_attention,
            rngs=nnx.Rngs(0),
        )
        return module(x, deterministic=False, rngs=nnx.Rngs(dropout=1))

    out = run_nnx(x)
    assert out.shape == x.shape and np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize(
    ("kwargs", "shapes", "error", "message"),
    [
        ({}, ((2, 5, 3, 4), (2, 7, 3, 4), (2, 6, 3, 4)), ValueError, "`key` and `value` lengths"),
        (
            {},
            ((2, 5, 4, 4), (2, 7, 2, 4), (2, 7, 1, 4)),
            ValueError,
            "`key` and `value` must have the same number of heads",
        ),
        ({}, ((2, 5, 3, 4), (2, 7, 2, 4), (2, 7, 2, 4)), ValueError, "must be a multiple of the `key`/`value` heads"),
        ({}, ((2, 5, 3, 4), (2, 7, 3, 5), (2, 7, 3, 4)), ValueError, "`query` and `key` depths"),
        ({}, ((5, 3, 4), (2, 7, 3, 4), (2, 7, 3, 4)), ValueError, "same rank"),
        ({}, ((1, 5, 3, 4), (2, 7, 3, 4), (2, 7, 3, 4)), ValueError, "batch dimensions must match"),
        ({"dropout_rate": 0.5}, None, ValueError, "`dropout_rng` is required"),
        ({"dropout_rate": 1.5}, None, ValueError, "`dropout_rate` must be in \\[0, 1\\]"),
        ({"dropout_rate": 0.5, "dropout_rng": 3}, None, TypeError, "`dropout_rng` must be a PRNG key"),
        ({"qk_attn_weights_einsum": jnp.einsum}, None, ValueError, "must be given together"),
        (
            {"qk_attn_weights_einsum": jnp.einsum, "attn_weights_value_einsum": jnp.einsum, "precision": "highest"},
            None,
            ValueError,
            "mutually exclusive",
        ),
        ({"deterministic": None}, None, TypeError, "`deterministic` must be a bool"),
        ({"window_size": 3}, None, TypeError, "unexpected keyword argument 'window_size'"),
        ({"dtype": jnp.int32}, None, TypeError, "`dtype` must be a floating-point dtype"),
    ],
)
def test_bad_input(kwargs, shapes, error, message):
    q, k, v = _qkv() if shapes is None else (jnp.ones(s) for s in shapes)
    with pytest.raises(error, match=message):
        jaxdrop.dot_product_attention(q, k, v, **kwargs)
