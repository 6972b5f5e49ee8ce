"""The blockwise attention forward pass as a Pallas kernel (GPU, Triton backend), with the same dropout masks.

One program per (query block, batch element, query head) loops over key/value blocks with the online softmax of
``_blockwise._forward`` and regenerates each tile's dropout mask from the key words and the tile's global
indices (``_blockwise.keep_decisions``), so the kernel drops exactly the weights the dense and blockwise paths
drop. It writes the output and the per-row log-sum-exp; the backward pass is the blockwise XLA backward
(``_blockwise.core_backward``), which regenerates the same masks.

Off GPU the kernel runs in Pallas interpret mode (slow; what the tests use on CPU). Pallas is imported on first
use, so ``import jaxdrop`` does not load it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop.functional import _blockwise, _core
from jaxdrop.functional._blockwise import Plan


def interpret() -> bool:
    """Whether the kernel runs in Pallas interpret mode: off GPU, where Triton cannot run it."""
    return jax.default_backend() != "gpu"


def _kernel(plan: Plan, names: tuple[str, ...], *refs: Any) -> None:
    """One (query block, batch, query head) program: ``refs`` are the inputs named ``names``, then out and lse."""
    from jax.experimental import pallas as pl

    inputs = dict(zip(names, refs[: len(names)], strict=True))
    out_ref, lse_ref = refs[len(names) :]
    q_block, batch, head = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    q_start = q_block * plan.block_q
    query = inputs["query"][...]
    depth = query.shape[-1]
    if plan.dropout:
        words = (inputs["words"][0], inputs["words"][1])  # scalar loads: Triton lowers no `slice`
        rate = plan.rate if plan.rate is not None else inputs["rate"][0]
        scale = _core.keep_scale(rate, inverted=True)

    def columns(ref: Any, kv_start: jax.Array) -> jax.Array:
        """A bias or mask tile: its own block of keys when it has a key axis, else its single column."""
        return ref[:, pl.ds(kv_start, plan.block_kv)] if ref.shape[-1] > 1 else ref[...]

    def kv_step(j, state):
        row_max, row_sum, acc = state
        kv_start = j * plan.block_kv
        key = inputs["key"][pl.ds(kv_start, plan.block_kv), :]
        value = inputs["value"][pl.ds(kv_start, plan.block_kv), :]
        logits = jnp.dot(query, key.T, precision=plan.precision, preferred_element_type=jnp.float32)
        logits = logits / math.sqrt(depth)
        if "bias" in inputs:
            logits = logits + columns(inputs["bias"], kv_start)
        shape = (plan.block_q, plan.block_kv)
        q_index = q_start + lax.broadcasted_iota(jnp.int32, shape, 0)
        kv_index = kv_start + lax.broadcasted_iota(jnp.int32, shape, 1)
        visible = kv_index < plan.kv_length
        if plan.is_causal:
            visible = visible & (kv_index <= q_index)
        if "mask" in inputs:
            visible = visible & (columns(inputs["mask"], kv_start) != 0)
        if "q_segments" in inputs:
            kv_segments = inputs["kv_segments"][pl.ds(kv_start, plan.block_kv)]
            visible = visible & (inputs["q_segments"][...][:, None] == kv_segments[None, :])
        logits = jnp.where(visible, logits, -jnp.inf)
        new_max = jnp.maximum(row_max, logits.max(-1))
        shift = jnp.where(new_max == -jnp.inf, 0.0, new_max)  # as in _blockwise._forward: no exp(-inf + inf)
        weights = jnp.exp(logits - shift[:, None])
        correction = jnp.exp(row_max - shift)
        row_sum = row_sum * correction + weights.sum(-1)
        if plan.dropout:
            keep = _blockwise.keep_decisions(
                plan, words, rate, q_start, kv_start, plan.block_q, plan.block_kv, batch_head=(batch, head)
            )
            weights = jnp.where(keep, weights * scale, 0.0 * scale)
        update = jnp.dot(
            weights.astype(value.dtype), value, precision=plan.precision, preferred_element_type=jnp.float32
        )
        return new_max, row_sum, acc * correction[:, None] + update

    num_kv: jax.Array | int = plan.num_kv_blocks
    if plan.is_causal:
        last_query = jnp.minimum(q_start + plan.block_q, plan.q_length) - 1
        num_kv = jnp.minimum(last_query // plan.block_kv + 1, plan.num_kv_blocks)
    init = (
        jnp.full((plan.block_q,), -jnp.inf, jnp.float32),
        jnp.zeros((plan.block_q,), jnp.float32),
        jnp.zeros((plan.block_q, out_ref.shape[-1]), jnp.float32),
    )
    row_max, row_sum, acc = lax.fori_loop(0, num_kv, kv_step, init)
    seen = row_sum > 0.0
    safe_sum = jnp.where(seen, row_sum, 1.0)
    out_ref[...] = jnp.where(seen[:, None], acc / safe_sum[:, None], 0.0).astype(out_ref.dtype)
    lse_ref[...] = jnp.where(seen, row_max + jnp.log(safe_sum), jnp.inf)


def _block_spec(array: jax.Array, plan: Plan, kind: str) -> Any:
    """How a program sees an operand: its (batch, head) slice, its query block for per-query operands."""
    from jax.experimental import pallas as pl

    group = plan.group

    def head_indices(b, h, shape):  # (batch, kv head, group) of a [batch|1, kv_heads|1, group|1, ...] operand
        return (
            b if shape[0] > 1 else 0,
            h // group if shape[1] > 1 else 0,
            h % group if shape[2] > 1 else 0,
        )

    shape = array.shape
    if kind == "query":  # [batch, q, kv_heads, group, depth]
        return pl.BlockSpec(
            (None, plan.block_q, None, None, shape[-1]), lambda i, b, h: (b, i, h // group, h % group, 0)
        )
    if kind == "key_value":  # [batch, kv, kv_heads, depth]
        return pl.BlockSpec((None, shape[1], None, shape[-1]), lambda i, b, h: (b, 0, h // group, 0))
    if kind == "weights":  # bias or mask [batch|1, kv_heads|1, group|1, q|1, kv|1]
        rows = plan.block_q if shape[3] > 1 else 1
        return pl.BlockSpec(
            (None, None, None, rows, shape[4]),
            lambda i, b, h: (*head_indices(b, h, shape), i if shape[3] > 1 else 0, 0),
        )
    if kind == "q_segments":
        return pl.BlockSpec((None, plan.block_q), lambda i, b, h: (b, i))
    if kind == "kv_segments":
        return pl.BlockSpec((None, shape[1]), lambda i, b, h: (b, 0))
    return pl.BlockSpec(shape, lambda i, b, h: (0,) * len(shape))  # words, rate: whole


_KINDS = {"query": "query", "key": "key_value", "value": "key_value", "bias": "weights", "mask": "weights"}


def _forward(plan: Plan, operands: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pallas_triton

    operands = dict(operands)
    if operands["mask"] is not None:
        operands["mask"] = operands["mask"].astype(jnp.int8)  # Triton loads bytes, not booleans
    if operands["rate"] is not None:
        operands["rate"] = operands["rate"].reshape(1)
    names = tuple(name for name, array in operands.items() if array is not None)
    arrays = [operands[name] for name in names]
    query, value = operands["query"], operands["value"]
    batch, q_padded, kv_heads, group, _ = query.shape
    out_shape = (
        jax.ShapeDtypeStruct((batch, q_padded, kv_heads, group, value.shape[-1]), value.dtype),
        jax.ShapeDtypeStruct((batch, kv_heads, group, q_padded), jnp.float32),
    )
    out_specs = (
        pl.BlockSpec(
            (None, plan.block_q, None, None, value.shape[-1]), lambda i, b, h: (b, i, h // group, h % group, 0)
        ),
        pl.BlockSpec((None, None, None, plan.block_q), lambda i, b, h: (b, h // group, h % group, i)),
    )
    return pl.pallas_call(
        functools.partial(_kernel, plan, names),
        grid=(plan.num_q_blocks, batch, plan.q_heads),
        in_specs=[_block_spec(array, plan, _KINDS.get(name, name)) for name, array in zip(names, arrays, strict=True)],
        out_specs=out_specs,
        out_shape=out_shape,
        interpret=interpret(),
        # Triton compiler parameters select the Triton backend (the GPU default is Mosaic GPU).
        compiler_params=pallas_triton.CompilerParams(num_warps=4, num_stages=2),
        name="jaxdrop_attention_forward",
    )(*arrays)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def pallas_core(plan: Plan, operands: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
    """``(out, lse)`` from the Pallas kernel; gradients from the blockwise XLA backward (same masks)."""
    return _forward(plan, operands)


pallas_core.defvjp(_blockwise.core_forward_rule(_forward), _blockwise.core_backward)


def pallas_attention(query: jax.Array, key: jax.Array, value: jax.Array, **kwargs: Any) -> jax.Array:
    """``_blockwise.blockwise_attention`` with the Pallas forward kernel (same arguments).

    Raises:
      ValueError: on GPU, a block size or a depth that is not a power of two (Triton's tiles must be).
    """
    if not interpret():
        sizes = {
            "block_q": kwargs["block_q"],
            "block_kv": kwargs["block_kv"],
            "query/key depth": query.shape[-1],
            "value depth": value.shape[-1],
        }
        for name, size in sizes.items():
            if size & (size - 1):
                raise ValueError(
                    f"implementation='pallas' compiles Triton tiles, whose sizes must be powers of two; got "
                    f"{name} = {size}. Use powers of two, or implementation='blockwise'."
                )
    return _blockwise.blockwise_attention(query, key, value, power_of_two=True, core=pallas_core, **kwargs)
