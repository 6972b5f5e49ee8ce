"""How keep-masks are made from keys: the one module that touches random bits.

Three generators:

``"fast"`` (default)
    Threefry-2x32 with 13 rounds (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; 13 is the
    smallest round count they found Crush-resistant) keyed by two words derived from the JAX key, evaluated on
    *global* indices, so a mask element depends only on the key and its index: masks are identical under any
    device mesh and sharding, and ``vmap`` over keys equals a loop over keys. No communication, except that a
    sharded pairing axis whose shards are not a multiple of 8 long exchanges a few packed bytes between neighbouring
    devices (a ``collective-permute``; see docs/determinism.md). Both output
    words of a block are used (fast generator v2, since jaxdrop 0.2.0): along the last axis longer than 1
    (``pairing_axis``), element ``(..., c)`` takes word ``c % 2`` of the block at the counters of ``(..., c // 2)``
    in the grid ``(..., ceil(n / 2))``. The drop decision compares the 32 random bits with an integer threshold, so
    it is never quantised by a low-precision input dtype: the keep probability is a multiple of 2**-32 (static
    rates are rounded in float64 on the host; traced rates in float32, i.e. to about 6e-8).

``"fast16"``
    The same blocks split into four 16-bit halves: four keep decisions per block (element ``(..., c)`` takes half
    ``c % 4`` of block ``(..., c // 4)``: low then high half of word 0, then of word 1), compared with
    ``round(rate * 2**16)``, so the rate is rounded to a multiple of 2**-16 (0.1 becomes 6554 / 65536 =
    0.100006...; exact at 0 and 1). Half the hashing of ``"fast"``, for users who trade the rate's resolution for
    speed. Uniform and normal variates are those of ``"fast"``.

``"jax"``
    ``jax.random.bernoulli(key, 1 - rate, shape)``, exactly what ``flax.linen.Dropout``, ``flax.nnx.Dropout`` and
    ``equinox.nn.Dropout`` draw, for users who need identical masks. Its keep probability resolution is 2**-23.

The bits are written in ``jax.numpy``. XLA fuses a generator into the loop that consumes it, but evaluates a fused
producer once per element of its consumer, so the masks are made in two passes (``_packed_decisions``): the
decisions packed eight to a byte, then unpacked where they are applied; tiles that regenerate a mask inside a
loop (blockwise attention) hash one block per element instead (``per_element_at``). Both give the same bits.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Generator = Literal["fast", "fast16", "jax"]
GENERATORS: tuple[str, ...] = ("fast", "fast16", "jax")

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
            x1 = x1 + (schedule[(s + 1) % 3] + jnp.uint32(s))  # one add per element: the sum is a scalar
    return x0, x1


def _split_axis(shape: tuple[int, ...], word_limit: int) -> int:
    """The first axis of the low counter word: the trailing axes whose product stays below ``word_limit``."""
    split = 0
    while math.prod(shape[split:]) >= word_limit:
        split += 1
    if math.prod(shape[:split]) >= word_limit:
        raise ValueError(f"mask shape {shape} has an axis of 2**32 elements or more; this is not supported.")
    return split


def element_counters(shape: tuple[int, ...], _word_limit: int = _TWO32) -> tuple[jax.Array, jax.Array]:
    """Two uint32 counter words that name every element of ``shape`` uniquely by its global position.

    Built from ``broadcasted_iota`` so the SPMD partitioner gives each shard its global indices. Below 2**32
    elements the words are (row-major linear index, 0); beyond, the leading axes move into the second word.
    (``_word_limit`` exists so tests can exercise the split on small shapes.)
    """
    low, high = counters_at(shape, _iotas(shape), _word_limit)
    return jnp.broadcast_to(low, shape), jnp.broadcast_to(high, shape)


def _iotas(shape: tuple[int, ...]) -> list[jax.Array | int]:
    """Every element's index along each axis of ``shape`` (uint32), the global indices of a whole array."""
    return [lax.broadcasted_iota(jnp.uint32, shape, axis) for axis in range(len(shape))]


