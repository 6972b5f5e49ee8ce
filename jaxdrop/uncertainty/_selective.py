"""Decisions from uncertainty: selective prediction (risk-coverage), review flags, out-of-distribution AUROC.

Risk-coverage curves and their area (AURC) follow Geifman & El-Yaniv 2017 ("Selective Classification for Deep
Neural Networks", NeurIPS) and Geifman et al. 2019 ("Bias-Reduced Uncertainty Estimation for Deep Neural
Classifiers", ICLR). Examples are always ordered by uncertainty with ties broken by index, so results are
reproducible.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs


def _vector(values: jax.typing.ArrayLike, name: str, allow_empty: bool = False) -> jax.Array:
    """A 1-D array of scores or errors: bool, integer or floating point (cast to float inside the jitted core)."""
    values = _inputs.vector(values, name, allow_empty)
    if jnp.issubdtype(values.dtype, jnp.bool_) or jnp.issubdtype(values.dtype, jnp.integer):
        return values
    return _checks.floating_array(values, name)


def _scores(values: jax.typing.ArrayLike, name: str) -> tuple[jax.Array, _inputs.Ok]:
    """Uncertainty scores to rank: no NaN (it has no rank), while +-inf ranks last or first."""
    values = _vector(values, name)
    return values, _inputs.finite(values, name, allow_inf=True)


# Validation runs in Python; each metric is then one jitted program (one dispatch when called eagerly).


@jax.jit
def _risk_coverage(uncertainty: jax.Array, errors: jax.Array) -> tuple[jax.Array, jax.Array]:
    num_examples = uncertainty.shape[0]
    order = jnp.argsort(_stats.as_float(uncertainty), stable=True)
    kept = jnp.arange(1, num_examples + 1, dtype=jnp.float32)
    return kept / num_examples, jnp.cumsum(errors[order].astype(jnp.float32)) / kept


@functools.partial(jax.jit, static_argnums=1)
def _flag_top(uncertainty: jax.Array, count: int) -> jax.Array:
    uncertainty = _stats.as_float(uncertainty)
    scores = jnp.where(jnp.isnan(uncertainty), jnp.inf, uncertainty)
    order = jnp.argsort(-scores, stable=True)
    return jnp.zeros(uncertainty.shape[0], bool).at[order[:count]].set(True)


@jax.jit
def _auroc(scores_in: jax.Array, scores_out: jax.Array) -> jax.Array:
    scores_in, scores_out = _stats.as_float(scores_in), _stats.as_float(scores_out)
    ordered = jnp.sort(jnp.concatenate([scores_in, scores_out]))
    # Average 1-based rank of each OOD score among all: tied scores share the mean of their ranks.
    lower = jnp.searchsorted(ordered, scores_out, side="left")
    upper = jnp.searchsorted(ordered, scores_out, side="right")
    ranks_out = (lower + upper + 1) / 2.0
    num_in, num_out = scores_in.shape[0], scores_out.shape[0]
    u_statistic = ranks_out.sum() - num_out * (num_out + 1) / 2.0
    return (u_statistic / (num_in * num_out)).astype(jnp.float32)


def risk_coverage_curve(uncertainty: jax.typing.ArrayLike, errors: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Risk of the predictions kept when only the ``k`` most certain are answered, for ``k = 1..n``.

    Args:
      uncertainty: ``(n,)`` scores, higher means less certain (entropy, mutual information, variance...).
      errors: ``(n,)`` 0/1 mistakes (bool or int) or any per-example loss.

    Returns:
      ``(coverage, risk)``, each ``(n,)`` float32: ``coverage[k-1] = k/n`` and ``risk[k-1]`` the mean error of
      the ``k`` least uncertain examples (ties broken by index).

    Raises:
      TypeError: an input is neither bool, integer nor floating point.
      ValueError: the inputs are not 1-D, are empty, or differ in length; (when concrete) NaN in ``uncertainty``
        (it cannot be ranked; +-inf can), NaN or inf in ``errors``. Inside ``jit`` these values make both
        arrays NaN instead.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> coverage, risk = jaxdrop.uncertainty.risk_coverage_curve(jnp.array([0.1, 0.9, 0.5]),
      ...                                                           jnp.array([0, 1, 0]))
      >>> [round(c, 4) for c in coverage.tolist()], [round(r, 4) for r in risk.tolist()]
      ([0.3333, 0.6667, 1.0], [0.0, 0.0, 0.3333])
    """
    uncertainty, uncertainty_ok = _scores(uncertainty, "uncertainty")
    errors = _vector(errors, "errors")
    errors_ok = _inputs.finite(errors, "errors")
    _inputs.same_shape(uncertainty, errors, "uncertainty", "errors")
    return _inputs.guard(_risk_coverage(uncertainty, errors), uncertainty_ok, errors_ok)


def aurc(uncertainty: jax.typing.ArrayLike, errors: jax.typing.ArrayLike) -> jax.Array:
    """Area under the risk-coverage curve, ``mean_k risk[k]`` (Geifman et al. 2019); lower is better.

    Args and Raises: as `risk_coverage_curve()`. Returns a float32 scalar; inside ``jit``, NaN where
    `risk_coverage_curve()` would raise on a value.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> round(float(jaxdrop.uncertainty.aurc(jnp.array([0.1, 0.9, 0.5]), jnp.array([0, 1, 0]))), 4)
      0.1111
    """
    return risk_coverage_curve(uncertainty, errors)[1].mean()


def flag_for_review(uncertainty: jax.typing.ArrayLike, budget: float | int) -> jax.Array:
    """Which cases a human should review: the most uncertain ones, within a budget.

    Args:
      uncertainty: ``(n,)`` scores, higher means less certain. NaN counts as most uncertain (a broken
        prediction goes to a human).
      budget: a float fraction of cases in ``(0, 1]`` (``floor(budget * n)`` cases, never more than the
        budget), or an int count in ``[0, n]``. ``1`` (int) is one case; ``1.0`` (float) is every case.
        Static (it sets how many are flagged).

    Returns:
      ``(n,)`` bool mask, True for the flagged cases; ties are broken towards the lower index.

    Raises:
      TypeError: ``budget`` is neither a float nor an int.
      ValueError: ``budget`` is out of range, or ``uncertainty`` is not 1-D.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> scores = jnp.array([0.2, 0.9, 0.5, 0.9])
      >>> jaxdrop.uncertainty.flag_for_review(scores, budget=0.5).tolist()
      [False, True, False, True]
      >>> jaxdrop.uncertainty.flag_for_review(scores, budget=1).tolist()
      [False, True, False, False]
    """
    uncertainty = _vector(uncertainty, "uncertainty", allow_empty=True)
    num_examples = uncertainty.shape[0]
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(
            f"`budget` must be a float fraction in (0, 1] or an int count in [0, {num_examples}]; got {budget!r}."
        )
    if isinstance(budget, numbers.Integral):
        count = _checks.int_in_range(budget, "budget", 0, num_examples)
    else:
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"`budget` as a fraction must be in (0, 1]; got {budget}. Pass an int for a count.")
        count = int(budget * num_examples + 1e-9)  # floor, robust to 0.3 * 10 = 2.9999999999999996
    return _flag_top(uncertainty, count)


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
    scores_in, in_ok = _scores(scores_in, "scores_in")
    scores_out, out_ok = _scores(scores_out, "scores_out")
    return _inputs.guard(_auroc(scores_in, scores_out), in_ok, out_ok)
