"""Turns a plain function, a linen module with its variables, or an nnx module into ``per_sample(key, inputs)``.

Each adapter is split into a hashable static part (function, module definition, flags) and a dynamic part
(variables, arrays), so ``jaxdrop.mc.predict`` runs under one cached ``jax.jit``. Nothing here broadcasts the
parameters or inputs over the sample axis: only the dropout keys depend on the sample, so ``vmap`` keeps
everything before the first dropout unbatched (computed once). Flax is imported only when a Flax model is given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxdrop.keys import fold_in
from jaxdrop.mc import _sampling, _sites
from jaxdrop.mc._sampling import StaticTree


# The static (hashable, jit-static) part of each kind of model. The three never compare equal (one field against
# three; a ``str`` is never a ``tuple``, a module is not a graph definition), so the kind is part of the cache key
# as a tag would be.
class FunctionModel(NamedTuple):
    fn_and_kwargs: StaticTree  # ``(fn, apply_kwargs)``: a pytree ``fn`` (an equinox model) has its arrays traced


class LinenModel(NamedTuple):
    module: Any  # a flax.linen.Module
    rng_collection: str
    kwargs: StaticTree


class NnxModel(NamedTuple):
    graphdef: Any  # the nnx.GraphDef of the module
    attributes: tuple[tuple[str, Any], ...]  # sorted (name, value) pairs set on every sub-module that has them
    kwargs: StaticTree


ModelStatic = FunctionModel | LinenModel | NnxModel


def user_objects(static: ModelStatic) -> tuple:
    """The user's objects in ``static`` that may read arrays from outside the arguments (see ``_closures``).

    A linen module's arrays are its ``variables`` and an nnx module's state is split on every call, so for them
    only the non-array ``apply_kwargs`` (a callable, say) are watched.
    """
    if isinstance(static, FunctionModel):
        return static.fn_and_kwargs.values()
    return static.kwargs.values()


class LinenArrays(NamedTuple):
    kwargs: list
    variables: Any


class NnxArrays(NamedTuple):
    kwargs: list
    stream_keys: Any  # the RNG keys of the dropout streams, re-keyed per sample
    stream_counts: Any
    rest: Any  # parameters and every other state, shared by the samples


def _is_instance(model: object, module_name: str) -> bool:
    """True if ``model`` is a ``<module_name>.Module``; never imports Flax (an unimported Flax made no model)."""
    module = sys.modules.get(module_name)
    return module is not None and isinstance(model, module.Module)


def split_model(
    model: Any,
    variables: Any,
    rng_collection: str,
    apply_kwargs: Mapping[str, Any] | None,
    mode_attributes: Mapping[str, Any] | None,
) -> tuple[ModelStatic, Any]:
    """``(static, dynamic)`` parts of ``model``; ``bind(static, dynamic)`` gives ``per_sample(key, inputs)``."""
    apply_kwargs = dict(apply_kwargs or {})
    kwargs_static, kwargs_dynamic = _sampling.split_static(apply_kwargs)
    if _is_instance(model, "flax.linen"):
        if variables is None:
            raise ValueError(
                "`variables` is required for a linen module: pass `variables=model.init(...)` "
                "(the parameters and any other collections)."
            )
        return LinenModel(model, rng_collection, kwargs_static), LinenArrays(kwargs_dynamic, variables)
    if variables is not None:
        raise ValueError(
            "`variables` is only for linen modules; a plain function or an nnx module carries its "
            f"own parameters (got a {type(model).__name__})."
        )
    if _is_instance(model, "flax.nnx"):
        return _split_nnx(model, rng_collection, kwargs_static, kwargs_dynamic, mode_attributes)
    if not callable(model):
        raise TypeError(
            f"`model` must be a function `fn(key, inputs)`, a flax linen module or a flax nnx module; "
            f"got {type(model).__name__}."
        )
    fn_static, fn_dynamic = _sampling.split_static((model, apply_kwargs))
    return FunctionModel(fn_static), fn_dynamic


def _split_nnx(
    model: Any,
    rng_collection: str,
    kwargs_static: StaticTree,
    kwargs_dynamic: list,
    mode_attributes: Mapping[str, Any] | None,
) -> tuple[NnxModel, NnxArrays]:
    from flax import nnx

    # nnx resolves a missing stream to "default" (``Rngs.__getitem__``), so a Dropout built from ``Rngs(0)``
    # holds a stream tagged "default": both tags must be re-keyed or every sample would share one mask.
    streams = nnx.Any(nnx.WithTag(rng_collection), nnx.WithTag("default"))
    split: tuple[Any, ...] = nnx.split(model, nnx.All(nnx.RngKey, streams), nnx.All(nnx.RngCount, streams), ...)
    graphdef, stream_keys, stream_counts, rest = split  # one state per filter
    if not jax.tree.leaves(stream_keys):
        raise ValueError(
            f"The nnx module has no RNG stream tagged {rng_collection!r} (or 'default'), so every MC sample would "
            f"be identical. Build its Dropout layers with `rngs=nnx.Rngs(..., {rng_collection}=seed)`, pass "
            f"`rng_collection=` the stream it uses, or pass a function `fn(key, inputs)` instead."
        )
    attributes = {"deterministic": False} if mode_attributes is None else dict(mode_attributes)
    static = NnxModel(graphdef, tuple(sorted(attributes.items())), kwargs_static)
    return static, NnxArrays(kwargs_dynamic, stream_keys, stream_counts, rest)


def _stream_name(path: tuple) -> str:
    """``"drop1/rngs/key"``: the state path of an RNG key, without the Variable's own pytree entries."""
    names = [
        str(getattr(entry, "key", getattr(entry, "idx", "")))
        for entry in path
        if isinstance(entry, (jax.tree_util.DictKey, jax.tree_util.SequenceKey))
    ]
    return "/".join(names)


