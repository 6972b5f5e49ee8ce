"""The bad-input catalogue (docs/bad_input.md): invalid calls across the public API raise a clear error.

Each case names the call, the exception and a pattern the message must match: the argument's name in backticks
and the accepted range (or what was expected). The table in docs/bad_input.md lists the same case ids; a test keeps
the two in step. tests/test_dropout.py holds the core's own cases for ``jaxdrop.dropout``; these are the rest.
Traced values cannot raise inside ``jit``: for those, the contract is a NaN output, never a silently wrong number
(last section).
"""

# ruff: noqa: E501  (the catalogue is a table: one case per line reads best)
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import re
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import uncertainty as unc

KEY = jax.random.key(0)
X3 = jnp.ones((2, 4, 3))
X4 = jnp.ones((2, 5, 5, 3))
PROBS = jnp.full((4, 3), 1 / 3)
SAMPLE_PROBS = jnp.full((5, 4, 3), 1 / 3)
LABELS = jnp.array([0, 1, 2, 0])
QKV = jnp.ones((2, 5, 2, 4))  # (batch, length, heads, depth)


def _mc_fn(key, x):
    return jaxdrop.dropout(x, 0.5, key=key)


STEP_PARAMS = jnp.ones((5, 3))  # a bigram model's embedding: 5 tokens, width 3
PROMPT = jnp.zeros((2, 2), jnp.int32)


def _step(params, cache, tokens, key):
    """A step function for ``mc.decode``/``mc.score``: ``(params, cache, tokens (B, 1), key) -> (logits, cache)``."""
    return jaxdrop.dropout(params[tokens], 0.5, key=key) @ params.T, cache


def _decode(**kwargs):
    return jaxdrop.mc.decode(
        _step,
        kwargs.pop("prompt", PROMPT),
        **{"params": STEP_PARAMS, "cache": (), "key": KEY, "num_samples": 2, "max_length": 4, **kwargs},
    )


def _score(**kwargs):
    return jaxdrop.mc.score(
        _step,
        kwargs.pop("tokens", PROMPT),
        **{"params": STEP_PARAMS, "cache": (), "key": KEY, "num_samples": 2, **kwargs},
    )


