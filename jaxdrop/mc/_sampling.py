"""The Monte Carlo engine: per-sample keys, ``vmap`` within a chunk, ``lax.scan`` over chunks, optional reduction.

Sample ``i`` always uses ``fold_in(key, i)``, so its value does not depend on how the samples are chunked or
sharded. Within a chunk the samples are one ``vmap``: JAX batches only what depends on the key, so a deterministic
prefix of the model (everything before the first dropout) is computed once, not once per sample. Across chunks,
``lax.scan`` keeps memory bounded by the chunk; XLA hoists the loop-invariant prefix out of the loop.

Also here: `sample()`, and the split of arguments into a hashable static part and arrays that lets one cached
``jax.jit`` serve every call of ``sample`` and ``predict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks
from jaxdrop.keys import fold_in


class Reducer(Protocol):
    """Streaming statistics over the sample axis: ``finalize(update(...update(init(shapes), c1)..., cn), T)``."""

    def init(self, chunk_shapes: Any) -> Any: ...

    def update(self, state: Any, chunk: Any) -> Any: ...

    def finalize(self, state: Any, num_samples: int) -> Any: ...


def chunk_length(chunk_size: object, num_samples: int) -> int:
    """``chunk_size`` validated; ``None`` or a value above ``num_samples`` means one chunk of every sample."""
    if chunk_size is None:
        return num_samples
    return min(_checks.positive_int(chunk_size, "chunk_size"), num_samples)


def check_mesh(mesh: jax.sharding.Mesh | None, mesh_axis: str | None) -> str | None:
    """The mesh axis the samples are split over (the mesh's first axis by default)."""
    if mesh is None:
        if mesh_axis is not None:
            raise ValueError(f"`mesh_axis={mesh_axis!r}` was given without a `mesh`.")
        return None
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"`mesh` must be a `jax.sharding.Mesh` or None; got {type(mesh).__name__}.")
    axis = mesh.axis_names[0] if mesh_axis is None else mesh_axis
    if axis not in mesh.axis_names:
        raise ValueError(f"`mesh_axis` must be one of the mesh's axes {tuple(mesh.axis_names)}; got {axis!r}.")
    return axis


def _on_sample_axis(tree: Any, mesh: jax.sharding.Mesh | None, axis: str | None) -> Any:
    """Places the leading (sample) axis of every array in ``tree`` on the mesh axis ``axis``."""
    if mesh is None:
        return tree
    # A sharding constraint on an Auto-typed copy of the mesh: ``jax.make_mesh`` gives Explicit axes, which would
    # otherwise need ``jax.set_mesh`` around the call; the constraint only says where the sample axis lives.
    auto = jax.sharding.Mesh(
        mesh.devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
    )
    sharding = jax.sharding.NamedSharding(auto, jax.sharding.PartitionSpec(axis))
    return jax.tree.map(lambda x: lax.with_sharding_constraint(x, sharding) if jnp.ndim(x) else x, tree)


def _first() -> jax.Array:
    return jnp.zeros((), jnp.uint32)


def run(
    per_sample: Callable[[jax.Array], Any],
    key: jax.Array,
    num_samples: int,
    chunk_size: int,
    reducer: Reducer | None = None,
    mesh: jax.sharding.Mesh | None = None,
    mesh_axis: str | None = None,
) -> Any:
    """Evaluates ``per_sample(fold_in(key, i))`` for ``i < num_samples``, ``chunk_size`` samples at a time.

    Without a ``reducer`` returns the stacked samples (sample axis first). With one, folds each chunk into the
    reducer's state, so memory is set by ``chunk_size`` whatever ``num_samples`` is. The last
    ``num_samples % chunk_size`` samples form one smaller chunk (a second static shape, no padding).
    """

    def chunk(start: jax.Array | int, size: int) -> Any:
        indices = _on_sample_axis(jnp.asarray(start, jnp.uint32) + jnp.arange(size, dtype=jnp.uint32), mesh, mesh_axis)
        keys = jax.vmap(fold_in, in_axes=(None, 0))(key, indices)
        return _on_sample_axis(jax.vmap(per_sample)(keys), mesh, mesh_axis)

    num_full, remainder = divmod(num_samples, chunk_size)
    if reducer is None:
        if num_full == 1:
            samples = chunk(0, chunk_size)
        else:
            _, stacked = lax.scan(
                lambda start, _: (start + chunk_size, chunk(start, chunk_size)), _first(), None, length=num_full
            )
            samples = jax.tree.map(lambda x: x.reshape(num_full * chunk_size, *x.shape[2:]), stacked)
        if remainder:
            rest = chunk(num_full * chunk_size, remainder)
            samples = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), samples, rest)
        return samples

    state = reducer.init(jax.eval_shape(lambda: chunk(0, chunk_size)))
    if num_full == 1:
        state = reducer.update(state, chunk(0, chunk_size))
    else:
        # The chunk's first index is carried (no per-chunk array of starts), so memory is independent of T.
        (_, state), _ = lax.scan(
            lambda carry, _: ((carry[0] + chunk_size, reducer.update(carry[1], chunk(carry[0], chunk_size))), None),
            (_first(), state),
            None,
            length=num_full,
        )
    if remainder:
        state = reducer.update(state, chunk(num_full * chunk_size, remainder))
    return reducer.finalize(state, num_samples)


# Static/dynamic split so that one ``jax.jit`` serves every call: arrays are traced, everything else (flags such as
# ``train=True``, Python-number rates, modules, functions) is a static argument, as it would be when called eagerly.


