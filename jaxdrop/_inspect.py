"""Finds every dropout site in a Flax model and reports rates, shapes, stored-mask memory and common mistakes.

``jaxdrop.inspect(model, *inputs, variables=...)`` (Linen; ``variables`` may be left out) or
``jaxdrop.inspect(model, *inputs)`` (NNX) traces one call with ``jax.eval_shape`` (no computation) and records
every module call in order: Linen's through ``nn.intercept_methods``; NNX's on a private copy of the model
(``nnx.merge``) whose modules are re-classed to recording subclasses for the trace, so the model, its classes and
its RNG state are left as they are. The sites are the jaxdrop layers, ``flax.linen.Dropout`` / ``flax.nnx.Dropout``
and Flax's multi-head attention; the modules called around them drive the warnings, which follow published
guidance and cite it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect as _pyinspect
import math
import types
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxdrop import _mode

__all__ = ["DropoutSite", "InspectReport", "inspect"]

# Thresholds of the warnings, with where they come from.
DENSE_MAX_RATE = 0.5  # Srivastava et al. 2014 (JMLR 15, §A.4): 0.5 for hidden units is close to optimal; more underfits
ATTENTION_MAX_RATE = 0.3  # Vaswani et al. 2017 and BERT use 0.1 on attention weights; 0.0-0.2 is the usual range
EMBEDDING_MAX_RATE = 0.5  # 0.1 in Transformers/BERT; AWD-LSTM (Merity et al. 2018) uses 0.1 on embedding rows
SMALL_OUTPUT_FEATURES = 8  # a model output this narrow is treated as a regression/logit head


@dataclasses.dataclass(frozen=True)
class DropoutSite:
    """One dropout site: where it is, what it does and what it costs.

    Attributes:
      path: the module path, ``"encoder/block_0/dropout"``.
      layer: the layer's class name.
      kind: the dropout family (``"dropout"``, ``"spatial"``, ``"attention"``, ...).
      rate: the drop rate (standard deviation for Gaussian noise, learned rate for concrete dropout), or None
        when it is traced.
      input_shape: shape of the masked array (the attention weights for attention), or None if not called.
      dtype: its dtype name.
      mask_bytes: bytes of mask that autodiff keeps for the backward pass: a bool mask the size of the input for
        ``flax.linen.Dropout``, 0 for jaxdrop layers (they keep only the key).
      active: whether the traced call drew a mask (not deterministic and a non-zero rate).
    """

    path: str
    layer: str
    kind: str
    rate: float | None
    input_shape: tuple[int, ...] | None
    dtype: str | None
    mask_bytes: int
    active: bool


@dataclasses.dataclass
class InspectReport:
    """The dropout sites of a model and the warnings about them; ``str(report)`` is a table."""

    rows: list[DropoutSite]
    warnings: list[str]

    def __str__(self) -> str:
        header = ("path", "layer", "kind", "rate", "input shape", "mask bytes", "active")
        lines = [
            (
                site.path or "(root)",
                site.layer,
                site.kind,
                "traced" if site.rate is None else f"{site.rate:.3g}",
                "not called" if site.input_shape is None else f"{site.input_shape} {site.dtype}",
                str(site.mask_bytes),
                "yes" if site.active else "no",
            )
            for site in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
        fmt = lambda row: "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        out = [fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, lines)]
        if not self.rows:
            out.append("(no dropout sites)")
        out += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(out)


@dataclasses.dataclass
class _Call:
    """One recorded module call, in call order."""

    path: tuple
    module: Any
    args: tuple
    kwargs: dict
    output: Any = None


def inspect(model: Any, *inputs: Any, variables: Any = None, **call_kwargs: Any) -> InspectReport:
    """Reports every dropout site of a Flax model and warns about common mistakes.

    One call is traced with ``jax.eval_shape``: nothing is computed, and the model, its RNG state and its classes
    are left as they are.

    Args:
      model: a ``flax.linen.Module`` or a ``flax.nnx.Module``.
      *inputs: the positional arguments of the call.
      variables: a linen module's variables (``model.init(...)``). If left out they are initialised abstractly
        (``model.init`` with the call's arguments under ``jax.eval_shape``: shapes only, nothing computed), so a
        learned rate (concrete dropout) is then reported as unknown. Not for NNX (the module holds its state).
      **call_kwargs: keyword arguments of the call (``train=True``, ``deterministic=False``...). For Linen,
        ``rngs=`` may be given (by default ``'dropout'`` and ``'params'`` keys are supplied), and ``mutable``
        (every collection by default).

    Returns:
      An ``InspectReport`` with ``rows`` (``DropoutSite``), ``warnings`` and a table as ``str``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> import flax.linen as nn
      >>> class Head(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train):
      ...         x = nn.relu(nn.Dense(16)(x))
      ...         x = jaxdrop.linen.Dropout(0.6, deterministic=not train)(x)
      ...         return nn.Dense(1)(x)
      >>> x = jnp.ones((2, 4))
      >>> report = jaxdrop.inspect(Head(), x, train=True)  # or variables=Head().init(...)
      >>> [(site.path, site.kind, site.rate, site.input_shape, site.mask_bytes, site.active) for site in report.rows]
      [('Dropout_0', 'dropout', 0.6, (2, 16), 0, True)]
      >>> print(report.warnings[0][:47])
      Dropout_0: rate 0.6 > 0.5 next to a dense layer
    """
    import flax.linen as nn
    from flax import nnx

    if isinstance(model, nn.Module):
        if variables is None and inputs and isinstance(inputs[0], Mapping) and "params" in inputs[0]:
            raise TypeError(
                "inspect(linen_module, *inputs, variables=...): the first input looks like the module's variables; "
                "pass them as `variables=` (or leave them out to have inspect initialise them)."
            )
        calls, output, rates = _trace_linen(model, variables, inputs, call_kwargs)
        sites: dict[tuple, DropoutSite] = {}
    elif isinstance(model, nnx.Module):
        if variables is not None:
            raise TypeError("`variables` is only for linen modules; an nnx module holds its own state.")
        calls, output, rates, sites = _trace_nnx(model, inputs, call_kwargs)
    else:
        raise TypeError(f"`model` must be a flax.linen.Module or a flax.nnx.Module; got {type(model).__name__}.")
    return _report(calls, output, rates, sites)


# ---------------------------------------------------------------- tracing


def _path_name(path: tuple) -> str:
    return "/".join(str(part) for part in path)


def _trace_linen(model, variables, args, kwargs):
    import flax.linen as nn

    calls = []
    rngs = kwargs.pop("rngs", None) or {name: jax.random.key(0) for name in ("dropout", "params")}
    if variables is None:  # shapes only: what the trace needs, without computing an initialisation
        variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), **rngs}, *args, **kwargs))
    kwargs.setdefault("mutable", True)  # BatchNorm statistics, sown values: the trace is discarded anyway

    def record(next_fun, call_args, call_kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*call_args, **call_kwargs)
        call = _Call(tuple(context.module.path), context.module, call_args, call_kwargs)
        calls.append(call)
        call.output = next_fun(*call_args, **call_kwargs)
        return call.output

    traced_output = []

    def run(variables, args):
        with nn.intercept_methods(record):
            traced_output.append(model.apply(variables, *args, rngs=rngs, **kwargs))
        return traced_output[-1]

    # Inside the trace the recorded tracers are the very objects the model passes between modules, so the
    # BatchNorm / skip / output checks compare them by identity.
    jax.eval_shape(run, variables, args)
    # Learned rates (concrete dropout) are read from the variables, outside the trace.
    rates = {}
    for call in calls:
        if getattr(call.module, "kind", None) == "concrete":
            p_logit = _lookup(variables.get("params", {}), (*call.path, "p_logit"))
            known = p_logit is not None and not isinstance(p_logit, jax.ShapeDtypeStruct)  # abstract: initialised here
            rates[call.path] = float(jax.nn.sigmoid(p_logit)) if known else None
    return calls, traced_output[-1], rates


def _lookup(tree, path):
    for part in path:
        if not hasattr(tree, "get") or part not in tree:
            return None
        tree = tree[part]
    return tree


def _trace_nnx(model, args, kwargs):
    from flax import nnx

    graphdef, state = nnx.split(model)
    recorder = _Recorder(paths={})
    traced_output = []

    def run(state, args):
        # nnx.merge builds a private copy of the model: only its modules are re-classed, and only for the trace.
        copy = nnx.merge(graphdef, state)
        modules = [(module, type(module)) for _, module in nnx.iter_modules(copy) if callable(module)]
        recorder.paths.update({id(module): tuple(path) for path, module in nnx.iter_modules(copy)})
        token = _RECORDER.set(recorder)
        try:
            for module, cls in modules:
                # object.__setattr__: Pytree.__setattr__ would also register "__class__" as an attribute.
                object.__setattr__(module, "__class__", _recording_class(cls))
            traced_output.append(copy(*args, **kwargs))
        finally:
            _RECORDER.reset(token)
            for module, cls in modules:  # the report reads the modules' own classes (names, signatures)
                object.__setattr__(module, "__class__", cls)
        return traced_output[-1]

    jax.eval_shape(run, state, args)
    # Every site of the user's model as a row "not called", with its rate read outside the trace (where a learned
    # rate is concrete); the report replaces the rows of the sites that were called.
    sites = {}
    for path, module in nnx.iter_modules(model):
        if (kind := _site_kind(module)) is not None:
            layer, rate = type(module).__name__, _static_rate(module)
            sites[tuple(path)] = DropoutSite(_path_name(path), layer, kind, rate, None, None, 0, False)
    rates = {path: site.rate for path, site in sites.items()}
    return recorder.calls, traced_output[-1], rates, sites


# How NNX calls are recorded without touching the user's classes: each module of the private copy is re-classed,
# for the trace, to a subclass of its class whose MRO puts `_Recording` (and its __call__) right after it.


@dataclasses.dataclass
class _Recorder:
    """The calls of one NNX trace, and the modules of its private copy whose calls it records."""

    paths: dict[int, tuple]  # id of a module of the copy -> its path
    calls: list[_Call] = dataclasses.field(default_factory=list)


# The recorder of the trace running in this thread: the recording classes are shared, the recorders are not.
_RECORDER: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar("jaxdrop_inspect", default=None)


class _Recording:
    """Records a call into a module of the private copy, then runs the module's own ``__call__``."""

    __slots__ = ()  # no __dict__ descriptor of its own to shadow the module's

    def __init_subclass__(cls):
        # Not super(): the hooks of the user's classes (a registry of models...) must not see a private subclass.
        # It needs only Flax's hook, which registers it as a graph node and a pytree, in the mode of its class.
        from flax import nnx

        super(nnx.Module, cls).__init_subclass__(pytree=cls._pytree__is_pytree)

    def __call__(self, *args, **kwargs):
        recorder = _RECORDER.get()
        if recorder is None or id(self) not in recorder.paths:  # a module made during the trace (by a transform)
            return super().__call__(*args, **kwargs)
        call = _Call(recorder.paths[id(self)], self, args, kwargs)
        recorder.calls.append(call)
        call.output = super().__call__(*args, **kwargs)
        return call.output


@functools.cache
def _recording_class(cls: type) -> type:
    """``cls`` with ``_Recording`` next in its MRO: the class of a module of the private copy during the trace.

    The user's classes, their other instances and other threads never see it, and a subclass calling
    ``super().__call__`` is recorded once. ``cls`` is its only base, so the instances keep their layout and can be
    re-classed; ``_Recording`` enters the MRO through the metaclass. One per class (cached): Flax registers every
    Module subclass for good.
    """
    body = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__slots__": ()}
    metaclass = _recording_metaclass(type(cls))
    return types.new_class(cls.__name__, (cls,), {"metaclass": metaclass}, lambda namespace: namespace.update(body))


@functools.cache
def _recording_metaclass(metaclass: type) -> type:
    """A subclass of a module metaclass whose classes have ``_Recording`` right after themselves in their MRO."""

    def mro(cls):
        own, *inherited = super(recording, cls).mro()
        return [own, _Recording, *inherited]

    body = {"__module__": __name__, "mro": mro}
    recording = types.new_class(f"Recording{metaclass.__name__}", (metaclass,), {}, lambda ns: ns.update(body))
    return recording


# ---------------------------------------------------------------- what a site is


def _site_kind(module) -> str | None:
    """The dropout family of a module, or None if it is not a dropout site."""
    import flax.linen as nn
    from flax import nnx

    from jaxdrop import linen as jdl
    from jaxdrop import nnx as jdn

    if isinstance(module, (jdl._Stochastic, jdn._Stochastic)):
        return module.kind
    if isinstance(module, (nn.Dropout, nnx.Dropout)):
        return "dropout"
    if isinstance(module, (nn.MultiHeadDotProductAttention, nnx.MultiHeadAttention)):
        return "attention" if _static_rate(module) else None
    return None


def _static_rate(module) -> float | None:
    """The rate a module was built with (``dropout_rate`` for attention), or None when it has none or it is traced."""
    if hasattr(module, "dropout_rate"):
        return _as_float(module.dropout_rate)
    return _as_float(getattr(module, getattr(module, "rate_field", "rate"), None))


def _as_float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def _is_jaxdrop(module) -> bool:
    return type(module).__module__.startswith("jaxdrop.")


def _uses_jaxdrop_attention(module) -> bool:
    fn = getattr(module, "attention_fn", None)
    fn = getattr(fn, "func", fn)  # functools.partial
    return getattr(fn, "__module__", "").startswith("jaxdrop.")


def _deterministic(call: _Call) -> bool:
    """The flag the call ran with: call-time argument first, then the attribute; False for jaxdrop's layers inside
    ``jaxdrop.stochastic()``."""
    if _is_jaxdrop(call.module) and _mode.is_stochastic():
        return False
    try:
        bound = _pyinspect.signature(type(call.module).__call__).bind(call.module, *call.args, **call.kwargs)
        value = bound.arguments.get("deterministic")
    except TypeError:
        value = call.kwargs.get("deterministic")
    if value is None:
        value = getattr(call.module, "deterministic", None)
    return bool(value)


def _masked_shape(call: _Call, kind: str) -> tuple[int, ...] | None:
    if kind != "attention":
        return tuple(np.shape(call.args[0])) if call.args else None
    inputs_q = call.args[0]
    inputs_k = call.args[1] if len(call.args) > 1 and call.args[1] is not None else inputs_q
    heads = call.module.num_heads
    return (*np.shape(inputs_q)[:-2], heads, np.shape(inputs_q)[-2], np.shape(inputs_k)[-2])


def _mask_bytes(call: _Call, kind: str, shape: tuple[int, ...], active: bool) -> int:
    """Bytes autodiff keeps for the mask: flax keeps a bool mask (Dropout) or a float multiplier (attention)."""
    if not active or _is_jaxdrop(call.module) or (kind == "attention" and _uses_jaxdrop_attention(call.module)):
        return 0
    if kind == "attention":
        dropout_shape = shape if not call.module.broadcast_dropout else (*([1] * (len(shape) - 2)), *shape[-2:])
        return math.prod(dropout_shape) * 4  # float32 multiplier
    return math.prod(shape)  # one bool per element, broadcast to the input


# ---------------------------------------------------------------- the report


def _class_names(module) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}