# (id, call, exception, pattern). The pattern names the argument and what is accepted.
CASES = [
    # --- dropout: beyond tests/test_dropout.py
    ("dropout/rate-inf", lambda: jaxdrop.dropout(X3, float("inf"), key=KEY), ValueError, r"`rate` must be in \[0, 1\]; got inf"),
    ("dropout/rate-complex", lambda: jaxdrop.dropout(X3, 0.5 + 0.5j, key=KEY), TypeError, r"`rate` must be a real number"),
    ("dropout/rate-shape-1", lambda: jaxdrop.dropout(X3, np.array([0.5]), key=KEY), ValueError, r"`rate` must be a scalar in \[0, 1\]"),
    ("dropout/x-complex", lambda: jaxdrop.dropout(X3.astype(jnp.complex64), 0.5, key=KEY), TypeError, r"`x` must have a floating-point dtype"),
    ("dropout/x-bool", lambda: jaxdrop.dropout(X3 > 0, 0.5, key=KEY), TypeError, r"`x` must have a floating-point dtype"),
    ("dropout/inverted-str", lambda: jaxdrop.dropout(X3, 0.5, key=KEY, inverted="yes"), TypeError, r"`inverted` must be a bool"),
    ("dropout/broadcast-dims-out-of-range", lambda: jaxdrop.dropout(X3, 0.5, key=KEY, broadcast_dims=3), ValueError, r"`broadcast_dims` entry 3 is out of range .* accepted range is \[-3, 2\]"),
    ("dropout/key-int", lambda: jaxdrop.dropout(X3, 0.5, key=0), TypeError, r"`key` must be a PRNG key"),
    ("dropout/key-uint32-2x2", lambda: jaxdrop.dropout(X3, 0.5, key=jnp.zeros((2, 2), jnp.uint32)), TypeError, r"`key` must be a PRNG key.*shape \(2, 2\)"),
    # --- spatial dropout
    ("spatial_dropout/rank-1", lambda: jaxdrop.spatial_dropout(jnp.ones(4), 0.5, key=KEY), ValueError, r"`x` must have a batch axis and a channel axis \(rank >= 2\)"),
    ("spatial_dropout/channel-axis-batch", lambda: jaxdrop.spatial_dropout(X4, 0.5, key=KEY, channel_axis=0), ValueError, r"`channel_axis`=0 names axis 0, the batch axis; accepted range is \[1, 3\]"),
    ("spatial_dropout/channel-axis-out-of-range", lambda: jaxdrop.spatial_dropout(X4, 0.5, key=KEY, channel_axis=4), ValueError, r"`channel_axis` entry 4 is out of range"),
    ("spatial_dropout/channel-axis-float", lambda: jaxdrop.spatial_dropout(X4, 0.5, key=KEY, channel_axis=1.0), TypeError, r"`channel_axis` must be an int"),
    ("spatial_dropout2d/rank-3", lambda: jaxdrop.spatial_dropout2d(X3, 0.5, key=KEY), ValueError, r"`x` must have rank 4 \(batch, height, width, channels\)"),
    ("spatial_dropout1d/missing-key", lambda: jaxdrop.spatial_dropout1d(X3, 0.5), ValueError, r"`key` is required"),
    # --- noise variants
    ("alpha_dropout/rate-2", lambda: jaxdrop.alpha_dropout(X3, 2.0, key=KEY), ValueError, r"`rate` must be in \[0, 1\]; got 2.0"),
    ("alpha_dropout/x-int", lambda: jaxdrop.alpha_dropout(jnp.ones(3, jnp.int32), 0.5, key=KEY), TypeError, r"`x` must have a floating-point dtype"),
    ("feature_alpha_dropout/rank-1", lambda: jaxdrop.feature_alpha_dropout(jnp.ones(4), 0.5, key=KEY), ValueError, r"rank >= 2"),
    ("gaussian_dropout/rate-negative", lambda: jaxdrop.gaussian_dropout(X3, -0.1, key=KEY), ValueError, r"`rate` must be in \[0, 1\]"),
    ("gaussian_dropout/key-string", lambda: jaxdrop.gaussian_dropout(X3, 0.1, key="0"), TypeError, r"`key` must be a PRNG key"),
    ("gaussian_noise/stddev-negative", lambda: jaxdrop.gaussian_noise(X3, -1.0, key=KEY), ValueError, r"`stddev` must be a finite number >= 0; got -1.0"),
    ("gaussian_noise/stddev-inf", lambda: jaxdrop.gaussian_noise(X3, float("inf"), key=KEY), ValueError, r"`stddev` must be a finite number >= 0; got inf"),
    ("gaussian_noise/stddev-nan", lambda: jaxdrop.gaussian_noise(X3, float("nan"), key=KEY), ValueError, r"`stddev` must be a finite number >= 0; got nan"),
    # --- drop path
    ("drop_path/mode", lambda: jaxdrop.drop_path(X3, 0.5, key=KEY, mode="column"), ValueError, r"`mode` must be one of \('row', 'batch'\)"),
    ("drop_path/batch-axis", lambda: jaxdrop.drop_path(X3, 0.5, key=KEY, batch_axis=3), ValueError, r"`batch_axis` entry 3 is out of range"),
    ("drop_path/scalar-row", lambda: jaxdrop.drop_path(jnp.float32(1.0), 0.5, key=KEY), ValueError, r"`x` must have a batch axis"),
    ("drop_path/scale-by-keep-int", lambda: jaxdrop.drop_path(X3, 0.5, key=KEY, scale_by_keep=1), TypeError, r"`scale_by_keep` must be a bool"),
    ("residual_drop_path/shapes", lambda: jaxdrop.residual_drop_path(X3, X3[0], 0.5, key=KEY), ValueError, r"`residual` and `branch` must have the same shape"),
    ("linear_drop_path_rates/depth-0", lambda: jaxdrop.linear_drop_path_rates(0.2, 0), ValueError, r"`depth` must be >= 1; got 0"),
    ("linear_drop_path_rates/depth-float", lambda: jaxdrop.linear_drop_path_rates(0.2, 2.5), TypeError, r"`depth` must be a positive Python int"),
    ("linear_drop_path_rates/max-rate", lambda: jaxdrop.linear_drop_path_rates(1.5, 4), ValueError, r"`max_rate` must be in \[0, 1\]; got 1.5"),
    # --- DropBlock
    ("dropblock/block-size-0", lambda: jaxdrop.dropblock(X4, 0.1, key=KEY, block_size=0), ValueError, r"`block_size` must be >= 1; got 0"),
    ("dropblock/block-size-too-large", lambda: jaxdrop.dropblock(X4, 0.1, key=KEY, block_size=6), ValueError, r"`block_size` 6 is larger than the feature map \(5, 5\); accepted range is \[1, 5\]"),
    ("dropblock/block-size-length", lambda: jaxdrop.dropblock(X4, 0.1, key=KEY, block_size=(3,)), ValueError, r"`block_size` must be an int or have one entry per spatial axis \(2\)"),
    ("dropblock/block-size-float", lambda: jaxdrop.dropblock(X4, 0.1, key=KEY, block_size=2.5), TypeError, r"`block_size` must be an int|`block_size` must be a positive Python int"),
    ("dropblock/no-spatial-axis", lambda: jaxdrop.dropblock(jnp.ones((2, 3)), 0.1, key=KEY, block_size=1), ValueError, r"`x` must have at least one spatial axis \(rank >= 3\)"),
    ("dropblock3d/rank-4", lambda: jaxdrop.dropblock3d(X4, 0.1, key=KEY, block_size=2), ValueError, r"`x` must have rank 5"),
    ("dropblock2d/share-flag", lambda: jaxdrop.dropblock2d(X4, 0.1, key=KEY, block_size=2, share_across_channels="no"), TypeError, r"`share_across_channels` must be a bool"),
    # --- DropConnect
    ("dropconnect/w-int", lambda: jaxdrop.dropconnect(jnp.ones((3, 3), jnp.int32), 0.5, key=KEY), TypeError, r"`w` must have a floating-point dtype"),
    ("dropconnect_params/where", lambda: jaxdrop.dropconnect_params({"w": X3}, 0.5, key=KEY, where=5), TypeError, r"`where` must be a callable \(path, leaf\) -> bool, a name or a sequence of names"),
    ("dropconnect_params/int-leaf", lambda: jaxdrop.dropconnect_params({"ids": jnp.ones((3, 3), jnp.int32)}, 0.5, key=KEY, where="ids"), TypeError, r"`where` selected the leaf 'ids' of dtype int32"),
    ("dropconnect_params/missing-key", lambda: jaxdrop.dropconnect_params({"w": X3}, 0.5), ValueError, r"`key` is required"),
    # --- sequences
    ("locked_dropout/time-axis", lambda: jaxdrop.locked_dropout(X3, 0.5, key=KEY, time_axis=3), ValueError, r"`time_axis` entry 3 is out of range .* accepted range is \[-3, 2\]"),
    ("locked_dropout/rank-1", lambda: jaxdrop.locked_dropout(jnp.ones(4), 0.5, key=KEY), ValueError, r"`x` must have a time axis and at least one other axis \(rank >= 2\)"),
    ("locked_mask/negative-shape", lambda: jaxdrop.locked_mask(KEY, 0.5, (2, -1)), ValueError, r"`shape` must have non-negative sizes"),
    ("locked_mask/h-int", lambda: jaxdrop.locked_mask(KEY, 0.5, (2, 3))(jnp.ones((2, 3), jnp.int32)), TypeError, r"`h` must have a floating-point dtype"),
    ("token_dropout/feature-axis", lambda: jaxdrop.token_dropout(X3, 0.5, key=KEY, feature_axis=-4), ValueError, r"`feature_axis` entry -4 is out of range"),
    ("word_dropout/ids-float", lambda: jaxdrop.word_dropout(X3, jnp.ones((2, 4)), 0.5, key=KEY), TypeError, r"`token_ids` must be an integer array; got dtype float32"),
    ("word_dropout/ids-shape", lambda: jaxdrop.word_dropout(X3, jnp.ones((2, 3), jnp.int32), 0.5, key=KEY), ValueError, r"`token_ids` must have the shape of `tokens_embedded` without its feature axis"),
    # --- attention
    ("dot_product_attention/rate", lambda: jaxdrop.dot_product_attention(QKV, QKV, QKV, dropout_rng=KEY, dropout_rate=1.2), ValueError, r"`dropout_rate` must be in \[0, 1\]; got 1.2"),
    ("dot_product_attention/missing-rng", lambda: jaxdrop.dot_product_attention(QKV, QKV, QKV, dropout_rate=0.1), ValueError, r"`dropout_rng` is required"),
    ("dot_product_attention/rank-2", lambda: jaxdrop.dot_product_attention(QKV[0, :, 0], QKV[0, :, 0], QKV[0, :, 0]), ValueError, r"`query`, `key` and `value` must have the same rank, at least 3"),
    ("dot_product_attention/depth", lambda: jaxdrop.dot_product_attention(QKV, QKV[..., :3], QKV), ValueError, r"`query` and `key` depths \(axis -1\) must match"),
    ("dot_product_attention/heads", lambda: jaxdrop.dot_product_attention(QKV, QKV[:, :, :1], QKV), ValueError, r"same number of heads"),
    ("dot_product_attention/one-einsum", lambda: jaxdrop.dot_product_attention(QKV, QKV, QKV, qk_attn_weights_einsum=jnp.einsum), ValueError, r"`qk_attn_weights_einsum` and `attn_weights_value_einsum` must be given together"),
    ("dot_product_attention/int-inputs", lambda: jaxdrop.dot_product_attention(*(jnp.ones((2, 5, 2, 4), jnp.int32),) * 3), TypeError, r"`query` must have a floating-point dtype"),
    # --- concrete dropout
    ("concrete_dropout/p-logit-vector", lambda: jaxdrop.concrete_dropout(X3, jnp.zeros(3), key=KEY), ValueError, r"`p_logit` must be a scalar"),
    ("concrete_dropout/p-logit-int", lambda: jaxdrop.concrete_dropout(X3, 0, key=KEY), TypeError, r"`p_logit` must be a floating-point scalar"),
    ("concrete_dropout/temperature-0", lambda: jaxdrop.concrete_dropout(X3, 0.0, key=KEY, temperature=0.0), ValueError, r"`temperature` must be a finite number > 0; got 0.0"),
    ("concrete_dropout/missing-key", lambda: jaxdrop.concrete_dropout(X3, 0.0), ValueError, r"`key` is required"),
    ("concrete_dropout_regularizer/input-dim", lambda: jaxdrop.concrete_dropout_regularizer(0.0, X3, weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=0), ValueError, r"`input_dim` must be >= 1; got 0"),
    ("concrete_dropout_regularizer/negative", lambda: jaxdrop.concrete_dropout_regularizer(0.0, X3, weight_regularizer=-1.0, dropout_regularizer=1e-1, input_dim=3), ValueError, r"`weight_regularizer` must be a finite number >= 0; got -1.0"),
    # --- Monte Carlo
    ("mc.sample/num-samples-0", lambda: jaxdrop.mc.sample(_mc_fn, X3, key=KEY, num_samples=0), ValueError, r"`num_samples` must be >= 1"),
    ("mc.sample/num-samples-float", lambda: jaxdrop.mc.sample(_mc_fn, X3, key=KEY, num_samples=2.5), TypeError, r"`num_samples` must be"),
    ("mc.sample/chunk-size-0", lambda: jaxdrop.mc.sample(_mc_fn, X3, key=KEY, num_samples=4, chunk_size=0), ValueError, r"`chunk_size` must be >= 1"),
    ("mc.sample/missing-key", lambda: jaxdrop.mc.sample(_mc_fn, X3, num_samples=4), TypeError, r"`key` is required"),
    ("mc.predict/num-samples-negative", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=-1), ValueError, r"`num_samples` must be >= 1"),
    ("mc.predict/task", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=2, task="segmentation"), ValueError, r"`task` must be one of \('classification', 'regression'\)"),
    ("mc.predict/tau-0", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=2, task="regression", tau=0.0), ValueError, r"`tau` must be a finite number > 0"),
    ("mc.predict/labels-float", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=2, labels=jnp.ones(2)), TypeError, r"`labels` must be integer class indices"),
    # --- Monte Carlo: function samples and per-site MC
    ("mc.sample/function-samples-not-bool", lambda: jaxdrop.mc.sample(_mc_fn, X3, key=KEY, num_samples=2, function_samples="yes"), TypeError, r"`function_samples` must be a bool; got 'yes'"),
    ("mc.predict/function-samples-not-bool", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=2, function_samples=1), TypeError, r"`function_samples` must be a bool; got 1"),
    ("mc.sample/batch-axes-count", lambda: jaxdrop.mc.sample(_mc_fn, X3, key=KEY, num_samples=2, function_samples=True, batch_axes=(0, None)), ValueError, r"`batch_axes` must give one entry .* per positional argument of `fn`: 1 argument\(s\); got 2"),
    ("mc.sample/batch-axis-out-of-range", lambda: jaxdrop.mc.sample(_mc_fn, X3, key=KEY, num_samples=2, function_samples=True, batch_axes=3), ValueError, r"`batch_axes\[0\]` entry 3 is out of range for an input of rank 3; accepted range is \[-3, 2\]"),
    ("mc.sample/batch-axes-without-function-samples", lambda: jaxdrop.mc.sample(_mc_fn, X3, key=KEY, num_samples=2, batch_axes=0), ValueError, r"`batch_axes=0` .* given with `function_samples=False`"),
    ("mc.sample/batch-sizes-differ", lambda: jaxdrop.mc.sample(lambda k, a, b: a, X3, X4, key=KEY, num_samples=2, function_samples=True, batch_axes=(0, 1)), ValueError, r"`batch_axes`: the batched arrays must share one batch size; got array 0: 2, array 1: 5"),
    ("mc.predict/inputs-batch-sizes-differ", lambda: jaxdrop.mc.predict(_mc_fn, (X3, X4[:1]), key=KEY, num_samples=2, function_samples=True), ValueError, r"`inputs`: the batched arrays must share one batch size"),
    ("mc.predict/sites-no-match", lambda: jaxdrop.mc.predict(_linen_model(), X3, key=KEY, num_samples=2, variables={}, sites="head/*"), ValueError, r"`sites`: the pattern 'head/\*' matches none of the model's dropout sites \('\(root\)'\)"),
    ("mc.predict/sites-not-callable", lambda: jaxdrop.mc.predict(_linen_model(), X3, key=KEY, num_samples=2, variables={}, sites=1.5), TypeError, r"`sites` must be 'last', a module path .* or a predicate `path -> bool` \(a callable\); got 1.5"),
    ("mc.predict/sites-for-a-function", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=2, sites="last"), ValueError, r"`sites='last'` chooses dropout layers of a linen or nnx model by module path; a function model has no module paths"),
    # --- MC decoding (issue 21)
    ("mc.decode/num-samples-0", lambda: _decode(num_samples=0), ValueError, r"`num_samples` must be >= 1; got 0"),
    ("mc.decode/chunk-size-0", lambda: _decode(chunk_size=0), ValueError, r"`chunk_size` must be >= 1; got 0"),
    ("mc.decode/missing-key", lambda: _decode(key=None), ValueError, r"`key` is required: sample i's dropout key is `fold_in\(key, i\)`"),
    ("mc.decode/max-length-below-prompt", lambda: _decode(max_length=2), ValueError, r"`max_length` counts the prompt's tokens and must be > the prompt's length 2.*accepted range is \[3, \.\.\.\); got 2"),
    ("mc.decode/max-length-float", lambda: _decode(max_length=4.0), TypeError, r"`max_length` must be a Python int >= 2"),
    ("mc.decode/prompt-float", lambda: _decode(prompt=jnp.zeros((2, 2))), TypeError, r"`prompt` must be an integer array"),
    ("mc.decode/prompt-1d", lambda: _decode(prompt=jnp.zeros(3, jnp.int32)), ValueError, r"`prompt` must be an integer array \(batch, length\) with batch >= 1 and length >= 1; got shape \(3,\)"),
    ("mc.decode/prompt-out-of-vocabulary", lambda: _decode(prompt=jnp.full((2, 2), 5, jnp.int32)), ValueError, r"`prompt` must hold token ids in \[0, 4\] \(the model's vocabulary has 5\); got values in \[5, 5\]"),
    ("mc.decode/masks", lambda: _decode(masks="per_token"), ValueError, r"`masks` must be one of \('fixed', 'per_step'\); got 'per_token'"),
    ("mc.decode/predictive", lambda: _decode(predictive="median"), ValueError, r"`predictive` must be one of \('mean', 'per_sample'\); got 'median'"),
    ("mc.decode/strategy", lambda: _decode(strategy="beam"), ValueError, r"`strategy` must be one of \('greedy', 'sample'\); got 'beam'"),
    ("mc.decode/temperature-0", lambda: _decode(strategy="sample", temperature=0.0), ValueError, r"`temperature` must be a finite number > 0; got 0.0"),
    ("mc.decode/end-token-negative", lambda: _decode(end_token=-1), ValueError, r"`end_token` must be >= 0; got -1"),
    ("mc.decode/end-token-out-of-vocabulary", lambda: _decode(end_token=5), ValueError, r"`end_token` must be in \[0, 4\] \(the model's vocabulary\); got 5"),
    ("mc.decode/cache-missing", lambda: _decode(cache=None), ValueError, r"`cache` is required for a step function"),
    ("mc.decode/cache-structure-changes", lambda: jaxdrop.mc.decode(lambda p, c, t, k: (_step(p, c, t, k)[0], {"new": t}), PROMPT, params=STEP_PARAMS, cache=(), key=KEY, num_samples=2, max_length=4), ValueError, r"`cache`: the model must return a cache of the same structure, shapes and dtypes"),
    ("mc.decode/cache-wrong-batch", lambda: _decode(cache={"cached_key": jnp.zeros((3, 4, 1, 3))}), ValueError, r"`cache` was built for a batch of \(3,\) \(cached_key has shape \(3, 4, 1, 3\)\), but the prompt has 2 row\(s\)"),
    ("mc.decode/cache-too-short", lambda: _decode(cache={"cached_key": jnp.zeros((2, 3, 1, 3))}), ValueError, r"`max_length`=4 exceeds the capacity of the decoding cache, 3 tokens"),
    ("mc.decode/logits-shape", lambda: jaxdrop.mc.decode(lambda p, c, t, k: (jnp.zeros((1, 2, 5)), c), PROMPT, params=None, cache=(), key=KEY, num_samples=2, max_length=4), ValueError, r"The model must return logits of shape \(batch, 1, vocab\) or \(batch, vocab\)"),
    ("mc.decode/variables-for-a-function", lambda: _decode(variables={}), ValueError, r"`variables` is only for linen modules"),
    ("mc.decode/model-not-callable", lambda: jaxdrop.mc.decode(3, PROMPT, cache=(), key=KEY, num_samples=2, max_length=4), TypeError, r"`model` must be a step function"),
    ("mc.decode/rng-collection-empty", lambda: _decode(rng_collection=""), ValueError, r"`rng_collection` must be a non-empty str"),
    ("mc.decode/apply-kwargs-list", lambda: _decode(apply_kwargs=[1]), TypeError, r"`apply_kwargs` must be a mapping of keyword arguments or None"),
    ("mc.decode/linen-without-cache", lambda: jaxdrop.mc.decode(_linen_model(), PROMPT, variables={"params": {}}, key=KEY, num_samples=2, max_length=4), ValueError, r"`variables` must hold the linen module's 'cache' collection"),
    ("mc.decode/linen-with-params", lambda: jaxdrop.mc.decode(_linen_model(), PROMPT, params={}, variables={"cache": {}}, key=KEY, num_samples=2, max_length=4), ValueError, r"`params` is for a step function; a linen module takes `variables=`"),
    ("mc.score/tokens-length-1", lambda: _score(tokens=jnp.zeros((2, 1), jnp.int32)), ValueError, r"`tokens` must be an integer array \(batch, length\) with batch >= 1 and length >= 2; got shape \(2, 1\)"),
    ("mc.score/tokens-bool", lambda: _score(tokens=jnp.zeros((2, 3), bool)), TypeError, r"`tokens` must be an integer array"),
    ("mc.score/num-samples-float", lambda: _score(num_samples=2.0), TypeError, r"`num_samples` must be a positive Python int"),
    ("sequence_log_likelihood/positive", lambda: unc.sequence_log_likelihood(jnp.full((2, 3, 4), 0.5)), ValueError, r"`sample_log_probs` must hold log-probabilities \(<= 0, -inf allowed, no NaN\); got a maximum of 0.5"),
    ("sequence_log_likelihood/nan", lambda: unc.sequence_log_likelihood(jnp.full((2, 3, 4), jnp.nan)), ValueError, r"`sample_log_probs` must hold log-probabilities .* got a maximum of NaN"),
    ("sequence_log_likelihood/1d", lambda: unc.sequence_log_likelihood(jnp.zeros(4)), ValueError, r"`sample_log_probs` must have shape \(num_samples, \*batch, length\) with num_samples >= 1; got \(4,\)"),
    ("sequence_log_likelihood/mask-shape", lambda: unc.sequence_log_likelihood(jnp.zeros((2, 3, 4)), mask=jnp.ones((3, 5), bool)), ValueError, r"`mask` must have the shape of `sample_log_probs` \(3, 4\); got \(3, 5\)"),
    ("sequence_log_likelihood/mask-float", lambda: unc.sequence_log_likelihood(jnp.zeros((2, 3, 4)), mask=jnp.ones((3, 4))), TypeError, r"`mask` must be a boolean array"),
    ("sequence_log_likelihood/normalize-int", lambda: unc.sequence_log_likelihood(jnp.zeros((2, 3, 4)), normalize=1), TypeError, r"`normalize` must be a bool"),
    ("aggregate_tokens/reduction", lambda: unc.aggregate_tokens(jnp.zeros((2, 3)), reduction="median"), ValueError, r"`reduction` must be one of \('mean', 'max', 'sum'\); got 'median'"),
    ("aggregate_tokens/nan", lambda: unc.aggregate_tokens(jnp.array([[0.1, jnp.nan]])), ValueError, r"`token_scores` must hold no NaN"),
    ("aggregate_tokens/scalar", lambda: unc.aggregate_tokens(jnp.float32(1.0)), ValueError, r"`token_scores` must have a token axis \(last\); got shape \(\)"),
    ("aggregate_tokens/int", lambda: unc.aggregate_tokens(jnp.zeros((2, 3), jnp.int32)), TypeError, r"`token_scores` must have a floating-point dtype"),
    # --- uncertainty metrics
    ("predictive_entropy/not-normalised", lambda: unc.predictive_entropy(jnp.array([[0.5, 0.6]])), ValueError, r"`probs` must sum to 1 along the last \(class\) axis"),
    ("predictive_entropy/nan", lambda: unc.predictive_entropy(jnp.array([[0.5, jnp.nan]])), ValueError, r"`probs` must hold probabilities in \[0, 1\]"),
    ("predictive_entropy/negative", lambda: unc.predictive_entropy(jnp.array([[1.5, -0.5]])), ValueError, r"`probs` must hold probabilities in \[0, 1\]"),
    ("mutual_information/no-sample-axis", lambda: unc.mutual_information(jnp.array([0.5, 0.5])), ValueError, r"`sample_probs` must have at least 2 axes"),
    ("expected_entropy/int", lambda: unc.expected_entropy(jnp.ones((2, 3, 1), jnp.int32)), TypeError, r"`sample_probs` must have a floating-point dtype"),
    ("nll/empty", lambda: unc.nll(jnp.zeros((0, 3)), jnp.zeros(0, int)), ValueError, r"must not be empty"),
    ("margin/zero-classes", lambda: unc.margin(jnp.zeros((4, 0))), ValueError, r"`probs`"),
    ("ood_auroc/nan", lambda: unc.ood_auroc(jnp.array([0.1, jnp.nan]), jnp.array([0.2, 0.3])), ValueError, r"NaN"),
    ("gaussian_log_likelihood/target-std-0", lambda: unc.gaussian_log_likelihood(jnp.zeros((3, 4)), jnp.zeros(4), tau=1.0, target_std=0.0), ValueError, r"`target_std` must be a finite number > 0"),
    ("mutual_information/2d-ambiguous", lambda: unc.mutual_information(PROBS), ValueError, r"sample_axis"),
    ("nll/labels-shape", lambda: unc.nll(PROBS, LABELS[:3]), ValueError, r"`labels` must have the batch shape of the probabilities \(4,\)"),
    ("nll/labels-range", lambda: unc.nll(PROBS, jnp.array([0, 1, 2, 3])), ValueError, r"`labels` must be in \[0, 2\]; got values in \[0, 3\]"),
    ("brier_score/labels-float", lambda: unc.brier_score(PROBS, jnp.zeros(4)), TypeError, r"`labels` must be integer class indices"),
    ("expected_calibration_error/num-bins-0", lambda: unc.expected_calibration_error(PROBS, LABELS, num_bins=0), ValueError, r"`num_bins` must be in \[1, 2147483647\]; got 0"),
    ("expected_calibration_error/binning", lambda: unc.expected_calibration_error(PROBS, LABELS, binning="log"), ValueError, r"`binning` must be one of \('uniform', 'quantile'\)"),
    ("reliability_diagram/rank-3", lambda: unc.reliability_diagram(SAMPLE_PROBS, jnp.zeros((5, 4), jnp.int32)), ValueError, r"`probs` must have shape \(num_examples, num_classes\)"),
    ("bald_top_k/k-0", lambda: unc.bald_top_k(SAMPLE_PROBS, 0), ValueError, r"`k` must be in \[1, 4\]; got 0"),
    ("bald_top_k/k-too-large", lambda: unc.bald_top_k(SAMPLE_PROBS, 5), ValueError, r"`k` must be in \[1, 4\]; got 5"),
    ("gaussian_log_likelihood/targets-shape", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(4), tau=1.0), ValueError, r"`targets` must have the shape of one sample \(3,\)"),
    ("gaussian_log_likelihood/two-noise-models", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(3), tau=1.0, log_variance=jnp.zeros((5, 3))), ValueError, r"Pass exactly one noise model: the precision `tau`"),
    ("gaussian_log_likelihood/tau-inf", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(3), tau=float("inf")), ValueError, r"`tau` must be"),
    ("gaussian_log_likelihood/tau-negative", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(3), tau=-1.0), ValueError, r"`tau` must be a finite number > 0; got -1.0"),
    ("gaussian_log_likelihood/log-variance-shape", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(3), log_variance=jnp.zeros((4, 3))), ValueError, r"`log_variance` and `samples` must have the same shape"),
    ("epistemic_variance/empty", lambda: unc.epistemic_variance(jnp.zeros((0, 3))), ValueError, r"`samples` must have a leading sample axis of size >= 1"),
    ("rmse/shapes", lambda: unc.rmse(jnp.zeros(3), jnp.zeros(4)), ValueError, r"`predictions` and `targets` must have the same shape"),
    ("flag_for_review/budget-fraction", lambda: unc.flag_for_review(jnp.zeros(4), 1.5), ValueError, r"`budget` as a fraction must be in \(0, 1\]; got 1.5"),
    ("flag_for_review/budget-count", lambda: unc.flag_for_review(jnp.zeros(4), 5), ValueError, r"`budget` must be in \[0, 4\]; got 5"),
    ("flag_for_review/budget-str", lambda: unc.flag_for_review(jnp.zeros(4), "10%"), TypeError, r"`budget` must be a float fraction in \(0, 1\] or an int count in \[0, 4\]"),
    ("ood_auroc/2d", lambda: unc.ood_auroc(jnp.zeros((2, 2)), jnp.zeros(3)), ValueError, r"`scores_in` must be 1-D"),
    ("aurc/lengths", lambda: unc.aurc(jnp.zeros(3), jnp.zeros(4)), ValueError, r"`uncertainty` and `errors` must have the same shape"),
    ("risk_coverage_curve/empty", lambda: unc.risk_coverage_curve(jnp.zeros(0), jnp.zeros(0)), ValueError, r"`uncertainty` must not be empty"),
    # --- uncertainty metrics: OOD, selective prediction, calibration, regression (issue 15)
    ("ood_aupr/positive", lambda: unc.ood_aupr(jnp.zeros(3), jnp.ones(2), positive="ood"), ValueError, r"`positive` must be one of \('out', 'in'\)"),
    ("ood_aupr/empty", lambda: unc.ood_aupr(jnp.zeros(3), jnp.zeros(0)), ValueError, r"`scores_out` must not be empty"),
    ("fpr_at_tpr/tpr-0", lambda: unc.fpr_at_tpr(jnp.zeros(3), jnp.ones(2), tpr=0.0), ValueError, r"`tpr` must be in \(0, 1\]; got 0.0"),
    ("fpr_at_tpr/tpr-percent", lambda: unc.fpr_at_tpr(jnp.zeros(3), jnp.ones(2), tpr=95), ValueError, r"`tpr` must be in \(0, 1\]; got 95"),
    ("fpr_at_tpr/nan", lambda: unc.fpr_at_tpr(jnp.array([0.1, jnp.nan]), jnp.ones(2)), ValueError, r"`scores_in` must hold no NaN"),
    ("energy_score/temperature-0", lambda: unc.energy_score(PROBS, temperature=0.0), ValueError, r"`temperature` must be a finite number > 0; got 0.0"),
    ("energy_score/logits-inf", lambda: unc.energy_score(jnp.array([[0.0, jnp.inf]])), ValueError, r"`logits` must hold finite values"),
    ("max_logit_score/zero-classes", lambda: unc.max_logit_score(jnp.zeros((4, 0))), ValueError, r"`logits` must have a class axis \(last\) with at least one class"),
    ("risk_at_coverage/coverage-0", lambda: unc.risk_at_coverage(jnp.zeros(4), jnp.zeros(4), 0.0), ValueError, r"`coverage` must be in \(0, 1\]; got 0.0"),
    ("coverage_at_risk/risk-negative", lambda: unc.coverage_at_risk(jnp.zeros(4), jnp.zeros(4), -0.1), ValueError, r"`risk` must be a finite number >= 0; got -0.1"),
    ("eaurc/lengths", lambda: unc.eaurc(jnp.zeros(3), jnp.zeros(4)), ValueError, r"`uncertainty` and `errors` must have the same shape"),
    ("augrc/errors-inf", lambda: unc.augrc(jnp.zeros(2), jnp.array([0.0, jnp.inf])), ValueError, r"`errors` must hold finite values"),
    ("max_calibration_error/not-normalised", lambda: unc.max_calibration_error(PROBS * 0.5, LABELS), ValueError, r"`probs` must sum to 1 along the last \(class\) axis"),
    ("adaptive_calibration_error/labels-range", lambda: unc.adaptive_calibration_error(PROBS, LABELS + 1), ValueError, r"`labels` must be in \[0, 2\]; got values in \[1, 3\]"),
    ("classwise_calibration_error/empty", lambda: unc.classwise_calibration_error(jnp.zeros((0, 3)), jnp.zeros(0, jnp.int32)), ValueError, r"`probs` must not be empty"),
    ("picp/coverage-1", lambda: unc.picp(jnp.zeros(3), mean=jnp.zeros(3), std=jnp.ones(3), coverage=1.0), ValueError, r"`coverage` must be in \(0, 1\); got 1.0"),
    ("picp/two-predictives", lambda: unc.picp(jnp.zeros(3), mean=jnp.zeros(3), std=jnp.ones(3), samples=jnp.zeros((2, 3))), ValueError, r"either a Gaussian predictive \(`mean` and `std`\) or `samples`"),
    ("interval_width/std-negative", lambda: unc.interval_width(mean=jnp.zeros(2), std=jnp.array([1.0, -1.0])), ValueError, r"`std` must hold standard deviations >= 0; got a minimum of -1"),
    ("ence/std-0", lambda: unc.ence(jnp.zeros(2), jnp.array([1.0, 0.0]), jnp.zeros(2)), ValueError, r"`std` must hold standard deviations > 0"),
    ("uce/targets-shape", lambda: unc.uce(jnp.zeros(3), jnp.ones(3), jnp.zeros(4)), ValueError, r"`mean` and `targets` must have the same shape"),
    ("crps_gaussian/empty", lambda: unc.crps_gaussian(jnp.zeros(0), jnp.zeros(0), jnp.zeros(0)), ValueError, r"`mean` must not be empty"),
    ("crps_samples/targets-shape", lambda: unc.crps_samples(jnp.zeros((5, 3)), jnp.zeros(4)), ValueError, r"`targets` must have the shape of one sample \(3,\)"),
    ("sample_disagreement/negative", lambda: unc.sample_disagreement(jnp.array([[[1.5, -0.5]]])), ValueError, r"`sample_probs` must hold probabilities in \[0, 1\]"),
    # --- post-hoc calibration and conformal prediction (issue 15)
    ("fit_temperature/labels-range", lambda: unc.fit_temperature(jnp.zeros((4, 3)), LABELS + 1), ValueError, r"`labels` must be in \[0, 2\]; got values in \[1, 3\]"),
    ("fit_temperature/empty", lambda: unc.fit_temperature(jnp.zeros((0, 3)), jnp.zeros(0, jnp.int32)), ValueError, r"`labels` must not be empty"),
    ("fit_temperature/logits-nan", lambda: unc.fit_temperature(jnp.full((4, 3), jnp.nan), LABELS), ValueError, r"`logits` must hold finite values"),
    ("fit_temperature/one-class", lambda: unc.fit_temperature(jnp.zeros((4, 1)), jnp.zeros(4, jnp.int32)), ValueError, r"`logits` must have at least two classes"),
    ("fit_vector_scaling/labels-shape", lambda: unc.fit_vector_scaling(jnp.zeros((4, 3)), LABELS[:3]), ValueError, r"`labels` must have the batch shape"),
    ("calibrated_probs/temperature-0", lambda: unc.calibrated_probs(jnp.zeros((4, 3)), 0.0), ValueError, r"`calibration` must be a finite number > 0; got 0.0"),
    ("fit_tau/target-std-negative", lambda: unc.fit_tau(jnp.zeros((2, 3)), jnp.zeros(3), target_std=-1.0), ValueError, r"`target_std` must be a finite number > 0"),
    ("fit_variance_scale/variance-0", lambda: unc.fit_variance_scale(jnp.zeros(2), jnp.array([1.0, 0.0]), jnp.zeros(2)), ValueError, r"`variance` must be > 0 everywhere"),
    ("conformal_sets/alpha-0", lambda: unc.conformal_sets(PROBS, LABELS, PROBS, alpha=0.0), ValueError, r"`alpha` must be in \(0, 1\); got 0.0"),
    ("conformal_sets/alpha-1.5", lambda: unc.conformal_sets(PROBS, LABELS, PROBS, alpha=1.5), ValueError, r"`alpha` must be in \(0, 1\); got 1.5"),
    ("conformal_sets/too-few-calibration", lambda: unc.conformal_sets(PROBS, LABELS, PROBS, alpha=0.1), ValueError, r"`alpha`=0.1 needs at least 9 calibration scores .* got 4"),
    ("conformal_sets/labels-range", lambda: unc.conformal_sets(PROBS, LABELS + 1, PROBS, alpha=0.5), ValueError, r"`calibration_labels` must be in \[0, 2\]"),
    ("conformal_sets/not-normalised", lambda: unc.conformal_sets(PROBS * 0.5, LABELS, PROBS, alpha=0.5), ValueError, r"`calibration_probs` must sum to 1"),
    ("conformal_sets/empty", lambda: unc.conformal_sets(PROBS[:0], LABELS[:0], PROBS, alpha=0.5), ValueError, r"`calibration_probs` must not be empty"),
    ("conformal_sets/score", lambda: unc.conformal_sets(PROBS, LABELS, PROBS, alpha=0.5, score="thr"), ValueError, r"`score` must be one of \('lac', 'aps', 'raps'\)"),
    ("conformity_scores/negative-probs", lambda: unc.conformity_scores(jnp.array([[1.5, -0.5]])), ValueError, r"`probs` must hold probabilities in \[0, 1\]"),
    ("conformal_quantile/nan", lambda: unc.conformal_quantile(jnp.array([0.1, jnp.nan, 0.3]), 0.5), ValueError, r"`scores` must hold no NaN"),
    ("conformal_intervals/std-0", lambda: unc.conformal_intervals(jnp.zeros(4), jnp.zeros(4), jnp.zeros(2), alpha=0.5, calibration_std=jnp.zeros(4), test_std=jnp.ones(2)), ValueError, r"`calibration_std` must be > 0 everywhere"),
    ("cqr_intervals/shapes", lambda: unc.cqr_intervals(jnp.zeros(4), jnp.zeros(3), jnp.zeros(4), jnp.zeros(2), jnp.zeros(2), alpha=0.5), ValueError, r"`calibration_lower` and `calibration_upper` must have the same shape"),
    ("set_coverage/not-bool", lambda: unc.set_coverage(PROBS, LABELS), ValueError, r"`sets` must be a bool array"),
    # --- training recipes and structured drops (mixout, LayerDrop, PatchDropout, jaxdrop.training)
    ("mixout/pretrained-structure", lambda: jaxdrop.mixout({"w": X3, "v": X3}, {"w": X3}, 0.5, key=KEY), ValueError, r"`pretrained` must have the tree structure of `params`"),
    ("mixout/pretrained-shape", lambda: jaxdrop.mixout({"w": X3}, {"w": X3[0]}, 0.5, key=KEY), ValueError, r"`pretrained` leaf 'w' must have the shape of the `params` leaf \(2, 4, 3\); got \(4, 3\)"),
    ("mixout/pretrained-int", lambda: jaxdrop.mixout({"w": X3}, {"w": jnp.ones((2, 4, 3), jnp.int32)}, 0.5, key=KEY), TypeError, r"`pretrained` leaf 'w' must be a floating-point array; got int32"),
    ("mixout/rate-1.5", lambda: jaxdrop.mixout({"w": X3}, {"w": X3}, 1.5, key=KEY), ValueError, r"`rate` must be in \[0, 1\]; got 1.5"),
    ("patch_dropout/keep-count-0", lambda: jaxdrop.patch_dropout(X3, 0, key=KEY), ValueError, r"`keep` must be in \[1, 4\]; got 0"),
    ("patch_dropout/keep-fraction-0", lambda: jaxdrop.patch_dropout(X3, 0.0, key=KEY), ValueError, r"`keep` must be a fraction in \(0, 1\] or a count in \[1, 4\]; got 0.0"),
    ("patch_dropout/prefix-too-large", lambda: jaxdrop.patch_dropout(X3, 0.5, key=KEY, num_prefix_tokens=4), ValueError, r"`num_prefix_tokens` must be in \[0, 3\]; got 4"),
    ("patch_dropout/rank-1", lambda: jaxdrop.patch_dropout(jnp.ones(4), 0.5, key=KEY), ValueError, r"`x` must have a batch axis and a token axis \(rank >= 2\)"),
    ("layer_drop/rate-negative", lambda: jaxdrop.layer_drop([jnp.tanh], X3, -0.1, key=KEY), ValueError, r"`rate` must be in \[0, 1\]; got -0.1"),
    ("layer_drop/not-callable", lambda: jaxdrop.layer_drop([jnp.tanh, X3], X3, 0.5, key=KEY), TypeError, r"`layers` entry 1 must be a callable x -> x"),
    ("scan_layer_drop/stacked-sizes", lambda: jaxdrop.scan_layer_drop(lambda p, x: x, {"a": jnp.ones(3), "b": jnp.ones(4)}, X3, 0.5, key=KEY), ValueError, r"`stacked_params` leaves must share the layer axis \(axis 0\) size; got sizes \[3, 4\]"),
    ("prune_layers/rate-0.6", lambda: jaxdrop.prune_layers([jnp.tanh] * 4, 0.6), ValueError, r"`rate` must be in \(0, 0.5\]"),
    ("training.r_drop_loss/shapes", lambda: jaxdrop.training.r_drop_loss(X3, X3[0]), ValueError, r"`outputs_a` and `outputs_b` must have the same shape"),
    ("training.multi_sample_loss/num-samples-0", lambda: jaxdrop.training.multi_sample_loss(lambda k: 0.0, key=KEY, num_samples=0), ValueError, r"`num_samples` must be >= 1; got 0"),
    ("training.late_dropout_schedule/rate-1.5", lambda: jaxdrop.training.late_dropout_schedule(1.5, 10), ValueError, r"`rate` must be in \[0, 1\]; got 1.5"),
    ("training.early_dropout_schedule/num-steps-float", lambda: jaxdrop.training.early_dropout_schedule(0.1, 2.5), TypeError, r"`num_steps` must be a Python int >= 0"),
    # --- active learning (jaxdrop.active) and stream monitoring (jaxdrop.monitor)
    ("active.bald/rank-2", lambda: jaxdrop.active.bald(PROBS), ValueError, r"`sample_probs` must have shape \(num_samples, pool_size, num_classes\); got \(4, 3\)"),
    ("active.max_entropy/empty-pool", lambda: jaxdrop.active.max_entropy(jnp.ones((5, 0, 3))), ValueError, r"`sample_probs` must hold a pool of at least one example"),
    ("active.margin/not-summing-to-1", lambda: jaxdrop.active.margin(SAMPLE_PROBS * 2), ValueError, r"`sample_probs` must hold probabilities in \[0, 1\]|`sample_probs` must sum to 1"),
    ("active.mean_std/rows-sum-0.9", lambda: jaxdrop.active.mean_std(SAMPLE_PROBS * 0.9), ValueError, r"`sample_probs` must sum to 1 along the last \(class\) axis"),
    ("active.random/missing-key", lambda: jaxdrop.active.random(SAMPLE_PROBS, key=None), ValueError, r"`key` is required"),
    ("active.top_k/k-larger-than-pool", lambda: jaxdrop.active.top_k(jnp.ones(4), 5), ValueError, r"`k` must be in \[1, 4\]; got 5"),
    ("active.top_k/mask-too-few", lambda: jaxdrop.active.top_k(jnp.ones(4), 2, mask=jnp.array([True, False, False, False])), ValueError, r"`mask` leaves 1 candidates to choose from; at least 2"),
    ("active.top_k/mask-int", lambda: jaxdrop.active.top_k(jnp.ones(4), 2, mask=jnp.ones(4, jnp.int32)), TypeError, r"`mask` must be a boolean array"),
    ("active.batchbald/batch-larger-than-pool", lambda: jaxdrop.active.batchbald(SAMPLE_PROBS, 5), ValueError, r"`batch_size` must be in \[1, 4\]; got 5"),
    ("active.batchbald/missing-key-when-sampling", lambda: jaxdrop.active.batchbald(SAMPLE_PROBS, 4, num_configurations=2), ValueError, r"`key` is required: 4 picks of 3 classes"),
    ("active.batchbald/num-configurations-0", lambda: jaxdrop.active.batchbald(SAMPLE_PROBS, 2, num_configurations=0), ValueError, r"`num_configurations` must be >= 1; got 0"),
    ("active.stochastic_batch/mode", lambda: jaxdrop.active.stochastic_batch(jnp.ones(4), 2, key=KEY, mode="top"), ValueError, r"`mode` must be one of \('power', 'softmax', 'softrank'\)"),
    ("active.stochastic_batch/beta-negative", lambda: jaxdrop.active.stochastic_batch(jnp.ones(4), 2, key=KEY, beta=-1.0), ValueError, r"`beta` must be a finite number >= 0; got -1.0"),
    ("active.stochastic_batch/power-negative-scores", lambda: jaxdrop.active.stochastic_batch(-jnp.ones(4), 2, key=KEY), ValueError, r"`scores` must be >= 0 with `mode`='power'"),
    ("active.epig/target-samples-differ", lambda: jaxdrop.active.epig(SAMPLE_PROBS, SAMPLE_PROBS[:2]), ValueError, r"`target_sample_probs` must hold the same number of samples"),
    ("active.select/method", lambda: jaxdrop.active.select(SAMPLE_PROBS, 2, method="coreset"), ValueError, r"`method` must be one of \('bald',"),
    ("active.start/labelled-out-of-range", lambda: jaxdrop.active.start(4, [4]), ValueError, r"`indices` must be in \[0, 3\]; got values in \[4, 4\]"),
    ("active.start/num-examples-0", lambda: jaxdrop.active.start(0), ValueError, r"`num_examples` must be >= 1; got 0"),
    ("monitor.DriftMonitor/alpha-0", lambda: jaxdrop.monitor.DriftMonitor(jnp.ones(20), window_size=10, alpha=0.0), ValueError, r"`alpha` must be in \(0, 1\); got 0.0"),
    ("monitor.DriftMonitor/alpha-1.5", lambda: jaxdrop.monitor.DriftMonitor(jnp.ones(20), window_size=10, alpha=1.5), ValueError, r"`alpha` must be in \(0, 1\); got 1.5"),
    ("monitor.DriftMonitor/reference-shorter-than-window", lambda: jaxdrop.monitor.DriftMonitor(jnp.ones(5), window_size=10), ValueError, r"`reference` must hold at least `window_size`=10 scores"),
    ("monitor.DriftMonitor/window-size-0", lambda: jaxdrop.monitor.DriftMonitor(jnp.ones(5), window_size=0), ValueError, r"`window_size` must be >= 1; got 0"),
    ("monitor.DriftMonitor/score", lambda: jaxdrop.monitor.DriftMonitor(SAMPLE_PROBS, window_size=2, score="variance"), ValueError, r"`score` must be one of \('mutual_information', 'entropy'\)"),
    ("monitor.DriftMonitor/reference-nan", lambda: jaxdrop.monitor.DriftMonitor(jnp.full(20, jnp.nan), window_size=10), ValueError, r"`reference` must hold finite values"),
    ("monitor.DriftMonitor/bonferroni-without-num-windows", lambda: jaxdrop.monitor.DriftMonitor(jnp.ones(20), window_size=10, budget="bonferroni"), ValueError, r"`num_windows` is required"),
]  # fmt: skip


