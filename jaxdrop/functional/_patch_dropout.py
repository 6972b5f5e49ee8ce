"""PatchDropout: keep a random subset of tokens by gathering them, so the layers after it run on fewer tokens."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks, _masks


def num_kept(keep: object, num_tokens: int, name: str = "keep") -> int:
    """How many of ``num_tokens`` a ``keep`` fraction (a float in (0, 1]) or count (an int in [1, num_tokens]) keeps.

    A fraction keeps ``max(1, floor(num_tokens * keep))`` tokens, as timm's ``PatchDropout``
    (``max(1, int(L * (1 - prob)))``); an int is the count itself.
    """
    if isinstance(keep, numbers.Integral) and not isinstance(keep, (bool, np.bool_)):
        return _checks.int_in_range(keep, name, 1, max(num_tokens, 1))
    if isinstance(keep, jax.core.Tracer):
        raise TypeError(
            f"`{name}` must be static (it sets the number of tokens, a shape); got {_checks.describe(keep)}."
        )
    fraction = _checks.probability(keep, name)  # type: ignore[arg-type]  # checked: a number or an error
    if fraction == 0.0:
        raise ValueError(
            f"`{name}` must be a fraction in (0, 1] or a count in [1, {num_tokens}]; got 0.0 (no token kept)."
        )
    return max(1, math.floor(num_tokens * float(fraction)))


def patch_dropout(
    x: jax.typing.ArrayLike,
    keep: float | int,
    *,
    key: jax.Array | None = None,
    num_prefix_tokens: int = 0,
    return_indices: bool = False,
    deterministic: bool = False,
    generator: _masks.Generator = "fast",
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Keeps a random subset of the tokens of each example, gathered, so later layers process fewer tokens.

    Use it on the patch tokens of a vision transformer after the position embedding is added (Liu et al. 2023,
    "PatchDropout: Economizing Vision Transformers Using Patch Dropout", WACV; timm's ``PatchDropout``): keeping
    half of the patches in training roughly halves the cost of every block after it (more than half for the
    attention, which is quadratic in the tokens) and regularises like a random crop. Unlike ``token_dropout``,
    which zeroes tokens and still pays for them, the output is shorter. The first ``num_prefix_tokens`` tokens
    (a class token, register tokens) are always kept, in front.

    Each example draws its own subset, uniformly among the subsets of that size. The kept tokens stay in their
    original order (the indices are sorted): nothing after a ViT's position embedding depends on the order, but
    a causal mask, a relative-position bias or a later merge back into the full sequence (``return_indices``)
    does, and sorting a few hundred indices costs nothing next to a block. Nothing is rescaled: tokens are not
    averaged, so no expectation needs preserving.

    Args:
      x: floating-point tokens, ``(batch, tokens, ...)`` (rank >= 2); the output has the same dtype.
      keep: how many of the ``tokens - num_prefix_tokens`` patch tokens to keep: a fraction in (0, 1] (at least
        one token is kept: ``max(1, floor(n * keep))``) or a count, an int in [1, n]. Static (it sets the output
        shape).
      key: PRNG key; required unless ``deterministic``.
      num_prefix_tokens: leading tokens always kept (0 for none, 1 for a class token), an int in
        [0, tokens - 1].
      return_indices: also return the indices, into the patch tokens (after the prefix), of the kept tokens.
      deterministic: if True, ``x`` is returned unchanged (and, with ``return_indices``, every patch index).
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``: which generator draws the uniform variates whose top
        ``keep`` choose the tokens.

    Returns:
      ``(batch, num_prefix_tokens + kept, ...)`` tokens with the dtype of ``x``; with ``return_indices``, the
      pair ``(tokens, indices)`` with ``indices`` of shape ``(batch, kept)`` (int32, increasing).

    Raises:
      TypeError: ``x`` is not floating point, ``keep`` is not a number, ``num_prefix_tokens`` not an int, a flag
        not a bool, or ``key`` is not a PRNG key.
      ValueError: rank below 2, ``keep`` out of range (a fraction 0 or above 1, a count below 1 or above the
        patch tokens), ``num_prefix_tokens`` negative or not smaller than the sequence, or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jnp.arange(2 * 9, dtype=jnp.float32).reshape(2, 9, 1)  # a class token and 8 patches
      >>> y, kept = jaxdrop.patch_dropout(x, 0.5, key=jax.random.key(0), num_prefix_tokens=1, return_indices=True)
      >>> y.shape, kept.shape
      ((2, 5, 1), (2, 4))
      >>> bool((y[:, 0] == x[:, 0]).all())  # the class token is always kept
      True
    """
    x = _checks.floating_array(x)
    if x.ndim < 2:
        raise ValueError(f"`x` must have a batch axis and a token axis (rank >= 2); got shape {x.shape}.")
    batch, length = x.shape[:2]
    if length < 1:
        raise ValueError(f"`x` must have at least one token (axis 1); got shape {x.shape}.")
    prefix = _checks.int_in_range(num_prefix_tokens, "num_prefix_tokens", 0, max(length - 1, 0))
    count = num_kept(keep, length - prefix)
    return_indices = _checks.static_bool(return_indices, "return_indices")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    _checks.choice(generator, _masks.GENERATORS, "generator")
    if deterministic or count == length - prefix:
        out = x
        indices = jnp.broadcast_to(jnp.arange(length - prefix, dtype=jnp.int32), (batch, length - prefix))
    else:
        key = _checks.key(key, site="patch_dropout")
        scores = _masks.uniform(key, (batch, length - prefix), generator)
        indices = jnp.sort(lax.top_k(scores, count)[1].astype(jnp.int32), axis=-1)
        gather = indices.reshape(indices.shape + (1,) * (x.ndim - 2))
        patches = jnp.take_along_axis(x[:, prefix:], gather, axis=1)
        out = jnp.concatenate([x[:, :prefix], patches], axis=1) if prefix else patches
    return (out, indices) if return_indices else out
