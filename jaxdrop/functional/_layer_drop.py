"""LayerDrop: skip whole layers of a deep network in training, so dropped layers cost nothing, and prune at inference.

Fan et al. 2019, "Reducing Transformer Depth on Demand with Structured Dropout" (ICLR 2020). Unlike
``drop_path(mode="batch")``, which multiplies a branch by zero and still computes it, a dropped layer here is not
run: each layer sits in a ``lax.cond`` (or, with ``mode="gather"``, only the kept layers' parameters are gathered
and scanned), so a step with half the layers dropped takes about half the time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks, _masks
from jaxdrop.functional import _core

LayerDropMode = Literal["cond", "gather"]


def _check_layers(layers: object) -> list[Callable[..., Any]]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(
            f"`layers` must be a sequence (list or tuple) of callables x -> x; got {_checks.describe(layers)}."
        )
    for index, layer in enumerate(layers):
        if not callable(layer):
            raise TypeError(f"`layers` entry {index} must be a callable x -> x; got {_checks.describe(layer)}.")
    if not layers:
        raise ValueError("`layers` must hold at least one layer; got an empty sequence.")
    return list(layers)


def _check_x(x: Any, scale_by_keep: bool) -> None:
    """``x`` is any pytree the layers accept; rescaling the residual needs floating-point leaves."""
    if scale_by_keep:
        for leaf in jax.tree_util.tree_leaves(x):
            _checks.floating_array(leaf, "x")


def _residual_scaled(x: Any, out: Any, scale: float | jax.Array) -> Any:
    """``x + (out - x) * scale``: the layer's residual update rescaled (the identity part is not)."""
    return jax.tree.map(lambda before, after: before + _core.scale_values(after - before, scale), x, out)


def _keep_decisions(key: jax.Array, rate: float | jax.Array, num_layers: int, generator: _masks.Generator):
    return _masks.keep_mask(key, rate, (num_layers,), generator)


def _common_checks(
    rate: jax.typing.ArrayLike, deterministic: object, scale_by_keep: object
) -> tuple[float | jax.Array, bool, bool]:
    return (
        _checks.probability(rate, "rate"),
        _checks.static_bool(deterministic, "deterministic"),
        _checks.static_bool(scale_by_keep, "scale_by_keep"),
    )