# Known bugs, reported to their owners: each must fail until fixed (strict), then the mark goes.
KNOWN_BUGS: dict[str, str] = {}  # name -> reason, for a case that documents a bug not yet fixed (strict xfail)


def _params():
    for name, call, error, pattern in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name])] if name in KNOWN_BUGS else []
        yield pytest.param(call, error, pattern, id=name, marks=marks)


@pytest.mark.parametrize(("call", "error", "pattern"), list(_params()))
def test_invalid_call_raises_a_clear_error(call, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        call()
    assert re.search(r"`\w+", str(info.value)), "the message must name the argument in backticks"


def test_catalogue_is_large_and_matches_the_docs():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    text = DOCS.read_text()
    start, stop = _section(text, "cases")
    documented = set(re.findall(r"^\| `([^`]+)` \|", text[start:stop], flags=re.MULTILINE))
    assert documented == set(ids), (sorted(set(ids) - documented), sorted(documented - set(ids)))


# --- traced invalid values: NaN, never a plausible number ------------------------------------------------------------

TRACED_RATE_FUNCTIONS = {
    "dropout": lambda x, r: jaxdrop.dropout(x, r, key=KEY),
    "spatial_dropout": lambda x, r: jaxdrop.spatial_dropout(x, r, key=KEY),
    "alpha_dropout": lambda x, r: jaxdrop.alpha_dropout(x, r, key=KEY),
    "gaussian_dropout": lambda x, r: jaxdrop.gaussian_dropout(x, r, key=KEY),
    "gaussian_noise/stddev": lambda x, r: jaxdrop.gaussian_noise(x, r, key=KEY),
    "drop_path": lambda x, r: jaxdrop.drop_path(x, r, key=KEY),
    "dropblock": lambda x, r: jaxdrop.dropblock(x, r, key=KEY, block_size=2),
    "dropconnect": lambda x, r: jaxdrop.dropconnect(x, r, key=KEY),
    "locked_dropout": lambda x, r: jaxdrop.locked_dropout(x, r, key=KEY),
    "locked_mask": lambda x, r: jaxdrop.locked_mask(KEY, r, x.shape)(x),
    "token_dropout": lambda x, r: jaxdrop.token_dropout(x, r, key=KEY),
    "word_dropout": lambda x, r: jaxdrop.word_dropout(x, jnp.zeros(x.shape[:-1], jnp.int32), r, key=KEY),
    "dot_product_attention": lambda x, r: jaxdrop.dot_product_attention(x, x, x, dropout_rng=KEY, dropout_rate=r),
    "concrete_dropout/temperature": lambda x, r: jaxdrop.concrete_dropout(x, 0.0, key=KEY, temperature=r),
}
# A stddev or temperature is invalid below 0 (a temperature also at 0), not above 1.
BAD_TRACED = {"gaussian_noise/stddev": (-0.5, float("nan")), "concrete_dropout/temperature": (-0.5, 0.0, float("nan"))}


TRACED_DEFAULT_RUN = {
    "dropout",
    "alpha_dropout",
    "gaussian_noise/stddev",
    "dropblock",
    "word_dropout",
    "concrete_dropout/temperature",
}


@pytest.mark.parametrize(
    "name",
    [n if n in TRACED_DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow) for n in TRACED_RATE_FUNCTIONS],
)
def test_traced_invalid_rate_gives_nan_not_a_silent_result(name):
    fn = jax.jit(TRACED_RATE_FUNCTIONS[name])
    x = jnp.ones((2, 4, 4, 3))
    for bad in BAD_TRACED.get(name, (-0.5, 1.5, float("nan"))):
        out = np.asarray(fn(x, jnp.float32(bad)), np.float32)
        assert np.isnan(out).all(), (name, bad, out.ravel()[:4])
    assert np.isfinite(np.asarray(fn(x, jnp.float32(0.25)))).all()  # a valid traced rate still works


