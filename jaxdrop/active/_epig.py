"""EPIG (Smith, Kirsch, Farquhar, Gal, Foster & Rainforth 2023, "Prediction-Oriented Bayesian Active Learning",
AISTATS): the expected predictive information gain, ``E_{x*}[I(y; y* | x, x*)]``.

BALD values information about the parameters, some of which never matters for the predictions one cares about; EPIG
values information about the labels ``y*`` of target inputs ``x*`` drawn from the distribution the model will be
used on. With MC function samples ``p_k``, ``p(y, y*) = mean_k p_k(y | x) p_k(y* | x*)`` and
``I(y; y*) = H[y] + H[y*] - H[y, y*]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import special

from jaxdrop import _stats
from jaxdrop import uncertainty as _uncertainty
from jaxdrop.uncertainty import _inputs

_CHUNK_ELEMENTS = 1 << 21  # floats of the (chunk, targets, classes, classes) joint held at once: 8 MiB


def epig(
    sample_probs: jax.typing.ArrayLike,
    target_sample_probs: jax.typing.ArrayLike,
    *,
    sample_axis: int | None = None,
) -> jax.Array:
    """Expected predictive information gain of each pool candidate about the labels of a target set.

    ``EPIG(x) = mean_j [H[y] + H[y*_j] - H[y, y*_j]]`` with ``p(y, y*_j) = mean_k p_k(y | x) p_k(y*_j | x*_j)``
    (Smith et al. 2023, eq. 6, the classification estimator of their section 5). The pool is processed in chunks, so
    memory stays ``O(chunk * num_targets * num_classes ** 2)``.

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC samples on the pool.
      target_sample_probs: ``(T, num_targets, num_classes)`` samples on target inputs (unlabelled inputs from the
        test distribution) from the **same** ``T`` functions: sample ``k`` of both must share its dropout masks
        (draw both in one call of ``jaxdrop.mc.predict(..., function_samples=True)`` on their concatenation).
      sample_axis: where the samples are in both, when not first (static).

    Returns:
      ``(pool_size,)`` float32 scores in ``[0, log num_classes]`` (nats); higher means acquire first. Inside ``jit``,
      invalid probabilities in either input make every score NaN.

    Raises:
      TypeError: an input is not floating point.
      ValueError: an input is not 3-D or empty or (when concrete) not probabilities; the two disagree on the
        number of samples or of classes.
    """
    sample_probs, ok = _inputs.pool_samples(sample_probs, sample_axis)
    target_sample_probs, target_ok = _inputs.pool_samples(target_sample_probs, sample_axis, "target_sample_probs")
    if target_sample_probs.shape[0] != sample_probs.shape[0] or target_sample_probs.shape[2] != sample_probs.shape[2]:
        raise ValueError(
            f"`target_sample_probs` must hold the same number of samples (functions) and classes as "
            f"`sample_probs`; got shapes {target_sample_probs.shape} and {sample_probs.shape}."
        )
    pool_entropy = _uncertainty.predictive_entropy(_stats.as_float(sample_probs).mean(0))
    target_entropy = _uncertainty.predictive_entropy(_stats.as_float(target_sample_probs).mean(0))
    scores = _epig(_stats.as_float(sample_probs), _stats.as_float(target_sample_probs), pool_entropy, target_entropy)
    return _inputs.guard(scores, ok, target_ok)


@jax.jit
def _epig(sample_probs, target_sample_probs, pool_entropy, target_entropy):
    num_samples, num_targets, num_classes = target_sample_probs.shape
    chunk = max(1, _CHUNK_ELEMENTS // (num_targets * num_classes * num_classes))

    def one(candidate: jax.Array) -> jax.Array:  # (K, C) -> mean over targets of H[y, y*]
        joint = jnp.einsum("kc,kjd->jcd", candidate, target_sample_probs) / num_samples
        return special.entr(joint).sum((1, 2)).mean()

    probs = jnp.swapaxes(sample_probs, 0, 1)
    joint_entropy = jax.lax.map(one, probs, batch_size=min(chunk, probs.shape[0]))
    return jnp.maximum(pool_entropy + target_entropy.mean() - joint_entropy, 0.0)
