"""Streaming summaries of MC samples (``init / update(chunk) / finalize``) and the result objects they produce.

Each accumulator keeps only running sums over the sample axis, so memory does not grow with the number of samples:
classification keeps the sums of probabilities, of per-sample entropies and of argmax votes, and a running
``logsumexp`` of the label's log-probability; regression keeps a parallel (Chan et al. 1979) merge of the mean and
of the sum of squared deviations, the sum of heteroscedastic variances and a running ``logsumexp`` of per-sample
Gaussian log-likelihoods (Gal & Ghahramani 2016).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, cast

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from jaxdrop import _stats


def _deprecated_uncertainty(result: str, field: str) -> None:
    # One name meant an entropy for one task and a standard deviation for the other: code written for one read the
    # other silently. The explicit names say which it is.
    warnings.warn(
        f"`{result}.uncertainty` is deprecated: use `.{field}` (or another explicit field).",
        DeprecationWarning,
        stacklevel=3,
    )


def _register(cls: type) -> type:
    fields = [field.name for field in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=[])


@_register
@dataclasses.dataclass(frozen=True)
class ClassificationPrediction:
    """MC-dropout predictive summary for a classifier; every field has the batch shape of one prediction.

    Attributes:
      probs: predictive mean probabilities ``mean_t p_t`` (batch shape + classes).
      predictive_entropy: ``H[mean_t p_t]``, total uncertainty (nats).
      expected_entropy: ``mean_t H[p_t]``, aleatoric part.
      mutual_information: predictive minus expected entropy (BALD, Houlsby et al. 2011), epistemic part.
      variation_ratio: ``1 - (votes for the modal class) / T`` over the samples' argmax.
      margin: top-1 minus top-2 of ``probs`` (small means uncertain).
      nll: ``-log mean_t p_t(label)`` per example when ``labels`` were given, else None.
      samples: the raw model outputs, sample axis first, when ``return_samples=True``, else None.
    """

    probs: jax.Array
    predictive_entropy: jax.Array
    expected_entropy: jax.Array
    mutual_information: jax.Array
    variation_ratio: jax.Array
    margin: jax.Array
    nll: jax.Array | None = None
    samples: Any = None

    @property
    def predictions(self) -> jax.Array:
        """The predicted class, ``argmax`` of the predictive mean."""
        return jnp.argmax(self.probs, axis=-1)

    @property
    def uncertainty(self) -> jax.Array:
        """Deprecated: ``predictive_entropy`` (a regression result's ``uncertainty`` is a standard deviation)."""
        _deprecated_uncertainty("ClassificationPrediction", "predictive_entropy")
        return self.predictive_entropy


@_register
@dataclasses.dataclass(frozen=True)
class RegressionPrediction:
    """MC-dropout predictive summary for a regressor, in the targets' original units.

    Attributes:
      mean: predictive mean ``mean_t y_t``.
      epistemic_variance: variance of the sample means over the samples (``1/T`` normalisation).
      aleatoric_variance: ``1 / tau``, or ``mean_t exp(log_variance_t)`` for a heteroscedastic head; None if
        neither was given.
      variance: predictive variance, epistemic plus aleatoric (epistemic alone when there is no noise model);
        ``predictive_std`` is its square root.
      log_likelihood: per-point Gaussian test log-likelihood
        ``logsumexp_t log N(y; y_t, sigma_t^2) - log T`` when ``targets`` were given, else None.
      samples: the raw model outputs, sample axis first, when ``return_samples=True``, else None.
    """

    mean: jax.Array
    epistemic_variance: jax.Array
    aleatoric_variance: jax.Array | None
    variance: jax.Array
    log_likelihood: jax.Array | None = None
    samples: Any = None

    @property
    def predictions(self) -> jax.Array:
        """The predictive mean."""
        return self.mean

    @property
    def predictive_std(self) -> jax.Array:
        """The predictive standard deviation ``sqrt(variance)``, in the targets' units."""
        return jnp.sqrt(self.variance)

    @property
    def uncertainty(self) -> jax.Array:
        """Deprecated: ``predictive_std`` (a classification result's ``uncertainty`` is an entropy)."""
        _deprecated_uncertainty("RegressionPrediction", "predictive_std")
        return self.predictive_std


def _single_array(shapes: Any, task: str, hint: str) -> jax.ShapeDtypeStruct:
    if not isinstance(shapes, jax.ShapeDtypeStruct):
        raise TypeError(
            f"For task={task!r} the model must return a single array ({hint}); got a pytree "
            f"{jax.tree.structure(shapes)}."
        )
    return shapes


def _running_logsumexp(total: jax.Array, chunk: jax.Array) -> jax.Array:
    return jnp.logaddexp(total, logsumexp(chunk, axis=0))


@dataclasses.dataclass(frozen=True)
class ClassificationStats:
    """Accumulates a `ClassificationPrediction` from chunks of logits (or probabilities)."""

    outputs: str = "logits"
    labels: jax.Array | None = None

    def init(self, shapes: Any) -> dict:
        shape = _single_array(shapes, "classification", "logits with classes on the last axis").shape
        if len(shape) < 2:
            raise ValueError(
                f"For task='classification' each sample must have a class axis (the last); got "
                f"per-sample shape {shape[1:]}."
            )
        batch, num_classes = shape[1:-1], shape[-1]
        state = {
            "sum_probs": jnp.zeros((*batch, num_classes), jnp.float32),
            "sum_entropy": jnp.zeros(batch, jnp.float32),
            "votes": jnp.zeros((*batch, num_classes), jnp.int32),
        }
        if self.labels is not None:
            if self.labels.shape != batch:
                raise ValueError(
                    f"`labels` must have the batch shape of the predictions {batch}; got {self.labels.shape}."
                )
            state["label_log_lik"] = jnp.full(batch, -jnp.inf, jnp.float32)
        return state

    def update(self, state: dict, chunk: jax.Array) -> dict:
        chunk = _stats.as_float(chunk)
        log_probs = jax.nn.log_softmax(chunk, axis=-1) if self.outputs == "logits" else jnp.log(chunk)
        probs = jnp.exp(log_probs)
        num_classes = chunk.shape[-1]
        new = {
            "sum_probs": state["sum_probs"] + probs.sum(0),
            "sum_entropy": state["sum_entropy"] + _stats.entropy_from_log_probs(log_probs).sum(0),
            "votes": state["votes"] + jax.nn.one_hot(jnp.argmax(log_probs, -1), num_classes, dtype=jnp.int32).sum(0),
        }
        if self.labels is not None:
            label_log_probs = jnp.take_along_axis(log_probs, self.labels[None, ..., None].astype(jnp.int32), -1)
            new["label_log_lik"] = _running_logsumexp(state["label_log_lik"], label_log_probs[..., 0])
        return new

    def finalize(self, state: dict, num_samples: int) -> ClassificationPrediction:
        probs = state["sum_probs"] / num_samples
        predictive_entropy = _stats.entropy(probs)
        expected_entropy = state["sum_entropy"] / num_samples
        nll = None
        if self.labels is not None:
            nll = math.log(num_samples) - state["label_log_lik"]
        return ClassificationPrediction(
            probs=probs,
            predictive_entropy=predictive_entropy,
            expected_entropy=expected_entropy,
            # Mathematically >= 0 (Jensen); clipped so that float rounding never reports negative information.
            mutual_information=jnp.maximum(predictive_entropy - expected_entropy, 0.0),
            # Integer numerator: exactly 0 when every sample agrees.
            variation_ratio=(num_samples - state["votes"].max(-1)).astype(jnp.float32) / num_samples,
            margin=_stats.top_two_gap(probs),
            nll=nll,
        )


@dataclasses.dataclass(frozen=True)
class RegressionStats:
    """Accumulates a `RegressionPrediction` from chunks of means (or ``(mean, log_variance)`` pairs)."""

    heteroscedastic: bool = False
    tau: jax.Array | None = None
    targets: jax.Array | None = None
    target_mean: jax.Array | float = 0.0
    target_std: jax.Array | float = 1.0

    def _split(self, chunk: Any) -> tuple[jax.Array, jax.Array | None]:
        """Sample means and log-variances in original units (``y * target_std + target_mean``)."""
        mean, log_variance = chunk if self.heteroscedastic else (chunk, None)
        mean = _stats.as_float(mean) * self.target_std + self.target_mean
        if log_variance is not None:
            log_variance = _stats.as_float(log_variance) + 2.0 * jnp.log(self.target_std)
        return mean, log_variance

    def init(self, shapes: Any) -> dict:
        if self.heteroscedastic:
            if not (
                isinstance(shapes, (tuple, list))
                and len(shapes) == 2
                and all(isinstance(s, jax.ShapeDtypeStruct) for s in shapes)
            ):
                raise TypeError(
                    f"With `heteroscedastic=True` the model must return a pair (mean, log_variance) "
                    f"of arrays; got {jax.tree.structure(shapes)}."
                )
            if shapes[0].shape != shapes[1].shape:
                raise ValueError(
                    f"The heteroscedastic head's mean and log-variance must have the same shape; got "
                    f"{shapes[0].shape[1:]} and {shapes[1].shape[1:]}."
                )
            shape = shapes[0].shape[1:]
        else:
            shape = _single_array(shapes, "regression", "the predicted mean").shape[1:]
        state = {
            "count": jnp.zeros((), jnp.float32),
            "mean": jnp.zeros(shape, jnp.float32),
            "m2": jnp.zeros(shape, jnp.float32),
        }
        if self.heteroscedastic:
            state["sum_variance"] = jnp.zeros(shape, jnp.float32)
        if self.targets is not None:
            if self.targets.shape != shape:
                raise ValueError(f"`targets` must have the shape of one prediction {shape}; got {self.targets.shape}.")
            if self.tau is None and not self.heteroscedastic:
                raise ValueError(
                    "The Gaussian log-likelihood of `targets` needs a noise model: pass the model "
                    "precision `tau` or use a heteroscedastic head (`heteroscedastic=True`)."
                )
            state["log_lik"] = jnp.full(shape, -jnp.inf, jnp.float32)
        return state

    def update(self, state: dict, chunk: Any) -> dict:
        mean, log_variance = self._split(chunk)
        # Chan et al. parallel merge: exact in float32 where the naive sum of squares cancels catastrophically.
        chunk_count = mean.shape[0]
        chunk_mean = mean.mean(0)
        chunk_m2 = jnp.square(mean - chunk_mean).sum(0)
        count = state["count"] + chunk_count
        delta = chunk_mean - state["mean"]
        new = {
            "count": count,
            "mean": state["mean"] + delta * (chunk_count / count),
            "m2": state["m2"] + chunk_m2 + jnp.square(delta) * (state["count"] * chunk_count / count),
        }
        if self.heteroscedastic:
            # `_split` returns a log-variance whenever `heteroscedastic`; the cast is for mypy only.
            new["sum_variance"] = state["sum_variance"] + jnp.exp(cast(jax.Array, log_variance)).sum(0)
        if self.targets is not None:
            if log_variance is None:
                log_variance = -jnp.log(jnp.asarray(self.tau, jnp.float32))
            log_density = _stats.gaussian_log_density(_stats.as_float(self.targets), mean, log_variance)
            new["log_lik"] = _running_logsumexp(state["log_lik"], log_density)
        return new

    def finalize(self, state: dict, num_samples: int) -> RegressionPrediction:
        epistemic = state["m2"] / num_samples
        if self.heteroscedastic:
            aleatoric = state["sum_variance"] / num_samples
        elif self.tau is not None:
            aleatoric = jnp.broadcast_to(1.0 / jnp.asarray(self.tau, jnp.float32), epistemic.shape)
        else:
            aleatoric = None
        log_likelihood = None
        if self.targets is not None:
            log_likelihood = state["log_lik"] - math.log(num_samples)
        return RegressionPrediction(
            mean=state["mean"],
            epistemic_variance=epistemic,
            aleatoric_variance=aleatoric,
            variance=epistemic if aleatoric is None else epistemic + aleatoric,
            log_likelihood=log_likelihood,
        )
