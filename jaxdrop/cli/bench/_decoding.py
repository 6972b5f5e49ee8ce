"""MC decoding against one deterministic decode (``--sections decoding``).

A small decoder-only transformer step with an explicit key-value cache (dropout on the embeddings, the attention
weights and the residual branches) generates greedily at batch 1:

- one deterministic decode (dropout off; a ``lax.scan`` over positions, the cache carried), the baseline;
- the same loop on a batch of 16 rows: the arithmetic of 16 samples without masks or MC;
- ``jaxdrop.mc.decode`` with T = 16 samples decoded together from the MC-mean predictive, every sample's cache
  alive, all 16 in one ``vmap``, and with ``chunk_size=4`` (four ``vmap`` calls of 4 per step);
- early stop: a sampled MC-mean decode with and without an end token (the one whose first appearance is nearest
  a quarter of the generation; the bench's random model repeats one token, so the row ends at its first generated
  token): the loop stops once the row has ended.

Per generated token the target is T = 16 at most 3x the deterministic decode: at batch 1 a step is latency-bound, so
16 samples in one ``vmap`` cost far less than 16 decodes. The FLOPs of one step (XLA's ``cost_analysis``) and the
throughput of each row say whether that holds here; the same three rows on a narrow model (width 8), the closest
to a latency-bound step on this CPU, show what MC itself costs per step when the arithmetic is negligible.
Memory: the compiled temp bytes of per-sample decoding and of scoring (chunk-outer: ``chunk_size`` caches at a
time) for chunk sizes 16, 4 and 1, against the bytes of one cache.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxdrop
from jaxdrop.cli._table import markdown_table
from jaxdrop.cli.bench._dropout import find
from jaxdrop.cli.bench._timing import Row, Section, Settings, block, fmt_ratio, fmt_spread, measure_group, paired_ratios

RATE = 0.1
SAMPLES = 16
DETERMINISTIC = "deterministic decode (dropout off)"
DETERMINISTIC_BATCH = "deterministic decode, batch 16 (dropout off): the floor of T = 16"
MC_ONE_VMAP = "mc.decode T=16, MC-mean, one vmap"
MC_CHUNKED = "mc.decode T=16, MC-mean, chunk_size=4"
TARGET = "decoding: mc.decode T=16 / one deterministic decode, per generated token, batch 1"


EARLY_FULL = "mc.decode T=16, MC-mean sampled, no end token"
NARROW = "narrow model (width 8, 1 layer): "


def _sizes(settings: Settings, narrow: bool = False) -> dict[str, int]:
    if settings.tiny:
        return {"width": 16, "layers": 1, "heads": 2, "vocab": 32, "prompt": 4, "length": 12}
    if narrow:  # the narrowest step: its batch of 16 costs the least over one row here (2.8x in a probe; 12x at 32)
        return {"width": 8, "layers": 1, "heads": 1, "vocab": 16, "prompt": 16, "length": 80}
    return {"width": 256, "layers": 4, "heads": 4, "vocab": 256, "prompt": 16, "length": 80}


def _step_flops(sizes: dict[str, int]) -> dict[str, float | None]:
    """XLA's FLOP count of one step (``cost_analysis`` of the compiled step): batch 1, batch 16, T = 16 samples."""
    params, key = _params(sizes), jax.random.key(0)
    plain, mc_step = make_step(sizes["heads"], 0.0), make_step(sizes["heads"], RATE)
    one, sixteen = jnp.zeros((1, 1), jnp.int32), jnp.zeros((SAMPLES, 1), jnp.int32)
    shared = {"layers": 0, "index": None}  # the samples' caches differ, their position index does not
    samples = jax.vmap(lambda k, c: mc_step(params, c, one, k), (0, shared), (0, shared))
    cache16 = {**_cache(sizes), "layers": jax.tree.map(lambda x: jnp.stack([x] * SAMPLES), _cache(sizes)["layers"])}
    programs = {
        "batch 1": (lambda c, t: plain(params, c, t, key), (_cache(sizes), one)),
        "batch 16": (lambda c, t: plain(params, c, t, key), (_cache(sizes, SAMPLES), sixteen)),
        "T = 16": (lambda c, k: samples(k, c), (cache16, jax.random.split(key, SAMPLES))),
    }
    flops: dict[str, float | None] = {}
    for name, (fn, args) in programs.items():
        analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list) else analysis
        flops[name] = float(analysis["flops"]) if analysis and "flops" in analysis else None
    return flops