def _report(calls: list[_Call], output, rates: dict, sites: dict[tuple, DropoutSite]) -> InspectReport:
    """Rows for recorded calls (in call order), then the rows of ``sites`` (NNX) that were never called."""
    rows, warnings = [], []
    output_ids = {id(leaf) for leaf in jax.tree.leaves(output)}
    seen = set()
    for index, call in enumerate(calls):
        kind = _site_kind(call.module)
        if kind is None:
            continue
        seen.add(call.path)
        path = _path_name(call.path)
        if call.kwargs.get("rate") is not None:  # a call-time rate
            rate = _as_float(call.kwargs["rate"])
        elif call.path in rates:  # read outside the trace: a learned rate is traced inside it
            rate = rates[call.path]
        else:
            rate = _static_rate(call.module)
        active = not _deterministic(call) and rate != 0.0
        shape = _masked_shape(call, kind)
        dtype = str(getattr(call.args[0], "dtype", "")) if call.args else None
        rows.append(
            DropoutSite(
                path=path,
                layer=type(call.module).__name__,
                kind=kind,
                rate=rate,
                input_shape=shape,
                dtype=dtype or None,
                mask_bytes=_mask_bytes(call, kind, shape, active) if shape is not None else 0,
                active=active,
            )
        )
        warnings += _site_warnings(calls, index, kind, rate, path, output_ids)
    rows += [site for path, site in sites.items() if path not in seen]
    return InspectReport(rows, warnings)