def bind(
    static: ModelStatic,
    dynamic: Any,
    chosen: dict[str, bool] | None = None,
    record: list[_sites.Site] | None = None,
) -> Callable[[jax.Array, Any], Any]:
    """The per-sample function ``(key, inputs) -> outputs`` of a model split by ``split_model``.

    For linen and nnx models, ``chosen`` (``{path: chosen}`` for every dropout site) switches on only the chosen
    sites, and ``record`` collects the sites met while the function is traced (see ``_sites``).
    """
    if isinstance(static, FunctionModel):
        fn, kwargs = _sampling.join_static(static.fn_and_kwargs, dynamic)
        return lambda key, inputs: fn(key, inputs, **kwargs)
    if isinstance(static, LinenModel):
        module, rng_collection = static.module, static.rng_collection
        variables, kwargs = dynamic.variables, _sampling.join_static(static.kwargs, dynamic.kwargs)

        def apply(key: jax.Array, inputs: Any) -> Any:
            with _sites.linen_selection(chosen, record):
                return module.apply(variables, inputs, rngs={rng_collection: key}, **kwargs)

        return apply
    arrays: NnxArrays = dynamic
    kwargs = _sampling.join_static(static.kwargs, arrays.kwargs)

    def per_sample(key: jax.Array, inputs: Any) -> Any:
        from flax import nnx

        # The stream at state path "a/rngs/key" gets fold_in(sample_key, "a/rngs/key") and its count restarts at
        # 0. The parameters are untouched (unbatched), and the user's module is never mutated.
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # legacy uint32[2] key; nnx stores typed keys
            key = jax.random.wrap_key_data(key)
        keys = jax.tree_util.tree_map_with_path(lambda path, _: fold_in(key, _stream_name(path)), arrays.stream_keys)
        counts = jax.tree.map(jnp.zeros_like, arrays.stream_counts)
        module = nnx.merge(static.graphdef, keys, counts, arrays.rest)
        with _sites.nnx_selection(module, dict(static.attributes), chosen, record):
            return module(inputs, **kwargs)

    return per_sample
