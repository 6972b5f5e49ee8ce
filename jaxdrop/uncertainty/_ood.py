"""Out-of-distribution detection: scores from logits, and how well a score separates OOD from in-distribution inputs.

Every detection metric takes the scores of the in-distribution inputs and of the OOD inputs separately, with the
convention of the rest of this namespace: **higher means more uncertain** (more likely OOD). Entropy, mutual
information, ``1 - max probability``, `energy_score()` and `max_logit_score()` all follow it, so any of them can be
passed as is. Ties are handled as scikit-learn does (a threshold sits between distinct score values, never inside a
tie); NaN has no rank and is rejected, +-inf ranks like any number.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs

POSITIVES = ("out", "in")


def _as_float32(scores: jax.Array) -> jax.Array:
    """Bool, integer or floating scores as floats of at least 32 bits (so they can be negated and compared)."""
    return scores.astype(jnp.promote_types(scores.dtype, jnp.float32))


def _in_and_out(
    scores_in: jax.typing.ArrayLike, scores_out: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array, _inputs.Ok]:
    scores_in, in_ok = _inputs.scores(scores_in, "scores_in")
    scores_out, out_ok = _inputs.scores(scores_out, "scores_out")
    return scores_in, scores_out, _inputs.all_ok(in_ok, out_ok)


# Validation runs in Python; each metric is then one jitted program (one dispatch when called eagerly).


def order_keys(scores: jax.Array) -> jax.Array:
    """Keys that sort like ``scores`` (no NaN): integers as they are, float32 (and narrower) mapped to int32.

    XLA's CPU sort of int32 is about 5x faster than of float32 (measured at 100,000 values: 11 vs 58 ms), so float
    scores are sorted through their bit patterns, made monotonic: a negative float's magnitude bits are flipped.
    -0.0 becomes +0.0 first, so the two still tie. float64 (x64 mode) is sorted as is.
    """
    if jnp.issubdtype(scores.dtype, jnp.bool_):
        return scores.astype(jnp.int32)
    if not jnp.issubdtype(scores.dtype, jnp.floating) or jnp.finfo(scores.dtype).bits > 32:
        return scores
    scores = jnp.where(scores == 0, 0.0, scores.astype(jnp.float32))
    bits = jax.lax.bitcast_convert_type(scores, jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


@jax.jit
def _auroc(scores_in: jax.Array, scores_out: jax.Array) -> jax.Array:
    keys = order_keys(jnp.concatenate([scores_in, scores_out]))
    keys_out = keys[scores_in.shape[0] :]
    ordered = jnp.sort(keys)
    # Average 1-based rank of each OOD score among all: tied scores share the mean of their ranks.
    lower = jnp.searchsorted(ordered, keys_out, side="left")
    upper = jnp.searchsorted(ordered, keys_out, side="right")
    ranks_out = (lower + upper + 1) / 2.0
    num_in, num_out = scores_in.shape[0], scores_out.shape[0]
    u_statistic = ranks_out.sum() - num_out * (num_out + 1) / 2.0
    return (u_statistic / float(num_in * num_out)).astype(jnp.float32)  # a float: n_in * n_out can pass 2**31


@jax.jit
def _average_precision(scores_positive: jax.Array, scores_negative: jax.Array) -> jax.Array:
    # A threshold sits after the last of a run of tied scores, so each positive counts the precision of the
    # threshold at its own score: (positives scoring >= s) / (examples scoring >= s); AP is their mean (sklearn's
    # step-wise sum). Two sorts of keys and binary searches: no argsort, which is as slow as a float sort.
    keys = order_keys(jnp.concatenate([scores_positive, scores_negative]))
    num_positive, num_examples = scores_positive.shape[0], keys.shape[0]
    keys_positive = keys[:num_positive]
    positives_at_or_above = num_positive - jnp.searchsorted(jnp.sort(keys_positive), keys_positive, side="left")
    examples_at_or_above = num_examples - jnp.searchsorted(jnp.sort(keys), keys_positive, side="left")
    return (positives_at_or_above / examples_at_or_above).mean(dtype=jnp.float32)


@jax.jit
def _fpr_at_count(scores_in: jax.Array, scores_out: jax.Array, count: jax.Array) -> jax.Array:
    # The highest threshold that flags `count` OOD inputs is the count-th largest OOD score: every in-distribution
    # score at or above it is a false positive.
    keys = order_keys(jnp.concatenate([scores_in, scores_out]))
    keys_in, keys_out = keys[: scores_in.shape[0]], keys[scores_in.shape[0] :]
    threshold = jnp.sort(keys_out)[keys_out.shape[0] - count]
    return (keys_in >= threshold).mean(dtype=jnp.float32)


@jax.jit
def _energy(logits: jax.Array, temperature: jax.Array) -> jax.Array:
    return -temperature * logsumexp(_stats.as_float(logits) / temperature, axis=-1)


@jax.jit
def _max_logit(logits: jax.Array) -> jax.Array:
    return -_stats.as_float(logits).max(-1)


def ood_auroc(scores_in: jax.typing.ArrayLike, scores_out: jax.typing.ArrayLike) -> jax.Array:
    """AUROC of telling out-of-distribution from in-distribution inputs by an uncertainty score.

    The probability that a random OOD input scores higher than a random in-distribution one, ties counting one
    half (the Mann-Whitney statistic; equal to ``sklearn.metrics.roc_auc_score`` with OOD as the positive class).
    Computed from average ranks in ``O(n log n)``.

    Args:
      scores_in: ``(n_in,)`` scores on in-distribution inputs (higher means more uncertain), ``n_in >= 1``.
      scores_out: ``(n_out,)`` scores on OOD inputs, ``n_out >= 1``.

    Returns:
      A float32 scalar in ``[0, 1]``; 0.5 is chance. Inside ``jit``, NaN when a score is NaN.

    Raises:
      TypeError: scores neither bool, integer nor floating point.
      ValueError: scores not 1-D or empty; (when concrete) a NaN score: it has no rank, and counting it as a tie
        would report chance (0.5) for a broken score. +-inf is ranked like any number.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> float(jaxdrop.uncertainty.ood_auroc(jnp.array([0.1, 0.4]), jnp.array([0.4, 0.8])))
      0.875
    """
    scores_in, scores_out, ok = _in_and_out(scores_in, scores_out)
    return _inputs.guard(_auroc(scores_in, scores_out), ok)


def ood_aupr(
    scores_in: jax.typing.ArrayLike,
    scores_out: jax.typing.ArrayLike,
    *,
    positive: Literal["out", "in"] = "out",
) -> jax.Array:
    """Area under the precision-recall curve of OOD detection, with OOD ("AUPR-out") or in-distribution
    ("AUPR-in") as the positive class (Hendrycks & Gimpel 2017, "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples", ICLR).

    Computed as average precision, the step-wise sum ``AP = sum_k (R_k - R_{k-1}) P_k`` over the thresholds at
    the distinct score values (no interpolation), exactly ``sklearn.metrics.average_precision_score``. With
    ``positive="out"`` the OOD inputs are the positives and a higher score flags them; with ``positive="in"`` the
    in-distribution inputs are the positives, ranked by the negated score (the most certain first).

    Args:
      scores_in: ``(n_in,)`` scores on in-distribution inputs (higher means more uncertain), ``n_in >= 1``.
      scores_out: ``(n_out,)`` scores on OOD inputs, ``n_out >= 1``.
      positive: ``"out"`` (AUPR-out) or ``"in"`` (AUPR-in); static.

    Returns:
      A float32 scalar in ``(0, 1]``; a score that carries no information gives about the share of positives
      (``n_out / (n_in + n_out)`` for AUPR-out), not 0.5. Inside ``jit``, NaN when a score is NaN.

    Raises:
      TypeError, ValueError: as `ood_auroc()`; ValueError for an unknown ``positive``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> scores_in, scores_out = jnp.array([0.1, 0.4, 0.5]), jnp.array([0.3, 0.9])
      >>> round(float(jaxdrop.uncertainty.ood_aupr(scores_in, scores_out)), 4)  # (1/2)(1/1) + (1/2)(2/4)
      0.75
    """
    _checks.choice(positive, POSITIVES, "positive")
    scores_in, scores_out, ok = _in_and_out(scores_in, scores_out)
    if positive == "out":
        return _inputs.guard(_average_precision(scores_out, scores_in), ok)
    negated_in, negated_out = (-_as_float32(scores) for scores in (scores_in, scores_out))
    return _inputs.guard(_average_precision(negated_in, negated_out), ok)


def fpr_at_tpr(scores_in: jax.typing.ArrayLike, scores_out: jax.typing.ArrayLike, *, tpr: float = 0.95) -> jax.Array:
    """False-positive rate at the threshold that flags at least a ``tpr`` share of the OOD inputs ("FPR95" for
    0.95; Liang et al. 2018, "Enhancing the Reliability of Out-of-distribution Image Detection in Neural Networks"
    (ODIN), ICLR); lower is better.

    OOD is the positive class and an input is flagged when its score is at or above the threshold. The threshold is
    the ``k``-th largest OOD score with ``k`` the smallest count such that ``k / n_out >= tpr`` (float64
    arithmetic, as scikit-learn); the result is the share of in-distribution scores at or above it:
    ``fpr[searchsorted(tpr_curve, tpr)]`` on ``sklearn.metrics.roc_curve``.

    Args:
      scores_in: ``(n_in,)`` scores on in-distribution inputs (higher means more uncertain), ``n_in >= 1``.
      scores_out: ``(n_out,)`` scores on OOD inputs, ``n_out >= 1``.
      tpr: the true-positive rate to reach, a static float in ``(0, 1]``.

    Returns:
      A float32 scalar in ``[0, 1]``. Inside ``jit``, NaN when a score is NaN.

    Raises:
      TypeError: as `ood_auroc()`; ``tpr`` traced.
      ValueError: as `ood_auroc()`; ``tpr`` outside ``(0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> scores_in, scores_out = jnp.array([0.1, 0.2, 0.6, 0.7]), jnp.array([0.5, 0.8])
      >>> float(jaxdrop.uncertainty.fpr_at_tpr(scores_in, scores_out, tpr=0.95))  # both OOD: threshold 0.5
      0.5
    """
    tpr = _inputs.level(tpr, "tpr", include_one=True)
    scores_in, scores_out, ok = _in_and_out(scores_in, scores_out)
    count = _inputs.count_at(tpr, scores_out.shape[0])
    return _inputs.guard(_fpr_at_count(scores_in, scores_out, jnp.int32(count)), ok)  # traced: one compile


def _logits(logits: jax.typing.ArrayLike) -> tuple[jax.Array, _inputs.Ok]:
    logits, ok = _inputs.finite_array(logits, "logits")
    if logits.ndim < 1 or logits.shape[-1] == 0:
        raise ValueError(f"`logits` must have a class axis (last) with at least one class; got shape {logits.shape}.")
    return logits, ok


def energy_score(logits: jax.typing.ArrayLike, *, temperature: jax.typing.ArrayLike = 1.0) -> jax.Array:
    """Free energy ``E(x) = -T logsumexp_c(f_c(x) / T)`` of the logits (Liu et al. 2020, "Energy-based
    Out-of-distribution Detection", NeurIPS): **higher means more uncertain** (more likely OOD), ready for
    `ood_auroc()` and friends as is.

    Args:
      logits: ``(*batch, num_classes)`` logits, finite, at least one class. For MC samples average the energies
        of the per-sample logits, ``energy_score(sample_logits).mean(0)``: the energy needs the logits' scale,
        and a log-probability vector such as ``log(mean_t p_t)`` always has energy 0.
      temperature: ``T``, a finite scalar > 0 (may be traced). Liu et al. use ``T = 1``.

    Returns:
      ``(*batch,)`` float32; computed with a stable ``logsumexp``. Inside ``jit``, NaN or inf logits or an
      invalid traced ``temperature`` make every entry NaN.

    Raises:
      TypeError: ``logits`` not floating point.
      ValueError: no class axis or zero classes, ``temperature`` not a finite number > 0 (when static); (when
        concrete) NaN or inf logits.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> [round(e, 4) for e in jaxdrop.uncertainty.energy_score(jnp.array([[0.0, 0.0], [9.0, 0.0]])).tolist()]
      [-0.6931, -9.0001]
    """
    logits, logits_ok = _logits(logits)
    temperature, temperature_ok = _inputs.positive(temperature, "temperature")
    return _inputs.guard(_energy(logits, temperature), logits_ok, temperature_ok)


def max_logit_score(logits: jax.typing.ArrayLike) -> jax.Array:
    """Negated maximum logit, ``-max_c f_c(x)`` (Hendrycks et al. 2022, "Scaling Out-of-Distribution Detection for
    Real-World Settings", ICML): **higher means more uncertain**, ready for `ood_auroc()` and friends as is.

    Args:
      logits: ``(*batch, num_classes)`` logits, finite, at least one class.

    Returns:
      ``(*batch,)`` float32. Inside ``jit``, NaN or inf logits make every entry NaN.

    Raises:
      TypeError, ValueError: as `energy_score()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.max_logit_score(jnp.array([[2.0, -1.0], [0.5, 0.25]])).tolist()
      [-2.0, -0.5]
    """
    logits, ok = _logits(logits)
    return _inputs.guard(_max_logit(logits), ok)
