"""Uncertainty metrics and decisions from Monte Carlo samples (sample axis first, classes last).

- Classification: `predictive_entropy()`, `expected_entropy()`, `mutual_information()` (BALD),
  `variation_ratio()`, `margin()`, and `bald_top_k()` acquisition for active learning.
- Regression (Gal & Ghahramani 2016): `epistemic_variance()`, `aleatoric_variance()`,
  `predictive_variance()`, `gaussian_log_likelihood()`, `rmse()`.
- Calibration: `nll()`, `brier_score()`, `expected_calibration_error()`,
  `reliability_diagram()` and `plot_reliability_diagram()` (matplotlib, optional).
- Decisions: `risk_coverage_curve()`, `aurc()`, `flag_for_review()`, `ood_auroc()`.

Every metric is a pure ``jax.numpy`` function, computed in at least float32 and in log space where it matters, and
can be ``jit``-ed (integer configuration such as ``num_bins``, ``k``, ``budget`` or ``sample_axis`` is static). No
Flax import.

Meaningless input never gives a plausible number:

- Shapes are checked always, inside ``jit`` too: zero samples, zero classes, and no example for a metric that
  summarises examples (``nll``, ``brier_score``, ``expected_calibration_error``, ``rmse``, ``aurc``, ``ood_auroc``,
  ...) raise ``ValueError``. A per-example metric of an empty batch returns an empty array.
- Samples come first: ``(T, *batch, num_classes)`` or ``(T, *batch)``. An input with no batch axis,
  ``(T, num_classes)`` or ``(T,)``, reads just as well as one prediction per example without samples, so it needs
  ``sample_axis=0``; ``sample_axis`` also names samples that are not first.
- Values are checked when concrete: probabilities (in [0, 1], rows summing to 1, no NaN/inf), labels (integers in
  range), regression arrays (finite), scores (no NaN; +-inf ranks), positive scalars (``tau``, ``target_std``).
  Inside ``jit`` a traced value cannot raise: an invalid one turns every floating-point output NaN.
  ``flag_for_review`` sends NaN scores to review; ``bald_top_k`` returns indices, which cannot be NaN.

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
