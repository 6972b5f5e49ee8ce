"""DropConnect: dropout on weights instead of activations, for one array or chosen leaves of a params pytree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxdrop import _checks, _masks
from jaxdrop.functional._dropout import bernoulli_dropout
from jaxdrop.keys import fold_in

LeafPredicate = Callable[[str, Any], bool]


def dropconnect(
    w: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    inverted: bool = True,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Zeroes each weight with probability ``rate`` (DropConnect).

    Use it to regularise a layer through its weights rather than its activations (Wan et al. 2013,
    "Regularization of Neural Networks using DropConnect", ICML), e.g. on the hidden-to-hidden matrix of an LSTM
    (Merity et al. 2018's weight-dropped LSTM), where dropping activations would break the recurrence. Call it on
    the kernel before the matmul: ``x @ dropconnect(W, rate, key=k)``. One mask is drawn per call, shared by
    every example of the batch (as in the weight-dropped LSTM; ``vmap`` over per-example keys for Wan et al.'s
    per-example masks, at the cost of a weight copy per example).

    Inference uses the mean weights (inverted scaling by ``1 / (1 - rate)`` in training), not the paper's
    Gaussian moment-matching sampler. It is ``jaxdrop.dropout`` on ``w``; the mask is never stored for the
    backward pass.

    Args:
      w: floating-point weight array; the output has the same dtype.
      rate: probability of dropping a weight, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``w`` is returned unchanged (scaled by ``1 - rate`` when ``inverted=False``).
      inverted: scale kept weights in training (default) or all weights at inference.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      An array with the shape and dtype of ``w``.

    Raises:
      TypeError: ``w`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: a static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> w = jnp.ones((4, 3))
      >>> x = jnp.ones((2, 4))
      >>> y = x @ jaxdrop.dropconnect(w, 0.5, key=jax.random.key(0))
      >>> bool((y[0] == y[1]).all())  # one weight mask for the whole batch
      True
    """
    w = _checks.floating_array(w, "w")
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    inverted = _checks.static_bool(inverted, "inverted")
    _checks.choice(generator, _masks.GENERATORS, "generator")
    return bernoulli_dropout(
        w, rate, key, site="dropconnect", deterministic=deterministic, inverted=inverted, generator=generator
    )


def path_name(path: tuple[Any, ...]) -> str:
    """``"encoder/Dense_0/kernel"`` for a ``jax.tree_util`` key path (dict keys, attributes, sequence indices)."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _is_weight_matrix(path: str, leaf: Any) -> bool:
    return jnp.ndim(leaf) >= 2 and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def _predicate(where: LeafPredicate | str | Sequence[str] | None) -> LeafPredicate:
    if where is None:
        return _is_weight_matrix
    if callable(where):
        return where
    names = (where,) if isinstance(where, str) else tuple(where) if isinstance(where, Sequence) else (where,)
    if not all(isinstance(name, str) for name in names):
        raise TypeError(
            f"`where` must be a callable (path, leaf) -> bool, a name or a sequence of names; got {where!r}."
        )
    return lambda path, leaf: any(name in path.split("/") for name in names)


def selected_leaves(params: Any, where: LeafPredicate | str | Sequence[str] | None, variant: str) -> dict[str, Any]:
    """The leaves of ``params`` that ``where`` selects, by path name; each must be a floating-point array.

    Raises:
      TypeError: a bad ``where`` or a selected leaf that is not floating point (its path is named).
      ValueError: two selected leaves with the same path name (one key, so one mask, for both).
    """
    select = _predicate(where)
    selected = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = path_name(path)
        if select(name, leaf):
            if not _checks.is_array_like(leaf) or not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                dtype = jnp.result_type(leaf) if _checks.is_array_like(leaf) else type(leaf).__name__
                raise TypeError(
                    f"`where` selected the leaf {name!r} of dtype {dtype} in `params`; {variant} applies to "
                    f"floating-point weights only."
                )
            if name in selected:  # e.g. {"a/b": w1, "a": {"b": w2}}
                raise ValueError(f"`params` has two selected leaves named {name!r}; they would share a mask.")
            selected[name] = leaf
    return selected


def dropconnect_params(
    params: Any,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    where: LeafPredicate | str | Sequence[str] | None = None,
    inverted: bool = True,
    generator: _masks.Generator = "fast",
) -> Any:
    """Applies ``dropconnect`` to the chosen leaves of a params pytree, each with its own key.

    Use it to add DropConnect (Wan et al. 2013) to a model without changing its code:
    ``model.apply({"params": dropconnect_params(params, 0.5, key=k, where="kernel")}, x)``. The key of each leaf
    is ``jaxdrop.fold_in(key, path)``, so masks are independent across leaves and stable when other leaves are
    added. Unselected leaves are returned as they are (the same objects).

    Args:
      params: any pytree of arrays (flax ``params`` dict, an ``nnx.State``, a list of matrices).
      rate: probability of dropping a weight, in [0, 1], the same for every selected leaf.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``params`` is returned unchanged (with ``inverted=False``, selected leaves are
        scaled by ``1 - rate``).
      where: which leaves to drop. ``None`` (default): every floating-point leaf of rank >= 2 (kernels and
        embeddings, not biases or norm scales). A string or sequence of strings: leaves whose path has one of
        these components (``"kernel"``). A callable ``(path, leaf) -> bool`` with ``path`` like
        ``"encoder/Dense_0/kernel"``.
      inverted: as in ``dropconnect``.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      A pytree with the structure of ``params``.

    Raises:
      TypeError: a selected leaf is not floating point (its path is named), or a bad ``where``.
      ValueError: a static ``rate`` outside [0, 1], a missing ``key``, or two selected leaves with the same path
        name (they would get the same key and mask).

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> params = {"dense": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}}
      >>> out = jaxdrop.dropconnect_params(params, 0.5, key=jax.random.key(0))
      >>> out["dense"]["bias"] is params["dense"]["bias"]  # biases are left alone by default
      True
    """
    selected = selected_leaves(params, where, "DropConnect")  # first: it says which leaves are the input arrays
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    inverted = _checks.static_bool(inverted, "inverted")
    _checks.choice(generator, _masks.GENERATORS, "generator")
    static = isinstance(rate, float)
    needs_key = not deterministic and not (static and rate in (0.0, 1.0))
    key = _checks.key(key, site="dropconnect_params") if needs_key else key

    def drop_leaf(path, leaf):
        name = path_name(path)
        if name not in selected:
            return leaf
        leaf_key = fold_in(key, name) if needs_key else None  # derived from the recorded key: not recorded again
        return bernoulli_dropout(
            jnp.asarray(leaf),
            rate,
            leaf_key,
            site=None,
            deterministic=deterministic,
            inverted=inverted,
            generator=generator,
        )

    return jax.tree_util.tree_map_with_path(drop_leaf, params)
