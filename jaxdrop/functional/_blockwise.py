"""Blockwise attention with dropout: memory linear in the lengths, dropout masks regenerated tile by tile.

FlashAttention-2 (Dao 2023, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning",
ICLR 2024) in ``jax.numpy``: an online softmax (Milakov & Gimelshein 2018) runs over key/value tiles, so the
``(q_length, kv_length)`` logits never exist at once, and a ``jax.custom_vjp`` keeps only the output and one
log-sum-exp per query row for the backward pass, which recomputes each tile's logits. The dropout mask of a tile
is regenerated from the key and the tile's global (batch, head, query, key) indices in the weights' mask shape
(``_masks.keep_at``): the decisions the dense path's ``bernoulli_dropout`` makes there, so the blockwise and the
dense paths drop exactly the same weights, whatever the block sizes.

Layout inside the core: batch axes flattened to one, query heads split as (kv_heads, group) for grouped-query
attention (flax.nnx's convention: query head ``h`` reads key/value head ``h // group``); a tile of logits is
``[batch, kv_heads, group, block_q, block_kv]``. Bias and mask are brought to that rank with every axis either
full or 1 (``canonical_weights_operand``), lengths are padded to whole blocks: both outside the ``custom_vjp``,
so autodiff of the padding and broadcasting is JAX's own.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks, _masks
from jaxdrop.functional import _core

_TWO32 = 2**32


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static configuration of one blockwise call (hashable: a ``nondiff_argnums`` of the ``custom_vjp``).

    ``batch_shape``, ``q_length``, ``kv_length`` and ``q_heads`` are the unpadded sizes: they set the dropout
    counters and which padded keys are masked out. ``rate`` is the static dropout rate, or None when it is traced
    (then an operand); ``dropout`` False means no random operation at all.
    """

    batch_shape: tuple[int, ...]
    q_length: int
    kv_length: int
    kv_heads: int
    group: int
    block_q: int
    block_kv: int
    is_causal: bool
    dropout: bool
    rate: float | None
    broadcast_dropout: bool
    precision: Any
    word_limit: int = _TWO32  # the counters' word size; tests lower it to exercise the two-word split
    generator: _masks.Generator = "fast"  # "fast" or "fast16": 32-bit or 16-bit keep thresholds (jaxdrop._masks)

    @property
    def q_heads(self) -> int:
        return self.kv_heads * self.group

    @property
    def num_q_blocks(self) -> int:
        return -(-self.q_length // self.block_q)

    @property
    def num_kv_blocks(self) -> int:
        return -(-self.kv_length // self.block_kv)

    @property
    def mask_shape(self) -> tuple[int, ...]:
        """The shape of the dense path's dropout mask: the logits' ``[batch..., heads, q, kv]``, shared axes 1."""
        if self.broadcast_dropout:
            return (1,) * (len(self.batch_shape) + 1) + (self.q_length, self.kv_length)
        return (*self.batch_shape, self.q_heads, self.q_length, self.kv_length)


def _rate(plan: Plan, operands: dict[str, Any]) -> float | jax.Array:
    return plan.rate if plan.rate is not None else operands["rate"]


def keep_decisions(
    plan: Plan,
    words: tuple[jax.Array, jax.Array],
    rate: float | jax.Array,
    q_start: jax.Array | int,
    kv_start: jax.Array | int,
    rows: int,
    columns: int,
    batch_head: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Keep decisions of queries ``q_start + [0, rows)`` and keys ``kv_start + [0, columns)``: the dense path's
    mask there, bit for bit (``_masks.keep_at`` at the tile's global indices).

    Shaped ``[batch|1, kv_heads|1, group|1, rows, columns]`` (1 on the axes a broadcast mask shares), or
    ``[rows, columns]`` for one (flattened batch index, query head) ``batch_head`` (a Pallas program's).

    Neighbouring keys share a Threefry block (``_masks.pairing_axis``); each element of the tile hashes its
    block and takes its word, which fuses into the tile's loop.
    """
    q_index = jnp.asarray(q_start).astype(jnp.uint32) + lax.broadcasted_iota(jnp.uint32, (rows, 1), 0)
    kv_index = jnp.asarray(kv_start).astype(jnp.uint32) + lax.broadcasted_iota(jnp.uint32, (1, columns), 1)
    if plan.broadcast_dropout:
        indices: list[jax.Array | int] = [0] * (len(plan.batch_shape) + 1) + [q_index, kv_index]
    else:
        if batch_head is None:
            heads = (1, plan.kv_heads, plan.group, 1, 1)
            flat = lax.broadcasted_iota(jnp.uint32, (math.prod(plan.batch_shape), 1, 1, 1, 1), 0)
            head = lax.broadcasted_iota(jnp.uint32, heads, 1) * jnp.uint32(plan.group)
            head = head + lax.broadcasted_iota(jnp.uint32, heads, 2)
        else:
            flat, head = (jnp.asarray(index).astype(jnp.uint32) for index in batch_head)
        batch_indices: list[jax.Array | int] = []
        for size in reversed(plan.batch_shape):  # the flattened batch index, back to one index per batch axis
            batch_indices.insert(0, flat % jnp.uint32(size))
            flat = flat // jnp.uint32(size)
        indices = [*batch_indices, head, q_index, kv_index]
    keep = _masks.keep_at(words, rate, plan.mask_shape, indices, plan.generator, plan.word_limit)
    if batch_head is not None:
        return jnp.broadcast_to(keep, (rows, columns))
    return keep.reshape((1,) * (5 - keep.ndim) + keep.shape)


def _keep(plan: Plan, operands: dict[str, Any], q_start, kv_start, rows: int, columns: int) -> jax.Array:
    words = (operands["words"][0], operands["words"][1])
    return keep_decisions(plan, words, _rate(plan, operands), q_start, kv_start, rows, columns)


def _strip_keep(plan: Plan, operands: dict[str, Any], q_start, kv_start, rows: int, columns: int) -> jax.Array | None:
    """A mask shared over batch and heads (``broadcast_dropout``) for a whole strip of tiles, made before the loop
    over the strip, or None.

    XLA fuses a generator into each consumer of its broadcast, so a mask made inside the tile loop would be
    recomputed once per batch element and head (measured: 1.4x the time of no dropout at 8 heads); made outside,
    it is computed once and each tile reads its slice.
    """
    if not (plan.dropout and plan.broadcast_dropout):
        return None
    return _keep(plan, operands, q_start, kv_start, rows, columns)


def _tile_dropout(plan: Plan, operands: dict[str, Any], strip: jax.Array | None, q_start, kv_start, axis: int):
    """``x -> where(keep, x * scale, 0)`` with this tile's keep-mask (``_core.apply_keep_mask``'s operation: NaN
    for a traced rate outside [0, 1], as in the dense path); the identity without dropout.

    ``strip`` is ``_strip_keep``'s mask; the tile is its slice at ``q_start`` (``axis=3``) or ``kv_start`` (4).
    """
    if not plan.dropout:
        return lambda weights: weights
    if strip is not None:
        start, size = (q_start, plan.block_q) if axis == 3 else (kv_start, plan.block_kv)
        keep = lax.dynamic_slice_in_dim(strip, start, size, axis=axis)
    else:
        keep = _keep(plan, operands, q_start, kv_start, plan.block_q, plan.block_kv)
    rate = _rate(plan, operands)
    scale = _core.keep_scale(rate, inverted=True)
    return lambda weights: jnp.where(keep, weights * scale, 0.0 * scale)


def _slice_operand(operand: jax.Array | None, q_start, kv_start, plan: Plan):
    """The tile of a canonical bias or mask (axes 3 and 4 are full or 1)."""
    if operand is None:
        return None
    if operand.shape[3] > 1:
        operand = lax.dynamic_slice_in_dim(operand, q_start, plan.block_q, axis=3)
    if operand.shape[4] > 1:
        operand = lax.dynamic_slice_in_dim(operand, kv_start, plan.block_kv, axis=4)
    return operand


def _tile_logits(plan: Plan, operands: dict[str, Any], q_tile: jax.Array, q_start, kv_start) -> jax.Array:
    """Logits of one tile in float32, ``-inf`` where a key is not visible (masked, causal, padding, segment)."""
    k_tile = lax.dynamic_slice_in_dim(operands["key"], kv_start, plan.block_kv, axis=1)
    logits = jnp.einsum(
        "bqhgd,bkhd->bhgqk", q_tile, k_tile, precision=plan.precision, preferred_element_type=jnp.float32
    )
    logits = logits / math.sqrt(q_tile.shape[-1])  # the dense path's operation, in its order
    bias = _slice_operand(operands["bias"], q_start, kv_start, plan)
    if bias is not None:
        logits = logits + bias
    visible = _slice_operand(operands["mask"], q_start, kv_start, plan)

    def both(a, b):
        return b if a is None else jnp.logical_and(a, b)

    tile = (plan.block_q, plan.block_kv)
    if plan.kv_length % plan.block_kv:  # padded keys
        visible = both(visible, kv_start + lax.broadcasted_iota(jnp.int32, tile, 1) < plan.kv_length)
    if plan.is_causal:  # flax.nnx's tril((q_length, kv_length)): key k is visible from query q when k <= q
        kv_index = kv_start + lax.broadcasted_iota(jnp.int32, tile, 1)
        q_index = q_start + lax.broadcasted_iota(jnp.int32, tile, 0)
        visible = both(visible, kv_index <= q_index)
    if operands["q_segments"] is not None:
        q_segments = lax.dynamic_slice_in_dim(operands["q_segments"], q_start, plan.block_q, axis=1)
        kv_segments = lax.dynamic_slice_in_dim(operands["kv_segments"], kv_start, plan.block_kv, axis=1)
        visible = both(visible, q_segments[:, None, None, :, None] == kv_segments[:, None, None, None, :])
    return logits if visible is None else jnp.where(visible, logits, -jnp.inf)


def _causal_kv_blocks(plan: Plan, q_block: jax.Array) -> jax.Array | int:
    """How many key/value blocks query block ``q_block`` sees (all, or those up to the diagonal when causal)."""
    if not plan.is_causal:
        return plan.num_kv_blocks
    last_query = jnp.minimum((q_block + 1) * plan.block_q, plan.q_length) - 1
    return jnp.minimum(last_query // plan.block_kv + 1, plan.num_kv_blocks)


def _causal_first_q_block(plan: Plan, kv_block: jax.Array) -> jax.Array | int:
    """The first query block that sees key/value block ``kv_block``."""
    return (kv_block * plan.block_kv) // plan.block_q if plan.is_causal else 0


def _forward(plan: Plan, operands: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
    """Output ``[batch, q, kv_heads, group, v_depth]`` and log-sum-exp ``[batch, kv_heads, group, q]`` (+inf for a
    query that sees no key)."""
    query, value = operands["query"], operands["value"]
    batch, q_padded, kv_heads, group, _ = query.shape
    v_depth = value.shape[-1]
    row_shape = (batch, kv_heads, group, plan.block_q)

    def q_block(i, carry):
        out, lse = carry
        q_start = i * plan.block_q
        q_tile = lax.dynamic_slice_in_dim(query, q_start, plan.block_q, axis=1)
        strip = _strip_keep(plan, operands, q_start, 0, plan.block_q, plan.num_kv_blocks * plan.block_kv)

        def kv_step(j, state):
            row_max, row_sum, acc = state
            kv_start = j * plan.block_kv
            logits = _tile_logits(plan, operands, q_tile, q_start, kv_start)
            new_max = jnp.maximum(row_max, logits.max(-1))
            # -inf while a row has seen no visible key: shift by 0 so exp gives 0, not exp(-inf + inf) = NaN.
            shift = jnp.where(new_max == -jnp.inf, 0.0, new_max)
            weights = jnp.exp(logits - shift[..., None])
            correction = jnp.exp(row_max - shift)
            row_sum = row_sum * correction + weights.sum(-1)
            weights = _tile_dropout(plan, operands, strip, q_start, kv_start, axis=4)(weights)
            v_tile = lax.dynamic_slice_in_dim(value, kv_start, plan.block_kv, axis=1)
            update = jnp.einsum(
                "bhgqk,bkhd->bhgqd",
                weights.astype(value.dtype),
                v_tile,
                precision=plan.precision,
                preferred_element_type=jnp.float32,
            )
            return new_max, row_sum, acc * correction[..., None] + update

        init = (
            jnp.full(row_shape, -jnp.inf, jnp.float32),
            jnp.zeros(row_shape, jnp.float32),
            jnp.zeros((*row_shape, v_depth), jnp.float32),
        )
        row_max, row_sum, acc = lax.fori_loop(0, _causal_kv_blocks(plan, i), kv_step, init)
        seen = row_sum > 0.0  # a query whose keys are all masked out gets zeros, not NaN
        out_tile = jnp.where(seen[..., None], acc / jnp.where(seen, row_sum, 1.0)[..., None], 0.0)
        out_tile = out_tile.transpose(0, 3, 1, 2, 4).astype(value.dtype)
        lse_tile = jnp.where(seen, row_max + jnp.log(jnp.where(seen, row_sum, 1.0)), jnp.inf)
        out = lax.dynamic_update_slice_in_dim(out, out_tile, q_start, axis=1)
        lse = lax.dynamic_update_slice_in_dim(lse, lse_tile, q_start, axis=3)
        return out, lse

    out = jnp.zeros((batch, q_padded, kv_heads, group, v_depth), value.dtype)
    lse = jnp.zeros((batch, kv_heads, group, q_padded), jnp.float32)
    return lax.fori_loop(0, plan.num_q_blocks, q_block, (out, lse))


def _backward(plan: Plan, operands: dict[str, Any], out: jax.Array, lse: jax.Array, d_out: jax.Array):
    """Gradients of query, key, value and bias (FlashAttention-2's loop: key/value blocks outside)."""
    query, key, value, bias = operands["query"], operands["key"], operands["value"], operands["bias"]
    scale = 1.0 / math.sqrt(query.shape[-1])
    # delta = rowsum(dO * O) = sum_k P_dropped * dP_dropped: the softmax backward's row term (FlashAttention-2).
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1).transpose(0, 2, 3, 1)

    def kv_block(j, carry):
        d_query, d_key, d_value, d_bias = carry
        kv_start = j * plan.block_kv
        k_tile = lax.dynamic_slice_in_dim(key, kv_start, plan.block_kv, axis=1)
        v_tile = lax.dynamic_slice_in_dim(value, kv_start, plan.block_kv, axis=1)
        strip = _strip_keep(plan, operands, 0, kv_start, plan.num_q_blocks * plan.block_q, plan.block_kv)

        def q_step(i, state):
            dk_tile, dv_tile, d_query, d_bias = state
            q_start = i * plan.block_q
            q_tile = lax.dynamic_slice_in_dim(query, q_start, plan.block_q, axis=1)
            do_tile = lax.dynamic_slice_in_dim(d_out, q_start, plan.block_q, axis=1)
            logits = _tile_logits(plan, operands, q_tile, q_start, kv_start)
            lse_tile = lax.dynamic_slice_in_dim(lse, q_start, plan.block_q, axis=3)
            weights = jnp.exp(logits - lse_tile[..., None])
            drop = _tile_dropout(
                plan, operands, strip, q_start, kv_start, axis=3
            )  # one mask for the weights and their gradient
            dropped = drop(weights)
            dv_tile = dv_tile + jnp.einsum(
                "bhgqk,bqhgd->bkhd",
                dropped.astype(value.dtype),
                do_tile,
                precision=plan.precision,
                preferred_element_type=jnp.float32,
            )
            d_dropped = jnp.einsum(
                "bqhgd,bkhd->bhgqk", do_tile, v_tile, precision=plan.precision, preferred_element_type=jnp.float32
            )
            d_weights = drop(d_dropped)
            delta_tile = lax.dynamic_slice_in_dim(delta, q_start, plan.block_q, axis=3)
            d_logits = weights * (d_weights - delta_tile[..., None])
            if d_bias is not None:
                d_bias = _add_bias_tile(d_bias, d_logits, q_start, kv_start, plan)
            d_scaled = d_logits * scale
            dq_tile = jnp.einsum(
                "bhgqk,bkhd->bqhgd", d_scaled, k_tile, precision=plan.precision, preferred_element_type=jnp.float32
            )
            current = lax.dynamic_slice_in_dim(d_query, q_start, plan.block_q, axis=1)
            d_query = lax.dynamic_update_slice_in_dim(d_query, current + dq_tile, q_start, axis=1)
            dk_tile = dk_tile + jnp.einsum(
                "bhgqk,bqhgd->bkhd", d_scaled, q_tile, precision=plan.precision, preferred_element_type=jnp.float32
            )
            return dk_tile, dv_tile, d_query, d_bias

        init = (
            jnp.zeros(k_tile.shape, jnp.float32),
            jnp.zeros(v_tile.shape, jnp.float32),
            d_query,
            d_bias,
        )
        dk_tile, dv_tile, d_query, d_bias = lax.fori_loop(
            _causal_first_q_block(plan, j), plan.num_q_blocks, q_step, init
        )
        d_key = lax.dynamic_update_slice_in_dim(d_key, dk_tile, kv_start, axis=1)
        d_value = lax.dynamic_update_slice_in_dim(d_value, dv_tile, kv_start, axis=1)
        return d_query, d_key, d_value, d_bias

    init = (
        jnp.zeros(query.shape, jnp.float32),
        jnp.zeros(key.shape, jnp.float32),
        jnp.zeros(value.shape, jnp.float32),
        None if bias is None else jnp.zeros(bias.shape, jnp.float32),
    )
    d_query, d_key, d_value, d_bias = lax.fori_loop(0, plan.num_kv_blocks, kv_block, init)
    return (
        d_query.astype(query.dtype),
        d_key.astype(key.dtype),
        d_value.astype(value.dtype),
        None if bias is None else d_bias.astype(bias.dtype),
    )


def _add_bias_tile(d_bias: jax.Array, d_logits: jax.Array, q_start, kv_start, plan: Plan) -> jax.Array:
    """Adds a tile's logit gradient to the bias gradient, summed over the axes where the bias is broadcast."""
    summed = tuple(axis for axis in range(5) if d_bias.shape[axis] == 1 and d_logits.shape[axis] > 1)
    tile = d_logits.sum(axis=summed, keepdims=True) if summed else d_logits
    starts = [0, 0, 0, q_start if d_bias.shape[3] > 1 else 0, kv_start if d_bias.shape[4] > 1 else 0]
    current = lax.dynamic_slice(d_bias, starts, tile.shape)
    return lax.dynamic_update_slice(d_bias, current + tile, starts)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention_core(plan: Plan, operands: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
    return _forward(plan, operands)


def core_forward_rule(forward: Callable[[Plan, dict[str, Any]], tuple[jax.Array, jax.Array]]) -> Callable:
    """The ``custom_vjp`` forward rule of a core computing ``(out, lse)`` with ``forward``: it keeps ``(operands,
    out, lse)`` for ``core_backward`` (the blockwise core's and the Pallas core's)."""

    def rule(plan: Plan, operands: dict[str, Any]):
        out, lse = forward(plan, operands)
        return (out, lse), (operands, out, lse)

    return rule


def core_backward(plan: Plan, residuals, cotangents):
    """The ``custom_vjp`` backward of a core whose residuals are ``(operands, out, lse)``: the Pallas core's too."""
    operands, out, lse = residuals
    d_out, _ = cotangents  # the log-sum-exp is an auxiliary output: nothing downstream differentiates it
    d_query, d_key, d_value, d_bias = _backward(plan, operands, out, lse, d_out)
    grads: dict[str, jax.Array | None] = dict.fromkeys(operands)
    grads.update(query=d_query, key=d_key, value=d_value, bias=d_bias)
    if operands["rate"] is not None:
        grads["rate"] = jnp.zeros_like(operands["rate"])  # no gradient flows to the rate (as in dropout)
    return (grads,)


_attention_core.defvjp(core_forward_rule(_forward), core_backward)


def canonical_weights_operand(
    operand: jax.typing.ArrayLike, query_shape: tuple[int, ...], key_shape: tuple[int, ...]
) -> jax.Array:
    """A bias or mask that broadcasts to the logits ``[batch..., heads, q_length, kv_length]`` (the caller has
    checked it), as the core's ``[batch|1, kv_heads|1, group|1, q_length|1, kv_length|1]``."""
    operand = jnp.asarray(operand)
    batch_shape = query_shape[:-3]
    q_heads, kv_heads = query_shape[-2], key_shape[-2]
    rank = len(batch_shape) + 3
    operand = operand.reshape((1,) * (rank - operand.ndim) + operand.shape)
    batch = 1
    if any(size > 1 for size in operand.shape[: len(batch_shape)]):  # broadcast over some batch axes, not all
        operand = jnp.broadcast_to(operand, (*batch_shape, *operand.shape[len(batch_shape) :]))
        batch = math.prod(batch_shape)
    heads = (kv_heads, q_heads // kv_heads) if operand.shape[-3] > 1 else (1, 1)
    return operand.reshape(batch, *heads, *operand.shape[-2:])


def segment_ids_pair(
    segment_ids: Any, query_shape: tuple[int, ...], key_shape: tuple[int, ...]
) -> tuple[jax.Array, jax.Array] | None:
    """``segment_ids`` (one ``[batch..., length]`` integer array for self-attention, or a pair ``(query_segment_ids,
    kv_segment_ids)``) as a checked pair of int32 arrays, or None."""
    if segment_ids is None:
        return None
    pair = tuple(segment_ids) if isinstance(segment_ids, (tuple, list)) else (segment_ids, segment_ids)
    if len(pair) != 2:
        raise ValueError(
            "`segment_ids` must be one [batch..., length] array (self-attention) or a pair (query_segment_ids, "
            f"kv_segment_ids); got a sequence of {len(pair)}."
        )
    expected = (query_shape[:-2], key_shape[:-2])
    out = []
    for ids, shape, role in zip(pair, expected, ("query", "key/value"), strict=True):
        ids = _checks.integer_array(ids, "segment_ids")
        if ids.shape != shape:
            raise ValueError(
                f"`segment_ids` for the {role} must have shape [batch..., length] = {shape}; got {ids.shape}."
            )
        out.append(ids.astype(jnp.int32))
    return out[0], out[1]


def segment_mask(segments: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The dense ``[batch..., 1, q_length, kv_length]`` mask of a segment-id pair: a query sees its own segment."""
    q_segments, kv_segments = segments
    return (q_segments[..., :, None] == kv_segments[..., None, :])[..., None, :, :]


def _pad_axis(array: jax.Array | None, axis: int, length: int, block: int) -> jax.Array | None:
    """``array`` padded with zeros along ``axis`` to a whole number of blocks (when that axis is full)."""
    if array is None or array.shape[axis] != length or length % block == 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, -length % block)
    return jnp.pad(array, widths)


def _fitted_block(block: int, length: int, power_of_two: bool) -> int:
    return min(block, 1 << (length - 1).bit_length() if power_of_two else length)


def blockwise_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    bias: jax.typing.ArrayLike | None,
    mask: jax.typing.ArrayLike | None,
    segments: tuple[jax.Array, jax.Array] | None,
    is_causal: bool,
    dropout: bool,
    rate: float | jax.Array,
    dropout_rng: jax.Array | None,
    broadcast_dropout: bool,
    precision: Any,
    block_q: int,
    block_kv: int,
    word_limit: int = _TWO32,
    generator: _masks.Generator = "fast",
    power_of_two: bool = False,
    core: Callable[[Plan, dict[str, Any]], tuple[jax.Array, jax.Array]] | None = None,
) -> jax.Array:
    """Attention of checked, promoted ``[batch..., length, heads, depth]`` arrays, tile by tile.

    ``dropout`` False (deterministic, or a static rate 0) draws nothing; otherwise ``dropout_rng`` is a checked key
    and ``rate`` the static float or traced scalar. A static rate 1 is handled by the caller (zeros). ``core``
    computes ``(out, lse)`` from the plan and the padded operands with a ``custom_vjp`` (default: the XLA loops
    here; ``_pallas_attention`` passes its kernel). A block longer than its length shrinks to the length, or
    with ``power_of_two`` (Triton's tiles) to the next power of two of the length.
    """
    batch_shape = query.shape[:-3]
    q_length, q_heads, depth = query.shape[-3:]
    kv_length, kv_heads = key.shape[-3:-1]
    v_depth = value.shape[-1]
    plan = Plan(
        batch_shape=batch_shape,
        q_length=q_length,
        kv_length=kv_length,
        kv_heads=kv_heads,
        group=q_heads // kv_heads,
        block_q=_fitted_block(block_q, q_length, power_of_two),
        block_kv=_fitted_block(block_kv, kv_length, power_of_two),
        is_causal=is_causal,
        dropout=dropout,
        rate=rate if isinstance(rate, float) else None,
        broadcast_dropout=broadcast_dropout,
        precision=precision,
        word_limit=word_limit,
        generator=generator,
    )
    batch = math.prod(batch_shape)

    def pad_q(array, axis):
        return _pad_axis(array, axis, q_length, plan.block_q)

    def pad_kv(array, axis):
        return _pad_axis(array, axis, kv_length, plan.block_kv)

    def operand(array, dtype):
        if array is None:
            return None
        array = canonical_weights_operand(array, query.shape, key.shape).astype(dtype)
        return pad_kv(pad_q(array, 3), 4)

    operands = {
        "query": pad_q(query.reshape(batch, q_length, kv_heads, plan.group, depth), 1),
        "key": pad_kv(key.reshape(batch, kv_length, kv_heads, depth), 1),
        "value": pad_kv(value.reshape(batch, kv_length, kv_heads, v_depth), 1),
        "bias": operand(bias, jnp.float32),  # added to float32 logits, as in the dense path
        "mask": operand(mask, bool),
        "q_segments": None if segments is None else pad_q(segments[0].reshape(batch, q_length), 1),
        "kv_segments": None if segments is None else pad_kv(segments[1].reshape(batch, kv_length), 1),
        "words": None,
        "rate": None,
    }
    if dropout:
        assert dropout_rng is not None
        operands["words"] = jnp.stack(_masks._key_words(dropout_rng))
        operands["rate"] = None if plan.rate is not None else lax.stop_gradient(rate)
    out, _ = (core or _attention_core)(plan, operands)
    return out[:, :q_length].reshape(*batch_shape, q_length, q_heads, v_depth)
