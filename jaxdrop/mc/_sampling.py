"""The Monte Carlo engine: per-sample keys, ``vmap`` within a chunk, ``lax.scan`` over chunks, optional reduction.

Sample ``i`` always uses ``fold_in(key, i)``, so its value does not depend on how the samples are chunked or
sharded. Within a chunk the samples are one ``vmap``: JAX batches only what depends on the key, so a deterministic
prefix of the model (everything before the first dropout) is computed once, not once per sample. Across chunks,
``lax.scan`` keeps memory bounded by the chunk; XLA hoists the loop-invariant prefix out of the loop.

Also here: `sample()`, the check that the samples differ (`IdenticalSamplesWarning`), and the split of arguments
into a hashable static part and arrays that lets one compiled program serve every call of ``sample`` and
``predict`` (compiled and kept fresh by ``_closures``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks, _mode
from jaxdrop.keys import fold_in
from jaxdrop.mc import _closures, _function_samples


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


class IdenticalSamplesWarning(UserWarning):
    """Every Monte Carlo sample is the same: no output of the model depends on the dropout key."""


def _depends_on_key(per_sample: Callable[[jax.Array], Any], key: jax.Array) -> bool:
    """Whether any output of ``per_sample`` may depend on its key, read from its jaxpr (nothing is computed).

    A forward walk: an equation with a key-dependent input makes its outputs key-dependent, and the references it
    may write to. It over-approximates (never a false "no"), so a warning is never given for samples that differ.
    (``eval_shape`` of a ``vmap`` with ``out_axes=None`` would answer too, but only by raising, and JAX keeps the
    arrays closed over by a trace that raised: each compilation would leak the model's parameters.)
    """
    jaxpr = jax.make_jaxpr(per_sample)(key).jaxpr
    dependent = {id(var) for var in jaxpr.invars}
    for eqn in jaxpr.eqns:
        if any(id(var) in dependent for var in eqn.invars):
            written = [var for var in eqn.invars if isinstance(var.aval, jax.ref.AbstractRef)]
            dependent.update(id(var) for var in [*eqn.outvars, *written])
    return any(id(var) in dependent for var in jaxpr.outvars)


def _warn_if_key_unused(per_sample: Callable[[jax.Array], Any], key: jax.Array, num_samples: int) -> None:
    """Warns (`IdenticalSamplesWarning`) when no output of ``per_sample`` depends on its key."""
    if num_samples < 2 or _depends_on_key(per_sample, key):
        return
    warnings.warn(
        f"jaxdrop.mc: all {num_samples} samples are identical: no output of the model depends on the dropout key, "
        f"so the Monte Carlo average is one deterministic pass and every uncertainty is zero. Likely causes: dropout "
        f"is switched off (flax's own `nn.Dropout` or `nnx.Dropout` with `train=False`/`deterministic=True`, or nnx "
        f"`mode_attributes` that do not reach the Dropout layers: `jaxdrop.stochastic()`, which `mc` enters while "
        f"tracing, turns on only jaxdrop's layers); a dropout rate of 0; a function compiled with `jax.jit` outside "
        f"`jaxdrop.stochastic()`; or a function that ignores its `key`. Fixes: use jaxdrop's Dropout layers "
        f"(`jaxdrop.linen.Dropout`, `jaxdrop.nnx.Dropout`, `jaxdrop.equinox.Dropout`) and keep evaluation mode; for a "
        f"model without BatchNorm-like state, pass its training flag (`apply_kwargs={{'train': True}}`); or pass the "
        f"key to the dropout calls.",
        IdenticalSamplesWarning,
        stacklevel=2,
    )


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
    ``num_samples % chunk_size`` samples form one smaller chunk (a second static shape, no padding). Warns
    (`IdenticalSamplesWarning`) when the samples cannot differ.
    """
    result = _draw(per_sample, key, num_samples, chunk_size, reducer, mesh, mesh_axis)
    _warn_if_key_unused(per_sample, key, num_samples)
    return result


def _draw(
    per_sample: Callable[[jax.Array], Any],
    key: jax.Array,
    num_samples: int,
    chunk_size: int,
    reducer: Reducer | None,
    mesh: jax.sharding.Mesh | None,
    mesh_axis: str | None,
) -> Any:

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


# Static/dynamic split so that one compiled program serves every call: arrays are traced, everything else (flags
# such as ``train=True``, Python-number rates, modules, functions) is a static argument, as it would be when called
# eagerly.


class StaticTree(NamedTuple):
    """The hashable part of a pytree: its structure and its non-array leaves as ``(type, value)`` (None for arrays).

    The type is kept because ``0 == False`` and ``1 == 1.0 == True`` hash alike: without it, a call with ``0``
    would reuse the program traced for ``False``.
    """

    treedef: Any
    leaves: tuple
    is_array: tuple[bool, ...]

    def values(self) -> tuple:
        """The non-array leaves (functions, objects, numbers): what may read arrays from outside the arguments."""
        return tuple(leaf[1] for leaf, array in zip(self.leaves, self.is_array, strict=True) if not array)


def split_static(tree: Any) -> tuple[StaticTree, list]:
    """``tree`` as (hashable static part, list of array leaves); ``join_static`` inverts it."""
    leaves, treedef = jax.tree.flatten(tree)
    is_array = tuple(_closures.is_array(leaf) for leaf in leaves)
    static = tuple(None if array else (type(leaf), leaf) for leaf, array in zip(leaves, is_array, strict=True))
    return StaticTree(treedef, static, is_array), [leaf for leaf, array in zip(leaves, is_array, strict=True) if array]


def join_static(static: StaticTree, arrays: list) -> Any:
    array_iter = iter(arrays)
    pairs = zip(static.leaves, static.is_array, strict=True)
    leaves = [next(array_iter) if array else leaf[1] for leaf, array in pairs]
    return jax.tree.unflatten(static.treedef, leaves)


class _SampleStatic(NamedTuple):
    """The jit-static arguments of ``sample`` (hashed into the cache key)."""

    fn_and_args: StaticTree  # ``(fn, args, kwargs)`` without their arrays (``fn`` may be a pytree: an equinox model)
    num_samples: int
    chunk_size: int
    mesh: jax.sharding.Mesh | None
    mesh_axis: str | None
    batch_axes: _function_samples.BatchAxes | None  # per leaf of ``args``, with ``function_samples=True``


class _SampleArrays(NamedTuple):
    """The traced arguments of ``sample`` (a pytree)."""

    key: jax.Array
    fn_and_args: list  # the arrays of ``(fn, args, kwargs)``


def _sample_impl(static: _SampleStatic, dynamic: _SampleArrays) -> Any:
    fn, args, kwargs = join_static(static.fn_and_args, dynamic.fn_and_args)
    per_sample: Callable[[jax.Array], Any] = lambda k: fn(k, *args, **kwargs)
    if static.batch_axes is not None:
        leaves, treedef = jax.tree.flatten(args)
        batch_axes = static.batch_axes

        def call(k: jax.Array, batch: list) -> Any:
            return fn(k, *jax.tree.unflatten(treedef, batch), **kwargs)

        per_sample = lambda k: _function_samples.shared_masks(call, k, leaves, batch_axes)
    with _mode.stochastic():  # jaxdrop's layers sample even when the call says deterministic=True
        return run(
            per_sample,
            dynamic.key,
            static.num_samples,
            static.chunk_size,
            None,
            static.mesh,
            static.mesh_axis,
        )


def _is_key(value: object) -> bool:
    """A single typed key, or a legacy ``uint32[2]`` key (for the deprecated positional spelling of ``sample``)."""
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        return value.ndim == 0
    return isinstance(value, (jax.Array, np.ndarray)) and value.dtype == np.uint32 and value.shape == (2,)


def _legacy_arguments(args: tuple, key: Any, num_samples: Any) -> tuple[tuple, Any, Any]:
    """``(args, key, num_samples)``, accepting the deprecated ``sample(fn, key, num_samples, *args)``."""
    if key is None and args and _is_key(args[0]):
        if num_samples is None and len(args) > 1 and isinstance(args[1], int) and not isinstance(args[1], bool):
            args, key, num_samples = args[2:], args[0], args[1]
        elif num_samples is not None:  # sample(fn, key, num_samples=T, *args)
            args, key = args[1:], args[0]
        if key is not None:
            warnings.warn(
                "`jaxdrop.mc.sample(fn, key, num_samples, *args)` is deprecated: pass the key and the number of "
                "samples as keywords, `jaxdrop.mc.sample(fn, *args, key=key, num_samples=num_samples)` (the "
                "spelling of `mc.predict`).",
                DeprecationWarning,
                stacklevel=3,
            )
    if key is None:
        raise TypeError(
            "`key` is required: `jaxdrop.mc.sample(fn, *args, key=jax.random.key(seed), num_samples=T)`; got no "
            "`key=` keyword (and the arguments do not start with a key and an int, the deprecated spelling)."
        )
    if num_samples is None:
        raise TypeError(
            "`num_samples` is required: `jaxdrop.mc.sample(fn, *args, key=key, num_samples=T)` with an int T >= 1; "
            "got no `num_samples=` keyword."
        )
    return args, key, num_samples


def sample(
    fn: Callable[..., Any],
    *args: Any,
    key: jax.Array | None = None,
    num_samples: int | None = None,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    mesh_axis: str | None = None,
    function_samples: bool = False,
    batch_axes: Any = None,
    **kwargs: Any,
) -> Any:
    """Draws ``num_samples`` Monte Carlo samples of ``fn(key, *args, **kwargs)``, sample axis first.

    MC dropout (Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation", ICML) keeps dropout on at prediction
    time; each sample is one stochastic pass. Sample ``i`` uses the key ``jaxdrop.fold_in(key, i)``, so sample
    ``i`` is the same whatever ``chunk_size`` or ``mesh`` is. The samples are one ``vmap`` over keys, and only what
    depends on the key is computed per sample: a deterministic prefix (the layers before the first dropout) is
    computed once. ``fn`` is traced inside `jaxdrop.stochastic()`, so jaxdrop's layers sample even when ``fn``
    calls them in evaluation mode (``deterministic=True``, ``train=False``); other layers keep their mode.

    The computation is compiled once per ``fn`` and options: arrays in ``args``/``kwargs`` (and the arrays of a
    pytree ``fn``, such as an equinox model) are traced, other values (flags, Python-number rates) are static, as
    they would be in an eager call. Arrays that ``fn`` reads without taking them as arguments (closed over,
    globals, a ``functools.partial``'s arguments, a bound method's object) are baked into the compiled program:
    each call checks whether they are still the same objects and, if one was replaced, compiles again and warns
    once (`RecompileWarning`). Pass parameters that change as arguments, ``sample(fn, params, x, key=key,
    num_samples=T)``, to compile once. NumPy arrays changed in place are seen only when small (10,000 elements).

    Args:
      fn: ``fn(key, *args, **kwargs)`` returning a pytree of arrays.
      *args: positional arguments of ``fn``, shared by every sample (not batched).
      key: a typed (``jax.random.key``) or legacy (``jax.random.PRNGKey``) key (required).
      num_samples: number of samples ``T >= 1`` (required, static).
      chunk_size: at most this many samples are evaluated at once (a ``vmap`` per chunk, ``lax.scan`` over
        chunks); ``None`` evaluates all at once. A value above ``num_samples`` means all at once; when it does
        not divide ``num_samples`` the remainder is one smaller chunk.
      mesh: a ``jax.sharding.Mesh``: the sample axis is split over ``mesh_axis`` (each device draws its share).
      mesh_axis: the mesh axis for samples; defaults to the mesh's first axis.
      function_samples: draw each sample's masks once for the whole batch: every input of the batch gets the same
        masks, so sample ``i`` is one function (one draw from the approximate posterior, Gal 2016) evaluated on
        every input, and an input's samples do not depend on what else is in the batch (BatchBALD, Kirsch et al.
        2019, needs this). ``fn`` is ``vmap``-ped over the batch, each example run as a batch of one with the
        sample's key: ``fn`` must treat examples independently (no batch statistics) and return outputs with the
        batch axis first. ``False`` (default): one mask per example, as drawn by ``fn`` on the whole batch.
      batch_axes: with ``function_samples=True``, where the batch is in ``args``, with ``jax.vmap``'s ``in_axes``
        meaning for the positional arguments: ``None`` (default) is axis 0 of every array argument (scalars are
        shared), an int that axis of every array argument, a tuple one int or None (shared, e.g. parameters) per
        argument. ``**kwargs`` are always shared.
      **kwargs: keyword arguments of ``fn``, shared by every sample.

    Returns:
      The pytree returned by ``fn`` with a leading axis of size ``num_samples``.

    Raises:
      TypeError: ``key`` or ``num_samples`` missing, ``num_samples`` or ``chunk_size`` not an int, ``key`` not a
        key, ``mesh`` not a Mesh, ``function_samples`` not a bool, ``batch_axes`` of the wrong kind.
      ValueError: ``num_samples < 1``, ``chunk_size < 1``, ``mesh_axis`` is not an axis of ``mesh``; with
        ``function_samples``, ``batch_axes`` not matching ``args`` (count, axis out of range, batch sizes that
        differ, no batched array) or an output without the batch axis first; ``batch_axes`` without it.

    Warns:
      IdenticalSamplesWarning: no output depends on the key, so every sample is the same (dropout is off).
      RecompileWarning: arrays ``fn`` reads from outside its arguments changed since it was compiled.
      DeprecationWarning: the old spelling ``sample(fn, key, num_samples, *args)``, still accepted.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> def fn(key, x):
      ...     return jaxdrop.dropout(x, 0.5, key=key).sum()
      >>> key = jax.random.key(0)
      >>> samples = jaxdrop.mc.sample(fn, jnp.ones(100), key=key, num_samples=8, chunk_size=3)
      >>> samples.shape
      (8,)
      >>> bool(jnp.array_equal(samples, jaxdrop.mc.sample(fn, jnp.ones(100), key=key, num_samples=8)))
      True
      >>> masks = jaxdrop.mc.sample(lambda k, x: jaxdrop.dropout(x, 0.5, key=k) > 0, jnp.ones((3, 100)), key=key,
      ...                           num_samples=4, function_samples=True)
      >>> bool((masks == masks[:, :1]).all())  # one mask per sample, shared by the 3 inputs
      True
    """
    args, key, num_samples = _legacy_arguments(args, key, num_samples)
    num_samples = _checks.positive_int(num_samples, "num_samples")
    chunk = chunk_length(chunk_size, num_samples)
    mesh_axis = check_mesh(mesh, mesh_axis)
    key = _checks.key(key)
    if _checks.static_bool(function_samples, "function_samples"):
        leaf_axes: _function_samples.BatchAxes | None = _function_samples.leaf_axes(args, batch_axes)
    elif batch_axes is not None:
        raise ValueError(
            f"`batch_axes={batch_axes!r}` says which arguments carry the batch for `function_samples=True`; it was "
            f"given with `function_samples=False`, where every argument is shared by the samples as it is."
        )
    else:
        leaf_axes = None
    fn_static, fn_arrays = split_static((fn, args, kwargs))
    static = _SampleStatic(fn_static, num_samples, chunk, mesh, mesh_axis, leaf_axes)
    return _closures.call_jitted(_sample_impl, static, _SampleArrays(key, fn_arrays), fn, fn_static.values())
