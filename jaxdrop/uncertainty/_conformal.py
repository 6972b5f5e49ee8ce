"""Split conformal prediction: prediction sets and intervals with a finite-sample coverage guarantee.

Split conformal prediction (Vovk et al. 2005; Papadopoulos et al. 2002; Lei et al. 2018), as in Angelopoulos &
Bates 2021, "A Gentle Introduction to Conformal Prediction and Distribution-Free Uncertainty Quantification": a
score ``s(x, y)`` (large when ``y`` looks wrong for ``x``) is computed on ``n`` held-out calibration examples, and
its ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile ``q`` becomes the threshold: the set of a new input is
every ``y`` with ``s(x, y) <= q``.

**The guarantee.** If the calibration examples and the test example are *exchangeable* (for instance drawn i.i.d.
from one distribution, and the model was not fitted on them), then ``P(y_test in set) >= 1 - alpha``, marginally
over the calibration draw and the test example, for any model and any sample size; with continuous scores (no
ties) also ``<= 1 - alpha + 1 / (n + 1)``. It is not a per-input (conditional) guarantee, and it breaks under
distribution shift (the digits 5-9 of a 0-4 classifier, a new hospital): exchangeability is the whole assumption.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs

SCORES = ("lac", "aps", "raps")
Score = Literal["lac", "aps", "raps"]


def _alpha(alpha: jax.typing.ArrayLike) -> float | jax.Array:
    return _checks.probability(alpha, "alpha", open_interval=True)


def _rank(alpha: float | jax.Array, num_scores: int) -> int | jax.Array:
    """``k = ceil((n + 1)(1 - alpha))``, the rank of the conformal quantile among ``n`` scores (1-based).

    A static ``alpha`` gives a Python int (float64 arithmetic; a product that is an integer up to rounding is not
    pushed to the next one) and raises when ``k > n``: too few calibration scores for this ``alpha``.
    """
    if isinstance(alpha, float):
        rank = math.ceil((num_scores + 1) * (1.0 - alpha) - 1e-9)
        if rank > num_scores:
            needed = math.ceil((1.0 - alpha) / alpha - 1e-9)
            raise ValueError(
                f"`alpha`={alpha} needs at least {needed} calibration scores (the conformal quantile is the "
                f"ceil((n + 1)(1 - alpha))-th smallest of n); got {num_scores}. Use more calibration data or a "
                f"larger `alpha`."
            )
        return max(rank, 1)
    return jnp.clip(jnp.ceil((num_scores + 1) * (1.0 - alpha) - 1e-4), 1, num_scores + 1).astype(jnp.int32)


@jax.jit
def _quantile(scores: jax.Array, rank: jax.Array) -> jax.Array:
    # integer/bool scores too: the float32 threshold documented, and a +inf pad that is not cast to INT_MIN
    ordered = jnp.sort(scores.astype(jnp.promote_types(scores.dtype, jnp.float32)))
    # rank n + 1 (possible only for a traced alpha): the set must hold every label, an infinite threshold
    padded = jnp.concatenate([ordered, jnp.full((1,), jnp.inf, ordered.dtype)])
    return padded[rank - 1]


def conformal_quantile(scores: jax.typing.ArrayLike, alpha: jax.typing.ArrayLike) -> jax.Array:
    """The split-conformal threshold: the ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` calibration scores.

    That is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile (Angelopoulos & Bates 2021, eq. 1), slightly
    above ``1 - alpha``: the ``+1`` counts the test example's own score, which is what makes the coverage
    guarantee hold for finite ``n`` (see the module docstring for the guarantee and its assumption).

    Args:
      scores: ``(n,)`` conformity scores of the calibration examples (large = non-conforming), no NaN; +-inf allowed.
      alpha: the miscoverage level in ``(0, 1)``: sets built with the threshold cover with probability
        ``>= 1 - alpha``. A Python float (or concrete scalar); a traced ``alpha`` is accepted too.

    Returns:
      A float32 scalar. Inside ``jit``, a traced ``alpha`` outside ``(0, 1)`` or NaN scores give NaN; a traced
      ``alpha`` too small for ``n`` gives ``+inf`` (the trivial set, which does cover).

    Raises:
      TypeError: ``alpha`` not a real number.
      ValueError: ``scores`` not 1-D or empty, ``alpha`` outside ``(0, 1)``, fewer calibration scores than
        ``alpha`` needs (``n < (1 - alpha) / alpha``: 9 for ``alpha = 0.1``); (when concrete) NaN scores.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.conformal_quantile(jnp.arange(1.0, 20.0), 0.1).tolist()  # ceil(20 * 0.9) = 18th
      18.0
    """
    scores = _checks.array(scores, "scores")
    scores = _inputs.vector(scores, "scores")
    scores_ok = _inputs.finite(scores, "scores", allow_inf=True)
    alpha = _alpha(alpha)
    rank = _rank(alpha, scores.shape[0])
    alpha_ok = None if isinstance(alpha, float) else (alpha > 0) & (alpha < 1)
    return _inputs.guard(_quantile(scores, jnp.asarray(rank)), scores_ok, alpha_ok)


@functools.partial(jax.jit, static_argnames=("score",))
def _class_scores(probs, uniform, penalty, k_reg, *, score):
    probs = _stats.as_float(probs)
    if score == "lac":
        return 1.0 - probs
    order = jnp.argsort(-probs, axis=-1, stable=True)  # classes by decreasing probability (ties by index)
    ranked = jnp.take_along_axis(probs, order, axis=-1)
    mass_above = jnp.cumsum(ranked, axis=-1) - ranked  # probability of the classes ranked strictly higher
    rank = jnp.argsort(order, axis=-1)  # 0-based rank of each class
    scores = jnp.take_along_axis(mass_above, rank, axis=-1) + uniform[..., None] * probs
    if score == "raps":
        scores = scores + penalty * jnp.maximum(rank + 1 - k_reg, 0)
    return scores


def conformity_scores(
    probs: jax.typing.ArrayLike,
    *,
    score: Score = "aps",
    key: jax.Array | None = None,
    penalty: jax.typing.ArrayLike = 0.01,
    k_reg: int = 5,
) -> jax.Array:
    """The conformity score of every class of every example (large = the class looks wrong).

    - ``"lac"`` (least ambiguous set-valued classifier, Sadinle et al. 2019; "THR" in Angelopoulos et al.):
      ``1 - p_y``. The smallest sets on average, but the same threshold for easy and hard inputs.
    - ``"aps"`` (adaptive prediction sets, Romano et al. 2020): ``sum_{j ranked above y} p_j + u * p_y``, the mass
      of the classes above ``y`` plus a share ``u`` of its own. Sets grow with the input's uncertainty.
    - ``"raps"`` (regularised APS, Angelopoulos et al. 2021, ICLR): APS plus ``penalty * max(0, rank(y) - k_reg)``
      (``rank`` 1-based), which keeps the long tail of tiny probabilities out of the sets.

    With a ``key``, ``u ~ Uniform(0, 1)``, one per example (the randomised scores, whose sets cover with
    probability exactly ``k / (n + 1)``); without, ``u = 1`` (non-randomised: coverage at least ``1 - alpha``, often
    more). ``score`` and ``k_reg`` are static.

    Args:
      probs: ``(*batch, num_classes)`` predictive probabilities (rows summing to 1).
      score: ``"lac"``, ``"aps"`` or ``"raps"``.
      key: a PRNG key for randomised APS/RAPS, or None; ignored by ``"lac"``.
      penalty: RAPS's ``lambda``, a finite scalar ``>= 0``.
      k_reg: RAPS's ``k_reg``, a Python int ``>= 0``: ranks up to it are not penalised.

    Returns:
      ``(*batch, num_classes)`` float32 scores. Inside ``jit``, invalid traced probabilities give NaN.

    Raises:
      TypeError: ``probs`` not floating point, ``key`` not a key, ``k_reg`` not an int.
      ValueError: no class, unknown ``score``, ``penalty < 0``, ``k_reg < 0``; (when concrete) ``probs`` holding
        NaN, values outside [0, 1] or rows not summing to 1.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> probs = jnp.array([[0.6, 0.3, 0.1]])
      >>> [round(s, 4) for s in jaxdrop.uncertainty.conformity_scores(probs, score="aps")[0].tolist()]  # u = 1
      [0.6, 0.9, 1.0]
    """
    probs, ok = _inputs.probabilities(probs)
    _checks.choice(score, SCORES, "score")
    penalty = _checks.non_negative(penalty, "penalty")
    penalty_ok = None if isinstance(penalty, float) else (penalty >= 0) & jnp.isfinite(penalty)
    k_reg = _checks.int_in_range(k_reg, "k_reg", 0)
    batch_shape = probs.shape[:-1]
    if key is None or score == "lac":
        uniform = jnp.ones(batch_shape, jnp.float32)
    else:
        uniform = jax.random.uniform(_checks.prng_key(key), batch_shape)
    scores = _class_scores(probs, uniform, jnp.asarray(penalty, jnp.float32), k_reg, score=score)
    return _inputs.guard(scores, ok, penalty_ok)


def conformal_sets(
    calibration_probs: jax.typing.ArrayLike,
    calibration_labels: jax.typing.ArrayLike,
    test_probs: jax.typing.ArrayLike,
    *,
    alpha: jax.typing.ArrayLike,
    score: Score = "aps",
    key: jax.Array | None = None,
    penalty: jax.typing.ArrayLike = 0.01,
    k_reg: int = 5,
) -> jax.Array:
    """Split-conformal prediction sets for a classifier: each covers the true label with probability ``>= 1-alpha``.

    The true label's `conformity_scores()` on the calibration examples give the threshold `conformal_quantile()`;
    a test example's set holds every class whose score is at most it. Valid under exchangeability of calibration
    and test examples (see the module docstring); the model must not have been trained (or temperature-fitted) on
    the calibration examples. Any probabilities work: better ones give smaller sets, never worse coverage.

    Args:
      calibration_probs: ``(n, num_classes)`` predictive probabilities of held-out examples.
      calibration_labels: ``(n,)`` their integer labels in ``[0, num_classes)``.
      test_probs: ``(m, num_classes)`` probabilities of the examples to predict (``m = 0`` gives no sets).
      alpha: miscoverage level in ``(0, 1)``; ``n`` must be at least ``(1 - alpha) / alpha``.
      score: ``"lac"``, ``"aps"`` or ``"raps"`` (see `conformity_scores()`).
      key: a PRNG key for the randomised APS/RAPS scores (split between calibration and test), or None.
      penalty, k_reg: RAPS's regularisation (see `conformity_scores()`).

    Returns:
      ``(m, num_classes)`` bool: ``True`` where the class is in the set. Sets may be empty (a test input less
      conforming than nearly every calibration example) or hold every class. Inside ``jit``, invalid traced inputs
      make the threshold NaN and so every set empty.

    Raises:
      TypeError, ValueError: as `conformity_scores()` and `conformal_quantile()`; labels out of range (when
        concrete), shapes that do not match, no calibration example.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> calibration = jnp.tile(jnp.array([[0.9, 0.1], [0.2, 0.8]]), (10, 1))
      >>> sets = jaxdrop.uncertainty.conformal_sets(
      ...     calibration, jnp.tile(jnp.array([0, 1]), 10), jnp.array([[0.85, 0.15]]), alpha=0.1, score="lac"
      ... )
      >>> sets.tolist()  # LAC scores 1 - p: calibration 0.1 and 0.2, threshold 0.2 (the 19th of 20)
      [[True, False]]
    """
    calibration_probs, _ = _inputs.probabilities(calibration_probs, "calibration_probs")
    test_probs, _ = _inputs.probabilities(test_probs, "test_probs")
    for name, probs in (("calibration_probs", calibration_probs), ("test_probs", test_probs)):
        if probs.ndim != 2:
            raise ValueError(f"`{name}` must have shape (num_examples, num_classes); got {probs.shape}.")
    if test_probs.shape[-1] != calibration_probs.shape[-1]:
        raise ValueError(
            f"`test_probs` must have the {calibration_probs.shape[-1]} classes of `calibration_probs`; got "
            f"{test_probs.shape[-1]}."
        )
    _inputs.not_empty(calibration_probs, "calibration_probs")
    labels, labels_ok = _inputs.labels(
        calibration_labels, calibration_probs.shape[:-1], calibration_probs.shape[-1], "calibration_labels"
    )
    calibration_key = test_key = None
    if key is not None:
        calibration_key, test_key = jax.random.split(_checks.prng_key(key))
    options = {"score": score, "penalty": penalty, "k_reg": k_reg}
    calibration_scores = conformity_scores(calibration_probs, key=calibration_key, **options)  # type: ignore[arg-type]
    label_scores = jnp.take_along_axis(calibration_scores, labels[:, None], axis=-1)[:, 0]
    threshold = conformal_quantile(label_scores, alpha)
    threshold = _inputs.guard(threshold, labels_ok)
    test_scores = conformity_scores(test_probs, key=test_key, **options)  # type: ignore[arg-type]
    return test_scores <= threshold


def conformal_intervals(
    calibration_predictions: jax.typing.ArrayLike,
    calibration_targets: jax.typing.ArrayLike,
    test_predictions: jax.typing.ArrayLike,
    *,
    alpha: jax.typing.ArrayLike,
    calibration_std: jax.typing.ArrayLike | None = None,
    test_std: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Split-conformal regression intervals ``prediction +- q * std`` that cover with probability ``>= 1-alpha``.

    The score is the residual ``|y - prediction|`` (Lei et al. 2018), or with ``std`` the normalised residual
    ``|y - prediction| / std`` (Papadopoulos et al. 2008; Angelopoulos & Bates 2021, section 2.3), where ``std``
    is for instance the MC-dropout predictive standard deviation (``RegressionPrediction.predictive_std``): the
    intervals then widen where the model is uncertain. ``q`` is `conformal_quantile()` of the calibration scores.
    Valid under exchangeability (see the module docstring), however good or bad ``std`` is.

    Args:
      calibration_predictions: ``(n,)`` point predictions (e.g. the MC predictive mean) on held-out examples.
      calibration_targets: ``(n,)`` their targets.
      test_predictions: ``(m,)`` point predictions to put intervals around.
      alpha: miscoverage level in ``(0, 1)``; ``n`` must be at least ``(1 - alpha) / alpha``.
      calibration_std, test_std: ``(n,)`` and ``(m,)`` predictive standard deviations, finite and > 0; both or
        neither.

    Returns:
      ``(lower, upper)``, each ``(m,)`` float32. Inside ``jit``, invalid traced inputs give NaN.

    Raises:
      TypeError: an input not floating point, ``alpha`` not a number.
      ValueError: shapes that do not match, no calibration example, only one of the two ``std``, a ``std <= 0``,
        ``alpha`` as in `conformal_quantile()`; (when concrete) NaN/inf.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> residuals = jnp.arange(1.0, 20.0)  # calibration targets 1..19 above predictions of 0
      >>> low, high = jaxdrop.uncertainty.conformal_intervals(jnp.zeros(19), residuals, jnp.zeros(1), alpha=0.1)
      >>> low.tolist(), high.tolist()
      ([-18.0], [18.0])
    """
    cal_predictions, calibration_ok = _regression_vector(calibration_predictions, "calibration_predictions")
    cal_targets, targets_ok = _regression_vector(calibration_targets, "calibration_targets")
    predictions, test_ok = _regression_vector(test_predictions, "test_predictions", allow_empty=True)
    _inputs.same_shape(cal_targets, cal_predictions, "calibration_targets", "calibration_predictions")
    residuals = jnp.abs(cal_targets - cal_predictions)
    if (calibration_std is None) != (test_std is None):
        raise ValueError("Pass both `calibration_std` and `test_std` (normalised scores) or neither.")
    std_oks: list[_inputs.Ok] = []
    test_scale = jnp.ones_like(predictions)
    if calibration_std is not None and test_std is not None:
        cal_scale, *oks = _positive_vector(calibration_std, "calibration_std")
        std_oks += oks
        test_scale, *oks = _positive_vector(test_std, "test_std", allow_empty=True)
        std_oks += oks
        _inputs.same_shape(cal_scale, cal_predictions, "calibration_std", "calibration_predictions")
        _inputs.same_shape(test_scale, predictions, "test_std", "test_predictions")
        residuals = residuals / cal_scale
    threshold = conformal_quantile(residuals, alpha)
    half_width = threshold * test_scale
    interval = (predictions - half_width, predictions + half_width)
    return _inputs.guard(interval, calibration_ok, targets_ok, test_ok, *std_oks)


def cqr_intervals(
    calibration_lower: jax.typing.ArrayLike,
    calibration_upper: jax.typing.ArrayLike,
    calibration_targets: jax.typing.ArrayLike,
    test_lower: jax.typing.ArrayLike,
    test_upper: jax.typing.ArrayLike,
    *,
    alpha: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
    """Conformalized quantile regression (CQR, Romano et al. 2019): quantile outputs made to cover ``>= 1-alpha``.

    A model that predicts the ``alpha/2`` and ``1 - alpha/2`` quantiles (trained with the pinball loss) covers
    only approximately; CQR's score ``max(lower - y, y - upper)`` measures by how much an interval misses (negative
    inside it), and the test interval ``[lower - q, upper + q]`` is widened (or, for ``q < 0``, narrowed) by its
    conformal quantile ``q``. Valid under exchangeability (see the module docstring).

    Args:
      calibration_lower, calibration_upper: ``(n,)`` predicted lower and upper quantiles on held-out examples.
      calibration_targets: ``(n,)`` their targets.
      test_lower, test_upper: ``(m,)`` predicted quantiles of the examples to predict.
      alpha: miscoverage level in ``(0, 1)``; ``n`` must be at least ``(1 - alpha) / alpha``.

    Returns:
      ``(lower, upper)``, each ``(m,)`` float32. Inside ``jit``, invalid traced inputs give NaN.

    Raises:
      TypeError, ValueError: as `conformal_intervals()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> targets = jnp.arange(1.0, 20.0)  # each 1..19 above an upper quantile of 0
      >>> low, high = jaxdrop.uncertainty.cqr_intervals(
      ...     jnp.full(19, -1.0), jnp.zeros(19), targets, jnp.zeros(1), jnp.ones(1), alpha=0.1
      ... )
      >>> low.tolist(), high.tolist()
      ([-18.0], [19.0])
    """
    names = ("calibration_lower", "calibration_upper", "calibration_targets")
    checked = [
        _regression_vector(v, n)
        for v, n in zip((calibration_lower, calibration_upper, calibration_targets), names, strict=True)
    ]
    (low, low_ok), (high, high_ok), (targets, targets_ok) = checked
    _inputs.same_shape(low, high, names[0], names[1])
    _inputs.same_shape(low, targets, names[0], names[2])
    (test_low, test_low_ok), (test_high, test_high_ok) = (
        _regression_vector(test_lower, "test_lower", allow_empty=True),
        _regression_vector(test_upper, "test_upper", allow_empty=True),
    )
    _inputs.same_shape(test_low, test_high, "test_lower", "test_upper")
    threshold = conformal_quantile(jnp.maximum(low - targets, targets - high), alpha)
    interval = (test_low - threshold, test_high + threshold)
    return _inputs.guard(interval, low_ok, high_ok, targets_ok, test_low_ok, test_high_ok)


def _regression_vector(
    values: jax.typing.ArrayLike, name: str, allow_empty: bool = False
) -> tuple[jax.Array, _inputs.Ok]:
    checked, ok = _inputs.finite_array(values, name)
    return _inputs.vector(checked, name, allow_empty=allow_empty), ok


def _positive_vector(
    values: jax.typing.ArrayLike, name: str, allow_empty: bool = False
) -> tuple[jax.Array, _inputs.Ok, _inputs.Ok]:
    checked, ok = _regression_vector(values, name, allow_empty)
    if checked.size == 0:
        return checked, ok, None
    smallest = checked.min()
    if _checks.is_static(smallest):
        if float(smallest) <= 0:
            raise ValueError(
                f"`{name}` must be > 0 everywhere (a standard deviation); got a minimum of {float(smallest):.4g}."
            )
        return checked, ok, None
    return checked, ok, smallest > 0


def _sets_and_labels(
    sets: jax.typing.ArrayLike, labels: jax.typing.ArrayLike | None = None
) -> tuple[jax.Array, jax.Array, _inputs.Ok]:
    checked = _checks.array(sets, "sets")
    if checked.dtype != jnp.bool_ or checked.ndim != 2:
        raise ValueError(
            f"`sets` must be a bool array (num_examples, num_classes), as `conformal_sets` returns; got dtype "
            f"{checked.dtype} and shape {checked.shape}."
        )
    _inputs.not_empty(checked, "sets")
    if labels is None:
        return checked, jnp.zeros(checked.shape[:1], jnp.int32), None
    label_values, ok = _inputs.labels(labels, checked.shape[:1], checked.shape[1])
    return checked, label_values, ok


def set_coverage(sets: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
    """Empirical coverage: the fraction of examples whose set holds the true label, ``mean_i 1[y_i in C(x_i)]``.

    Compare it with the target ``1 - alpha``: over calibration draws its mean lies in
    ``[1 - alpha, 1 - alpha + 1/(n + 1)]`` (continuous scores); one test set adds binomial noise.

    Args:
      sets: ``(m, num_classes)`` bool sets (from `conformal_sets()`), ``m >= 1``.
      labels: ``(m,)`` integer labels in ``[0, num_classes)``.

    Returns:
      A float32 scalar in ``[0, 1]``. Inside ``jit``, labels out of range give NaN.

    Raises:
      TypeError: ``labels`` not integer.
      ValueError: ``sets`` not a 2-D bool array or empty, ``labels`` of the wrong shape or (when concrete) range.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> sets = jnp.array([[True, False], [True, True]])
      >>> jaxdrop.uncertainty.set_coverage(sets, jnp.array([1, 1])).tolist()
      0.5
    """
    sets, labels, ok = _sets_and_labels(sets, labels)
    covered = jnp.take_along_axis(sets, labels[:, None], axis=-1)[:, 0]
    return _inputs.guard(covered.astype(jnp.float32).mean(), ok)


def mean_set_size(sets: jax.typing.ArrayLike) -> jax.Array:
    """Mean number of classes per prediction set (smaller is more informative, at equal coverage).

    Args:
      sets: ``(m, num_classes)`` bool sets (from `conformal_sets()`), ``m >= 1``.

    Returns:
      A float32 scalar in ``[0, num_classes]``.

    Raises:
      ValueError: ``sets`` not a 2-D bool array, or empty.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.mean_set_size(jnp.array([[True, False], [True, True]])).tolist()
      1.5
    """
    sets, _, _ = _sets_and_labels(sets)
    return sets.sum(-1).astype(jnp.float32).mean()
