"""Noise variants: alpha dropout for SELU networks, multiplicative Gaussian dropout, additive Gaussian noise."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks, _masks
from jaxdrop.functional import _core
from jaxdrop.functional._dropout import bernoulli_dropout
from jaxdrop.functional._spatial import feature_map_axes

# SELU constants (Klambauer et al. 2017), to PyTorch's precision.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# SELU's negative saturation value, -scale * alpha: what alpha dropout sets dropped units to before the affine fix.
ALPHA_PRIME = -SELU_SCALE * SELU_ALPHA


def _alpha_dropout(
    x: jax.Array,
    rate: float | jax.Array,
    key: jax.Array | None,
    deterministic: bool,
    shared_axes: tuple[int, ...],
    generator: _masks.Generator,
    site: str,
) -> jax.Array:
    """Alpha dropout on checked arguments, shared by ``alpha_dropout`` and ``feature_alpha_dropout``."""
    skipped = _core.output_without_mask(x, rate, deterministic)  # rate 1: zeros, the limit PyTorch also returns
    if skipped is not None:
        return skipped
    # out = a * (x * keep + alpha' * (1 - keep)) + b with a = ((1 - p)(1 + p alpha'^2))^-1/2, b = -a alpha' p.
    # Written as k * dropout(x - alpha') + k * alpha' with k = a (1 - p) = sqrt((1 - p) / (1 + p alpha'^2)): the
    # core applies the mask (never stored), and k is finite on all of [0, 1], so a traced rate 1 gives 0, no NaN.
    p = rate if isinstance(rate, float) else lax.stop_gradient(rate)
    affine = ((1.0 - p) / (1.0 + p * ALPHA_PRIME**2)) ** 0.5
    wide = x.astype(_core.compute_dtype(x.dtype))  # subtract and rescale in float32: one rounding to x.dtype
    dropped = bernoulli_dropout(wide - ALPHA_PRIME, rate, key, site=site, shared_axes=shared_axes, generator=generator)
    return (affine * dropped + affine * ALPHA_PRIME).astype(x.dtype)


def alpha_dropout(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Dropout for self-normalising (SELU) networks: keeps zero mean and unit variance.

    Use it instead of ``dropout`` in SELU networks (Klambauer et al. 2017, "Self-Normalizing Neural Networks",
    NeurIPS, §"New dropout technique"). Dropped units are set to SELU's negative saturation value
    ``alpha' = -scale * alpha`` instead of 0, then an affine map ``a * y + b`` with
    ``a = ((1 - p)(1 + p alpha'^2))^(-1/2)``, ``b = -a alpha' p`` restores mean 0 and variance 1 for inputs with
    mean 0 and variance 1. The constants are PyTorch's (``torch.nn.AlphaDropout``, Keras' ``AlphaDropout``).

    At rate 1 the affine map has no finite limit; like PyTorch, the output is all zeros, with zero gradient.

    Args:
      x: floating-point input; the output has the same dtype.
      rate: probability of dropping a unit, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``, as in ``jaxdrop.dropout``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: a static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jaxdrop
      >>> x = jax.random.normal(jax.random.key(0), (100_000,))
      >>> y = jaxdrop.alpha_dropout(x, 0.2, key=jax.random.key(1))
      >>> abs(float(y.mean())) < 0.02, round(float(y.std()), 1)
      (True, 1.0)
    """
    x = _checks.floating_array(x)
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    _checks.choice(generator, _masks.GENERATORS, "generator")
    return _alpha_dropout(x, rate, key, deterministic, (), generator, "alpha_dropout")


