"""Acquisition scores of each pool candidate from MC samples ``(T, pool_size, num_classes)``, and top-k selection.

Every score is "higher means label it first". The per-candidate uncertainties are the public metrics of
``jaxdrop.uncertainty`` (entropy, mutual information, variation ratio, margin); this module only orients them as
acquisition scores (Gal, Islam & Ghahramani 2017, "Deep Bayesian Active Learning with Image Data", ICML) and picks
the top ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks, _stats
from jaxdrop import uncertainty as _uncertainty
from jaxdrop.uncertainty import _inputs


def max_entropy(sample_probs: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """Max-entropy acquisition: the predictive entropy ``H[mean_t p_t]`` of each pool candidate (Shannon 1948).

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC samples of the class probabilities on the pool, ``T >= 1``.
      sample_axis: where the samples are, when not first (static).

    Returns:
      ``(pool_size,)`` float32 scores in ``[0, log num_classes]``; higher means acquire first. Inside ``jit``,
      invalid probabilities make every score NaN.

    Raises:
      TypeError: ``sample_probs`` is not floating point.
      ValueError: ``sample_probs`` is not 3-D, has no sample, no candidate or no class; (when concrete) it does not
        hold probabilities summing to 1 over the classes.
    """
    sample_probs, ok = _inputs.pool_samples(sample_probs, sample_axis)
    return _inputs.guard(_uncertainty.predictive_entropy(_stats.as_float(sample_probs).mean(0)), ok)


def bald(sample_probs: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """BALD acquisition: the mutual information ``I[y; w] = H[mean_t p_t] - mean_t H[p_t]`` between a candidate's
    label and the model (Houlsby et al. 2011, "Bayesian Active Learning for Classification and Preference
    Learning"); `jaxdrop.uncertainty.mutual_information()` on the pool.

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC samples on the pool, ``T >= 1``.
      sample_axis: where the samples are, when not first (static).

    Returns:
      ``(pool_size,)`` float32 scores in ``[0, log num_classes]``; higher means acquire first.

    Raises:
      TypeError, ValueError: as `max_entropy()`.
    """
    sample_probs, _ = _inputs.pool_samples(sample_probs, sample_axis)
    return _uncertainty.mutual_information(sample_probs)


def variation_ratios(sample_probs: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """Variation-ratios acquisition: ``1 - f_mode / T``, the fraction of samples that disagree with the most voted
    class (Freeman 1965); `jaxdrop.uncertainty.variation_ratio()` on the pool.

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC samples on the pool, ``T >= 1``.
      sample_axis: where the samples are, when not first (static).

    Returns:
      ``(pool_size,)`` float32 scores in ``[0, 1 - 1/num_classes]``; higher means acquire first. Many candidates tie
      (the score takes only ``T`` values): `top_k()` breaks ties by the lower index.

    Raises:
      TypeError, ValueError: as `max_entropy()`.
    """
    sample_probs, _ = _inputs.pool_samples(sample_probs, sample_axis)
    return _uncertainty.variation_ratio(sample_probs)


def mean_std(sample_probs: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """Mean-standard-deviation acquisition: ``mean_c sqrt(E_t[p_tc^2] - E_t[p_tc]^2)``, the spread of the sampled
    probabilities averaged over the classes (Kampffmeyer et al. 2016; Kendall et al. 2015).

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC samples on the pool, ``T >= 1``.
      sample_axis: where the samples are, when not first (static).

    Returns:
      ``(pool_size,)`` float32 scores in ``[0, 0.5]``; 0 with a single sample. Higher means acquire first. Inside
      ``jit``, invalid probabilities make every score NaN.

    Raises:
      TypeError, ValueError: as `max_entropy()`.
    """
    sample_probs, ok = _inputs.pool_samples(sample_probs, sample_axis)
    return _inputs.guard(_mean_std(sample_probs), ok)


@jax.jit
def _mean_std(sample_probs: jax.Array) -> jax.Array:
    return _stats.as_float(sample_probs).std(0).mean(-1)


def margin(sample_probs: jax.typing.ArrayLike, *, sample_axis: int | None = None) -> jax.Array:
    """Margin acquisition: ``1 - (p_top1 - p_top2)`` of the MC mean probabilities: a small gap between the two most
    likely classes ranks first (Scheffer et al. 2001); `jaxdrop.uncertainty.margin()` turned into a score.

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC samples on the pool, ``T >= 1``.
      sample_axis: where the samples are, when not first (static).

    Returns:
      ``(pool_size,)`` float32 scores in ``[0, 1]`` (0 with a single class); higher means acquire first.

    Raises:
      TypeError, ValueError: as `max_entropy()`.
    """
    sample_probs, ok = _inputs.pool_samples(sample_probs, sample_axis)
    return _inputs.guard(1.0 - _uncertainty.margin(_stats.as_float(sample_probs).mean(0)), ok)


def random(sample_probs: jax.typing.ArrayLike, *, key: jax.Array, sample_axis: int | None = None) -> jax.Array:
    """Random acquisition, the baseline every method must beat: i.i.d. uniform scores, so `top_k()` picks a uniformly
    random subset of the available candidates.

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC samples on the pool: only its shape is used (and checked, so
        every method takes the same arguments).
      key: a PRNG key; the same key gives the same scores.
      sample_axis: where the samples are, when not first (static).

    Returns:
      ``(pool_size,)`` float32 scores in ``[0, 1)``.

    Raises:
      TypeError: ``key`` is not a PRNG key; ``sample_probs`` is not floating point.
      ValueError: ``key`` is missing; ``sample_probs`` as in `max_entropy()`.
    """
    key = required_key(key, "random acquisition")
    sample_probs, _ = _inputs.pool_samples(sample_probs, sample_axis)
    return jax.random.uniform(key, sample_probs.shape[1:2], jnp.float32)


def required_key(key: object, what: str) -> jax.Array:
    """A PRNG key that ``what`` needs: None is reported as missing, anything else checked by `_checks.prng_key`."""
    if key is None:
        raise ValueError(f"`key` is required: {what} draws random numbers. Pass `key=jax.random.key(seed)`.")
    return _checks.prng_key(key, "key")


def top_k(scores: jax.typing.ArrayLike, k: int, *, mask: jax.typing.ArrayLike | None = None) -> jax.Array:
    """Indices of the ``k`` highest scores among the candidates ``mask`` allows: the next batch to label.

    Ties go to the lower index (``lax.top_k`` is stable), so the selection is a deterministic function of the scores.
    A NaN score ranks first, as in `jaxdrop.uncertainty.bald_top_k()` (a broken prediction goes to a human); with
    ``mask=None`` this is exactly ``bald_top_k`` applied to `bald()` scores.

    Args:
      scores: ``(pool_size,)`` floating-point scores, higher means acquire first (``+-inf`` allowed).
      k: how many to pick (static), in ``[1, pool_size]``.
      mask: optional ``(pool_size,)`` bool, True where a candidate may be chosen (still unlabelled).

    Returns:
      ``(k,)`` int32 pool indices, highest score first. Inside ``jit`` a mask with fewer than ``k`` True entries
      cannot raise: the missing picks are ``-1``.

    Raises:
      TypeError: ``scores`` is not floating point, ``k`` not an int, ``mask`` not boolean.
      ValueError: ``scores`` is not 1-D or is empty, ``k`` is outside ``[1, pool_size]``, ``mask`` has the wrong
        shape or (when concrete) fewer than ``k`` True entries.
    """
    scores = _checks.floating_array(scores, "scores")
    scores = _inputs.vector(scores, "scores")
    k = _checks.int_in_range(k, "k", 1, scores.shape[0])
    if mask is not None:
        mask = _inputs.pool_mask(mask, scores.shape[0], k)
    return _top_k(scores, mask, k)


def select_top_k(scores: jax.Array, mask: jax.Array | None, k: int) -> jax.Array:
    """`top_k()` on checked arguments (traceable): the selection every deterministic method shares."""
    ranked = jnp.where(jnp.isnan(scores), jnp.inf, _stats.as_float(scores))
    if mask is None:
        return lax.top_k(ranked, k)[1]
    # An allowed -inf score is raised to the lowest finite value so that it still ranks above every masked candidate.
    allowed = jnp.maximum(ranked, jnp.finfo(ranked.dtype).min)
    indices = lax.top_k(jnp.where(mask, allowed, -jnp.inf), k)[1]
    return jnp.where(mask[indices], indices, -1)


_top_k = jax.jit(select_top_k, static_argnums=2)
