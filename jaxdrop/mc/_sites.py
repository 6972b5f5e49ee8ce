"""Per-site MC: only the chosen dropout sites of a linen or nnx model sample; every other layer keeps its mode.

A *site* is a dropout layer of the model, named by its module path as `jaxdrop.inspect` prints it
(``"encoder/Dropout_0"`` in linen, ``"blocks/0/drop"`` in nnx). The sites are found by tracing the model once
(shapes only) inside `jaxdrop.stochastic()`: jaxdrop's layers report themselves when they resolve their flag
(``_mode.is_stochastic(layer)``), flax's own ``Dropout`` is recorded by a linen interceptor or, in nnx, by a
recording subclass on the private copy of the model. ``sites`` is then resolved to a set of paths, and the model is
traced again with a selector that switches on only those layers: the others (and BatchNorm, which nothing here
touches) keep the mode the call gives them, so with evaluation flags they are deterministic, do not depend on the
key, and ``vmap`` over keys computes them once (a deterministic prefix before the last site costs one pass).

flax's own ``linen.Dropout`` cannot be switched on from outside (it decides from its own flag and reads no context):
choosing one raises. flax's ``nnx.Dropout`` is switched on through its ``deterministic`` attribute (the
``mode_attributes``), set on the chosen sites of the copy only (the other sites get the opposite, ``True``).
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import functools
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from jaxdrop import _checks, _mode

LAST = "last"


class Site(NamedTuple):
    """A dropout call met while tracing: the module's path and whether jaxdrop can switch it on."""

    path: str
    controllable: bool


def check(sites: object) -> str | tuple[str, ...] | Callable[[str], Any] | None:
    """``sites`` in a hashable form: ``"last"``, one pattern, a tuple of patterns, or a predicate on the path."""
    if sites is None or isinstance(sites, str):
        return sites
    if isinstance(sites, (list, tuple)):
        if not sites:
            raise ValueError("`sites` is an empty sequence: give at least one module path or pattern, or None.")
        for pattern in sites:
            if not isinstance(pattern, str):
                raise TypeError(
                    f"`sites` must be a sequence of module paths or patterns (str); got {_checks.describe(pattern)} "
                    f"in {_checks.describe(sites)}."
                )
        return tuple(sites)
    if callable(sites):
        return sites
    raise TypeError(
        f"`sites` must be 'last', a module path or pattern such as 'head/*' (str), a sequence of them, or a "
        f"predicate `path -> bool` (a callable); got {_checks.describe(sites)}."
    )


def _listing(found: Sequence[Site]) -> str:
    paths = list(dict.fromkeys(site.path or "(root)" for site in found))
    return ", ".join(repr(path) for path in paths[:12]) + (", ..." if len(paths) > 12 else "")


def resolve(sites: str | tuple[str, ...] | Callable[[str], Any], found: Sequence[Site]) -> dict[str, bool]:
    """``{path: chosen}`` for every site ``found`` (in call order); a clear error when ``sites`` chooses none."""
    if not found:
        raise ValueError(
            f"`sites={sites!r}` chooses dropout sites, but the model called no dropout layer while traced (neither "
            f"jaxdrop's layers nor flax's Dropout)."
        )
    if sites == LAST:
        chosen = {found[-1].path}
    elif isinstance(sites, (str, tuple)):
        chosen = set()
        for pattern in (sites,) if isinstance(sites, str) else sites:
            matched = {site.path for site in found if fnmatch.fnmatchcase(site.path, pattern)}
            if not matched:
                raise ValueError(
                    f"`sites`: the pattern {pattern!r} matches none of the model's dropout sites ({_listing(found)}). "
                    f"Patterns are module paths as `jaxdrop.inspect` prints them, with shell wildcards ('*', '?')."
                )
            chosen |= matched
    else:
        chosen = {site.path for site in found if sites(site.path)}
        if not chosen:
            raise ValueError(
                f"`sites`: the predicate {_checks.describe(sites)} returned False for every dropout site of the model "
                f"({_listing(found)}), so no site would sample."
            )
    flax_sites = sorted({site.path for site in found if site.path in chosen and not site.controllable})
    if flax_sites:
        raise ValueError(
            f"`sites` chooses {', '.join(map(repr, flax_sites))}, a flax.linen.Dropout: jaxdrop cannot switch flax's "
            f"own linen Dropout on at prediction time (it follows only the model's flag). Replace it with "
            f"`jaxdrop.linen.Dropout` (same arguments), or choose other sites."
        )
    return {site.path: site.path in chosen for site in found}


