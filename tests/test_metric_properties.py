"""Every public metric of ``jaxdrop.uncertainty`` either raises ``TypeError``/``ValueError`` or returns finite values,
on arbitrary inputs: empty arrays, zero samples, zero classes, NaN and inf, probabilities that are negative or do
not sum to 1, labels out of range or of the wrong dtype, misshapen arrays, non-positive scalars, bad configuration.

Finite is not enough: a NaN score counted as a tie gives a finite AUROC of 0.5, and an empty set an ECE of 0.0. So
an input holding NaN must raise (but in `flag_for_review`, which sends it to review), and an empty input must
raise or give an empty output, never a number computed from nothing. Inside ``jit`` the same call raises (shapes and
dtypes are static) or, where the eager call rejected a value, turns every floating-point output NaN: never a
plausible number, and never a different one.

``BUILDERS`` maps each name of ``uncertainty.__all__`` to how its valid arguments are built; a new public name
fails `test_every_public_name_is_tested` until it has an entry (or is listed in ``NOT_METRICS`` with the reason), so
no metric can skip these properties. Each metric is tested valid and with each kind of defect: a zero size
(samples, examples or classes), a NaN/inf/negative/unnormalised value, a wrong dtype, a missing or extra axis, or bad
configuration (each builder says what breaks its own configuration).
Values stay within ``|x| <= 1e4`` apart from the NaN/inf drawn on purpose: float32 overflow of huge inputs is
another matter. ``JAXDROP_PROPERTY_EXAMPLES`` sets the examples per metric and defect (default 3; one fewer under
``jit``), e.g. 50 for a thorough run.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxdrop import uncertainty as unc

EXAMPLES = int(os.environ.get("JAXDROP_PROPERTY_EXAMPLES", "3"))
EAGER_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
JIT_SETTINGS = settings(max_examples=max(1, EXAMPLES - 1), deadline=None, derandomize=True)

# Every metric meets every kind of defect (a pytest parameter, so none is left to chance); hypothesis draws the rest.
DEFECTS = ["none", "zero-T", "zero-N", "zero-C", "value", "dtype", "shape", "config"]
CORRUPTIONS = ["nan", "inf", "-inf", "negative", "unnormalised"]
BAD_POSITIVE = st.sampled_from([0.0, -1.0, math.nan, math.inf])
GOOD_POSITIVE = st.sampled_from([2.0, 0.5, 1e-3])

Arrays = dict[str, object]
Built = tuple[Arrays, dict, st.SearchStrategy | None]  # arrays (traced under jit), static, overrides that break it


# --- valid values --------------------------------------------------------------------------------------------------


def _rng(draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _probs(draw, shape: tuple[int, ...]) -> jax.Array:
    """Softmax rows, flat to one-hot-like; float32 mostly, bfloat16 and float16 too."""
    logits = _rng(draw).normal(size=shape) * draw(st.sampled_from([0.1, 3.0, 100.0]))
    probs = np.exp(logits - logits.max(-1, keepdims=True)) if logits.size else logits
    probs = probs / probs.sum(-1, keepdims=True) if probs.size else probs
    return jnp.asarray(probs, draw(st.sampled_from([jnp.float32, jnp.float32, jnp.bfloat16, jnp.float16])))


def _reals(draw, shape: tuple[int, ...], scale: float | None = None) -> jax.Array:
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3])) if scale is None else scale
    return jnp.asarray(_rng(draw).normal(size=shape) * scale, jnp.float32)


def _labels(draw, shape: tuple[int, ...], num_classes: int) -> jax.Array:
    return jnp.asarray(_rng(draw).integers(0, max(num_classes, 1), size=shape), jnp.int32)


def _scores(draw, size: int) -> jax.Array:
    rng = _rng(draw)
    kind = draw(st.sampled_from(["float", "float", "ties", "int", "bool"]))
    if kind == "int":
        return jnp.asarray(rng.integers(0, 3, size), jnp.int32)
    if kind == "bool":
        return jnp.asarray(rng.integers(0, 2, size), bool)
    return jnp.asarray(rng.integers(0, 3, size) if kind == "ties" else rng.normal(size=size), jnp.float32)


# --- one builder per public metric: valid arguments for T samples, N examples, C classes ----------------------------


def _probs_only(draw, T, N, C) -> Built:
    batch = draw(st.sampled_from([(N,), (N,), (), (N, 2)]))
    return {"probs": _probs(draw, (*batch, C))}, {}, None


def _sample_probs(draw, T, N, C) -> Built:
    layout = draw(st.sampled_from(["first", "first", "batch_first", "one_example"]))
    shape, sample_axis = {"first": ((T, N, C), None), "batch_first": ((N, T, C), 1), "one_example": ((T, C), 0)}[layout]
    bad = st.sampled_from([{"sample_axis": -1}, {"sample_axis": 3}, {"sample_axis": 1.5}, {"sample_axis": None}])
    return {"sample_probs": _probs(draw, shape)}, {"sample_axis": sample_axis}, bad


def _bald(draw, T, N, C) -> Built:
    arrays, static, _ = _sample_probs(draw, T, N, C)
    if arrays["sample_probs"].ndim == 2:
        arrays, static = {"sample_probs": arrays["sample_probs"][:, None]}, {"sample_axis": None}
    static["k"] = draw(st.integers(1, max(N, 1)))
    bad = st.sampled_from([{"k": 0}, {"k": -1}, {"k": N + 1}, {"sample_axis": -1}])
    return arrays, static, bad


def _probs_labels(draw, T, N, C) -> Built:
    batch = draw(st.sampled_from([(N,), (N,), (N, 2)]))
    probs, labels = _probs(draw, (*batch, C)), _labels(draw, batch, C)
    bad = st.sampled_from([{"labels": labels.at[..., :1].set(C)}, {"labels": labels.at[..., :1].set(-1)}])
    return {"probs": probs, "labels": labels}, {}, bad


def _binned(draw, T, N, C) -> Built:
    probs, labels = _probs(draw, (N, C)), _labels(draw, (N,), C)
    static = {"num_bins": draw(st.sampled_from([2, 15, 1])), "binning": draw(st.sampled_from(["uniform", "quantile"]))}
    bad = st.sampled_from(
        [
            {"num_bins": 0},
            {"num_bins": -1},
            {"binning": "kde"},
            {"labels": labels.at[:1].set(C)},
            {"probs": probs[None]},
        ]
    )
    return {"probs": probs, "labels": labels}, static, bad


def _samples(draw, T, N) -> tuple[jax.Array, int | None]:
    layout = draw(st.sampled_from(["first", "first", "first", "batch_first", "one_prediction"]))
    if layout == "batch_first":
        return _reals(draw, (N, T)), 1
    if layout == "one_prediction":
        return _reals(draw, (T,)), 0
    return _reals(draw, draw(st.sampled_from([(T, N), (T, N, 2)]))), None


BAD_SAMPLE_AXIS = [{"sample_axis": 3}, {"sample_axis": 1.5}, {"sample_axis": None}]


def _epistemic(draw, T, N, C) -> Built:
    samples, sample_axis = _samples(draw, T, N)
    return {"samples": samples}, {"sample_axis": sample_axis}, st.sampled_from(BAD_SAMPLE_AXIS)


def _noise(draw, samples: jax.Array) -> tuple[Arrays, st.SearchStrategy]:
    """One noise model: a precision ``tau``, or per-sample log-variances of the samples' layout (|x| <~ 15)."""
    if draw(st.booleans()):
        return {"tau": draw(GOOD_POSITIVE)}, BAD_POSITIVE.map(lambda tau: {"tau": tau})
    log_variance = _reals(draw, samples.shape, scale=draw(st.sampled_from([0.1, 5.0])))
    bad = st.sampled_from([{"tau": 1.0}, {"log_variance": log_variance[..., :1]}, {"log_variance": log_variance[None]}])
    return {"log_variance": log_variance}, bad