# === The generated catalogue: every argument of every public callable ================================================
#
# Built from the API, not listed by hand: every public callable of the top level (``jaxdrop.__all__``),
# ``jaxdrop.functional``, ``jaxdrop.keys`` and every layer of ``jaxdrop.linen``, ``jaxdrop.nnx`` and
# ``jaxdrop.equinox`` is found by introspection, each of its parameters is given a kind by name (``KINDS``), and each
# kind has families of bad values (``FAMILIES``). A public callable with a parameter of unknown kind, or without a
# valid call to start from (``CALLS``), fails ``test_every_public_argument_has_a_kind``. Each bad value is tried on
# the paths that skip work: ``deterministic=True`` (``inference=True``), a static rate 0, and the active path: an
# argument is checked before any short-cut, so a bad value fails in evaluation as it would in training.
#
# The metrics of ``jaxdrop.uncertainty`` and the samplers of ``jaxdrop.mc`` are left out of the generated part: their
# arguments are arrays of their own domain (probabilities, labels, samples) checked in those namespaces and by the
# hand-written cases above, and their owners keep them.

NAN, INF = float("nan"), float("inf")
X2 = jnp.ones((2, 4))
X5 = jnp.ones((2, 3, 3, 3, 2))
IDS = jnp.zeros((2, 4), jnp.int32)


