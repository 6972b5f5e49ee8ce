"""Dropout for sequences: locked (variational) masks shared over time, token dropout and word-type dropout."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks, _masks
from jaxdrop.functional import _core
from jaxdrop.functional._dropout import bernoulli_dropout


def _shared_along(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    key: jax.Array | None,
    deterministic: bool,
    axis: int,
    axis_name: str,
    generator: _masks.Generator,
    *,
    site: str,
) -> jax.Array:
    """Dropout with one decision shared along ``axis`` (time for locked dropout, features for token dropout)."""
    x = _checks.floating_array(x)
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    if x.ndim < 2:
        what = axis_name.removesuffix("_axis")
        raise ValueError(f"`x` must have a {what} axis and at least one other axis (rank >= 2); got shape {x.shape}.")
    shared_axes = (_checks.axis(axis, x.ndim, axis_name),)
    _checks.choice(generator, _masks.GENERATORS, "generator")
    return bernoulli_dropout(
        x, rate, key, site=site, deterministic=deterministic, shared_axes=shared_axes, generator=generator
    )


def locked_dropout(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    time_axis: int = 1,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Variational (locked) dropout: one mask per sequence, the same at every time step.

    Use it on the inputs and outputs of recurrent layers (Gal & Ghahramani 2016, "A Theoretically Grounded
    Application of Dropout in Recurrent Neural Networks", NeurIPS; the ``LockedDropout`` of AWD-LSTM, Merity et
    al. 2018): resampling the mask at every step injects noise that the recurrence amplifies, whereas a mask fixed
    over time is variational inference on the weights. For the recurrent state inside ``lax.scan``, use
    ``locked_mask``, which draws the same mask as this function for a ``(batch, features)`` slice.

    Args:
      x: floating-point sequence batch, e.g. ``(batch, time, features)``; the output has the same dtype.
      rate: probability of dropping a unit, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      time_axis: the axis the mask is shared along (negative allowed); 1 for batch-major ``(batch, time, ...)``,
        0 for time-major.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: rank below 2, a bad ``time_axis``, a static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.locked_dropout(jnp.ones((2, 6, 4)), 0.5, key=jax.random.key(0))
      >>> bool((y == y[:, :1, :]).all())  # the same mask at every time step
      True
    """
    return _shared_along(x, rate, key, deterministic, time_axis, "time_axis", generator, site="locked_dropout")


def locked_mask(
    key: jax.Array | None,
    rate: jax.typing.ArrayLike,
    shape: tuple[int, ...],
    *,
    deterministic: bool = False,
    generator: _masks.Generator = "fast",
) -> Callable[[jax.Array], jax.Array]:
    """Draws one dropout mask of ``shape`` and returns a function that applies it: the same mask at every step.

    Use it for the recurrent state of an RNN written with ``lax.scan`` (Gal & Ghahramani 2016's variational
    RNN): draw the mask once per sequence batch, outside the scan, and call the returned function on the hidden
    state in every step. The mask is small (``(batch, hidden)``) so it is materialised once as booleans rather than
    regenerated per step. For the fast generator it equals the mask that ``locked_dropout`` draws with the same key
    for an input ``(batch, time, hidden)`` with ``time_axis=1``.

    Args:
      key: PRNG key; may be None when ``deterministic`` or the rate is statically 0 or 1.
      rate: probability of dropping a unit, in [0, 1]; static (validated) or traced.
      shape: the mask shape, usually ``(batch, hidden)``: a tuple of ints ``>= 0`` (an int ``n`` is ``(n,)``, as in
        ``jax.random``). The returned function accepts arrays of this shape, or of the same rank where ``shape``
        has size 1 on an axis (``(1, hidden)``: one mask shared by the batch); any other shape raises, so a mask
        is never silently broadcast over a batch.
      deterministic: if True, the returned function is the identity.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      A function ``h -> h * mask / (1 - rate)`` that keeps ``h``'s shape and dtype and stores only the small
      boolean mask for the backward pass.

    Raises:
      TypeError: ``key`` is not a PRNG key, ``shape`` is not a tuple of ints, or (when called) ``h`` is not a
        floating-point array.
      ValueError: a static ``rate`` outside [0, 1], a missing ``key``, a negative size in ``shape``, or (when
        called) ``h`` whose shape the mask does not fit.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> apply_mask = jaxdrop.locked_mask(jax.random.key(0), 0.5, (2, 4))
      >>> def step(h, x):
      ...     h = jnp.tanh(apply_mask(h) + x)
      ...     return h, h
      >>> _, hs = jax.lax.scan(step, jnp.ones((2, 4)), jnp.ones((3, 2, 4)))
      >>> hs.shape
      (3, 2, 4)
    """
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    shape = _checks.shape(shape, "shape")
    _checks.choice(generator, _masks.GENERATORS, "generator")

    def checked(h: jax.typing.ArrayLike) -> jax.Array:
        # In every mode, so code that runs in evaluation fails in training for the same reason, never differently.
        h = _checks.floating_array(h, "h")
        if h.ndim != len(shape) or any(size not in (1, h_size) for size, h_size in zip(shape, h.shape, strict=True)):
            raise ValueError(
                f"`h` of shape {h.shape} does not match the mask drawn by `locked_mask` with `shape` {shape}: the "
                f"mask must have the rank of `h` and each of its sizes must be that of `h` or 1 (shared along that "
                f"axis). Draw the mask with `shape={h.shape}`."
            )
        return h

    static = isinstance(rate, float)
    if deterministic or (static and rate == 0.0):
        return checked
    if static and rate == 1.0:
        return lambda h: jnp.zeros_like(checked(h))
    key = _checks.key(key, site="locked_mask")
    keep = _masks.keep_mask(key, rate if static else lax.stop_gradient(rate), shape, generator)
    scale = _core.keep_scale(rate, inverted=True)

    def apply_mask(h: jax.typing.ArrayLike) -> jax.Array:
        return _core.apply_keep_mask(checked(h), lambda mask: mask, keep, scale=scale)

    return apply_mask


