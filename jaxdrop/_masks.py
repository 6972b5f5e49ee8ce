"""How keep-masks are made from keys: the one module that touches random bits.

Two generators:

``"fast"`` (default)
    Threefry-2x32 with 13 rounds (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; 13 is the
    smallest round count they found Crush-resistant) keyed by two words derived from the JAX key, evaluated on
    each element's *global* index. It is written in ``jax.numpy`` so XLA fuses it into the loop that applies the
    mask: no bits array is materialised, and a mask element depends only on the key and its index, so masks are
    identical under any device mesh and ``vmap`` over keys equals a loop over keys. The drop decision compares the
    32 random bits with an integer threshold, so it is never quantised by a low-precision input dtype: the keep
    probability is a multiple of 2**-32 (static rates are rounded in float64 on the host; traced rates in float32,
    i.e. to about 6e-8).

``"jax"``
    ``jax.random.bernoulli(key, 1 - rate, shape)``, exactly what ``flax.linen.Dropout``, ``flax.nnx.Dropout`` and
    ``equinox.nn.Dropout`` draw, for users who need identical masks. Its keep probability resolution is 2**-23.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Generator = Literal["fast", "jax"]
GENERATORS: tuple[str, ...] = ("fast", "jax")

THREEFRY_ROUNDS = 13
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)  # Threefry-2x32 rotation constants (Skein 1.3 / Random123)
_KEY_PARITY = 0x1BD11BDA
_TWO32 = 2**32
# Largest float32 below 2**32: the clip bound for a traced threshold before converting to uint32.
_MAX_F32_THRESHOLD = float(np.nextafter(np.float32(_TWO32), np.float32(0)))


def threefry2x32(
    key: tuple[jax.Array, jax.Array],
    counter: tuple[jax.Array, jax.Array],
    rounds: int = THREEFRY_ROUNDS,
) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 block function on uint32 words, elementwise over broadcastable counters.

    Matches the Random123 reference (its known-answer vectors are in the tests) for any round count; with
    ``rounds=20`` it equals ``jax.extend.random.threefry_2x32``.
    """
    k0, k1 = (jnp.asarray(k, jnp.uint32) for k in key)
    schedule = (k0, k1, k0 ^ k1 ^ jnp.uint32(_KEY_PARITY))
    x0 = jnp.asarray(counter[0], jnp.uint32) + k0
    x1 = jnp.asarray(counter[1], jnp.uint32) + k1
    for r in range(rounds):
        rot = _ROTATIONS[r % 8]
        x0 = x0 + x1
        x1 = (x1 << jnp.uint32(rot)) | (x1 >> jnp.uint32(32 - rot))
        x1 = x1 ^ x0
        if r % 4 == 3:  # key injection after every fourth round
            s = (r + 1) // 4
            x0 = x0 + schedule[s % 3]
            x1 = x1 + schedule[(s + 1) % 3] + jnp.uint32(s)
    return x0, x1


def element_counters(shape: tuple[int, ...], _word_limit: int = _TWO32) -> tuple[jax.Array, jax.Array]:
    """Two uint32 counter words that name every element of ``shape`` uniquely by its global position.

    Built from ``broadcasted_iota`` so the SPMD partitioner gives each shard its global indices. Below 2**32
    elements the words are (row-major linear index, 0); beyond, the leading axes move into the second word.
    (``_word_limit`` exists so tests can exercise the split on small shapes.)
    """
    split = 0
    while math.prod(shape[split:]) >= _word_limit:
        split += 1
    if math.prod(shape[:split]) >= _word_limit:
        raise ValueError(f"mask shape {shape} has an axis of 2**32 elements or more; this is not supported.")

    def linear_index(axes: range) -> jax.Array:
        index = jnp.zeros(shape, jnp.uint32)
        for position, axis in enumerate(axes):
            iota = lax.broadcasted_iota(jnp.uint32, shape, axis)
            index = iota if position == 0 else index * jnp.uint32(shape[axis]) + iota
        return index

    return linear_index(range(split, len(shape))), linear_index(range(split))


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    # Two words from JAX's own key derivation: every key implementation (threefry, rbg, legacy uint32[2]) maps to
    # well-mixed Threefry key words, and related user keys (seeds 0, 1, 2...) give unrelated streams.
    words = jax.random.bits(key, (2,), jnp.uint32)
    return words[0], words[1]