def counters_at(
    shape: tuple[int, ...], indices: Sequence[jax.Array | int], _word_limit: int = _TWO32
) -> tuple[jax.Array, jax.Array]:
    """``element_counters(shape)`` evaluated only at the given global indices, one per axis of ``shape``.

    ``indices[axis]`` is a uint32 array (or 0) broadcastable against the others; the result has their broadcast
    shape. The words are split between axes exactly as ``element_counters`` splits them, so a tile of any shape
    gets the counters its elements have in the whole array.
    """
    split = _split_axis(shape, _word_limit)

    def linear_index(axes: range) -> jax.Array:
        index = jnp.uint32(0)
        for axis in axes:
            index = index * jnp.uint32(shape[axis]) + jnp.asarray(indices[axis], jnp.uint32)
        return index

    return linear_index(range(split, len(shape))), linear_index(range(split))


def _key_word_array(key: jax.Array) -> jax.Array:
    # Two words from JAX's own key derivation: every key implementation (threefry, rbg, legacy uint32[2]) maps to
    # well-mixed Threefry key words, and related user keys (seeds 0, 1, 2...) give unrelated streams.
    return jax.random.bits(key, (2,), jnp.uint32)


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    words = _key_word_array(key)
    return words[0], words[1]


def block_at(key: jax.Array, counters: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Both uint32 output words of the fast generator at the given counter words (any broadcastable shape)."""
    return threefry2x32(_key_words(key), counters)


# How many elements share one Threefry block: "fast" uses both 32-bit words (two elements), "fast16" splits each
# word into two 16-bit halves (four elements).
ELEMENTS_PER_BLOCK = {"fast": 2, "fast16": 4}

BlockValues = Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]]


def pairing_axis(shape: tuple[int, ...]) -> int | None:
    """The axis along which neighbouring elements share a Threefry block: the last axis longer than 1.

    Element ``(..., c, 1, ..., 1)`` takes slot ``c % per_block`` of block ``(..., c // per_block)``, the block's
    counters being ``element_counters`` of the block shape ``(..., ceil(n / per_block))``. Trailing axes of size
    1 (a mask shared along the last axes) are skipped so that such masks pair their elements too. None when the
    shape has a single element.
    """
    longer = [axis for axis, size in enumerate(shape) if size > 1]
    return longer[-1] if longer else None


def _block_grid(shape: tuple[int, ...], axis: int, per_block: int) -> tuple[int, ...]:
    """The shape of the blocks of ``shape[:axis + 1]`` paired along ``axis``: its last size divided, rounded up."""
    return (*shape[:axis], -(-shape[axis] // per_block))


def _interleave(parts: tuple[jax.Array, ...]) -> jax.Array:
    """``parts[k][..., b]`` at ``[..., b * len(parts) + k]``: a block's values become neighbours on the last axis.

    A stack and a reshape, which XLA fuses into the consumer; a fused consumer evaluates it per element, hashing
    the element's block and keeping its slot (the cost of one block per element, as in the first version).
    """
    stacked = jnp.stack(parts, axis=-1)
    return stacked.reshape((*stacked.shape[:-2], stacked.shape[-2] * len(parts)))


def _on_block_grid(
    words: tuple[jax.Array, jax.Array],
    shape: tuple[int, ...],
    per_block: int,
    values: BlockValues,
    lay_out: Callable[[tuple[int, ...], Callable[..., tuple[jax.Array, ...]]], jax.Array],
    _word_limit: int = _TWO32,
) -> jax.Array:
    """What ``per_element`` and ``_packed_decisions`` share: the pairing axis, the one-element case, the block grid.

    ``lay_out(grid, hash_at)`` returns the values of the elements of ``shape[:axis + 1]`` along the pairing axis,
    possibly past its end (spare slots of the last block, bits of the last byte); ``hash_at(indices)`` is
    ``values`` of the blocks at those indices of the block ``grid``. The spare values are sliced off and trailing
    axes of size 1 restored.
    """
    axis = pairing_axis(shape)
    if axis is None:
        return values(*threefry2x32(words, element_counters(shape, _word_limit)))[0]
    grid = _block_grid(shape, axis, per_block)

    def hash_at(indices: Sequence[jax.Array | int]) -> tuple[jax.Array, ...]:
        return values(*threefry2x32(words, counters_at(grid, indices, _word_limit)))

    out = lay_out(grid, hash_at)
    if out.shape[-1] != shape[axis]:
        out = lax.slice_in_dim(out, 0, shape[axis], axis=-1)
    return out.reshape(shape)


def per_element(
    words: tuple[jax.Array, jax.Array],
    shape: tuple[int, ...],
    per_block: int,
    values: BlockValues,
    _word_limit: int = _TWO32,
) -> jax.Array:
    """An array of ``shape`` whose element at index ``i`` is slot ``i[axis] % per_block`` of ``values(block)``
    (``axis = pairing_axis(shape)``): ``per_block`` elements per Threefry-2x32-13 block, a pure function of the
    key words and each element's global index.

    The blocks are written on the block grid and interleaved along the pairing axis; the spare values of the last
    block of an odd-sized axis are sliced off. (Keep-masks use ``_packed_decisions``, which hashes each block once.)
    """

    def interleaved(grid: tuple[int, ...], hash_at: Callable[..., tuple[jax.Array, ...]]) -> jax.Array:
        return _interleave(hash_at(_iotas(grid)))

    return _on_block_grid(words, shape, per_block, values, interleaved, _word_limit)


def _blocks_at(
    words: tuple[jax.Array, jax.Array],
    shape: tuple[int, ...],
    indices: Sequence[jax.Array | int],
    per_block: int,
    _word_limit: int = _TWO32,
) -> tuple[jax.Array, jax.Array, jax.Array | int]:
    """Both words of the block of each element at the given global indices of ``shape``, and its slot in it."""
    axis = pairing_axis(shape)
    if axis is None:
        return (*threefry2x32(words, counters_at(shape, indices, _word_limit)), 0)
    block_indices = list(indices[: axis + 1])
    position = jnp.asarray(indices[axis], jnp.uint32)
    block_indices[axis] = position // jnp.uint32(per_block)
    grid = _block_grid(shape, axis, per_block)
    word0, word1 = threefry2x32(words, counters_at(grid, block_indices, _word_limit))
    return word0, word1, position % jnp.uint32(per_block)


def per_element_at(
    words: tuple[jax.Array, jax.Array],
    shape: tuple[int, ...],
    indices: Sequence[jax.Array | int],
    per_block: int,
    values: BlockValues,
    _word_limit: int = _TWO32,
) -> jax.Array:
    """``per_element(words, shape, ...)`` evaluated only at the given global indices (one per axis of ``shape``,
    uint32 arrays or 0, broadcastable): a tile of the array, bit for bit, without making the rest.

    Every element hashes its own block and selects its slot, so it fuses into any consumer (blockwise attention's
    tiles, the Pallas kernel) at one block per element, the cost of the first version of the generator.
    """
    word0, word1, slot = _blocks_at(words, shape, indices, per_block, _word_limit)
    parts = values(word0, word1)
    out = parts[0]
    for index, part in enumerate(parts[1:], start=1):
        out = jnp.where(slot == index, part, out)
    return out


def _packed_decisions(
    words: tuple[jax.Array, jax.Array],
    shape: tuple[int, ...],
    per_block: int,
    decisions: BlockValues,
    _word_limit: int = _TWO32,
) -> jax.Array:
    """``per_element(words, shape, per_block, decisions)`` for boolean ``decisions``, made in two passes: the
    decisions packed eight to a byte, then unpacked where they are used.

    XLA computes a fused elementwise producer once per element of its consumer, so a block hashed for two
    neighbours inside the consumer's loop is hashed twice, and a small mask broadcast over a large input (spatial
    dropout) is hashed once per input element. The bytes are a reduction, which XLA does not fuse into its
    consumer: each block is hashed once, and the consumer reads one bit per element (``n / 8`` bytes, written once
    and read once: 3% of an f32 copy's traffic; they are the only temporary of a dropout's gradient).
    """
    blocks_per_byte = 8 // per_block

    def packed_and_unpacked(grid: tuple[int, ...], hash_at: Callable[..., tuple[jax.Array, ...]]) -> jax.Array:
        rows, num_blocks = grid[:-1], grid[-1]
        num_bytes = -(-num_blocks // blocks_per_byte)
        packing = (*rows, num_bytes, blocks_per_byte)  # block (..., byte * blocks_per_byte + j) at (..., byte, j)
        indices = _iotas(packing)
        slot_of_byte, byte = indices.pop(), indices.pop()
        indices.append(byte * jnp.uint32(blocks_per_byte) + slot_of_byte)  # past the grid's end: sliced off
        shifts = jnp.asarray(slot_of_byte).astype(jnp.uint8) * jnp.uint8(per_block)
        bits = functools.reduce(
            operator.or_,
            (part.astype(jnp.uint8) << (shifts + jnp.uint8(slot)) for slot, part in enumerate(hash_at(indices))),
        )
        packed = jnp.sum(bits, axis=-1, dtype=jnp.uint8)  # disjoint bits: the sum is their OR
        bit = lax.broadcasted_iota(jnp.uint8, (*rows, num_bytes, 8), len(rows) + 1)
        return ((packed[..., None] >> bit) & jnp.uint8(1)).reshape((*rows, num_bytes * 8)) != 0

    return _on_block_grid(words, shape, per_block, decisions, packed_and_unpacked, _word_limit)


def _both_words(word0: jax.Array, word1: jax.Array) -> tuple[jax.Array, jax.Array]:
    return word0, word1


def random_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 bits of the fast generator for ``shape``: a pure function of the key and each element's index.

    Both words of each block are used: element ``(..., c)`` gets word ``c % 2`` of block ``(..., c // 2)``
    (along ``pairing_axis``).
    """
    return _random_bits_program(_key_word_array(key), tuple(shape))


def _random_bits_from_words(words: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return per_element((words[0], words[1]), shape, 2, _both_words)


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


_TWO16 = 2**16
_LOW16 = 0xFFFF


def drop_threshold16(rate: float | jax.Array) -> np.uint32 | jax.Array:
    """``"fast16"``: an element is kept when its 16 random bits are ``>=`` ``round(rate * 2**16)`` (0 to 2**16,
    held in a uint32 so that rate 1 drops everything)."""
    if isinstance(rate, float):
        return np.uint32(round(rate * _TWO16))
    scaled = jnp.clip(jnp.asarray(rate, jnp.float32) * jnp.float32(_TWO16), 0.0, float(_TWO16))
    return jnp.round(scaled).astype(jnp.uint32)


def _decisions(rate: float | jax.Array, generator: Generator) -> BlockValues:
    """The keep decisions of one block: two (32-bit thresholds) or four (16-bit, ``"fast16"``)."""
    if generator == "fast16":
        threshold16 = drop_threshold16(rate)

        def sixteen(word0: jax.Array, word1: jax.Array) -> tuple[jax.Array, ...]:
            halves = (word0 & jnp.uint32(_LOW16), word0 >> 16, word1 & jnp.uint32(_LOW16), word1 >> 16)
            return tuple(half >= threshold16 for half in halves)

        return sixteen
    return lambda word0, word1: (keep_from_bits(word0, rate), keep_from_bits(word1, rate))


def _packed_keep(words: jax.Array, rate: float | jax.Array, shape: tuple[int, ...], generator: Generator) -> jax.Array:
    return _packed_decisions((words[0], words[1]), shape, ELEMENTS_PER_BLOCK[generator], _decisions(rate, generator))


# Eager calls (and ``jax.checkpoint`` outside jit, as in an eager ``grad``: it evaluates its traced body primitive
# by primitive) would compile and dispatch each of a mask's 40-80 primitives on its own, for every new shape. So
# the mask makers are jitted, with the shape, the generator and a static rate as static arguments (one program per
# configuration, in jax.jit's bounded caches), and take the key's two words, made beforehand by JAX's own
# compiled-once key derivation, so a new shape compiles only its hash. Under an outer jit XLA inlines the call:
# the program and the bits are those of the unjitted functions.
_packed_keep_static_rate = jax.jit(_packed_keep, static_argnums=(1, 2, 3))
_packed_keep_traced_rate = jax.jit(_packed_keep, static_argnums=(2, 3))


def keep_mask(key: jax.Array, rate: float | jax.Array, shape: tuple[int, ...], generator: Generator) -> jax.Array:
    """Boolean mask of ``shape``, True with probability ``1 - rate``, drawn from ``key``.

    A Python float ``rate`` is static (its threshold is rounded in float64 on the host, see ``drop_threshold``);
    any other rate is an operand, so a schedule or ``vmap`` over rates does not recompile.
    """
    if generator == "jax":
        return jax.random.bernoulli(key, 1.0 - rate, shape)
    words = _key_word_array(key)
    if isinstance(rate, float):
        return _packed_keep_static_rate(words, rate, tuple(shape), generator)
    return _packed_keep_traced_rate(words, rate, tuple(shape), generator)


def keep_at(
    words: tuple[jax.Array, jax.Array],
    rate: float | jax.Array,
    shape: tuple[int, ...],
    indices: Sequence[jax.Array | int],
    generator: Generator = "fast",
    _word_limit: int = _TWO32,
) -> jax.Array:
    """``keep_mask``'s decisions for a mask of ``shape`` at the given global indices (``per_element_at``): what
    blockwise attention regenerates tile by tile, bit-identical to the dense mask."""
    per_block = ELEMENTS_PER_BLOCK[generator]
    return per_element_at(words, shape, indices, per_block, _decisions(rate, generator), _word_limit)


def keep_mask_at(key: jax.Array, rate: float | jax.Array, counters: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Fast-generator keep decisions at chosen counters instead of element indices (word 0 of each block).

    Equal counters give equal decisions: ``word_dropout`` uses (token id, sequence index) so a word type is
    dropped everywhere it occurs in a sequence.
    """
    return keep_from_bits(block_at(key, counters)[0], rate)


_UNIT_24 = 2.0**-24  # float32 has 24 significant bits: uniform variates are multiples of 2**-24


def _uniform_from_words(words: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return (_random_bits_from_words(words, shape) >> 8).astype(jnp.float32) * jnp.float32(_UNIT_24)


def _normal_from_words(words: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    word0, word1, slot = _blocks_at((words[0], words[1]), shape, _iotas(shape), 2)
    radius_uniform = ((word0 >> 8) + 1).astype(jnp.float32) * jnp.float32(_UNIT_24)  # (0, 1]: log is finite
    angle = jnp.float32(2.0 * math.pi) * (word1 >> 8).astype(jnp.float32) * jnp.float32(_UNIT_24)
    phase = jnp.asarray(slot, jnp.uint32).astype(jnp.float32) * jnp.float32(math.pi / 2)
    return jnp.sqrt(-2.0 * jnp.log(radius_uniform)) * jnp.cos(angle - phase)


# One program per shape, for the reason given at keep_mask's.
_random_bits_program = jax.jit(_random_bits_from_words, static_argnums=1)
_uniform_program = jax.jit(_uniform_from_words, static_argnums=1)
_normal_program = jax.jit(_normal_from_words, static_argnums=1)


def uniform(key: jax.Array, shape: tuple[int, ...], generator: Generator) -> jax.Array:
    """float32 uniform variates in [0, 1) (``jax.random.uniform`` for ``"jax"``).

    ``"fast"`` and ``"fast16"``: the top 24 bits of ``random_bits`` (two variates per block), multiples of 2**-24.
    """
    if generator == "jax":
        return jax.random.uniform(key, shape, jnp.float32)
    return _uniform_program(_key_word_array(key), tuple(shape))


def normal(key: jax.Array, shape: tuple[int, ...], generator: Generator) -> jax.Array:
    """float32 standard normal variates (``jax.random.normal`` for ``"jax"``).

    ``"fast"`` and ``"fast16"``: the Box-Muller transform (Box & Muller 1958) of each block's two words gives a
    pair of independent normals, ``r cos(theta)`` for the even element of the pair and ``r cos(theta - pi / 2)``
    (its sine) for the odd one, identical on any mesh. Each element computes its own ``log``, ``sqrt`` and
    ``cos`` in the consumer's fused loop (one phase per element instead of a select between a cosine and a sine
    keeps it as cheap as one normal per block). With 24-bit uniforms the largest magnitude is
    sqrt(2 ln 2**24) = 5.77, so tails beyond 5.77 standard deviations (probability 8e-9) are not produced.
    """
    if generator == "jax":
        return jax.random.normal(key, shape, jnp.float32)
    return _normal_program(_key_word_array(key), tuple(shape))
