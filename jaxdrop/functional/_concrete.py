"""Concrete dropout: a relaxed Bernoulli mask whose drop rate is learned by gradient descent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks, _masks
from jaxdrop.functional import _core

EPSILON = 1e-7  # Gal's reference implementation (Keras' K.epsilon())
DENSE_TEMPERATURE = 0.1  # the reference's temperature for dense layers
SPATIAL_TEMPERATURE = 2.0 / 3.0  # and for spatial (per-channel) concrete dropout


def _scalar_logit(p_logit: jax.typing.ArrayLike) -> jax.Array:
    """``p_logit`` checked: a floating-point scalar (one learnable rate per layer), finite when static."""
    return _checks.floating_scalar(
        p_logit, "p_logit", " Initialise it as the logit of the rate, e.g. `jnp.log(0.1) - jnp.log(0.9)`."
    )


def _retain(logit: jax.Array) -> jax.Array:
    """``1 - sigmoid(logit)`` without cancellation, floored at ``EPSILON`` so a saturated logit divides safely."""
    return jnp.maximum(jax.nn.sigmoid(-logit), EPSILON)


def concrete_dropout(
    x: jax.typing.ArrayLike,
    p_logit: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    temperature: jax.typing.ArrayLike = DENSE_TEMPERATURE,
    broadcast_dims: int | Sequence[int] = (),
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Dropout with a continuous relaxation of the Bernoulli mask, so the drop rate receives gradients.

    Use it to learn the dropout rate instead of grid-searching it, typically for well-calibrated Monte Carlo
    dropout uncertainty (Gal, Hron & Kendall 2017, "Concrete Dropout", NeurIPS). Add
    ``concrete_dropout_regularizer`` of the following layer's weights to the loss: without it the rate collapses
    to 0. The maths is the reference implementation's: with ``p = sigmoid(p_logit)``, ``u ~ U(0, 1)`` and
    ``eps = 1e-7``,
    ``drop = sigmoid((log(p + eps) - log(1 - p + eps) + log(u + eps) - log(1 - u + eps)) / temperature)`` and
    ``out = x * (1 - drop) / (1 - p)``. ``1 - p`` is computed as ``sigmoid(-p_logit)`` and floored at ``eps``, so
    a saturated rate (``p_logit`` beyond about 16, where float32 rounds ``p`` to 1) stays finite.

    For spatial concrete dropout (one relaxed mask per channel after a convolution), share the noise over the
    spatial axes with ``broadcast_dims`` and use ``temperature=2/3`` (``SPATIAL_TEMPERATURE``), as the reference.
    The uniform noise (``generator="fast"``: fused Threefry-2x32-13, identical on any mesh; ``"jax"``:
    ``jax.random.uniform``) is regenerated for the backward pass, never stored.

    Args:
      x: floating-point input; the output has the same dtype (the mask is applied in float32, or in float64 for
        a float64 input).
      p_logit: scalar logit of the drop probability, a learnable parameter; gradients flow to it.
      key: PRNG key; required unless ``deterministic``.
      deterministic: if True, ``x`` is returned unchanged (the expectation of the output as the temperature goes
        to 0). For Monte Carlo predictions keep it False.
      temperature: relaxation temperature ``> 0``: 0.1 for dense layers (default), 2/3 for spatial dropout.
        Static (validated) or traced; no gradient flows to it.
      broadcast_dims: axes along which one noise value is shared (negative allowed).
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``: where the uniform noise comes from (see above).

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` or ``p_logit`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: ``p_logit`` is not a scalar or is NaN or infinite (static), ``temperature`` is not a finite
        number ``> 0`` (static), a bad ``broadcast_dims`` axis, or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> x = jnp.ones(100_000)
      >>> p_logit = jnp.log(0.2) - jnp.log(0.8)  # p = 0.2
      >>> y = jaxdrop.concrete_dropout(x, p_logit, key=jax.random.key(0))
      >>> round(float((y < 0.5).mean()), 1)  # about p of the units are (nearly) dropped
      0.2
      >>> g = jax.grad(lambda p: jaxdrop.concrete_dropout(x, p, key=jax.random.key(0)).var())(p_logit)
      >>> bool(g > 0)  # a higher rate gives noisier outputs: the rate gets a gradient
      True
    """
    x = _checks.floating_array(x)
    logit = _scalar_logit(p_logit)
    temperature = _checks.non_negative(temperature, "temperature", strict=True)
    deterministic = _checks.static_bool(deterministic, "deterministic")
    shared_axes = _checks.axes(broadcast_dims, x.ndim, "broadcast_dims")
    _checks.choice(generator, _masks.GENERATORS, "generator")
    if deterministic:
        return x
    key = _checks.key(key, site="concrete_dropout")
    if not isinstance(temperature, float):  # a traced temperature <= 0 cannot raise inside jit: NaN output
        temperature = jnp.where(temperature > 0.0, temperature, jnp.nan)
    noise_shape = _core.mask_shape(x.shape, shared_axes)
    wide = _core.compute_dtype(x.dtype)  # float32, or float64 for float64 inputs: one rounding to x.dtype

    def relaxed_dropout(x, logit, key, temperature):
        logit = logit.astype(wide)
        p = jax.nn.sigmoid(logit)
        uniform = _masks.uniform(key, noise_shape, generator).astype(wide)
        drop_logit = (
            jnp.log(p + EPSILON)
            - jnp.log(jax.nn.sigmoid(-logit) + EPSILON)
            + jnp.log(uniform + EPSILON)
            - jnp.log(1.0 - uniform + EPSILON)
        ) / temperature
        retain_weight = jax.nn.sigmoid(-drop_logit)  # 1 - drop, without cancellation
        return (x.astype(wide) * (retain_weight / _retain(logit))).astype(x.dtype)

    remat = jax.checkpoint(relaxed_dropout, policy=jax.checkpoint_policies.nothing_saveable)
    return remat(x, logit, key, lax.stop_gradient(jnp.asarray(temperature, wide)))


