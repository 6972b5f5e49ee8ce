"""MC decoding (``jaxdrop.mc.decode``, ``jaxdrop.mc.score``) and the sequence metrics of ``jaxdrop.uncertainty``.

The fixed-mask contract: a sample fed one token at a time with its key at every step computes the same function as
a full-sequence forward pass whose masks are broadcast over the sequence axis (``broadcast_dims=(1,)``), so prefill
+ decode equals scoring the whole sequence with that sample's network. Per-step masks are redrawn at every
position (``fold_in(key_i, position)``) and still give prefill + decode == scoring.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import mc
from jaxdrop import uncertainty as unc

VOCAB, WIDTH, MAX_LENGTH, RATE = 11, 8, 8, 0.3
KEY = jax.random.key(3)


def init_params(key: jax.Array, dtype=jnp.float32) -> dict:
    names = ("embed", "position", "query", "key", "value", "out")
    shapes = ((VOCAB, WIDTH), (MAX_LENGTH, WIDTH), (WIDTH, WIDTH), (WIDTH, WIDTH), (WIDTH, WIDTH), (WIDTH, VOCAB))
    keys = jax.random.split(key, len(names))
    return {n: (jax.random.normal(k, s) * 0.7).astype(dtype) for n, k, s in zip(names, keys, shapes, strict=True)}


def init_cache(batch: int, dtype=jnp.float32) -> dict:
    zeros = jnp.zeros((batch, MAX_LENGTH, WIDTH), dtype)
    return {"keys": zeros, "values": zeros, "index": jnp.zeros((), jnp.int32)}


def _attend(params, x, keys, values, allowed):
    scores = (x @ params["query"]) @ jnp.swapaxes(keys, 1, 2) / math.sqrt(WIDTH)
    weights = jax.nn.softmax(jnp.where(allowed, scores, -1e9).astype(jnp.float32), -1).astype(x.dtype)
    return weights @ values


def step(params, cache, tokens, key):
    """One token per row through an explicit key-value cache; dropout on the embedding and the attention output."""
    index = cache["index"]
    x = params["embed"][tokens] + params["position"][index]
    x = jaxdrop.dropout(x, RATE, key=jaxdrop.fold_in(key, "embed"))
    keys = jax.lax.dynamic_update_slice_in_dim(cache["keys"], x @ params["key"], index, 1)
    values = jax.lax.dynamic_update_slice_in_dim(cache["values"], x @ params["value"], index, 1)
    allowed = (jnp.arange(MAX_LENGTH) <= index)[None, None]
    h = jaxdrop.dropout(_attend(params, x, keys, values, allowed), RATE, key=jaxdrop.fold_in(key, "hidden"))
    return (x + h) @ params["out"], {"keys": keys, "values": values, "index": index + 1}


def forward(params, tokens, key):
    """The same network on a whole sequence, its masks broadcast over the sequence axis (one mask per row)."""
    length = tokens.shape[1]
    x = params["embed"][tokens] + params["position"][:length]
    x = jaxdrop.dropout(x, RATE, key=jaxdrop.fold_in(key, "embed"), broadcast_dims=(1,))
    allowed = jnp.tril(jnp.ones((length, length), bool))[None]
    attended = _attend(params, x, x @ params["key"], x @ params["value"], allowed)
    h = jaxdrop.dropout(attended, RATE, key=jaxdrop.fold_in(key, "hidden"), broadcast_dims=(1,))
    return (x + h) @ params["out"]


def _target_log_probs(logits, tokens):
    log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
    return jnp.take_along_axis(log_probs, tokens[:, 1:, None], -1)[..., 0]


PARAMS = init_params(jax.random.key(0))
PROMPT = jnp.array([[1, 2, 3], [4, 5, 6]], jnp.int32)
TOKENS = jnp.array([[1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1]], jnp.int32)


def _sample_key(i: int) -> jax.Array:
    return jaxdrop.fold_in(KEY, i)


# --- the fixed-mask contract -------------------------------------------------------------------------------------


def test_fixed_masks_score_equals_the_full_sequence_network_of_each_sample():
    # chunks of 3 (one full chunk and a remainder of 1): each sample is still the network of its key
    scores = mc.score(step, TOKENS, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=4, chunk_size=3)
    full_sequence = jax.jit(forward)
    for i in range(4):
        expected = _target_log_probs(full_sequence(PARAMS, TOKENS, _sample_key(i)), TOKENS)
        np.testing.assert_allclose(scores.sample_log_probs[i], expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(scores.sample_log_probs[0], scores.sample_log_probs[1])  # the samples differ


@pytest.mark.slow  # compiles decoding programs: over this file's share of the default budget
def test_fixed_masks_prefill_and_decode_equal_scoring_the_generated_sequence():
    out = mc.decode(step, PROMPT, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=4, max_length=MAX_LENGTH)
    assert out.tokens.shape == (2, MAX_LENGTH) and np.array_equal(out.tokens[:, :3], PROMPT)
    for i in range(4):
        expected = _target_log_probs(forward(PARAMS, out.tokens, _sample_key(i)), out.tokens)
        np.testing.assert_allclose(out.scores.sample_log_probs[i], expected, rtol=1e-5, atol=1e-5)
    rescored = mc.score(step, out.tokens, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=4)
    for field in ("sample_log_probs", "predictive_entropy", "mutual_information"):
        np.testing.assert_allclose(getattr(out.scores, field), getattr(rescored, field), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # compiles decoding programs: over this file's share of the default budget
def test_per_step_masks_are_fold_in_of_the_position_and_prefill_plus_decode_equals_scoring():
    scores = mc.score(step, TOKENS, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=3, masks="per_step")
    for i in range(3):
        cache, rows = init_cache(2), []
        for t in range(TOKENS.shape[1] - 1):
            logits, cache = step(PARAMS, cache, TOKENS[:, t : t + 1], jaxdrop.fold_in(_sample_key(i), t))
            rows.append(jax.nn.log_softmax(logits[:, 0])[jnp.arange(2), TOKENS[:, t + 1]])
        np.testing.assert_allclose(scores.sample_log_probs[i], jnp.stack(rows, 1), rtol=1e-5, atol=1e-5)
    fixed = mc.score(step, TOKENS, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=3)
    assert not np.allclose(fixed.sample_log_probs, scores.sample_log_probs)
    out = mc.decode(step, PROMPT, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=3, max_length=7,
                    masks="per_step", predictive="per_sample", strategy="sample")  # fmt: skip
    for i in range(3):  # each sample's own tokens, scored by hand with the same per-position keys
        cache, rows = init_cache(2), []
        for t in range(6):
            logits, cache = step(PARAMS, cache, out.tokens[i][:, t : t + 1], jaxdrop.fold_in(_sample_key(i), t))
            rows.append(jax.nn.log_softmax(logits[:, 0])[jnp.arange(2), out.tokens[i][:, t + 1]])
        np.testing.assert_allclose(out.scores.sample_log_probs[i], jnp.stack(rows, 1), rtol=1e-5, atol=1e-5)


def _mask_step(params, cache, tokens, key):
    """Greedy decoding reveals the mask: token 1 when the single unit is kept, 0 when dropped (rate 0.5)."""
    kept = jaxdrop.dropout(jnp.ones((tokens.shape[0], 1, 1)), 0.5, key=key) * 0.5
    return jnp.concatenate([jnp.zeros_like(kept), 10.0 * kept - 5.0], -1), cache


def test_fixed_masks_repeat_at_every_step_and_per_step_masks_are_redrawn():
    prompt = jnp.zeros((8, 1), jnp.int32)
    common = dict(params=None, cache=(), key=KEY, num_samples=16, max_length=17, predictive="per_sample")
    fixed = np.asarray(mc.decode(_mask_step, prompt, **common).tokens[..., 1:])  # (T, B, 16)
    assert (fixed == fixed[..., :1]).all()  # one mask per sample and row, the same at every step
    kept = fixed[..., 0].mean()
    assert abs(kept - 0.5) < 4 * math.sqrt(0.25 / fixed[..., 0].size)  # binomial bound, 4 sigma
    redrawn = np.asarray(mc.decode(_mask_step, prompt, **common, masks="per_step").tokens[..., 1:])
    changes = (redrawn[..., 1:] != redrawn[..., :-1]).mean()  # independent masks: P(change) = 2 p (1 - p) = 0.5
    assert abs(changes - 0.5) < 4 * math.sqrt(0.25 / redrawn[..., 1:].size)


# --- chunking, the MC-mean decode and its scores ------------------------------------------------------------------


@pytest.mark.slow  # compiles decoding programs: over this file's share of the default budget
def test_chunk_size_does_not_change_scores():
    common = dict(params=PARAMS, cache=init_cache(2), key=KEY, num_samples=7)
    reference = mc.score(step, TOKENS, **common)
    chunked = mc.score(step, TOKENS, **common, chunk_size=3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), reference, chunked)


@pytest.mark.slow
@pytest.mark.parametrize("predictive", ["mean", "per_sample"])
@pytest.mark.parametrize("masks", ["fixed", "per_step"])
def test_chunk_sizes_1_3_and_t_give_identical_decodes(predictive, masks):
    common = dict(params=PARAMS, cache=init_cache(2), key=KEY, num_samples=7, max_length=MAX_LENGTH, masks=masks,
                  predictive=predictive, strategy="sample")  # fmt: skip
    outs = [mc.decode(step, PROMPT, **common, chunk_size=c) for c in (1, 3, 7)]
    for other in outs[1:]:
        np.testing.assert_array_equal(outs[0].tokens, other.tokens)
        # the same keys and tokens; a vmap of another width may fuse differently: float rounding only
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), outs[0], other)


@pytest.mark.slow  # compiles decoding programs (the docs page runs an MC-mean decode by default)
def test_greedy_mean_decode_equals_a_manual_loop():
    num_samples, one_step = 4, jax.jit(step)
    out = mc.decode(step, PROMPT, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=num_samples,
                    max_length=MAX_LENGTH, chunk_size=2)  # fmt: skip
    caches = [init_cache(2) for _ in range(num_samples)]
    tokens = [PROMPT[:, t] for t in range(PROMPT.shape[1])]
    mutual = []
    for t in range(MAX_LENGTH - 1):
        probs = []
        for i in range(num_samples):
            logits, caches[i] = one_step(PARAMS, caches[i], tokens[t][:, None], _sample_key(i))
            probs.append(jax.nn.softmax(logits[:, 0]))
        probs = jnp.stack(probs)
        mutual.append(unc.mutual_information(probs))
        if t + 1 >= PROMPT.shape[1]:
            tokens.append(jnp.argmax(probs.mean(0), -1).astype(jnp.int32))
    np.testing.assert_array_equal(out.tokens, jnp.stack(tokens, 1))
    np.testing.assert_allclose(out.scores.mutual_information, jnp.stack(mutual, 1), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out.lengths, [MAX_LENGTH, MAX_LENGTH])


@pytest.mark.slow  # compiles decoding programs: over this file's share of the default budget
def test_sampled_mean_decode_follows_the_key_and_the_temperature():
    common = dict(params=PARAMS, cache=init_cache(2), num_samples=3, max_length=MAX_LENGTH, strategy="sample")
    first = mc.decode(step, PROMPT, key=KEY, **common)
    again = mc.decode(step, PROMPT, key=KEY, **common)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    cold = mc.decode(step, PROMPT, key=KEY, **common, temperature=1e-4)
    greedy = mc.decode(step, PROMPT, key=KEY, **{**common, "strategy": "greedy"})
    np.testing.assert_array_equal(cold.tokens, greedy.tokens)  # temperature -> 0 is greedy


@pytest.mark.slow  # compiles decoding programs: over this file's share of the default budget
def test_end_token_pads_and_sets_lengths():
    out = mc.decode(step, PROMPT, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=3, max_length=MAX_LENGTH)
    end = int(out.tokens[0, 4])  # the second generated token of row 0 becomes the end token
    ended = mc.decode(step, PROMPT, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=3,
                      max_length=MAX_LENGTH, end_token=end)  # fmt: skip
    for row in range(2):
        generated = np.asarray(out.tokens[row, 3:])
        hits = np.flatnonzero(generated == end)
        length = 3 + hits[0] + 1 if hits.size else MAX_LENGTH
        assert int(ended.lengths[row]) == length
        np.testing.assert_array_equal(ended.tokens[row, :length], out.tokens[row, :length])
        assert (np.asarray(ended.tokens[row, length:]) == end).all()
        assert np.asarray(ended.scores.valid[row]).sum() == length - 1


@pytest.mark.slow  # compiles decoding programs: over this file's share of the default budget
def test_scores_match_the_metrics_on_materialised_samples():
    scores = mc.score(step, TOKENS, params=PARAMS, cache=init_cache(2), key=KEY, num_samples=6, chunk_size=4)
    probs = jnp.stack([jax.nn.softmax(forward(PARAMS, TOKENS, _sample_key(i))[:, :-1], -1) for i in range(6)])
    np.testing.assert_allclose(scores.mutual_information, unc.mutual_information(probs), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores.predictive_entropy, unc.predictive_entropy(probs.mean(0)), rtol=1e-5)
    np.testing.assert_allclose(scores.expected_entropy, unc.expected_entropy(probs), rtol=1e-5)
    lp = jnp.log(jnp.take_along_axis(probs, jnp.broadcast_to(TOKENS[None, :, 1:, None], (6, 2, 6, 1)), -1)[..., 0])
    expected = jnp.log(jnp.exp(lp.sum(-1)).mean(0))
    np.testing.assert_allclose(unc.sequence_log_likelihood(scores.sample_log_probs), expected, rtol=1e-5)


def _counting_step(params, cache, tokens, key):
    """Greedy next token = token + 1 whatever the mask (the dropout term moves each logit by at most 2, the chosen
    one leads by 10), so a row's end is known in advance; the samples' probabilities still differ."""
    one_hot = 10.0 * jax.nn.one_hot((tokens + 1) % VOCAB, VOCAB)
    return one_hot + jaxdrop.dropout(jnp.ones((tokens.shape[0], 1, VOCAB)), 0.5, key=key), cache


def _decode_counting_steps(monkeypatch, **kwargs):
    """``mc.decode`` of `_counting_step` and the positions its loop ran (read from the compiled program's output)."""
    from jaxdrop.mc import _decoding

    ran, generate = [], _decoding._generate
    monkeypatch.setattr(_decoding, "_generate", lambda *args: ran.append(generate(*args)) or ran[-1])
    out = mc.decode(_counting_step, jnp.array([[1, 2], [4, 5]]), params=None, cache=(), key=KEY, max_length=12,
                    **kwargs)  # fmt: skip
    return out, np.asarray(ran[-1][1])


def test_the_samples_share_the_cache_position_so_the_cache_is_updated_in_place():
    # The cache's index is the same for every sample: carried with a sample axis, it made `vmap` turn each
    # `dynamic_update_slice` of the cache into a scatter.
    decode = lambda params, cache: mc.decode(step, PROMPT, params=params, cache=cache, key=KEY, num_samples=2,
                                             max_length=MAX_LENGTH).tokens  # fmt: skip
    hlo = jax.jit(decode).lower(PARAMS, init_cache(2)).compile().as_text()
    assert " scatter(" not in hlo and hlo.count(" dynamic-update-slice(") >= 2  # keys and values, in place


_ENDED_VALID = np.arange(11) < np.array([[6], [3]])  # positions scoring a token up to each row's end token


def test_end_token_stops_the_loop_when_every_row_has_ended(monkeypatch):
    # Row 0 generates 3 4 5 6 7, row 1 6 7: with end token 7 both have ended after feeding position 5, so 6 of the
    # 11 positions run; after each row's end its tokens are the end token and its scores 0.
    out, steps = _decode_counting_steps(monkeypatch, num_samples=3, end_token=7)
    assert int(steps) == 6
    np.testing.assert_array_equal(out.tokens, [[1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 7, 7], [4, 5, 6, 7, *[7] * 8]])
    np.testing.assert_array_equal(out.lengths, [7, 4])
    np.testing.assert_array_equal(out.scores.valid, _ENDED_VALID)
    for name in ("sample_log_probs", "sample_entropy", "predictive_entropy", "mutual_information"):
        scores = np.asarray(getattr(out.scores, name))
        assert (scores[..., ~_ENDED_VALID] == 0).all() and (scores[..., _ENDED_VALID] != 0).any(), name


@pytest.mark.slow  # two more decoding programs
def test_early_stop_gives_the_scores_of_the_full_loop(monkeypatch):
    ended, _ = _decode_counting_steps(monkeypatch, num_samples=3, end_token=7)
    full, steps = _decode_counting_steps(monkeypatch, num_samples=3)
    assert int(steps) == 11
    for name in ("sample_log_probs", "sample_entropy", "predictive_entropy", "mutual_information"):
        expected = np.where(_ENDED_VALID, getattr(full.scores, name), 0.0)
        np.testing.assert_array_equal(getattr(ended.scores, name), expected)


@pytest.mark.slow  # two more decoding programs
def test_end_token_stops_each_chunk_of_per_sample_decoding(monkeypatch):
    # Chunks of 2 then 1 sample: each stops when every row of its samples has ended; with end token 4, row 1
    # (prompt [4, 5], then 6 7 8 9 10 0 1 2 3 4) ends only at the last position: the whole loop runs.
    out, steps = _decode_counting_steps(monkeypatch, num_samples=3, chunk_size=2, predictive="per_sample",
                                        end_token=7)  # fmt: skip
    np.testing.assert_array_equal(steps, [6, 6, 6])
    np.testing.assert_array_equal(out.lengths, [[7, 4]] * 3)
    assert (np.asarray(out.scores.sample_log_probs)[~np.asarray(out.scores.valid)] == 0).all()
    _, steps = _decode_counting_steps(monkeypatch, num_samples=3, chunk_size=2, predictive="per_sample",
                                      end_token=4)  # fmt: skip
    np.testing.assert_array_equal(steps, [11, 11, 11])


@pytest.mark.slow  # two decoding programs; the guide runs the same recipe by default
def test_per_sample_generations_rescored_under_every_sample():
    # The guide's recipe: each sample's generation scored under all T networks (the same key; a vmap over the
    # generations keeps each row's masks) gives predictive entropy and MI along it; network j on generation j
    # reproduces the decode's own log-probabilities.
    common = dict(params=PARAMS, key=KEY, num_samples=3, cache=init_cache(2))
    out = mc.decode(step, PROMPT, **common, max_length=MAX_LENGTH, predictive="per_sample", strategy="sample")
    rescored = jax.vmap(lambda tokens: mc.score(step, tokens, **common))(out.tokens)
    assert rescored.mutual_information.shape == (3, 2, MAX_LENGTH - 1)
    for j in range(3):
        np.testing.assert_array_equal(rescored.sample_log_probs[j, j], out.scores.sample_log_probs[j])
        alone = mc.score(step, out.tokens[j], **common)
        np.testing.assert_allclose(rescored.mutual_information[j], alone.mutual_information, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(out.tokens[0], out.tokens[1])  # the generations differ


def _uniform_step(params, cache, tokens, key):
    return jnp.zeros((tokens.shape[0], 1, VOCAB)), cache


def test_identical_samples_give_zero_mutual_information_and_uniform_gives_log_vocab():
    with pytest.warns(mc.IdenticalSamplesWarning):
        scores = mc.score(_uniform_step, TOKENS, params=None, cache=(), key=KEY, num_samples=4)
    np.testing.assert_allclose(scores.mutual_information, 0.0, atol=1e-6)
    np.testing.assert_allclose(scores.predictive_entropy, math.log(VOCAB), rtol=1e-6)
    np.testing.assert_allclose(scores.sample_log_probs, -math.log(VOCAB), rtol=1e-6)


@pytest.mark.slow  # compiles decoding programs: over this file's share of the default budget
def test_bfloat16_model_gives_float32_scores_and_runs_under_jit():
    params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), PARAMS)

    @jax.jit
    def run(params, prompt, key):
        return mc.decode(step, prompt, params=params, cache=init_cache(2, jnp.bfloat16), key=key, num_samples=3,
                         max_length=MAX_LENGTH)  # fmt: skip

    out = run(params16, PROMPT, KEY)
    assert out.tokens.dtype == jnp.int32 and out.scores.mutual_information.dtype == jnp.float32
    assert out.scores.sample_log_probs.dtype == jnp.float32 and np.isfinite(out.scores.sample_log_probs).all()
    eager = mc.decode(step, PROMPT, params=params16, cache=init_cache(2, jnp.bfloat16), key=KEY, num_samples=3,
                      max_length=MAX_LENGTH)  # fmt: skip
    np.testing.assert_array_equal(out.tokens, eager.tokens)