def _aleatoric(draw, T, N, C) -> Built:
    samples, sample_axis = _samples(draw, T, N)
    noise, bad = _noise(draw, samples)
    return noise, ({"sample_axis": sample_axis} if "log_variance" in noise else {}), bad


def _predictive_variance(draw, T, N, C) -> Built:
    samples, sample_axis = _samples(draw, T, N)
    noise, bad = _noise(draw, samples)
    return {"samples": samples, **noise}, {"sample_axis": sample_axis}, st.one_of(bad, st.sampled_from(BAD_SAMPLE_AXIS))


def _log_likelihood(draw, T, N, C) -> Built:
    arrays, static, bad_noise = _predictive_variance(draw, T, N, C)
    samples = arrays["samples"]
    one_sample = samples.shape[1:] if static["sample_axis"] in (None, 0) else samples.shape[:1]
    arrays["targets"] = _reals(draw, one_sample)
    arrays["target_mean"] = draw(st.sampled_from([0.0, -3.0, 1e3]))
    arrays["target_std"] = draw(GOOD_POSITIVE)
    bad = st.one_of(
        bad_noise,
        BAD_POSITIVE.map(lambda std: {"target_std": std}),
        st.sampled_from([{"target_mean": math.nan}, {"target_mean": math.inf}, {"target_mean": jnp.zeros(2)}]),
        st.just({"targets": arrays["targets"][..., None]}),
    )
    return arrays, static, bad


