"""The active-learning loop around a user's training function: which examples are labelled, which may be acquired,
and one call that scores the candidates and picks the next batch. It does not train, predict or label: the user's
code does, between two calls.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks
from jaxdrop.active import _batchbald, _epig, _scores, _stochastic
from jaxdrop.uncertainty import _inputs

SCORES = ("bald", "max_entropy", "variation_ratios", "mean_std", "margin", "random", "epig")
METHODS = (*SCORES, "batchbald")


class LoopState(NamedTuple):
    """Where the loop stands (host-side NumPy arrays: labels come from outside, one round at a time).

    Attributes:
      labelled: ``(num_labelled,)`` int64 indices of the labelled examples, in the order they were acquired.
      pool_mask: ``(num_examples,)`` bool, True for an example that is still unlabelled and may be acquired.
    """

    labelled: np.ndarray
    pool_mask: np.ndarray

    @property
    def num_labelled(self) -> int:
        return int(self.labelled.shape[0])

    @property
    def pool_indices(self) -> np.ndarray:
        """The indices still in the pool, ascending."""
        return np.flatnonzero(self.pool_mask)


def start(num_examples: int, labelled: Any = ()) -> LoopState:
    """The state of a loop over ``num_examples`` candidates, of which ``labelled`` are labelled already.

    Args:
      num_examples: the size of the candidate set (labelled and unlabelled together), ``>= 1``.
      labelled: the indices labelled at the start (e.g. a few per class), distinct, in ``[0, num_examples)``.

    Returns:
      `LoopState`.

    Raises:
      TypeError, ValueError: ``num_examples`` is not a positive int; ``labelled`` holds non-integers, repeats or
        indices out of range, or leaves no example in the pool.
    """
    num_examples = _checks.positive_int(num_examples, "num_examples")
    state = LoopState(np.zeros(0, np.int64), np.ones(num_examples, bool))
    state = add(state, labelled)
    if not state.pool_mask.any():
        raise ValueError(f"`labelled` must leave at least one example in the pool; got all {num_examples}.")
    return state


def add(state: LoopState, indices: Any) -> LoopState:
    """``state`` with ``indices`` labelled: appended to ``labelled`` and removed from the pool.

    Args:
      state: a `LoopState`.
      indices: distinct indices of examples in the pool (e.g. what `select()` returned).

    Returns:
      The new `LoopState` (``state`` is not modified).

    Raises:
      TypeError: ``indices`` is not an integer array or sequence.
      ValueError: an index is out of range, repeated, or already labelled.
    """
    indices = np.asarray(indices).reshape(-1) if not isinstance(indices, jax.Array) else np.asarray(indices).ravel()
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"`indices` must be integer example indices; got dtype {indices.dtype}.")
    indices = indices.astype(np.int64)
    size = state.pool_mask.shape[0]
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        raise ValueError(
            f"`indices` must be in [0, {size - 1}]; got values in [{indices.min()}, {indices.max()}] (a -1 is a pick "
            f"that a traced mask could not fill)."
        )
    if np.unique(indices).size != indices.size:
        raise ValueError(f"`indices` must be distinct; got {indices.tolist()}.")
    already = indices[~state.pool_mask[indices]]
    if already.size:
        raise ValueError(f"`indices` must be in the pool; {already.tolist()} are labelled already.")
    pool_mask = state.pool_mask.copy()
    pool_mask[indices] = False
    return LoopState(np.concatenate([state.labelled, indices]), pool_mask)


def select(
    sample_probs: jax.typing.ArrayLike,
    batch_size: int,
    *,
    method: str = "bald",
    key: jax.Array | None = None,
    mask: jax.typing.ArrayLike | None = None,
    stochastic: Literal["power", "softmax", "softrank"] | None = None,
    beta: jax.typing.ArrayLike = 1.0,
    target_sample_probs: jax.typing.ArrayLike | None = None,
    num_configurations: int = 1000,
) -> jax.Array:
    """The next batch by any method of this namespace, scored and selected in one jitted call.

    Args:
      sample_probs: ``(T, pool_size, num_classes)`` MC samples on the candidates (for ``"batchbald"`` and
        ``"epig"``, function samples: see `batchbald()`).
      batch_size: how many to acquire (static), in ``[1, pool_size]``.
      method: ``"bald"``, ``"max_entropy"``, ``"variation_ratios"``, ``"mean_std"``, ``"margin"``, ``"random"``,
        ``"epig"`` (scores, then `top_k()` or `stochastic_batch()`) or ``"batchbald"`` (`batchbald()`).
      key: a PRNG key, needed by ``"random"``, by ``stochastic`` and by ``"batchbald"`` when it samples.
      mask: optional ``(pool_size,)`` bool, True where a candidate may be chosen (`LoopState.pool_mask`). Keeping
        the candidate set fixed and masking it keeps the shapes fixed: the program compiles once for all rounds.
      stochastic: None (top-k) or the `stochastic_batch()` mode that draws the batch from the scores.
      beta: `stochastic_batch()`'s inverse temperature.
      target_sample_probs: ``"epig"``'s samples on target inputs (see `epig()`); only for ``"epig"``.
      num_configurations: `batchbald()`'s configuration budget.

    Returns:
      ``(batch_size,)`` int32 indices into the candidates (-1 only for picks a traced mask could not fill).

    Raises:
      ValueError, TypeError: as the chosen method; an unknown ``method``; ``stochastic`` with ``"batchbald"``;
        ``target_sample_probs`` missing for ``"epig"`` or given to another method.
    """
    method = _checks.choice(method, METHODS, "method")
    sample_probs, _ = _inputs.pool_samples(sample_probs)  # values checked once here, traced in the program
    batch_size = _checks.int_in_range(batch_size, "batch_size", 1, sample_probs.shape[1])
    stochastic_mode = None if stochastic is None else _checks.choice(stochastic, _stochastic.MODES, "stochastic")
    if stochastic_mode is not None:
        if method == "batchbald":
            raise ValueError("`stochastic` must be None with `method`='batchbald' (it selects greedily).")
    if (method == "epig") != (target_sample_probs is not None):
        raise ValueError("`target_sample_probs` must be given with `method`='epig', and only then.")
    if target_sample_probs is not None:
        target_sample_probs, _ = _inputs.pool_samples(target_sample_probs, name="target_sample_probs")
    if mask is not None:
        mask = _inputs.pool_mask(mask, sample_probs.shape[1], batch_size)
    needs_key = method == "random" or stochastic_mode is not None
    if method == "batchbald":
        num_configurations = _checks.positive_int(num_configurations, "num_configurations")
        needs_key = batch_size > 1 and sample_probs.shape[2] ** (batch_size - 1) > num_configurations
    if needs_key:
        key = _scores.required_key(
            key, f"`method`={method!r}" + (f" with `stochastic`={stochastic_mode!r}" if stochastic_mode else "")
        )
    elif key is not None:
        key = _checks.prng_key(key, "key")
    beta = _checks.non_negative(beta, "beta")
    options = (method, batch_size, stochastic_mode, num_configurations)
    return _select(sample_probs, target_sample_probs, key, mask, jnp.asarray(beta, jnp.float32), options)


@functools.partial(jax.jit, static_argnums=5)
def _select(sample_probs, target_sample_probs, key, mask, beta, options):
    method, batch_size, stochastic, num_configurations = options
    if method == "batchbald":
        return _batchbald.batchbald(
            sample_probs, batch_size, key=key, mask=mask, num_configurations=num_configurations
        ).indices
    if method == "random":
        scores = _scores.random(sample_probs, key=key)
    elif method == "epig":
        scores = _epig.epig(sample_probs, target_sample_probs)
    else:
        scores = getattr(_scores, method)(sample_probs)
    if stochastic is None:
        return _scores.select_top_k(scores, mask, batch_size)
    score_key = key if method != "random" else jax.random.fold_in(key, 1)
    return _stochastic.stochastic_batch(scores, batch_size, key=score_key, mode=stochastic, beta=beta, mask=mask)


def step(
    state: LoopState, sample_probs: jax.typing.ArrayLike, batch_size: int, **options: Any
) -> tuple[LoopState, np.ndarray]:
    """One round: `select()` among ``state``'s pool, then `add()` the picks.

    Args:
      state: the `LoopState`; ``sample_probs`` covers all its ``num_examples`` candidates (labelled ones included,
        masked out), so shapes stay fixed from round to round.
      sample_probs: ``(T, num_examples, num_classes)`` MC samples of the current model on every candidate.
      batch_size: how many to acquire this round.
      **options: `select()`'s keyword arguments (``method``, ``key``, ``stochastic``...) except ``mask``.

    Returns:
      ``(new_state, indices)``: the indices acquired (NumPy int64), for the user to label.

    Raises:
      ValueError, TypeError: as `select()`; ``mask`` among ``options``; fewer than ``batch_size`` examples left.
    """
    if "mask" in options:
        raise ValueError("`mask` is the state's pool: `step` passes `state.pool_mask`; do not pass it.")
    indices = np.asarray(select(sample_probs, batch_size, mask=jnp.asarray(state.pool_mask), **options))
    return add(state, indices), indices.astype(np.int64)