def token_dropout(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    feature_axis: int = -1,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Drops whole token vectors: one decision per token, shared over the feature axis.

    Use it on embedded token sequences to make a model robust to missing tokens (the "embedding dropout" of
    sequence models, e.g. the token dropout of Sennrich et al. 2016, "Edinburgh Neural Machine Translation Systems
    for WMT 16", and of ESM/BERT-style pre-training): a dropped token is a zero vector; kept tokens are scaled by
    ``1 / (1 - rate)``. To drop the same vocabulary item at every position, use ``word_dropout``.

    Args:
      x: floating-point embeddings, e.g. ``(batch, time, features)``; the output has the same dtype.
      rate: probability of dropping a token, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      feature_axis: the embedding axis (negative allowed) the decision is shared along.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: rank below 2, a bad ``feature_axis``, a static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.token_dropout(jnp.ones((2, 6, 4)), 0.5, key=jax.random.key(0))
      >>> bool((y == y[..., :1]).all())  # each token vector is all kept or all dropped
      True
    """
    return _shared_along(x, rate, key, deterministic, feature_axis, "feature_axis", generator, site="token_dropout")


def _word_keep(key: jax.Array, rate: float | jax.Array, token_ids: jax.Array) -> jax.Array:
    """Keep decisions for each token, a function of (key, sequence index, token id) only.

    The fast generator's Threefry-2x32-13 evaluated at counter ``(token id, sequence index)`` instead of an
    element index: the same token id in the same sequence gets the same decision with no vocabulary-sized mask
    (and no vocabulary size) needed.
    """
    sequence_shape = (*token_ids.shape[:-1], 1)
    sequence_index = jnp.broadcast_to(_masks.element_counters(sequence_shape)[0], token_ids.shape)
    return _masks.keep_mask_at(key, rate, (token_ids.astype(jnp.uint32), sequence_index))


def word_dropout(
    tokens_embedded: jax.typing.ArrayLike,
    token_ids: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
) -> jax.Array:
    """Word-type dropout: drops a vocabulary item at every position where it occurs in a sequence.

    Use it on embedded text to regularise the embedding (Gal & Ghahramani 2016, "A Theoretically Grounded
    Application of Dropout in Recurrent Neural Networks", NeurIPS, §4.3 "Word embedding dropout"): dropping word
    types rather than positions is dropout on the rows of the embedding matrix, so a word is not seen in one place
    and hidden in another. Each sequence draws its own word types; kept tokens are scaled by ``1 / (1 - rate)``.

    The decision is computed from the key, the sequence index and the token id (Threefry-2x32-13, as the fast
    generator), so no vocabulary size is needed, and it is regenerated for the backward pass, never stored.

    Args:
      tokens_embedded: floating-point embeddings ``(..., time, features)``; the output has the same dtype.
      token_ids: integer ids ``(..., time)`` of the embedded tokens (the shape of ``tokens_embedded`` without
        its last axis); every leading index is one sequence.
      rate: probability of dropping a word type, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``tokens_embedded`` is returned unchanged.

    Returns:
      An array with the shape and dtype of ``tokens_embedded``.

    Raises:
      TypeError: ``tokens_embedded`` is not floating point, ``token_ids`` is not an integer array, or ``key`` is
        not a PRNG key.
      ValueError: the shapes do not match, a static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> ids = jnp.array([[3, 5, 3, 3, 5, 7]])
      >>> y = jaxdrop.word_dropout(jnp.ones((1, 6, 4)), ids, 0.5, key=jax.random.key(0))
      >>> kept = y[0, :, 0] > 0
      >>> bool(kept[0] == kept[2] == kept[3]) and bool(kept[1] == kept[4])  # token 3 and token 5 each all-or-none
      True
    """
    x = _checks.floating_array(tokens_embedded, "tokens_embedded")
    token_ids = _checks.integer_array(token_ids, "token_ids")
    if x.ndim < 2 or x.shape[:-1] != token_ids.shape:
        raise ValueError(
            f"`token_ids` must have the shape of `tokens_embedded` without its feature axis; got "
            f"`tokens_embedded` {x.shape} and `token_ids` {token_ids.shape}."
        )
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    skipped = _core.output_without_mask(x, rate, deterministic)
    if skipped is not None:
        return skipped
    key = _checks.key(key, site="word_dropout")
    static = isinstance(rate, float)
    scale = _core.keep_scale(rate, inverted=True)

    def make_keep(key, token_ids, *traced_rate):
        return _word_keep(key, traced_rate[0] if traced_rate else rate, token_ids)[..., None]

    operands = (key, token_ids) if static else (key, token_ids, lax.stop_gradient(rate))
    return _core.apply_keep_mask(x, make_keep, *operands, scale=scale)
