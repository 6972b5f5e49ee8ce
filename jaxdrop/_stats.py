"""Formulas that both ``jaxdrop.mc`` (streaming, chunk by chunk) and ``jaxdrop.uncertainty`` (materialised samples)
evaluate, kept in one place so the two can never disagree. Pure ``jax.numpy``; no other jaxdrop import.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy import special

LOG_2PI = math.log(2.0 * math.pi)


def as_float(x: jax.typing.ArrayLike) -> jax.Array:
    """``x`` in at least float32: statistics of bf16/f16 samples are accumulated in float32."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32)) if jnp.issubdtype(x.dtype, jnp.floating) else x


def entropy(probs: jax.Array, axis: int = -1) -> jax.Array:
    """Shannon entropy in nats, ``-sum p log p`` with ``0 log 0 = 0`` (``entr`` is exact at 0 and has no NaN)."""
    return special.entr(as_float(probs)).sum(axis)


def entropy_from_log_probs(log_probs: jax.Array, axis: int = -1) -> jax.Array:
    """Entropy from log-probabilities (a ``log_softmax``), stable when some probabilities underflow to 0."""
    log_probs = as_float(log_probs)
    probs = jnp.exp(log_probs)
    return -jnp.where(probs > 0, probs * log_probs, 0.0).sum(axis)


def gaussian_log_density(x: jax.Array, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """``log N(x; mean, exp(log_variance))``, elementwise.

    The residual is standardised before squaring (``exp(-log_variance / 2)``), so a tiny variance does not
    overflow ``exp(-log_variance)`` to inf; below ``log_variance`` of about -177 even ``exp(-log_variance / 2)`` is
    inf, so an exactly zero residual is taken as 0 rather than ``0 * inf = NaN``.
    """
    residual = x - mean
    standardised = jnp.where(residual == 0, 0.0, residual * jnp.exp(-0.5 * log_variance))
    return -0.5 * (LOG_2PI + log_variance + jnp.square(standardised))


def top_two_gap(probs: jax.Array) -> jax.Array:
    """Largest minus second-largest probability along the last axis (1 when there is a single class)."""
    if probs.shape[-1] < 2:
        return jnp.ones(probs.shape[:-1], probs.dtype)
    top = jax.lax.top_k(probs, 2)[0]
    return top[..., 0] - top[..., 1]
