"""The training code shared by ``python -m jaxdrop demo`` and the example scripts (through ``examples/_common.py``).

A ReLU MLP with dropout whose rates may be traced, one optimizer step, and a progress bar (the loss is optax's
``softmax_cross_entropy_with_integer_labels``). Only JAX and jaxdrop are imported with the module: optax when a
step is built, tqdm when a bar is shown (without tqdm the bar is silent).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

import jaxdrop
from jaxdrop.cli._extras import require


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


def gradient_step(optimizer: Any, loss_fn: Callable[..., jax.Array]) -> Callable[..., tuple[Any, Any]]:
    """One optax update of ``params`` on the gradient of ``loss_fn(params, *args)``.

    Args:
      optimizer: an ``optax.GradientTransformation``.
      loss_fn: ``(params, *args) -> scalar loss``.

    Returns:
      ``step(params, opt_state, *args) -> (params, opt_state)``, a pure function to ``vmap``, ``scan`` or ``jit``.
    """
    optax = require("optax", "gradient_step")

    def step(params, opt_state, *args):
        grads = jax.grad(loss_fn)(params, *args)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step


class _SilentBar:
    """What ``progress`` returns without tqdm: iterates over its iterable; ``update`` and ``close`` do nothing."""

    def __init__(self, iterable: Iterable | None) -> None:
        self._iterable = () if iterable is None else iterable

    def __iter__(self):
        return iter(self._iterable)

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", quiet: bool = False):
    """A tqdm bar on a terminal; silent when ``quiet``, when stderr is not a TTY (tests, logs) or without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is in the examples extra; the demo's --quick runs without it
        return _SilentBar(iterable)
    return tqdm(iterable, total=total, desc=desc, disable=quiet or not sys.stderr.isatty(), leave=False)
