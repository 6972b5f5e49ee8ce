"""The mask generators: known-answer vectors, counters, thresholds, keep rate and independence."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.extend.random import threefry_2x32
from stat_bounds import binomial_bound

import jaxdrop
from jaxdrop import _masks

# Random123 tests/kat_vectors: rounds, counter (2 words), key (2 words), expected output (2 words).
KAT = [
    (13, (0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x9D1C5EC6, 0x8BD50731)),
    (13, (0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0xFD36D048, 0x2D17272C)),
    (13, (0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xBA3E4725, 0xF27D669E)),
    (20, (0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    (20, (0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    (20, (0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize(("rounds", "counter", "key", "expected"), KAT)
def test_threefry_known_answers(rounds, counter, key, expected):
    words = [jnp.uint32(v) for v in key]
    out = _masks.threefry2x32((words[0], words[1]), tuple(jnp.uint32(v) for v in counter), rounds)
    assert tuple(int(v) for v in out) == expected


def test_threefry_20_rounds_equals_jax_primitive(rng):
    key_words = rng.integers(0, 2**32, size=2, dtype=np.uint32)
    counters = rng.integers(0, 2**32, size=(2, 1000), dtype=np.uint32)
    ours = _masks.threefry2x32((key_words[0], key_words[1]), (counters[0], counters[1]), rounds=20)
    theirs = threefry_2x32(jnp.asarray(key_words), jnp.asarray(counters.ravel()))
    np.testing.assert_array_equal(np.concatenate([ours[0], ours[1]]), np.asarray(theirs))


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (1, 1, 6)])
def test_element_counters_are_row_major_indices(shape):
    low, high = _masks.element_counters(shape)
    np.testing.assert_array_equal(low, np.arange(np.prod(shape)).reshape(shape))
    np.testing.assert_array_equal(high, 0)


def test_element_counters_split_large_shapes():
    # Beyond the word limit the leading axes move into the high word; pairs stay unique.
    low, high = _masks.element_counters((3, 4, 8), _word_limit=16)
    pairs = set(zip(np.asarray(low).ravel().tolist(), np.asarray(high).ravel().tolist(), strict=True))
    assert len(pairs) == 3 * 4 * 8
    assert int(low.max()) < 16 and int(high.max()) < 16
    # at the real limit, a 2**33-element mask traces with both words
    low, high = jax.eval_shape(lambda: _masks.element_counters((4, 2**31)))
    assert low.shape == high.shape == (4, 2**31)


def test_static_threshold_is_rounded_rate():
    for rate in [0.0, 1e-9, 0.1, 0.25, 0.5, 0.9, 1 - 1e-12]:
        assert int(_masks.drop_threshold(rate)) == min(round(rate * 2**32), 2**32 - 1)


def test_traced_threshold_matches_static_within_float32():
    for rate in [0.1, 0.3, 0.5, 0.77]:
        traced = int(jax.jit(_masks.drop_threshold)(jnp.float32(rate)))
        assert abs(traced - int(_masks.drop_threshold(rate))) <= 2**32 * 6e-8


@pytest.mark.parametrize("generator", ["fast", "jax"])  # "fast16": tests/test_randomness.py
@pytest.mark.parametrize("rate", [0.001, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_keep_rate_within_binomial_bound(generator, rate):
    n = 200_000
    for seed in range(3):
        keep = _masks.keep_mask(jax.random.key(seed), rate, (n,), generator)
        assert abs(float(keep.mean()) - (1 - rate)) < binomial_bound(n, 1 - rate)


@pytest.mark.parametrize("generator", _masks.GENERATORS)
def test_keep_rate_with_traced_rate(generator):
    n = 200_000
    rates = jnp.array([0.0, 0.2, 0.5, 0.8, 1.0])
    fractions = jax.jit(jax.vmap(lambda r: _masks.keep_mask(jax.random.key(1), r, (n,), generator).mean()))(rates)
    for rate, fraction in zip(rates.tolist(), fractions.tolist(), strict=True):
        assert abs(fraction - (1 - rate)) < binomial_bound(n, 1 - rate)
    assert fractions[0] == 1.0 and fractions[-1] == 0.0  # exact at both ends


def test_jax_generator_equals_bernoulli():
    key = jax.random.key(5)
    for rate in [0.1, 0.5, 0.83]:
        ours = _masks.keep_mask(key, rate, (64, 33), "jax")
        np.testing.assert_array_equal(ours, jax.random.bernoulli(key, 1.0 - rate, (64, 33)))


def _correlation(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return np.corrcoef(a, b)[0, 1]


def test_masks_independent_across_keys_and_fold_in():
    n, rate = 100_000, 0.5
    bound = 4.0 / np.sqrt(n)
    root = jax.random.key(0)
    # (JAX itself makes fold_in(root, i) equal split(root)[i], so split a different root.)
    keys = [root, jax.random.key(1), jax.random.key(2), jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)]
    keys += list(jax.random.split(jax.random.key(5), 3))
    masks = [_masks.keep_mask(k, rate, (n,), "fast") for k in keys]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert not np.array_equal(masks[i], masks[j])
            assert abs(_correlation(masks[i], masks[j])) < bound
            # not a shifted copy: the best alignment over small shifts is still uncorrelated
            for shift in (1, 2, 7):
                assert abs(_correlation(masks[i][shift:], masks[j][:-shift])) < bound


def test_adjacent_elements_uncorrelated():
    n = 400_000
    mask = np.asarray(_masks.keep_mask(jax.random.key(3), 0.5, (n,), "fast"))
    bound = 4.0 / np.sqrt(n)
    for lag in (1, 2, 3, 64, 1024):
        assert abs(_correlation(mask[lag:], mask[:-lag])) < bound
    # runs test (Wald-Wolfowitz): the number of runs of a fair 0/1 sequence
    runs = 1 + np.count_nonzero(mask[1:] != mask[:-1])
    p = mask.mean()
    expected = 1 + 2 * n * p * (1 - p)
    assert abs(runs - expected) < 4 * np.sqrt(2 * n * p * (1 - p))


def test_raw_bits_uniform_per_bit_position():
    bits = np.asarray(_masks.random_bits(jax.random.key(9), (100_000,)))
    n = bits.size
    for position in range(32):
        ones = np.count_nonzero((bits >> position) & 1)
        assert abs(ones / n - 0.5) < 4 * 0.5 / np.sqrt(n), position


def test_same_key_and_shape_reproduce():
    key = jax.random.key(7)
    jitted = jax.jit(_masks.keep_mask, static_argnums=(2, 3))
    np.testing.assert_array_equal(_masks.keep_mask(key, 0.3, (100,), "fast"), jitted(key, 0.3, (100,), "fast"))


def test_legacy_and_typed_keys_both_work():
    typed = _masks.keep_mask(jax.random.key(0), 0.5, (1000,), "fast")
    legacy = _masks.keep_mask(jax.random.PRNGKey(0), 0.5, (1000,), "fast")
    np.testing.assert_array_equal(typed, legacy)  # the same key data gives the same mask
    rbg = _masks.keep_mask(jax.random.key(0, impl="rbg"), 0.5, (1000,), "fast")
    assert 0.4 < float(rbg.mean()) < 0.6


@pytest.mark.parametrize("generator", ["fast", "jax"])  # "fast16" draws the variates of "fast"
def test_uniform_moments_and_range(generator):
    u = np.asarray(_masks.uniform(jax.random.key(11), (400_000,), generator), np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    n = u.size
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 4 * np.sqrt(1 / 180 / n)
    counts = np.histogram(u, bins=64, range=(0, 1))[0]  # chi-square, 63 degrees of freedom
    assert ((counts - n / 64) ** 2 / (n / 64)).sum() < 63 + 4 * np.sqrt(2 * 63)


@pytest.mark.parametrize("generator", ["fast", "jax"])  # "fast16" draws the variates of "fast"
def test_normal_moments_and_distribution(generator):
    z = np.asarray(_masks.normal(jax.random.key(12), (400_000,), generator), np.float64)
    n = z.size
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / n)
    assert abs(np.mean(z**3)) < 4 * np.sqrt(15 / n)  # skewness
    assert abs(np.mean(z**4) - 3) < 4 * np.sqrt(96 / n)  # kurtosis
    # Kolmogorov-Smirnov distance to the standard normal CDF (critical value at alpha = 0.001: 1.95 / sqrt(n))
    from math import erf, sqrt

    z.sort()
    cdf = 0.5 * (1 + np.vectorize(erf)(z / sqrt(2)))
    ks = np.max(np.maximum(np.arange(1, n + 1) / n - cdf, cdf - np.arange(n) / n))
    assert ks < 1.95 / np.sqrt(n)


def test_keep_mask_at_equal_counters_equal_decisions():
    key = jax.random.key(13)
    counters = (jnp.array([5, 5, 9, 5], jnp.uint32), jnp.array([0, 0, 0, 1], jnp.uint32))
    keep = np.asarray(jax.jit(_masks.keep_mask_at)(key, 0.5, counters))
    assert keep[0] == keep[1]

    # at block counters it is word 0 of each block: the even elements of the fast mask
    @jax.jit
    def both(key):
        return _masks.keep_mask_at(key, 0.3, _masks.element_counters((25,))), _masks.keep_mask(key, 0.3, (50,), "fast")

    at_counters, mask = both(key)
    np.testing.assert_array_equal(at_counters, mask[::2])


def test_fast_bits_pair_neighbours_on_the_last_axis_longer_than_one():
    # Element (..., c, 1...) is word c % 2 of the block at (..., c // 2) of the grid (..., ceil(n / 2)).
    words = _masks._key_words(jax.random.key(3))
    for shape, axis in [((3, 5), 1), ((3, 6, 1, 1), 1), ((5, 1), 0), ((1, 1), None)]:
        assert _masks.pairing_axis(shape) == axis
        bits = np.asarray(jax.jit(_masks.random_bits, static_argnums=1)(jax.random.key(3), shape))
        assert bits.shape == shape
        core = shape[: (axis or 0) + 1]
        grid = (*core[:-1], -(-core[-1] // 2))
        blocks = np.stack(
            jax.jit(lambda w, grid=grid: _masks.threefry2x32(w, _masks.element_counters(grid)))(words), -1
        )
        if axis is None:
            np.testing.assert_array_equal(bits.ravel(), blocks.reshape(-1, 2)[:1, 0])
        else:
            expected = blocks.reshape((*grid[:-1], grid[-1] * 2))[..., : core[-1]]
            np.testing.assert_array_equal(bits.reshape(core), expected)


def test_tiles_and_packed_masks_equal_the_whole_array():
    # per_element_at (each element hashes its block: blockwise tiles) and the packed two-pass masks are per_element,
    # for odd lengths, trailing axes of 1, a scalar, two and four elements per block, and across the word split.
    words = _masks._key_words(jax.random.key(4))
    cases = [((3, 4, 9), 2, 2**32), ((3, 4, 9), 4, 20), ((6, 3, 1), 2, 20), ((2, 21), 4, 2**32), ((), 2, 2**32)]
    for shape, per_block, word_limit in cases:

        def slots(w0, w1, per_block=per_block):
            return (w0, w1, w0 ^ w1, w0 + w1)[:per_block]  # distinct values per slot

        @jax.jit
        def three_ways(words, shape=shape, per_block=per_block, word_limit=word_limit, slots=slots):
            grids = [lax.broadcasted_iota(jnp.uint32, shape, axis) for axis in range(len(shape))]
            halves = lambda w0, w1: tuple(v >> 31 == 1 for v in slots(w0, w1))
            return (
                _masks.per_element(words, shape, per_block, slots, word_limit),
                _masks.per_element_at(words, shape, grids, per_block, slots, word_limit),
                _masks._packed_decisions(words, shape, per_block, halves, word_limit),
            )

        whole, every, packed = (np.asarray(a) for a in three_ways(words))
        np.testing.assert_array_equal(every, whole, err_msg=str(shape))
        np.testing.assert_array_equal(packed, whole >> 31 == 1, err_msg=str(shape))


def test_fast_normals_are_the_cosine_and_sine_of_one_block():
    key = jax.random.key(5)
    z = np.asarray(jax.jit(_masks.normal, static_argnums=(1, 2))(key, (2, 9), "fast"), np.float64)
    bits = np.asarray(jax.jit(_masks.random_bits, static_argnums=1)(key, (2, 10))).astype(np.float64)
    u_radius = (np.floor(bits[:, 0::2] / 256) + 1) * 2.0**-24
    angle = 2 * np.pi * np.floor(bits[:, 1::2] / 256) * 2.0**-24
    radius = np.sqrt(-2 * np.log(u_radius))
    expected = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1).reshape(2, 10)[:, :9]
    np.testing.assert_allclose(z, expected, rtol=2e-5, atol=2e-5)


def test_eager_masks_equal_the_masks_made_inside_jit():
    # Eagerly a mask maker is one compiled program per shape and generator (keep_mask, uniform and normal are
    # jitted), not its primitives dispatched one by one; inside jit the same functions are traced into the caller's
    # program. Both give the same bits: odd lengths, trailing axes of 1, a scalar, a static and a traced rate.
    key = jax.random.key(21)
    cases = [((3, 5, 9), "fast"), ((2, 1, 7, 1), "fast"), ((), "fast"), ((3, 5, 9), "fast16"), ((2, 1, 6), "fast16")]

    @jax.jit
    def inside(key):
        words = _masks._key_words(key)
        masks = [
            _masks._packed_decisions(words, shape, _masks.ELEMENTS_PER_BLOCK[gen], _masks._decisions(0.3, gen))
            for shape, gen in cases
        ]
        traced = _masks._decisions(jnp.float32(0.3) + 0 * words[0].astype(jnp.float32), "fast")
        masks.append(_masks._packed_decisions(words, (4, 11), 2, traced))
        return masks, _masks.uniform(key, (3, 7), "fast"), _masks.normal(key, (3, 7), "fast")

    masks, uniform, normal = inside(key)
    for (shape, generator), jitted in zip(cases, masks, strict=False):
        eager = _masks.keep_mask(key, 0.3, shape, generator)
        assert eager.shape == shape and eager.dtype == jnp.bool_
        np.testing.assert_array_equal(eager, jitted, err_msg=f"{shape} {generator}")
    np.testing.assert_array_equal(_masks.keep_mask(key, jnp.float32(0.3), (4, 11), "fast"), masks[-1])
    np.testing.assert_array_equal(_masks.uniform(key, (3, 7), "fast"), uniform)
    np.testing.assert_allclose(_masks.normal(key, (3, 7), "fast"), normal, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("generator", "blocks_per_byte"), [("fast", 4), pytest.param("fast16", 2, marks=pytest.mark.slow)]
)
def test_compiled_dropout_hashes_each_block_once_in_one_packing_reduction(generator, blocks_per_byte):
    # The hash is evaluated once per block, in the reduction that packs 8 decisions per byte (over the blocks of a
    # byte: the last axis of (64, 12, blocks_per_byte)); the input-sized loop only unpacks bits. A hash fused into
    # that loop, or a u32 array of the input's size, would mean bits made per element.
    text = (
        jax.jit(lambda x, key: jaxdrop.dropout(x, 0.3, key=key, generator=generator))
        .lower(jnp.ones((64, 96)), jax.random.key(0))
        .compile()
        .as_text()
    )
    reductions = re.findall(r"= (\S+?)(?:\{[^}]*\})? reduce\(.*?dimensions=\{(\d+)\}", text)
    assert reductions == [("u8[64,12]", "2")], reductions
    computations = re.finditer(r"^%\S+ \([^\n]*\) -> ([^\n]+) \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    hashing = {match.group(1) for match in computations if " xor(" in match.group(2)}
    assert "u8[64,12]" in hashing and hashing <= {"u8[64,12]", "u32[]", "u32[2]"}, hashing  # key words: small
    assert f"[64,12,{blocks_per_byte}]" in text and "u32[64,96]" not in text
