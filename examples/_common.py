"""Helpers shared by the example scripts: command line, figures and tables, batches.

The dropout MLP, its loss, the optimizer step and the progress bar are ``jaxdrop.cli.training``'s (the code
``python -m jaxdrop demo`` trains with), re-exported here so every example imports its helpers from ``_common``.

Every example is a script with ``main(argv) -> dict`` so ``tests/test_examples.py`` can run its ``--quick`` mode
in-process and assert on the numbers it returns.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop.cli.training import cross_entropy, gradient_step, init_mlp, mlp, progress

__all__ = [
    "EXAMPLES_DIR",
    "RESULTS_DIR",
    "accuracy",
    "cross_entropy",
    "gradient_step",
    "init_mlp",
    "markdown_table",
    "minibatches",
    "mlp",
    "out_dir",
    "parser",
    "progress",
    "pyplot",
    "quick_env",
    "save_figure",
    "write_text",
]

EXAMPLES_DIR = Path(__file__).resolve().parent
RESULTS_DIR = EXAMPLES_DIR / "results"


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every example has: ``--quick``, ``--out``, ``--seed``, ``--quiet``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (< 30 s); used by the tests")
    p.add_argument("--out", default=str(RESULTS_DIR), help="directory for figures and tables")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def out_dir(args: argparse.Namespace) -> Path:
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend, with a readable default style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 10})
    return plt


def save_figure(fig, directory: Path, name: str) -> Path:
    path = directory / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_text(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text if text.endswith("\n") else text + "\n")
    return path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy(logits: jax.Array, labels: jax.Array) -> float:
    return float(jnp.mean(jnp.argmax(logits, -1) == labels))


def minibatches(rng: np.random.RandomState, num_examples: int, batch_size: int) -> np.ndarray:
    """One epoch of shuffled batch indices, ``(num_batches, batch_size)``; the ragged tail is dropped."""
    order = rng.permutation(num_examples)
    num_batches = max(1, num_examples // batch_size)
    return order[: num_batches * batch_size].reshape(num_batches, -1)


def quick_env() -> bool:
    """Notebooks read ``JAXDROP_QUICK=1`` (set by the tests) to run with small settings."""
    return os.environ.get("JAXDROP_QUICK", "0") not in ("", "0")