def _rmse(draw, T, N, C) -> Built:
    shape = draw(st.sampled_from([(N,), (N, 2), ()]))
    targets = _reals(draw, shape)
    return {"predictions": _reals(draw, shape), "targets": targets}, {}, st.just({"targets": targets[None]})


def _ranked(draw, T, N, C) -> Built:
    errors = draw(st.sampled_from(["bool", "loss"]))
    errors = _scores(draw, N) > 0.5 if errors == "bool" else jnp.abs(_reals(draw, (N,), 1.0))
    return {"uncertainty": _scores(draw, N), "errors": errors}, {}, st.just({"errors": errors[:-1]})


def _flag(draw, T, N, C) -> Built:
    budget = draw(st.one_of(st.integers(0, N), st.sampled_from([0.3, 1.0, 0.5])))
    bad = st.sampled_from([{"budget": N + 1}, {"budget": -1}, {"budget": 0.0}, {"budget": 1.5}, {"budget": "10%"}])
    return {"uncertainty": _scores(draw, N)}, {"budget": budget}, bad


def _ood(draw, T, N, C) -> Built:
    scores_in = _scores(draw, N)
    return {"scores_in": scores_in, "scores_out": _scores(draw, T)}, {}, st.just({"scores_in": scores_in[:, None]})


def _ood_levels(draw, T, N, C) -> Built:
    arrays, _, bad = _ood(draw, T, N, C)
    static = {"tpr": draw(st.sampled_from([0.95, 0.5, 1.0]))}
    return arrays, static, st.one_of(bad, st.sampled_from([{"tpr": 0.0}, {"tpr": 1.5}, {"tpr": math.nan}]))


def _ood_positive(draw, T, N, C) -> Built:
    arrays, _, bad = _ood(draw, T, N, C)
    static = {"positive": draw(st.sampled_from(["in", "out"]))}
    return arrays, static, st.one_of(bad, st.just({"positive": "both"}))


def _logits(draw, T, N, C) -> Built:
    batch = draw(st.sampled_from([(N,), (N,), (), (N, 2)]))
    logits = _reals(draw, (*batch, C), scale=draw(st.sampled_from([0.1, 10.0])))
    return {"logits": logits}, {}, st.just({"logits": logits[..., 0]}) if batch == () else None


def _energy(draw, T, N, C) -> Built:
    arrays, _, _ = _logits(draw, T, N, C)
    arrays["temperature"] = draw(GOOD_POSITIVE)
    return arrays, {}, BAD_POSITIVE.map(lambda temperature: {"temperature": temperature})


def _ranked_at(draw, T, N, C) -> Built:
    arrays, _, bad = _ranked(draw, T, N, C)
    static = {"coverage": draw(st.sampled_from([0.5, 0.95, 1.0]))}
    return arrays, static, st.one_of(bad, st.sampled_from([{"coverage": 0.0}, {"coverage": 1.5}]))


