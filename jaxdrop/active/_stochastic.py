"""Stochastic batch acquisition (Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal 2023, "Stochastic
Batch Acquisition: A Simple Baseline for Deep Active Learning", TMLR): sample the batch instead of taking the top-k.

Top-k on a single-point score picks near-duplicates; drawing the batch without replacement with probabilities that
grow with the score keeps most of the score's signal and adds diversity at the cost of one sort. Sampling without
replacement is the Gumbel-top-k trick (Kool, van Hoof & Welling 2019): the top ``k`` of ``log w_i + Gumbel_i``.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

from jaxdrop import _checks, _stats
from jaxdrop.active import _scores
from jaxdrop.uncertainty import _inputs

MODES = ("power", "softmax", "softrank")


def stochastic_batch(
    scores: jax.typing.ArrayLike,
    batch_size: int,
    *,
    key: jax.Array,
    mode: Literal["power", "softmax", "softrank"] = "power",
    beta: jax.typing.ArrayLike = 1.0,
    mask: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Draws ``batch_size`` distinct candidates, each draw proportional to a weight that grows with its score.

    The weights (Kirsch et al. 2023, section 3), with ``beta`` the inverse temperature (``beta -> inf``: top-k;
    ``beta = 0``: uniformly random):

    - ``"power"``: ``w_i = s_i ** beta``, for scores ``>= 0`` such as BALD (the paper's PowerBALD);
    - ``"softmax"``: ``w_i = exp(beta s_i)``, for scores of any sign and scale;
    - ``"softrank"``: ``w_i = r_i ** -beta``, ``r_i`` the rank of ``s_i`` (1 for the highest; ties by the lower
      index), which ignores the scale of the scores altogether.

    Args:
      scores: ``(pool_size,)`` floating-point acquisition scores (higher: acquire first), e.g. `bald()`.
      batch_size: how many to draw (static), in ``[1, pool_size]``.
      key: a PRNG key; the same key draws the same batch.
      mode: ``"power"`` (default, the paper's recommendation for BALD), ``"softmax"`` or ``"softrank"``.
      beta: inverse temperature ``>= 0`` (may be traced); the paper uses 1.
      mask: optional ``(pool_size,)`` bool, True where a candidate may be chosen.

    Returns:
      ``(batch_size,)`` int32 pool indices in the order drawn (-1 for a pick that a traced mask with too few
      candidates could not fill). Candidates of zero weight (a zero score under ``"power"``) come last, in index
      order.

    Raises:
      TypeError: ``scores`` not floating point, ``key`` not a key, ``mode`` not a str, ``mask`` not boolean.
      ValueError: ``scores`` not 1-D or empty, ``batch_size`` outside ``[1, pool_size]``, unknown ``mode``,
        ``beta`` negative or not finite, (when concrete) NaN scores or negative scores under ``"power"``, ``mask``
        of the wrong shape or with too few candidates.
    """
    key = _scores.required_key(key, "stochastic batch acquisition")
    scores = _inputs.vector(_checks.floating_array(scores, "scores"), "scores")
    batch_size = _checks.int_in_range(batch_size, "batch_size", 1, scores.shape[0])
    mode_name = _checks.choice(mode, MODES, "mode")
    beta = _checks.non_negative(beta, "beta")
    ok = _inputs.finite(scores, "scores", allow_inf=True)
    if mode_name == "power" and _checks.is_static(scores) and bool((scores < 0).any()):
        raise ValueError(
            f"`scores` must be >= 0 with `mode`='power' (weights s ** beta); got a minimum of "
            f"{float(scores.min()):.4g}. Use `mode`='softmax' or 'softrank' for scores of any sign."
        )
    if mask is not None:
        mask = _inputs.pool_mask(mask, scores.shape[0], batch_size)
    indices = _stochastic_batch(scores, jnp.asarray(beta, jnp.float32), key, mask, batch_size, mode_name)
    if ok is None:
        return indices
    return jnp.where(ok, indices, -1)  # NaN scores inside jit: no batch rather than a plausible one


@functools.partial(jax.jit, static_argnums=(4, 5))
def _stochastic_batch(scores, beta, key, mask, batch_size, mode):
    scores = _stats.as_float(scores)
    if mode == "power":
        log_weights = beta * jnp.log(scores)  # log 0 = -inf: never drawn before a candidate of positive weight
        log_weights = jnp.where(beta == 0, 0.0, log_weights)
    elif mode == "softmax":
        log_weights = beta * scores
    else:
        order = jnp.argsort(-scores, stable=True)
        ranks = jnp.empty_like(order).at[order].set(jnp.arange(1, scores.shape[0] + 1))
        log_weights = -beta * jnp.log(ranks.astype(jnp.float32))
    perturbed = log_weights + jax.random.gumbel(key, scores.shape, jnp.float32)
    # -inf + Gumbel stays -inf; top_k's masking and tie rule (lower index first) decide the rest.
    return _scores.select_top_k(perturbed, mask, batch_size)
