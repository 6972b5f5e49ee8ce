"""Scaled dot-product attention with dropout on the attention weights, a drop-in ``attention_fn`` for Flax."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks, _masks
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
    if not query.shape[-2] == key.shape[-2] == value.shape[-2]:
        raise ValueError(f"`query`, `key` and `value` must have the same number of heads (axis -2); got {shapes}.")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"`query` and `key` depths (axis -1) must match; got {shapes}.")
    if key.shape[-3] != value.shape[-3]:
        raise ValueError(f"`key` and `value` lengths (axis -3) must match; got {shapes}.")


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
) -> jax.Array:
    """Scaled dot-product attention with dropout on the attention weights; never stores the dropout mask.

    Use it as the ``attention_fn`` of ``flax.linen.MultiHeadDotProductAttention`` or ``flax.nnx.MultiHeadAttention``
    (it takes the arguments of ``flax.linen.dot_product_attention``, and ``promote_dtype`` and ``is_causal`` of
    ``flax.nnx.dot_product_attention``), or on its own. Attention dropout (the Transformer of Vaswani et al. 2017,
    "Attention Is All You Need", NeurIPS, in its tensor2tensor implementation; BERT; flax) zeroes attention weights
    after the softmax, so each query attends to a random subset of keys, and scales the rest by
    ``1 / (1 - dropout_rate)``.

    Flax keeps the ``(..., heads, q_length, kv_length)`` keep-mask multiplier, the dropped weights and the
    softmax's exponentials for the backward pass; here softmax, dropout and the product with ``value`` are
    recomputed from the float32 logits and ``dropout_rng``, so the logits are the only weight-sized residual.
    Logits, bias, mask and softmax are computed in float32 whatever the input dtype (flax's
    ``force_fp32_for_softmax=True``, so that flag is accepted and has no further effect); the weights are cast to
    ``dtype`` before the product with ``value``.

    Args:
      query: ``[batch..., q_length, heads, depth]``.
      key: ``[batch..., kv_length, heads, depth]`` (the attention key tensor; the PRNG key is ``dropout_rng``).
      value: ``[batch..., kv_length, heads, v_depth]``.
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
      generator: ``"fast"`` (default) or ``"jax"`` (the mask flax draws from the same ``dropout_rng``).

    Returns:
      ``[batch..., q_length, heads, v_depth]`` in ``dtype``.

    Raises:
      TypeError: non-floating inputs, ``dropout_rng`` not a PRNG key, or an unknown keyword (Python's own error).
      ValueError: mismatched shapes, a static ``dropout_rate`` outside [0, 1], a missing ``dropout_rng``, or
        custom einsums combined with ``precision``/``einsum_dot_general`` or given alone.

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
    if promote_dtype is not None:
        # flax.nnx's promote_dtype returns JAX arrays; the cast is for mypy only (no runtime effect).
        query, key, value = cast(
            "tuple[jax.Array, jax.Array, jax.Array]", promote_dtype((query, key, value), dtype=dtype)
        )
    else:
        dtype = jnp.dtype(dtype) if dtype is not None else jnp.result_type(query, key, value)
        query, key, value = (jnp.asarray(array, dtype) for array in (query, key, value))
    for name, array in (("query", query), ("key", key), ("value", value)):
        _checks.floating_array(array, name)
    dtype = query.dtype
    _check_shapes(query, key, value)
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
    _checks.choice(generator, _masks.GENERATORS, "generator")

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

    static = isinstance(rate, float)
    no_dropout = deterministic or (static and rate == 0.0)
    needs_key = not no_dropout and not (static and rate == 1.0)  # static rate 1: zero weights, no key needed
    dropout_rng = _checks.key(dropout_rng, "dropout_rng", site="dot_product_attention") if needs_key else None
    # Flax's broadcast_dropout shares the mask over every axis but (q_length, kv_length).
    shared_axes = tuple(range(logits.ndim - 2)) if broadcast_dropout else ()
    value_einsum = attn_weights_value_einsum or default_einsum

    def attend(logits, value, rng, rate):
        weights = jax.nn.softmax(logits).astype(dtype)  # softmax in float32, then the computation dtype
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