def _normal(seed: int, shape: tuple[int, ...], scale: float) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, jnp.float32)


def _params(sizes: dict[str, int]) -> dict[str, Any]:
    width, vocab = sizes["width"], sizes["vocab"]
    layers = [
        {
            "qkv": _normal(10 * i, (width, 3 * width), width**-0.5),
            "out": _normal(10 * i + 1, (width, width), width**-0.5),
            "up": _normal(10 * i + 2, (width, 4 * width), width**-0.5),
            "down": _normal(10 * i + 3, (4 * width, width), (4 * width) ** -0.5),
        }
        for i in range(sizes["layers"])
    ]
    return {
        "embed": _normal(1, (vocab, width), 1.0),
        "position": _normal(2, (sizes["length"], width), 0.1),
        "layers": layers,
    }


def _cache(sizes: dict[str, int], batch: int = 1) -> dict[str, Any]:
    shape = (batch, sizes["length"], sizes["heads"], sizes["width"] // sizes["heads"])
    layer = {"cached_key": jnp.zeros(shape), "cached_value": jnp.zeros(shape)}
    return {"layers": [dict(layer) for _ in range(sizes["layers"])], "index": jnp.zeros((), jnp.int32)}


def _norm(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(x**2, -1, keepdims=True) + 1e-6)


def make_step(heads: int, rate: float) -> Any:
    """``step(params, cache, tokens, key) -> (logits, cache)``: one token per row through a pre-norm decoder."""

    def step(params: Any, cache: Any, tokens: jax.Array, key: jax.Array) -> tuple[jax.Array, Any]:
        batch, index = tokens.shape[0], cache["index"]
        keys = lambda *data: jaxdrop.fold_in(key, *data)
        x = jaxdrop.dropout(params["embed"][tokens] + params["position"][index], rate, key=keys("embed"))
        allowed = (jnp.arange(cache["layers"][0]["cached_key"].shape[1]) <= index)[None, None, None]
        new_layers = []
        for i, (layer, stored) in enumerate(zip(params["layers"], cache["layers"], strict=True)):
            q, k, v = jnp.split((_norm(x) @ layer["qkv"]).reshape(batch, 1, 3 * heads, -1), 3, axis=2)
            cached_key = jax.lax.dynamic_update_slice_in_dim(stored["cached_key"], k, index, 1)
            cached_value = jax.lax.dynamic_update_slice_in_dim(stored["cached_value"], v, index, 1)
            new_layers.append({"cached_key": cached_key, "cached_value": cached_value})
            attended = jaxdrop.dot_product_attention(
                q, cached_key, cached_value, mask=allowed, dropout_rate=rate, dropout_rng=keys(i, "attention")
            )
            x = x + jaxdrop.dropout(attended.reshape(batch, 1, -1) @ layer["out"], rate, key=keys(i, "out"))
            branch = jax.nn.gelu(_norm(x) @ layer["up"]) @ layer["down"]
            x = x + jaxdrop.dropout(branch, rate, key=keys(i, "mlp"))
        return _norm(x) @ params["embed"].T, {"layers": new_layers, "index": index + 1}

    return step


def _deterministic_decode(step: Any, length: int) -> Any:
    """Greedy decoding of one network, prompt forced: the baseline loop (what a user writes without MC)."""

    @jax.jit
    def decode(params: Any, cache: Any, prompt: jax.Array) -> jax.Array:
        tokens = jnp.zeros((prompt.shape[0], length), jnp.int32).at[:, : prompt.shape[1]].set(prompt)

        def body(carry: Any, position: jax.Array) -> Any:
            cache, tokens = carry
            logits, cache = step(params, cache, tokens[:, position, None], jax.random.key(0))
            chosen = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)
            following = jnp.where(position + 1 < prompt.shape[1], tokens[:, position + 1], chosen)
            return (cache, tokens.at[:, position + 1].set(following)), None

        return jax.lax.scan(body, (cache, tokens), jnp.arange(length - 1))[0][1]

    return decode


