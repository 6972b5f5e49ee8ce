"""Blockwise (FlashAttention-2) and Pallas attention: the dense path's masks bit for bit, its values and gradients.

Shapes are tiny so that blocks of 2..8 make several tiles, some partial; the dense path (``implementation="xla"``)
is the reference. The target-sized memory and speed ratios are measured by ``python -m jaxdrop bench --sections
attention``, never here.
"""

import contextlib
import functools
import io
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals
from variant_checks import normal, random_primitives

import jaxdrop
from jaxdrop import _masks
from jaxdrop.functional import _blockwise, _pallas_attention

B, Q, KV, H, D = 2, 13, 11, 4, 8
KEY = jax.random.key(7)


def _qkv(kv_heads=H, dtype=jnp.float32, depth=D):
    q = normal(0, (B, Q, H, depth))
    k = normal(1, (B, KV, kv_heads, depth))
    v = normal(2, (B, KV, kv_heads, depth + 1))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def _attend(implementation, q, k, v, **kwargs):
    kwargs.setdefault("dropout_rng", KEY)
    return jaxdrop.dot_product_attention(q, k, v, implementation=implementation, **kwargs)


def _value_and_grads(implementation, q, k, v, bias=None, **kwargs):
    """Output, and gradients of a weighted sum of it with respect to query, key, value (and bias)."""
    weight = normal(9, (*q.shape[:-1], v.shape[-1]))

    def loss(q, k, v, bias):
        out = _attend(implementation, q, k, v, bias=bias, **kwargs)
        return jnp.sum(out * weight), out

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    (_, out), grads = jax.value_and_grad(loss, argnums=argnums, has_aux=True)(q, k, v, bias)
    return out, grads


def _has_loops(fn, *args):
    text = str(jax.make_jaxpr(fn)(*args))
    return " while[" in text or " scan[" in text


def _assert_close(ours, reference, tol=2e-5):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)


def test_tile_counters_are_the_whole_masks_counters_also_across_the_word_split():
    shape = (2, 3, 5, 7)
    for word_limit in (2**32, 200, 50):  # no split; the split after axis 0; after axis 1
        whole = _masks.element_counters(shape, _word_limit=word_limit)
        index = [
            jnp.asarray(np.arange(n).reshape((-1,) + (1,) * (len(shape) - axis - 1)), jnp.uint32)
            for axis, n in enumerate(shape)
        ]
        tile = _masks.counters_at(shape, index, word_limit)
        for a, b in zip(whole, tile, strict=True):
            np.testing.assert_array_equal(np.broadcast_to(b, shape), a)


@pytest.mark.parametrize(
    ("broadcast_dropout", "generator"),
    [(True, "fast"), (False, "fast"), pytest.param(False, "fast16", marks=pytest.mark.slow)],
)
def test_same_mask_bit_for_bit_whatever_the_blocks(broadcast_dropout, generator):
    # With value = one-hot over keys, the output is the dropped attention weights: their zeros are the mask.
    q, k, _ = _qkv(kv_heads=2)
    v = jnp.broadcast_to(jnp.eye(KV)[None, :, None, :], (B, KV, 2, KV))
    kwargs = dict(dropout_rate=0.5, broadcast_dropout=broadcast_dropout, generator=generator)

    @jax.jit
    def run(q, k, v):
        dense = _attend("xla", q, *(jnp.repeat(a, 2, axis=-2) for a in (k, v)), **kwargs)  # GQA: repeated heads
        return dense, [_attend("blockwise", q, k, v, block_q=bq, block_kv=bk, **kwargs) for bq, bk in ((4, 3), (16, 2))]

    dense, blockwise = run(q, k, v)
    assert 0.3 < float(jnp.mean(dense == 0)) < 0.7
    for out in blockwise:
        np.testing.assert_array_equal(np.asarray(out) == 0, np.asarray(dense) == 0)
        _assert_close(out, dense)