def block_at(key: jax.Array, counters: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Both uint32 output words of the fast generator at the given counter words (any broadcastable shape)."""
    return threefry2x32(_key_words(key), counters)


def random_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 bits of the fast generator for ``shape``: a pure function of the key and each element's index."""
    return block_at(key, element_counters(shape))[0]


def drop_threshold(rate: float | jax.Array) -> np.uint32 | jax.Array:
    """An element is kept when its 32 random bits are ``>=`` this threshold (``round(rate * 2**32)``)."""
    if isinstance(rate, float):
        return np.uint32(min(round(rate * _TWO32), _TWO32 - 1))
    scaled = jnp.clip(jnp.asarray(rate, jnp.float32) * jnp.float32(_TWO32), 0.0, _MAX_F32_THRESHOLD)
    return scaled.astype(jnp.uint32)


def keep_from_bits(bits: jax.Array, rate: float | jax.Array) -> jax.Array:
    """True where ``bits`` (uniform uint32) pass the drop threshold: probability ``1 - rate``, exact at 0 and 1."""
    keep = bits >= drop_threshold(rate)
    if not isinstance(rate, float):
        # The clipped threshold keeps 2**-24 of elements at a traced rate of exactly 1; drop those too.
        keep = keep & (rate < 1.0)
    return keep


def keep_mask(key: jax.Array, rate: float | jax.Array, shape: tuple[int, ...], generator: Generator) -> jax.Array:
    """Boolean mask of ``shape``, True with probability ``1 - rate``, drawn from ``key``."""
    if generator == "jax":
        return jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep_from_bits(random_bits(key, shape), rate)


def keep_mask_at(key: jax.Array, rate: float | jax.Array, counters: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Fast-generator keep decisions at chosen counters instead of element indices.

    Equal counters give equal decisions: ``word_dropout`` uses (token id, sequence index) so a word type is
    dropped everywhere it occurs in a sequence.
    """
    return keep_from_bits(block_at(key, counters)[0], rate)


_UNIT_24 = 2.0**-24  # float32 has 24 significant bits: uniform variates are multiples of 2**-24


def uniform(key: jax.Array, shape: tuple[int, ...], generator: Generator) -> jax.Array:
    """float32 uniform variates in [0, 1) (multiples of 2**-24 for ``"fast"``; ``jax.random.uniform`` for ``"jax"``)."""
    if generator == "jax":
        return jax.random.uniform(key, shape, jnp.float32)
    return (random_bits(key, shape) >> 8).astype(jnp.float32) * jnp.float32(_UNIT_24)


def normal(key: jax.Array, shape: tuple[int, ...], generator: Generator) -> jax.Array:
    """float32 standard normal variates (``jax.random.normal`` for ``"jax"``).

    ``"fast"``: the Box-Muller transform of the two Threefry output words of each element's counter, fused like
    the masks and identical on any mesh. With 24-bit uniforms the largest magnitude is sqrt(2 ln 2**24) = 5.77,
    so tails beyond 5.77 standard deviations (probability 8e-9) are not produced.
    """
    if generator == "jax":
        return jax.random.normal(key, shape, jnp.float32)
    word0, word1 = block_at(key, element_counters(shape))
    radius_uniform = ((word0 >> 8) + 1).astype(jnp.float32) * jnp.float32(_UNIT_24)  # (0, 1]: log is finite
    angle_uniform = (word1 >> 8).astype(jnp.float32) * jnp.float32(_UNIT_24)
    return jnp.sqrt(-2.0 * jnp.log(radius_uniform)) * jnp.cos(jnp.float32(2.0 * math.pi) * angle_uniform)