def layer_drop(
    layers: Sequence[Callable[[Any], Any]],
    x: Any,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    scale_by_keep: bool = False,
    generator: _masks.Generator = "fast",
) -> Any:
    """Runs ``x`` through ``layers`` in order, skipping each layer with probability ``rate`` (LayerDrop).

    Use it on the layers of a deep transformer (Fan et al. 2019, "Reducing Transformer Depth on Demand with
    Structured Dropout"): training with LayerDrop regularises like stochastic depth and makes the network robust
    to removing layers, so a shallower network can be taken out of it at inference without fine-tuning
    (``prune_layers``). A layer is a whole residual block ``x -> x + f(x)``; a dropped layer is the identity. One
    decision per layer is shared by the whole batch, so a dropped layer is really skipped: each layer runs inside
    a ``lax.cond`` and its compute (forward and backward) is not done; a kept layer is rematerialised
    (``jax.checkpoint``) in the backward pass, so a dropped one stores nothing either. Under ``vmap`` with a
    batched ``key`` or ``rate``, JAX turns ``cond`` into a select that runs both sides: the result is right, but
    nothing is saved.

    Expected-value correction: the paper applies none (``scale_by_keep=False``, the default): the full network
    is used at inference as in training, and a pruned one as it is. With ``scale_by_keep=True`` a kept layer's
    residual update is rescaled, ``x + (layer(x) - x) / (1 - rate)``, so each layer's expected update equals the
    full network's at inference, as stochastic depth does for its branches (Huang et al. 2016); this presumes
    residual layers and changes nothing at inference.

    Args:
      layers: a sequence of callables ``x -> x`` (closures or ``functools.partial`` over each layer's
        parameters), each returning the structure, shapes and dtypes it received (``lax.cond`` needs both sides
        to agree). Give each layer its own parameters, sliced outside the layer: a layer that slices a stacked
        array inside its body makes its backward pass produce a gradient the size of the whole stack.
      x: the input of the first layer: an array or any pytree.
      rate: probability of skipping each layer, in [0, 1]; static (validated) or traced (an optax schedule; no
        recompilation). A static 0 compiles no ``cond``; a static 1 returns ``x``.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1. One draw decides every
        layer.
      deterministic: if True, every layer runs (inference).
      scale_by_keep: rescale a kept layer's residual update by ``1 / (1 - rate)`` (see above); ``x``'s leaves must
        then be floating point.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      The output of the last layer run (``x`` itself when all are dropped).

    Raises:
      TypeError: ``layers`` is not a sequence of callables, a flag not a bool, or ``key`` not a PRNG key.
      ValueError: no layer, a static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> layers = [lambda x, i=i: x + i for i in range(1, 5)]  # residual updates 1, 2, 3, 4
      >>> float(jaxdrop.layer_drop(layers, jnp.float32(0), 0.5, deterministic=True))
      10.0
      >>> y = jaxdrop.layer_drop(layers, jnp.float32(0), 0.5, key=jax.random.key(0))
      >>> float(y) in {float(s) for s in range(11)}  # the sum of the updates of the kept layers
      True
    """
    layers = _check_layers(layers)
    drop_rate, deterministic, scale_by_keep = _common_checks(rate, deterministic, scale_by_keep)
    _check_x(x, scale_by_keep)
    _checks.choice(generator, _masks.GENERATORS, "generator")
    static = isinstance(drop_rate, float)
    if deterministic or (static and drop_rate == 0.0):
        for layer in layers:
            x = layer(x)
        return x
    if static and drop_rate == 1.0:
        return x
    key = _checks.key(key, site="layer_drop")
    keep = _keep_decisions(key, drop_rate, len(layers), generator)
    scale = _core.keep_scale(drop_rate, inverted=True)
    for index, layer in enumerate(layers):

        def run(x, layer=layer):
            out = layer(x)
            return _residual_scaled(x, out, scale) if scale_by_keep else out

        x = _skippable(keep[index], run, x)
    return x


def _skippable(kept: jax.Array, run: Callable[[Any], Any], x: Any) -> Any:
    """``run(x)`` if ``kept`` else ``x``, with the kept layer rematerialised in the backward pass.

    Under ``grad`` a ``lax.cond`` returns the residuals of its taken branch, so the skip branch must return zeros
    of the same shapes: every activation a layer saves, materialised for a layer that never ran. On a 2-core CPU,
    12 dropped MLP blocks (width 256, hidden 1024, 256 rows) cost half a full step that way. With
    ``jax.checkpoint`` the residuals are the layer's inputs, which exist anyway: a dropped layer costs nothing,
    and a kept one is recomputed in the backward pass (about a third more compute for it, and less memory), so a
    step with half the layers dropped measured 0.55x the step without LayerDrop instead of 0.95x.
    """
    return lax.cond(kept, jax.checkpoint(run), lambda x: x, x)