def test_tiles_regenerate_the_mask_across_the_counter_word_split():
    # Masks beyond 2**32 elements move leading axes to the second counter word; a small word size exercises it.
    starts = ((0, 0), (4, 8), (5, 3))
    for broadcast, word_limit in ((True, 50), (False, 500)):  # (1, 1, 1, 9 | 10) and (2, 3 | 4, 9, 10)
        plan = _blockwise.Plan((2, 3), 9, 10, 2, 2, 4, 4, False, True, 0.5, broadcast, None, word_limit=word_limit)

        @jax.jit
        def masks(words, plan=plan):
            decisions = _masks._decisions(0.5, "fast")
            whole = _masks.per_element(words, plan.mask_shape, 2, decisions, _word_limit=plan.word_limit)
            tiles = [_blockwise.keep_decisions(plan, words, 0.5, q, kv, 4, 2) for q, kv in starts]
            return jnp.broadcast_to(whole, (2, 3, 4, 9, 10)).reshape(6, 2, 2, 9, 10), tiles

        whole, tiles = masks(_masks._key_words(KEY))
        for (q_start, kv_start), tile in zip(starts, tiles, strict=True):
            expected = whole[:, :, :, q_start : q_start + 4, kv_start : kv_start + 2]
            np.testing.assert_array_equal(np.broadcast_to(tile, expected.shape), expected)


