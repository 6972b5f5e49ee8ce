"""Streams the fast generator's raw 32-bit outputs into dieharder and summarises PASSED / WEAK / FAILED.

Two streams, both exactly what ``jaxdrop._masks.random_bits`` computes:

``chunks``
    consecutive blocks of ``2**chunk_log2`` words, block ``i`` being ``random_bits(fold_in(root, i), (n,))``: a new
    key per block, the way a training loop draws one key per step.
``counter``
    one key and one long run of counters: block ``i`` is Threefry-2x32-13 under the key words of ``random_bits``
    at counters ``i * n / 2 ... (i + 1) * n / 2 - 1``, both output words of each counter in turn (fast generator
    v2: two elements per Threefry block; the low counter word wraps into the high word after 2**32 counters, as
    ``element_counters`` does for very large masks). Block 0 is checked against ``random_bits``.

Each dieharder test gets its own process and a fresh stream (root ``fold_in(key(seed), test number)``, or
``test * 100 + ntuple`` for the RGB tests that take an ntuple), so no test sees bits another one consumed and a test
can be re-run alone with another ``--seed``. JAX is imported once; ``--seed 0-29`` runs the tests once per seed.

``--reference numpy`` or ``--reference jax`` sends a reference generator through the same pipe, in the same chunks
and with the same per-test roots, to compare WEAK counts fairly: numpy's PCG64 (block ``i`` is the next
``2**chunk_log2`` words of ``Generator(PCG64(SeedSequence(key_data(root))))``) or JAX's own
``jax.random.bits(fold_in(root, i))`` (Threefry-2x32 with 20 rounds).

Usage (installs the Debian package ``dieharder`` if it is missing; needs root or sudo for that)::

    python scripts/dieharder.py --mode chunks --tests 0-17               # the Diehard tests
    python scripts/dieharder.py --mode counter --tests 0-17,100-102,200-209 --log out.txt
    python scripts/dieharder.py --mode chunks --tests 203:1 --seed 7   # one lagged-sum ntuple, another seed
    python scripts/dieharder.py --mode chunks --all                      # `dieharder -a` on one stream
    python scripts/dieharder.py --tests 102 --seed 0-29 --reference numpy   # numpy's PCG64, 30 seeds
    python scripts/dieharder.py --throughput                             # generation speed only

Run it niced on a shared machine: ``nice -n 19 python scripts/dieharder.py ...``. Any FAILED is a bug; WEAK
results happen by chance (about 1 in 100 per test at the default thresholds): re-run that test with another seed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _masks

RESULT_LINE = re.compile(r"^\s*(\S+)\|\s*(\d+)\|\s*(\d+)\|\s*(\d+)\|\s*([0-9.eE+-]+)\|\s*(PASSED|WEAK|FAILED)\s*$")


def ensure_dieharder() -> str:
    """Path of the ``dieharder`` executable, installing the Debian package when it is missing."""
    path = shutil.which("dieharder")
    if path:
        return path
    prefix = [] if shutil.which("sudo") is None else ["sudo"]
    subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", "dieharder"], check=True)
    path = shutil.which("dieharder")
    if not path:
        raise SystemExit("dieharder is not installed and could not be installed with apt-get")
    return path


def reference_blocks(reference: str, root: jax.Array, num_words: int):
    """Yields ``uint32[num_words]`` blocks of a reference generator, seeded from ``root`` as the fast streams are."""
    if reference == "numpy":
        seed_words = [int(word) for word in np.asarray(jax.random.key_data(root)).ravel()]
        generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed_words)))
        while True:
            yield generator.integers(0, 2**32, size=num_words, dtype=np.uint32)
    block = jax.jit(lambda index: jax.random.bits(jax.random.fold_in(root, index), (num_words,), jnp.uint32))
    index = 0
    pending = block(jnp.int32(index))
    while True:
        index += 1
        following = block(jnp.int32(index))  # dispatched before the current block is converted
        yield np.asarray(pending)
        pending = following


def block_function(mode: str, root: jax.Array, num_words: int):
    """A jitted ``index -> uint32[num_words]`` for block ``index`` of the chosen stream."""
    if mode == "chunks":
        return jax.jit(lambda index: _masks.random_bits(jax.random.fold_in(root, index), (num_words,)))
    words = jax.random.bits(root, (2,), jnp.uint32)  # the key words random_bits derives from `root`

    def counter_block(index: jax.Array) -> jax.Array:
        # Fast generator v2: each Threefry block gives two consecutive words, so block `index` of the stream is
        # the Threefry blocks at counters index * num_words / 2 ... (index + 1) * num_words / 2 - 1, both words
        # of each in turn. The 64-bit counter goes in two uint32 words (x64 is off by default).
        num_blocks = num_words // 2
        per_word = (2**32) // num_blocks  # stream blocks per 2**32 counters (num_words is a power of two)
        low_start = (index % per_word).astype(jnp.uint32) * jnp.uint32(num_blocks)
        high = (index // per_word).astype(jnp.uint32)
        low = low_start + jnp.arange(num_blocks, dtype=jnp.uint32)
        word0, word1 = _masks.threefry2x32((words[0], words[1]), (low, jnp.broadcast_to(high, low.shape)))
        return jnp.stack([word0, word1], axis=-1).reshape(num_words)

    block = jax.jit(counter_block)
    # The stream is the generator's: block 0 is exactly random_bits(root, (num_words,)).
    np.testing.assert_array_equal(np.asarray(block(jnp.int32(0))), np.asarray(_masks.random_bits(root, (num_words,))))
    return block


def stream_blocks(mode: str, root: jax.Array, num_words: int, reference: str | None = None):
    """Yields the stream's blocks as bytes; the next block is dispatched before the current one is converted."""
    if reference is not None:
        for words in reference_blocks(reference, root, num_words):
            yield words.astype("<u4", copy=False).tobytes()
        return
    block = block_function(mode, root, num_words)
    index = 0
    pending = block(jnp.int32(index))
    while True:
        index += 1
        following = block(jnp.int32(index))
        yield np.asarray(pending).astype("<u4", copy=False).tobytes()
        pending = following