def _temp_bytes(fn: Any) -> int | None:
    analysis = jax.jit(fn).lower().compile().memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def _mc_decode(sizes: dict[str, int], **options: Any) -> Any:
    """``mc.decode`` of T = 16 samples of the bench step at batch 1, as a zero-argument timed call."""
    params, cache, step = _params(sizes), _cache(sizes), make_step(sizes["heads"], RATE)
    prompt = jnp.asarray(np.arange(sizes["prompt"])[None] % sizes["vocab"], jnp.int32)
    common: dict[str, Any] = dict(
        params=params, cache=cache, key=jax.random.key(0), num_samples=SAMPLES, max_length=sizes["length"]
    )
    return lambda: block(jaxdrop.mc.decode(step, prompt, **common, **options).tokens)


def _plain_rows(sizes: dict[str, int], prefix: str = "") -> list[Row]:
    """The deterministic decode at batch 1 and on a batch of 16 rows (the work of 16 samples, no masks, no MC)."""
    params, length = _params(sizes), sizes["length"]
    prompt = jnp.asarray(np.arange(sizes["prompt"])[None] % sizes["vocab"], jnp.int32)
    plain = _deterministic_decode(make_step(sizes["heads"], 0.0), length)
    cache, cache16, prompt16 = _cache(sizes), _cache(sizes, SAMPLES), jnp.tile(prompt, (SAMPLES, 1))
    return [
        Row({"impl": prefix + DETERMINISTIC}, lambda: block(plain(params, cache, prompt))),
        Row({"impl": prefix + DETERMINISTIC_BATCH}, lambda: block(plain(params, cache16, prompt16))),
    ]


def _loops_per_step(sizes: dict[str, int]) -> dict[str, int]:
    """Loops the compiled T = 16 decode runs inside each step, by what they compute (from the HLO's op names):
    on the CPU JAX lowers Threefry (``fold_in``, mask draws) as a rolled loop."""
    params, cache, step = _params(sizes), _cache(sizes), make_step(sizes["heads"], RATE)
    prompt = jnp.zeros((1, sizes["prompt"]), jnp.int32)
    decode = lambda params, cache, prompt: jaxdrop.mc.decode(
        step, prompt, params=params, cache=cache, key=jax.random.key(0), num_samples=SAMPLES,
        max_length=sizes["length"],
    ).tokens  # fmt: skip
    text = jax.jit(decode).lower(params, cache, prompt).compile().as_text() or ""
    names = re.findall(r" while\(.*?op_name=\"([^\"]*)\"", text)
    inner = [name for name in names if "/while/body/" in name]
    return {"fold_in": sum("fold_in" in name for name in inner), "other": sum("fold_in" not in name for name in inner)}