CASES = {
    "bias, mask, per-head masks": dict(bias=True, mask=True, broadcast_dropout=False, blocks=(4, 4)),
    "causal, GQA, blocks not dividing": dict(is_causal=True, kv_heads=2, blocks=(5, 3)),
    "multi-query, traced rate, one tile": dict(kv_heads=1, traced_rate=True, blocks=(16, 16)),
    "segments, causal, mask": dict(segments=True, is_causal=True, mask=True, blocks=(8, 2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_and_gradients_match_the_dense_path(case):
    config = dict(CASES[case])
    block_q, block_kv = config.pop("blocks")
    q, k, v = _qkv(kv_heads=config.pop("kv_heads", H))
    bias = normal(3, (1, H, Q, KV)) if config.pop("bias", False) else None
    kwargs = dict(is_causal=config.pop("is_causal", False), broadcast_dropout=config.pop("broadcast_dropout", True))
    if config.pop("mask", False):  # query 3 sees no key at all
        kwargs["mask"] = (normal(4, (B, 1, Q, KV)) > -0.3).at[:, :, 3].set(False)
    if config.pop("segments", False):
        kwargs["segment_ids"] = (jnp.asarray([[0] * 6 + [1] * 7] * B), jnp.asarray([[0] * 5 + [1] * 6] * B))
    traced = config.pop("traced_rate", False)
    assert not config

    def run(q, k, v, bias, rate):
        group = H // k.shape[-2]
        dense_kv = (jnp.repeat(k, group, axis=-2), jnp.repeat(v, group, axis=-2))
        dense = _value_and_grads("xla", q, *dense_kv, bias, dropout_rate=rate, **kwargs)
        ours = _value_and_grads(
            "blockwise", q, k, v, bias, dropout_rate=rate, block_q=block_q, block_kv=block_kv, **kwargs
        )
        return dense, ours

    rate = jnp.float32(0.3) if traced else 0.3  # a traced or a static rate
    dense, ours = jax.jit(run, static_argnums=() if traced else (4,))(q, k, v, bias, rate)
    group = H // k.shape[-2]
    dense_grads = list(dense[1])
    for i in (1, 2):  # the gradient of a repeated kv head is the sum over its query-head group
        dense_grads[i] = dense_grads[i].reshape(*k.shape[:-1], group, -1).sum(-2)
    _assert_close(ours, (dense[0], dense_grads))
    if "mask" in kwargs:  # a query that sees no key gets zeros (not NaN) and passes no gradient
        assert not np.asarray(ours[0][:, 3]).any() and not np.asarray(ours[1][0][:, 3]).any()
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(ours))


def test_low_precision_in_low_precision_out_with_float32_statistics():
    q, k, v = _qkv()
    attend = lambda q, k, v: _attend("blockwise", q, k, v, dropout_rate=0.2, block_q=4, block_kv=4)

    @jax.jit
    def run(q, k, v):
        low = [a.astype(jnp.bfloat16) for a in (q, k, v)]
        grads = jax.grad(lambda *a: jnp.sum(attend(*a).astype(jnp.float32)), argnums=(0, 1, 2))(*low)
        return attend(q, k, v), attend(*low), attend(*(a.astype(jnp.float16) for a in (q, k, v))), grads

    reference, bf16, f16, grads = run(q, k, v)
    assert bf16.dtype == jnp.bfloat16 and f16.dtype == jnp.float16
    assert all(g.dtype == jnp.bfloat16 and np.isfinite(np.asarray(g, np.float32)).all() for g in grads)
    _assert_close(bf16, reference, tol=5e-2)
    _assert_close(f16, reference, tol=1e-2)


def test_rate_zero_and_deterministic_draw_nothing_rate_one_gives_zeros_with_zero_gradients():
    q, k, v = _qkv()
    q, k, v = q[:, :12], k[:, :8], v[:, :8]  # whole blocks: no padding mask (its iota would count as random)
    for kwargs in (dict(dropout_rate=0.0), dict(dropout_rate=0.4, deterministic=True)):
        fn = lambda q, k, v, kw=kwargs: _attend("blockwise", q, k, v, block_q=4, block_kv=4, dropout_rng=None, **kw)
        assert not random_primitives(fn, q, k, v), kwargs
    assert _has_loops(fn, q, k, v)  # the blockwise path did run

    @jax.jit
    def at_one(q, k, v, rate):
        static = _value_and_grads("blockwise", q, k, v, dropout_rate=1.0, dropout_rng=None, block_q=4, block_kv=4)
        traced = _value_and_grads("blockwise", q, k, v, dropout_rate=rate, block_q=4, block_kv=4)
        return static, traced

    for out, grads in at_one(q, k, v, 1.0):
        assert not np.asarray(out).any() and not any(np.asarray(g).any() for g in grads)


def test_no_length_squared_residual_for_the_backward_pass():
    q, k, v = _qkv()
    lines = io.StringIO()
    with contextlib.redirect_stdout(lines):
        print_saved_residuals(
            lambda q, k, v: jnp.sum(_attend("blockwise", q, k, v, dropout_rate=0.3, block_q=4, block_kv=4)), q, k, v
        )
    shapes = re.findall(r"\[([\d,]+)\]", lines.getvalue())
    sizes = [int(np.prod([int(n) for n in s.split(",")])) for s in shapes if s]
    assert sizes and max(sizes) <= B * 16 * H * (D + 1), lines.getvalue()  # padded q: O(length x depth) at most
    assert not [s for s in shapes if s.count(",") >= 3 and {str(Q), str(KV)} <= set(s.split(","))]


def test_compiled_gradient_memory_is_linear_in_the_length():
    def temp_bytes(length, implementation):
        spec = jax.ShapeDtypeStruct((1, length, 2, 16), jnp.float32)
        loss = lambda q, k, v: jnp.sum(_attend(implementation, q, k, v, dropout_rate=0.1, block_q=64, block_kv=64))
        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return grad.lower(spec, spec, spec).compile().memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(512, "blockwise"), temp_bytes(2048, "blockwise")
    assert large < 6 * small  # 4x the length: about 4x the memory, not 16x
    assert large < temp_bytes(2048, "xla") / 20


def test_default_implementation_rule():
    q, k, v = _qkv()
    loops = lambda **kw: _has_loops(lambda q, k, v: _attend(None, q, k, v, **kw), q, k, v)
    assert not loops()  # one tile at the default block sizes: dense
    assert loops(block_q=4)  # several tiles: blockwise
    assert not loops(block_q=4, generator="jax")  # a feature only the dense path has
    big = jnp.ones((1, 300, 1, 4))
    assert _has_loops(lambda x: jaxdrop.dot_product_attention(x, x, x), big)


def test_inside_checkpoint_vmap_and_scan_over_layers():
    q, k, v = _qkv()
    keys = jax.random.split(KEY, 3)

    def layers(implementation, q, k, v):  # one example: vmap adds the batch
        def layer(x, key):
            out = _attend(implementation, x, k, v, dropout_rate=0.2, dropout_rng=key, block_q=4, block_kv=4)
            return x + out[..., :D], None

        model = lambda x: jax.lax.scan(jax.checkpoint(layer), x, keys)[0]
        return jax.value_and_grad(lambda x: jnp.sum(model(x) ** 2))(q)

    batched = lambda impl: jax.vmap(functools.partial(layers, impl))(q[:, None], k[:, None], v[:, None])
    attend = lambda key: _attend("blockwise", q, k, v, dropout_rate=0.5, dropout_rng=key, block_q=4, block_kv=4)
    dense, ours, over_keys = jax.jit(lambda: (batched("xla"), batched("blockwise"), jax.vmap(attend)(keys)))()
    loop = [jax.jit(attend)(key) for key in keys]
    _assert_close(ours, dense, tol=1e-4)
    _assert_close(over_keys, jnp.stack(loop), tol=1e-6)  # vmap over keys (MC dropout) is a loop over keys


def test_as_the_attention_fn_of_flax_linen_and_nnx_layers():
    x = normal(0, (2, 9, 16))
    blockwise = functools.partial(jaxdrop.dot_product_attention, implementation="blockwise", block_q=4, block_kv=4)
    dense = functools.partial(jaxdrop.dot_product_attention, implementation="xla")

    @jax.jit
    def linen(x):
        outs = []
        for fn in (dense, blockwise):
            layer = nn.MultiHeadDotProductAttention(num_heads=4, dropout_rate=0.3, attention_fn=fn)
            params = layer.init(jax.random.key(0), x, deterministic=True)
            outs.append(layer.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(1)}))
        return outs

    @jax.jit
    def nnx_layers(x):
        outs = []
        for fn in (dense, blockwise):
            layer = nnx.MultiHeadAttention(
                num_heads=4, in_features=16, dropout_rate=0.3, decode=False, attention_fn=fn, rngs=nnx.Rngs(0)
            )
            outs.append(layer(x, deterministic=False, rngs=nnx.Rngs(dropout=1)))
        return outs

    for ours_dense, ours_blockwise in (linen(x), nnx_layers(x)):
        _assert_close(ours_blockwise, ours_dense)
        assert not np.allclose(ours_dense, 0)