@dataclasses.dataclass(frozen=True)
class AsType:
    """A bad value made from the valid one: the same array in another dtype (so only the dtype is wrong)."""

    dtype: object


@dataclasses.dataclass(frozen=True)
class Bad:
    family: str  # the family of bad values: "wrong type", "NaN", "out of range"...
    label: str  # the value as the docs show it
    value: object
    error: type[Exception] | tuple[type[Exception], ...]


def _bad(family: str, label: str, value: object, error=ValueError) -> Bad:
    return Bad(family, label, value, error)


def _scalar_families(low: str, *, zero_bad: bool = False, one_bad: bool = False, above_one_bad: bool = False):
    """Bad values for a real scalar: wrong types, NaN, inf, out of range, wrong shapes."""
    values = [
        _bad("wrong type", '"0.5"', "0.5", TypeError),
        _bad("wrong type", "None", None, TypeError),
        _bad("wrong type", "True", True, TypeError),
        _bad("wrong type", "0.5+0.5j", 0.5 + 0.5j, TypeError),
        _bad("wrong type", "[0.5]", [0.5], TypeError),
        _bad("NaN", "nan", NAN),
        _bad("inf", "inf", INF),
        _bad("negative", low, float(low)),
        _bad("wrong shape", "np.array([0.5, 0.5])", np.array([0.5, 0.5])),
        _bad("empty", "np.array([])", np.array([])),
    ]
    if zero_bad:
        values.append(_bad("out of range", "0.0", 0.0))
    if one_bad:
        values.append(_bad("out of range", "1.0", 1.0))
    if above_one_bad:
        values.append(_bad("out of range", "1.5", 1.5))
    return tuple(values)