def _next_leaf(calls: list[_Call], index: int) -> _Call | None:
    """The first leaf module called after ``calls[index]`` returned (skipping its own submodules)."""
    own = calls[index].path
    for later in range(index + 1, len(calls)):
        call = calls[later]
        if call.path[: len(own)] == own:
            continue
        following = calls[later + 1] if later + 1 < len(calls) else None
        if following is None or following.path[: len(call.path)] != call.path:
            return call
    return None


def _previous_leaf(calls: list[_Call], index: int) -> _Call | None:
    own = calls[index].path
    for earlier in range(index - 1, -1, -1):
        call = calls[earlier]
        if own[: len(call.path)] == call.path:  # an ancestor
            continue
        return call
    return None


def _site_warnings(calls, index, kind, rate, path, output_ids) -> list[str]:
    call = calls[index]
    out_ids = {id(leaf) for leaf in jax.tree.leaves(call.output)}
    in_ids = {id(call.args[0])} if call.args else set()
    next_leaf, previous_leaf = _next_leaf(calls, index), _previous_leaf(calls, index)
    next_names = _class_names(next_leaf.module) if next_leaf else set()
    previous_names = _class_names(previous_leaf.module) if previous_leaf else set()
    dense = {"Dense", "DenseGeneral", "Linear", "LinearGeneral", "Einsum"}
    warnings = []
    if kind == "dropout" and rate is not None and rate > DENSE_MAX_RATE and (next_names | previous_names) & dense:
        warnings.append(
            f"{path}: rate {rate:g} > {DENSE_MAX_RATE} next to a dense layer; Srivastava et al. (2014) found 0.5 "
            f"near-optimal for hidden units (0.2 for inputs), and higher rates tend to underfit."
        )
    if kind != "attention" and next_leaf is not None and "BatchNorm" in next_names:
        if next_leaf.args and id(next_leaf.args[0]) in out_ids:
            warnings.append(
                f"{path}: dropout feeds {_path_name(next_leaf.path)} (BatchNorm) directly: the variance of its "
                f"output differs between training and inference, so the running statistics are wrong at test time "
                f"(variance shift, Li et al. 2019). Move dropout after the last BatchNorm."
            )
    if kind != "attention" and out_ids & output_ids:
        shape = np.shape(call.output)
        narrow = bool(shape) and shape[-1] <= SMALL_OUTPUT_FEATURES
        warnings.append(
            f"{path}: dropout is applied to the model output{' (a regression head)' if narrow else ''}: "
            f"predictions are zeroed and rescaled at random; apply dropout before the last layer instead."
        )
    if kind not in ("attention", "dropconnect", "concrete") and in_ids:
        for other in calls:
            if other is call or call.path[: len(other.path)] == other.path:
                continue  # itself or an enclosing module
            if in_ids <= out_ids:
                break  # an inactive dropout returns its input: consumers of its output are not a skip path
            if other.args and any(id(arg) in in_ids for arg in other.args[:1]):
                warnings.append(
                    f"{path}: its input is also consumed by {_path_name(other.path)}; if this dropout sits on a "
                    f"skip (identity) connection it breaks the identity mapping of the residual block (He et al. "
                    f"2016); drop the residual branch instead (Dropout before the add, or DropPath)."
                )
                break
    if kind == "attention" and rate is not None and rate > ATTENTION_MAX_RATE:
        warnings.append(
            f"{path}: attention dropout rate {rate:g} is far from common values (0.1 in Vaswani et al. 2017 and "
            f"BERT; usually 0.0-0.2)."
        )
    if kind in ("dropout", "token", "word") and rate is not None and rate > EMBEDDING_MAX_RATE:
        if (
            previous_leaf is not None
            and {"Embed", "Embedding"} & previous_names
            and id(call.args[0]) in {id(leaf) for leaf in jax.tree.leaves(previous_leaf.output)}
        ):
            warnings.append(
                f"{path}: embedding dropout rate {rate:g} is far from common values (0.1 in Transformers and "
                f"BERT; 0.1 on embedding rows in AWD-LSTM, Merity et al. 2018)."
            )
    return warnings