def scan_layer_drop(
    layer_fn: Callable[[Any, Any], Any],
    stacked_params: Any,
    x: Any,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    scale_by_keep: bool = False,
    mode: LayerDropMode = "cond",
    generator: _masks.Generator = "fast",
) -> Any:
    """LayerDrop over layers whose parameters are stacked along a leading axis and run with ``lax.scan``.

    The scanned form of ``layer_drop`` (which see for the method and the expected-value correction), for deep
    networks written as one ``layer_fn`` scanned over stacked parameters (one compiled layer, fast compilation).

    ``mode="cond"`` (default): each layer is kept with probability ``1 - rate`` independently (the paper's
    Bernoulli draw), inside a ``lax.cond`` in the scan body, so a dropped layer is skipped at run time; the rate
    may be traced. ``mode="gather"``: exactly ``round(num_layers * (1 - rate))`` layers are kept, chosen uniformly
    (each layer is kept with probability ``1 - rate`` when ``num_layers * rate`` is an integer), their parameters
    gathered in depth order and scanned: a static number of layers, so the saving holds under ``vmap`` and on
    accelerators where a ``cond`` per layer is costly; the rate must be static. With ``scale_by_keep``, a kept
    layer's residual update is scaled by ``1 / (1 - rate)`` (``"cond"``) or ``num_layers / kept`` (``"gather"``).

    Args:
      layer_fn: ``layer_fn(layer_params, x) -> x``, one residual layer; returns the structure, shapes and dtypes
        of ``x``.
      stacked_params: a pytree whose leaves all have the layer axis first (``jax.vmap(init)(keys)``), of size
        ``num_layers >= 1``.
      x: the input of the first layer: an array or any pytree.
      rate: probability of skipping each layer, in [0, 1]; static or traced (``"cond"`` only).
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, every layer runs.
      scale_by_keep: rescale a kept layer's residual update (see ``layer_drop``).
      mode: ``"cond"`` or ``"gather"`` (see above).
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      The output of the last layer run.

    Raises:
      TypeError: ``layer_fn`` is not callable, a traced ``rate`` with ``mode="gather"``, a flag not a bool, or
        ``key`` not a PRNG key.
      ValueError: ``stacked_params`` without leaves or with leaves of different leading sizes, a static ``rate``
        outside [0, 1], a bad ``mode``, or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> stacked = {"w": jnp.arange(1.0, 7.0)}  # six layers: x -> x + w
      >>> layer = lambda p, x: x + p["w"]
      >>> float(jaxdrop.scan_layer_drop(layer, stacked, jnp.float32(0), 0.5, deterministic=True))
      21.0
      >>> y = jaxdrop.scan_layer_drop(layer, stacked, jnp.float32(0), 0.5, key=jax.random.key(1), mode="gather")
      >>> y.shape
      ()
    """
    if not callable(layer_fn):
        raise TypeError(f"`layer_fn` must be a callable (layer_params, x) -> x; got {_checks.describe(layer_fn)}.")
    num_layers = _num_layers(stacked_params, "stacked_params")
    drop_rate, deterministic, scale_by_keep = _common_checks(rate, deterministic, scale_by_keep)
    _check_x(x, scale_by_keep)
    _checks.choice(mode, ("cond", "gather"), "mode")
    static = isinstance(drop_rate, float)
    if mode == "gather" and not static:
        raise TypeError(
            "`rate` must be static for `mode='gather'` (it sets how many layers are scanned); got a traced value. "
            "Use `mode='cond'` for a traced rate."
        )
    _checks.choice(generator, _masks.GENERATORS, "generator")

    def scan(params, x, body):
        return lax.scan(lambda carry, layer: (body(layer, carry), None), x, params)[0]

    if deterministic or (static and drop_rate == 0.0):
        return scan(stacked_params, x, layer_fn)
    if static and drop_rate == 1.0:
        return x
    key = _checks.key(key, site="scan_layer_drop")
    if isinstance(drop_rate, float) and mode == "gather":
        kept = round(num_layers * (1.0 - drop_rate))
        if kept == 0:
            return x
        scores = _masks.uniform(key, (num_layers,), generator)
        indices = jnp.sort(lax.top_k(scores, kept)[1])
        gathered = jax.tree.map(lambda leaf: jnp.take(leaf, indices, axis=0), stacked_params)
        gather_scale = num_layers / kept

        def gathered_body(layer_params, x):
            out = layer_fn(layer_params, x)
            return _residual_scaled(x, out, gather_scale) if scale_by_keep else out

        return scan(gathered, x, gathered_body)

    keep = _keep_decisions(key, drop_rate, num_layers, generator)
    scale = _core.keep_scale(drop_rate, inverted=True)

    def body(inputs, x):
        layer_params, kept = inputs

        def run(x):
            out = layer_fn(layer_params, x)
            return _residual_scaled(x, out, scale) if scale_by_keep else out

        return _skippable(kept, run, x)

    return scan((stacked_params, keep), x, body)


