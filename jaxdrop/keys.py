"""Key helpers: one independent key per layer, per step and per sample, derived with ``fold_in``."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks

# ``jax.random.fold_in`` folds 32 bits: a static int outside this range would be wrapped or rejected by JAX.
_MAX_DATA = 2**32 - 1
_ACCEPTED = f"a str, an int in [0, {_MAX_DATA}] (2**32 - 1) or a traced integer scalar"


def _as_uint32(item: object, name: str) -> int | jax.Array:
    """The 32-bit word folded for one item of ``data``: distinct accepted items give distinct words, except
    strings, which are hashed (two distinct strings collide with probability 2**-32)."""
    if isinstance(item, str):  # a stable 32-bit name hash, the same in every process (unlike hash())
        return int.from_bytes(hashlib.blake2s(item.encode(), digest_size=4).digest(), "little")
    if isinstance(item, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be {_ACCEPTED}; got {item!r}: a bool would give the key of {int(item)}.")
    if isinstance(item, jax.core.Tracer):  # its value is unknown: only its dtype and shape can be checked
        if jnp.ndim(item) != 0:
            raise ValueError(
                f"`{name}` must be a scalar; got a traced array of shape {jnp.shape(item)}. Use "
                f"`jax.vmap(lambda i: jaxdrop.fold_in(key, i))(indices)` for one key per index."
            )
        if not jnp.issubdtype(item.dtype, jnp.integer):
            raise TypeError(f"`{name}` must be {_ACCEPTED}; got a traced value of dtype {item.dtype}.")
        return item
    if isinstance(item, (jax.Array, np.ndarray, np.generic)):
        if np.ndim(item) != 0:
            raise ValueError(
                f"`{name}` must be a scalar; got an array of shape {np.shape(item)}. Fold the items one at a "
                f"time, or `jax.vmap` over them for one key each."
            )
        if not jnp.issubdtype(item.dtype, jnp.integer):
            raise TypeError(f"`{name}` must be {_ACCEPTED}; got {_checks.describe(item)}.")
    elif not isinstance(item, int):
        hint = " A float is not folded: 0.3 and 0.7 would both give the key of 0." if isinstance(item, float) else ""
        raise TypeError(f"`{name}` must be {_ACCEPTED}; got {_checks.describe(item)}.{hint}")
    return _checks.int_in_range(item, name, 0, _MAX_DATA)


def fold_in(key: jax.Array, *data: int | str | jax.typing.ArrayLike) -> jax.Array:
    """Folds each item of ``data`` into ``key`` in turn: a new key per layer name, step or sample index.

    Accepted items, each giving its own key:

    - ``str`` (a layer path): hashed to 32 bits with BLAKE2s, the same in every process. Two distinct strings
      share a hash with probability 2**-32, and a string gives the key of the int equal to its hash: keep strings
      and ints in separate positions (``fold_in(key, name, step)``).
    - ``int`` in ``[0, 2**32 - 1]``, Python or NumPy, or a concrete 0-d integer array: folded as it is.
      A negative int or one of 2**32 or more raises ``ValueError`` rather than wrapping onto another int's key
      (reduce it first, e.g. ``step % 2**32``).
    - a traced integer scalar (a step counter inside ``jit``, an index under ``vmap``): folded as a uint32. Its
      value is unknown at trace time, so it cannot be checked: keep it in ``[0, 2**32 - 1]`` (a negative int32
      wraps, -1 giving the key of 2**32 - 1; a 64-bit value keeps its low 32 bits).

    Floats (0.3 would give the key of 0), bools (True would give the key of 1), bytes, None and arrays of more
    than one element raise ``TypeError`` or ``ValueError`` naming the item (``data[i]``).

    On many devices and hosts, give every host the same root key (from a seed in the run's configuration, never
    from ``jax.process_index()``): masks depend on each element's global index, so every device draws its own shard
    of one mask. Fold in the step (``fold_in(root, step)``) for a new mask each step, with no key state to carry or
    checkpoint, and the layer index in a ``scan`` over stacked layers (``fold_in(step_key, layer)``); see the guide
    "Dropout on many devices and hosts" (docs/guide/distributed.md).

    Args:
      key: a typed or legacy PRNG key.
      *data: layer names, step numbers, sample indices, in any order you keep consistent.

    Returns:
      A key of the same kind as ``key``.

    Raises:
      TypeError: ``key`` is not a PRNG key, or an item is not a str, an int or an integer scalar.
      ValueError: an int outside ``[0, 2**32 - 1]``, or an array item that is not a scalar.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> root = jax.random.key(0)
      >>> k1 = jaxdrop.fold_in(root, "encoder/dropout_1", 7)  # layer path, then step
      >>> k2 = jaxdrop.fold_in(root, "encoder/dropout_2", 7)
      >>> x = jnp.ones(1000)
      >>> bool((jaxdrop.dropout(x, 0.5, key=k1) != jaxdrop.dropout(x, 0.5, key=k2)).any())
      True
    """
    key = _checks.prng_key(key, "key")
    words = [_as_uint32(item, f"data[{index}]") for index, item in enumerate(data)]  # all checked before folding
    for word in words:
        key = jax.random.fold_in(key, word)
    return key