# --- flax models ------------------------------------------------------------------------------------------------


def _linen_model():
    import flax.linen as nn

    import jaxdrop.linen as L

    class TinyLM(nn.Module):
        decode: bool = True

        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(VOCAB, WIDTH)(tokens)
            x = L.Dropout(RATE, deterministic=True)(x)  # jaxdrop's layer: sampled inside `mc` whatever the flag
            x = x + nn.MultiHeadDotProductAttention(num_heads=2, decode=self.decode, dropout_rate=RATE,
                                                    deterministic=False)(x, x)  # fmt: skip
            return nn.Dense(VOCAB)(x)

    model = TinyLM()
    variables = model.init(jax.random.key(1), jnp.zeros((2, MAX_LENGTH), jnp.int32))
    return model, variables


@pytest.mark.slow  # compiles decoding programs: over this file's share of the default budget
def test_linen_model_with_flax_decoding_cache():
    model, variables = _linen_model()
    scores = mc.score(model, TOKENS, variables=variables, key=KEY, num_samples=3, chunk_size=2)
    assert not np.allclose(scores.sample_log_probs[0], scores.sample_log_probs[1])
    out = mc.decode(model, PROMPT, variables=variables, key=KEY, num_samples=3, max_length=MAX_LENGTH)
    rescored = mc.score(model, out.tokens, variables=variables, key=KEY, num_samples=3)
    np.testing.assert_allclose(out.scores.sample_log_probs, rescored.sample_log_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.sample_log_probs[1], _linen_by_hand(model, variables), rtol=1e-5, atol=1e-5)


