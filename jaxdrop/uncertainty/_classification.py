"""Classification uncertainty from MC samples ``sample_probs`` of shape ``(T, *batch, num_classes)``.

The decomposition predictive entropy = expected entropy (aleatoric) + mutual information (epistemic) is from
Houlsby et al. 2011 ("Bayesian Active Learning for Classification and Preference Learning", BALD) and Gal,
Islam & Ghahramani 2017 ("Deep Bayesian Active Learning with Image Data", ICML), which also uses variation ratios.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks, _stats
from jaxdrop.uncertainty import _inputs


def predictive_entropy(probs: jax.typing.ArrayLike) -> jax.Array:
    """Entropy ``-sum_c p_c log p_c`` (nats) of predictive probabilities, total uncertainty.

    Args:
      probs: probabilities ``(*batch, num_classes)``, e.g. the MC mean ``sample_probs.mean(0)``; at least one class.

    Returns:
      ``(*batch,)`` float32 entropies, in ``[0, log num_classes]``; ``0 log 0 = 0`` exactly. An empty batch gives
      an empty array. Inside ``jit``, invalid values (NaN, outside [0, 1], rows not summing to 1) make every
      entry NaN.

    Raises:
      TypeError: ``probs`` is not floating point.
      ValueError: ``probs`` is a scalar or has zero classes; (when concrete) holds NaN/inf, values outside
        [0, 1] or rows not summing to 1 over the last axis.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> [round(h, 4) for h in jaxdrop.uncertainty.predictive_entropy(jnp.array([[0.5, 0.5], [1.0, 0.0]])).tolist()]
      [0.6931, 0.0]
    """
    probs, ok = _inputs.probabilities(probs)
    return _inputs.guard(_entropy(probs), ok)


# Each metric validates its inputs in Python, then runs one jitted program: evaluated eagerly, a metric is one
# dispatch (and one compile per shape) instead of dozens of op-by-op compilations.
_entropy = jax.jit(_stats.entropy)


@jax.jit
def _expected_entropy(sample_probs: jax.Array) -> jax.Array:
    return _stats.entropy(sample_probs).mean(0)


@jax.jit
def _mutual_information(sample_probs: jax.Array) -> jax.Array:
    mean_probs = _stats.as_float(sample_probs).mean(0)
    return jnp.maximum(_stats.entropy(mean_probs) - _stats.entropy(sample_probs).mean(0), 0.0)


@jax.jit
def _margin(probs: jax.Array) -> jax.Array:
    return _stats.top_two_gap(_stats.as_float(probs))


@jax.jit
def _variation_ratio(sample_probs: jax.Array) -> jax.Array:
    num_samples, num_classes = sample_probs.shape[0], sample_probs.shape[-1]
    votes = jax.nn.one_hot(jnp.argmax(sample_probs, -1), num_classes, dtype=jnp.int32).sum(0)
    return (num_samples - votes.max(-1)).astype(jnp.float32) / num_samples


def expected_entropy(sample_probs: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """Mean over samples of each sample's entropy, ``mean_t H[p_t]``: the aleatoric part of the uncertainty.

    Args:
      sample_probs: ``(T, *batch, num_classes)`` per-sample probabilities, sample axis first, ``T >= 1``.
      sample_axis: where the samples are, when not first (static). A 2-D ``(T, num_classes)`` input (the samples
        of one example) needs ``sample_axis=0``: it could as well be one prediction per example, without samples.

    Returns:
      ``(*batch,)`` float32 in ``[0, log num_classes]``; empty for an empty batch. Inside ``jit``, invalid values
      (NaN, outside [0, 1], rows not summing to 1) make every entry NaN.

    Raises:
      TypeError: ``sample_probs`` is not floating point.
      ValueError: fewer than 2 axes, a 2-D input without ``sample_axis``, zero samples or zero classes; (when
        concrete) NaN/inf, values outside [0, 1] or rows not summing to 1.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> sample_probs = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident samples that disagree
      >>> jaxdrop.uncertainty.expected_entropy(sample_probs).tolist()
      [0.0]
    """
    sample_probs, ok = _inputs.sample_probabilities(sample_probs, sample_axis)
    return _inputs.guard(_expected_entropy(sample_probs), ok)


def mutual_information(sample_probs: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """BALD score: ``H[mean_t p_t] - mean_t H[p_t]``, the epistemic part (Houlsby et al. 2011).

    High when the samples are individually confident but disagree. Clipped at 0 (float rounding).

    Args:
      sample_probs: ``(T, *batch, num_classes)`` per-sample probabilities, ``T >= 1``.
      sample_axis: where the samples are, when not first (static); required (``0``) for a 2-D
        ``(T, num_classes)`` input, see `expected_entropy()`.

    Returns:
      ``(*batch,)`` float32, in ``[0, log num_classes]``; empty for an empty batch. Inside ``jit``, invalid values
      make every entry NaN.

    Raises:
      TypeError, ValueError: as `expected_entropy()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> sample_probs = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
      >>> round(float(jaxdrop.uncertainty.mutual_information(sample_probs)[0]), 4)  # log 2
      0.6931
      >>> round(float(jaxdrop.uncertainty.mutual_information(sample_probs[:, 0], sample_axis=0)), 4)  # (T, C)
      0.6931
    """
    sample_probs, ok = _inputs.sample_probabilities(sample_probs, sample_axis)
    return _inputs.guard(_mutual_information(sample_probs), ok)


def variation_ratio(sample_probs: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """``1 - f_mode / T``: the fraction of samples whose argmax is not the most voted class (Freeman 1965).

    Args:
      sample_probs: ``(T, *batch, num_classes)`` per-sample probabilities, ``T >= 1``.
      sample_axis: where the samples are, when not first (static); required (``0``) for a 2-D
        ``(T, num_classes)`` input, see `expected_entropy()`.

    Returns:
      ``(*batch,)`` float32 in ``[0, 1 - 1/num_classes]``; 0 when every sample predicts the same class; empty for an
      empty batch. Inside ``jit``, invalid values make every entry NaN.

    Raises:
      TypeError, ValueError: as `expected_entropy()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> sample_probs = jnp.array([[[0.9, 0.1]], [[0.8, 0.2]], [[0.3, 0.7]], [[0.6, 0.4]]])
      >>> jaxdrop.uncertainty.variation_ratio(sample_probs).tolist()
      [0.25]
    """
    sample_probs, ok = _inputs.sample_probabilities(sample_probs, sample_axis)
    return _inputs.guard(_variation_ratio(sample_probs), ok)


def margin(probs: jax.typing.ArrayLike) -> jax.Array:
    """Top-1 minus top-2 probability (small margin means uncertain; 1 with a single class).

    Args:
      probs: ``(*batch, num_classes)`` predictive probabilities, at least one class.

    Returns:
      ``(*batch,)`` float32 in ``[0, 1]``; empty for an empty batch. Inside ``jit``, invalid values make every
      entry NaN.

    Raises:
      TypeError, ValueError: as `predictive_entropy()` (zero classes included).

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> round(float(jaxdrop.uncertainty.margin(jnp.array([[0.5, 0.2, 0.3]]))[0]), 4)
      0.2
    """
    probs, ok = _inputs.probabilities(probs)
    return _inputs.guard(_margin(probs), ok)


def bald_top_k(sample_probs: jax.typing.ArrayLike, k: int, *, sample_axis: int | None = None) -> jax.Array:
    """Indices of the ``k`` pool examples with the highest mutual information: the next batch to label.

    BALD acquisition for active learning (Houlsby et al. 2011; Gal, Islam & Ghahramani 2017). Ties go to the
    lower index. ``k`` is static (it sets the output shape).

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC samples on the unlabelled pool, ``T >= 1``.
      k: how many examples to acquire, in ``[1, pool_size]``.
      sample_axis: where the samples are, when not first (``1`` for ``(pool_size, T, num_classes)``); static.

    Returns:
      ``(k,)`` int32 indices into the pool, highest score first. Indices cannot hold NaN: inside ``jit``, an
      example whose samples hold NaN ranks first (a broken prediction goes to a human, as in `flag_for_review()`),
      and other invalid values are not detected here; `mutual_information()` turns NaN on them.

    Raises:
      TypeError: ``sample_probs`` is not floating point.
      ValueError: ``sample_probs`` is not 3-D, has zero samples, an empty pool or zero classes, or ``k`` is outside
        ``[1, pool_size]``; (when concrete) the values are not probabilities, as in `expected_entropy()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> agree = [[0.9, 0.1], [0.9, 0.1]]; disagree = [[0.9, 0.1], [0.1, 0.9]]
      >>> sample_probs = jnp.array([agree, disagree, agree]).transpose(1, 0, 2)  # (T=2, pool=3, classes=2)
      >>> jaxdrop.uncertainty.bald_top_k(sample_probs, 1).tolist()
      [1]
    """
    sample_probs, _ = _inputs.pool_samples(sample_probs, sample_axis)  # the check `jaxdrop.active` shares
    k = _checks.int_in_range(k, "k", 1, sample_probs.shape[1])
    return lax.top_k(_acquisition_scores(sample_probs), k)[1]


@jax.jit
def _acquisition_scores(sample_probs: jax.Array) -> jax.Array:
    # A NaN score (NaN in traced samples) ranks first, as in `flag_for_review`: a broken prediction goes to a
    # human. Left to `lax.top_k`, where NaN goes depends on the backend.
    scores = _mutual_information(sample_probs)
    return jnp.where(jnp.isnan(scores), jnp.inf, scores)


@jax.jit
def _sample_disagreement(sample_probs: jax.Array) -> jax.Array:
    consensus = jnp.argmax(_stats.as_float(sample_probs).mean(0), -1)
    return (jnp.argmax(sample_probs, -1) != consensus).mean(0, dtype=jnp.float32)


def sample_disagreement(sample_probs: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """Share of MC samples whose predicted class differs from the mean prediction's, per example (the
    "disagreement" of ensembles, e.g. Fort et al. 2019, "Deep Ensembles: A Loss Landscape Perspective";
    torch-uncertainty's ``Disagreement`` reports pairwise disagreement between members instead).

    ``mean_t 1[argmax_c p_t,c != argmax_c mean_s p_s,c]``, ties in an argmax going to the lower class index. It
    differs from `variation_ratio()`, which compares the samples with their most voted class: the mean
    prediction's class need not be the most voted one.

    Args:
      sample_probs: ``(T, *batch, num_classes)`` per-sample probabilities, ``T >= 1``.
      sample_axis: where the samples are, when not first (static); required (``0``) for a 2-D
        ``(T, num_classes)`` input, see `expected_entropy()`.

    Returns:
      ``(*batch,)`` float32 in ``[0, 1]``, multiples of ``1/T``; 0 when every sample agrees; empty for an empty
      batch. Inside ``jit``, invalid values make every entry NaN.

    Raises:
      TypeError, ValueError: as `expected_entropy()`.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> sample_probs = jnp.array([[[0.9, 0.1]], [[0.8, 0.2]], [[0.3, 0.7]], [[0.4, 0.6]]])  # mean (0.6, 0.4)
      >>> jaxdrop.uncertainty.sample_disagreement(sample_probs).tolist()
      [0.5]
    """
    sample_probs, ok = _inputs.sample_probabilities(sample_probs, sample_axis)
    return _inputs.guard(_sample_disagreement(sample_probs), ok)
