"""Sequence-level scores from per-token Monte Carlo scores (tokens on the last axis).

Per-token entropy, expected entropy and mutual information along a sequence are the classification metrics applied
to ``(T, *batch, length, vocab)`` samples (or streamed by `jaxdrop.mc.score` / `jaxdrop.mc.decode`); this module
turns them into one number per sequence: `aggregate_tokens()` (mean / max / sum over the valid tokens, e.g. mean or
max token MI) and `sequence_log_likelihood()`, the log-likelihood of a sequence under the MC mixture,
``log mean_t prod_n p_t(x_n | x_<n)``, a Bayesian model average over functions when each sample is one network
(``masks="fixed"`` in `jaxdrop.mc`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs

REDUCTIONS = ("mean", "max", "sum")


def _token_mask(mask: jax.typing.ArrayLike | None, shape: tuple[int, ...], name: str) -> jax.Array:
    """A boolean mask of ``shape`` (True: the token counts); all True when None."""
    if mask is None:
        return jnp.ones(shape, bool)
    mask = _checks.array(mask, "mask")
    if not jnp.issubdtype(mask.dtype, jnp.bool_):
        raise TypeError(f"`mask` must be a boolean array (True: the token counts); got dtype {mask.dtype}.")
    if mask.shape != shape:
        raise ValueError(f"`mask` must have the shape of `{name}` {shape}; got {mask.shape}.")
    return mask


def _log_probs(values: jax.Array, name: str) -> _inputs.Ok:
    """Log-probabilities: no NaN, nothing above 0 (beyond rounding); -inf (probability 0) is accepted."""
    if values.size == 0:
        return None
    high = jnp.max(jnp.where(jnp.isnan(values), jnp.inf, values))
    tolerance = 1e-5 if jnp.finfo(values.dtype).bits >= 32 else 1e-2
    if not _checks.is_static(high):
        return high <= tolerance
    if float(high) > tolerance:
        has_nan = bool(jnp.isnan(values).any())
        raise ValueError(
            f"`{name}` must hold log-probabilities (<= 0, -inf allowed, no NaN); got a maximum of "
            f"{'NaN' if has_nan else f'{float(high):.4g}'}. Apply `jax.nn.log_softmax` to logits and take the "
            f"entries of the observed tokens."
        )
    return None


@functools.partial(jax.jit, static_argnames="normalize")
def _sequence_log_likelihood(log_probs: jax.Array, mask: jax.Array, normalize: bool) -> jax.Array:
    per_sample = jnp.where(mask, log_probs, 0.0).sum(-1)  # where(): a masked -inf must not give 0 * -inf = NaN
    mixture = logsumexp(per_sample, axis=0) - math.log(log_probs.shape[0])
    return mixture / jnp.maximum(mask.sum(-1).mean(0), 1) if normalize else mixture


def sequence_log_likelihood(
    sample_log_probs: jax.typing.ArrayLike,
    *,
    mask: jax.typing.ArrayLike | None = None,
    normalize: bool = False,
) -> jax.Array:
    """Log-likelihood of each sequence under the MC mixture: ``log (1/T) sum_t exp(sum_n log p_t(x_n | x_<n))``.

    The mean over samples of each sample's sequence probability, the Bayesian model average over the ``T``
    dropout networks (Gal & Ghahramani 2016), in log space: the per-sample sums are combined with ``logsumexp``,
    so sequences whose probabilities underflow (hundreds of tokens) keep their value. It is at least the mean of
    the per-sample log-likelihoods (Jensen) and at most their maximum.

    Args:
      sample_log_probs: ``(T, *batch, length)``, ``T >= 1``: ``log p_t`` of each observed token under sample ``t``
        (`jaxdrop.mc.SequenceScores.sample_log_probs`); ``-inf`` is a token of probability 0.
      mask: boolean ``(*batch, length)`` or ``(T, *batch, length)``: the tokens that count (False after an end
        token); default all.
      normalize: divide by the number of counted tokens (nats per token; with a per-sample ``mask``, their mean
        over samples), to compare sequences of different lengths (static).

    Returns:
      ``(*batch,)`` float32 (at least). An empty batch gives an empty array. Inside ``jit``, positive values or NaN
      make every entry NaN.

    Raises:
      TypeError: ``sample_log_probs`` not floating point, ``mask`` not boolean, ``normalize`` not a bool.
      ValueError: fewer than 2 axes, zero samples, a ``mask`` of another shape; (when concrete) values above 0 or
        NaN.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> lp = jnp.log(jnp.array([[[0.5, 0.5]], [[1.0, 1.0]]]))  # 2 samples, 1 sequence, 2 tokens
      >>> round(float(jaxdrop.uncertainty.sequence_log_likelihood(lp)[0]), 4)  # log((0.25 + 1) / 2)
      -0.47
    """
    values = _checks.floating_array(sample_log_probs, "sample_log_probs")
    if values.ndim < 2 or values.shape[0] == 0:
        raise ValueError(
            f"`sample_log_probs` must have shape (num_samples, *batch, length) with num_samples >= 1; got "
            f"{values.shape}."
        )
    values = _stats.as_float(values)
    normalize = _checks.static_bool(normalize, "normalize")
    if mask is not None and jnp.ndim(mask) == values.ndim - 1:
        mask = jnp.broadcast_to(_token_mask(mask, values.shape[1:], "sample_log_probs")[None], values.shape)
    mask = _token_mask(mask, values.shape, "sample_log_probs")
    ok = _log_probs(values, "sample_log_probs")
    return _inputs.guard(_sequence_log_likelihood(values, mask, normalize), ok)


@functools.partial(jax.jit, static_argnames="reduction")
def _aggregate(scores: jax.Array, mask: jax.Array, reduction: str) -> jax.Array:
    if reduction == "sum":
        return jnp.where(mask, scores, 0.0).sum(-1)
    count = mask.sum(-1)
    if reduction == "mean":
        total = jnp.where(mask, scores, 0.0).sum(-1)
        return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)
    highest = jnp.where(mask, scores, -jnp.inf).max(-1, initial=-jnp.inf)
    return jnp.where(count > 0, highest, jnp.nan)


def aggregate_tokens(
    token_scores: jax.typing.ArrayLike, *, mask: jax.typing.ArrayLike | None = None, reduction: str = "mean"
) -> jax.Array:
    """One score per sequence from per-token scores: the mean, max or sum over the tokens that count.

    The mean token mutual information rates a whole prompt or generation (out-of-distribution prompts), the max
    finds one token the samples disagree on (a generation to send for review).

    Args:
      token_scores: ``(*batch, length)`` per-token scores (entropy, mutual information, ...; higher = more
        uncertain, as everywhere in `jaxdrop.uncertainty`).
      mask: boolean ``(*batch, length)``: the tokens that count (`jaxdrop.mc.SequenceScores.valid`); default all.
      reduction: ``"mean"`` (default), ``"max"`` or ``"sum"`` over the counted tokens (static).

    Returns:
      ``(*batch,)`` float32 (at least); NaN for a row with no counted token (mean, max), 0 (sum). Inside ``jit``, a
      NaN score makes every entry NaN.

    Raises:
      TypeError: ``token_scores`` not floating point, ``mask`` not boolean, ``reduction`` not a str.
      ValueError: ``token_scores`` a scalar, a ``mask`` of another shape, an unknown ``reduction``; (when
        concrete) a NaN score.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> mi = jnp.array([[0.1, 0.5, 0.3]])
      >>> jaxdrop.uncertainty.aggregate_tokens(mi, reduction="max").tolist()
      [0.5]
      >>> round(float(jaxdrop.uncertainty.aggregate_tokens(mi, mask=jnp.array([[True, True, False]]))[0]), 4)
      0.3
    """
    scores = _checks.floating_array(token_scores, "token_scores")
    if scores.ndim < 1:
        raise ValueError(f"`token_scores` must have a token axis (last); got shape {scores.shape}.")
    scores = _stats.as_float(scores)
    reduction = _checks.choice(reduction, REDUCTIONS, "reduction")
    mask = _token_mask(mask, scores.shape, "token_scores")
    ok = _inputs.finite(scores, "token_scores", allow_inf=True)
    return _inputs.guard(_aggregate(scores, mask, reduction), ok)
