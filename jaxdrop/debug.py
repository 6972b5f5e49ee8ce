"""Debugging aids: warn when one key draws two dropout masks in a trace, and check that eval mode draws none.

- `key_reuse_warnings()`: a context in which one key used by two jaxdrop dropout calls warns.
- `assert_deterministic()`: fails if a function (a model in eval mode) still samples random numbers.

A key reused by two dropout sites gives them the same mask (or, for different shapes, masks built from the same
bits): the layers' noise is correlated and nothing fails. Inside `key_reuse_warnings()`, every key a function of
``jaxdrop.functional`` draws randomness from (and so every key of a ``jaxdrop.linen`` / ``jaxdrop.nnx`` /
``jaxdrop.equinox`` layer, which call them) is remembered, and a second use of the same key in the same trace emits a
`KeyReuseWarning` naming both call sites. "The same key" is the same tracer object (inside ``jit``, ``vmap``,
``grad``, ``scan``) or, for a concrete key, the same key data and implementation in the same trace (eager calls share
the top-level trace).

Each public function says explicitly that it draws from its key: it checks the key with
``jaxdrop._checks.key(key, site="its_name")``, once per call (a variant built on another passes its checked key on
without recording it again). A root key that is only folded into per-sample keys (``mc.sample``, ``mc.predict``) is
checked without a ``site`` and not counted. Outside the context manager the hook is a single context-variable lookup;
nothing is recorded and no JAX setting is touched.

Why not JAX's own checker (``jax.debug_key_reuse(True)``)? It does catch two ``jaxdrop.dropout`` calls with the same
typed key, but it also raises on a single dropout call under ``jax.grad``: jaxdrop regenerates the mask from the key
in the backward pass instead of storing it, and the checker counts that as a second use. It ignores legacy
``uint32[2]`` keys. This mode has neither limitation; it sees only jaxdrop's own calls.

Examples:
  >>> import warnings, jax, jax.numpy as jnp, jaxdrop
  >>> from jaxdrop.debug import key_reuse_warnings, KeyReuseWarning
  >>> key = jax.random.key(0)
  >>> with warnings.catch_warnings(record=True) as caught, key_reuse_warnings():
  ...     warnings.simplefilter("always")
  ...     h = jaxdrop.dropout(jnp.ones(4), 0.5, key=key)
  ...     h = jaxdrop.dropout(h, 0.5, key=key)  # the same mask again: a bug
  >>> [w.category.__name__ for w in caught]
  ['KeyReuseWarning']
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.extend.core import get_opaque_trace_state

__all__ = ["KeyReuseWarning", "assert_deterministic", "key_reuse_warnings"]

# The call site named in a warning is the innermost frame whose module is in none of these packages: jaxdrop itself
# and the libraries that call it on the user's behalf (JAX's transformations, Flax and Equinox modules).
_LIBRARY_PACKAGES = frozenset({"jaxdrop", "jax", "jaxlib", "flax", "equinox"})


class KeyReuseWarning(UserWarning):
    """The same PRNG key was used by two jaxdrop dropout calls in one trace."""


@dataclasses.dataclass
class _Use:
    key: object  # the tracer itself, or (implementation, key bytes) for a concrete key
    trace: object  # the trace a concrete key was used in (None for tracers: a tracer belongs to one trace)
    where: str  # "jaxdrop.dropout called at model.py:12", for the message


@dataclasses.dataclass
class _Registry:
    uses: list[_Use] = dataclasses.field(default_factory=list)


_ACTIVE: contextvars.ContextVar[_Registry | None] = contextvars.ContextVar("jaxdrop_key_reuse", default=None)


@contextlib.contextmanager
def key_reuse_warnings() -> Iterator[None]:
    """Within this block, warn (`KeyReuseWarning`) when one key is used by two jaxdrop dropout calls.

    Use it while writing or debugging a model: run one training step (or ``model.init`` / ``apply``) inside it.
    Tracing happens inside the block, so wrap the first call of a ``jit``-ed function (a cached function is not
    traced again). It is scoped to the current thread / context and restores the previous state on exit; it never
    changes JAX's configuration. The keys used (tracers included) are kept alive until the block exits, so do not
    leave it open around a long training loop.

    Yields:
      None.
    """
    token = _ACTIVE.set(_Registry())
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def record_key_use(value: object, site: str) -> None:
    """Records that the public function ``site`` draws randomness from the key ``value``; warns on a second use.

    The hook in ``jaxdrop._checks.key(..., site=...)``, called after the key is checked: a no-op unless
    `key_reuse_warnings()` is active.

    Args:
      value: a checked key: a typed key or a legacy ``uint32[2]`` key, concrete or traced.
      site: the public function the user called, e.g. ``"spatial_dropout2d"``; the warning names it.
    """
    registry = _ACTIVE.get()
    if registry is None:
        return
    identity, trace = _identity(value)
    where, stacklevel = _call_site(site)
    for use in registry.uses:
        if _same_key(use, identity, trace):
            warnings.warn(
                f"The same PRNG key is used by two dropout calls in one trace: {use.where} and {where}. Both draw "
                f"the same random bits, so their masks are correlated (identical for equal shapes). Derive one key "
                f"per call: `jax.random.split(key)` or `jaxdrop.fold_in(key, name)`.",
                KeyReuseWarning,
                stacklevel=stacklevel,
            )
            return
    registry.uses.append(_Use(identity, trace, where))


def _identity(value: object) -> tuple[object, object]:
    """(the key's identity, its trace): the tracer object itself, or the concrete key's bytes in the current trace."""
    if isinstance(value, jax.core.Tracer):
        return value, None
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        with jax.ensure_compile_time_eval():  # a concrete key closed over by a jitted function: read it, not trace it
            data = np.asarray(jax.random.key_data(value))
        identity = (str(jax.random.key_impl(value)), data.tobytes())
    else:
        identity = ("legacy", np.asarray(value).tobytes())  # a checked uint32[2] key
    return identity, get_opaque_trace_state()


def _same_key(use: _Use, identity: object, trace: object) -> bool:
    if use.trace is None or trace is None:
        return use.key is identity
    return use.key == identity and use.trace == trace


def _call_site(site: str) -> tuple[str, int]:
    """(``"jaxdrop.dropout called at model.py:12"``, the ``stacklevel`` of that line for a warning in the caller).

    The line is the innermost frame outside ``_LIBRARY_PACKAGES``, judged by its module's name: the user's call into
    jaxdrop, directly, through a layer or inside a transformed function.
    """
    frame: types.FrameType | None = sys._getframe(1)  # the caller, which warns: stacklevel 1
    stacklevel = 1
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _LIBRARY_PACKAGES:
        frame = frame.f_back
        stacklevel += 1
    line = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
    return f"jaxdrop.{site} called at {line}", stacklevel


# Primitives that turn a key into random bits. Key plumbing (random_seed, random_wrap, random_split,
# random_fold_in) produces no random data, so it is allowed.
_SAMPLING_PRIMITIVES = frozenset({"random_bits", "threefry2x32", "rng_bit_generator", "rng_uniform"})


def _package_dirs(*names: str) -> tuple[str, ...]:
    """The directories of the imported packages ``names``, each ending in a separator."""
    modules = [sys.modules.get(name) for name in names]
    files = [getattr(module, "__file__", None) for module in modules]
    return tuple(os.path.join(os.path.dirname(os.path.abspath(file)), "") for file in files if file)


def _equation_site(source_info, inherited: str) -> str:
    """Where an equation comes from: the innermost user frame and the innermost Flax/jaxdrop frame.

    A frame belongs to a library when its file lies in that package's directory: a user's checkout at
    ``.../jaxdrop/tests/`` or ``.../flax/`` is user code, whatever its path spells.
    """
    jax_dirs, library_dirs = _package_dirs("jax", "jaxlib"), _package_dirs("flax", "jaxdrop")
    frames = getattr(getattr(source_info, "traceback", None), "frames", None) or []
    frames = [frame for frame in frames if not os.path.abspath(frame.file_name).startswith(jax_dirs)]
    if not frames:
        return inherited  # inside a nested jit: the enclosing equation knows the call site
    library = [frame for frame in frames if os.path.abspath(frame.file_name).startswith(library_dirs)]
    user = [frame for frame in frames if frame not in library]
    parts = []
    if user:
        parts.append(f"{user[0].file_name}:{user[0].line_num}")
    elif inherited != "?":
        parts.append(inherited.split(" in ")[0])  # the call site known from the enclosing equation
    if library:
        # innermost frames first: name the layer (its __call__) when there is one
        layer = next((frame for frame in library if frame.function_name.endswith("__call__")), library[0])
        parts.append(f"in {layer.function_name}")
    return " ".join(parts)


def _sampling_sites(jaxpr, inherited: str = "?") -> Iterator[str]:
    """Yields a description of every equation that samples random bits, in nested jaxprs too."""
    for eqn in jaxpr.eqns:
        where = _equation_site(eqn.source_info, inherited)
        if eqn.primitive.name in _SAMPLING_PRIMITIVES:
            yield where
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _sampling_sites(inner, where)


def assert_deterministic(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Fails if ``fn(*args, **kwargs)`` samples random numbers: a model in eval mode must not draw masks.

    Traces ``fn`` (no computation) and looks for primitives that produce random bits, which every active
    dropout draws (flax's ``bernoulli`` and jaxdrop's fused generator alike). When an argument holds typed PRNG
    keys, ``fn`` is also run with different keys and its outputs must be identical. NNX modules may be passed as
    arguments; they are not modified.

    Args:
      fn: the function to check, e.g. ``lambda x: model.apply(variables, x, train=False)``.
      *args, **kwargs: its arguments.

    Raises:
      AssertionError: naming the sites (name stack and source line) that sample, or the outputs that changed.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> from flax import nnx
      >>> layer = jaxdrop.nnx.Dropout(0.5, rngs=nnx.Rngs(0))
      >>> layer.eval()
      >>> jaxdrop.assert_deterministic(lambda m, x: m(x), layer, jnp.ones(4))
      >>> layer.train()
      >>> try:
      ...     jaxdrop.assert_deterministic(lambda m, x: m(x), layer, jnp.ones(4))
      ... except AssertionError as err:
      ...     print(str(err)[:40])
      fn samples random numbers at 1 site(s) w
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be a callable (the model or function to check); got {type(fn).__name__}.")
    pure, state = _purify(fn, args, kwargs)
    closed = jax.make_jaxpr(pure)(state)
    sites = sorted(set(_sampling_sites(closed.jaxpr)))
    if sites:
        raise AssertionError(
            f"fn samples random numbers at {len(sites)} site(s) while it should be deterministic (is dropout "
            f"still active? call model.eval() / pass deterministic=True):\n  " + "\n  ".join(sites)
        )
    is_key = lambda leaf: isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
    if any(is_key(leaf) for leaf in jax.tree.leaves(state)):
        other = jax.tree.map(lambda leaf: jax.random.fold_in(leaf, 1) if is_key(leaf) else leaf, state)
        first, second = jax.jit(pure)(state), jax.jit(pure)(other)
        changed = [
            jax.tree_util.keystr(path)
            for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(first), jax.tree.leaves(second), strict=True)
            if not is_key(a) and not np.array_equal(np.asarray(a), np.asarray(b))  # keys returned may differ
        ]
        if changed:
            raise AssertionError(f"fn's outputs {changed} change with the PRNG keys it is given.")


def _purify(fn, args, kwargs):
    """``fn`` as a pure function of a pytree: NNX modules are split into graph and state (and left untouched)."""
    nnx: Any = sys.modules.get("flax.nnx")  # an unimported nnx made no module, so nothing to split: never import Flax
    graphdefs, states = [], []
    for arg in (*args, *kwargs.values()):
        if nnx is not None and isinstance(arg, nnx.Module):
            graphdef, state = nnx.split(arg)
            graphdefs.append(graphdef)
            states.append(state)
        else:
            graphdefs.append(None)
            states.append(arg)
    names = list(kwargs)

    def pure(states):
        values = [v if g is None else nnx.merge(g, v) for g, v in zip(graphdefs, states, strict=True)]
        positional, named = values[: len(args)], values[len(args) :]
        return fn(*positional, **dict(zip(names, named, strict=True)))

    return pure, states
