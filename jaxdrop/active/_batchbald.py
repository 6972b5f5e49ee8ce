"""BatchBALD (Kirsch, van Amersfoort & Gal 2019, "BatchBALD: Efficient and Diverse Batch Acquisition for Deep
Bayesian Active Learning", NeurIPS): greedy selection on the joint mutual information of the batch.

The joint entropy of the labels already chosen and a candidate is computed over class configurations of the chosen
points: exactly (all ``num_classes ** n`` configurations) while there are at most ``num_configurations`` of them,
then on ``M`` sampled configurations, the estimator of the paper's appendix. Both are one formula,
``H[y_1..n, y] = sum_m w_m sum_c entr(p(config_m, y=c))`` with ``p(config_m, y) = mean_k P_k(config_m) p_k(y)``:
exact configurations weigh 1, sampled ones ``1 / (M p(config_m))`` (importance weights of configurations drawn from
their joint).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy import special

from jaxdrop import _checks, _stats
from jaxdrop import uncertainty as _uncertainty
from jaxdrop.uncertainty import _inputs

_CHUNK_ELEMENTS = 1 << 21  # floats of the (chunk, configurations, classes) joint held at once: 8 MiB


class BatchBALDResult(NamedTuple):
    """What `batchbald()` selected.

    Attributes:
      indices: ``(batch_size,)`` int32 pool indices in the order they were chosen (-1 for a pick that a traced mask
        with too few candidates could not fill).
      joint_mutual_information: ``(batch_size,)`` float32: entry ``n`` is the (estimated) mutual information between
        the labels of the first ``n + 1`` chosen candidates and the model. Entry 0 is the BALD score of the first
        pick; the increments shrink as the batch grows redundant.
    """

    indices: jax.Array
    joint_mutual_information: jax.Array


def batchbald(
    sample_probs: jax.typing.ArrayLike,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    mask: jax.typing.ArrayLike | None = None,
    num_configurations: int = 1000,
    sample_axis: int | None = None,
) -> BatchBALDResult:
    """Greedy BatchBALD: picks the candidate that most increases the joint mutual information ``I[y_1..n; w]``.

    ``a(x_1..n) = H[y_1..n] - sum_i E_w H[y_i | w]`` (Kirsch et al. 2019, eq. 8); each greedy step adds the
    candidate with the largest ``a``, a ``1 - 1/e`` approximation of the best batch (the function is submodular).
    The conditional entropies are `jaxdrop.uncertainty.expected_entropy()`; the joint entropy is exact over the
    ``num_classes ** (n - 1)`` configurations of the chosen labels while they number at most
    ``num_configurations``, then estimated on ``num_configurations`` configurations sampled from their joint
    (stratified: the same number from each MC sample ``k``), the paper's memory-bounded estimator (appendix C).

    **Function samples.** The joint needs each MC sample ``t`` to be one function: the same dropout masks on every
    pool candidate (``jaxdrop.mc.predict(..., function_samples=True)``). Samples drawn with an independent mask per
    input make the labels look independent given ``w`` and BatchBALD degenerates to top-k BALD.

    Ties (equal scores) go to the lower index. Deterministic unless configurations are sampled.

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC function samples of the probabilities on the pool.
      batch_size: how many to acquire (static), in ``[1, pool_size]``.
      key: a PRNG key for the sampled configurations; needed only when ``batch_size`` is large enough to need
        them (``num_classes ** (batch_size - 1) > num_configurations``); a missing key is then an error.
      mask: optional ``(pool_size,)`` bool, True where a candidate may be chosen.
      num_configurations: ``M``, the most class configurations held (static, ``>= 1``); memory and time grow as
        ``pool_size * T * M * num_classes``. Rounded up to a multiple of ``T`` when sampling.
      sample_axis: where the samples are, when not first (static).

    Returns:
      `BatchBALDResult`: the chosen ``indices`` and the ``joint_mutual_information`` after each pick.

    Raises:
      TypeError: ``sample_probs`` is not floating point; ``key``, ``mask`` or an int argument has the wrong type.
      ValueError: ``sample_probs`` is not 3-D, is empty or (when concrete) not probabilities; ``batch_size`` is
        outside ``[1, pool_size]``; ``mask`` has the wrong shape or too few candidates; sampling is needed and
        ``key`` is None.
    """
    sample_probs, ok = _inputs.pool_samples(sample_probs, sample_axis)
    _, pool_size, num_classes = sample_probs.shape
    batch_size = _checks.int_in_range(batch_size, "batch_size", 1, pool_size)
    num_configurations = _checks.positive_int(num_configurations, "num_configurations")
    if mask is not None:
        mask = _inputs.pool_mask(mask, pool_size, batch_size)
    needs_key = batch_size > 1 and num_classes ** (batch_size - 1) > num_configurations
    if needs_key:
        if key is None:
            raise ValueError(
                f"`key` is required: {batch_size} picks of {num_classes} classes need more than "
                f"`num_configurations`={num_configurations} joint configurations, which are then sampled. Pass "
                f"`key=jax.random.key(seed)`, or raise `num_configurations` to at least "
                f"{num_classes ** (batch_size - 1)} for the exact joint."
            )
        key = _checks.prng_key(key, "key")
    elif key is not None:
        key = _checks.prng_key(key, "key")
    else:
        key = jax.random.key(0)  # unused: every step is exact
    conditional = _uncertainty.expected_entropy(sample_probs)
    result = _batchbald(_stats.as_float(sample_probs), conditional, mask, key, batch_size, num_configurations)
    return _inputs.guard(result, ok)


def _entropy_terms(joint: jax.Array, weights: jax.Array, probs: jax.Array) -> jax.Array:
    """``sum_m w_m sum_c entr(mean_k P_k(m) p_k(c))`` for every candidate: ``joint (K, M)``, ``probs (K, N, C)``.

    Chunks of candidates go through one matrix product ``(M, K) @ (K, chunk * C)`` each (one GEMM instead of a
    batch of small ones), so memory stays ``O(M * chunk * C)``.
    """
    num_samples, num_configs = joint.shape
    _, pool_size, num_classes = probs.shape
    chunk = min(pool_size, max(1, _CHUNK_ELEMENTS // (num_configs * num_classes)))
    num_chunks = -(-pool_size // chunk)
    padded = jnp.pad(probs, ((0, 0), (0, num_chunks * chunk - pool_size), (0, 0)), constant_values=1.0 / num_classes)
    chunks = padded.reshape(num_samples, num_chunks, chunk * num_classes).swapaxes(0, 1)  # (chunks, K, chunk * C)

    def one(block: jax.Array) -> jax.Array:
        p = (joint.T @ block / num_samples).reshape(num_configs, chunk, num_classes)
        return weights @ special.entr(p).sum(-1)  # (chunk,)

    return jax.lax.map(one, chunks).reshape(-1)[:pool_size]


@functools.partial(jax.jit, static_argnums=(4, 5))
def _batchbald(sample_probs, conditional, mask, key, batch_size, num_configurations):
    num_samples, pool_size, num_classes = sample_probs.shape
    available = jnp.ones(pool_size, bool) if mask is None else mask
    chosen = jnp.full(batch_size, -1, jnp.int32)
    gains = jnp.zeros(batch_size, jnp.float32)
    conditional_sum = jnp.zeros((), jnp.float32)

    def pick(scores, available, chosen, gains, conditional_sum, step):
        ranked = jnp.where(jnp.isnan(scores), jnp.inf, scores)
        index = jnp.argmax(jnp.where(available, ranked, -jnp.inf))  # the first maximum: ties to the lower index
        chosen = chosen.at[step].set(jnp.where(available[index], index, -1).astype(jnp.int32))
        gains = gains.at[step].set(scores[index] - conditional_sum)
        return index, available.at[index].set(False), chosen, gains, conditional_sum + conditional[index]

    # Exact phase (unrolled: the number of configurations grows by a factor num_classes per pick).
    joint = jnp.ones((num_samples, 1), jnp.float32)  # P_k(configuration) of the labels chosen so far
    step = 0
    while True:
        weights = jnp.ones(joint.shape[1], jnp.float32)
        scores = _entropy_terms(joint, weights, sample_probs) - conditional
        index, available, chosen, gains, conditional_sum = pick(scores, available, chosen, gains, conditional_sum, step)
        step += 1
        if step == batch_size or joint.shape[1] * num_classes > num_configurations:
            break
        joint = (joint[:, :, None] * sample_probs[:, index, None, :]).reshape(num_samples, -1)
    if step == batch_size:
        return BatchBALDResult(chosen, gains)

    # Sampled phase: M configurations, the same number drawn from each MC sample k (stratified), with fixed shapes,
    # so the remaining picks are one loop.
    per_sample = max(1, math.ceil(num_configurations / num_samples))
    owner = jnp.arange(num_samples * per_sample) // per_sample  # the MC sample each configuration was drawn from

    def extend(joint, log_mass, index, draw):
        column = sample_probs[:, index]  # (K, C)
        classes = jax.random.categorical(draw, jnp.log(column[owner]))  # one class per configuration
        joint = joint * column[:, classes]
        # Normalise each configuration to mean 1 over k and keep its log mass: no underflow however long the batch,
        # and the importance weight 1 / (M p(config)) becomes 1 / M with an offset shared by every candidate.
        mass = jnp.where(joint.mean(0) > 0, joint.mean(0), 1.0)
        return joint / mass, log_mass + jnp.log(mass)

    joint = jnp.ones((num_samples, owner.shape[0]), jnp.float32)
    log_mass = jnp.zeros(owner.shape[0], jnp.float32)
    for previous in range(step):
        joint, log_mass = extend(joint, log_mass, chosen[previous], jax.random.fold_in(key, previous))
    weights = jnp.full(owner.shape[0], 1.0 / owner.shape[0], jnp.float32)

    def body(step, carry):
        joint, log_mass, available, chosen, gains, conditional_sum = carry
        scores = _entropy_terms(joint, weights, sample_probs) - log_mass.mean() - conditional
        index, available, chosen, gains, conditional_sum = pick(scores, available, chosen, gains, conditional_sum, step)
        joint, log_mass = extend(joint, log_mass, index, jax.random.fold_in(key, step))
        return joint, log_mass, available, chosen, gains, conditional_sum

    carry = jax.lax.fori_loop(step, batch_size, body, (joint, log_mass, available, chosen, gains, conditional_sum))
    return BatchBALDResult(carry[3], carry[4])
