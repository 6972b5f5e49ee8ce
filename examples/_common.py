"""Helpers shared by the example scripts: command line, progress bars, figures and tables, a dropout MLP.

Every example is a script with ``main(argv) -> dict`` so ``tests/test_examples.py`` can run its ``--quick`` mode
in-process and assert on the numbers it returns.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxdrop

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


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", quiet: bool = False):
    """A tqdm bar on a terminal; silent when ``quiet`` or when stderr is not a TTY (tests, logs)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=quiet or not sys.stderr.isatty(), leave=False)


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


def init_mlp(key: jax.Array, sizes: Sequence[int]) -> list[dict[str, jax.Array]]:
    """He-initialised dense layers ``sizes[0] -> ... -> sizes[-1]``."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(params, x, *, key, input_rate, hidden_rate, deterministic=False):
    """ReLU MLP with dropout on the input and after every hidden layer; one key per layer via ``fold_in``.

    The rates may be traced, so ``jax.vmap`` over rates trains one network per rate in a single program.
    """
    layer_key = lambda i: None if deterministic else jaxdrop.fold_in(key, i)
    x = jaxdrop.dropout(x, input_rate, key=layer_key(0), deterministic=deterministic)
    for i, layer in enumerate(params[:-1]):
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
        x = jaxdrop.dropout(x, hidden_rate, key=layer_key(i + 1), deterministic=deterministic)
    return x @ params[-1]["w"] + params[-1]["b"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1))


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
