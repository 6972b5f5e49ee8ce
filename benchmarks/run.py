"""Runs the jaxdrop benchmark: ``python benchmarks/run.py [--quick] [--out DIR] [--sections ...]``.

A thin wrapper over ``jaxdrop.cli.bench.main`` (also ``python -m jaxdrop bench``); see benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from jaxdrop.cli import bench
except ImportError:  # run from a source checkout without installing: use the package next to this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxdrop.cli import bench

if __name__ == "__main__":
    sys.exit(bench.main(sys.argv[1:]))