def _linen_by_hand(model, variables):
    """Sample 1 by hand: flax's cache, one token per call, the sample's key at every step; jaxdrop's Dropout
    samples inside `jaxdrop.stochastic()`, as `mc` traces the model."""
    cache, rows = variables["cache"], []
    with jaxdrop.stochastic():
        for t in range(TOKENS.shape[1] - 1):
            logits, mutated = model.apply({**variables, "cache": cache}, TOKENS[:, t : t + 1],
                                          rngs={"dropout": _sample_key(1)}, mutable=["cache"])  # fmt: skip
            cache = mutated["cache"]
            rows.append(jax.nn.log_softmax(logits[:, 0])[jnp.arange(2), TOKENS[:, t + 1]])
    return jnp.stack(rows, 1)


def _nnx_model(batch: int = 2):
    from flax import nnx

    class TinyLM(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(VOCAB, WIDTH, rngs=rngs)
            self.drop = nnx.Dropout(RATE, rngs=rngs)
            self.attention = nnx.MultiHeadAttention(2, WIDTH, decode=True, dropout_rate=RATE, rngs=rngs)
            self.head = nnx.Linear(WIDTH, VOCAB, rngs=rngs)

        def __call__(self, tokens):
            x = self.drop(self.embed(tokens))
            return self.head(x + self.attention(x))

    model = TinyLM(nnx.Rngs(0, dropout=1))
    model.attention.init_cache((batch, MAX_LENGTH, WIDTH))
    return model


@pytest.mark.slow  # compiles decoding programs: over this file's share of the default budget
def test_nnx_model_with_init_cache():
    model = _nnx_model()
    from flax import nnx

    leaves = lambda: [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Not(nnx.RngKey)))]
    before = leaves()
    out = mc.decode(model, PROMPT, key=KEY, num_samples=3, max_length=MAX_LENGTH)
    rescored = mc.score(model, out.tokens, key=KEY, num_samples=3, chunk_size=2)
    np.testing.assert_allclose(out.scores.sample_log_probs, rescored.sample_log_probs, rtol=1e-5, atol=1e-6)
    assert not np.allclose(rescored.sample_log_probs[0], rescored.sample_log_probs[1])
    assert (np.asarray(rescored.mutual_information) > 0).any()
    assert all(np.array_equal(a, b) for a, b in zip(before, leaves(), strict=True))  # the user's module is untouched


