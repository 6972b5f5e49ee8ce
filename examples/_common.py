"""Helpers shared by the example scripts: command line, figures and tables, batches, seed statistics.

The dropout MLP, the optimizer step and the progress bar are ``jaxdrop.cli.training``'s (the code
``python -m jaxdrop demo`` trains with) and the table formatter is ``jaxdrop.cli.markdown_table``, re-exported here
so every example imports its helpers from ``_common``; the loss is optax's
``softmax_cross_entropy_with_integer_labels``.

Every example is a script with ``main(argv) -> dict`` so ``tests/test_examples.py`` can run its ``--quick`` mode
in-process and assert on the numbers it returns. A ``--quick`` run is a smoke test: it writes to a new temporary
directory unless ``--out`` names another one, and refuses an ``--out`` inside ``examples/results/``, whose files
come from the full runs only.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxdrop
from jaxdrop.cli import markdown_table
from jaxdrop.cli.training import gradient_step, init_mlp, mlp, progress

__all__ = [
    "EXAMPLES_DIR",
    "RESULTS_DIR",
    "accuracy",
    "compare",
    "gradient_step",
    "init_mlp",
    "markdown_table",
    "mean_se",
    "minibatches",
    "mlp",
    "out_dir",
    "parser",
    "progress",
    "pyplot",
    "quick_env",
    "save_figure",
    "seed_stats",
    "write_text",
]

EXAMPLES_DIR = Path(__file__).resolve().parent
RESULTS_DIR = EXAMPLES_DIR / "results"


class _ExampleParser(argparse.ArgumentParser):
    """Refuses ``--quick`` with an ``--out`` inside ``examples/results/`` (smoke-test numbers are never committed)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = super().parse_known_args(args, namespace)
        if parsed.quick and parsed.out is not None and Path(parsed.out).resolve().is_relative_to(RESULTS_DIR):
            self.error(
                f"--quick results are smoke-test numbers and never go into {RESULTS_DIR}; "
                "drop --out (a temporary directory is used) or choose another directory"
            )
        return parsed, extra


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every example has: ``--quick``, ``--out``, ``--seed``, ``--quiet``."""
    p = _ExampleParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (< 30 s); used by the tests")
    p.add_argument(
        "--out",
        help=f"directory for figures and tables (default: {RESULTS_DIR.relative_to(EXAMPLES_DIR.parent)}/; with "
        "--quick, a new temporary directory: quick runs never write into the committed results)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def out_dir(args: argparse.Namespace) -> Path:
    """``--out``, created; by default ``examples/results/`` for a full run and a new temporary one for ``--quick``."""
    if args.out is not None:
        path = Path(args.out)
    elif args.quick:
        path = Path(tempfile.mkdtemp(prefix="jaxdrop-quick-"))
        print(f"--quick: writing to {path} (examples/results/ holds the full runs' files)", file=sys.stderr)
    else:
        path = RESULTS_DIR
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


def accuracy(logits: jax.Array, labels: jax.Array) -> float:
    return float(jnp.mean(jnp.argmax(logits, -1) == labels))


def minibatches(rng: np.random.RandomState, num_examples: int, batch_size: int) -> np.ndarray:
    """One epoch of shuffled batch indices, ``(num_batches, batch_size)``; the ragged tail is dropped."""
    order = rng.permutation(num_examples)
    num_batches = max(1, num_examples // batch_size)
    return order[: num_batches * batch_size].reshape(num_batches, -1)


def seeded_epoch(one_model, rates, seeds, x_train, y_train, *, key_name: str):
    """A jitted epoch training one model per (seed, rate) together: ``vmap`` over seeds and rates, ``scan`` over the
    batches. ``one_model(params, opt_state, key, rate, x, y)`` is one optimizer step; the rates of a seed share its
    dropout key (``fold_in(key(seed), key_name, epoch, step)``) and its batches, so comparisons are paired."""

    @jax.jit
    def epoch(params, opt_state, batches, epoch_index):
        def step(carry, inputs):
            batch, i = inputs  # batch: (seeds, batch_size)

            def one_seed(params, opt_state, seed, batch):
                key = jaxdrop.fold_in(jax.random.key(seed), key_name, epoch_index, i)
                return jax.vmap(one_model, in_axes=(0, 0, None, 0, None, None))(
                    params, opt_state, key, rates, x_train[batch], y_train[batch]
                )

            return jax.vmap(one_seed)(*carry, seeds, batch), None

        steps = jnp.arange(batches.shape[1])
        return jax.lax.scan(step, (params, opt_state), (jnp.swapaxes(batches, 0, 1), steps))[0]

    return epoch


def quick_env() -> bool:
    """Notebooks read ``JAXDROP_QUICK=1`` (set by the tests) to run with small settings."""
    return os.environ.get("JAXDROP_QUICK", "0") not in ("", "0")


def seed_stats(values: Sequence[float] | np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over seeds (along ``axis``); the error is NaN with a single seed."""
    values = np.asarray(values, np.float64)
    count = values.shape[axis]
    mean = values.mean(axis)
    error = values.std(axis, ddof=1) / np.sqrt(count) if count > 1 else np.full_like(mean, np.nan)
    return mean, error


def compare(first: Sequence[float], second: Sequence[float], *, fmt: str = ".3f", z: float = 2.0) -> tuple[str, str]:
    """How ``first`` compares with ``second`` over paired seeds, in words a figure title can use.

    Returns:
      ``(word, detail)``: ``word`` is ``"higher"`` or ``"lower"`` when the mean paired difference is more than ``z``
      standard errors from 0, ``"level within noise"`` when it is not, and ``"not resolved (one seed)"`` with a
      single seed; ``detail`` is the difference with its standard error, e.g. ``"+0.031 ± 0.004"``.
    """
    difference = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    mean, error = (float(v) for v in seed_stats(difference))
    if math.isnan(error):
        return "not resolved (one seed)", _number(mean, "+" + fmt)
    detail = f"{_number(mean, '+' + fmt)} ± {_number(error, fmt)}"
    if abs(mean) <= z * error:
        return "level within noise", detail
    return ("higher" if mean > 0 else "lower"), detail


def mean_se(values: Sequence[float] | np.ndarray, fmt: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
    """``"0.923 ± 0.004"``: mean and standard error over seeds (the mean alone with one seed)."""
    mean, error = (float(v) * scale for v in seed_stats(values))
    if math.isnan(error):
        return f"{_number(mean, fmt)}{unit}"
    return f"{_number(mean, fmt)}{unit} ± {_number(error, fmt)}{unit}"


def _number(value: float, fmt: str) -> str:
    """``value`` in ``fmt``, or with one significant digit where ``fmt`` would round a non-zero value to 0."""
    text = f"{value:{fmt}}"
    if value != 0 and float(text) == 0:  # "0.000 ± 0.000" would hide a small but real number
        return f"{value:{fmt[0] if fmt[0] == '+' else ''}.1g}"
    return text
