"""Monte Carlo dropout: many stochastic passes in one ``vmap``, chunked, sharded and summarised in bounded memory.

MC dropout (Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation: Representing Model Uncertainty in Deep
Learning", ICML) keeps dropout on at prediction time and averages ``T`` stochastic passes; their spread is the
model's uncertainty.

- `sample()`: the raw samples of any ``fn(key, *args)``, sample axis first:
  ``sample(fn, *args, key=key, num_samples=T)``.
- `predict()`: a plain function, a linen module with its variables, or an nnx module, summarised as a
  `ClassificationPrediction` or `RegressionPrediction`. With ``chunk_size`` the summaries are
  accumulated chunk by chunk, so ``T = 10_000`` needs the memory of one chunk.
- Options of both: ``function_samples=True`` gives every input of the batch the same masks within a sample (each
  sample is one function drawn from the approximate posterior, as BatchBALD needs); ``predict(..., sites=...)``
  samples only the chosen dropout sites of a linen or nnx model (``"last"``, module-path patterns or a predicate),
  everything else deterministic.
- `decode()` and `score()`: MC dropout for autoregressive models: ``T`` samples decoded (or teacher-forced) together,
  each with its own decoding cache, masks fixed per sample or redrawn per step; per-token entropy and mutual
  information (`SequenceScores`, `Generation`).
- `IdenticalSamplesWarning`: every sample was the same (dropout was off); `RecompileWarning`: arrays a function
  reads from outside its arguments changed, so it was compiled again (pass them as arguments).

Both trace the model inside `jaxdrop.stochastic()`: jaxdrop's layers sample in evaluation mode, other layers
(BatchNorm) keep the mode the call gives them.

This module only re-exports; the code lives in ``_sampling`` (keys, chunks, ``sample``), ``_closures`` (the
compiled programs and their freshness), ``_predict``, ``_adapters`` (functions, linen and nnx models),
``_function_samples`` (one mask per sample for the whole batch), ``_sites`` (per-site MC) and ``_reduce``
(streaming summaries, result types).
"""

from jaxdrop.mc._closures import RecompileWarning
from jaxdrop.mc._decoding import Generation, SequenceScores, decode, score
from jaxdrop.mc._predict import predict
from jaxdrop.mc._reduce import ClassificationPrediction, RegressionPrediction
from jaxdrop.mc._sampling import IdenticalSamplesWarning, sample

__all__ = [
    "ClassificationPrediction",
    "Generation",
    "IdenticalSamplesWarning",
    "RecompileWarning",
    "RegressionPrediction",
    "SequenceScores",
    "decode",
    "predict",
    "sample",
    "score",
]
