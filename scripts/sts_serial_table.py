"""The `sts_serial` comparison table of docs/randomness.md ("the fast stream against reference generators").

Reads one raw dieharder output per run, named ``<generator>_<seed>.txt`` (generators ``fast``, ``numpy``, ``mt``,
``aes``) in a folder, and prints the table and the statistics the page quotes. Make the runs with (one at a time)::

    mkdir -p runs
    for seed in $(seq 100 159); do
      nice -n 19 python scripts/dieharder.py --tests 102 --seed $seed > runs/fast_$seed.txt
      nice -n 19 python scripts/dieharder.py --tests 102 --seed $seed --reference numpy > runs/numpy_$seed.txt
      nice -n 19 dieharder -d 102 -g 13 -S $seed > runs/mt_$seed.txt
    done
    for seed in 100 101; do nice -n 19 dieharder -d 102 -g 205 -S $seed > runs/aes_$seed.txt; done
    python scripts/sts_serial_table.py runs

Needs scipy (installed with the ``examples`` extra, through scikit-learn). Only complete runs (30 lines) count.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re

import numpy as np
from scipy import stats

LINE = re.compile(r"sts_serial\|\s*(\d+)\|\s*\d+\|\s*\d+\|\s*([0-9.]+)\|\s*(PASSED|WEAK|FAILED)")
NAMES = {
    "fast": "fast v2, chunks stream",
    "numpy": "numpy PCG64, same pipe and chunks",
    "mt": "Mersenne Twister (dieharder's `-g 13`)",
    "aes": "AES_OFB (dieharder's `-g 205`)",
}
REFERENCES = ("numpy", "mt", "aes")


def read_runs(folder: pathlib.Path) -> dict[str, dict[int, np.ndarray]]:
    runs: dict[str, dict[int, np.ndarray]] = collections.defaultdict(dict)
    for path in sorted(folder.glob("*_*.txt")):
        generator, seed = path.stem.split("_")
        p_values = [float(match[2]) for match in LINE.finditer(path.read_text().replace(" ", ""))]
        if len(p_values) == 30:
            runs[generator][int(seed)] = np.array(p_values)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=pathlib.Path)
    runs = read_runs(parser.parse_args().folder)
    common = sorted(set(runs["fast"]) & set(runs["numpy"]) & set(runs["mt"]))
    print(f"seeds {common[0]}-{common[-1]} ({len(common)} with every generator)\n")
    print(
        "| Generator | runs | lines | WEAK | p > 0.995 | p < 0.005 | runs with a line at p > 0.995 | lines at p > 0.9 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    counts = {}
    for generator in NAMES:
        seeds = common if generator != "aes" else sorted(runs["aes"])
        if not seeds:
            continue
        p_values = np.concatenate([runs[generator][seed] for seed in seeds])
        high, low = int((p_values > 0.995).sum()), int((p_values < 0.005).sum())
        runs_high = sum(int((runs[generator][seed] > 0.995).any()) for seed in seeds)
        counts[generator] = (len(p_values), high, low, runs_high, len(seeds))
        print(
            f"| {NAMES[generator]} | {len(seeds)} | {len(p_values)} | {high + low} ({(high + low) / len(p_values):.1%})"
            f" | {high} | {low} | {runs_high} ({runs_high / len(seeds):.0%}) | {(p_values > 0.9).mean():.1%} |"
        )
    print("| expected if the p-values were uniform and independent | | | 1% | 0.5% | 0.5% | 14% | 10% |\n")

    references = [counts[generator] for generator in REFERENCES if generator in counts]
    lines_fast, high_fast, low_fast, runs_high_fast, seeds_fast = counts["fast"]
    lines_ref = sum(c[0] for c in references)
    for label, fast, reference in (
        ("WEAK", high_fast + low_fast, sum(c[1] + c[2] for c in references)),
        ("p > 0.995", high_fast, sum(c[1] for c in references)),
    ):
        # Two Poisson rates compared conditionally on their total: a binomial test of the fast stream's share.
        test = stats.binomtest(fast, fast + reference, lines_fast / (lines_fast + lines_ref))
        low, high = test.proportion_ci(0.95, method="exact")
        ratio = (fast / lines_fast) / (reference / lines_ref)
        interval = f"{low / (1 - low) * lines_ref / lines_fast:.2f}-{high / (1 - high) * lines_ref / lines_fast:.2f}"
        print(
            f"{label}: fast {fast}/{lines_fast} vs references {reference}/{lines_ref}: rate ratio {ratio:.2f}"
            f" (95% {interval}), two-sided p = {test.pvalue:.2f}"
        )
        nominal = 0.01 if label == "WEAK" else 0.005
        for generator in ("fast", "numpy", "mt"):
            lines, high_count, low_count = counts[generator][:3]
            count = high_count + (low_count if label == "WEAK" else 0)
            p_nominal = stats.binomtest(count, lines, nominal).pvalue
            print(f"    {generator} against the nominal {nominal:.1%}: binomial p = {p_nominal:.2g}")
    high_fast_numpy = stats.binomtest(high_fast, high_fast + counts["numpy"][1], 0.5).pvalue
    print(f"p > 0.995, fast vs PCG64 alone: {high_fast} vs {counts['numpy'][1]}, binomial p = {high_fast_numpy:.2f}")
    runs_high_ref, seeds_ref = sum(c[3] for c in references), sum(c[4] for c in references)
    fisher = stats.fisher_exact(
        [[runs_high_fast, seeds_fast - runs_high_fast], [runs_high_ref, seeds_ref - runs_high_ref]]
    )
    print(
        f"runs with a line at p > 0.995: fast {runs_high_fast}/{seeds_fast}, "
        f"references {runs_high_ref}/{seeds_ref}, Fisher p = {fisher[1]:.2f}"
    )
    for generator in ("fast", "numpy", "mt"):
        p_values = np.concatenate([runs[generator][seed] for seed in common])
        print(
            f"{generator}: Kolmogorov-Smirnov against uniform p = {stats.kstest(p_values, 'uniform').pvalue:.1g}, "
            f"mean p {p_values.mean():.3f}"
        )


if __name__ == "__main__":
    main()