def _ranked_risk(draw, T, N, C) -> Built:
    arrays, _, bad = _ranked(draw, T, N, C)
    static = {"risk": draw(st.sampled_from([0.0, 0.1, 0.5, 2.0]))}
    return arrays, static, st.one_of(bad, st.sampled_from([{"risk": -0.1}, {"risk": math.nan}, {"risk": math.inf}]))


def _binned_top(draw, T, N, C) -> Built:
    arrays, static, _ = _binned(draw, T, N, C)
    del static["binning"]
    labels, probs = arrays["labels"], arrays["probs"]
    bad = st.sampled_from([{"num_bins": 0}, {"labels": labels.at[:1].set(C)}, {"probs": probs[None]}])
    return arrays, static, bad


def _gaussian(draw, T, N, C) -> Built:
    shape = draw(st.sampled_from([(N,), (N, 2)]))
    std = jnp.abs(_reals(draw, shape)) + 1e-3
    arrays = {"mean": _reals(draw, shape), "std": std, "targets": _reals(draw, shape)}
    return arrays, {}, st.sampled_from([{"std": -std}, {"targets": arrays["targets"][None]}, {"std": std[..., :1]}])


def _binned_gaussian(draw, T, N, C) -> Built:
    arrays, _, bad = _gaussian(draw, T, N, C)
    return arrays, {"num_bins": draw(st.sampled_from([1, 2, 15]))}, st.one_of(bad, st.just({"num_bins": 0}))


def _interval(draw, T, N, C, *, targets: bool = True) -> Built:
    static = {"coverage": draw(st.sampled_from([0.5, 0.9, 0.99]))}
    bad_coverage = st.sampled_from([{"coverage": 0.0}, {"coverage": 1.0}, {"coverage": -0.5}])
    if draw(st.booleans()):
        arrays, _, bad = _gaussian(draw, T, N, C)
        if not targets:
            del arrays["targets"]
            bad = st.just({"std": -arrays["std"]})
        return arrays, static, st.one_of(bad_coverage, bad, st.just({"samples": arrays["mean"][None]}))
    samples, static["sample_axis"] = _samples(draw, T, N)
    arrays = {"samples": samples}
    if targets:
        one = samples.shape[1:] if static["sample_axis"] in (None, 0) else samples.shape[:1]
        arrays["targets"] = _reals(draw, one)
    return arrays, static, st.one_of(bad_coverage, st.sampled_from(BAD_SAMPLE_AXIS))


def _crps_samples(draw, T, N, C) -> Built:
    samples, sample_axis = _samples(draw, T, N)
    targets = _reals(draw, samples.shape[1:] if sample_axis in (None, 0) else samples.shape[:1])
    bad = st.one_of(st.sampled_from(BAD_SAMPLE_AXIS), st.just({"targets": targets[..., None]}))
    return {"samples": samples, "targets": targets}, {"sample_axis": sample_axis}, bad


# --- post-hoc calibration and conformal prediction -----------------------------------------------------------------


def _fit_logits(draw, T, N, C) -> Built:
    shape = draw(st.sampled_from([(N, C), (N, C), (T, N, C)]))
    logits, labels = _reals(draw, shape, scale=draw(st.sampled_from([0.1, 3.0]))), _labels(draw, (N,), C)
    bad = st.sampled_from(
        [{"labels": labels.at[:1].set(C)}, {"labels": labels.at[:1].set(-1)}, {"logits": logits[..., :1]}]
    )
    return {"logits": logits, "labels": labels}, {}, bad


