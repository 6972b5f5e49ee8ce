"""One compiled program per function and options, rebuilt when the arrays the function reads from outside changed.

``jax.jit`` bakes the arrays a function reads without taking them as arguments (closure cells, globals, a
``functools.partial``'s arguments, a bound method's object, the fields of a callable object) into the compiled
program as constants. ``mc.sample`` and ``mc.predict`` keep one program per function and options, so without a
check a parameter updated between two calls would be silently ignored. Before each call the arrays reachable from
the user's objects are collected and compared, by identity, with those the program was compiled with; when one
changed the program is rebuilt (the old one is dropped with the arrays it baked in) and a `RecompileWarning`
(once per program) says that passing the parameters as arguments avoids a compilation per update.

JAX arrays are immutable, so identity is exact for them. A NumPy array can change in place: small ones (up to
``_CONTENT_LIMIT`` elements) are also compared by content; a larger one changed in place is not seen. Python
numbers and strings read from outside are baked in too but not watched: a function that counts its own traces in a
global would otherwise recompile on every call; pass such values as arguments (they are then static, part of the
program's key).

The walk follows closure cells, the globals a function's code names (and of the functions it names, recursively),
defaults, a partial's function and arguments, a bound method's object, pytree leaves (dicts, lists, equinox and
nnx modules), other objects' attributes and their class's own ``__call__``; it stops at modules, classes, the
functions of libraries (jax, flax, ...) and jax's own objects (following only what a ``jax.jit`` wraps), after
``_MAX_DEPTH`` hops or ``_MAX_NODES`` objects.
"""

from __future__ import annotations

import collections
import functools
import types
import warnings
from collections.abc import Callable, Hashable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np


class RecompileWarning(UserWarning):
    """The arrays a function reads from outside its arguments changed, so ``mc.sample``/``mc.predict`` recompiled."""


def is_array(leaf: object) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray)) or hasattr(leaf, "__jax_array__")


# Functions of these packages are not walked: their module-level arrays are constants, and walking them (jax's
# internals) would cost time on every call for nothing. Their *objects* (an nnx.Linear, an equinox MLP) are walked.
_LIBRARIES = frozenset(
    {"jax", "jaxlib", "numpy", "scipy", "flax", "equinox", "optax", "jaxdrop", "builtins", "functools", "typing"}
)
_OPAQUE = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    type,
    types.ModuleType,
    types.BuiltinFunctionType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.MethodDescriptorType,
)
_MAX_DEPTH = 12  # hops from the function: global dict -> nested dicts -> array is 3-5; a deep equinox model ~10
_MAX_NODES = 20_000  # bounds the walk (and so the per-call cost) on a huge object graph
_CONTENT_LIMIT = 10_000  # NumPy arrays up to this size are compared by content too (~10 us)