def _early_stop(sizes: dict[str, int]) -> tuple[int, int]:
    """The end token whose first appearance in the sampled MC-mean decode is nearest a quarter of the generated
    tokens, and how many tokens the row generates with it (the end token included; 1 when the generation repeats
    one token, as the bench's random model does)."""
    generated = np.asarray(_mc_decode(sizes, strategy="sample")()[0, sizes["prompt"] :]).tolist()
    first = {token: generated.index(token) + 1 for token in set(generated)}
    end = min(first, key=lambda token: (abs(first[token] - len(generated) // 4), token))
    return end, first[end]


def decoding_section(settings: Settings) -> Section:
    """Per-token time of MC decoding (T = 16) against one deterministic decode at batch 1, and chunked memory."""
    sizes, narrow = _sizes(settings), _sizes(settings, narrow=True)
    length, steps, prompt_length = sizes["length"], sizes["length"] - 1, sizes["prompt"]
    end_token, generated = _early_stop(sizes)
    early = f"mc.decode T=16, MC-mean sampled, end token: rows end after {generated} of {length - prompt_length}"
    section = Section(
        "decoding",
        f"MC decoding: T = {SAMPLES} dropout samples decoded together vs one deterministic decode, batch 1 "
        f"({sizes['layers']} layers, width {sizes['width']}, {length} tokens)",
    )
    rows = [
        *_plain_rows(sizes),
        Row({"impl": MC_ONE_VMAP}, _mc_decode(sizes)),
        Row({"impl": MC_CHUNKED}, _mc_decode(sizes, chunk_size=4)),
        Row({"impl": EARLY_FULL}, _mc_decode(sizes, strategy="sample")),
        Row({"impl": early}, _mc_decode(sizes, strategy="sample", end_token=end_token)),
    ]
    narrow_rows = [*_plain_rows(narrow, NARROW), Row({"impl": NARROW + MC_ONE_VMAP}, _mc_decode(narrow))]
    measure_group(rows, settings.repeats, min_sample_s=settings.min_sample_s)
    measure_group(narrow_rows, settings.repeats, min_sample_s=settings.min_sample_s)
    section.rows += rows + narrow_rows
    flops = {"": _step_flops(sizes), NARROW: _step_flops(narrow)}
    flop_keys = {DETERMINISTIC: "batch 1", DETERMINISTIC_BATCH: "batch 16", MC_ONE_VMAP: "T = 16"}

    def line(row: Row, baseline: Row | None, prefix: str) -> list[str]:
        step_flops = flops[prefix].get(flop_keys.get(row.labels["impl"].removeprefix(prefix), ""))
        throughput = step_flops * steps / row.median_s / 1e9 if step_flops and row.median_s else None
        return [
            row.labels["impl"],
            fmt_spread(row),
            f"{1e3 * row.median_s / steps:.3f}" if row.median_s else "n/a",
            fmt_ratio(row.median_s, baseline.median_s if baseline else None),
            "" if step_flops is None else f"{step_flops / 1e6:.2f}",
            "" if throughput is None else f"{throughput:.2f}",
        ]

    baseline, narrow_baseline = find(rows, impl=DETERMINISTIC), find(narrow_rows, impl=NARROW + DETERMINISTIC)
    lines = [line(row, baseline, "") for row in rows] + [line(row, narrow_baseline, NARROW) for row in narrow_rows]
    mc_row = find(rows, impl=MC_ONE_VMAP)
    paired = paired_ratios(mc_row, baseline, settings.repeats) if baseline and mc_row else []
    section.summary["paired_ratio"] = float(np.median(paired)) if paired else None
    section.summary["paired_ratios"] = paired
    narrow_mc = find(narrow_rows, impl=NARROW + MC_ONE_VMAP)
    narrow_paired = paired_ratios(narrow_mc, narrow_baseline, settings.repeats) if narrow_baseline and narrow_mc else []
    section.summary["narrow_paired_ratio"] = float(np.median(narrow_paired)) if narrow_paired else None
    full_row, early_row = find(rows, impl=EARLY_FULL), find(rows, impl=early)
    early_paired = paired_ratios(early_row, full_row, settings.repeats) if full_row and early_row else []
    section.summary["early_stop_ratio"] = float(np.median(early_paired)) if early_paired else None
    section.summary["early_stop_steps"] = [prompt_length - 1 + generated, steps]
    section.summary["step_flops"] = flops[""]
    section.summary["narrow_step_flops"] = flops[NARROW]

    cache = _cache(sizes)
    cache_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(cache))
    memory_lines, memory = [], {}
    tokens = jnp.zeros((1, length), jnp.int32)
    params, key, mc_step = _params(sizes), jax.random.key(0), make_step(sizes["heads"], RATE)
    prompt = jnp.asarray(np.arange(prompt_length)[None] % sizes["vocab"], jnp.int32)

    def chunked(mode: str, chunk: int) -> Any:
        if mode == "score":
            return jaxdrop.mc.score(
                mc_step, tokens, params=params, cache=cache, key=key, num_samples=SAMPLES, chunk_size=chunk
            ).mutual_information
        return jaxdrop.mc.decode(
            mc_step, prompt, params=params, cache=cache, key=key, num_samples=SAMPLES, max_length=length,
            chunk_size=chunk, predictive="per_sample",
        ).tokens  # fmt: skip

    for mode in ("per_sample", "score"):
        for chunk in (SAMPLES, 4, 1):
            value = _temp_bytes(functools.partial(chunked, mode, chunk))
            memory[f"{mode}/{chunk}"] = value
            shown = "n/a" if value is None else f"{value / 2**20:.2f}"
            memory_lines.append([mode, str(chunk), shown, "n/a" if value is None else f"{value / cache_bytes:.1f}"])
    section.summary["temp_bytes"] = memory
    section.summary["cache_bytes"] = cache_bytes
    headers = ["decode", "ms per decode", "ms per token", "x deterministic", "MFLOP per step", "GFLOP/s"]
    section.markdown = (
        markdown_table(headers, lines, "lrrrrr")
        + "\n\n"
        + markdown_table(["T = 16, chunk-outer", "chunk_size", "temp MiB", "x one cache"], memory_lines, "lrrr")
    )
    early_ratio = section.summary["early_stop_ratio"]
    loops = section.summary["loops_per_step"] = _loops_per_step(sizes)
    section.notes += [
        f"Greedy, prompt of {prompt_length} tokens forced then generation to {length} tokens: {steps} steps per "
        f"decode, each one token per row; dropout {RATE} on embeddings, attention weights and residual branches. "
        "ms per token = ms per decode / steps. The target's ratio is the median of paired back-to-back calls "
        f"(`paired_ratios`): {', '.join(f'{r:.2f}' for r in paired)}.",
        "MFLOP per step: XLA's `cost_analysis()` of one compiled step (batch 1, batch 16, and T = 16 samples in "
        "one `vmap`); GFLOP/s = MFLOP per step x steps / ms per decode. The batch-16 deterministic row is the work "
        "of 16 samples with no masks and no MC: where it costs well over 3x the batch-1 decode, the step is bound "
        "by arithmetic, not latency, and the 3x target (written for a latency-bound step, as on a GPU) cannot be "
        "met by any MC implementation on this machine at this size.",
        f"Narrow model (width {narrow['width']}, {narrow['layers']} layer, vocabulary {narrow['vocab']}): its own "
        f"deterministic decode is the baseline; paired MC T = 16 ratio "
        f"{_fmt_paired(section.summary['narrow_paired_ratio'])}. Where the arithmetic is negligible the cost of MC "
        "is its fixed work per step: the samples' keys and masks. JAX lowers Threefry on the CPU as a rolled loop, "
        f"and the compiled T = 16 decode of the bench model runs {sum(loops.values())} such loops inside every "
        f"step ({loops['fold_in']} `fold_in`, {loops['other']} mask draws), which XLA does not hoist out of the "
        "decoding loop although with fixed masks they are the same at every step.",
        f"Early stop: sampled MC-mean decoding (T = 16) with an end token that the row generates after {generated} "
        f"of {length - prompt_length} tokens: the loop runs {prompt_length - 1 + generated} of {steps} steps; "
        f"paired time against the same decode without the end token {_fmt_paired(early_ratio)} "
        f"(steps ratio {(prompt_length - 1 + generated) / steps:.2f}).",
        f"Memory: `memory_analysis().temp_size_in_bytes` of the compiled call (nothing allocated); one cache is "
        f"{cache_bytes / 2**20:.2f} MiB. Per-sample decoding and scoring run each chunk through the whole sequence, "
        "so their caches scale with `chunk_size`, not T; MC-mean decoding keeps all T caches.",
    ]
    return section


def _fmt_paired(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def decoding_targets(section: Section | None, tiny: bool) -> list[dict[str, Any]]:
    """The issue's speed target, in the runner's target format; n/a when the section did not run."""
    measured = None if section is None else section.summary.get("paired_ratio")
    passed = None if measured is None or math.isnan(measured) else measured <= 3.0
    status = "n/a" if passed is None else ("PASS" if passed else "FAIL")
    detail = "paired back-to-back calls, median"
    if tiny and passed is not None:
        status, detail = "not judged (tiny)", detail + " (tiny sizes: a smoke test, not the target shapes)"
    return [{"target": TARGET, "required": "<= 3x", "measured": measured, "status": status, "detail": detail}]