def _calibrated(draw, T, N, C) -> Built:
    mc_samples = draw(st.booleans())
    batch = draw(st.sampled_from([(N,), (N,), (), (N, 2)]))
    logits = _reals(draw, ((T,) if mc_samples else ()) + (*batch, C), scale=draw(st.sampled_from([0.1, 10.0])))
    if draw(st.booleans()):
        calibration, bad = draw(GOOD_POSITIVE), BAD_POSITIVE.map(lambda temperature: {"calibration": temperature})
    else:
        scale, bias = jnp.abs(_reals(draw, (C,), 1.0)) + 0.1, _reals(draw, (C,), 1.0)
        calibration = unc.VectorScaling(scale=scale, bias=bias)
        bad = st.sampled_from(
            [
                {"calibration": unc.VectorScaling(scale=scale[:-1], bias=bias[:-1])},
                {"calibration": unc.VectorScaling(scale=scale.at[:1].set(jnp.nan), bias=bias)},
                {"calibration": "2.0"},
            ]
        )
    return {"logits": logits, "calibration": calibration}, {"mc_samples": mc_samples}, bad


def _fit_tau(draw, T, N, C) -> Built:
    arrays, static, _ = _log_likelihood(draw, T, N, C)
    arrays = {key: arrays[key] for key in ("samples", "targets", "target_mean", "target_std")}
    bad = st.one_of(
        BAD_POSITIVE.map(lambda std: {"target_std": std}),
        st.sampled_from([{"target_mean": math.nan}, {"targets": arrays["targets"][..., None]}, *BAD_SAMPLE_AXIS]),
    )
    return arrays, static, bad


def _variance_scale(draw, T, N, C) -> Built:
    arrays, _, _ = _gaussian(draw, T, N, C)
    variance = jnp.square(arrays.pop("std"))
    bad = st.sampled_from([{"variance": -variance}, {"variance": 0.0 * variance}, {"targets": arrays["targets"][None]}])
    return {**arrays, "variance": variance}, {}, bad


def _alpha(draw, N) -> float:
    """A miscoverage level that ``N`` calibration points allow: at least ``ceil((1 - alpha) / alpha)`` of them."""
    return draw(st.sampled_from([a for a in (0.1, 0.2, 0.25, 0.5, 0.9) if math.ceil((1 - a) / a - 1e-9) <= max(N, 1)]))


BAD_ALPHA = [{"alpha": 0.0}, {"alpha": 1.0}, {"alpha": math.nan}, {"alpha": 0.01}, {"alpha": "0.1"}]


def _quantile(draw, T, N, C) -> Built:
    scores = _reals(draw, (N,))
    return {"scores": scores}, {"alpha": _alpha(draw, N)}, st.sampled_from([*BAD_ALPHA, {"scores": scores[:, None]}])


def _key(draw) -> jax.Array | None:
    return draw(st.sampled_from([None, jax.random.PRNGKey(draw(st.integers(0, 2**16)))]))


def _score_options(draw) -> dict:
    return {"score": draw(st.sampled_from(["lac", "aps", "raps"])), "k_reg": draw(st.sampled_from([0, 1, 5]))}


BAD_SCORE_OPTIONS = [{"score": "thr"}, {"k_reg": -1}, {"k_reg": 1.5}, {"penalty": -0.1}, {"penalty": math.nan}]


def _conformity(draw, T, N, C) -> Built:
    batch = draw(st.sampled_from([(N,), (N,), (), (N, 2)]))
    arrays = {"probs": _probs(draw, (*batch, C)), "penalty": draw(st.sampled_from([0.0, 0.01, 0.5]))}
    if (key := _key(draw)) is not None:
        arrays["key"] = key
    return arrays, _score_options(draw), st.sampled_from(BAD_SCORE_OPTIONS)


def _sets(draw, T, N, C) -> Built:
    """Calibration on ``N`` examples, ``T`` test examples (zero-T: no test example, no set)."""
    calibration_labels = _labels(draw, (N,), C)
    arrays = {
        "calibration_probs": _probs(draw, (N, C)),
        "calibration_labels": calibration_labels,
        "test_probs": _probs(draw, (T, C)),
        "penalty": draw(st.sampled_from([0.0, 0.01, 0.5])),
    }
    if (key := _key(draw)) is not None:
        arrays["key"] = key
    static = {"alpha": _alpha(draw, N), **_score_options(draw)}
    bad = st.sampled_from(
        [
            *BAD_ALPHA,
            *BAD_SCORE_OPTIONS,
            {"calibration_labels": calibration_labels.at[:1].set(C)},
            {"calibration_labels": calibration_labels[:-1]},
            {"test_probs": arrays["test_probs"][..., :-1]},
        ]
    )
    return arrays, static, bad