def _is_array(leaf: object) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray)) or hasattr(leaf, "__jax_array__")


class StaticTree(NamedTuple):
    """The hashable part of a pytree: its structure and its non-array leaves (None where an array was)."""

    treedef: Any
    leaves: tuple
    is_array: tuple[bool, ...]


def split_static(tree: Any) -> tuple[StaticTree, list]:
    """``tree`` as (hashable static part, list of array leaves); ``join_static`` inverts it."""
    leaves, treedef = jax.tree.flatten(tree)
    is_array = tuple(_is_array(leaf) for leaf in leaves)
    static = tuple(None if array else leaf for leaf, array in zip(leaves, is_array, strict=True))
    return StaticTree(treedef, static, is_array), [leaf for leaf, array in zip(leaves, is_array, strict=True) if array]


def join_static(static: StaticTree, arrays: list) -> Any:
    array_iter = iter(arrays)
    leaves = [next(array_iter) if array else leaf for leaf, array in zip(static.leaves, static.is_array, strict=True)]
    return jax.tree.unflatten(static.treedef, leaves)


def _call(impl: Callable, static: Any, dynamic: Any) -> Any:
    return impl(static, dynamic)


_jitted_call = jax.jit(_call, static_argnums=(0, 1))


def call_jitted(impl: Callable[[Any, Any], Any], static: Any, dynamic: Any) -> Any:
    """``impl(static, dynamic)`` under one cached ``jax.jit`` (static part hashed); eagerly if it is unhashable."""
    try:
        hash(static)
    except TypeError:
        return impl(static, dynamic)
    return _jitted_call(impl, static, dynamic)


class _SampleStatic(NamedTuple):
    """The jit-static arguments of ``sample`` (hashed into the cache key)."""

    fn: Callable[..., Any]
    num_samples: int
    chunk_size: int
    mesh: jax.sharding.Mesh | None
    mesh_axis: str | None
    args: StaticTree  # ``(args, kwargs)`` without their arrays


class _SampleArrays(NamedTuple):
    """The traced arguments of ``sample`` (a pytree)."""

    key: jax.Array
    args: list  # the arrays of ``(args, kwargs)``


def _sample_impl(static: _SampleStatic, dynamic: _SampleArrays) -> Any:
    args, kwargs = join_static(static.args, dynamic.args)
    return run(
        lambda k: static.fn(k, *args, **kwargs),
        dynamic.key,
        static.num_samples,
        static.chunk_size,
        None,
        static.mesh,
        static.mesh_axis,
    )


def sample(
    fn: Callable[..., Any],
    key: jax.Array,
    num_samples: int,
    *args: Any,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    mesh_axis: str | None = None,
    **kwargs: Any,
) -> Any:
    """Draws ``num_samples`` Monte Carlo samples of ``fn(key, *args, **kwargs)``, sample axis first.

    MC dropout (Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation", ICML) keeps dropout on at prediction
    time; each sample is one stochastic pass. Sample ``i`` uses the key ``jaxdrop.fold_in(key, i)``, so sample
    ``i`` is the same whatever ``chunk_size`` or ``mesh`` is. The samples are one ``vmap`` over keys, and only what
    depends on the key is computed per sample: a deterministic prefix (the layers before the first dropout) is
    computed once.

    The whole computation runs under one cached ``jax.jit``: arrays in ``args``/``kwargs`` are traced, other values
    (flags, Python-number rates) are static, as they would be in an eager call.

    Args:
      fn: ``fn(key, *args, **kwargs)`` returning a pytree of arrays.
      key: a typed (``jax.random.key``) or legacy (``jax.random.PRNGKey``) key.
      num_samples: number of samples ``T >= 1`` (static).
      *args: positional arguments of ``fn``, shared by every sample (not batched).
      chunk_size: at most this many samples are evaluated at once (a ``vmap`` per chunk, ``lax.scan`` over
        chunks); ``None`` evaluates all at once. A value above ``num_samples`` means all at once; when it does
        not divide ``num_samples`` the remainder is one smaller chunk.
      mesh: a ``jax.sharding.Mesh``: the sample axis is split over ``mesh_axis`` (each device draws its share).
      mesh_axis: the mesh axis for samples; defaults to the mesh's first axis.
      **kwargs: keyword arguments of ``fn``, shared by every sample.

    Returns:
      The pytree returned by ``fn`` with a leading axis of size ``num_samples``.

    Raises:
      TypeError: ``num_samples`` or ``chunk_size`` is not an int, ``key`` is not a key, ``mesh`` is not a Mesh.
      ValueError: ``num_samples < 1``, ``chunk_size < 1``, or ``mesh_axis`` is not an axis of ``mesh``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> def fn(key, x):
      ...     return jaxdrop.dropout(x, 0.5, key=key).sum()
      >>> samples = jaxdrop.mc.sample(fn, jax.random.key(0), 8, jnp.ones(100), chunk_size=3)
      >>> samples.shape
      (8,)
      >>> bool(jnp.array_equal(samples, jaxdrop.mc.sample(fn, jax.random.key(0), 8, jnp.ones(100))))
      True
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    chunk = chunk_length(chunk_size, num_samples)
    mesh_axis = check_mesh(mesh, mesh_axis)
    key = _checks.key(key)
    args_static, args_arrays = split_static((args, kwargs))
    static = _SampleStatic(fn, num_samples, chunk, mesh, mesh_axis, args_static)
    return call_jitted(_sample_impl, static, _SampleArrays(key, args_arrays))
