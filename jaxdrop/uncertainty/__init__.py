"""Uncertainty metrics and decisions from Monte Carlo samples (sample axis first, classes last).

- Classification: `predictive_entropy()`, `expected_entropy()`, `mutual_information()` (BALD),
  `variation_ratio()`, `margin()`, `sample_disagreement()`, and `bald_top_k()` acquisition for active learning.
- Regression (Gal & Ghahramani 2016): `epistemic_variance()`, `aleatoric_variance()`,
  `predictive_variance()`, `gaussian_log_likelihood()`, `rmse()`; a predictive distribution (Gaussian mean/std
  or samples) is scored by `picp()` and `interval_width()` (prediction intervals), `ence()` and `uce()`
  (calibration), `crps_gaussian()` and `crps_samples()` (a proper score).
- Calibration: `nll()`, `brier_score()`, `expected_calibration_error()`, `max_calibration_error()`,
  `adaptive_calibration_error()` (equal mass), `classwise_calibration_error()`, `reliability_diagram()` and
  `plot_reliability_diagram()` (matplotlib, optional).
- Selective prediction: `risk_coverage_curve()`, `aurc()`, `eaurc()`, `augrc()`, `risk_at_coverage()`,
  `coverage_at_risk()`, `flag_for_review()`.
- Out-of-distribution detection: `ood_auroc()`, `ood_aupr()` (in or out positive), `fpr_at_tpr()` (FPR95), and
  the scores `energy_score()` and `max_logit_score()` (higher means more uncertain, like every score here).
- Post-hoc calibration (Guo et al. 2017), fitted on held-out data: `fit_temperature()`, `fit_vector_scaling()`
  and `calibrated_probs()` (also for MC samples of logits); for regression `fit_tau()` and `fit_variance_scale()`.
- Sequences (tokens last): `aggregate_tokens()` (mean / max / sum of per-token scores such as MI) and
  `sequence_log_likelihood()` (under the MC mixture, ``logsumexp`` over samples).
- Conformal prediction (split conformal, coverage >= 1 - alpha under exchangeability): `conformity_scores()`
  (LAC, APS, RAPS), `conformal_quantile()`, `conformal_sets()`, `conformal_intervals()` (normalised by the MC
  predictive std), `cqr_intervals()`, and `set_coverage()`, `mean_set_size()`.

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
``_calibration``, ``_selective``, ``_ood``, ``_posthoc``, ``_conformal``), and the checks of probabilities, labels
and score vectors in ``_inputs``.
"""

from jaxdrop.uncertainty._calibration import (
    ReliabilityDiagram,
    adaptive_calibration_error,
    brier_score,
    classwise_calibration_error,
    expected_calibration_error,
    max_calibration_error,
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
    sample_disagreement,
    variation_ratio,
)
from jaxdrop.uncertainty._conformal import (
    conformal_intervals,
    conformal_quantile,
    conformal_sets,
    conformity_scores,
    cqr_intervals,
    mean_set_size,
    set_coverage,
)
from jaxdrop.uncertainty._ood import energy_score, fpr_at_tpr, max_logit_score, ood_aupr, ood_auroc
from jaxdrop.uncertainty._posthoc import (
    VectorScaling,
    calibrated_probs,
    fit_tau,
    fit_temperature,
    fit_variance_scale,
    fit_vector_scaling,
)
from jaxdrop.uncertainty._regression import (
    aleatoric_variance,
    crps_gaussian,
    crps_samples,
    ence,
    epistemic_variance,
    gaussian_log_likelihood,
    interval_width,
    picp,
    predictive_variance,
    rmse,
    uce,
)
from jaxdrop.uncertainty._selective import (
    augrc,
    aurc,
    coverage_at_risk,
    eaurc,
    flag_for_review,
    risk_at_coverage,
    risk_coverage_curve,
)
from jaxdrop.uncertainty._sequence import aggregate_tokens, sequence_log_likelihood

__all__ = [
    "ReliabilityDiagram",
    "VectorScaling",
    "adaptive_calibration_error",
    "aggregate_tokens",
    "aleatoric_variance",
    "augrc",
    "aurc",
    "bald_top_k",
    "brier_score",
    "calibrated_probs",
    "classwise_calibration_error",
    "conformal_intervals",
    "conformal_quantile",
    "conformal_sets",
    "conformity_scores",
    "coverage_at_risk",
    "cqr_intervals",
    "crps_gaussian",
    "crps_samples",
    "eaurc",
    "ence",
    "energy_score",
    "epistemic_variance",
    "expected_calibration_error",
    "expected_entropy",
    "fit_tau",
    "fit_temperature",
    "fit_variance_scale",
    "fit_vector_scaling",
    "flag_for_review",
    "fpr_at_tpr",
    "gaussian_log_likelihood",
    "interval_width",
    "margin",
    "max_calibration_error",
    "max_logit_score",
    "mean_set_size",
    "mutual_information",
    "nll",
    "ood_aupr",
    "ood_auroc",
    "picp",
    "plot_reliability_diagram",
    "predictive_entropy",
    "predictive_variance",
    "reliability_diagram",
    "risk_at_coverage",
    "risk_coverage_curve",
    "rmse",
    "sample_disagreement",
    "sequence_log_likelihood",
    "set_coverage",
    "uce",
    "variation_ratio",
]