def _intervals(draw, T, N, C) -> Built:
    arrays = {
        "calibration_predictions": _reals(draw, (N,)),
        "calibration_targets": _reals(draw, (N,)),
        "test_predictions": _reals(draw, (T,)),
    }
    bad = [*BAD_ALPHA, {"calibration_targets": arrays["calibration_targets"][:-1]}]
    if draw(st.booleans()):
        arrays["calibration_std"] = jnp.abs(_reals(draw, (N,))) + 1e-3
        arrays["test_std"] = jnp.abs(_reals(draw, (T,))) + 1e-3
        bad += [{"calibration_std": -arrays["calibration_std"]}, {"test_std": arrays["test_std"][:-1]}]
    else:
        bad += [{"test_std": jnp.ones(T)}]
    return arrays, {"alpha": _alpha(draw, N)}, st.sampled_from(bad)


def _cqr(draw, T, N, C) -> Built:
    center, test_center = _reals(draw, (N,)), _reals(draw, (T,))
    width, test_width = jnp.abs(_reals(draw, (N,))), jnp.abs(_reals(draw, (T,)))
    arrays = {
        "calibration_lower": center - width,
        "calibration_upper": center + width,
        "calibration_targets": _reals(draw, (N,)),
        "test_lower": test_center - test_width,
        "test_upper": test_center + test_width,
    }
    bad = [*BAD_ALPHA, {"calibration_targets": arrays["calibration_targets"][:-1]}, {"test_upper": test_center[None]}]
    return arrays, {"alpha": _alpha(draw, N)}, st.sampled_from(bad)


def _bool_sets(draw, T, N, C) -> jax.Array:
    return jnp.asarray(_rng(draw).integers(0, 2, (N, C)), bool)


def _set_coverage(draw, T, N, C) -> Built:
    sets, labels = _bool_sets(draw, T, N, C), _labels(draw, (N,), C)
    bad = st.sampled_from([{"labels": labels.at[:1].set(C)}, {"labels": labels[None]}, {"sets": sets[None]}])
    return {"sets": sets, "labels": labels}, {}, bad


def _mean_set_size(draw, T, N, C) -> Built:
    sets = _bool_sets(draw, T, N, C)
    return {"sets": sets}, {}, st.sampled_from([{"sets": sets[None]}, {"sets": sets.astype(jnp.float32)}])