def test_pallas_kernel_in_interpret_mode_matches_blockwise():
    q, k, v = _qkv(kv_heads=2)
    kwargs = dict(dropout_rate=0.3, is_causal=True, mask=normal(4, (B, 1, 1, KV)) > -1.0, block_q=8, block_kv=4)
    bias = normal(3, (1, H, Q, KV))

    @jax.jit
    def run(q, k, v, bias):
        return [_value_and_grads(impl, q, k, v, bias, **kwargs) for impl in ("blockwise", "pallas")]

    ours, pallas = run(q, k, v, bias)
    _assert_close(pallas, ours, tol=1e-6)


@pytest.mark.slow
def test_pallas_kernel_lowers_to_triton_for_gpu(monkeypatch):
    monkeypatch.setattr(_pallas_attention, "interpret", lambda: False)
    spec = jax.ShapeDtypeStruct((2, 256, 4, 64), jnp.bfloat16)
    kv_spec = jax.ShapeDtypeStruct((2, 256, 2, 64), jnp.bfloat16)
    segments = jax.ShapeDtypeStruct((2, 256), jnp.int32)
    for broadcast in (True, False):

        def fn(q, k, v, segments, rate, broadcast=broadcast):
            return _attend(
                "pallas", q, k, v, segment_ids=segments, is_causal=True, dropout_rate=rate, broadcast_dropout=broadcast
            )

        lowered = jax.jit(fn).trace(spec, kv_spec, kv_spec, segments, jax.ShapeDtypeStruct((), jnp.float32))
        assert "triton" in lowered.lower(lowering_platforms=("cuda",)).as_text().lower()
    with pytest.raises(ValueError, match="powers of two; got block_q = 48"):
        _attend("pallas", *_qkv(depth=8), block_q=48)


@pytest.mark.parametrize(
    ("kwargs", "shapes", "error", "message"),
    [
        ({}, ((2, 5, 4, 8), (2, 7, 3, 8), (2, 7, 3, 8)), ValueError, "must be a multiple of the `key`/`value` heads"),
        ({"block_q": 0}, None, ValueError, "`block_q` must be >= 1; got 0"),
        ({"block_kv": 2.5}, None, TypeError, "`block_kv` must be a positive Python int; got 2.5"),
        ({"implementation": "flash"}, None, ValueError, "`implementation` must be one of"),
        ({"implementation": "blockwise", "generator": "jax"}, None, ValueError, "does not support generator='jax'"),
        ({"segment_ids": jnp.zeros((2, 4), jnp.int32)}, None, ValueError, r"`segment_ids` for the query must have"),
        ({"segment_ids": jnp.zeros((2, 13))}, None, TypeError, "`segment_ids` must be an integer array"),
        ({"mask": jnp.ones((3, 1, 13, 11), bool)}, None, ValueError, "`mask` of shape \\(3, 1, 13, 11\\)"),
    ],
)
def test_bad_input(kwargs, shapes, error, message):
    q, k, v = _qkv() if shapes is None else (jnp.ones(s) for s in shapes)
    with pytest.raises(error, match=message):
        jaxdrop.dot_product_attention(q, k, v, **kwargs)


@pytest.mark.slow  # tests/test_docs.py runs the same page by default
def test_docs_page_code_runs():
    page = (Path(__file__).parents[1] / "docs" / "guide" / "attention.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/guide/attention.md", "exec"), {})