def _num_layers(stacked: Any, name: str) -> int:
    leaves = jax.tree_util.tree_leaves(stacked)
    if not leaves:
        raise ValueError(f"`{name}` must have at least one array leaf with the layer axis first; got no leaves.")
    sizes = set()
    for leaf in leaves:
        if not _checks.is_array_like(leaf) or jnp.ndim(leaf) == 0:
            raise ValueError(f"`{name}` leaves must be arrays with the layer axis first; got {_checks.describe(leaf)}.")
        sizes.add(jnp.shape(leaf)[0])
    if len(sizes) != 1:
        raise ValueError(f"`{name}` leaves must share the layer axis (axis 0) size; got sizes {sorted(sizes)}.")
    size = sizes.pop()
    if size < 1:
        raise ValueError(f"`{name}` must hold at least one layer (axis 0 of size >= 1); got 0.")
    return int(size)


def prune_layers(layers: Any, rate: float) -> Any:
    """The layers that remain after pruning a LayerDrop-trained network with rate ``rate`` ("every other").

    Fan et al. 2019 (§4, "Every Other"): a network trained with LayerDrop can be made shallower at inference,
    without fine-tuning, by dropping the layers at depths ``d`` (counted from 1) with ``d % floor(1 / rate) ==
    0``: rate 0.5 drops layers 2, 4, 6, ... and keeps every other one; rate 0.25 drops every 4th layer. The paper
    finds this simple rule as good as choosing layers by validation, best when the pruning rate matches the
    LayerDrop rate used in training.

    Args:
      layers: a list or tuple of layers (callables or per-layer parameters): the kept ones are returned as a list;
        or a pytree of parameters stacked along a leading layer axis (for ``scan_layer_drop``): the kept slices
        are returned, gathered.
      rate: the pruning rate, a static float in (0, 0.5] (above 0.5, ``floor(1 / rate)`` is 1 and every layer
        would go).

    Returns:
      The kept layers, in order: a list, or a stacked pytree with a shorter layer axis.

    Raises:
      TypeError: ``rate`` is not a real number.
      ValueError: ``rate`` outside (0, 0.5], no layer, or stacked leaves of different leading sizes.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> jaxdrop.prune_layers(["l1", "l2", "l3", "l4", "l5", "l6"], 0.5)
      ['l1', 'l3', 'l5']
      >>> jaxdrop.prune_layers({"w": jnp.arange(6)}, 0.25)["w"].tolist()  # drops the 4th
      [0, 1, 2, 4, 5]
    """
    sequence = isinstance(layers, (list, tuple))
    if sequence:
        if not layers:
            raise ValueError("`layers` must hold at least one layer; got an empty sequence.")
        num_layers = len(layers)
    else:
        num_layers = _num_layers(layers, "layers")
    if isinstance(rate, jax.core.Tracer):
        raise TypeError(f"`rate` must be static (it sets how many layers remain); got {_checks.describe(rate)}.")
    prune_rate = float(_checks.probability(rate, "rate"))
    if not 0.0 < prune_rate <= 0.5:
        raise ValueError(f"`rate` must be in (0, 0.5] (every floor(1 / rate)-th layer is dropped); got {prune_rate}.")
    every = int(np.floor(1.0 / prune_rate))
    kept = [index for index in range(num_layers) if (index + 1) % every != 0]
    if sequence:
        return [layers[index] for index in kept]
    indices = jnp.asarray(kept, jnp.int32)
    return jax.tree.map(lambda leaf: jnp.take(jnp.asarray(leaf), indices, axis=0), layers)
