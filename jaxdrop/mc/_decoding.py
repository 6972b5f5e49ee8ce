"""MC dropout for autoregressive models: ``T`` dropout samples decoded together, each with its own key-value cache.

Sample ``i`` is the model with the dropout key ``fold_in(key, i)`` (as in `sample()`), fed one token at a time
through its decoding cache. Two ways to turn a sample's key into the key of each step (``masks=``):

- ``"fixed"``: the same key at every step, so a dropout layer that draws a mask for one token's activations draws
  the same mask at every position. The sample is then one network, a function of the whole sequence: dropping a
  unit at every position is dropping a row of the weights, the variational reading of dropout (Gal & Ghahramani
  2016, "A Theoretically Grounded Application of Dropout in Recurrent Neural Networks", NeurIPS). Feeding the
  prompt token by token and then decoding gives exactly the log-probabilities of scoring the whole sequence with
  that network; a full-sequence forward pass computes the same function when its masks are broadcast over the
  sequence axis (``broadcast_dims=(1,)``: the mask of a ``(B, L, D)`` activation is the ``(B, 1, D)`` mask).
- ``"per_step"``: the key of position ``t`` is ``fold_in(key_i, t)``: a fresh mask per position, as the model saw
  in training. A sample is still deterministic given its key and the positions (prefill + decode == scoring), but
  its tokens are perturbed independently, so it is not one network.

The prompt is always fed one token at a time (the prefill is ``P`` sequential steps, not one parallel pass): that is
the only order that every decoding cache accepts (flax's attention takes one token per call with ``decode=True``)
and that gives the same masks in the prefill as in decoding.

Samples are chunked like `sample()`: ``chunk_size`` samples ride in one ``vmap`` and ``lax.scan`` runs over chunks.
Scoring known tokens (`score()`) and per-sample decoding run each chunk through the whole sequence, so only
``chunk_size`` caches exist at a time. Decoding from the MC-mean predictive needs every sample's prediction at every
step, so all ``T`` caches are kept (``T`` x the cache) and ``chunk_size`` bounds the activations of each step.
A cache leaf that does not differ between samples (a position index) is carried once, not per sample.

With an end token, the loop over positions stops once every row has ended (`_over_positions`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks, _mode, _stats
from jaxdrop.keys import fold_in
from jaxdrop.mc import _adapters, _closures, _sampling
from jaxdrop.mc._sampling import StaticTree

MASKS = ("fixed", "per_step")
PREDICTIVES = ("mean", "per_sample")
STRATEGIES = ("greedy", "sample")

Step = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]  # (cache, tokens (B, 1), key) -> logits, cache


class SequenceScores(NamedTuple):
    """Per-token Monte Carlo scores along sequences: entry ``n`` scores token ``n + 1`` given tokens ``0..n``.

    Attributes:
      sample_log_probs: ``(T, ..., B, N - 1)`` float32, ``log p_i(token_{n+1} | tokens_{<=n})`` under sample ``i``.
        Their sum over valid positions is sample ``i``'s sequence log-likelihood;
        `jaxdrop.uncertainty.sequence_log_likelihood` turns them into that of the MC mixture.
      sample_entropy: ``(T, ..., B, N - 1)`` float32, the entropy (nats) of sample ``i``'s next-token distribution.
      predictive_entropy: ``(B, N - 1)`` float32, ``H[mean_i p_i]``: total uncertainty of the MC-mean next-token
        distribution (``None`` for per-sample decoding, where each sample follows its own tokens).
      mutual_information: ``(B, N - 1)`` float32, ``H[mean_i p_i] - mean_i H[p_i]`` (BALD, Houlsby et al. 2011):
        the samples' disagreement, the epistemic part (``None`` for per-sample decoding).
      valid: boolean, the shape of ``sample_log_probs`` without ``T`` (per-sample decoding: with it); False for
        positions after the end token, where every other field holds 0.
    """

    sample_log_probs: jax.Array
    sample_entropy: jax.Array
    predictive_entropy: jax.Array | None
    mutual_information: jax.Array | None
    valid: jax.Array

    @property
    def expected_entropy(self) -> jax.Array:
        """``mean_i H[p_i]``: the aleatoric part (the samples' own uncertainty, averaged)."""
        return self.sample_entropy.mean(0)


class Generation(NamedTuple):
    """What `decode()` returns.

    Attributes:
      tokens: int32 ``(B, max_length)`` (MC-mean decoding) or ``(T, B, max_length)`` (per sample): the prompt then
        the generated tokens; after an end token, the end token again.
      lengths: int32 ``(B,)`` or ``(T, B)``: tokens up to and including the first generated end token
        (``max_length`` when none was generated).
      scores: the `SequenceScores` of every token after the first (the prompt's included) under the samples.
    """

    tokens: jax.Array
    lengths: jax.Array
    scores: SequenceScores


# --- the three model interfaces, each as a static (hashable) part and arrays -----------------------------------


class _FunctionStep(NamedTuple):
    fn_and_args: StaticTree  # ``(step, params, apply_kwargs)`` without their arrays


class _LinenStep(NamedTuple):
    module: Any
    rng_collection: str
    kwargs: StaticTree
    rest: StaticTree  # the variables other than "cache", without their arrays


class _NnxStep(NamedTuple):
    graphdef: Any
    kwargs: StaticTree


_StepStatic = _FunctionStep | _LinenStep | _NnxStep


def _split_model(
    model: Any,
    params: Any,
    variables: Any,
    cache: Any,
    rng_collection: str,
    apply_kwargs: Mapping[str, Any] | None,
) -> tuple[_StepStatic, Any, Any]:
    """``(static, arrays, cache)`` of ``model``: ``_bind(static, arrays)`` is ``step(cache, tokens, key)``."""
    if apply_kwargs is not None and not isinstance(apply_kwargs, Mapping):
        raise TypeError(
            f"`apply_kwargs` must be a mapping of keyword arguments or None; got {_checks.describe(apply_kwargs)}."
        )
    kwargs = dict(apply_kwargs or {})
    if _adapters._is_instance(model, "flax.linen"):
        for name, value in (("params", params), ("cache", cache)):
            if value is not None:
                raise ValueError(
                    f"`{name}` is for a step function; a linen module takes `variables=` (with its 'cache' "
                    f"collection); got `{name}` of type {type(value).__name__}."
                )
        if not isinstance(variables, Mapping) or "cache" not in variables:
            found = sorted(variables) if isinstance(variables, Mapping) else _checks.describe(variables)
            raise ValueError(
                f"`variables` must hold the linen module's 'cache' collection (flax's decoding cache): initialise "
                f"the module with `decode=True` on a (batch, max_length) input, `variables = model.init(...)`; got "
                f"collections {found}."
            )
        rest = {name: value for name, value in variables.items() if name != "cache"}
        rest_static, rest_arrays = _sampling.split_static(rest)
        kwargs_static, kwargs_arrays = _sampling.split_static(kwargs)
        static = _LinenStep(model, rng_collection, kwargs_static, rest_static)
        return static, (kwargs_arrays, rest_arrays), variables["cache"]
    if variables is not None:
        raise ValueError(
            f"`variables` is only for linen modules; a step function takes `params=` and `cache=`, an nnx module "
            f"carries its own (got a {type(model).__name__})."
        )
    if _adapters._is_instance(model, "flax.nnx"):
        for name, value in (("params", params), ("cache", cache)):
            if value is not None:
                raise ValueError(
                    f"`{name}` is for a step function; an nnx module carries its parameters and its decoding cache "
                    f"(`nnx.Cache` variables, from `init_cache`); got `{name}` of type {type(value).__name__}."
                )
        return _split_nnx(model, rng_collection, kwargs)
    if not callable(model):
        raise TypeError(
            f"`model` must be a step function `step(params, cache, tokens, key) -> (logits, cache)`, a flax linen "
            f"module or a flax nnx module; got {type(model).__name__}."
        )
    if cache is None:
        raise ValueError(
            "`cache` is required for a step function: the initial decoding cache (a pytree of arrays for the "
            "prompt's batch, with room for `max_length` tokens) that `step(params, cache, tokens, key)` updates."
        )
    fn_static, fn_arrays = _sampling.split_static((model, params, kwargs))
    return _FunctionStep(fn_static), fn_arrays, cache


def _split_nnx(model: Any, rng_collection: str, kwargs: dict) -> tuple[_NnxStep, Any, Any]:
    from flax import nnx

    streams = nnx.Any(nnx.WithTag(rng_collection), nnx.WithTag("default"))
    split: tuple[Any, ...] = nnx.split(
        model, nnx.Cache, nnx.All(nnx.RngKey, streams), nnx.All(nnx.RngCount, streams), ...
    )
    graphdef, cache, stream_keys, stream_counts, rest = split
    if not jax.tree.leaves(cache):
        raise ValueError(
            "`model` (an nnx module) has no decoding cache (`nnx.Cache` variables): build its attention with "
            "`decode=True` and call `init_cache((batch, max_length, features))` on it before decoding."
        )
    if not jax.tree.leaves(stream_keys):
        raise ValueError(
            f"`model` (an nnx module) has no RNG stream tagged {rng_collection!r} (or 'default'), so every MC sample "
            f"would be identical. Build its dropout with `rngs=nnx.Rngs(..., {rng_collection}=seed)` or pass "
            f"`rng_collection=` the stream it uses."
        )
    kwargs_static, kwargs_arrays = _sampling.split_static(kwargs)
    return _NnxStep(graphdef, kwargs_static), (kwargs_arrays, stream_keys, stream_counts, rest), cache


def _bind(static: _StepStatic, arrays: Any) -> Step:
    """``step(cache, tokens, key) -> (logits, cache)`` of a model split by ``_split_model``."""
    if isinstance(static, _FunctionStep):
        fn, params, kwargs = _sampling.join_static(static.fn_and_args, arrays)
        return lambda cache, tokens, key: fn(params, cache, tokens, key, **kwargs)
    if isinstance(static, _LinenStep):
        kwargs_arrays, rest_arrays = arrays
        kwargs = _sampling.join_static(static.kwargs, kwargs_arrays)
        rest = _sampling.join_static(static.rest, rest_arrays)
        module, collection = static.module, static.rng_collection

        def linen_step(cache: Any, tokens: jax.Array, key: jax.Array) -> tuple[jax.Array, Any]:
            logits, mutated = module.apply(
                {**rest, "cache": cache}, tokens, rngs={collection: key}, mutable=["cache"], **kwargs
            )
            return logits, mutated["cache"]

        return linen_step
    kwargs_arrays, stream_keys, stream_counts, rest = arrays
    kwargs = _sampling.join_static(static.kwargs, kwargs_arrays)

    def nnx_step(cache: Any, tokens: jax.Array, key: jax.Array) -> tuple[jax.Array, Any]:
        from flax import nnx

        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)
        # Each stream restarts from fold_in(step key, its path) with count 0 at every step: the same step key gives
        # the same masks (``masks="fixed"``), as in ``mc.predict``'s nnx adapter.
        keys = jax.tree_util.tree_map_with_path(lambda path, _: fold_in(key, _adapters._stream_name(path)), stream_keys)
        counts = jax.tree.map(jnp.zeros_like, stream_counts)
        module = nnx.merge(static.graphdef, cache, keys, counts, rest)
        module.set_attributes(deterministic=False, decode=True, raise_if_not_found=False)
        logits = module(tokens, **kwargs)
        return logits, nnx.state(module, nnx.Cache)

    return nnx_step


