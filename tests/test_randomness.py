"""Statistical quality of the fast generator, beyond tests/test_masks.py.

test_masks.py checks the keep rate at 8 rates, pairwise independence of 8 keys, lag correlations and a runs test
at rate 0.5, and the mean of each bit. Here: the keep rate over a fine grid of rates and at every public variant,
chi-square uniformity of each bit position, byte lane and consecutive pair, the avalanche of Threefry-13 over counter
and key bits, independence across 64 related keys (sequential seeds, fold_in indices, consecutive training steps),
neighbours along every axis of a multi-dimensional mask, and runs at skewed rates. Every test uses fixed keys, so it
is deterministic; thresholds are set at p < 1e-6 per check (Bonferroni over the checks in the test), so a failure
means a defect, not bad luck. The heavy battery is ``scripts/dieharder.py`` (docs/randomness.md); the ``slow`` tests
at the bottom repeat the light ones on 64x more bits.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxdrop
from jaxdrop import _masks

P_MIN = 1e-6  # smallest p-value accepted by any single check


def _bits(seed: int, n: int) -> np.ndarray:
    return np.asarray(_masks.random_bits(jax.random.key(seed), (n,)))


def _binomial_ok(kept: int, n: int, p: float, checks: int = 1) -> bool:
    """Two-sided exact binomial test at P_MIN / checks."""
    return stats.binomtest(int(kept), n, p).pvalue > P_MIN / checks


# --- keep rate ---------------------------------------------------------------------------------------------------


def test_keep_rate_over_a_fine_grid_of_rates():
    # One bits array, every rate of a 0.005 grid plus rates near 0 and 1: a rounding slip in the threshold (an
    # off-by-2**-24 from float32, a clip at the wrong end) shows up as a biased keep fraction.
    n = 1 << 18
    bits = _bits(0, n)
    rates = [*np.linspace(0.0, 1.0, 201).tolist(), 2**-20, 1e-5, 1e-4, 1 - 1e-4, 1 - 1e-5, 1 - 2**-20]
    for rate in rates:
        kept = int(np.count_nonzero(bits >= _masks.drop_threshold(rate)))
        if rate == 0.0:
            assert kept == n
        elif rate == 1.0:
            assert kept == 0
        else:
            assert _binomial_ok(kept, n, 1.0 - rate, len(rates)), (rate, kept / n)
    # the mask is exactly that comparison
    np.testing.assert_array_equal(
        _masks.keep_mask(jax.random.key(0), 0.37, (n,), "fast"), bits >= _masks.drop_threshold(0.37)
    )


def test_traced_rate_threshold_within_float32_of_static():
    rates = np.linspace(0.0, 1.0, 1001, dtype=np.float32)
    traced = np.asarray(jax.jit(jax.vmap(_masks.drop_threshold))(jnp.asarray(rates)), np.int64)
    static = np.array([int(_masks.drop_threshold(float(rate))) for rate in rates], np.int64)
    # float32 rounding of rate * 2**32: at most one float32 ulp of the product (2**8 at the top of the range)
    assert np.all(np.abs(traced - static) <= 256), np.abs(traced - static).max()


def _keep_fraction_cases():
    x3, x4, x5 = jnp.ones((64, 32, 16)), jnp.ones((64, 4, 4, 128)), jnp.ones((32, 2, 2, 2, 128))
    ids = jnp.arange(64 * 32).reshape(64, 32)  # distinct ids: one decision per token
    # (name, output, number of independent decisions): the keep fraction of the decisions must be 1 - rate
    return {
        "dropout": lambda r, k: (jaxdrop.dropout(x3, r, key=k), x3.size),
        "dropout/broadcast": lambda r, k: (jaxdrop.dropout(x3, r, key=k, broadcast_dims=(1,)), 64 * 16),
        "spatial_dropout2d": lambda r, k: (jaxdrop.spatial_dropout2d(x4, r, key=k), 64 * 128),
        "spatial_dropout3d": lambda r, k: (jaxdrop.spatial_dropout3d(x5, r, key=k), 32 * 128),
        "drop_path": lambda r, k: (jaxdrop.drop_path(jnp.ones((8192, 4)), r, key=k), 8192),
        "dropconnect": lambda r, k: (jaxdrop.dropconnect(x3, r, key=k), x3.size),
        "locked_dropout": lambda r, k: (jaxdrop.locked_dropout(x3, r, key=k), 64 * 16),
        "locked_mask": lambda r, k: (jaxdrop.locked_mask(k, r, (64, 32, 16))(x3), x3.size),
        "token_dropout": lambda r, k: (jaxdrop.token_dropout(x3, r, key=k), 64 * 32),
        "word_dropout": lambda r, k: (jaxdrop.word_dropout(x3, ids, r, key=k), 64 * 32),
        "dot_product_attention": lambda r, k: (
            jaxdrop.dot_product_attention(
                jnp.zeros((1, 128, 1, 4)),
                jnp.zeros((1, 128, 1, 4)),
                jnp.eye(128)[None, :, None, :],
                dropout_rng=k,
                dropout_rate=r,
            ),
            128 * 128,
        ),
    }


KEEP_FRACTION_CASES = _keep_fraction_cases()


@pytest.mark.parametrize("name", list(KEEP_FRACTION_CASES))
def test_every_mask_variant_keeps_one_minus_rate(name):
    case = jax.jit(KEEP_FRACTION_CASES[name], static_argnums=0)
    rates = (0.05, 0.5, 0.9)
    for seed, rate in enumerate(rates):
        y, decisions = case(rate, jax.random.key(seed))
        kept_fraction = float(jnp.mean(y != 0))
        # every kept element is scaled by 1 / (1 - rate): the fraction of nonzeros is the fraction of kept decisions
        kept = round(kept_fraction * decisions)
        assert _binomial_ok(kept, decisions, 1.0 - rate, len(rates)), (name, rate, kept_fraction)


def test_dropblock_drops_close_to_rate():
    # DropBlock's seed rate (Ghiasi et al. eq. 1) drops slightly less than `rate` because blocks overlap.
    x = jnp.ones((16, 32, 32, 16))
    for seed, rate in enumerate((0.1, 0.3)):
        y = jax.jit(lambda x, k, rate=rate: jaxdrop.dropblock(x, rate, key=k, block_size=5))(x, jax.random.key(seed))
        dropped = float(jnp.mean(y == 0))
        assert rate * 0.75 < dropped <= rate + 0.01, (rate, dropped)


# --- uniformity of the raw bits -----------------------------------------------------------------------------------


def test_chi_square_per_bit_position_and_over_all_positions():
    n, num_keys = 1 << 17, 8
    ones = np.zeros((num_keys, 32))
    for seed in range(num_keys):
        bits = _bits(100 + seed, n)
        ones[seed] = [np.count_nonzero((bits >> position) & 1) for position in range(32)]
    chi2 = (2 * ones - n) ** 2 / n  # (ones - n/2)^2 / (n/2) + (zeros - n/2)^2 / (n/2), 1 degree of freedom
    p_values = stats.chi2.sf(chi2, 1)
    assert p_values.min() > P_MIN / chi2.size, np.unravel_index(p_values.argmin(), p_values.shape)
    # the 256 statistics together: their sum is chi-square with 256 degrees of freedom, their p-values uniform
    assert stats.chi2.sf(chi2.sum(), chi2.size) > P_MIN
    assert stats.kstest(p_values.ravel(), "uniform").pvalue > P_MIN


def test_chi_square_of_byte_lanes_and_consecutive_pairs():
    bits = _bits(7, 1 << 19)
    for lane in range(4):
        counts = np.bincount((bits >> (8 * lane)) & 0xFF, minlength=256)
        assert stats.chisquare(counts).pvalue > P_MIN / 6, lane
    # serial test: the top 4 bits of consecutive words as one of 256 pairs (dependence between neighbours)
    nibbles = bits >> 28
    counts = np.bincount(nibbles[:-1] * 16 + nibbles[1:], minlength=256)
    assert stats.chisquare(counts).pvalue > P_MIN / 6
    # the low 4 bits likewise, with a stride of 2**10 (elements one row apart in a (.., 1024) mask)
    low = bits & 0xF
    counts = np.bincount(low[:-1024] * 16 + low[1024:], minlength=256)
    assert stats.chisquare(counts).pvalue > P_MIN / 6


def test_uniform_as_floats_kolmogorov_smirnov():
    u = _bits(8, 1 << 18) / 2.0**32
    assert stats.kstest(u, "uniform").pvalue > P_MIN


def test_threefry13_avalanche_over_counter_and_key_bits():
    # Strict avalanche: flipping any one input bit (64 counter bits, 64 key bits) flips each output bit with
    # probability 1/2. Too few rounds or a wrong rotation shows up as a bias here long before in a keep rate.
    rng = np.random.default_rng(0)
    n = 4096
    key = rng.integers(0, 2**32, size=(2, n), dtype=np.uint32)
    counter = rng.integers(0, 2**32, size=(2, n), dtype=np.uint32)

    @jax.jit
    def both_words(key, counter):
        return jnp.stack(_masks.threefry2x32((key[0], key[1]), (counter[0], counter[1])))

    base = np.asarray(both_words(key, counter))
    flips = []
    for word in range(4):
        for bit in range(32):
            k, c = key.copy(), counter.copy()
            target = c if word < 2 else k
            target[word % 2] ^= np.uint32(1 << bit)
            changed = np.asarray(both_words(k, c)) ^ base
            per_output_bit = [np.unpackbits(changed[w].view(np.uint8)).reshape(n, 32).mean(0) for w in range(2)]
            flips.append(np.concatenate(per_output_bit))
    flips = np.array(flips)  # (128 input bits, 64 output bits): fraction of the n trials that flipped
    bound = stats.norm.isf(P_MIN / flips.size / 2) * 0.5 / math.sqrt(n)
    assert np.abs(flips - 0.5).max() < bound, np.abs(flips - 0.5).max()


# --- independence -------------------------------------------------------------------------------------------------


def _max_abs_correlation(masks: np.ndarray) -> tuple[float, float]:
    """Largest |correlation| between distinct rows, and the p-value of sum(n r^2) ~ chi2(pairs) over all pairs."""
    centred = masks - masks.mean(1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    corr = centred @ centred.T
    pairs = corr[np.triu_indices(len(masks), 1)]
    n = masks.shape[1]
    return float(np.abs(pairs).max()), float(stats.chi2.sf(n * np.sum(pairs**2), pairs.size))


@pytest.mark.parametrize(
    "family",
    ["sequential seeds", "fold_in steps", "split", "fold_in names", "rbg seeds", "nested fold_in"],
)
def test_masks_of_related_keys_are_uncorrelated(family):
    n, count, rate = 1 << 14, 64, 0.5
    root = jax.random.key(2024)
    keys = {
        "sequential seeds": lambda i: jax.random.key(i),
        "fold_in steps": lambda i: jax.random.fold_in(root, i),  # consecutive training steps
        "split": lambda i: jax.random.split(root, count)[i],
        "fold_in names": lambda i: jaxdrop.fold_in(root, f"block_{i}/dropout"),  # layers of one model
        "rbg seeds": lambda i: jax.random.key(i, impl="rbg"),
        "nested fold_in": lambda i: jaxdrop.fold_in(root, i % 8, i // 8),  # (layer, step) grid
    }[family]
    masks = np.stack([np.asarray(_masks.keep_mask(keys(i), rate, (n,), "fast"), np.float64) for i in range(count)])
    largest, p_value = _max_abs_correlation(masks)
    pairs = count * (count - 1) / 2
    assert largest < stats.norm.isf(P_MIN / pairs / 2) / math.sqrt(n), largest
    assert p_value > P_MIN
    # also the raw keep fractions of the 64 masks: one binomial each
    for row in masks:
        assert _binomial_ok(int(row.sum()), n, 1 - rate, count)


def test_same_key_different_shapes_and_rates_are_nested_not_independent():
    # Documented behaviour (docs/randomness.md): one key gives one bit stream; a lower rate keeps a superset of
    # the elements a higher rate keeps, and a longer 1-D mask extends a shorter one. Only distinct keys decorrelate.
    key = jax.random.key(3)
    low = np.asarray(_masks.keep_mask(key, 0.2, (4096,), "fast"))
    high = np.asarray(_masks.keep_mask(key, 0.6, (4096,), "fast"))
    assert np.all(low | ~high)  # kept at 0.6 implies kept at 0.2
    longer = np.asarray(_masks.keep_mask(key, 0.2, (8192,), "fast"))
    np.testing.assert_array_equal(longer[:4096], low)


def test_neighbours_along_every_axis_are_uncorrelated():
    shape = (64, 32, 48)
    mask = np.asarray(_masks.keep_mask(jax.random.key(4), 0.5, shape, "fast"), np.float64)
    checks = 0
    for axis in range(3):
        for lag in (1, 2):
            a = np.take(mask, range(shape[axis] - lag), axis=axis).ravel()
            b = np.take(mask, range(lag, shape[axis]), axis=axis).ravel()
            r = np.corrcoef(a, b)[0, 1]
            checks += 1
            assert abs(r) < stats.norm.isf(P_MIN / 12) / math.sqrt(a.size), (axis, lag, r)
    # and across the word-limit split (leading axes in the high counter word), on a small limit
    words = _masks._key_words(jax.random.key(5))
    bits = np.asarray(_masks.per_element(words, (64, 32, 16), 2, lambda w0, w1: (w0, w1), _word_limit=1024))
    rows = (bits >= 2**31).astype(np.float64).reshape(64, -1)
    r = np.corrcoef(rows[:-1].ravel(), rows[1:].ravel())[0, 1]
    assert abs(r) < stats.norm.isf(P_MIN / 2) / math.sqrt(rows[1:].size), r


def test_fast16_keep_rate_is_the_rate_rounded_to_2_to_the_minus_16():
    # "fast16": four 16-bit decisions per block; the keep probability is exactly 1 - round(rate * 2**16) / 2**16.
    # Its halves are those of the fast words: element 2i is the low half of word i of random_bits, 2i + 1 the high.
    n = 1 << 18
    bits = _bits(7, n // 2)
    halves = np.stack([bits & 0xFFFF, bits >> 16], axis=-1).reshape(n)
    np.testing.assert_array_equal(
        _masks.keep_mask(jax.random.key(7), 0.37, (n,), "fast16"), halves >= _masks.drop_threshold16(0.37)
    )
    rates = [*np.linspace(0.0, 1.0, 41).tolist(), 2**-16, 1.4e-5, 1 - 2**-16]
    for rate in rates:
        kept = int(np.count_nonzero(halves >= _masks.drop_threshold16(rate)))
        kept_probability = 1.0 - round(rate * 2**16) / 2**16
        if kept_probability in (0.0, 1.0):
            assert kept == n * kept_probability, rate
        else:
            assert _binomial_ok(kept, n, kept_probability, len(rates)), (rate, kept / n)
    # traced rates round the same way (float32 holds rate * 2**16 to well within half a step for these rates)
    traced = jax.jit(jax.vmap(_masks.drop_threshold16))(jnp.asarray(rates[:41], jnp.float32))
    np.testing.assert_array_equal(traced, [int(_masks.drop_threshold16(rate)) for rate in rates[:41]])


@pytest.mark.parametrize("generator", ["fast", "fast16"])
def test_elements_sharing_a_block_are_uncorrelated(generator):
    # Neighbours on the last axis share a Threefry block (2 for "fast", 4 for "fast16"): every pair of slots of a
    # block, at rates 0.5 and 0.1, and the 4 x 4 (or 2 x 2) contingency table of slots' decisions.
    per_block = _masks.ELEMENTS_PER_BLOCK[generator]
    n = 1 << 18
    checks = 2 * per_block * (per_block - 1) // 2
    for rate in (0.5, 0.1):
        mask = np.asarray(_masks.keep_mask(jax.random.key(8), rate, (n,), generator), np.float64)
        slots = mask.reshape(-1, per_block)
        for a in range(per_block):
            for b in range(a + 1, per_block):
                r = np.corrcoef(slots[:, a], slots[:, b])[0, 1]
                assert abs(r) < stats.norm.isf(P_MIN / checks / 2) / math.sqrt(len(slots)), (rate, a, b, r)
    patterns = np.bincount((slots.astype(np.int64) << np.arange(per_block)).sum(1), minlength=2**per_block)
    expected = np.array(
        [
            math.prod(0.9 if (pattern >> slot) & 1 else 0.1 for slot in range(per_block))
            for pattern in range(2**per_block)
        ]
    ) * len(slots)
    assert stats.chisquare(patterns, expected).pvalue > P_MIN


@pytest.mark.slow
def test_box_muller_pairs_are_independent_normals():
    # A block gives r cos(theta) to the even element and r sin(theta) to the odd one: independent N(0, 1) pairs.
    z = np.asarray(_masks.normal(jax.random.key(9), (1 << 18,), "fast"), np.float64).reshape(-1, 2)
    n = len(z)
    bound = stats.norm.isf(P_MIN / 4) / math.sqrt(n)
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < bound
    assert abs(np.corrcoef(z[:, 0] ** 2, z[:, 1] ** 2)[0, 1]) < bound  # shared radius, yet independent
    for column in range(2):
        assert stats.kstest(z[:, column], "norm").pvalue > P_MIN
    # the pair's squared radius is chi-square with 2 degrees of freedom (exponential with mean 2)
    assert stats.kstest((z**2).sum(1), "expon", args=(0, 2)).pvalue > P_MIN


@pytest.mark.parametrize("rate", [0.1, 0.9])
def test_runs_at_skewed_rates(rate):
    n = 1 << 18
    mask = np.asarray(_masks.keep_mask(jax.random.key(6), rate, (n,), "fast"))
    p = mask.mean()
    runs = 1 + np.count_nonzero(mask[1:] != mask[:-1])
    expected = 1 + 2 * n * p * (1 - p)
    # Wald-Wolfowitz variance for a two-valued sequence with n1, n2 occurrences
    n1 = float(mask.sum())
    n2 = n - n1
    variance = 2 * n1 * n2 * (2 * n1 * n2 - n) / (n**2 * (n - 1))
    assert abs(runs - expected) < stats.norm.isf(P_MIN / 2) * math.sqrt(variance)
    # longest run of drops: at rate 0.9 runs of ~log(n)/log(1/0.9) drops are normal, far longer ones are not
    drop_runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[1], mask.astype(np.int8), [1]])) != 0))[::2]
    longest = drop_runs.max()
    # P(some run >= L) <= n * rate**L
    assert n * rate ** float(longest) > P_MIN, longest


# --- heavy versions (`pytest -m slow`) ------------------------------------------------------------------------------


@pytest.mark.slow
def test_slow_chi_square_per_bit_on_many_bits():
    n, num_keys = 1 << 22, 16
    chi2 = []
    for seed in range(num_keys):
        bits = _bits(1000 + seed, n)
        ones = np.array([np.count_nonzero((bits >> position) & 1) for position in range(32)])
        chi2.append((2 * ones - n) ** 2 / n)
    p_values = stats.chi2.sf(np.array(chi2), 1)
    assert p_values.min() > P_MIN / p_values.size
    assert stats.kstest(p_values.ravel(), "uniform").pvalue > P_MIN


@pytest.mark.slow
def test_slow_keep_rate_at_small_rates_on_many_elements():
    n = 1 << 24
    bits = _bits(11, n)
    for rate in (1e-6, 1e-5, 1e-4, 1e-3):
        kept = int(np.count_nonzero(bits >= _masks.drop_threshold(rate)))
        assert _binomial_ok(kept, n, 1 - rate, 4), (rate, 1 - kept / n)


@pytest.mark.slow
def test_slow_dieharder_smoke():
    # The battery itself is `scripts/dieharder.py` (docs/randomness.md); this runs its shortest test end to end.
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("dieharder") is None:
        pytest.skip("dieharder is not installed (`apt-get install dieharder`)")
    script = Path(__file__).parent.parent / "scripts" / "dieharder.py"
    result = subprocess.run(
        [sys.executable, str(script), "--tests", "0", "--chunk-log2", "20"], capture_output=True, text=True
    )
    assert "diehard_birthdays" in result.stdout and "FAILED 0" in result.stdout, result.stdout + result.stderr