# --- sequence metrics -------------------------------------------------------------------------------------------


def test_sequence_log_likelihood_is_stable_and_respects_the_mask():
    long = jnp.full((4, 1, 500), -3.0).at[0].set(-2.0)  # exp(-1000) underflows; logsumexp does not
    expected = -1000.0 + math.log1p(3 * math.exp(-500.0)) - math.log(4)
    np.testing.assert_allclose(unc.sequence_log_likelihood(long), [expected], rtol=1e-6)
    mask = jnp.arange(500) < 10
    np.testing.assert_allclose(unc.sequence_log_likelihood(long, mask=mask[None]),
                               [math.log((math.exp(-20) + 3 * math.exp(-30)) / 4)], rtol=1e-5)  # fmt: skip
    per_token = unc.sequence_log_likelihood(long, mask=mask[None], normalize=True)
    np.testing.assert_allclose(per_token, [math.log((math.exp(-20) + 3 * math.exp(-30)) / 4) / 10], rtol=1e-5)
    with_zero = jnp.array([[[0.0, -jnp.inf]], [[0.0, 0.0]]])  # a token of probability 0 under sample 0
    np.testing.assert_allclose(unc.sequence_log_likelihood(with_zero), [math.log(0.5)], rtol=1e-6)
    np.testing.assert_allclose(unc.sequence_log_likelihood(with_zero, mask=jnp.array([[True, False]])), [0.0])


