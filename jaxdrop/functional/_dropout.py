"""Standard (Bernoulli) dropout."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax

from jaxdrop import _checks, _masks
from jaxdrop.functional import _core


def dropout(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    broadcast_dims: int | Sequence[int] = (),
    inverted: bool = True,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Zeroes each element with probability ``rate`` (Srivastava et al. 2014, JMLR 15).

    Inverted dropout (the default) scales kept elements by ``1 / (1 - rate)`` during training so that the
    expectation is preserved and inference needs no change. Classic dropout (``inverted=False``) leaves kept
    elements unscaled in training and scales the whole input by ``1 - rate`` when ``deterministic``.

    The mask is never stored for the backward pass: gradients regenerate it from the key.

    Args:
      x: floating-point input (float32, bfloat16, float16 or float64); the output has the same dtype.
      rate: probability of dropping an element, in [0, 1]. A Python/NumPy number is validated at trace time;
        a traced scalar (an optax schedule, ``vmap`` over rates) is used without recompiling. A traced rate
        outside [0, 1] yields NaN (it cannot raise inside ``jit``). No gradient flows to ``rate``: the expected
        output does not depend on it (use concrete dropout to learn rates).
      key: PRNG key, typed (``jax.random.key``) or legacy (``jax.random.PRNGKey``). Required unless
        ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, no dropout: the input is returned unchanged (scaled by ``1 - rate`` when
        ``inverted=False``), with no random operations in the program.
      broadcast_dims: axes along which one mask value is shared (flax's meaning); negative axes allowed.
      inverted: inverted (scale in training) or classic (scale at inference) dropout.
      generator: ``"fast"``: Threefry-2x32-13 on the elements' global indices, two elements per block (default;
        identical on any device mesh); ``"fast16"``: four elements per block with 16-bit thresholds (the rate
        rounded to a multiple of 2**-16, half the hashing); ``"jax"``: the mask of
        ``jax.random.bernoulli(key, 1 - rate, shape)``, identical to flax's.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, ``key`` is not a PRNG key, or ``deterministic`` is traced.
      ValueError: a static ``rate`` outside [0, 1], a bad ``broadcast_dims`` axis, or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jnp.ones((2, 4))
      >>> y = jaxdrop.dropout(x, 0.5, key=jax.random.key(0))
      >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [2.0], [0.0])
      True
      >>> bool((jaxdrop.dropout(x, 0.5, deterministic=True) == x).all())
      True
    """
    x = _checks.floating_array(x)
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    inverted = _checks.static_bool(inverted, "inverted")
    shared_axes = _checks.axes(broadcast_dims, x.ndim, "broadcast_dims")
    _checks.choice(generator, _masks.GENERATORS, "generator")
    return bernoulli_dropout(
        x,
        rate,
        key,
        site="dropout",
        deterministic=deterministic,
        shared_axes=shared_axes,
        inverted=inverted,
        generator=generator,
    )


def bernoulli_dropout(
    x: jax.Array,
    rate: float | jax.Array,
    key: jax.Array | None,
    *,
    site: str | None,
    deterministic: bool = False,
    shared_axes: tuple[int, ...] = (),
    inverted: bool = True,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """``dropout`` on checked arguments (``x`` an array, ``rate`` from ``_checks.probability``, normalised axes).

    The variants built on dropout check their own arguments and call this, so a call checks each argument once.
    ``site`` is the public function the user called, under which the key's use is recorded (see ``jaxdrop.debug``);
    None when the caller has checked and recorded the key itself.
    """
    static = isinstance(rate, float)
    if deterministic and not inverted and not (static and rate == 0.0):
        return _core.scale_values(x, 1.0 - rate)  # classic dropout at inference: the expected value of training
    skipped = _core.output_without_mask(x, rate, deterministic)
    if skipped is not None:
        return skipped
    key = _checks.key(key, site=site)

    shape = _core.mask_shape(x.shape, shared_axes)
    scale = _core.keep_scale(rate, inverted)
    if static:
        return _core.apply_keep_mask(x, lambda k: _masks.keep_mask(k, rate, shape, generator), key, scale=scale)
    return _core.apply_keep_mask(
        x, lambda k, r: _masks.keep_mask(k, r, shape, generator), key, lax.stop_gradient(rate), scale=scale
    )
