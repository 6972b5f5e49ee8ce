"""R-Drop: a consistency loss between two dropout passes of the same batch."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from jaxdrop import _checks

Task = Literal["classification", "regression"]


def r_drop_loss(
    outputs_a: jax.typing.ArrayLike,
    outputs_b: jax.typing.ArrayLike,
    *,
    task: Task = "classification",
) -> jax.Array:
    """The R-Drop regulariser: how much two dropout passes of the same inputs disagree, averaged over examples.

    Use it to make a dropout network's sub-models agree (Liang et al. 2021, "R-Drop: Regularized Dropout for
    Neural Networks", NeurIPS): run the batch through the model twice with independent dropout keys (or once on
    the batch repeated twice, ``multi_sample_loss``), and train on

        ``loss = (CE(logits_a, y) + CE(logits_b, y)) / 2 + alpha * r_drop_loss(logits_a, logits_b)``

    with ``alpha`` about 0.1 to 5 (the paper tunes it per task). Gradients flow into both passes, as in the paper.

    For ``task="classification"`` the outputs are logits (class axis last) and the term is the symmetric
    Kullback-Leibler divergence ``(KL(p_a || p_b) + KL(p_b || p_a)) / 2``, summed over classes and averaged over
    every other axis. For ``task="regression"`` it is the mean squared difference ``mean((a - b) ** 2)``, the
    paper's form for regression outputs. Computed in at least float32.

    Args:
      outputs_a: floating-point outputs of the first pass: logits ``(..., classes)`` or predictions.
      outputs_b: the second pass, of the same shape.
      task: ``"classification"`` (logits, symmetric KL) or ``"regression"`` (squared difference).

    Returns:
      A float32 (float64 for float64 inputs) scalar, 0 when the passes agree.

    Raises:
      TypeError: an output is not a floating-point array.
      ValueError: the shapes differ, classification outputs of rank 0, or a bad ``task``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxdrop import training
      >>> logits = jnp.array([[2.0, 0.0, -1.0]])
      >>> float(training.r_drop_loss(logits, logits))
      0.0
      >>> round(float(training.r_drop_loss(jnp.ones(3), jnp.zeros(3), task="regression")), 3)
      1.0
    """
    outputs_a = _checks.floating_array(outputs_a, "outputs_a")
    outputs_b = _checks.floating_array(outputs_b, "outputs_b")
    if outputs_a.shape != outputs_b.shape:
        raise ValueError(
            f"`outputs_a` and `outputs_b` must have the same shape (two passes of one batch); got "
            f"{outputs_a.shape} and {outputs_b.shape}."
        )
    _checks.choice(task, ("classification", "regression"), "task")
    dtype = jnp.promote_types(jnp.result_type(outputs_a, outputs_b), jnp.float32)
    a, b = outputs_a.astype(dtype), outputs_b.astype(dtype)
    if task == "regression":
        return jnp.mean((a - b) ** 2)
    if a.ndim == 0:
        raise ValueError("`outputs_a` must have a class axis (the last) for `task='classification'`; got a scalar.")
    log_a, log_b = jax.nn.log_softmax(a, axis=-1), jax.nn.log_softmax(b, axis=-1)
    # KL(p_a||p_b) + KL(p_b||p_a) = sum (p_a - p_b) (log p_a - log p_b): one pass, never negative.
    symmetric = jnp.sum((jnp.exp(log_a) - jnp.exp(log_b)) * (log_a - log_b), axis=-1)
    return 0.5 * jnp.mean(symmetric)