# ---------------------------------------------------------------- linen


def linen_path(module: Any) -> str:
    return "/".join(str(part) for part in module.path)


@contextlib.contextmanager
def linen_selection(chosen: dict[str, bool] | None, record: list[Site] | None) -> Iterator[None]:
    """While a linen model is traced: record the sites met (``record``) and/or switch on only the ``chosen``."""
    if chosen is None and record is None:
        yield
        return
    import flax.linen as nn

    def select(layer: Any) -> bool:
        path = linen_path(layer)
        if record is not None:
            record.append(Site(path, True))
        return chosen is None or chosen.get(path, False)

    def intercept(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
        if record is not None and context.method_name == "__call__" and isinstance(context.module, nn.Dropout):
            record.append(Site(linen_path(context.module), False))
        return next_fun(*args, **kwargs)

    with _mode.sites(select), nn.intercept_methods(intercept):
        yield


# ---------------------------------------------------------------- nnx


def _nnx_paths(module: Any) -> dict[int, tuple[str, Any]]:
    from flax import nnx

    return {id(sub): ("/".join(str(part) for part in path), sub) for path, sub in nnx.iter_modules(module)}


@functools.cache
def _recording_class(cls: type) -> type:
    """A subclass of a flax ``nnx.Dropout`` class whose calls are recorded (set on the private copy only)."""

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = (_NNX_RECORD.get() or {}).get(id(self))
        if recorder is not None:
            recorder[0].append(Site(recorder[1], True))
        return cls.__call__(self, *args, **kwargs)

    body = {"__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return types.new_class(cls.__name__, (cls,), {}, lambda namespace: namespace.update(body))


# id of a module of the copy -> (the record, its path), while the copy is traced.
_NNX_RECORD: contextvars.ContextVar[dict[int, tuple[list[Site], str]] | None] = contextvars.ContextVar(
    "jaxdrop_mc_sites", default=None
)


@contextlib.contextmanager
def nnx_selection(
    module: Any, attributes: dict[str, Any], chosen: dict[str, bool] | None, record: list[Site] | None
) -> Iterator[None]:
    """While an nnx model (the private copy ``module``) is traced: record the sites met and/or switch on only the
    ``chosen``.

    Without a selection ``attributes`` are set on every module (``deterministic=False``), as MC always did. With
    one they are set on the chosen sites, and the other sites get the opposite of each bool attribute
    (``deterministic=True``): they stay off even in a model that was never put in evaluation mode.
    """
    if chosen is None and record is None:
        module.set_attributes(**attributes, raise_if_not_found=False)
        yield
        return
    from flax import nnx

    paths = _nnx_paths(module)
    if chosen is None:
        module.set_attributes(**attributes, raise_if_not_found=False)
    else:
        opposite = {name: not value for name, value in attributes.items() if isinstance(value, bool)}
        for path, sub in paths.values():
            if path in chosen:
                sub.set_attributes(**(attributes if chosen[path] else opposite), raise_if_not_found=False)

    def select(layer: Any) -> bool:
        path = paths.get(id(layer), (None,))[0]
        if path is None:  # a module made while traced (by a transform): not one of the model's sites
            return False
        if record is not None:
            record.append(Site(path, True))
        return chosen is None or chosen.get(path, False)

    swapped = []
    recorded = {}
    if record is not None:
        for path, sub in paths.values():
            if isinstance(sub, nnx.Dropout):  # flax's own: it reads no context, so its calls are recorded here
                recorded[id(sub)] = (record, path)
                swapped.append((sub, type(sub)))
                # object.__setattr__: the module's own __setattr__ would register "__class__" as an attribute.
                object.__setattr__(sub, "__class__", _recording_class(type(sub)))
    token = _NNX_RECORD.set(recorded)
    try:
        with _mode.sites(select):
            yield
    finally:
        _NNX_RECORD.reset(token)
        for sub, cls in swapped:
            object.__setattr__(sub, "__class__", cls)