def test_aggregate_tokens_mean_max_sum_with_mask():
    scores = jnp.array([[0.1, 0.5, 0.3], [0.2, 0.2, 0.9]])
    mask = jnp.array([[True, True, False], [False, False, False]])
    np.testing.assert_allclose(unc.aggregate_tokens(scores), [0.3, 13 / 30], rtol=1e-6)
    out = unc.aggregate_tokens(scores, mask=mask)
    np.testing.assert_allclose(out[0], 0.3, rtol=1e-6)
    assert np.isnan(out[1])
    np.testing.assert_allclose(unc.aggregate_tokens(scores, mask=mask, reduction="max")[0], 0.5)
    assert np.isnan(unc.aggregate_tokens(scores, mask=mask, reduction="max")[1])
    np.testing.assert_allclose(unc.aggregate_tokens(scores, mask=mask, reduction="sum"), [0.6, 0.0], rtol=1e-6)
    assert unc.aggregate_tokens(scores.astype(jnp.bfloat16)).dtype == jnp.float32
    traced = jax.jit(lambda s: unc.aggregate_tokens(s))(scores.at[0, 0].set(jnp.nan))
    assert np.isnan(traced).all()  # a traced NaN cannot raise: every output NaN


# --- bad input --------------------------------------------------------------------------------------------------