def concrete_dropout_regularizer(
    p_logit: jax.typing.ArrayLike,
    weight: Any,
    *,
    weight_regularizer: jax.typing.ArrayLike,
    dropout_regularizer: jax.typing.ArrayLike,
    input_dim: int,
) -> jax.Array:
    """The concrete dropout loss term: ``weight_regularizer * sum(W^2) / (1 - p) - dropout_regularizer * K * H(p)``.

    Add it to the training loss for every concrete dropout layer (Gal, Hron & Kendall 2017, eq. 3 and the
    reference implementation): the first term is the KL weight decay of the layer that consumes the dropped input,
    the second rewards entropy ``H(p) = -p log p - (1 - p) log(1 - p)`` of the drop rate, scaled by the input
    feature dimension ``K``. The paper sets ``weight_regularizer = l^2 / (tau N)`` and
    ``dropout_regularizer = 2 / (tau N)`` for ``N`` training examples (the reference uses
    ``l^2 / N`` and ``2 / N``). The entropy is computed from the logit, so it is finite for every rate.

    Args:
      p_logit: the scalar logit passed to ``concrete_dropout``.
      weight: the kernel of the layer applied to the dropped input: an array or a pytree of arrays (all leaves
        are summed).
      weight_regularizer: weight-decay coefficient, ``>= 0``.
      dropout_regularizer: entropy coefficient, ``>= 0``.
      input_dim: ``K``, the number of input features of that layer (channels for spatial dropout), ``>= 1``.

    Returns:
      A float32 scalar; differentiable with respect to ``p_logit`` and ``weight``.

    Raises:
      TypeError: ``p_logit`` is not a floating-point scalar, a leaf of ``weight`` is not a floating-point array,
        or ``input_dim`` is not an int.
      ValueError: ``p_logit`` is not a scalar or is NaN or infinite (static), a negative, NaN or infinite
        regulariser, or ``input_dim < 1``.

    Examples:
      >>> import jax.numpy as jnp, jaxdrop
      >>> reg = jaxdrop.concrete_dropout_regularizer(
      ...     0.0, jnp.ones((4, 2)), weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=4)
      >>> round(float(reg), 4)  # 0.01 * 8 / 0.5 - 0.1 * 4 * log(2)
      -0.1173
    """
    leaves = [_checks.floating_array(leaf, "weight") for leaf in jax.tree_util.tree_leaves(weight)]
    logit = _scalar_logit(p_logit).astype(jnp.float32)
    weight_regularizer = _checks.non_negative(weight_regularizer, "weight_regularizer")
    dropout_regularizer = _checks.non_negative(dropout_regularizer, "dropout_regularizer")
    input_dim = _checks.positive_int(input_dim, "input_dim")
    squares = sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in leaves)
    p = jax.nn.sigmoid(logit)
    entropy = -(p * jax.nn.log_sigmoid(logit) + jax.nn.sigmoid(-logit) * jax.nn.log_sigmoid(-logit))
    return weight_regularizer * squares / _retain(logit) - dropout_regularizer * input_dim * entropy