def feature_alpha_dropout(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    channel_axis: int = -1,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Alpha dropout of whole feature maps: one decision per example and channel, shared over spatial axes.

    Use it in convolutional SELU networks (Klambauer et al. 2017), where ``spatial_dropout`` would be used with
    ReLU. It is ``torch.nn.FeatureAlphaDropout``, channels-last by default. Axis 0 is the batch axis.

    Args:
      x: floating-point input ``(batch, *spatial, channels)``; the output has the same dtype.
      rate: probability of dropping a feature map, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      channel_axis: the channel axis (negative allowed), not 0.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"``.

    Returns:
      An array with the shape and dtype of ``x``; all zeros at rate 1.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: rank below 2, a bad ``channel_axis``, a static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.feature_alpha_dropout(jnp.zeros((4, 3, 3, 2)), 0.5, key=jax.random.key(0))
      >>> bool((y == y[:, :1, :1, :]).all())  # constant over each feature map
      True
    """
    x = _checks.floating_array(x)
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    _, spatial = feature_map_axes(x.ndim, channel_axis)
    _checks.choice(generator, _masks.GENERATORS, "generator")
    return _alpha_dropout(x, rate, key, deterministic, spatial, generator, "feature_alpha_dropout")


def _apply_noise(
    x: jax.Array,
    key: jax.Array,
    level: float | jax.Array,
    combine: Callable[[jax.Array, jax.Array], jax.Array],
    generator: _masks.Generator,
) -> jax.Array:
    """``combine(x, level * N(0, 1))`` in float32 (float64 for a float64 ``x``), one rounding to ``x.dtype``; the
    noise is regenerated from the key for the backward pass instead of being stored (``nothing_saveable``)."""

    def noisy(x, key, level):
        noise = level * _masks.normal(key, x.shape, generator)
        return combine(x.astype(_core.compute_dtype(x.dtype)), noise).astype(x.dtype)

    remat = jax.checkpoint(noisy, policy=jax.checkpoint_policies.nothing_saveable)
    return remat(x, key, lax.stop_gradient(jnp.asarray(level, _core.compute_dtype(x.dtype))))


def gaussian_dropout(
    x: jax.typing.ArrayLike,
    rate: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Multiplies each element by Gaussian noise ``N(1, rate / (1 - rate))``: dropout's variance, no zeros.

    Use it when a smooth alternative to Bernoulli dropout is wanted (Srivastava et al. 2014, "Dropout", JMLR 15,
    §10 "Multiplicative Gaussian Noise"; Keras' ``GaussianDropout``): the noise has the mean and variance of
    inverted Bernoulli dropout at the same rate, so the expectation is preserved and no unit is silenced.

    At rate 1 the variance is infinite; the output is all zeros (the limit of Bernoulli dropout), with zero
    gradient. The noise is regenerated from the key for the backward pass, never stored.

    Args:
      x: floating-point input; the output has the same dtype (the noise is applied in float32).
      rate: the equivalent Bernoulli drop rate, in [0, 1]; static (validated) or traced.
      key: PRNG key; required unless ``deterministic`` or the rate is statically 0 or 1.
      deterministic: if True, ``x`` is returned unchanged.
      generator: ``"fast"`` (Box-Muller on the fused Threefry-2x32-13 words, identical on any mesh; the default)
        or ``"jax"`` (``jax.random.normal``).

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: a static ``rate`` outside [0, 1], or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.gaussian_dropout(jnp.ones(100_000), 0.5, key=jax.random.key(0))
      >>> round(float(y.mean()), 1), round(float(y.var()), 1)  # N(1, 0.5 / 0.5)
      (1.0, 1.0)
    """
    x = _checks.floating_array(x)
    rate = _checks.probability(rate, "rate")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    _checks.choice(generator, _masks.GENERATORS, "generator")
    skipped = _core.output_without_mask(x, rate, deterministic)
    if skipped is not None:
        return skipped
    key = _checks.key(key, site="gaussian_dropout")
    if isinstance(rate, float):
        stddev = (rate / (1.0 - rate)) ** 0.5
        return _apply_noise(x, key, stddev, lambda x, noise: x * (1.0 + noise), generator)
    # Traced: rate 1 gives 0 (see above), an invalid rate NaN (as in `jaxdrop.dropout`).
    valid = (rate >= 0.0) & (rate <= 1.0)
    below_one = rate < 1.0
    stddev = jnp.sqrt(jnp.where(below_one, rate, 0.0) / jnp.where(below_one, 1.0 - rate, 1.0))
    stddev = jnp.where(valid, stddev, jnp.nan)
    factor = jnp.where(below_one | ~valid, 1.0, 0.0)
    return _apply_noise(x, key, stddev, lambda x, noise: x * ((1.0 + noise) * lax.stop_gradient(factor)), generator)


def gaussian_noise(
    x: jax.typing.ArrayLike,
    stddev: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    generator: _masks.Generator = "fast",
) -> jax.Array:
    """Adds zero-mean Gaussian noise of standard deviation ``stddev``.

    Use it as a regulariser on inputs or hidden units, or as data augmentation (Keras' ``GaussianNoise``; an
    additive alternative to dropout discussed by Srivastava et al. 2014, §10). The expectation is preserved; the
    gradient with respect to ``x`` is the identity, so nothing is stored for the backward pass.

    Args:
      x: floating-point input; the output has the same dtype (the noise is added in float32).
      stddev: standard deviation, ``>= 0``; static (validated) or traced. No gradient flows to it.
      key: PRNG key; required unless ``deterministic`` or ``stddev`` is statically 0.
      deterministic: if True, ``x`` is returned unchanged.
      generator: ``"fast"`` (default), ``"fast16"`` or ``"jax"`` (``jax.random.normal``), as in ``gaussian_dropout``.

    Returns:
      An array with the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.
      ValueError: a static ``stddev`` that is negative, infinite or NaN, or a missing ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> y = jaxdrop.gaussian_noise(jnp.zeros(100_000), 0.5, key=jax.random.key(0))
      >>> abs(float(y.mean())) < 0.01, round(float(y.std()), 2)
      (True, 0.5)
    """
    x = _checks.floating_array(x)
    stddev = _checks.non_negative(stddev, "stddev")
    deterministic = _checks.static_bool(deterministic, "deterministic")
    _checks.choice(generator, _masks.GENERATORS, "generator")
    if deterministic or (isinstance(stddev, float) and stddev == 0.0):
        return x
    key = _checks.key(key, site="gaussian_noise")
    if not isinstance(stddev, float):  # a traced negative or NaN stddev cannot raise inside jit: NaN output
        stddev = jnp.where(stddev >= 0.0, stddev, jnp.nan)
    return _apply_noise(x, key, stddev, lambda x, noise: x + noise, generator)
