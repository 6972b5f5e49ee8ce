"""Calibration of predictive probabilities: NLL, Brier score, expected calibration error and reliability diagrams.

ECE and reliability diagrams follow Guo et al. 2017 ("On Calibration of Modern Neural Networks", ICML): the
top-1 confidence is binned, and each bin's accuracy is compared with its mean confidence. Equal-mass bins
(``binning="quantile"``) hold the same number of examples each (Nixon et al. 2019, "Measuring Calibration in
Deep Learning").
"""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs

BINNINGS = ("uniform", "quantile")


def _probs_and_labels(
    probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, two_d: bool = False
) -> tuple[jax.Array, jax.Array, _inputs.Ok]:
    """Checked probabilities and labels of at least one example, and the ``ok`` flag of their traced values."""
    probs, probs_ok = _inputs.probabilities(probs)
    if two_d and probs.ndim != 2:
        raise ValueError(f"`probs` must have shape (num_examples, num_classes); got {probs.shape}.")
    _inputs.not_empty(probs, "probs")  # a mean or a histogram over no examples is undefined
    labels, labels_ok = _inputs.labels(labels, probs.shape[:-1], probs.shape[-1])
    return probs, labels, _inputs.all_ok(probs_ok, labels_ok)


# Validation runs in Python; each metric is then one jitted program (one dispatch when called eagerly).


@jax.jit
def _nll(probs: jax.Array, labels: jax.Array) -> jax.Array:
    label_probs = jnp.take_along_axis(_stats.as_float(probs), labels[..., None], axis=-1)[..., 0]
    return -jnp.log(jnp.maximum(label_probs, jnp.finfo(jnp.float32).tiny)).mean()


@jax.jit
def _brier_score(probs: jax.Array, labels: jax.Array) -> jax.Array:
    probs = _stats.as_float(probs)
    one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    return jnp.square(probs - one_hot).sum(-1).mean()