def run_dieharder(
    dieharder: str, args: list[str], mode: str, root: jax.Array, num_words: int, reference: str | None = None
) -> tuple[str, int]:
    """Runs ``dieharder -g 200 <args>`` fed from the stream; returns its output and the bytes it was sent."""
    process = subprocess.Popen(
        [dieharder, "-g", "200", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    sent = 0
    try:
        for data in stream_blocks(mode, root, num_words, reference):
            if process.poll() is not None:
                break
            process.stdin.write(data)
            sent += len(data)
    except (BrokenPipeError, ValueError):
        pass
    finally:
        try:
            process.stdin.close()
        except BrokenPipeError:
            pass
    output = process.stdout.read().decode(errors="replace")
    process.wait()
    return output, sent


# The RGB tests that take an ntuple; `dieharder -a` runs them over these ranges (bit distribution, minimum distance,
# permutations, lagged sums), and a standalone `-d 200` without `-n` is refused.
NTUPLES = {200: range(1, 13), 201: range(2, 6), 202: range(2, 6), 203: range(0, 33)}


def parse_seeds(spec: str) -> list[int]:
    """``"3"`` -> ``[3]``; ``"0-4,9"`` -> ``[0, 1, 2, 3, 4, 9]``."""
    seeds: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def parse_tests(spec: str) -> list[tuple[int, int | None]]:
    """``"0-2,200"`` -> ``[(0, None), (1, None), (2, None), (200, 1), ..., (200, 12)]``; ``"203:5"`` is one ntuple."""
    runs: list[tuple[int, int | None]] = []
    for part in spec.split(","):
        part, _, ntuple = part.partition(":")
        low, _, high = part.partition("-")
        for test in range(int(low), int(high or low) + 1):
            if ntuple:
                runs.append((test, int(ntuple)))
            else:
                runs.extend((test, n) for n in NTUPLES.get(test, [None]))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("chunks", "counter"), default="chunks")
    parser.add_argument("--tests", default="0-17", help="dieharder test numbers, e.g. 0-17,100-102,200-209")
    parser.add_argument("--all", action="store_true", help="run `dieharder -a` on one stream instead of --tests")
    parser.add_argument("--seed", default="0", help="root key seed, or seeds: 0-29 runs the tests for each")
    parser.add_argument(
        "--reference",
        choices=("numpy", "jax"),
        default=None,
        help="send a reference generator through the same pipe instead: numpy's PCG64 or jax.random.bits",
    )
    parser.add_argument("--chunk-log2", type=int, default=24, help="words per generated block: 2**chunk_log2")
    parser.add_argument("--extra", default="", help="extra dieharder arguments, e.g. '-p 200'")
    parser.add_argument("--log", default=None, help="append dieharder's output to this file")
    parser.add_argument("--throughput", action="store_true", help="only measure generation speed")
    options = parser.parse_args()

    num_words = 2**options.chunk_log2
    seeds = parse_seeds(options.seed)
    if options.reference is not None and options.mode != "chunks":
        parser.error("--reference streams in chunks: use it with --mode chunks (the default)")
    stream = options.mode if options.reference is None else f"reference {options.reference}"
    print(f"jax {jax.__version__} on {jax.default_backend()}, stream {stream}, seed {options.seed}", flush=True)

    if options.throughput:
        blocks = stream_blocks(options.mode, jax.random.key(seeds[0]), num_words, options.reference)
        next(blocks)  # compile
        start, total = time.perf_counter(), 0
        for _ in range(8):
            total += len(next(blocks))
        print(f"{total / (time.perf_counter() - start) / 1e6:.0f} MB/s", flush=True)
        return

    dieharder = ensure_dieharder()
    runs = [(None, None)] if options.all else parse_tests(options.tests)
    counts: Counter[str] = Counter()
    total_bytes = 0
    start = time.perf_counter()
    log = open(options.log, "a") if options.log else None
    for seed in seeds:
        seed_root = jax.random.key(seed)
        for test, ntuple in runs:
            if test is None:
                args, name, root = ["-a"], "all", seed_root
            else:
                args, name = ["-d", str(test)], str(test)
                if ntuple is not None:
                    args, name = [*args, "-n", str(ntuple)], f"{test}:{ntuple}"
                # A fresh stream per run (fold in the test number, and the ntuple), so a test can be re-run alone.
                root = jax.random.fold_in(seed_root, test if ntuple is None else test * 100 + ntuple)
            test_start = time.perf_counter()
            extra = options.extra.split()
            output, sent = run_dieharder(dieharder, [*args, *extra], options.mode, root, num_words, options.reference)
            total_bytes += sent
            results = [match.groups() for line in output.splitlines() if (match := RESULT_LINE.match(line))]
            for result in results:
                counts[result[-1]] += 1
                p_value = float(result[-2])
                counts["p < 0.005"] += p_value < 0.005
                counts["p > 0.995"] += p_value > 0.995
                print("|".join(result), flush=True)
            if not results:
                print(f"test {name}: no result lines; dieharder said:\n{output}", flush=True)
            elapsed_test = time.perf_counter() - test_start
            print(f"# test {name} seed {seed}: {sent / 1e9:.2f} GB in {elapsed_test:.0f} s", flush=True)
            if log:
                log.write(f"# stream={stream} seed={seed} args={' '.join(args)} {options.extra}\n{output}\n")
                log.flush()
    elapsed = time.perf_counter() - start
    print(
        f"# summary stream={stream} seed={options.seed}: PASSED {counts['PASSED']}, WEAK {counts['WEAK']} "
        f"(p < 0.005: {counts['p < 0.005']}, p > 0.995: {counts['p > 0.995']}), FAILED {counts['FAILED']}; "
        f"{total_bytes / 1e9:.1f} GB in {elapsed / 60:.1f} min",
        flush=True,
    )
    sys.exit(1 if counts["FAILED"] else 0)


if __name__ == "__main__":
    main()
