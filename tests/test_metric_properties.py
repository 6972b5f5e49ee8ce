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


BUILDERS: dict[str, Callable[..., Built]] = {
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
}
NOT_METRICS = {
    "ReliabilityDiagram": "the result type of reliability_diagram, checked through it",
    "plot_reliability_diagram": "draws a diagram with matplotlib and returns the Axes",
}
# Outputs that cannot hold NaN (indices, a bool mask): inside jit an invalid value cannot show in them, as their
# docstrings say; the eager call still raises on it.
INTEGER_OUTPUTS = {"bald_top_k", "flag_for_review"}
NAN_ACCEPTED = {"flag_for_review"}  # documented: a NaN score counts as the most uncertain, sent to review
METRICS = sorted(BUILDERS)
STATIC_NAMES = {"sample_axis", "k", "num_bins", "binning", "budget"}  # configuration: static under jit


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