# --- one token through a sample's step ----------------------------------------------------------------------------


def _feed(step: Step, cache: Any, token: jax.Array, position: jax.Array, key: jax.Array, per_step: bool) -> Any:
    """``(log_probs (B, V) float32, cache)`` after feeding ``token`` (B,) at ``position`` with the sample's ``key``."""
    step_key = fold_in(key, position) if per_step else key
    logits, cache = step(cache, token[:, None], step_key)
    logits = logits[:, -1] if logits.ndim == 3 else logits
    return jax.nn.log_softmax(_stats.as_float(logits), axis=-1), cache


def _choose(log_probs: jax.Array, key: jax.Array, position: jax.Array, greedy: bool, temperature: jax.Array) -> Any:
    if greedy:
        return jnp.argmax(log_probs, -1).astype(jnp.int32)
    return jax.random.categorical(fold_in(key, "tokens", position), log_probs / temperature).astype(jnp.int32)


class _Options(NamedTuple):
    """The jit-static options of the decoding loops."""

    model: _StepStatic
    num_samples: int
    chunk_size: int
    length: int  # the output length N (the prompt's length for scoring)
    prompt_length: int
    per_step: bool
    predictive: str  # "mean", "per_sample" or "score"
    greedy: bool
    end_token: int | None


class _Arrays(NamedTuple):
    model: Any
    cache: Any
    prompt: jax.Array
    key: jax.Array
    temperature: jax.Array


