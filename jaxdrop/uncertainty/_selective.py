"""Decisions from uncertainty: selective prediction (risk-coverage and its summaries) and review flags.

Risk-coverage curves and their area (AURC) follow Geifman & El-Yaniv 2017 ("Selective Classification for Deep
Neural Networks", NeurIPS) and Geifman et al. 2019 ("Bias-Reduced Uncertainty Estimation for Deep Neural
Classifiers", ICLR); the generalized risk and its area (AUGRC) follow Traub et al. 2024 ("Overcoming Common Flaws in
the Evaluation of Selective Classification Systems", NeurIPS). Examples are always ordered by uncertainty with ties
broken by index, so results are reproducible. Out-of-distribution detection is in ``_ood``.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs

# Validation runs in Python; each metric is then one jitted program (one dispatch when called eagerly).


@jax.jit
def _risk_coverage(uncertainty: jax.Array, errors: jax.Array) -> tuple[jax.Array, jax.Array]:
    num_examples = uncertainty.shape[0]
    order = jnp.argsort(_stats.as_float(uncertainty), stable=True)
    kept = jnp.arange(1, num_examples + 1, dtype=jnp.float32)
    return kept / num_examples, jnp.cumsum(errors[order].astype(jnp.float32)) / kept


@jax.jit
def _aurc(uncertainty: jax.Array, errors: jax.Array) -> jax.Array:
    return _risk_coverage(uncertainty, errors)[1].mean()


@jax.jit
def _eaurc(uncertainty: jax.Array, errors: jax.Array) -> jax.Array:
    # The oracle ranks by the errors themselves: every loss-free example first, then the losses in increasing size.
    # One difference of cumulative sums per coverage, so a perfect ranking gives exactly 0.
    kept = jnp.arange(1, errors.shape[0] + 1, dtype=jnp.float32)
    errors = errors.astype(jnp.float32)
    model = jnp.cumsum(errors[jnp.argsort(_stats.as_float(uncertainty), stable=True)])
    return ((model - jnp.cumsum(jnp.sort(errors))) / kept).mean()


@jax.jit
def _augrc(uncertainty: jax.Array, errors: jax.Array) -> jax.Array:
    coverage, risk = _risk_coverage(uncertainty, errors)
    return (coverage * risk).mean()  # generalized risk: errors among the kept over all n, not over the kept


@jax.jit
def _risk_at(uncertainty: jax.Array, errors: jax.Array, count: jax.Array) -> jax.Array:
    return _risk_coverage(uncertainty, errors)[1][count - 1]


@jax.jit
def _coverage_at(uncertainty: jax.Array, errors: jax.Array, risk: float) -> jax.Array:
    coverage, risks = _risk_coverage(uncertainty, errors)
    # A tolerance of a few float32 ulps: a risk of exactly 2/10 is not lost to rounding in cumsum / k.
    return jnp.where(risks <= risk * (1 + 1e-6) + 1e-7, coverage, 0.0).max()


@functools.partial(jax.jit, static_argnums=1)
def _flag_top(uncertainty: jax.Array, count: int) -> jax.Array:
    uncertainty = _stats.as_float(uncertainty)
    scores = jnp.where(jnp.isnan(uncertainty), jnp.inf, uncertainty)
    order = jnp.argsort(-scores, stable=True)
    return jnp.zeros(uncertainty.shape[0], bool).at[order[:count]].set(True)


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
    uncertainty, errors, ok = _checked(uncertainty, errors)
    return _inputs.guard(_risk_coverage(uncertainty, errors), ok)


def _checked(
    uncertainty: jax.typing.ArrayLike, errors: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array, _inputs.Ok]:
    """Rankable ``uncertainty`` and finite ``errors``, 1-D, non-empty, of one length; their traced ``ok``."""
    uncertainty, uncertainty_ok = _inputs.scores(uncertainty, "uncertainty")
    errors = _inputs.numeric_vector(errors, "errors")
    errors_ok = _inputs.finite(errors, "errors")
    _inputs.same_shape(uncertainty, errors, "uncertainty", "errors")
    return uncertainty, errors, _inputs.all_ok(uncertainty_ok, errors_ok)


def aurc(uncertainty: jax.typing.ArrayLike, errors: jax.typing.ArrayLike) -> jax.Array:
    """Area under the risk-coverage curve, ``mean_k risk[k]`` (Geifman et al. 2019); lower is better.

    Args and Raises: as `risk_coverage_curve()`. Returns a float32 scalar; inside ``jit``, NaN where
    `risk_coverage_curve()` would raise on a value.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> round(float(jaxdrop.uncertainty.aurc(jnp.array([0.1, 0.9, 0.5]), jnp.array([0, 1, 0]))), 4)
      0.1111
    """
    uncertainty, errors, ok = _checked(uncertainty, errors)
    return _inputs.guard(_aurc(uncertainty, errors), ok)


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
    uncertainty = _inputs.numeric_vector(uncertainty, "uncertainty", allow_empty=True)
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


def eaurc(uncertainty: jax.typing.ArrayLike, errors: jax.typing.ArrayLike) -> jax.Array:
    """Excess AURC: `aurc()` minus the AURC of the oracle ranking (Geifman et al. 2019, "Bias-Reduced Uncertainty
    Estimation for Deep Neural Classifiers", ICLR); 0 for a perfect ranking, lower is better.

    ``E-AURC = AURC(uncertainty) - AURC(errors)``: the oracle answers the examples in increasing order of their
    error. It removes the part of AURC that comes from the error rate alone, so models of different accuracy can be
    compared. For 0/1 errors at rate ``r`` the oracle's AURC tends to the paper's ``r + (1 - r) log(1 - r)`` as
    ``n`` grows; this is its exact finite-``n`` value, as torch-uncertainty computes it.

    Args and Raises: as `risk_coverage_curve()`.

    Returns:
      A float32 scalar ``>= 0`` (up to float rounding). Inside ``jit``, NaN where `risk_coverage_curve()` would
      raise on a value.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> errors = jnp.array([0, 1, 0])
      >>> round(float(jaxdrop.uncertainty.eaurc(jnp.array([0.9, 0.1, 0.5]), errors)), 4)  # worst ranking
      0.5
      >>> float(jaxdrop.uncertainty.eaurc(jnp.array([0.1, 0.9, 0.5]), errors))  # perfect ranking
      0.0
    """
    uncertainty, errors, ok = _checked(uncertainty, errors)
    return _inputs.guard(_eaurc(uncertainty, errors), ok)


def augrc(uncertainty: jax.typing.ArrayLike, errors: jax.typing.ArrayLike) -> jax.Array:
    """Area under the generalized risk-coverage curve (Traub et al. 2024, "Overcoming Common Flaws in the
    Evaluation of Selective Classification Systems", NeurIPS); lower is better.

    The generalized risk at coverage ``k/n`` is the share of *all* ``n`` examples that are kept and wrong,
    ``(1/n) sum_{i <= k} e_(i)`` (the joint probability of acceptance and failure), instead of the selective risk
    ``(1/k) sum_{i <= k} e_(i)`` of `aurc()`, so the few most certain examples do not dominate the area:
    ``AUGRC = mean_k (k/n) risk[k]``. For 0/1 errors it is the mean over errors of their coverage, so a random
    ranking scores about ``r / 2`` and the oracle about 0.

    Args and Raises: as `risk_coverage_curve()`.

    Returns:
      A float32 scalar in ``[0, mean(errors)]``. Inside ``jit``, NaN where `risk_coverage_curve()` would raise on
      a value.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> round(float(jaxdrop.uncertainty.augrc(jnp.array([0.1, 0.9, 0.5]), jnp.array([0, 1, 0]))), 4)  # (1/3)(1/3)
      0.1111
    """
    uncertainty, errors, ok = _checked(uncertainty, errors)
    return _inputs.guard(_augrc(uncertainty, errors), ok)


def risk_at_coverage(uncertainty: jax.typing.ArrayLike, errors: jax.typing.ArrayLike, coverage: float) -> jax.Array:
    """Selective risk when the ``ceil(coverage * n)`` most certain examples are answered (Geifman & El-Yaniv 2017).

    Reads the risk-coverage curve of `risk_coverage_curve()` at the smallest ``k`` with ``k / n >= coverage``
    (torch-uncertainty's ``RiskAtxCov``): at least the asked share is answered.

    Args:
      uncertainty, errors: as `risk_coverage_curve()`.
      coverage: the share of examples to answer, a static float in ``(0, 1]``; 1 gives the mean error.

    Returns:
      A float32 scalar: the mean error of the answered examples. Inside ``jit``, NaN where
      `risk_coverage_curve()` would raise on a value.

    Raises:
      TypeError, ValueError: as `risk_coverage_curve()`; ``coverage`` traced or outside ``(0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> uncertainty, errors = jnp.array([0.1, 0.9, 0.5, 0.3]), jnp.array([0, 1, 1, 0])
      >>> float(jaxdrop.uncertainty.risk_at_coverage(uncertainty, errors, 0.5))  # the two most certain: no error
      0.0
      >>> round(float(jaxdrop.uncertainty.risk_at_coverage(uncertainty, errors, 0.6)), 4)  # three: one error
      0.3333
    """
    coverage = _inputs.level(coverage, "coverage", include_one=True)
    uncertainty, errors, ok = _checked(uncertainty, errors)
    return _inputs.guard(_risk_at(uncertainty, errors, jnp.int32(_inputs.count_at(coverage, uncertainty.shape[0]))), ok)


def coverage_at_risk(uncertainty: jax.typing.ArrayLike, errors: jax.typing.ArrayLike, risk: float) -> jax.Array:
    """The largest coverage whose selective risk is at most ``risk`` (Geifman & El-Yaniv 2017): how much can be
    answered automatically at a given error budget.

    ``max {k/n : risk[k] <= risk}`` on the curve of `risk_coverage_curve()` (the risk need not fall monotonically,
    so a larger coverage can qualify after a smaller one fails); 0 when even the most certain example exceeds the
    budget (answer nothing).

    Args:
      uncertainty, errors: as `risk_coverage_curve()`.
      risk: the highest acceptable mean error, a static finite float ``>= 0`` (in ``[0, 1]`` for 0/1 errors).

    Returns:
      A float32 scalar in ``{0} ∪ [1/n, 1]``. Inside ``jit``, NaN where `risk_coverage_curve()` would raise on a
      value.

    Raises:
      TypeError, ValueError: as `risk_coverage_curve()`; ``risk`` traced, negative, NaN or infinite.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> uncertainty, errors = jnp.array([0.1, 0.9, 0.5, 0.3]), jnp.array([0, 1, 1, 0])
      >>> float(jaxdrop.uncertainty.coverage_at_risk(uncertainty, errors, 0.34))  # 3 answered, 1 wrong
      0.75
    """
    if not _checks.is_static(risk):
        raise TypeError("`risk` must be a static Python float >= 0; got a traced value (mark it static).")
    risk = float(_checks.non_negative(risk, "risk"))
    uncertainty, errors, ok = _checked(uncertainty, errors)
    return _inputs.guard(_coverage_at(uncertainty, errors, risk), ok)