BUILDERS: dict[str, Callable[..., Built]] = {
    "ood_aupr": _ood_positive,
    "fpr_at_tpr": _ood_levels,
    "energy_score": _energy,
    "max_logit_score": _logits,
    "eaurc": _ranked,
    "augrc": _ranked,
    "risk_at_coverage": _ranked_at,
    "coverage_at_risk": _ranked_risk,
    "max_calibration_error": _binned,
    "adaptive_calibration_error": _binned_top,
    "classwise_calibration_error": _binned_top,
    "picp": _interval,
    "interval_width": functools.partial(_interval, targets=False),
    "ence": _binned_gaussian,
    "uce": _binned_gaussian,
    "crps_gaussian": _gaussian,
    "crps_samples": _crps_samples,
    "sample_disagreement": _sample_probs,
    "predictive_entropy": _probs_only,
    "margin": _probs_only,
    "expected_entropy": _sample_probs,
    "mutual_information": _sample_probs,
    "variation_ratio": _sample_probs,
    "bald_top_k": _bald,
    "nll": _probs_labels,
    "brier_score": _probs_labels,
    "expected_calibration_error": _binned,
    "reliability_diagram": _binned,
    "epistemic_variance": _epistemic,
    "aleatoric_variance": _aleatoric,
    "predictive_variance": _predictive_variance,
    "gaussian_log_likelihood": _log_likelihood,
    "rmse": _rmse,
    "risk_coverage_curve": _ranked,
    "aurc": _ranked,
    "flag_for_review": _flag,
    "ood_auroc": _ood,
    "fit_temperature": _fit_logits,
    "fit_vector_scaling": _fit_logits,
    "calibrated_probs": _calibrated,
    "fit_tau": _fit_tau,
    "fit_variance_scale": _variance_scale,
    "conformal_quantile": _quantile,
    "conformity_scores": _conformity,
    "conformal_sets": _sets,
    "conformal_intervals": _intervals,
    "cqr_intervals": _cqr,
    "set_coverage": _set_coverage,
    "mean_set_size": _mean_set_size,
}
NOT_METRICS = {
    "ReliabilityDiagram": "the result type of reliability_diagram, checked through it",
    "VectorScaling": "the result type of fit_vector_scaling, checked through it and calibrated_probs",
    "plot_reliability_diagram": "draws a diagram with matplotlib and returns the Axes",
    "aggregate_tokens": "per-token scores of sequences with a validity mask, checked in tests/test_mc_decoding.py",
    "sequence_log_likelihood": "log-probabilities of sequences, checked in tests/test_mc_decoding.py",
}
# Outputs that cannot hold NaN (indices, a bool mask): inside jit an invalid value cannot show in them, as their
# docstrings say; the eager call still raises on it.
INTEGER_OUTPUTS = {"bald_top_k", "flag_for_review", "conformal_sets"}
NAN_ACCEPTED = {"flag_for_review"}  # documented: a NaN score counts as the most uncertain, sent to review
# Documented: +-inf conformity scores are allowed, and a +inf score can be the threshold (the trivial set).
INF_ACCEPTED = {"conformal_quantile"}
# The metrics of issue 15 run these properties in the slow suite (about 95 s on 2 busy cores); the default run
# checks each of them by hand in tests/test_uncertainty_metrics.py (values, jit, bad input).
SLOW_METRICS = {
    "ood_aupr", "fpr_at_tpr", "energy_score", "max_logit_score", "eaurc", "augrc", "risk_at_coverage",
    "coverage_at_risk", "max_calibration_error", "adaptive_calibration_error", "classwise_calibration_error", "picp",
    "interval_width", "ence", "uce", "crps_gaussian", "crps_samples", "sample_disagreement",
    # post-hoc calibration and conformal prediction (checked by hand in tests/test_posthoc.py, test_conformal.py)
    "VectorScaling", "calibrated_probs", "conformal_intervals", "conformal_quantile", "conformal_sets",
    "conformity_scores", "cqr_intervals", "fit_tau", "fit_temperature", "fit_variance_scale", "fit_vector_scaling",
    "mean_set_size", "set_coverage",
}  # fmt: skip
METRICS = [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_METRICS else []) for name in sorted(BUILDERS)]
# Configuration: static under jit.
STATIC_NAMES = {"sample_axis", "k", "num_bins", "binning", "budget", "positive", "tpr", "coverage", "risk"}
# A traced ``alpha`` too small for the calibration set gives the documented +inf threshold (the trivial set) where
# the eager call raises; ``score``, ``k_reg`` and ``mc_samples`` are static by contract.
STATIC_NAMES |= {"alpha", "score", "k_reg", "mc_samples"}


# --- at most one defect per call -----------------------------------------------------------------------------------


def _corrupt(values: jax.Array, corruption: str) -> jax.Array:
    flat = np.array(values, np.float64).reshape(-1)
    if corruption == "negative":
        flat[0] = -0.25
    elif corruption == "unnormalised":
        flat *= 1.1
    else:
        flat[-1] = float(corruption)
    return jnp.asarray(flat.reshape(values.shape), values.dtype)