def _next_token(
    options: _Options, tokens: jax.Array, position: jax.Array, chosen: jax.Array, done: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The token at ``position + 1`` (forced inside the prompt), the rows still valid, and the updated tokens/done."""
    forced = position + 1 < options.prompt_length
    following = jnp.where(forced, tokens[:, jnp.minimum(position + 1, options.prompt_length - 1)], chosen)
    valid = ~done
    if options.end_token is not None:
        following = jnp.where(done, options.end_token, following)
        done = done | (~forced & (following == options.end_token))
    return following, valid, tokens.at[:, position + 1].set(following), done


def _start(options: _Options, prompt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The token buffer (the prompt, then the end token: what every position after a row's end holds, so the
    positions an early stop skips are already right) and no row done."""
    batch = prompt.shape[0]
    fill = 0 if options.end_token is None else options.end_token
    tokens = jnp.full((batch, options.length), fill, jnp.int32).at[:, : options.prompt_length].set(prompt)
    return tokens, jnp.zeros((batch,), bool)


def _lengths(valid: jax.Array) -> jax.Array:
    """Tokens up to and including the first generated end token: the first token and every valid one after it."""
    return 1 + valid.sum(-1).astype(jnp.int32)


def _masked(options: _Options, scores: dict, valid: jax.Array) -> dict:
    """Scores of the positions after a row's end token set to 0 (the end token repeats with certainty): the values
    the positions skipped by an early stop keep, so a row reads the same whether or not the loop stopped."""
    if options.end_token is None:
        return scores
    return {name: value if name == "valid" else jnp.where(valid, value, 0) for name, value in scores.items()}


class _Carry(NamedTuple):
    caches: Any
    tokens: jax.Array
    done: jax.Array  # the rows that produced the end token (per sample and row, for per-sample decoding)


def _over_positions(options: _Options, body: Callable[[_Carry, jax.Array], Any], carry: _Carry) -> Any:
    """``body(carry, position) -> (carry, outputs)`` for positions ``0..N-2``: the last carry, the outputs stacked on
    a leading position axis, and the number of positions run.

    Without an end token, a ``lax.scan`` (reverse-mode differentiable). With one, a ``lax.while_loop`` writing into
    preallocated outputs that stops once every row is done (``carry.done`` all True): the steps after the last row's
    end token are not run, their outputs keep their zeros (`_masked`) and their tokens the end token (`_start`).
    Under an outer ``vmap`` that batches ``done`` (a ``vmap`` of `decode` over prompts), JAX runs the loop until
    every element is done and selects the finished elements' carries at each step: the same outputs, an extra
    select of each carry (the caches included) per step.
    """
    steps = options.length - 1
    if options.end_token is None:
        carry, outputs = lax.scan(body, carry, jnp.arange(steps, dtype=jnp.int32))
        return carry, outputs, jnp.asarray(steps, jnp.int32)
    first = jnp.zeros((), jnp.int32)
    shapes = jax.eval_shape(lambda c: body(c, first)[1], carry)
    buffers = jax.tree.map(lambda s: jnp.zeros((steps, *s.shape), s.dtype), shapes)

    def unfinished(loop: Any) -> jax.Array:
        position, carry, _ = loop
        return (position < steps) & ~jnp.all(carry.done)

    def advance(loop: Any) -> Any:
        position, carry, buffers = loop
        carry, out = body(carry, position)
        write = lambda buffer, value: lax.dynamic_update_index_in_dim(buffer, value, position, 0)
        return position + 1, carry, jax.tree.map(write, buffers, out)

    position, carry, buffers = lax.while_loop(unfinished, advance, (first, carry, buffers))
    return carry, buffers, position


def _token_scores(log_probs: jax.Array, following: jax.Array) -> dict:
    """The log-probability of the token that follows and the entropy of each next-token distribution."""
    picked = jnp.take_along_axis(log_probs, following[..., None], -1)[..., 0]
    return {"log_prob": picked, "entropy": _stats.entropy_from_log_probs(log_probs)}


def _sample_keys(key: jax.Array, num_samples: int, chunk_size: int) -> list[jax.Array]:
    """The keys ``fold_in(key, i)`` of `sample()`, as groups ``(num_chunks, chunk)``: full chunks, then the rest."""
    keys = jax.vmap(fold_in, in_axes=(None, 0))(key, jnp.arange(num_samples, dtype=jnp.uint32))
    num_full, remainder = divmod(num_samples, chunk_size)
    groups = [keys[: num_full * chunk_size].reshape(num_full, chunk_size)] if num_full else []
    if remainder:
        groups.append(keys[num_full * chunk_size :].reshape(1, remainder))
    return groups


def _broadcast(tree: Any, size: int) -> Any:
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (size, *jnp.shape(leaf))), tree)


