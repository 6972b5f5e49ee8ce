"""Mixout: dropout for fine-tuning, where a dropped weight falls back to its pre-trained value instead of zero."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxdrop import _checks, _masks
from jaxdrop.functional._dropout import bernoulli_dropout
from jaxdrop.functional._weights import LeafPredicate, path_name, selected_leaves
from jaxdrop.keys import fold_in


def _check_pretrained(params: Any, pretrained: Any, selected: dict[str, Any]) -> dict[str, jax.Array]:
    """The pre-trained leaf of every selected leaf of ``params``: same tree structure, shapes, floating dtypes."""
    structure, other = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(pretrained)
    if structure != other:  # type: ignore[operator]  # jax's stub for PyTreeDef lacks __eq__
        raise ValueError(
            f"`pretrained` must have the tree structure of `params` (the same model's weights before fine-tuning); "
            f"got {_checks.describe(other)} for `params` {_checks.describe(structure)}."
        )
    found = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(pretrained):
        name = path_name(path)
        if name not in selected:
            continue
        if not _checks.is_array_like(leaf) or not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            dtype = jnp.result_type(leaf) if _checks.is_array_like(leaf) else type(leaf).__name__
            raise TypeError(f"`pretrained` leaf {name!r} must be a floating-point array; got {dtype}.")
        if jnp.shape(leaf) != jnp.shape(selected[name]):
            raise ValueError(
                f"`pretrained` leaf {name!r} must have the shape of the `params` leaf {jnp.shape(selected[name])}; "
                f"got {jnp.shape(leaf)}."
            )
        found[name] = jnp.asarray(leaf)
    return found


def mixout(
    params: Any,
    pretrained: Any,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    where: LeafPredicate | str | Sequence[str] | None = None,
    generator: _masks.Generator = "fast",
) -> Any:
    """Replaces each weight by its pre-trained value with probability ``rate``, rescaled so its mean is unchanged.

    Use it when fine-tuning a pre-trained model on a small data set (Lee et al. 2020, "Mixout: Effective
    Regularization to Finetune Large-scale Pretrained Language Models", ICLR): where dropout pulls the weights
    towards zero, mixout pulls them towards the pre-trained weights ``u``, an L2 penalty towards ``u`` in
    expectation, which keeps the fine-tuned model close to what it learned before. With a keep-mask ``M`` drawn
    with probability ``1 - rate`` per weight, the paper's rescaled mixture is

        ``w' = (M * w + (1 - M) * u - rate * u) / (1 - rate) = u + M * (w - u) / (1 - rate)``,

    so ``E[w'] = w``: inference uses ``w`` itself (``deterministic=True`` returns ``params`` unchanged). It is
    ``pretrained + dropconnect(params - pretrained)`` leaf by leaf; the gradient with respect to ``w`` is
    ``M / (1 - rate)`` and none flows to ``pretrained``. Call it on the whole params pytree inside the loss, as
    ``dropconnect_params``: ``model.apply({"params": mixout(params, pretrained, 0.5, key=k)}, x)``; for an nnx
    model, on the ``nnx.State`` of ``nnx.split(model)`` and ``nnx.merge`` back. The key of each leaf is
    ``jaxdrop.fold_in(key, path)``. A head added for the new task has no pre-trained value: give its initial
    weights in ``pretrained`` (as the paper does) or leave it out with ``where``.

    Args:
      params: the current weights, any pytree of arrays (flax ``params`` dict, an ``nnx.State``).
      pretrained: the weights to fall back to, a pytree of the same structure; selected leaves must be
        floating-point arrays of the shape of their ``params`` leaf (any floating dtype: the result has the
        dtype of ``params``).
      rate: probability of replacing a weight by its pre-trained value, in [0, 1]; static (validated) or traced.
        Rate 1 returns ``pretrained`` for the selected leaves (with zero gradient).
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``params`` is returned unchanged (the expectation of the mixture).
      where: which leaves to mix, as in ``dropconnect_params``: ``None`` (default) every floating-point leaf of
        rank >= 2 (kernels and embeddings), a name or names of path components, or a callable ``(path, leaf)``.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      A pytree with the structure and dtypes of ``params``.

    Raises:
      TypeError: a selected leaf of ``params`` or ``pretrained`` is not floating point, a bad ``where``, or a
        ``key`` that is not a PRNG key.
      ValueError: ``pretrained`` has another tree structure or shape, a static ``rate`` outside [0, 1], or a
        missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
      >>> pretrained = {"dense": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}}
      >>> out = jaxdrop.mixout(params, pretrained, 0.5, key=jax.random.key(0))
      >>> sorted(set(out["dense"]["kernel"].ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
      True
    """
    selected = selected_leaves(params, where, "mixout")
    anchors = _check_pretrained(params, pretrained, selected)
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    _checks.choice(generator, _masks.GENERATORS, "generator")
    static = isinstance(rate, float)
    needs_key = not deterministic and not (static and rate in (0.0, 1.0))
    key = _checks.key(key, site="mixout") if needs_key else key

    def mix_leaf(path, leaf):
        name = path_name(path)
        if name not in selected or deterministic or (static and rate == 0.0):
            return leaf  # exactly, not anchor + (leaf - anchor) rounded
        leaf = jnp.asarray(leaf)
        anchor = jax.lax.stop_gradient(anchors[name].astype(leaf.dtype))
        leaf_key = fold_in(key, name) if needs_key else None  # derived from the recorded key: not recorded again
        return anchor + bernoulli_dropout(leaf - anchor, rate, leaf_key, site=None, generator=generator)

    return jax.tree_util.tree_map_with_path(mix_leaf, params)