_NAMES_BAD = (
    _bad("wrong type", "5", 5, TypeError),
    _bad("wrong type", "None", None, TypeError),
    _bad("empty", '""', ""),
)
FAMILIES: dict[str, tuple[Bad, ...]] = {
    "floating array": (
        _bad("wrong type", "[1.0, 2.0]", [1.0, 2.0], TypeError),
        _bad("wrong type", '"x"', "x", TypeError),
        _bad("wrong type", "None", None, TypeError),
        _bad("wrong dtype", "int32 array", AsType(jnp.int32), TypeError),
        _bad("wrong dtype", "bool array", AsType(bool), TypeError),
        _bad("wrong dtype", "complex64 array", AsType(jnp.complex64), TypeError),
    ),
    "integer array": (
        _bad("wrong type", "[0, 1]", [0, 1], TypeError),
        _bad("wrong type", "None", None, TypeError),
        _bad("wrong dtype", "float32 array", AsType(jnp.float32), TypeError),
        _bad("wrong dtype", "bool array", AsType(bool), TypeError),
        _bad("wrong shape", "int32 array (7,)", jnp.zeros(7, jnp.int32)),
    ),
    "probability": _scalar_families("-0.1", above_one_bad=True),
    "open probability": _scalar_families("-0.1", zero_bad=True, one_bad=True, above_one_bad=True),
    "non-negative scalar": _scalar_families("-1.0"),
    "positive scalar": _scalar_families("-1.0", zero_bad=True),
    "learnable scalar": (
        _bad("wrong type", '"0.5"', "0.5", TypeError),
        _bad("wrong type", "None", None, TypeError),
        _bad("wrong type", "[0.0]", [0.0], TypeError),
        _bad("wrong dtype", "0 (an int)", 0, TypeError),
        _bad("wrong dtype", "True", True, TypeError),
        _bad("NaN", "nan", NAN),
        _bad("inf", "inf", INF),
        _bad("inf", "-inf", -INF),
        _bad("wrong shape", "jnp.zeros(3)", jnp.zeros(3)),
        _bad("empty", "jnp.zeros(0)", jnp.zeros(0)),
    ),
    "PRNG key": (
        _bad("wrong type", "0", 0, TypeError),
        _bad("wrong type", '"0"', "0", TypeError),
        _bad("wrong dtype", "float32[2]", jnp.zeros(2), TypeError),
        _bad("wrong shape", "uint32[2, 2]", jnp.zeros((2, 2), jnp.uint32), TypeError),
        _bad("wrong shape", "a batch of 2 keys", jax.random.split(KEY), ValueError),
        _bad("missing", "None", None, (TypeError, ValueError)),
    ),
    "flag": (
        _bad("wrong type", '"yes"', "yes", TypeError),
        _bad("wrong type", "1", 1, TypeError),
        _bad("wrong type", "1.0", 1.0, TypeError),
        _bad("wrong type", "jnp.array([True])", jnp.array([True]), TypeError),
    ),
    "axes": (
        _bad("out of range", "99", 99),
        _bad("out of range", "-99", -99),
        _bad("repeated", "(1, 1)", (1, 1)),
        _bad("wrong type", "1.0", 1.0, TypeError),
        _bad("wrong type", '"1"', "1", TypeError),
        _bad("wrong type", "True", True, TypeError),
        _bad("wrong type", "None", None, TypeError),
        _bad("wrong type", "[[1]]", [[1]], TypeError),
    ),
    "axis": (
        _bad("out of range", "99", 99),
        _bad("out of range", "-99", -99),
        _bad("wrong type", "1.0", 1.0, TypeError),
        _bad("wrong type", '"1"', "1", TypeError),
        _bad("wrong type", "True", True, TypeError),
        _bad("wrong type", "None", None, TypeError),
        _bad("wrong type", "(1, 2)", (1, 2), TypeError),
    ),
    "name of an option": (
        _bad("out of range", '"other"', "other"),
        _bad("empty", '""', ""),
        _bad("wrong type", "5", 5, TypeError),
        _bad("wrong type", "None", None, TypeError),
    ),
    "optional name of an option": (
        _bad("out of range", '"other"', "other"),
        _bad("empty", '""', ""),
        _bad("wrong type", "5", 5, TypeError),
    ),
    "segment ids": (
        _bad("wrong dtype", "float32 array", jnp.zeros((2, 5)), TypeError),
        _bad("wrong shape", "int32 array (3,)", jnp.zeros(3, jnp.int32)),
        _bad("wrong shape", "three arrays", (jnp.zeros((2, 5), jnp.int32),) * 3),
    ),
    "optional count": (
        _bad("out of range", "0", 0),
        _bad("negative", "-1", -1),
        _bad("float where int", "2.5", 2.5, TypeError),
        _bad("wrong type", '"3"', "3", TypeError),
        _bad("wrong type", "True", True, TypeError),
    ),
    "count": (
        _bad("out of range", "0", 0),
        _bad("negative", "-1", -1),
        _bad("float where int", "2.5", 2.5, TypeError),
        _bad("float where int", "2.0", 2.0, TypeError),
        _bad("NaN", "nan", NAN, TypeError),
        _bad("wrong type", '"3"', "3", TypeError),
        _bad("wrong type", "True", True, TypeError),
        _bad("wrong type", "None", None, TypeError),
    ),
    "block size": (
        _bad("out of range", "0", 0),
        _bad("negative", "-1", -1),
        _bad("out of range", "99 (larger than the map)", 99),
        _bad("float where int", "2.5", 2.5, TypeError),
        _bad("wrong type", '"2"', "2", TypeError),
        _bad("wrong type", "True", True, TypeError),
        _bad("wrong type", "None", None, TypeError),
        _bad("wrong shape", "(2, 2, 2, 2, 2, 2)", (2,) * 6),
        _bad("out of range", "(2, 0, 2)", (2, 0, 2)),
    ),
    "shape": (
        _bad("float where int", "(2.7, 4, 3)", (2.7, 4, 3), TypeError),
        _bad("negative", "(2, -1, 3)", (2, -1, 3)),
        _bad("wrong type", "2.0", 2.0, TypeError),
        _bad("wrong type", '"ab"', "ab", TypeError),
        _bad("wrong type", "None", None, TypeError),
        _bad("wrong type", "(True, 4, 3)", (True, 4, 3), TypeError),
        _bad("wrong shape", "(2, 5, 3) (not the input's)", (2, 5, 3)),
    ),
    "fold-in data": (
        _bad("float where int", "0.3", 0.3, TypeError),
        _bad("float where int", "jnp.float32(1)", jnp.float32(1), TypeError),
        _bad("NaN", "nan", NAN, TypeError),
        _bad("inf", "inf", INF, TypeError),
        _bad("negative", "-1", -1),
        _bad("out of range", "2**32", 2**32),
        _bad("wrong type", "True", True, TypeError),
        _bad("wrong type", "None", None, TypeError),
        _bad("wrong type", 'b"x"', b"x", TypeError),
        _bad("wrong shape", "jnp.zeros(2, jnp.int32)", jnp.zeros(2, jnp.int32)),
    ),
    "leaf selector": (
        _bad("wrong type", "5", 5, TypeError),
        _bad("wrong type", "[1, 2]", [1, 2], TypeError),
        _bad("wrong type", '("kernel", 3)', ("kernel", 3), TypeError),
    ),
    "pytree of floating arrays": (
        _bad("wrong type", '"abc"', "abc", TypeError),
        _bad("wrong type", '{"w": "abc"}', {"w": "abc"}, TypeError),
        _bad("wrong dtype", "complex64 array", jnp.ones(3, jnp.complex64), TypeError),
    ),
    "attention bias or mask": (
        _bad("wrong type", "[[1.0]]", [[1.0]], TypeError),
        _bad("wrong type", '"x"', "x", TypeError),
        _bad("wrong dtype", "complex64 array", jnp.ones((5, 5), jnp.complex64), TypeError),
        _bad("wrong shape", "jnp.ones((3, 3))", jnp.ones((3, 3))),
    ),
    "dtype": (
        _bad("wrong type", '"foo"', "foo", TypeError),
        _bad("wrong dtype", "jnp.int32", jnp.int32, TypeError),
        _bad("wrong dtype", "bool", bool, TypeError),
    ),
    "hook": (
        _bad("wrong type", "5", 5, TypeError),
        _bad("wrong type", '"einsum"', "einsum", TypeError),
    ),
    "flax module": (
        _bad("wrong type", "5", 5, TypeError),
        _bad("wrong type", '"layer"', "layer", TypeError),
    ),
    "function": (
        _bad("wrong type", "5", 5, TypeError),
        _bad("wrong type", "None", None, TypeError),
    ),
    "RNG collection name": _NAMES_BAD,
    "mapped axis names": (
        _bad("wrong type", "5", 5, TypeError),
        _bad("wrong type", "[1]", [1], TypeError),
        _bad("empty", '""', ""),
    ),
    "nnx RNGs": (
        _bad("wrong type", "5", 5, TypeError),
        _bad("wrong type", '"0"', "0", TypeError),
    ),
    "pre-trained pytree": (
        _bad("wrong structure", '"abc"', "abc"),
        _bad("wrong structure", '{"v": X3}', {"v": X3}),
        _bad("wrong shape", '{"w": X3[0]}', {"w": X3[0]}),
        _bad("wrong dtype", '{"w": int32 array}', {"w": jnp.ones((2, 4, 3), jnp.int32)}, TypeError),
    ),
    "keep fraction or count": (
        *_scalar_families("-0.1", zero_bad=True, above_one_bad=True),
        _bad("out of range", "0 (a count)", 0),
        _bad("negative", "-1 (a count)", -1),
        _bad("out of range", "99 (more than the tokens)", 99),
    ),
    "prefix count": (
        _bad("negative", "-1", -1),
        _bad("out of range", "4 (the whole sequence)", 4),
        _bad("out of range", "99", 99),
        _bad("float where int", "2.5", 2.5, TypeError),
        _bad("wrong type", '"1"', "1", TypeError),
        _bad("wrong type", "True", True, TypeError),
        _bad("wrong type", "None", None, TypeError),
    ),
    "sequence of layers": (
        _bad("wrong type", "5", 5, TypeError),
        _bad("wrong type", '"ab"', "ab", TypeError),
        _bad("wrong type", "[5]", [5], TypeError),
        _bad("empty", "[]", []),
    ),
    "stacked layers": (
        _bad("empty", "{}", {}),
        _bad("wrong shape", "jnp.float32(1) (no layer axis)", jnp.float32(1)),
        _bad("wrong shape", '{"a": (3,), "b": (4,)}', {"a": jnp.ones(3), "b": jnp.ones(4)}),
    ),
}
# Kinds with no bad value of their own, and why.
NOT_CHECKED: dict[str, str] = {
    "any pytree": "any pytree is accepted; its selected leaves are checked (the hand-written `dropconnect_params` cases)",
    "checked by JAX": "passed on to JAX, whose own error names it (`precision`)",
    "checked by flax": "an argument of the wrapped flax layer (`features`, `kernel_size`...), checked by flax",
    "flax plumbing": "flax's own module plumbing (`parent`, `name`)",
    "forwarded": "forwarded unchanged to the user's function or model",
}

# The kind of each parameter, by name; ``KIND_OVERRIDES`` for a name that means something else in one callable.
KINDS: dict[str, str] = {
    **dict.fromkeys(("x", "w", "tokens_embedded", "branch", "residual", "query", "value", "inputs"), "floating array"),
    "token_ids": "integer array",
    **dict.fromkeys(("rate", "max_rate", "dropout_rate", "p"), "probability"),
    **dict.fromkeys(("init_min", "init_max"), "open probability"),
    **dict.fromkeys(("stddev", "weight_regularizer", "dropout_regularizer"), "non-negative scalar"),
    "temperature": "positive scalar",
    "p_logit": "learnable scalar",
    **dict.fromkeys(("key", "dropout_rng"), "PRNG key"),
    **dict.fromkeys(
        (
            "deterministic",
            "inference",
            "inverted",
            "scale_by_keep",
            "share_across_channels",
            "broadcast_dropout",
            "is_causal",
            "force_fp32_for_softmax",
            "enabled",
            "return_indices",
        ),
        "flag",
    ),
    "broadcast_dims": "axes",
    **dict.fromkeys(("batch_axis", "channel_axis", "time_axis", "feature_axis"), "axis"),
    **dict.fromkeys(("generator", "mode"), "name of an option"),
    **dict.fromkeys(("depth", "input_dim"), "count"),
    **dict.fromkeys(("block_q", "block_kv"), "optional count"),
    "implementation": "optional name of an option",
    "segment_ids": "segment ids",
    "block_size": "block size",
    "shape": "shape",
    "data": "fold-in data",
    "where": "leaf selector",
    "params": "any pytree",
    "pretrained": "pre-trained pytree",
    "keep": "keep fraction or count",
    "num_prefix_tokens": "prefix count",
    "layers": "sequence of layers",
    "stacked_params": "stacked layers",
    "weight": "pytree of floating arrays",
    **dict.fromkeys(("bias", "mask"), "attention bias or mask"),
    "dtype": "dtype",
    **dict.fromkeys(
        ("einsum_dot_general", "qk_attn_weights_einsum", "attn_weights_value_einsum", "promote_dtype"), "hook"
    ),
    **dict.fromkeys(("module", "layer", "model"), "flax module"),
    **dict.fromkeys(("fn", "layer_fn"), "function"),
    "precision": "checked by JAX",
    **dict.fromkeys(("rng_collection", "collection"), "RNG collection name"),
    "axis_name": "mapped axis names",
    "rngs": "nnx RNGs",
    **dict.fromkeys(("parent", "name"), "flax plumbing"),
    **dict.fromkeys(("args", "kwargs", "call_kwargs", "variables"), "forwarded"),
}
_FLAX_LAYER_ARGS = {
    "features", "kernel_size", "strides", "padding", "input_dilation", "kernel_dilation", "feature_group_count",
    "use_bias", "param_dtype", "kernel_init", "bias_init", "dot_general", "dot_general_cls", "conv_general_dilated",
    "conv_general_dilated_cls", "in_features", "out_features", "linear_kwargs", "conv_kwargs",
}  # fmt: skip
KIND_OVERRIDES: dict[tuple[str, str], str] = {
    ("jaxdrop.linen.ConcreteDropout", "input_dim"): "optional count",  # None: the input's last axis
    ("jaxdrop.nnx.ConcreteDropout", "input_dim"): "optional count",
    ("jaxdrop.dot_product_attention", "key"): "floating array",  # the attention key tensor; the PRNG key is dropout_rng
    ("jaxdrop.linen.attention_fn", "key"): "floating array",
    ("jaxdrop.inspect", "inputs"): "forwarded",
    ("jaxdrop.linen.concrete_regularization", "variables"): "any pytree",
    ("jaxdrop.layer_drop", "x"): "forwarded",  # whatever the layers take
    ("jaxdrop.scan_layer_drop", "x"): "forwarded",
    ("jaxdrop.prune_layers", "layers"): "stacked layers",  # a list of layers, or stacked parameters
    **{(f"jaxdrop.linen.{layer}", name): "checked by flax" for layer in ("DropConnectDense", "DropConnectConv") for name in (*_FLAX_LAYER_ARGS, "mask", "dtype", "precision", "promote_dtype")},
    **{(f"jaxdrop.nnx.{layer}", name): "checked by flax" for layer in ("DropConnectLinear", "DropConnectConv") for name in (*_FLAX_LAYER_ARGS, "rngs")},
}  # fmt: skip
# Public callables that take no user arguments to check, and why.
EXCLUDED: dict[str, str] = {
    "jaxdrop.DropoutSite": "a row of `jaxdrop.inspect`'s report, built by jaxdrop",
    "jaxdrop.InspectReport": "`jaxdrop.inspect`'s report, built by jaxdrop",
    "jaxdrop.nnx.ConcreteRegularizer": "an `nnx.Variable` type that stores a computed regulariser",
}


