"""Scaled dot-product attention with dropout on the attention weights, a drop-in ``attention_fn`` for Flax."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks, _masks
from jaxdrop.functional import _blockwise, _pallas_attention  # the latter imports Pallas on first use only
from jaxdrop.functional._dropout import bernoulli_dropout


def _check_shapes(query: jax.Array, key: jax.Array, value: jax.Array) -> None:
    shapes = f"query {query.shape}, key {key.shape}, value {value.shape}"
    if not query.ndim == key.ndim == value.ndim >= 3:
        raise ValueError(
            f"`query`, `key` and `value` must have the same rank, at least 3 "
            f"([batch..., length, heads, depth]); got {shapes}."
        )
    if not query.shape[:-3] == key.shape[:-3] == value.shape[:-3]:
        raise ValueError(f"`query`, `key` and `value` batch dimensions must match; got {shapes}.")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"`key` and `value` must have the same number of heads (axis -2); got {shapes}.")
    if query.shape[-2] % key.shape[-2]:
        raise ValueError(
            f"`query` heads (axis -2) must be a multiple of the `key`/`value` heads (grouped-query attention: "
            f"query head h reads key/value head h // (query heads / kv heads)); got {shapes}."
        )
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"`query` and `key` depths (axis -1) must match; got {shapes}.")
    if key.shape[-3] != value.shape[-3]:
        raise ValueError(f"`key` and `value` lengths (axis -3) must match; got {shapes}.")


def _floating_dtype(dtype: Any) -> jnp.dtype:
    try:
        checked = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"`dtype` must be a floating-point dtype or None; got {_checks.describe(dtype)}.") from err
    if not jnp.issubdtype(checked, jnp.floating):
        raise TypeError(f"`dtype` must be a floating-point dtype (float32, bfloat16, float16, float64); got {checked}.")
    return checked


def _broadcastable(array: jax.typing.ArrayLike, name: str, logits_shape: tuple[int, ...]) -> jax.Array:
    """``bias`` or ``mask`` as an array that broadcasts to the logits ``[batch..., heads, q_length, kv_length]``."""
    checked = _checks.array(array, name)
    if jnp.issubdtype(checked.dtype, jnp.complexfloating):
        raise TypeError(f"`{name}` must be a real or boolean array; got dtype {checked.dtype}.")
    try:
        broadcast = np.broadcast_shapes(checked.shape, logits_shape)
    except ValueError:
        broadcast = None
    if broadcast != logits_shape:
        raise ValueError(
            f"`{name}` of shape {checked.shape} does not broadcast to the attention logits "
            f"[batch..., heads, q_length, kv_length] = {logits_shape}."
        )
    return checked


IMPLEMENTATIONS = ("xla", "blockwise", "pallas")
# Tile sizes: (256, 256) was fastest of 128..1024 for the blockwise path on a 2-core CPU at 1k and 4k tokens and
# keeps the gradient's temp memory near 1% of the dense path's at 4k; (128, 128) is JAX's own Triton kernel's.
DEFAULT_BLOCKS = {"blockwise": (256, 256), "pallas": (128, 128)}


def _implementation(
    requested: str | None,
    dense_only: list[str],
    q_length: int,
    kv_length: int,
    block_q: int | None,
    block_kv: int | None,
) -> str:
    """The implementation a call runs: ``requested``, or for None blockwise unless the call needs the dense path
    (``dense_only`` names its features) or fits in one tile (then blockwise saves no memory)."""
    if requested is None:
        default_q, default_kv = DEFAULT_BLOCKS["blockwise"]
        single_tile = q_length <= (block_q or default_q) and kv_length <= (block_kv or default_kv)
        return "xla" if dense_only or single_tile else "blockwise"
    _checks.choice(requested, IMPLEMENTATIONS, "implementation")
    if requested != "xla" and dense_only:
        raise ValueError(
            f"`implementation={requested!r}` does not support {dense_only[0]}; "
            "pass implementation='xla', or None to let the call choose."
        )
    return requested


def dot_product_attention(
    query: jax.typing.ArrayLike,
    key: jax.typing.ArrayLike,
    value: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
    mask: jax.typing.ArrayLike | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: jax.typing.ArrayLike = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    force_fp32_for_softmax: bool = False,
    einsum_dot_general: Callable[..., jax.Array] | None = None,
    qk_attn_weights_einsum: Callable[..., jax.Array] | None = None,
    attn_weights_value_einsum: Callable[..., jax.Array] | None = None,
    promote_dtype: Callable[..., Any] | None = None,
    is_causal: bool = False,
    *,
    generator: _masks.Generator = "fast",
    segment_ids: Any = None,
    implementation: str | None = None,
    block_q: int | None = None,
    block_kv: int | None = None,
) -> jax.Array:
    """Scaled dot-product attention with dropout on the attention weights; never stores the dropout mask.

    Use it as the ``attention_fn`` of ``flax.linen.MultiHeadDotProductAttention`` or ``flax.nnx.MultiHeadAttention``
    (it takes the arguments of ``flax.linen.dot_product_attention``, and ``promote_dtype`` and ``is_causal`` of
    ``flax.nnx.dot_product_attention``), or on its own. Attention dropout (the Transformer of Vaswani et al. 2017,
    "Attention Is All You Need", NeurIPS, in its tensor2tensor implementation; BERT; flax) zeroes attention weights
    after the softmax, so each query attends to a random subset of keys, and scales the rest by
    ``1 / (1 - dropout_rate)``.

    By default (``implementation=None``) the weights are never materialised: a blockwise online softmax over
    key/value tiles (FlashAttention-2, Dao 2023) keeps memory linear in the lengths, and the backward pass
    recomputes each tile and regenerates its dropout mask from ``dropout_rng``; it drops the same weights as the
    dense path, bit for bit, whatever the tiles. The dense path (``implementation="xla"``, also chosen for one
    tile's worth of tokens or for dense-only features, see ``implementation``) keeps the float32 logits as its only
    weight-sized residual, where flax keeps the keep-mask multiplier, the dropped weights and the softmax's
    exponentials. A query whose keys are all masked out gets zeros (flax: the mean of the values).
    Logits, bias, mask and softmax are computed in float32 whatever the input dtype (flax's
    ``force_fp32_for_softmax=True``, so that flag is accepted and has no further effect); the weights are cast to
    ``dtype`` before the product with ``value``.

    Args:
      query: ``[batch..., q_length, heads, depth]``.
      key: ``[batch..., kv_length, kv_heads, depth]`` (the attention key tensor; the PRNG key is ``dropout_rng``);
        ``kv_heads`` divides ``heads`` (grouped-query attention, as ``flax.nnx``: query head ``h`` reads key/value
        head ``h // (heads // kv_heads)``).
      value: ``[batch..., kv_length, kv_heads, v_depth]``.
      bias: added to the logits; broadcastable to ``[batch..., heads, q_length, kv_length]``.
      mask: boolean, broadcastable to ``[batch..., heads, q_length, kv_length]``; False positions get no weight.
      broadcast_dropout: share the dropout mask over the batch and head axes (flax's default), or not.
      dropout_rng: PRNG key for dropout; required when ``dropout_rate > 0`` and not ``deterministic``.
      dropout_rate: probability of dropping an attention weight, in [0, 1]; static (validated) or traced.
      deterministic: if True, no dropout and no random operations.
      dtype: computation dtype of the inputs and output (default: promoted from ``query``, ``key``, ``value``).
      precision: ``jax.lax.Precision`` for both einsums.
      module: a flax module to ``sow`` the attention weights (before dropout) into ``"intermediates"``, or None.
      force_fp32_for_softmax: accepted for flax compatibility; the softmax is always computed in float32.
      einsum_dot_general: the ``dot_general`` used by both einsums.
      qk_attn_weights_einsum: replaces the query-key einsum (flax's AQT hook); given with
        ``attn_weights_value_einsum``, not with ``precision`` or ``einsum_dot_general``. With custom einsums the
        dropped weights are stored for the backward pass (a flax module cannot be rematerialised).
      attn_weights_value_einsum: replaces the weights-value einsum.
      promote_dtype: ``flax.nnx``'s dtype promotion hook, called as ``promote_dtype((query, key, value),
        dtype=dtype)``; by default the inputs are promoted to ``dtype`` or their common floating dtype.
      is_causal: also mask out keys after each query (``tril`` of ``(q_length, kv_length)``), as ``flax.nnx``.
      generator: ``"fast"`` (default), ``"fast16"`` (16-bit thresholds, see ``jaxdrop.dropout``) or ``"jax"``
        (the mask flax draws from the same ``dropout_rng``).
      segment_ids: packed sequences: an integer ``[batch..., length]`` array (self-attention) or a pair
        ``(query_segment_ids, kv_segment_ids)``; a query attends only to keys of its own segment.
      implementation: ``"blockwise"`` (tiles in ``jax.numpy``; forward-mode autodiff unsupported), ``"xla"`` (the
        dense weights), ``"pallas"`` (the blockwise forward as a GPU Pallas/Triton kernel, backward as
        ``"blockwise"``; interpreted, slowly, off GPU), or None: ``"blockwise"`` unless both lengths fit in one tile
        or the call uses custom einsums, ``einsum_dot_general``, ``module`` or ``generator="jax"`` (dense only).
      block_q: query tile length (default 256 blockwise, 128 Pallas); lengths are padded to whole tiles.
      block_kv: key/value tile length (default 256 blockwise, 128 Pallas).

    Returns:
      ``[batch..., q_length, heads, v_depth]`` in ``dtype``.

    Raises:
      TypeError: non-floating inputs or ``dtype``, ``dropout_rng`` not a PRNG key, a hook that is not callable,
        a block size that is not an int, non-integer ``segment_ids``, or an unknown keyword (Python's own error).
      ValueError: mismatched shapes (``kv_heads`` not dividing ``heads`` included), a ``bias`` or ``mask`` that
        does not broadcast to the logits, a static ``dropout_rate`` outside [0, 1], a missing ``dropout_rng``,
        custom einsums combined with ``precision``/``einsum_dot_general`` or given alone, a block size below 1,
        an unknown ``implementation`` or one that lacks a feature the call uses, or bad ``segment_ids``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> q = k = v = jnp.ones((2, 5, 4, 8))  # (batch, length, heads, depth)
      >>> out = jaxdrop.dot_product_attention(q, k, v, dropout_rng=jax.random.key(0), dropout_rate=0.1)
      >>> out.shape
      (2, 5, 4, 8)

      As a flax layer's attention function:

      >>> import flax.linen as nn
      >>> layer = nn.MultiHeadDotProductAttention(num_heads=4, attention_fn=jaxdrop.dot_product_attention)
    """
    for name, array in (("query", query), ("key", key), ("value", value)):
        _checks.floating_array(array, name)  # an integer input is an error here too, not promoted silently
    if dtype is not None:
        dtype = _floating_dtype(dtype)
    for name, hook in (
        ("einsum_dot_general", einsum_dot_general),
        ("qk_attn_weights_einsum", qk_attn_weights_einsum),
        ("attn_weights_value_einsum", attn_weights_value_einsum),
        ("promote_dtype", promote_dtype),
    ):
        _checks.optional_callable(hook, name)
    if module is not None and not callable(getattr(module, "sow", None)):
        raise TypeError(f"`module` must be a flax module (with `sow`) or None; got {_checks.describe(module)}.")
    if promote_dtype is not None:
        # flax.nnx's promote_dtype returns JAX arrays; the cast is for mypy only (no runtime effect).
        query, key, value = cast(
            "tuple[jax.Array, jax.Array, jax.Array]", promote_dtype((query, key, value), dtype=dtype)
        )
    else:
        dtype = dtype if dtype is not None else jnp.result_type(query, key, value)
        query, key, value = (jnp.asarray(array, dtype) for array in (query, key, value))
    for name, array in (("query", query), ("key", key), ("value", value)):
        _checks.floating_array(array, name)
    dtype = query.dtype
    _check_shapes(query, key, value)
    logits_shape = (*query.shape[:-3], query.shape[-2], query.shape[-3], key.shape[-3])
    bias = None if bias is None else _broadcastable(bias, "bias", logits_shape)
    mask = None if mask is None else _broadcastable(mask, "mask", logits_shape)
    rate = _checks.probability(dropout_rate, "dropout_rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    broadcast_dropout = _checks.static_bool(broadcast_dropout, "broadcast_dropout")
    _checks.static_bool(force_fp32_for_softmax, "force_fp32_for_softmax")
    is_causal = _checks.static_bool(is_causal, "is_causal")
    if (qk_attn_weights_einsum is None) != (attn_weights_value_einsum is None):
        raise ValueError("`qk_attn_weights_einsum` and `attn_weights_value_einsum` must be given together.")
    if qk_attn_weights_einsum is not None and (precision is not None or einsum_dot_general is not None):
        raise ValueError(
            "`qk_attn_weights_einsum`/`attn_weights_value_einsum` and `precision`/`einsum_dot_general` "
            "are mutually exclusive; pass only one of them."
        )
    segments = _blockwise.segment_ids_pair(segment_ids, query.shape, key.shape)
    dense_only = [
        feature
        for feature, used in (
            ("custom einsums", qk_attn_weights_einsum is not None),
            ("`einsum_dot_general`", einsum_dot_general is not None),
            ("`module` (sowing the [..., q_length, kv_length] attention weights)", module is not None),
            ("generator='jax' (jax.random.bernoulli draws the whole mask at once)", generator == "jax"),
        )
        if used
    ]
    block_q = None if block_q is None else _checks.positive_int(block_q, "block_q")
    block_kv = None if block_kv is None else _checks.positive_int(block_kv, "block_kv")
    implementation = _implementation(implementation, dense_only, query.shape[-3], key.shape[-3], block_q, block_kv)
    _checks.choice(generator, _masks.GENERATORS, "generator")

    static = isinstance(rate, float)
    no_dropout = deterministic or (static and rate == 0.0)
    needs_key = not no_dropout and not (static and rate == 1.0)  # static rate 1: zero weights, no key needed
    dropout_rng = _checks.key(dropout_rng, "dropout_rng", site="dot_product_attention") if needs_key else None
    if implementation != "xla":
        if not no_dropout and static and rate == 1.0:
            return jnp.zeros((*query.shape[:-1], value.shape[-1]), dtype)
        attend_blockwise = (
            _pallas_attention.pallas_attention if implementation == "pallas" else _blockwise.blockwise_attention
        )
        return attend_blockwise(
            query,
            key,
            value,
            bias=bias,
            mask=mask,
            segments=segments,
            is_causal=is_causal,
            dropout=not no_dropout,
            rate=rate,
            dropout_rng=dropout_rng,
            broadcast_dropout=broadcast_dropout,
            precision=precision,
            block_q=block_q or DEFAULT_BLOCKS[implementation][0],
            block_kv=block_kv or DEFAULT_BLOCKS[implementation][1],
            generator=generator,
        )
    group = query.shape[-2] // key.shape[-2]
    if group > 1:  # flax.nnx's grouped-query attention: query head h reads key/value head h // group
        key, value = (jnp.repeat(array, group, axis=-2) for array in (key, value))
    if segments is not None:
        mask = (
            _blockwise.segment_mask(segments)
            if mask is None
            else jnp.logical_and(mask, _blockwise.segment_mask(segments))
        )

    default_einsum = functools.partial(
        jnp.einsum, precision=precision, _dot_general=einsum_dot_general or lax.dot_general
    )
    if qk_attn_weights_einsum is None:
        logits = default_einsum("...qhd,...khd->...hqk", query, key, preferred_element_type=jnp.float32)
    else:
        logits = qk_attn_weights_einsum("...qhd,...khd->...hqk", query, key).astype(jnp.float32)
    logits = logits / math.sqrt(query.shape[-1])
    if bias is not None:
        logits = logits + jnp.asarray(bias, jnp.float32)
    if is_causal:
        causal = jnp.tril(jnp.ones(logits.shape[-2:], bool))
        mask = causal if mask is None else jnp.logical_and(mask, causal)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    if module is not None:
        module.sow("intermediates", "attention_weights", jax.nn.softmax(logits).astype(dtype))
    # A query whose keys are all masked out attends to nothing: zeros, as in the blockwise path (flax: the mean of
    # every value, the softmax of equal logits).
    has_key = None if mask is None else jnp.any(mask, axis=-1, keepdims=True)

    # Flax's broadcast_dropout shares the mask over every axis but (q_length, kv_length).
    shared_axes = tuple(range(logits.ndim - 2)) if broadcast_dropout else ()
    value_einsum = attn_weights_value_einsum or default_einsum

    def attend(logits, value, rng, rate):
        weights = jax.nn.softmax(logits)  # in float32, then the computation dtype
        if has_key is not None:
            weights = jnp.where(has_key, weights, 0.0)
        weights = weights.astype(dtype)
        if not no_dropout:  # the key is checked and recorded above, outside the checkpoint (site=None here)
            weights = bernoulli_dropout(weights, rate, rng, site=None, shared_axes=shared_axes, generator=generator)
        return value_einsum("...hqk,...khd->...qhd", weights, value).astype(dtype)

    if attn_weights_value_einsum is not None:  # a custom einsum may be a flax module: no rematerialisation
        return attend(logits, value, dropout_rng, rate)
    # Softmax, dropout and the product are recomputed from the logits and the key in the backward pass: the
    # float32 logits are the only weight-sized residual (flax keeps the softmax's exp, the keep-mask multiplier
    # and the dropped weights).
    remat = jax.checkpoint(
        attend, policy=jax.checkpoint_policies.nothing_saveable, static_argnums=(3,) if static else ()
    )
    return remat(logits, value, dropout_rng, rate)
