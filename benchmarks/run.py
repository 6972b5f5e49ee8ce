"""Runs the jaxdrop benchmark: ``python benchmarks/run.py [--quick] [--out DIR] [--sections ...]``.

A thin wrapper over ``jaxdrop.bench.main`` (also ``python -m jaxdrop bench``); see benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import jaxdrop.bench
except ImportError:  # run from a source checkout without installing: use the package next to this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jaxdrop.bench

if __name__ == "__main__":
    sys.exit(jaxdrop.bench.main(sys.argv[1:]))