def test_cache_and_prompt_mismatches_name_the_argument():
    with pytest.raises(ValueError, match=r"`cache`: the model must return a cache of the same structure"):
        mc.decode(lambda p, c, t, k: (step(p, c, t, k)[0], {}), PROMPT, params=PARAMS, cache=init_cache(2), key=KEY,
                  num_samples=2, max_length=5)  # fmt: skip
    with pytest.raises(
        ValueError, match=r"first token of `prompt` \(shape \(2, 1\)\) through the model with its `cache`"
    ):
        mc.decode(step, PROMPT, params=PARAMS, cache=init_cache(3), key=KEY, num_samples=2, max_length=5)
    with pytest.raises(ValueError, match=r"logits of shape \(batch, 1, vocab\) or \(batch, vocab\)"):
        mc.decode(lambda p, c, t, k: (jnp.zeros((1, 2, VOCAB)), c), PROMPT, params=None, cache=(), key=KEY,
                  num_samples=2, max_length=5)  # fmt: skip


@pytest.mark.slow  # builds a flax model: over this file's share of the default budget
def test_flax_cache_of_another_batch_or_too_short_names_the_argument():
    model, variables = _linen_model()  # a cache for 2 rows and 8 tokens
    with pytest.raises(ValueError, match=r"`variables` was built for a batch of \(2,\) .* the prompt has 3 row"):
        mc.decode(model, jnp.ones((3, 2), jnp.int32), variables=variables, key=KEY, num_samples=2, max_length=5)
    with pytest.raises(ValueError, match=r"`max_length`=9 exceeds the capacity of the decoding cache, 8 tokens"):
        mc.decode(model, PROMPT, variables=variables, key=KEY, num_samples=2, max_length=9)
