"""Debug mode: warn when one key draws two dropout masks in the same trace.

A key reused by two dropout sites gives them the same mask (or, for different shapes, masks built from the same
bits): the layers' noise is correlated and nothing fails. Inside :func:`key_reuse_warnings`, every key handed to a
function of ``jaxdrop.functional`` (and so to every ``jaxdrop.linen`` / ``jaxdrop.nnx`` layer, which call them) is
remembered, and a second use of the same key in the same trace emits a :class:`KeyReuseWarning` naming both call
sites. "The same key" is the same tracer object (inside ``jit``, ``vmap``, ``grad``, ``scan``) or, for a concrete
key, the same key data and implementation in the same trace (eager calls share the top-level trace).

Outside the context manager the hook is a single context-variable lookup; nothing is recorded and no JAX setting is
touched.

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
import sys
import types
import warnings
from collections.abc import Iterator

import jax
import numpy as np
from jax.extend.core import get_opaque_trace_state

__all__ = ["KeyReuseWarning", "key_reuse_warnings"]

# Only keys that reach a mask-drawing function count; `mc.sample` / `mc.predict` validate a root key that they fold.
_COUNTED_MODULE_PREFIX = "jaxdrop.functional"


class KeyReuseWarning(UserWarning):
    """The same PRNG key was used by two jaxdrop dropout calls in one trace."""


@dataclasses.dataclass
class _Use:
    key: object  # the tracer itself, or (implementation, key bytes) for a concrete key
    trace: object  # the trace a concrete key was used in (None for tracers: a tracer belongs to one trace)
    caller: types.FrameType  # the frame of the jaxdrop function that validated the key
    where: str  # "dropout at model.py:12", for the message


@dataclasses.dataclass
class _Registry:
    uses: list[_Use] = dataclasses.field(default_factory=list)


_ACTIVE: contextvars.ContextVar[_Registry | None] = contextvars.ContextVar("jaxdrop_key_reuse", default=None)


@contextlib.contextmanager
def key_reuse_warnings() -> Iterator[None]:
    """Within this block, warn (:class:`KeyReuseWarning`) when one key is used by two jaxdrop dropout calls.

    Use it while writing or debugging a model: run one training step (or ``model.init`` / ``apply``) inside it.
    Tracing happens inside the block, so wrap the first call of a ``jit``-ed function (a cached function is not
    traced again). It is scoped to the current thread / context and restores the previous state on exit; it never
    changes JAX's configuration. Call sites are kept alive until the block exits, so do not leave it open around a
    long training loop.

    Yields:
      None.
    """
    token = _ACTIVE.set(_Registry())
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def record_key_use(value: object) -> None:
    """The hook in ``jaxdrop._checks.key``: a no-op unless :func:`key_reuse_warnings` is active."""
    registry = _ACTIVE.get()
    if registry is None or value is None:
        return
    caller = sys._getframe(2)  # record_key_use <- _checks.key <- the jaxdrop function using the key
    if not caller.f_globals.get("__name__", "").startswith(_COUNTED_MODULE_PREFIX):
        return
    identity, trace = _identity(value)
    if identity is None:
        return
    ancestors = _ancestors(caller)
    for use in registry.uses:
        if not _same_key(use, identity, trace):
            continue
        if any(frame is use.caller for frame in ancestors):
            return  # the same call validating its key again (e.g. an attention function and its dropout)
        here = _describe(caller)
        warnings.warn(
            f"The same PRNG key is used by two dropout calls in one trace: {use.where} and {here}. Both draw the "
            f"same random bits, so their masks are correlated (identical for equal shapes). Derive one key per "
            f"call: `jax.random.split(key)` or `jaxdrop.fold_in(key, name)`.",
            KeyReuseWarning,
            stacklevel=4,
        )
        return
    registry.uses.append(_Use(identity, trace, caller, _describe(caller)))


def _identity(value: object) -> tuple[object, object]:
    """(the key's identity, its trace): the tracer object itself, or the concrete key's bytes in the current trace."""
    if isinstance(value, jax.core.Tracer):
        return value, None
    try:
        if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            identity = (str(jax.random.key_impl(value)), np.asarray(jax.random.key_data(value)).tobytes())
        else:
            data = np.asarray(value)
            if data.dtype != np.uint32 or data.shape != (2,):
                return None, None  # not a key: `_checks.key` raises its own error right after
            identity = ("legacy", data.tobytes())
    except (TypeError, ValueError):
        return None, None
    return identity, get_opaque_trace_state()


def _same_key(use: _Use, identity: object, trace: object) -> bool:
    if use.trace is None or trace is None:
        return use.key is identity
    return use.key == identity and use.trace == trace


def _ancestors(frame: types.FrameType | None) -> list[types.FrameType]:
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def _describe(caller: types.FrameType) -> str:
    """``"jaxdrop spatial_dropout called at model.py:12"``: the outermost jaxdrop function and its call site."""
    outer: types.FrameType = caller
    frame: types.FrameType | None = caller
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("jaxdrop", "jax", "flax"):
        if frame.f_globals.get("__name__", "").startswith("jaxdrop"):
            outer = frame
        frame = frame.f_back
    site = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
    return f"jaxdrop {outer.f_code.co_qualname} called at {site}"
