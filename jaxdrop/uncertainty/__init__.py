"""Uncertainty metrics and decisions from Monte Carlo samples (sample axis first, classes last).

- Classification: :func:`predictive_entropy`, :func:`expected_entropy`, :func:`mutual_information` (BALD),
  :func:`variation_ratio`, :func:`margin`, and :func:`bald_top_k` acquisition for active learning.
- Regression (Gal & Ghahramani 2016): :func:`epistemic_variance`, :func:`aleatoric_variance`,
  :func:`predictive_variance`, :func:`gaussian_log_likelihood`, :func:`rmse`.
- Calibration: :func:`nll`, :func:`brier_score`, :func:`expected_calibration_error`,
  :func:`reliability_diagram` and :func:`plot_reliability_diagram` (matplotlib, optional).
- Decisions: :func:`risk_coverage_curve`, :func:`aurc`, :func:`flag_for_review`, :func:`ood_auroc`.

Every metric is a pure ``jax.numpy`` function, computed in at least float32 and in log space where it matters, and
can be ``jit``-ed (integer configuration such as ``num_bins``, ``k`` or ``budget`` is static). Value checks
(probabilities summing to 1, labels in range) run when the inputs are concrete. No Flax import.

This module only re-exports; each family lives in its own private module (``_classification``, ``_regression``,
``_calibration``, ``_selective``), and the checks of probabilities, labels and score vectors in ``_inputs``.
"""

from jaxdrop.uncertainty._calibration import (
    ReliabilityDiagram,
    brier_score,
    expected_calibration_error,
    nll,
    plot_reliability_diagram,
    reliability_diagram,
)
from jaxdrop.uncertainty._classification import (
    bald_top_k,
    expected_entropy,
    margin,
    mutual_information,
    predictive_entropy,
    variation_ratio,
)
from jaxdrop.uncertainty._regression import (
    aleatoric_variance,
    epistemic_variance,
    gaussian_log_likelihood,
    predictive_variance,
    rmse,
)
from jaxdrop.uncertainty._selective import aurc, flag_for_review, ood_auroc, risk_coverage_curve

__all__ = [
    "ReliabilityDiagram",
    "aleatoric_variance",
    "aurc",
    "bald_top_k",
    "brier_score",
    "epistemic_variance",
    "expected_calibration_error",
    "expected_entropy",
    "flag_for_review",
    "gaussian_log_likelihood",
    "margin",
    "mutual_information",
    "nll",
    "ood_auroc",
    "plot_reliability_diagram",
    "predictive_entropy",
    "predictive_variance",
    "reliability_diagram",
    "risk_coverage_curve",
    "rmse",
    "variation_ratio",
]