def _functional(fn):
    return lambda kwargs, mode: fn(**kwargs)


def _fold_in(kwargs, mode):
    return jaxdrop.fold_in(kwargs["key"], 1, kwargs["data"])


def _locked_mask(kwargs, mode):
    return jaxdrop.locked_mask(**kwargs)(X3)


def _stochastic(kwargs, mode):
    with jaxdrop.stochastic(**kwargs):
        return None


def _linen(cls, x, *extra):
    def call(kwargs, mode):
        layer = cls(**kwargs)
        flag = {} if "deterministic" in kwargs else {"deterministic": mode == "deterministic"}
        return layer.init({"params": KEY, "dropout": KEY}, x, *extra, **flag)

    return call


def _nnx(cls, x, *extra):
    def call(kwargs, mode):
        from flax import nnx

        layer = cls(**{"rngs": nnx.Rngs(0), **kwargs})
        flag = {} if "deterministic" in kwargs else {"deterministic": mode == "deterministic"}
        return layer(x, *extra, **flag)

    return call


def _equinox(cls, x):
    def call(kwargs, mode):
        layer = cls(**kwargs)
        flag = {} if "inference" in kwargs else {"inference": mode == "deterministic"}
        return layer(x, key=KEY, **flag)

    return call


def _attention_call(fn):
    return lambda kwargs, mode: fn(**kwargs)


# name -> (call(kwargs, mode), a valid call's keyword arguments). ``mode`` is "deterministic", "zero" (a static rate
# 0) or "active"; a call adapts it to its own flag.
def _calls() -> dict[str, tuple[object, dict[str, object]]]:
    rate_call = {"rate": 0.5, "key": KEY}
    calls: dict[str, tuple[object, dict[str, object]]] = {
        "jaxdrop.alpha_dropout": (_functional(jaxdrop.alpha_dropout), {"x": X3, **rate_call}),
        "jaxdrop.concrete_dropout": (_functional(jaxdrop.concrete_dropout), {"x": X3, "p_logit": 0.0, "key": KEY}),
        "jaxdrop.concrete_dropout_regularizer": (
            _functional(jaxdrop.concrete_dropout_regularizer),
            {"p_logit": 0.0, "weight": X3, "weight_regularizer": 1e-2, "dropout_regularizer": 1e-1, "input_dim": 3},
        ),
        "jaxdrop.dot_product_attention": (
            _functional(jaxdrop.dot_product_attention),
            {"query": QKV, "key": QKV, "value": QKV, "dropout_rng": KEY, "dropout_rate": 0.5},
        ),
        "jaxdrop.drop_path": (_functional(jaxdrop.drop_path), {"x": X3, **rate_call}),
        "jaxdrop.dropblock": (_functional(jaxdrop.dropblock), {"x": X4, "block_size": 2, **rate_call}),
        "jaxdrop.dropblock2d": (_functional(jaxdrop.dropblock2d), {"x": X4, "block_size": 2, **rate_call}),
        "jaxdrop.dropblock3d": (_functional(jaxdrop.dropblock3d), {"x": X5, "block_size": 2, **rate_call}),
        "jaxdrop.dropconnect": (_functional(jaxdrop.dropconnect), {"w": X3, **rate_call}),
        "jaxdrop.dropconnect_params": (_functional(jaxdrop.dropconnect_params), {"params": {"w": X3}, **rate_call}),
        "jaxdrop.dropout": (_functional(jaxdrop.dropout), {"x": X3, **rate_call}),
        "jaxdrop.feature_alpha_dropout": (_functional(jaxdrop.feature_alpha_dropout), {"x": X4, **rate_call}),
        "jaxdrop.fold_in": (_fold_in, {"key": KEY, "data": 2}),
        "jaxdrop.gaussian_dropout": (_functional(jaxdrop.gaussian_dropout), {"x": X3, **rate_call}),
        "jaxdrop.gaussian_noise": (_functional(jaxdrop.gaussian_noise), {"x": X3, "stddev": 0.5, "key": KEY}),
        "jaxdrop.linear_drop_path_rates": (_functional(jaxdrop.linear_drop_path_rates), {"max_rate": 0.2, "depth": 4}),
        "jaxdrop.locked_dropout": (_functional(jaxdrop.locked_dropout), {"x": X3, **rate_call}),
        "jaxdrop.locked_mask": (_locked_mask, {"shape": X3.shape, **rate_call}),
        "jaxdrop.residual_drop_path": (
            _functional(jaxdrop.residual_drop_path),
            {"residual": X3, "branch": X3, **rate_call},
        ),
        "jaxdrop.spatial_dropout": (_functional(jaxdrop.spatial_dropout), {"x": X4, **rate_call}),
        "jaxdrop.spatial_dropout1d": (_functional(jaxdrop.spatial_dropout1d), {"x": X3, **rate_call}),
        "jaxdrop.spatial_dropout2d": (_functional(jaxdrop.spatial_dropout2d), {"x": X4, **rate_call}),
        "jaxdrop.spatial_dropout3d": (_functional(jaxdrop.spatial_dropout3d), {"x": X5, **rate_call}),
        "jaxdrop.token_dropout": (_functional(jaxdrop.token_dropout), {"x": X3, **rate_call}),
        "jaxdrop.word_dropout": (
            _functional(jaxdrop.word_dropout),
            {"tokens_embedded": X3, "token_ids": IDS, **rate_call},
        ),
        "jaxdrop.stochastic": (_stochastic, {"enabled": True}),
        "jaxdrop.assert_deterministic": (lambda kwargs, mode: jaxdrop.assert_deterministic(kwargs["fn"], X3), {"fn": lambda x: x * 2}),
        "jaxdrop.inspect": (lambda kwargs, mode: jaxdrop.inspect(kwargs["model"], X3), {"model": _linen_model()}),
        "jaxdrop.mixout": (_functional(jaxdrop.mixout), {"params": {"w": X3}, "pretrained": {"w": 0.5 * X3}, **rate_call}),
        "jaxdrop.patch_dropout": (_functional(jaxdrop.patch_dropout), {"x": X3, "keep": 0.5, "key": KEY}),
        "jaxdrop.layer_drop": (_functional(jaxdrop.layer_drop), {"layers": [jnp.tanh] * 3, "x": X3, **rate_call}),
        "jaxdrop.scan_layer_drop": (
            _functional(jaxdrop.scan_layer_drop),
            {"layer_fn": lambda w, x: x * w, "stacked_params": jnp.ones(3), "x": X3, **rate_call},
        ),
        "jaxdrop.prune_layers": (_functional(jaxdrop.prune_layers), {"layers": [jnp.tanh] * 4, "rate": 0.5}),
    }  # fmt: skip
    if importlib.util.find_spec("flax") is not None:
        import flax.linen as nn

        import jaxdrop.linen as L
        import jaxdrop.nnx as N

        for name in ("Dropout", "AlphaDropout", "GaussianDropout", "DropPath", "LockedDropout", "TokenDropout"):
            calls[f"jaxdrop.linen.{name}"] = (_linen(getattr(L, name), X3), {"rate": 0.5})
            calls[f"jaxdrop.nnx.{name}"] = (_nnx(getattr(N, name), X3), {"rate": 0.5})
        for name in ("SpatialDropout", "FeatureAlphaDropout"):
            calls[f"jaxdrop.linen.{name}"] = (_linen(getattr(L, name), X4), {"rate": 0.5})
            calls[f"jaxdrop.nnx.{name}"] = (_nnx(getattr(N, name), X4), {"rate": 0.5})
        calls["jaxdrop.linen.DropBlock"] = (_linen(L.DropBlock, X4), {"rate": 0.5, "block_size": 2})
        calls["jaxdrop.nnx.DropBlock"] = (_nnx(N.DropBlock, X4), {"rate": 0.5, "block_size": 2})
        calls["jaxdrop.linen.GaussianNoise"] = (_linen(L.GaussianNoise, X3), {"stddev": 0.5})
        calls["jaxdrop.nnx.GaussianNoise"] = (_nnx(N.GaussianNoise, X3), {"stddev": 0.5})
        calls["jaxdrop.linen.WordDropout"] = (_linen(L.WordDropout, X3, IDS), {"rate": 0.5})
        calls["jaxdrop.nnx.WordDropout"] = (_nnx(N.WordDropout, X3, IDS), {"rate": 0.5})
        calls["jaxdrop.linen.DropConnectDense"] = (_linen(L.DropConnectDense, X2), {"features": 3, "rate": 0.5})
        calls["jaxdrop.linen.DropConnectConv"] = (
            _linen(L.DropConnectConv, X4),
            {"features": 2, "kernel_size": (3, 3), "rate": 0.5},
        )
        calls["jaxdrop.nnx.DropConnectLinear"] = (
            _nnx(N.DropConnectLinear, X2),
            {"in_features": 4, "out_features": 3, "rate": 0.5},
        )
        calls["jaxdrop.nnx.DropConnectConv"] = (
            _nnx(N.DropConnectConv, X4),
            {"in_features": 3, "out_features": 2, "kernel_size": (3, 3), "rate": 0.5},
        )
        calls["jaxdrop.linen.ConcreteDropout"] = (_linen(L.ConcreteDropout, X2), {"layer": nn.Dense(3)})
        calls["jaxdrop.nnx.ConcreteDropout"] = (_nnx(N.ConcreteDropout, X2), {"layer": None})
        calls["jaxdrop.linen.attention_fn"] = (  # jaxdrop.nnx.attention_fn is the same function
            _functional(L.attention_fn),
            {"query": QKV, "key": QKV, "value": QKV, "dropout_rng": KEY, "dropout_rate": 0.5},
        )
        calls["jaxdrop.linen.concrete_regularization"] = (
            _functional(L.concrete_regularization),
            {"variables": {"losses": {}}, "collection": "losses"},
        )
        calls["jaxdrop.nnx.concrete_regularization"] = (
            _functional(N.concrete_regularization),
            {"model": N.Dropout(0.5)},
        )
    if importlib.util.find_spec("equinox") is not None:
        import jaxdrop.equinox as E

        calls["jaxdrop.equinox.Dropout"] = (_equinox(E.Dropout, X2), {"p": 0.5})
        calls["jaxdrop.equinox.AlphaDropout"] = (_equinox(E.AlphaDropout, X2), {"p": 0.5})
        calls["jaxdrop.equinox.GaussianDropout"] = (_equinox(E.GaussianDropout, X2), {"p": 0.5})
        calls["jaxdrop.equinox.DropPath"] = (_equinox(E.DropPath, X2), {"p": 0.5})
        calls["jaxdrop.equinox.LockedDropout"] = (_equinox(E.LockedDropout, X2), {"p": 0.5})
        calls["jaxdrop.equinox.SpatialDropout"] = (_equinox(E.SpatialDropout, X3), {"p": 0.5})
        calls["jaxdrop.equinox.DropBlock"] = (_equinox(E.DropBlock, X4[0]), {"p": 0.5, "block_size": 2})
    return calls


def _linen_model():
    import jaxdrop.linen as L

    return L.Dropout(0.5, deterministic=True)