@functools.lru_cache(maxsize=4096)
def _code_names(code: types.CodeType) -> tuple[str, ...]:
    """The global (and attribute) names a code object and the code nested in it (lambdas, comprehensions) use."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _code_names(const)
    return tuple(dict.fromkeys(names))


def _root_module(obj: Any) -> str:
    return (getattr(obj, "__module__", None) or "").partition(".")[0]


def _children(obj: Any, describe: bool) -> Iterator[tuple[str, Any]]:
    """``(label, child)`` for what ``obj`` can read: an attribute or item (``.name``, ``[0]``) or a variable name."""
    if isinstance(obj, functools.partial):
        yield ".func", obj.func
        yield from ((f".args[{i}]", arg) for i, arg in enumerate(obj.args))
        yield from ((f".keywords[{name!r}]", value) for name, value in obj.keywords.items())
    elif isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
        yield ".__func__", obj.__func__
    elif isinstance(obj, types.FunctionType):
        if _root_module(obj) in _LIBRARIES:
            return
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=True):
            try:
                yield name, cell.cell_contents
            except ValueError:  # an empty cell: a variable assigned later in the enclosing function
                pass
        globals_ = obj.__globals__
        yield from ((name, globals_[name]) for name in _code_names(obj.__code__) if name in globals_)
        defaults = obj.__defaults__ or ()
        code = obj.__code__
        yield from zip(code.co_varnames[code.co_argcount - len(defaults) : code.co_argcount], defaults, strict=True)
        yield from ((name, value) for name, value in (obj.__kwdefaults__ or {}).items())
    else:
        try:
            if describe:
                with_paths, _ = jax.tree_util.tree_flatten_with_path(obj)
                leaves = [(jax.tree_util.keystr(path), leaf) for path, leaf in with_paths]
            else:
                leaves = [("", leaf) for leaf in jax.tree.leaves(obj)]
        except Exception:  # a container jax cannot flatten (dict keys of mixed types): walk its attributes only
            leaves = [("", obj)]
        if len(leaves) != 1 or leaves[0][1] is not obj:
            yield from leaves  # a pytree (dict, list, equinox or nnx module): its leaves
        elif _root_module(type(obj)) in ("jax", "jaxlib"):  # a jitted function, a custom_jvp: only what it wraps
            wrapped = getattr(obj, "__wrapped__", None)
            if wrapped is not None:
                yield ".__wrapped__", wrapped
        elif hasattr(obj, "__dict__"):
            yield from ((f".{name}", value) for name, value in vars(obj).items())
        call = vars(type(obj)).get("__call__")  # the class's own; inherited library ones read no user globals
        if isinstance(call, types.FunctionType):  # a callable object's __call__ may read globals
            yield ".__call__", call


def reachable_arrays(roots: tuple, describe: bool = False) -> list:
    """The arrays reachable from ``roots``, in a fixed order; with ``describe``, ``(path, array)`` pairs."""
    found: list = []
    seen: dict[int, Any] = {}  # id -> object, kept alive so that an id is not reused during the walk

    def visit(obj: Any, depth: int, path: str) -> None:
        if isinstance(obj, _OPAQUE) or isinstance(obj, jax.core.Tracer) or depth > _MAX_DEPTH:
            return
        if id(obj) in seen or len(seen) >= _MAX_NODES:
            return
        seen[id(obj)] = obj
        if is_array(obj):
            found.append((path, obj) if describe else obj)
            return
        for label, child in _children(obj, describe):
            visit(child, depth + 1, (path + label if label[:1] in ".[" else label) if describe else "")

    for root in roots:
        visit(root, 0, getattr(root, "__name__", type(root).__name__))
    return found


def _contents(arrays: list) -> dict[int, bytes]:
    """The bytes of the small numeric NumPy arrays among ``arrays``, by position (they can change in place)."""
    return {
        index: array.tobytes()
        for index, array in enumerate(arrays)
        if isinstance(array, np.ndarray) and array.size <= _CONTENT_LIMIT and array.dtype.kind in "biufc"
    }


class _Program(NamedTuple):
    jitted: Callable[[Any], Any]
    arrays: list  # strong references: an id seen at compile time cannot be reused by a new array
    contents: dict[int, bytes]
    warned: bool

    def sees(self, arrays: list) -> bool:
        """True when ``arrays`` are the ones this program was compiled with (same objects, same small contents)."""
        return len(arrays) == len(self.arrays) and all(self.same_at(index, array) for index, array in enumerate(arrays))

    def same_at(self, index: int, array: Any) -> bool:
        content = self.contents.get(index)
        return (
            index < len(self.arrays) and array is self.arrays[index] and (content is None or array.tobytes() == content)
        )


# Least recently used last; a bounded number so that functions made per call (lambdas) cannot pile up programs.
_programs: collections.OrderedDict[Hashable, _Program] = collections.OrderedDict()
_MAX_PROGRAMS = 64


def _warn_recompile(owner: object, roots: tuple, old: _Program) -> None:
    # The same walk with paths: the arrays come in the same order, so position ``i`` is compared with ``old``'s.
    described = reachable_arrays(roots, describe=True)
    changed = [path for index, (path, array) in enumerate(described) if not old.same_at(index, array)]
    what = ", ".join(f"`{path}`" for path in changed[:4]) + (", ..." if len(changed) > 4 else "")
    name = getattr(owner, "__name__", None) or type(owner).__name__
    warnings.warn(
        f"jaxdrop.mc: arrays that `{name}` reads without taking them as arguments (closed over, global, or "
        f"fields of the object) changed since it was compiled ({what or 'an array was removed'}), "
        f"so it was compiled again: compiled code keeps such arrays as constants. Each update now costs a "
        f"compilation; pass the parameters as arguments instead: `mc.sample(fn, params, x, key=key, num_samples=T)` "
        f"calls `fn(key, params, x)`; for `mc.predict` pass them in `inputs` or `apply_kwargs`. "
        f"(Warned once per function and options.)",
        RecompileWarning,
        stacklevel=4,
    )


def call_jitted(impl: Callable[[Any, Any], Any], static: Any, dynamic: Any, owner: object, roots: tuple) -> Any:
    """``impl(static, dynamic)`` compiled once per ``static`` (a hashable value), and again when ``roots`` changed.

    ``roots`` are the user's objects in ``static`` (functions, callable objects, non-array arguments); ``owner``
    names the function in the warning. An unhashable ``static`` runs eagerly.
    """
    cache_key = (impl, static)
    try:
        program = _programs.pop(cache_key, None)
    except TypeError:
        return impl(static, dynamic)
    arrays = reachable_arrays(roots)
    if program is None or not program.sees(arrays):
        warned = program is not None
        if program is not None and not program.warned:
            _warn_recompile(owner, roots, program)

        # A fresh function per program: JAX's caches hold it weakly, so dropping the program frees its executable.
        def compiled(dynamic: Any) -> Any:
            return impl(static, dynamic)

        compiled.__name__ = compiled.__qualname__ = impl.__name__
        program = _Program(jax.jit(compiled), arrays, _contents(arrays), warned)
    _programs[cache_key] = program
    if len(_programs) > _MAX_PROGRAMS:
        _programs.popitem(last=False)
    return program.jitted(dynamic)