def nll(probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
    """Mean negative log-likelihood ``-log p[label]`` (nats); a zero probability counts as ``-log(tiny)``, finite.

    Args:
      probs: ``(*batch, num_classes)`` predictive probabilities: at least one example and one class.
      labels: ``(*batch,)`` integer labels in ``[0, num_classes)``.

    Returns:
      A float32 scalar (``sklearn.metrics.log_loss`` without its clipping). Inside ``jit``, invalid values
      (NaN or non-probabilities in ``probs``, labels out of range) give NaN.

    Raises:
      TypeError: ``probs`` not floating point, ``labels`` not integer.
      ValueError: no example, zero classes, ``labels`` of the wrong shape; (when concrete) ``probs`` holding NaN,
        values outside [0, 1] or rows not summing to 1, ``labels`` out of range.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> round(float(jaxdrop.uncertainty.nll(jnp.array([[0.5, 0.5], [0.25, 0.75]]), jnp.array([0, 1]))), 4)
      0.4904
    """
    probs, labels, ok = _probs_and_labels(probs, labels)
    return _inputs.guard(_nll(probs, labels), ok)


def brier_score(probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
    """Mean over examples of ``sum_c (p_c - 1[c == label])**2`` (Brier 1950), in ``[0, 2]``.

    For two classes this is twice ``sklearn.metrics.brier_score_loss`` on the positive class.

    Args:
      probs: ``(*batch, num_classes)`` predictive probabilities: at least one example and one class.
      labels: ``(*batch,)`` integer labels in ``[0, num_classes)``.

    Returns:
      A float32 scalar. Inside ``jit``, invalid values (as in `nll()`) give NaN.

    Raises:
      TypeError, ValueError: as `nll()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.uncertainty.brier_score(jnp.array([[0.75, 0.25]]), jnp.array([0])).tolist()
      0.125
    """
    probs, labels, ok = _probs_and_labels(probs, labels)
    return _inputs.guard(_brier_score(probs, labels), ok)


class ReliabilityDiagram(NamedTuple):
    """Per-bin calibration data (a pytree): plot ``accuracy`` against ``confidence``.

    Attributes:
      bin_edges: ``(num_bins + 1,)`` confidence edges (for equal-mass bins, the confidences at the splits).
      confidence: ``(num_bins,)`` mean top-1 confidence per bin; NaN for an empty bin.
      accuracy: ``(num_bins,)`` fraction correct per bin; NaN for an empty bin.
      counts: ``(num_bins,)`` int32 examples per bin.
    """

    bin_edges: jax.Array
    confidence: jax.Array
    accuracy: jax.Array
    counts: jax.Array


def reliability_diagram(
    probs: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    num_bins: int = 15,
    binning: Literal["uniform", "quantile"] = "uniform",
) -> ReliabilityDiagram:
    """Bins the top-1 confidence and reports each bin's mean confidence and accuracy (Guo et al. 2017).

    ``"uniform"``: ``num_bins`` equal-width bins ``(k/B, (k+1)/B]`` (confidence 0 goes to the first).
    ``"quantile"``: equal-mass bins: examples sorted by confidence (ties by index) are split into ``num_bins``
    groups whose sizes differ by at most one. ``num_bins`` and ``binning`` are static.

    Args:
      probs: ``(n, num_classes)`` predictive probabilities, ``n >= 1``.
      labels: ``(n,)`` integer labels.
      num_bins: number of bins, >= 1.
      binning: ``"uniform"`` or ``"quantile"``.

    Returns:
      A `ReliabilityDiagram`. A bin without examples has NaN confidence and accuracy (count 0): there is nothing to
      average. Inside ``jit``, invalid values (as in `nll()`) make ``bin_edges``, ``confidence`` and ``accuracy``
      all NaN (``counts`` are integers).

    Raises:
      TypeError: as `nll()`.
      ValueError: as `nll()`, ``probs`` not 2-D, ``num_bins < 1``, unknown ``binning``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
      >>> diagram = jaxdrop.uncertainty.reliability_diagram(probs, jnp.array([0, 1, 1]), num_bins=2)
      >>> diagram.counts.tolist(), [round(a, 4) for a in diagram.accuracy.tolist()]
      ([0, 3], [nan, 0.6667])
    """
    return _inputs.guard(*_checked_diagram(probs, labels, num_bins, binning))


def _checked_diagram(
    probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, num_bins: int, binning: str
) -> tuple[ReliabilityDiagram, _inputs.Ok]:
    probs, labels, ok = _probs_and_labels(probs, labels, two_d=True)
    num_bins = _checks.int_in_range(num_bins, "num_bins", 1, 2**31 - 1)
    _checks.choice(binning, BINNINGS, "binning")
    return _reliability_diagram(probs, labels, num_bins, binning), ok


@functools.partial(jax.jit, static_argnums=(2, 3))
def _reliability_diagram(probs: jax.Array, labels: jax.Array, num_bins: int, binning: str) -> ReliabilityDiagram:
    probs = _stats.as_float(probs)
    num_examples = probs.shape[0]
    confidence = probs.max(-1)
    correct = (jnp.argmax(probs, -1) == labels).astype(jnp.float32)
    if binning == "uniform":
        bins = jnp.clip(jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
        edges = jnp.linspace(0.0, 1.0, num_bins + 1)
    else:
        order = jnp.argsort(confidence, stable=True)
        ranks = jnp.zeros(num_examples, jnp.int32).at[order].set(jnp.arange(num_examples, dtype=jnp.int32))
        bins = (ranks * num_bins) // num_examples
        # First rank of bin k is ceil(k * n / B); an empty bin (n < B) repeats its neighbour's edge.
        starts = -((-jnp.arange(num_bins) * num_examples) // num_bins)
        ordered = confidence[order]
        edges = jnp.concatenate([ordered[jnp.minimum(starts, num_examples - 1)], ordered[-1:]])
    counts = jax.ops.segment_sum(jnp.ones_like(confidence), bins, num_segments=num_bins)
    sum_confidence = jax.ops.segment_sum(confidence, bins, num_segments=num_bins)
    sum_correct = jax.ops.segment_sum(correct, bins, num_segments=num_bins)
    safe = jnp.maximum(counts, 1.0)
    empty = counts == 0
    return ReliabilityDiagram(
        bin_edges=edges,
        confidence=jnp.where(empty, jnp.nan, sum_confidence / safe),
        accuracy=jnp.where(empty, jnp.nan, sum_correct / safe),
        counts=counts.astype(jnp.int32),
    )


def expected_calibration_error(
    probs: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    num_bins: int = 15,
    binning: Literal["uniform", "quantile"] = "uniform",
) -> jax.Array:
    """ECE: ``sum_b (n_b / n) |accuracy_b - confidence_b|`` over the bins of `reliability_diagram()`.

    Args:
      probs: ``(n, num_classes)`` predictive probabilities, ``n >= 1``.
      labels: ``(n,)`` integer labels.
      num_bins: number of bins, >= 1 (static). 15 as in Guo et al. 2017.
      binning: ``"uniform"`` (equal width) or ``"quantile"`` (equal mass); static.

    Returns:
      A float32 scalar in ``[0, 1]``. Inside ``jit``, invalid values (as in `nll()`) give NaN.

    Raises:
      TypeError: as `nll()`.
      ValueError: no example (an empty set is not "perfectly calibrated"), ``probs`` not 2-D or not
        probabilities (when concrete), shapes do not match, ``num_bins < 1``, unknown ``binning``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
      >>> ece = jaxdrop.uncertainty.expected_calibration_error(probs, jnp.array([0, 1, 1]), num_bins=2)
      >>> round(float(ece), 4)  # one bin, mean confidence 0.7333, accuracy 0.6667
      0.0667
    """
    diagram, ok = _checked_diagram(probs, labels, num_bins, binning)
    return _inputs.guard(_calibration_error(diagram), ok)


@jax.jit
def _calibration_error(diagram: ReliabilityDiagram) -> jax.Array:
    weights = diagram.counts / diagram.counts.sum()
    gaps = jnp.abs(diagram.accuracy - diagram.confidence)
    return jnp.where(diagram.counts > 0, weights * gaps, 0.0).sum()


@jax.jit
def _max_calibration_error(diagram: ReliabilityDiagram) -> jax.Array:
    gaps = jnp.abs(diagram.accuracy - diagram.confidence)
    return jnp.where(diagram.counts > 0, gaps, 0.0).max()


def max_calibration_error(
    probs: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    num_bins: int = 15,
    binning: Literal["uniform", "quantile"] = "uniform",
) -> jax.Array:
    """MCE: ``max_b |accuracy_b - confidence_b|`` over the non-empty bins of `reliability_diagram()` (Naeini et al.
    2015, "Obtaining Well Calibrated Probabilities Using Bayesian Binning", AAAI): the worst bin's gap.

    Every non-empty bin counts alike, however few examples it holds, so MCE is noisy on small sets: read it with
    the bin counts of `reliability_diagram()`.

    Args:
      probs, labels, num_bins, binning: as `expected_calibration_error()`.

    Returns:
      A float32 scalar in ``[0, 1]``. Inside ``jit``, invalid values (as in `nll()`) give NaN.

    Raises:
      TypeError, ValueError: as `expected_calibration_error()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
      >>> mce = jaxdrop.uncertainty.max_calibration_error(probs, jnp.array([0, 1, 1]), num_bins=4)
      >>> round(float(mce), 4)  # bins (0.5, 0.75]: confidence 0.65, accuracy 0.5; (0.75, 1]: 0.9 and 1
      0.15
    """
    diagram, ok = _checked_diagram(probs, labels, num_bins, binning)
    return _inputs.guard(_max_calibration_error(diagram), ok)


def adaptive_calibration_error(
    probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, num_bins: int = 15
) -> jax.Array:
    """Adaptive ECE: the ECE of the top-1 confidence over equal-mass bins (Nixon et al. 2019, "Measuring
    Calibration in Deep Learning", CVPR workshops), ``sum_b (n_b / n) |accuracy_b - confidence_b|``.

    Each bin holds ``n / num_bins`` examples (sizes differ by at most one; examples sorted by confidence, ties by
    index), so the crowded high-confidence region of a modern network is split finely instead of landing in one
    or two equal-width bins. The same as ``expected_calibration_error(..., binning="quantile")``; the top-label
    form used by torch-uncertainty (``AdaptiveCalibrationError``) and netcal (``ACE``).

    Args:
      probs, labels: as `expected_calibration_error()`.
      num_bins: number of bins, >= 1 (static).

    Returns:
      A float32 scalar in ``[0, 1]``. Inside ``jit``, invalid values (as in `nll()`) give NaN.

    Raises:
      TypeError, ValueError: as `expected_calibration_error()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
      >>> ace = jaxdrop.uncertainty.adaptive_calibration_error(probs, jnp.array([0, 1, 1, 1]), num_bins=2)
      >>> round(float(ace), 4)  # bins {0.6, 0.7}: 0.65 vs 0.5; {0.8, 0.9}: 0.85 vs 0.5
      0.25
    """
    return expected_calibration_error(probs, labels, num_bins, "quantile")


@functools.partial(jax.jit, static_argnums=2)
def _classwise_calibration_error(probs: jax.Array, labels: jax.Array, num_bins: int) -> jax.Array:
    probs = _stats.as_float(probs)
    num_examples, num_classes = probs.shape
    # One segment per (class, bin): class c's probabilities binned as the top-1 confidence is in `reliability_diagram`.
    bins = jnp.clip(jnp.ceil(probs * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    segments = (bins + num_bins * jnp.arange(num_classes, dtype=jnp.int32)).ravel()
    is_label = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32).ravel()
    num_segments = num_bins * num_classes
    sum_probs = jax.ops.segment_sum(probs.ravel(), segments, num_segments=num_segments)
    sum_labels = jax.ops.segment_sum(is_label, segments, num_segments=num_segments)
    # |sum of labels - sum of probabilities| / n is n_b / n times the bin's gap |frequency - mean probability|.
    return jnp.abs(sum_labels - sum_probs).sum() / (num_examples * num_classes)


def classwise_calibration_error(
    probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, num_bins: int = 15
) -> jax.Array:
    """Classwise ECE (Kull et al. 2019, "Beyond temperature scaling: Obtaining well-calibrated multiclass
    probabilities with Dirichlet calibration", NeurIPS): the calibration of every class probability, not only the
    top one.

    ``cwECE = (1/K) sum_c sum_b (n_cb / n) |freq_cb - conf_cb|``: for each class ``c`` the probabilities ``p_c``
    of all examples are put in ``num_bins`` equal-width bins ``(k/B, (k+1)/B]`` (0 in the first), and each bin's
    mean ``p_c`` is compared with the share of its examples whose label is ``c``. Empty bins add nothing.

    Args:
      probs: ``(n, num_classes)`` predictive probabilities, ``n >= 1``.
      labels: ``(n,)`` integer labels.
      num_bins: number of bins per class, >= 1 (static).

    Returns:
      A float32 scalar in ``[0, 1]``; for two classes it equals the binned calibration error of ``p_1`` against
      the positive label (class 0's bins mirror class 1's, except for a probability exactly on an edge). Inside
      ``jit``, invalid values (as in `nll()`) give NaN.

    Raises:
      TypeError, ValueError: as `expected_calibration_error()` (without ``binning``).

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
      >>> cw = jaxdrop.uncertainty.classwise_calibration_error(probs, jnp.array([0, 1, 1]), num_bins=2)
      >>> round(float(cw), 4)  # class 0: (1/3)|0 - 0.3| + (2/3)|0.5 - 0.75|; class 1 mirrors it
      0.2667
    """
    probs, labels, ok = _probs_and_labels(probs, labels, two_d=True)
    num_bins = _checks.int_in_range(num_bins, "num_bins", 1, 2**31 - 1)
    return _inputs.guard(_classwise_calibration_error(probs, labels, num_bins), ok)


def plot_reliability_diagram(diagram: ReliabilityDiagram, ax: Any = None, label: str | None = None) -> Any:
    """Draws a reliability diagram (accuracy per bin vs the diagonal) with matplotlib (an optional dependency).

    Each bar is labelled with its number of examples, so a bin whose accuracy rests on a handful of predictions is
    visible as such; empty bins are drawn empty.

    Args:
      diagram: from `reliability_diagram()`.
      ax: a matplotlib ``Axes``; a new figure is made when None.
      label: legend label for the bars.

    Returns:
      The ``Axes``.

    Raises:
      ImportError: matplotlib is not installed.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plot_reliability_diagram needs matplotlib: `pip install matplotlib`.") from err
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    edges = np.asarray(diagram.bin_edges)
    accuracy = np.nan_to_num(np.asarray(diagram.accuracy), nan=0.0)
    bars = ax.bar(
        edges[:-1],
        accuracy,
        width=np.diff(edges),
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label=label or "accuracy",
    )
    counts = np.asarray(diagram.counts)
    ax.bar_label(bars, labels=[str(int(n)) if n else "" for n in counts], fontsize=6, padding=1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)  # room for the count labels above a full bar
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left")
    return ax