CALLS = _calls()
RATE_PARAMS = ("rate", "stddev", "dropout_rate", "p")
FLAG_PARAMS = ("deterministic", "inference")
# How each kind is checked: the function of ``jaxdrop._checks`` (or where the check lives when it is not generic).
CHECKED_BY: dict[str, str] = {
    "floating array": "`_checks.floating_array`",
    "integer array": "`_checks.integer_array`",
    "probability": "`_checks.probability`",
    "open probability": "`_checks.probability(open_interval=True)`",
    "non-negative scalar": "`_checks.non_negative`",
    "positive scalar": "`_checks.non_negative(strict=True)`",
    "learnable scalar": "`_checks.floating_scalar`",
    "PRNG key": "`_checks.key` / `_checks.prng_key`",
    "flag": "`_checks.static_bool`",
    "axes": "`_checks.axes`",
    "axis": "`_checks.axis`",
    "name of an option": "`_checks.choice`",
    "count": "`_checks.positive_int`",
    "optional name of an option": "`_checks.choice` unless None",
    "segment ids": "`functional/_blockwise.py`",
    "optional count": "`_checks.positive_int` unless None",
    "block size": "`_checks.positive_int`, then the feature map's size",
    "shape": "`_checks.shape`, then the input's shape when the mask is applied",
    "fold-in data": "`jaxdrop.keys` (`_checks.int_in_range` for ints)",
    "leaf selector": "`functional/_weights.py`",
    "pytree of floating arrays": "`_checks.floating_array` on each leaf",
    "attention bias or mask": "`functional/_attention.py` (`_checks.array`, then the logits' shape)",
    "dtype": "`functional/_attention.py`",
    "hook": "`_checks.optional_callable`",
    "flax module": "the layers, `jaxdrop.inspect`",
    "function": "`jaxdrop.debug`",
    "RNG collection name": "the layers",
    "mapped axis names": "the layers",
    "nnx RNGs": "`jaxdrop.nnx` (flax's wording)",
    "pre-trained pytree": "`functional/_mixout.py`",
    "keep fraction or count": "`functional/_patch_dropout.py` (`_checks.probability`, `_checks.int_in_range`)",
    "prefix count": "`_checks.int_in_range`, then the sequence length",
    "sequence of layers": "`functional/_layer_drop.py`",
    "stacked layers": "`functional/_layer_drop.py`",
}
# Errors that keep flax's wording (no backticks), so code matching on flax's messages keeps working.
FLAX_WORDING = {"rngs"}


def _is_layer(name: str) -> bool:
    return name.split(".")[1] in ("linen", "nnx", "equinox") and inspect.isclass(_public()[name])


@functools.cache
def _public() -> dict[str, object]:
    """Every public callable, under the name users reach it by first (``jaxdrop.dropout``, not ``...functional``)."""
    found: dict[str, object] = {}
    seen: set[int] = set()

    def add(prefix: str, module, names) -> None:
        for attr in names:
            obj = getattr(module, attr)
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            found[f"{prefix}.{attr}"] = obj

    add("jaxdrop", jaxdrop, jaxdrop.__all__)
    add("jaxdrop.functional", jaxdrop.functional, jaxdrop.functional.__all__)
    keys_names = [
        n
        for n, o in vars(jaxdrop.keys).items()
        if not n.startswith("_") and getattr(o, "__module__", "") == "jaxdrop.keys"
    ]
    add("jaxdrop.keys", jaxdrop.keys, keys_names)
    for namespace, package in (("linen", "flax"), ("nnx", "flax"), ("equinox", "equinox")):
        if importlib.util.find_spec(package) is not None:
            module = importlib.import_module(f"jaxdrop.{namespace}")
            add(f"jaxdrop.{namespace}", module, module.__all__)
    return found


def _parameters(obj) -> list[str]:
    signature = inspect.signature(obj)
    kinds = [p.kind for p in signature.parameters.values()]
    if inspect.isclass(obj) and kinds == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]:
        signature = inspect.signature(obj.__init__)  # nnx modules hide their __init__ behind a metaclass
        return [p for p in list(signature.parameters)[1:]]
    return list(signature.parameters)


def kind_of(name: str, param: str) -> str | None:
    return KIND_OVERRIDES.get((name, param), KINDS.get(param))


def _checked_arguments() -> list[tuple[str, str, str]]:
    out = []
    for name, obj in _public().items():
        if name in EXCLUDED or name not in CALLS:
            continue
        for param in _parameters(obj):
            kind = kind_of(name, param)
            if kind in FAMILIES:
                out.append((name, param, kind))
    return out


def _modes(name: str, param: str, kind: str) -> list[str]:
    """The paths a bad value is tried on: every short-cut the callable has, then the active path."""
    if kind == "PRNG key":
        return ["active"]  # a key is only needed when randomness is drawn
    params = _parameters(_public()[name])
    modes = []
    if param not in FLAG_PARAMS and (any(flag in params for flag in FLAG_PARAMS) or _is_layer(name)):
        modes.append("deterministic")
    if any(rate in params and rate != param for rate in RATE_PARAMS):
        modes.append("zero")
    return [*modes, "active"]


def _arguments(name: str, param: str, value: object, mode: str) -> dict[str, object]:
    if isinstance(value, AsType):
        value = jnp.asarray(CALLS[name][1][param]).astype(value.dtype)
    kwargs = {**CALLS[name][1], param: value}
    params = _parameters(_public()[name])
    if mode == "deterministic" and not _is_layer(name) and "deterministic" in params:
        kwargs["deterministic"] = True
    if mode == "zero":
        rate = next(rate for rate in RATE_PARAMS if rate in params and rate != param)
        kwargs[rate] = 0.0
    return kwargs


def check_argument(name: str, param: str, kind: str, *, thorough: bool = True) -> list[str]:
    """Every bad value of ``kind`` for ``param`` of ``name`` on every path; returns what went wrong.

    Not ``thorough``: one bad value per family, on the first short-cut path only (where a check is most easily
    skipped); the layers run so (a layer call is slow), and thoroughly in the slow run.
    """
    call = CALLS[name][0]
    modes = _modes(name, param, kind)
    bads = FAMILIES[kind]
    if not thorough:
        modes = modes[:1]
        bads = tuple({bad.family: bad for bad in reversed(bads)}.values())  # the first of each family
    problems = []
    for bad in bads:
        for mode in modes:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    call(_arguments(name, param, bad.value, mode), mode)
            except bad.error as err:
                message = str(err)
                named = f"`{param}" in message or (param in FLAX_WORDING and re.search(rf"\b{param}\b", message))
                if not named:
                    problems.append(f"{param}={bad.label} ({mode}): the message does not name `{param}`: {message}")
            except Exception as err:  # any other error is a finding
                problems.append(f"{param}={bad.label} ({mode}): raised {type(err).__name__}: {str(err)[:200]}")
            else:
                problems.append(f"{param}={bad.label} ({mode}): accepted silently")
    return problems


# (callable, parameter) -> why it still fails; each must fail until fixed (strict), then the entry goes.
KNOWN_GENERATED: dict[tuple[str, str], str] = {}


def test_every_public_argument_has_a_kind():
    unknown = []
    for name, obj in _public().items():
        if name in EXCLUDED:
            continue
        if name not in CALLS:
            unknown.append(f"{name}: no valid call in CALLS")
            continue
        for param in _parameters(obj):
            kind = kind_of(name, param)
            if kind not in FAMILIES and kind not in NOT_CHECKED:
                unknown.append(f"{name}({param}=...): unknown kind {kind!r}; add it to KINDS")
    assert not unknown, "\n".join(unknown)
    assert set(CALLS) <= set(_public()), sorted(set(CALLS) - set(_public()))
    assert set(KNOWN_GENERATED) <= {(name, param) for name, param, _ in _checked_arguments()}


def _generated_params(layers: bool):
    for name, param, kind in _checked_arguments():
        if _is_layer(name) != layers:
            continue
        reason = KNOWN_GENERATED.get((name, param))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(name, param, kind, id=f"{name.removeprefix('jaxdrop.')}/{param}", marks=marks)


@pytest.mark.parametrize(("name", "param", "kind"), list(_generated_params(layers=False)))
def test_every_bad_argument_raises_naming_it(name, param, kind):
    problems = check_argument(name, param, kind)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("name", "param", "kind"), list(_generated_params(layers=True)))
def test_every_bad_layer_argument_raises_naming_it(name, param, kind):
    problems = check_argument(name, param, kind, thorough=False)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "param", "kind"), list(_generated_params(layers=True)))
def test_every_bad_layer_argument_raises_naming_it_on_every_path(name, param, kind):
    problems = check_argument(name, param, kind)
    assert not problems, "\n".join(problems)


def _error_name(error) -> str:
    return "/".join(e.__name__ for e in (error if isinstance(error, tuple) else (error,)))


def _tried(bads: tuple[Bad, ...]) -> str:
    groups: dict[str, list[Bad]] = {}
    for bad in bads:
        groups.setdefault(bad.family, []).append(bad)
    parts = []
    for family, items in groups.items():
        errors = {_error_name(bad.error) for bad in items}
        if len(errors) == 1:
            parts.append(f"{family}: {', '.join(f'`{bad.label}`' for bad in items)} ({errors.pop()})")
        else:
            parts.append(f"{family}: " + ", ".join(f"`{bad.label}` ({_error_name(bad.error)})" for bad in items))
    return "; ".join(parts)


def api_tables() -> str:
    """The generated part of docs/bad_input.md: the kinds and their bad values, and every callable's arguments."""
    lines = [
        "| kind | checked by | bad values tried (each must raise the error shown, naming the argument) |",
        "| --- | --- | --- |",
    ]
    for kind, bads in FAMILIES.items():
        lines.append(f"| {kind} | {CHECKED_BY[kind]} | {_tried(bads)} |")
    for kind, reason in NOT_CHECKED.items():
        lines.append(f"| {kind} | - | none: {reason} |")
    lines += ["", "| callable | arguments by kind |", "| --- | --- |"]
    for name, obj in _public().items():
        if name in EXCLUDED:
            lines.append(f"| `{name}` | not checked: {EXCLUDED[name]} |")
            continue
        by_kind: dict[str, list[str]] = {}
        for param in _parameters(obj):
            by_kind.setdefault(kind_of(name, param) or "**unknown**", []).append(f"`{param}`")
        cells = "; ".join(f"{kind}: {', '.join(params)}" for kind, params in by_kind.items())
        lines.append(f"| `{name}` | {cells} |")
    if KNOWN_GENERATED:
        lines += ["", "Known failures, each a strict `xfail` until fixed:", ""]
        lines += [f"- `{name}({param}=...)`: {reason}" for (name, param), reason in KNOWN_GENERATED.items()]
    return "\n".join(lines)


DOCS = Path(__file__).parent.parent / "docs" / "bad_input.md"
BEGIN, END = "<!-- {} table: generated by `python tests/test_bad_input.py --write` -->", "<!-- end of the {} table -->"


def markdown_table() -> str:
    """The hand-written cases as the markdown table of docs/bad_input.md, with each call's actual message."""
    rows = ["| case | call | raises | message |", "| --- | --- | --- | --- |"]
    for name, call, error, _ in CASES:
        source = inspect.getsource(call).strip()
        source = source[source.index("lambda: ") + len("lambda: ") :].rsplit(", " + error.__name__, 1)[0]
        try:
            call()
            now = "returns a result"
            message, raised = now, "-"
        except Exception as err:  # whatever is raised is reported
            message, raised = str(err).replace("|", "\\|").replace("\n", " "), type(err).__name__
            now = f"raises {raised}: {message}"
        if name in KNOWN_BUGS:
            message = f"**known bug**: {KNOWN_BUGS[name]}. Now {now}"
            raised = f"should raise {error.__name__}"
        rows.append(f"| `{name}` | `{source.replace('|', chr(92) + '|')}` | {raised} | {message} |")
    return "\n".join(rows)


def _section(text: str, label: str) -> tuple[int, int]:
    begin, end = BEGIN.format(label), END.format(label)
    start = text.index(begin) + len(begin)
    return start, text.index(end, start)


def spliced_docs() -> str:
    """docs/bad_input.md with both tables regenerated."""
    text = DOCS.read_text()
    for label, table in (("cases", markdown_table()), ("API", api_tables())):
        start, stop = _section(text, label)
        text = text[:start] + "\n\n" + table + "\n\n" + text[stop:]
    return text


def test_generated_api_table_is_up_to_date():
    if importlib.util.find_spec("equinox") is None:
        pytest.skip("the committed table lists the Equinox layers: regenerate it where Equinox is installed")
    text = DOCS.read_text()
    start, stop = _section(text, "API")
    assert text[start:stop].strip() == api_tables(), (
        "regenerate docs/bad_input.md: python tests/test_bad_input.py --write"
    )


if __name__ == "__main__":  # python tests/test_bad_input.py [--write]: print (or write into the docs) both tables
    if "--write" in sys.argv:
        DOCS.write_text(spliced_docs())
    else:
        print(markdown_table(), api_tables(), sep="\n\n")
