"""``jaxdrop.mc.predict``: a function or a Flax model, ``T`` dropout samples, summarised as a prediction object.

The arguments are checked here, the model is split into a static and an array part by ``_adapters``, and the
samples are drawn by ``_sampling.run`` into a ``_reduce`` accumulator, all under one cached ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxdrop import _checks, _mode
from jaxdrop.mc import _adapters, _closures, _function_samples, _sampling, _sites
from jaxdrop.mc._reduce import ClassificationPrediction, ClassificationStats, RegressionPrediction, RegressionStats

TASKS = ("classification", "regression")
OUTPUTS = ("logits", "probs")


class _Static(NamedTuple):
    """The jit-static arguments of ``predict`` (hashed into the cache key)."""

    model: _adapters.ModelStatic
    num_samples: int
    chunk_size: int
    task: str
    outputs: str
    heteroscedastic: bool
    return_samples: bool
    mesh: jax.sharding.Mesh | None
    mesh_axis: str | None
    function_samples: bool
    sites: str | tuple[str, ...] | Callable[[str], Any] | None


class _Arrays(NamedTuple):
    """The traced arguments of ``predict`` (a pytree)."""

    model: Any  # the model's arrays, from ``_adapters.split_model``
    inputs: Any
    key: jax.Array
    labels: jax.Array | None
    targets: jax.Array | None
    tau: jax.Array | None
    target_mean: jax.Array
    target_std: jax.Array


def _predict_impl(static: _Static, dynamic: _Arrays) -> ClassificationPrediction | RegressionPrediction:
    with _mode.stochastic():  # jaxdrop's layers sample while the model is traced, whatever its flags say
        return _summarise(static, dynamic)


def _summarise(static: _Static, dynamic: _Arrays) -> ClassificationPrediction | RegressionPrediction:
    chosen = None
    if static.sites is not None:  # the sites met in one trace (shapes only), then the paths ``sites`` chooses
        found: list[_sites.Site] = []
        jax.eval_shape(_adapters.bind(static.model, dynamic.model, record=found), dynamic.key, dynamic.inputs)
        chosen = _sites.resolve(static.sites, found)
    per_sample_fn = _adapters.bind(static.model, dynamic.model, chosen)
    reducer: ClassificationStats | RegressionStats
    if static.task == "classification":
        reducer = ClassificationStats(outputs=static.outputs, labels=dynamic.labels)
    else:
        reducer = RegressionStats(
            static.heteroscedastic, dynamic.tau, dynamic.targets, dynamic.target_mean, dynamic.target_std
        )

    leaves, treedef = jax.tree.flatten(dynamic.inputs)

    def per_sample(sample_key: jax.Array) -> Any:
        if static.function_samples:  # every example runs as a batch of one under the sample's (shared) masks
            call = lambda k, batch: per_sample_fn(k, jax.tree.unflatten(treedef, batch))
            return _function_samples.shared_masks(call, sample_key, leaves, (0,) * len(leaves))
        return per_sample_fn(sample_key, dynamic.inputs)

    def draw(into: ClassificationStats | RegressionStats | None) -> Any:
        return _sampling.run(
            per_sample, dynamic.key, static.num_samples, static.chunk_size, into, static.mesh, static.mesh_axis
        )

    if not static.return_samples:
        return draw(reducer)
    samples = draw(None)  # every sample is kept, then summarised in one update
    summary = reducer.finalize(
        reducer.update(reducer.init(jax.eval_shape(lambda: samples)), samples), static.num_samples
    )
    return dataclasses.replace(summary, samples=samples)


def predict(
    model: Callable[..., Any] | Any,
    inputs: Any,
    *,
    key: jax.Array,
    num_samples: int,
    task: Literal["classification", "regression"] = "classification",
    variables: Any = None,
    chunk_size: int | None = None,
    labels: jax.typing.ArrayLike | None = None,
    targets: jax.typing.ArrayLike | None = None,
    tau: jax.typing.ArrayLike | None = None,
    heteroscedastic: bool = False,
    target_mean: jax.typing.ArrayLike = 0.0,
    target_std: jax.typing.ArrayLike = 1.0,
    outputs: Literal["logits", "probs"] = "logits",
    return_samples: bool = False,
    rng_collection: str = "dropout",
    apply_kwargs: Mapping[str, Any] | None = None,
    mode_attributes: Mapping[str, Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    mesh_axis: str | None = None,
    function_samples: bool = False,
    sites: str | Sequence[str] | Callable[[str], Any] | None = None,
) -> ClassificationPrediction | RegressionPrediction:
    """MC-dropout prediction (Gal & Ghahramani 2016): ``num_samples`` stochastic passes, summarised.

    Three kinds of model are accepted, each with parameters shared by every sample and one dropout key per sample
    (``jaxdrop.fold_in(key, i)`` for sample ``i``, whatever the chunking):

    - a function ``fn(key, inputs, **apply_kwargs)`` (or a callable pytree such as an equinox model, whose arrays
      are traced);
    - a ``flax.linen`` module with ``variables``: ``model.apply(variables, inputs, rngs={rng_collection: key_i},
      **apply_kwargs)``. Pass the flags of *evaluation* mode (``apply_kwargs={"train": False}``): the model is
      traced inside `jaxdrop.stochastic()`, which switches jaxdrop's Dropout layers on and leaves BatchNorm (and
      every other layer) in evaluation mode. Flax's own ``nn.Dropout`` is not switched on by it: for such a model
      either swap in ``jaxdrop.linen.Dropout`` or, only if it has no BatchNorm-like state, pass
      ``{"train": True}``;
    - a ``flax.nnx`` module: every RNG stream tagged ``rng_collection`` (or ``"default"``, where nnx falls back)
      is re-keyed per sample (the stream at state path ``"drop1/rngs/key"`` gets
      ``fold_in(key_i, "drop1/rngs/key")``, count 0) and every sub-module's ``mode_attributes`` (default
      ``{"deterministic": False}``) are set on a copy; the module itself (its RNG counts included) is left
      untouched, so a fixed ``key`` gives a fixed result. Its state is read on every call, so parameters updated
      in place (``model.linear.kernel[...] = ...``, ``nnx.update``) are used by the next call.

    If no output depends on the key (dropout is off), every sample is the same and an `IdenticalSamplesWarning`
    names the likely causes.

    With ``chunk_size``, the summaries are accumulated chunk by chunk (sums, a Chan et al. merge for the variance
    and a running ``logsumexp`` for log-likelihoods): memory is that of one chunk, whatever ``num_samples``. On CPU
    a chunk of 10-100 samples is often also faster than one large ``vmap`` (the chunk stays in cache).

    It is compiled once per model and options (arrays traced, other arguments static). Arrays a function reads
    without taking them as arguments (closed over, globals) are baked into the compiled program: each call checks
    whether they are still the same objects and, if one was replaced, compiles again and warns once
    (`RecompileWarning`); pass parameters that change in ``inputs`` or ``apply_kwargs`` to compile once (see
    `sample()`). A linen module's ``variables`` are arguments already.

    Args:
      model: the function or module, as above.
      inputs: the model's input (any pytree), shared by every sample.
      key: a typed or legacy PRNG key.
      num_samples: number of MC samples ``T >= 1`` (Gal & Ghahramani use 10,000 for regression, 50-100 is common).
      task: ``"classification"`` (outputs on the last axis are classes) or ``"regression"``.
      variables: a linen module's variables (``model.init(...)``); only for linen.
      chunk_size: samples evaluated at once (see `sample()`); ``None``: all at once.
      labels: integer class labels (the batch shape), for the per-example NLL of the predictive mean
        (``-log mean_t p_t(label)``, computed with ``logsumexp``). Not range-checked here (the number of classes
        is only known when tracing); ``jaxdrop.uncertainty.nll`` checks it.
      targets: regression targets in original units (one prediction's shape), for the test log-likelihood.
      tau: model precision (inverse observation noise variance, in original units): aleatoric variance ``1/tau``.
      heteroscedastic: the model returns ``(mean, log_variance)``; aleatoric variance is ``mean_t exp(log_var_t)``.
      target_mean, target_std: statistics the targets were standardised with; samples are mapped back to
        original units (``y * target_std + target_mean``) before every regression summary.
      outputs: whether a classifier returns ``"logits"`` (default, normalised with ``log_softmax``) or
        ``"probs"``.
      return_samples: also return the raw samples (memory then grows with ``num_samples``).
      rng_collection: the dropout RNG collection (linen) or stream tag (nnx).
      apply_kwargs: extra keyword arguments of the call (``train=False``, a parameter tree, ...); arrays are traced.
      mode_attributes: nnx only: attributes set on every sub-module that has them to turn dropout on.
      mesh, mesh_axis: split the samples over a device mesh axis (see `sample()`).
      function_samples: every input of the batch gets the same masks within a sample (each sample is one function
        drawn from the approximate posterior; see `sample()`): an input's samples do not depend on the rest of the
        batch. The batch is axis 0 of every array in ``inputs``; the model must treat examples independently.
      sites: per-site MC for a linen or nnx model: only the chosen dropout sites sample, every other layer keeps the
        mode the call gives it. ``"last"`` (the last dropout site in call order), a module path or shell pattern
        (``"head/*"``, paths as `jaxdrop.inspect` prints them), a sequence of them, or a predicate
        ``path -> bool``. The sites are found by tracing the model once; with evaluation flags, everything before
        the first chosen site does not depend on the key and is computed once. Flax's own ``linen.Dropout``
        cannot be switched on from outside and choosing one raises (swap in ``jaxdrop.linen.Dropout``); flax's
        ``nnx.Dropout`` is switched on through ``mode_attributes``, set on the chosen sites only (the other
        sites get the opposite bool, ``deterministic=True``). ``None`` (default): every jaxdrop layer samples.

    Returns:
      A `ClassificationPrediction` or `RegressionPrediction` (a pytree).

    Raises:
      TypeError: a bad ``model``, ``key``, ``num_samples``/``chunk_size``/``function_samples``/``sites`` type, or an
        output that is not the expected array (pair of arrays for a heteroscedastic head).
      ValueError: ``num_samples < 1``, ``chunk_size < 1``, unknown ``task``/``outputs``, ``tau``/``target_std``
        not positive, ``labels``/``targets`` whose shape does not match the predictions, ``targets`` without a
        noise model, missing linen ``variables``, an nnx module without dropout streams, ``sites`` that choose no
        site, a flax ``linen.Dropout`` or are given for a function model, ``inputs`` whose arrays do not share a
        batch size (with ``function_samples``).

    Warns:
      IdenticalSamplesWarning: no output depends on the key, so every sample is the same (dropout is off).
      RecompileWarning: arrays the function reads from outside its arguments changed since it was compiled.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> w = jnp.array([[1.0, -1.0], [0.5, 0.5]])
      >>> def classifier(key, x):
      ...     return jaxdrop.dropout(x, 0.5, key=key) @ w
      >>> x = jnp.ones((3, 2))
      >>> result = jaxdrop.mc.predict(classifier, x, key=jax.random.key(0), num_samples=100, chunk_size=32)
      >>> result.probs.shape, result.mutual_information.shape
      ((3, 2), (3,))
      >>> bool(jnp.allclose(result.probs.sum(-1), 1.0)) and bool((result.mutual_information > 0).all())
      True
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    chunk = _sampling.chunk_length(chunk_size, num_samples)
    _checks.choice(task, TASKS, "task")
    _checks.choice(outputs, OUTPUTS, "outputs")
    heteroscedastic = _checks.static_bool(heteroscedastic, "heteroscedastic")
    return_samples = _checks.static_bool(return_samples, "return_samples")
    mesh_axis = _sampling.check_mesh(mesh, mesh_axis)
    key = _checks.key(key)
    if task == "classification":
        if targets is not None or tau is not None or heteroscedastic:
            raise ValueError(
                "`targets`, `tau` and `heteroscedastic` are regression options; for "
                "task='classification' pass `labels`."
            )
        if labels is not None:
            labels = jnp.asarray(labels)
            if not jnp.issubdtype(labels.dtype, jnp.integer):
                raise TypeError(f"`labels` must be integer class indices; got dtype {labels.dtype}.")
    elif labels is not None:
        raise ValueError("`labels` is a classification option; for task='regression' pass `targets`.")
    if targets is not None:
        targets = _checks.floating_array(targets, "targets")
    tau = None if tau is None else _checks.positive(tau, "tau")
    target_std = _checks.positive(target_std, "target_std")
    target_mean = jnp.asarray(target_mean, jnp.float32)
    function_samples = _checks.static_bool(function_samples, "function_samples")
    if function_samples:
        leaves = jax.tree.leaves(inputs)
        _function_samples.check_batch(leaves, (0,) * len(leaves), "inputs")
    sites = _sites.check(sites)
    model_static, model_arrays = _adapters.split_model(model, variables, rng_collection, apply_kwargs, mode_attributes)
    if sites is not None and isinstance(model_static, _adapters.FunctionModel):
        raise ValueError(
            f"`sites={sites!r}` chooses dropout layers of a linen or nnx model by module path; a function model "
            f"has no module paths. In a function you choose the sampling sites yourself: call "
            f"`jaxdrop.dropout(h, rate, key=key)` (the functional API, which `jaxdrop.stochastic()` does not switch) "
            f"only where the model should sample, or wrap the model in a linen or nnx module."
        )
    static = _Static(
        model_static,
        num_samples,
        chunk,
        task,
        outputs,
        heteroscedastic,
        return_samples,
        mesh,
        mesh_axis,
        function_samples,
        sites,
    )
    arrays = _Arrays(model_arrays, inputs, key, labels, targets, tau, target_mean, target_std)
    return _closures.call_jitted(_predict_impl, static, arrays, model, _adapters.user_objects(model_static))