def _varying_leaves(options: _Options, step: Step, arrays: _Arrays) -> tuple[bool, ...]:
    """Per leaf of the cache: whether it differs between samples, i.e. whether the step computes its new value from
    the key or from leaves that differ (a fixpoint of a forward walk over one step's jaxpr, as
    ``_sampling._depends_on_key``; an equation with such an input taints all its outputs, so the answer errs towards
    True). Warns (`IdenticalSamplesWarning`) when the logits depend on neither: every sample would be the same.

    The other leaves (a position counter: the explicit cache's index, flax's ``cache_index``) are carried once for
    all samples. With a sample axis on the index, ``vmap`` turns the ``dynamic_update_slice`` that writes the new key
    and value into the cache into a scatter; with it shared, XLA compiles the write as a ``dynamic-update-slice``
    (tests/test_mc_decoding.py checks the compiled program).
    """
    leaves, treedef = jax.tree.flatten(arrays.cache)
    position = jnp.zeros((), jnp.int32)

    def fed(key: jax.Array, leaves: list) -> list:  # the cache is an argument: nnx mutates it in place
        cache = jax.tree.unflatten(treedef, leaves)
        log_probs, cache = _feed(step, cache, arrays.prompt[:, 0], position, key, options.per_step)
        return [log_probs, *jax.tree.leaves(cache)]

    jaxpr = jax.make_jaxpr(fed)(arrays.key, leaves).jaxpr
    key_var, leaf_vars = jaxpr.invars[0], jaxpr.invars[1:]
    log_probs_var, new_leaf_vars = jaxpr.outvars[0], jaxpr.outvars[1:]
    varying = [False] * len(leaves)
    while True:
        tainted = {id(key_var)} | {id(var) for var, differs in zip(leaf_vars, varying, strict=True) if differs}
        for eqn in jaxpr.eqns:
            if any(id(var) in tainted for var in eqn.invars):
                written = [var for var in eqn.invars if isinstance(var.aval, jax.ref.AbstractRef)]
                tainted.update(id(var) for var in [*eqn.outvars, *written])
        updated = [differs or id(var) in tainted for differs, var in zip(varying, new_leaf_vars, strict=True)]
        if updated == varying:
            break
        varying = updated
    if id(log_probs_var) not in tainted:  # `sample()`'s warning, for a function whose output ignores the key
        _sampling._warn_if_key_unused(lambda key: jnp.zeros(()), arrays.key, options.num_samples)
    return tuple(varying)


def _sample_axes(cache: Any, varying: tuple[bool, ...]) -> Any:
    """``vmap`` axes of the cache: 0 for the leaves that differ between samples, None for the shared ones."""
    return jax.tree.unflatten(jax.tree.structure(cache), [0 if differs else None for differs in varying])


def _per_sample_cache(cache: Any, varying: tuple[bool, ...], size: int) -> Any:
    """The cache of ``size`` samples: the leaves that differ between samples broadcast on a leading axis."""
    leaves, treedef = jax.tree.flatten(cache)
    stacked = [_broadcast(leaf, size) if differs else leaf for leaf, differs in zip(leaves, varying, strict=True)]
    return jax.tree.unflatten(treedef, stacked)


# --- chunk-outer: scoring and per-sample decoding (``chunk_size`` caches at a time) -------------------------------


def _chunk(
    options: _Options, step: Step, arrays: _Arrays, varying: tuple[bool, ...], keys: jax.Array
) -> tuple[jax.Array, dict]:
    """A chunk of samples (``keys`` (C,)) through the whole sequence, one ``vmap`` per step, each sample with its own
    cache: scoring (every sample reads the given tokens) or per-sample decoding (each its own tokens). Returns the
    next-token probabilities summed over the chunk ``(N - 1, B, V)`` (scoring; else a 0) and per sample ``tokens``
    ``(C, B, N)``, ``steps`` and per-token scores ``(C, B, N - 1)``.

    The loop over positions is outside the samples' ``vmap``: an early stop (`_over_positions`) then waits for every
    row of every sample of the chunk and selects nothing per sample.
    """
    size, scoring = keys.shape[0], options.predictive == "score"
    tokens, done = _start(options, arrays.prompt)
    if not scoring:
        tokens, done = _broadcast(tokens, size), _broadcast(done, size)
    feed = lambda key, cache, token, position: _feed(step, cache, token, position, key, options.per_step)
    cache_axes = _sample_axes(arrays.cache, varying)
    feed = jax.vmap(feed, (0, cache_axes, None if scoring else 0, None), (0, cache_axes))

    def body(carry: _Carry, position: jax.Array) -> Any:
        log_probs, caches = feed(keys, carry.caches, carry.tokens[..., position], position)
        if scoring:
            following = jnp.broadcast_to(carry.tokens[:, position + 1], log_probs.shape[:-1])
            scores = {**_token_scores(log_probs, following), "probs": jnp.exp(log_probs).sum(0)}
            return carry._replace(caches=caches), scores

        def next_token(log_probs: jax.Array, key: jax.Array, tokens: jax.Array, done: jax.Array) -> Any:
            chosen = _choose(log_probs, key, position, options.greedy, arrays.temperature)
            return _next_token(options, tokens, position, chosen, done)

        following, valid, tokens, done = jax.vmap(next_token)(log_probs, keys, carry.tokens, carry.done)
        scores = _masked(options, {**_token_scores(log_probs, following), "valid": valid}, valid)
        return _Carry(caches, tokens, done), scores

    carry, per_position, steps = _over_positions(
        options, body, _Carry(_per_sample_cache(arrays.cache, varying, size), tokens, done)
    )
    probs = per_position.pop("probs", jnp.zeros((), jnp.float32))
    per_sample = {name: jnp.moveaxis(value, 0, -1) for name, value in per_position.items()}  # (C, B, N - 1)
    tokens = carry.tokens if not scoring else _broadcast(carry.tokens, size)
    return probs, {**per_sample, "tokens": tokens, "steps": jnp.broadcast_to(steps, (size,))}


