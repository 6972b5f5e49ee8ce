"""Key helpers: one independent key per layer, per step and per sample, derived with ``fold_in``."""

from __future__ import annotations

import hashlib

import jax


def _as_int(item: int | str | jax.typing.ArrayLike) -> int | jax.typing.ArrayLike:
    if isinstance(item, str):  # a stable 32-bit name hash, the same in every process (unlike hash())
        return int.from_bytes(hashlib.blake2s(item.encode(), digest_size=4).digest(), "little")
    return item


def fold_in(key: jax.Array, *data: int | str | jax.typing.ArrayLike) -> jax.Array:
    """Folds each item of ``data`` into ``key`` in turn: a new key per layer name, step or sample index.

    Strings (layer paths) are hashed to 32 bits with BLAKE2s; integers and traced integer scalars (a step
    counter inside ``jit``) are folded as they are. Distinct data give independent keys.

    Args:
      key: a typed or legacy PRNG key.
      *data: layer names, step numbers, sample indices, in any order you keep consistent.

    Returns:
      A key of the same kind as ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> root = jax.random.key(0)
      >>> k1 = jaxdrop.fold_in(root, "encoder/dropout_1", 7)  # layer path, then step
      >>> k2 = jaxdrop.fold_in(root, "encoder/dropout_2", 7)
      >>> x = jnp.ones(1000)
      >>> bool((jaxdrop.dropout(x, 0.5, key=k1) != jaxdrop.dropout(x, 0.5, key=k2)).any())
      True
    """
    for item in data:
        key = jax.random.fold_in(key, _as_int(item))
    return key
