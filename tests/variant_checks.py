"""Checks every dropout variant must pass, shared by the variant test files (not collected by pytest itself).

``apply(x, rate, key, deterministic)`` adapts a variant to one calling convention. ``check_variant`` runs compiled
and compiles each program once: eager execution compiles every primitive on its own, which is slow on a busy CPU.
``check_eager_and_jit`` holds the few properties checked both ways, under ``chex.variants``.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

RANDOM_PRIMITIVES = ("random_bits", "random_seed", "random_wrap", "random_unwrap", "threefry2x32", "iota")
TOLERANCE = {jnp.bfloat16: 2e-2, jnp.float16: 2e-3}

Apply = Callable[[jax.Array, object, jax.Array | None, bool], jax.Array]


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """Float32 test data from NumPy: ``jax.random`` would compile a Threefry kernel for every new shape."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def randint(seed: int, shape: tuple[int, ...], high: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(0, high, shape), jnp.int32)


def random_primitives(fn: Callable, *args) -> set[str]:
    """Random-number primitives in the jaxpr of ``fn(*args)``, including nested ones."""
    text = str(jax.make_jaxpr(fn)(*args))
    return {name for name in RANDOM_PRIMITIVES if f" {name}[" in text or f" {name} " in text}


def check_variant(apply: Apply, x: jax.Array, rate: float = 0.3, *, at_one: str | None = "zeros") -> None:
    """The properties shared by every variant.

    - dtype: float32, bfloat16, float16 in, the same dtype out, the same decisions, values within rounding;
    - ``vmap`` over keys equals a loop over keys, and different keys give different outputs;
    - gradients are finite;
    - a static rate 0 or ``deterministic`` returns the input itself with nothing random traced, and needs no key;
    - a traced rate works without recompiling: 0 is the identity, ``rate`` gives the static result's distribution;
    - rate 1, static or traced: all zeros with zero, never-NaN gradients (``at_one="zeros"``).
    """
    key = jax.random.key(0)
    run = jax.jit(lambda x, key: apply(x, rate, key, False))
    reference = np.asarray(run(x, key))
    assert np.isfinite(reference).all()
    low_precision = jax.jit(lambda x, key: [apply(x.astype(dtype), rate, key, False) for dtype in TOLERANCE])
    for dtype, y in zip(TOLERANCE, low_precision(x, key), strict=True):
        chex.assert_type(y, dtype)
        chex.assert_shape(y, x.shape)
        chex.assert_trees_all_close(np.asarray(y, np.float32), reference, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])

    keys = jax.random.split(key, 8)
    mapped = np.asarray(jax.jit(jax.vmap(run, in_axes=(None, 0)))(x, keys))
    for i in range(3):
        chex.assert_trees_all_close(mapped[i], run(x, keys[i]), rtol=1e-6, atol=1e-6)
    assert len({sample.tobytes() for sample in mapped}) > 1  # different keys, different samples

    grad = jax.jit(jax.grad(lambda x: jnp.sum(run(x, key) ** 2)))(x)
    chex.assert_shape(grad, x.shape)
    chex.assert_tree_all_finite(grad)

    assert apply(x, 0.0, key, False) is x
    assert apply(x, 0.4, None, True) is x
    assert not random_primitives(lambda x, k: apply(x, 0.0, k, False), x, key)
    assert not random_primitives(lambda x, k: apply(x, 0.4, k, True), x, key)

    traced = jax.jit(lambda x, r: apply(x, r, key, False))
    chex.assert_trees_all_close(traced(x, 0.0), x, rtol=1e-6, atol=1e-6)
    chex.assert_tree_all_finite(traced(x, rate))
    if at_one == "zeros":
        zeros = jnp.zeros_like(x)
        chex.assert_trees_all_equal(apply(x, 1.0, None, False), zeros)  # static: no key needed
        chex.assert_trees_all_equal(traced(x, 1.0), zeros)
        grad = jax.jit(jax.grad(lambda x, r: jnp.sum(apply(x, r, key, False) * x)))(x, 1.0)
        chex.assert_trees_all_equal(grad, zeros)


def check_eager_and_jit(
    variant: Callable[[Callable], Callable],
    apply: Apply,
    x: jax.Array,
    rate: float = 0.3,
    *,
    at_one: str | None = "zeros",
) -> None:
    """The properties checked eagerly and under ``jit`` alike: call it from a test under
    ``chex.variants(with_jit=True, without_jit=True)`` with ``self.variant``.

    - a draw at ``rate`` keeps the shape and dtype of ``x`` and is finite;
    - a static rate 0 and ``deterministic`` give ``x`` back, with no key;
    - a static rate 1 gives zeros, with no key (``at_one="zeros"``).

    Only float32 runs eagerly (each dtype compiles every primitive again); ``check_variant`` covers the other dtypes.
    """
    drawn = variant(lambda x, key: apply(x, rate, key, False))(x, jax.random.key(0))
    chex.assert_shape(drawn, x.shape)
    chex.assert_type(drawn, x.dtype)
    chex.assert_tree_all_finite(drawn)
    chex.assert_trees_all_equal(variant(lambda x: apply(x, 0.0, None, False))(x), x)
    chex.assert_trees_all_equal(variant(lambda x: apply(x, rate, None, True))(x), x)
    if at_one == "zeros":
        chex.assert_trees_all_equal(variant(lambda x: apply(x, 1.0, None, False))(x), jnp.zeros_like(x))