def _chunk_outer(options: _Options, step: Step, arrays: _Arrays) -> tuple[jax.Array, dict]:
    """`_chunk` over the chunks of samples (``lax.scan`` over full chunks, then the remainder): the probabilities
    summed over all samples, and the per-sample outputs with a leading sample axis ``T``."""
    varying = _varying_leaves(options, step, arrays)
    run = lambda keys: _chunk(options, step, arrays, varying, keys)

    def add_chunk(total: jax.Array, keys: jax.Array) -> tuple[jax.Array, dict]:
        summed, out = run(keys)
        return total + summed, out

    total: Any = None
    parts = []
    for keys in _sample_keys(arrays.key, options.num_samples, options.chunk_size):
        if keys.shape[0] == 1:
            summed, out = run(keys[0])
            stacked = jax.tree.map(lambda x: x[None], out)
        else:
            start = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(run, keys[0])[0])
            summed, stacked = lax.scan(add_chunk, start, keys)
        total = summed if total is None else total + summed
        parts.append(jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), stacked))
    return total, jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def _score_impl(options: _Options, arrays: _Arrays) -> SequenceScores:
    """Teacher forcing: every sample reads the given tokens; chunk-outer, so ``chunk_size`` caches at a time."""
    with _mode.stochastic():
        step = _bind(options.model, arrays.model)
        probs_sum, out = _chunk_outer(options, step, arrays)
    mean_probs = jnp.moveaxis(probs_sum, 0, 1) / options.num_samples  # (B, N - 1, V)
    predictive = _stats.entropy(mean_probs)
    mutual = jnp.maximum(predictive - out["entropy"].mean(0), 0.0)
    valid = jnp.ones(predictive.shape, bool)
    return SequenceScores(out["log_prob"], out["entropy"], predictive, mutual, valid)


def _per_sample_impl(options: _Options, arrays: _Arrays) -> tuple[Generation, jax.Array]:
    """Each sample decodes its own tokens from its own predictive; chunk-outer, ``chunk_size`` caches at a time.
    Also returns, per sample, the positions its chunk ran (an early stop runs fewer)."""
    with _mode.stochastic():
        step = _bind(options.model, arrays.model)
        _, out = _chunk_outer(options, step, arrays)
    scores = SequenceScores(out["log_prob"], out["entropy"], None, None, out["valid"])
    return Generation(out["tokens"], _lengths(out["valid"]), scores), out["steps"]


# --- step-outer: decoding from the MC-mean predictive (every sample's cache alive) --------------------------------


def _map_chunks(chunk: Callable[[Any], Any], keys: jax.Array, caches: Any) -> Any:
    """``lax.map(chunk, (keys, caches))``; a single chunk is called directly: ``lax.map`` would copy every cache
    into the loop and back out at each step (measured: the T = 16 decode at batch 1 took 5.8x one decode so)."""
    if keys.shape[0] > 1:
        return lax.map(chunk, (keys, caches))
    first = lambda tree: jax.tree.map(lambda leaf: leaf[0], tree)
    return jax.tree.map(lambda leaf: leaf[None], chunk((keys[0], first(caches))))


def _mean_impl(options: _Options, arrays: _Arrays) -> tuple[Generation, jax.Array]:
    """Decoding from the MC-mean predictive: step-outer, every sample's cache kept; chunks bound each step's work.
    Also returns the positions run (an early stop runs fewer)."""
    with _mode.stochastic():
        step = _bind(options.model, arrays.model)
        groups = _sample_keys(arrays.key, options.num_samples, options.chunk_size)
        varying = _varying_leaves(options, step, arrays)
        caches = [_broadcast(_per_sample_cache(arrays.cache, varying, g.shape[1]), g.shape[0]) for g in groups]
        cache_axes = _sample_axes(arrays.cache, varying)
        feed = lambda key, cache, token, position: _feed(step, cache, token, position, key, options.per_step)
        feed = jax.vmap(feed, (0, cache_axes, None, None), (0, cache_axes))
        tokens, done = _start(options, arrays.prompt)

        def body(carry: _Carry, position: jax.Array) -> Any:
            token = carry.tokens[:, position]

            def chunk(inputs: Any) -> Any:
                keys, cache = inputs
                return feed(keys, cache, token, position)

            fed = [_map_chunks(chunk, keys, cache) for keys, cache in zip(groups, carry.caches, strict=True)]
            log_probs = jnp.concatenate([lp.reshape(-1, *lp.shape[2:]) for lp, _ in fed])  # (T, B, V)
            mean_probs = jnp.exp(log_probs).mean(0)
            chosen = _choose(jnp.log(mean_probs), arrays.key, position, options.greedy, arrays.temperature)
            following, valid, tokens, done = _next_token(options, carry.tokens, position, chosen, carry.done)
            scores = _token_scores(log_probs, jnp.broadcast_to(following, log_probs.shape[:-1]))
            scores = {**scores, "predictive_entropy": _stats.entropy(mean_probs), "valid": valid}
            return _Carry([cache for _, cache in fed], tokens, done), _masked(options, scores, valid)

        carry, out, steps = _over_positions(options, body, _Carry(caches, tokens, done))
    out = {name: jnp.moveaxis(value, 0, -1) for name, value in out.items()}  # (N - 1, [T,] B) -> ([T,] B, N - 1)
    mutual = jnp.maximum(out["predictive_entropy"] - out["entropy"].mean(0), 0.0)  # after the loop: as `score()`
    scores = SequenceScores(out["log_prob"], out["entropy"], out["predictive_entropy"], mutual, out["valid"])
    return Generation(carry.tokens, _lengths(out["valid"]), scores), steps


