"""Uncertainty metrics and decisions from Monte Carlo samples (sample axis first, classes last).

- Classification: `predictive_entropy()`, `expected_entropy()`, `mutual_information()` (BALD),
  `variation_ratio()`, `margin()`, and `bald_top_k()` acquisition for active learning.
- Regression (Gal & Ghahramani 2016): `epistemic_variance()`, `aleatoric_variance()`,
  `predictive_variance()`, `gaussian_log_likelihood()`, `rmse()`.
- Calibration: `nll()`, `brier_score()`, `expected_calibration_error()`,
  `reliability_diagram()` and `plot_reliability_diagram()` (matplotlib, optional).
- Decisions: `risk_coverage_curve()`, `aurc()`, `flag_for_review()`, `ood_auroc()`.

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
