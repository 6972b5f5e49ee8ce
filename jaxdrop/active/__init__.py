"""Active learning with MC dropout: which unlabelled examples to label next.

- Scores of each pool candidate from MC samples ``(T, pool_size, num_classes)``, higher means acquire first:
  `max_entropy()`, `bald()` (Houlsby et al. 2011), `variation_ratios()`, `mean_std()`, `margin()`, `random()`
  (keyed), and `epig()` (Smith et al. 2023: expected information about the predictions on a target pool).
- Batches: `top_k()` (deterministic: ties go to the lower index), `stochastic_batch()` (Kirsch et al. 2023:
  power / softmax / soft-rank sampling, keyed) and `batchbald()` (Kirsch et al. 2019: greedy on the joint mutual
  information, exact joint while it fits in ``num_configurations``, then sampled configurations).
- The loop: `start()` / `LoopState` (labelled indices and the pool mask), `select()` (any method in one jitted call),
  `add()` and `step()` (select then add). The loop wraps the user's training; it never trains.

Every function is a pure ``jax.numpy`` program that can be ``jit``-ed (sizes and method names are static). Inputs
are checked as in ``jaxdrop.uncertainty``: shapes always, values when concrete; inside ``jit`` invalid
probabilities give NaN scores. No Flax import.
"""

from jaxdrop.active._batchbald import BatchBALDResult, batchbald
from jaxdrop.active._epig import epig
from jaxdrop.active._loop import LoopState, add, select, start, step
from jaxdrop.active._scores import bald, margin, max_entropy, mean_std, random, top_k, variation_ratios
from jaxdrop.active._stochastic import stochastic_batch

__all__ = [
    "BatchBALDResult",
    "LoopState",
    "add",
    "bald",
    "batchbald",
    "epig",
    "margin",
    "max_entropy",
    "mean_std",
    "random",
    "select",
    "start",
    "step",
    "stochastic_batch",
    "top_k",
    "variation_ratios",
]