@st.composite
def calls(draw, name: str, defect: str) -> tuple[Arrays, dict]:
    """The arguments of one call of ``name``: valid, or with one defect."""
    sizes = {"T": draw(st.integers(1, 3)), "N": draw(st.integers(1, 4)), "C": draw(st.integers(1, 3))}
    if defect.startswith("zero-"):  # zero samples, no example or zero classes, coherently across the arguments
        sizes[defect[-1]] = 0
    arrays, static, bad = BUILDERS[name](draw, **sizes)
    arrays, static = dict(arrays), dict(static)
    array_names = sorted(key for key, value in arrays.items() if isinstance(value, jax.Array))
    if defect == "config" and bad is not None:
        for key, value in draw(bad).items():
            (static if key in STATIC_NAMES else arrays)[key] = value
    elif defect in ("value", "dtype", "shape") and array_names:
        key = draw(st.sampled_from(array_names))
        value = arrays[key]
        if defect == "value" and value.size and jnp.issubdtype(value.dtype, jnp.floating):
            arrays[key] = _corrupt(value, draw(st.sampled_from(CORRUPTIONS)))
        elif defect == "dtype":
            floating = jnp.issubdtype(value.dtype, jnp.floating)
            arrays[key] = value.astype(draw(st.sampled_from([jnp.int32, jnp.bool_]))) if floating else value * 1.0
        elif defect == "shape":
            arrays[key] = value[0] if value.ndim and value.shape[0] and draw(st.booleans()) else value[None]
    return arrays, static


# --- the properties ------------------------------------------------------------------------------------------------


def test_every_public_name_is_tested():
    assert set(BUILDERS) | set(NOT_METRICS) == set(unc.__all__)
    assert not set(BUILDERS) & set(NOT_METRICS)


def _float_leaves(result) -> list[np.ndarray]:
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(result)]
    return [leaf for leaf in leaves if np.issubdtype(leaf.dtype, np.floating)]


def _holds_nan(arrays: Arrays) -> bool:
    return any(np.isnan(np.asarray(value, np.float64)).any() for value in arrays.values() if _is_float(value))


def _holds_inf(arrays: Arrays) -> bool:
    return any(np.isinf(np.asarray(value, np.float64)).any() for value in arrays.values() if _is_float(value))


def _is_float(value) -> bool:
    return isinstance(value, float) or np.issubdtype(np.asarray(value).dtype, np.floating)


def _assert_finite(name: str, result) -> None:
    if name == "reliability_diagram":
        # The one documented NaN: the mean confidence and accuracy of a bin with no examples (count 0).
        filled = np.asarray(result.counts) > 0
        assert filled.any()
        result = (result.bin_edges, np.asarray(result.confidence)[filled], np.asarray(result.accuracy)[filled])
    for leaf in _float_leaves(result):
        assert np.isfinite(leaf).all(), leaf


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("name", METRICS)
def test_raises_or_returns_finite_values(name, defect):
    @EAGER_SETTINGS
    @given(calls(name, defect))
    def check(call):
        arrays, static = call
        try:
            result = getattr(unc, name)(**arrays, **static)
        except (TypeError, ValueError):
            return
        if name in INF_ACCEPTED and _holds_inf(arrays):
            assert not any(np.isnan(leaf).any() for leaf in _float_leaves(result)), result
        else:
            _assert_finite(name, result)
        assert name in NAN_ACCEPTED or not _holds_nan(arrays), "NaN input gave a number"
        if any(np.size(value) == 0 for value in arrays.values()):
            assert all(np.size(leaf) == 0 for leaf in jax.tree.leaves(result)), "a number from an empty input"

    check()


@functools.cache
def _jitted(name: str, static: tuple):
    return jax.jit(functools.partial(getattr(unc, name), **dict(static)))


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("name", METRICS)
def test_under_jit_raises_or_agrees_with_eager_or_is_nan(name, defect):
    @JIT_SETTINGS
    @given(calls(name, defect))
    def check(call):
        arrays, static = call
        try:
            expected, error = getattr(unc, name)(**arrays, **static), None
        except (TypeError, ValueError) as err:
            expected, error = None, err
        try:
            got = _jitted(name, tuple(sorted(static.items())))(**arrays)
        except (TypeError, ValueError):
            assert error is not None, "raised under jit only"
            return
        if error is None:
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)
        elif name not in INTEGER_OUTPUTS:
            assert isinstance(error, ValueError), error  # a dtype error is static: it raises under jit too
            leaves = _float_leaves(got)
            assert leaves and all(np.isnan(leaf).all() for leaf in leaves), (error, got)

    check()
