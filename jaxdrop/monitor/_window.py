"""The per-window statistic of the stream monitor: a Mann-Whitney rank statistic against a fixed reference, kept in
three numbers per window (fixed memory) and updated batch by batch under ``jit``.

Mann & Whitney 1947: ``U = sum_{x in window} (#{r < x} + #{r == x} / 2)`` over the reference values ``r``. With
``n`` window scores and ``R`` reference scores exchangeable (no change), ``E[U] = n R / 2`` and
``Var[U] = n R (n + R + 1) / 12``; ``z = (U - E[U]) / sqrt(Var[U])`` is close to a standard normal for windows of
tens of scores. Ties (an uncertainty of exactly 0, repeated scores) shrink the true variance, so leaving out the tie
correction makes the test conservative, never anti-conservative.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy import special

from jaxdrop import _checks, _stats


class WindowStats(NamedTuple):
    """The running statistics of one window (a pytree of scalars: carry it through ``jit`` or ``scan``).

    Attributes:
      num_scores: int32, scores added so far.
      rank_sum: float32, the Mann-Whitney ``U``: per score, the reference values below it plus half those equal.
      score_sum: float32, the sum of the scores (the window's mean score is reported with an alarm).
    """

    num_scores: jax.Array
    rank_sum: jax.Array
    score_sum: jax.Array


def window_init() -> WindowStats:
    """An empty window."""
    return WindowStats(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))


def window_update(
    stats: WindowStats,
    reference: jax.typing.ArrayLike,
    scores: jax.typing.ArrayLike,
    where: jax.typing.ArrayLike | None = None,
) -> WindowStats:
    """Adds a batch of scores to the window: ``O(batch * log R)`` work, no memory beyond the reference.

    Args:
      stats: the window so far (`window_init()` for a new one).
      reference: ``(R,)`` reference scores **sorted ascending** (`DriftMonitor` sorts them once).
      scores: ``(batch,)`` scores of the new inputs (e.g. `jaxdrop.uncertainty.mutual_information()`).
      where: optional ``(batch,)`` bool, False for padding entries that are not part of the stream.

    Returns:
      The updated `WindowStats`.
    """
    scores = _stats.as_float(_checks.floating_array(scores, "scores"))
    reference = _stats.as_float(_checks.floating_array(reference, "reference"))
    keep = jnp.ones(scores.shape, bool) if where is None else jnp.asarray(where, bool)
    return _window_update(stats, reference, scores, keep)


def ranks(reference: jax.Array, scores: jax.Array) -> jax.Array:
    """Per score, the reference values below it plus half those equal: its term of ``U``."""
    below = jnp.searchsorted(reference, scores, side="left")
    below_or_equal = jnp.searchsorted(reference, scores, side="right")
    return 0.5 * (below + below_or_equal).astype(jnp.float32)


jitted_ranks = jax.jit(ranks)


@jax.jit
def _window_update(stats, reference, scores, keep):
    ranks_ = ranks(reference, scores)
    return WindowStats(
        stats.num_scores + keep.sum(dtype=jnp.int32),
        stats.rank_sum + jnp.where(keep, ranks_, 0.0).sum(),
        stats.score_sum + jnp.where(keep, scores, 0.0).sum(),
    )


def window_test(
    stats: WindowStats, reference_size: int, *, alternative: str = "greater"
) -> tuple[jax.Array, jax.Array]:
    """The window's standardised Mann-Whitney statistic and its p-value against the reference.

    Args:
      stats: the window's `WindowStats` (at least one score).
      reference_size: ``R``, the number of reference scores.
      alternative: ``"greater"`` (default: the window's scores are stochastically larger, as uncertainty is under
        drift), ``"less"`` or ``"two-sided"``.

    Returns:
      ``(z, p_value)`` float32 scalars (normal approximation, no tie correction: conservative with ties).
    """
    alternative = _checks.choice(alternative, ALTERNATIVES, "alternative")
    return _window_test(stats, jnp.float32(reference_size), alternative)


ALTERNATIVES = ("greater", "less", "two-sided")


def standardised(rank_sum: float, count: int, reference_size: int) -> float:
    """Host-side ``z`` of a window (float64): the formula of `window_test`, for `DriftMonitor`'s decisions."""
    mean = 0.5 * count * reference_size
    return (rank_sum - mean) / math.sqrt(count * reference_size * (count + reference_size + 1.0) / 12.0)


def p_value(z: float, alternative: str) -> float:
    """Host-side p-value of ``z`` under the normal approximation (float64, accurate far in the tails)."""
    upper, lower = 0.5 * math.erfc(z / math.sqrt(2.0)), 0.5 * math.erfc(-z / math.sqrt(2.0))
    return {"greater": upper, "less": lower, "two-sided": min(1.0, 2.0 * min(upper, lower))}[alternative]


def _window_test(stats: WindowStats, reference_size: jax.Array, alternative: str) -> tuple[jax.Array, jax.Array]:
    n = stats.num_scores.astype(jnp.float32)
    mean = 0.5 * n * reference_size
    std = jnp.sqrt(n * reference_size * (n + reference_size + 1.0) / 12.0)
    z = (stats.rank_sum - mean) / std
    upper = 0.5 * special.erfc(z / jnp.sqrt(2.0))  # P(Z >= z), accurate far in the tail
    lower = 0.5 * special.erfc(-z / jnp.sqrt(2.0))  # P(Z <= z)
    if alternative == "greater":
        return z, upper
    if alternative == "less":
        return z, lower
    return z, jnp.minimum(1.0, 2.0 * jnp.minimum(upper, lower))