# --- argument checks -------------------------------------------------------------------------------------------


def _token_array(value: Any, name: str, min_length: int) -> jax.Array:
    tokens = _checks.integer_array(value, name)
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < min_length:
        raise ValueError(
            f"`{name}` must be an integer array (batch, length) with batch >= 1 and length >= {min_length}; got "
            f"shape {tokens.shape}."
        )
    return tokens.astype(jnp.int32)


def _check_flax_cache(cache: Any, batch: int, length: int, name: str) -> None:
    """A flax-convention cache (``cached_key`` of shape ``(*batch, max_length, heads, depth)``) fits the batch and
    the length: flax's ``dynamic_update_slice`` would silently overwrite the last slot past its capacity."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(cache)[0]:
        names = [str(getattr(entry, "key", getattr(entry, "name", ""))) for entry in path]
        if "cached_key" not in names or np.ndim(leaf) < 4:
            continue
        where = "/".join(n for n in names if n)
        shape = np.shape(leaf)
        if shape[:-3] != (batch,):
            raise ValueError(
                f"`{name}` was built for a batch of {shape[:-3]} ({where} has shape {shape}), but the prompt has "
                f"{batch} row(s); initialise the cache with the prompt's batch size."
            )
        if shape[-3] < length:
            raise ValueError(
                f"`max_length`={length} exceeds the capacity of the decoding cache, {shape[-3]} tokens ({where} "
                f"has shape {shape}); initialise the cache for at least {length} tokens or lower `max_length`."
            )


_CHECKED: dict[Any, int] = {}  # (options, shapes of the arrays) -> vocabulary size, for steps already checked
_MAX_CHECKED = 64


def _check_step(options: _Options, arrays: _Arrays, prompt_name: str, cache_name: str) -> int:
    """Traces one step (shapes only): the logits fit the prompt's batch, the cache keeps its structure; returns V.

    The result is remembered per options and array shapes: tracing the model on every call cost more than the
    decode itself at batch 1 (a 4-layer step: 0.5 s of Python per call on a loaded 2-core CPU).
    """
    leaves, treedef = jax.tree.flatten(arrays)
    try:
        memo_key: Any = (options, treedef, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves))
        if memo_key in _CHECKED:
            return _CHECKED[memo_key]
    except TypeError:  # an unhashable static part: check every time
        memo_key = None
    vocab = _trace_step(options, arrays, prompt_name, cache_name)
    if memo_key is not None:
        if len(_CHECKED) >= _MAX_CHECKED:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[memo_key] = vocab
    return vocab


def _trace_step(options: _Options, arrays: _Arrays, prompt_name: str, cache_name: str) -> int:
    batch = arrays.prompt.shape[0]

    def first_step(arrays: _Arrays) -> tuple[jax.Array, Any]:  # the arrays are arguments: nnx state is traced
        step = _bind(options.model, arrays.model)
        return step(arrays.cache, arrays.prompt[:, :1], fold_in(arrays.key, 0))

    try:
        with _mode.stochastic():
            logits, cache = jax.eval_shape(first_step, arrays)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Feeding the first token of `{prompt_name}` (shape {(batch, 1)}) through the model with its "
            f"`{cache_name}` failed; check that the cache was built for the prompt's batch of {batch} and the model "
            f"takes one token per row. The model raised: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err
    shape = getattr(logits, "shape", None)
    if shape is None or len(shape) not in (2, 3) or shape[0] != batch or (len(shape) == 3 and shape[1] != 1):
        raise ValueError(
            f"The model must return logits of shape (batch, 1, vocab) or (batch, vocab) for one token per row; fed "
            f"a `{prompt_name}` slice of shape {(batch, 1)} it returned "
            f"{shape if shape is not None else type(logits).__name__}."
        )
    given = jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), arrays.cache)
    returned = jax.tree.map(lambda x: (x.shape, x.dtype), cache)
    same_structure = jax.tree.structure(given) == jax.tree.structure(returned)  # type: ignore[operator]
    if not same_structure or jax.tree.leaves(given) != jax.tree.leaves(returned):
        raise ValueError(
            f"`{cache_name}`: the model must return a cache of the same structure, shapes and dtypes as it was "
            f"given (decoding carries it through `lax.scan`); given {given}, returned {returned}."
        )
    return int(shape[-1])


def _check_token_range(tokens: jax.Array, vocab: int, name: str) -> None:
    if not _checks.is_static(tokens) or not tokens.size:
        return
    values = np.asarray(tokens)  # NumPy: inside an outer trace, a jnp reduction of a constant would be traced
    if values.min() < 0 or values.max() >= vocab:
        raise ValueError(
            f"`{name}` must hold token ids in [0, {vocab - 1}] (the model's vocabulary has {vocab}); got values in "
            f"[{values.min()}, {values.max()}]."
        )


def _prepare(
    model: Any,
    tokens: Any,
    tokens_name: str,
    min_length: int,
    *,
    key: Any,
    num_samples: Any,
    chunk_size: Any,
    params: Any,
    variables: Any,
    cache: Any,
    masks: Any,
    rng_collection: Any,
    apply_kwargs: Any,
) -> tuple[_StepStatic, jax.Array, jax.Array, Any, Any, int, int, bool]:
    num_samples = _checks.positive_int(num_samples, "num_samples")
    chunk = _sampling.chunk_length(chunk_size, num_samples)
    if key is None:
        raise ValueError(
            "`key` is required: sample i's dropout key is `fold_in(key, i)`; pass `key=jax.random.key(seed)`."
        )
    key = _checks.key(key)
    per_step = _checks.choice(masks, MASKS, "masks") == "per_step"
    rng_collection = _checks.identifier(rng_collection, "rng_collection")
    tokens = _token_array(tokens, tokens_name, min_length)
    static, model_arrays, cache = _split_model(model, params, variables, cache, rng_collection, apply_kwargs)
    return static, tokens, key, model_arrays, cache, num_samples, chunk, per_step


def score(
    model: Any,
    tokens: Any,
    *,
    key: Any,
    num_samples: int,
    params: Any = None,
    cache: Any = None,
    variables: Any = None,
    masks: str = "fixed",
    chunk_size: int | None = None,
    rng_collection: str = "dropout",
    apply_kwargs: Mapping[str, Any] | None = None,
) -> SequenceScores:
    """Teacher-forced MC-dropout scores of known sequences: per token, the samples' log-probabilities, entropies,
    and the predictive entropy and mutual information of their mean (Gal & Ghahramani 2016; BALD, Houlsby et al.
    2011).

    Each of ``num_samples`` samples (dropout key ``fold_in(key, i)``) reads ``tokens`` one token at a time through
    its own copy of the decoding cache; entry ``n`` scores token ``n + 1`` given tokens ``0..n``. Samples run
    ``chunk_size`` at a time, each chunk through the whole sequence, so memory holds ``chunk_size`` caches plus
    the running mean of the next-token probabilities ``(B, L - 1, V)``.

    Three kinds of model, one token per row per call:

    - a step function ``step(params, cache, tokens, key, **apply_kwargs) -> (logits, cache)`` with ``tokens``
      ``(B, 1)``, logits ``(B, 1, V)`` or ``(B, V)`` and a cache of unchanged structure, shapes and dtypes (pass
      ``params=`` and the initial ``cache=``);
    - a ``flax.linen`` module using flax's decoding cache (``decode=True``, e.g. ``nn.MultiHeadDotProductAttention``)
      with ``variables`` holding its ``"cache"`` collection (``model.init(key, tokens_of_max_length)``); called as
      ``model.apply(variables, tokens, rngs={rng_collection: key}, mutable=["cache"], **apply_kwargs)``;
    - a ``flax.nnx`` module whose attention has a cache (``init_cache``): its ``nnx.Cache`` state is carried, its
      dropout streams re-keyed per step as in `predict()`, and ``deterministic=False, decode=True`` set on a copy.

    Args:
      model: the step function or module.
      tokens: int ``(B, L)``, ``L >= 2``: the sequences to score.
      key: a typed or legacy PRNG key; sample ``i`` uses ``fold_in(key, i)``.
      num_samples: ``T >= 1`` (static).
      params: a step function's parameters (any pytree), shared by the samples.
      cache: a step function's initial cache, for ``B`` rows and at least ``L`` tokens.
      variables: a linen module's variables, with its ``"cache"`` collection.
      masks: ``"fixed"`` (default: the sample's key at every step, one network per sample) or ``"per_step"``
        (``fold_in(key_i, position)``: a fresh mask per position). See the module docs.
      chunk_size: samples evaluated at once; ``None``: all.
      rng_collection: the dropout RNG collection (linen) or stream tag (nnx).
      apply_kwargs: extra keyword arguments of each call; arrays are traced.

    Returns:
      `SequenceScores` with ``(T, B, L - 1)`` sample arrays and ``(B, L - 1)`` mean-predictive arrays (float32).

    Raises:
      TypeError: ``tokens`` not integer, bad ``key``, ``num_samples``, ``chunk_size``, ``masks``, ``model``.
      ValueError: ``tokens`` not ``(B, L)`` with ``L >= 2`` or outside the vocabulary, ``num_samples < 1``,
        ``chunk_size < 1``, an unknown ``masks``, a missing ``cache``/``variables`` cache, a cache built for another
        batch or too few tokens (flax's ``cached_key`` convention), logits of the wrong shape, or a step that
        changes the cache's structure.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> def step(params, cache, tokens, key):  # a bigram model with dropout on its embedding
      ...     hidden = jaxdrop.dropout(params[tokens], 0.5, key=key)
      ...     return hidden @ params.T, cache
      >>> params = jax.random.normal(jax.random.key(0), (5, 8))
      >>> tokens = jnp.array([[0, 1, 2, 3]])
      >>> scores = jaxdrop.mc.score(step, tokens, params=params, cache=(), key=jax.random.key(1), num_samples=8)
      >>> scores.sample_log_probs.shape, scores.mutual_information.shape
      ((8, 1, 3), (1, 3))
    """
    static, tokens, key, model_arrays, cache, num_samples, chunk, per_step = _prepare(
        model, tokens, "tokens", 2, key=key, num_samples=num_samples, chunk_size=chunk_size, params=params,
        variables=variables, cache=cache, masks=masks, rng_collection=rng_collection, apply_kwargs=apply_kwargs,
    )  # fmt: skip
    length = tokens.shape[1]
    _check_flax_cache(cache, tokens.shape[0], length, _cache_name(static))
    options = _Options(static, num_samples, chunk, length, length, per_step, "score", True, None)
    arrays = _Arrays(model_arrays, cache, tokens, key, jnp.ones((), jnp.float32))
    vocab = _check_step(options, arrays, "tokens", _cache_name(static))
    _check_token_range(tokens, vocab, "tokens")
    return _closures.call_jitted(_score_impl, options, arrays, score, _roots(static))


def decode(
    model: Any,
    prompt: Any,
    *,
    key: Any,
    num_samples: int,
    max_length: int,
    params: Any = None,
    cache: Any = None,
    variables: Any = None,
    masks: str = "fixed",
    predictive: str = "mean",
    strategy: str = "greedy",
    temperature: jax.typing.ArrayLike = 1.0,
    end_token: int | None = None,
    chunk_size: int | None = None,
    rng_collection: str = "dropout",
    apply_kwargs: Mapping[str, Any] | None = None,
) -> Generation:
    """MC-dropout decoding: ``T`` dropout samples of an autoregressive model decoded together, with per-token scores.

    The prompt is fed one token at a time (the same masks as in decoding, see the module docs), then tokens are
    generated up to ``max_length`` (the prompt included). Two predictives:

    - ``predictive="mean"``: every sample reads the same tokens, chosen from the MC-mean next-token distribution
      ``mean_i p_i`` (the Bayesian model average over the samples); the scores give the predictive entropy and
      mutual information of every generated token. All ``T`` caches are alive (``T`` x the cache);
      ``chunk_size`` bounds the samples of each step's ``vmap``.
    - ``predictive="per_sample"``: each sample generates its own continuation from its own predictive, chunk by
      chunk (memory: ``chunk_size`` caches).

    ``strategy="greedy"`` takes the most probable token; ``"sample"`` draws from the predictive at ``temperature``
    with ``fold_in(key, "tokens", position)`` (MC-mean) or ``fold_in(key_i, "tokens", position)`` (per sample).

    Args:
      model: a step function, a linen module or an nnx module, as in `score()`.
      prompt: int ``(B, P)``, ``P >= 1``.
      key: a typed or legacy PRNG key; sample ``i``'s dropout key is ``fold_in(key, i)``.
      num_samples: ``T >= 1`` (static).
      max_length: the output length ``N > P`` (static), the prompt included.
      params, cache, variables: the model's, as in `score()`; the cache must hold ``max_length`` tokens.
      masks: ``"fixed"`` or ``"per_step"``, as in `score()`.
      predictive: ``"mean"`` (default) or ``"per_sample"``.
      strategy: ``"greedy"`` (default) or ``"sample"``.
      temperature: ``> 0``, divides the log-probabilities before sampling (``strategy="sample"``).
      end_token: a token id that ends a row: later tokens repeat it, their scores are not ``valid`` and are 0.
        Once every row has ended (per-sample decoding: every row of every sample of a chunk) the loop stops: the
        remaining steps are not run. The loop is then a ``lax.while_loop`` (no reverse-mode ``grad``).
      chunk_size: samples evaluated at once; ``None``: all.
      rng_collection, apply_kwargs: as in `score()`.

    Returns:
      A `Generation`: tokens ``(B, N)`` (``(T, B, N)`` per sample), lengths, and `SequenceScores` over positions
      ``1..N-1`` (prompt positions included, teacher-forced).

    Raises:
      TypeError, ValueError: as `score()`, and ``max_length <= P``, a bad ``predictive``, ``strategy``,
        ``temperature`` or ``end_token``.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxdrop
      >>> def step(params, cache, tokens, key):
      ...     hidden = jaxdrop.dropout(params[tokens], 0.5, key=key)
      ...     return hidden @ params.T, cache
      >>> params = jax.random.normal(jax.random.key(0), (5, 8))
      >>> out = jaxdrop.mc.decode(step, jnp.array([[0, 1]]), params=params, cache=(), key=jax.random.key(1),
      ...                         num_samples=8, max_length=6)
      >>> out.tokens.shape, out.scores.mutual_information.shape
      ((1, 6), (1, 5))
    """
    static, prompt, key, model_arrays, cache, num_samples, chunk, per_step = _prepare(
        model, prompt, "prompt", 1, key=key, num_samples=num_samples, chunk_size=chunk_size, params=params,
        variables=variables, cache=cache, masks=masks, rng_collection=rng_collection, apply_kwargs=apply_kwargs,
    )  # fmt: skip
    batch, prompt_length = prompt.shape
    max_length = _checks.int_in_range(max_length, "max_length", 2)
    if max_length <= prompt_length:
        raise ValueError(
            f"`max_length` counts the prompt's tokens and must be > the prompt's length {prompt_length}, so that at "
            f"least one token is generated; accepted range is [{prompt_length + 1}, ...); got {max_length}."
        )
    predictive = _checks.choice(predictive, PREDICTIVES, "predictive")
    greedy = _checks.choice(strategy, STRATEGIES, "strategy") == "greedy"
    temperature_array = _checks.positive(temperature, "temperature")
    if end_token is not None:
        end_token = _checks.int_in_range(end_token, "end_token", 0)
    _check_flax_cache(cache, batch, max_length, _cache_name(static))
    options = _Options(static, num_samples, chunk, max_length, prompt_length, per_step, predictive, greedy, end_token)
    arrays = _Arrays(model_arrays, cache, prompt, key, temperature_array)
    vocab = _check_step(options, arrays, "prompt", _cache_name(static))
    _check_token_range(prompt, vocab, "prompt")
    if end_token is not None and end_token >= vocab:
        raise ValueError(f"`end_token` must be in [0, {vocab - 1}] (the model's vocabulary); got {end_token}.")
    return _generate(options, arrays)[0]


def _generate(options: _Options, arrays: _Arrays) -> tuple[Generation, jax.Array]:
    """The compiled decode: the `Generation` and the positions its loop ran (per sample for per-sample decoding)."""
    impl = _mean_impl if options.predictive == "mean" else _per_sample_impl
    return _closures.call_jitted(impl, options, arrays, decode, _roots(options.model))


def _cache_name(static: _StepStatic) -> str:
    """The argument that holds the cache, for error messages."""
    return {_LinenStep: "variables", _NnxStep: "model"}.get(type(static), "cache")


def _roots(static: _StepStatic) -> tuple:
    if isinstance(static, _FunctionStep):
        return static.fn_and_args.values()
    return static.kwargs.values()
