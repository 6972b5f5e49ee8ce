"""Example: MC dropout scores every character of a prompt; which scores flag out-of-distribution prompts?

The model is the transformer of ``examples/transformer_lm.py`` (its ``init_params``, ``forward`` and data helpers
are imported from there), trained with dropout on the Python standard library's source. Its decoding step with a
key-value cache (``lm_step`` below) runs the same network one character at a time; `jaxdrop.mc.score` feeds each
prompt through ``T`` dropout samples (masks fixed per sample: each sample is one network) and returns per-character
predictive entropy and mutual information (MI).

In-distribution prompts are held-out standard-library source (files the model never saw); out-of-distribution
prompts are English prose (the help topics of ``pydoc_data.topics``, prose lines only) and the same held-out code
with its lines shuffled, or its characters shuffled within each prompt. Each prompt gets one score per method:
the deterministic network's mean (1 - max probability) and mean entropy, the MC predictive entropy and MI (mean over
characters), and the negative log-likelihood per character (deterministic, and under the MC mixture). The table
gives OOD AUROC / AUPR (OOD positive) / FPR at 95% TPR; an MI threshold calibrated on other held-out code at a 5%
false-alarm rate gives the share of each OOD set it flags. Finally `jaxdrop.mc.decode` continues a code prompt from
the MC-mean predictive and scores each generated character.
"""

from __future__ import annotations

import functools
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
import transformer_lm
from transformer_lm import init_params, rms_norm, sequence_loss

import jaxdrop
from jaxdrop import uncertainty as unc
from jaxdrop.cli import datasets


def init_cache(batch: int, *, layers: int, heads: int, width: int, context: int) -> dict:
    """An empty key-value cache: flax's names (``cached_key``), so `jaxdrop.mc` checks its batch and capacity."""
    shape = (batch, context, heads, width // heads)
    layer = {"cached_key": jnp.zeros(shape), "cached_value": jnp.zeros(shape)}
    return {"layers": [dict(layer) for _ in range(layers)], "index": jnp.zeros((), jnp.int32)}


def lm_step(params, cache, tokens, key, *, rate, heads):
    """``transformer_lm.forward`` for one character per row, through the cache: ``(logits (B, 1, V), cache)``.

    The dropout sites and their keys are ``forward``'s (embeddings, attention weights, residual branches); only
    the shapes differ: a step draws masks for one position.
    """
    batch = tokens.shape[0]
    index = cache["index"]
    keys = lambda *d: jaxdrop.fold_in(key, *d)
    x = params["embed"][tokens] + params["position"][index]
    x = jaxdrop.dropout(x, rate, key=keys("embed"))
    allowed = (jnp.arange(cache["layers"][0]["cached_key"].shape[1]) <= index)[None, None, None]
    new_layers = []
    for i, (layer, stored) in enumerate(zip(params["layers"], cache["layers"], strict=True)):
        qkv = rms_norm(x, layer["norm1"]) @ layer["qkv"]
        q, k, v = jnp.split(qkv.reshape(batch, 1, 3 * heads, -1), 3, axis=2)
        cached_key = jax.lax.dynamic_update_slice_in_dim(stored["cached_key"], k, index, 1)
        cached_value = jax.lax.dynamic_update_slice_in_dim(stored["cached_value"], v, index, 1)
        new_layers.append({"cached_key": cached_key, "cached_value": cached_value})
        attended = jaxdrop.dot_product_attention(
            q, cached_key, cached_value, mask=allowed, dropout_rate=rate, dropout_rng=keys(i, "attention")
        )
        branch = attended.reshape(batch, 1, -1) @ layer["out"]
        x = x + jaxdrop.dropout(branch, rate, key=keys(i, "attention_out"))
        branch = jax.nn.gelu(rms_norm(x, layer["norm2"]) @ layer["up"]) @ layer["down"]
        x = x + jaxdrop.dropout(branch, rate, key=keys(i, "mlp_out"))
    logits = rms_norm(x, params["norm"]) @ params["embed"].T
    return logits, {"layers": new_layers, "index": index + 1}


def prose_text() -> str:
    """English prose that ships with Python: the lines of ``pydoc_data.topics`` that are sentences, not code."""
    from pydoc_data.topics import topics

    lines = []
    for text in topics.values():
        for line in text.splitlines():
            stripped = line.strip()
            letters = sum(c.isalpha() or c == " " for c in stripped)
            if line[:1] != " " and len(stripped) > 40 and letters > 0.9 * len(stripped) and stripped.isascii():
                lines.append(stripped)
    return " ".join(lines)


def prompt_windows(text: str, count: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` non-overlapping windows of ``length`` characters (as tokens), at random offsets."""
    tokens = datasets.encode_ascii(text)
    starts = rng.permutation(len(tokens) // length)[:count] * length
    return np.stack([tokens[s : s + length] for s in np.sort(starts)])


def shuffled_lines(text: str, seed: int) -> str:
    lines = text.splitlines()
    random.Random(seed).shuffle(lines)
    return "\n".join(lines)


def shuffle_characters(windows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.permutation(row) for row in windows])


def train(args, train_tokens: np.ndarray) -> Any:
    params = init_params(jax.random.key(args.seed), width=args.width, layers=args.layers, context=args.context)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-3, weight_decay=0.0))
    opt_state = optimizer.init(params)

    def loss_fn(p, key, batch):
        logits = transformer_lm.forward(p, batch[:, :-1], rate=args.rate, key=key, heads=args.heads)
        return sequence_loss(logits, batch[:, 1:])

    one_step = _common.gradient_step(optimizer, loss_fn)
    data = jnp.asarray(train_tokens)

    @jax.jit
    def train_chunk(params, opt_state, steps):
        def body(carry, step_index):
            key = jaxdrop.fold_in(jax.random.key(args.seed), "train", step_index)
            starts = jax.random.randint(key, (args.batch_size,), 0, len(train_tokens) - args.context - 1)
            batch = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(data, s, args.context + 1))(starts)
            return one_step(*carry, jaxdrop.fold_in(key, "dropout"), batch), None

        return jax.lax.scan(body, (params, opt_state), steps)[0]

    chunk = max(1, args.steps // 10)
    bar = _common.progress(total=chunk * 10, desc="training", quiet=args.quiet)
    for start in range(0, chunk * 10, chunk):
        params, opt_state = train_chunk(params, opt_state, jnp.arange(start, start + chunk))
        bar.update(chunk)
    bar.close()
    return params


def deterministic_scores(forward, params, prompts: np.ndarray) -> dict[str, np.ndarray]:
    """Per prompt: mean (1 - max probability), mean entropy and NLL per character of the network without dropout."""
    logits = forward(params, jnp.asarray(prompts))[:, :-1]
    log_probs = jax.nn.log_softmax(logits, -1)
    probs = jnp.exp(log_probs)
    target = jnp.take_along_axis(log_probs, jnp.asarray(prompts)[:, 1:, None], -1)[..., 0]
    return {
        "deterministic 1 - max prob": np.asarray(unc.aggregate_tokens(1.0 - probs.max(-1))),
        "deterministic entropy": np.asarray(unc.aggregate_tokens(unc.predictive_entropy(probs))),
        "deterministic NLL / char": np.asarray(-target.mean(-1)),
    }


def mc_scores(args, step, params, prompts: np.ndarray, key: jax.Array) -> tuple[dict[str, np.ndarray], Any]:
    """Per prompt: MC predictive entropy, MI (means over characters) and NLL per character under the mixture."""
    rows = []
    for start in range(0, len(prompts), args.prompt_batch):
        batch = jnp.asarray(prompts[start : start + args.prompt_batch])
        cache = init_cache(len(batch), layers=args.layers, heads=args.heads, width=args.width, context=args.context)
        rows.append(jaxdrop.mc.score(step, batch, params=params, cache=cache, key=key, num_samples=args.samples,
                                     chunk_size=args.chunk_size))  # fmt: skip
    scores = jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=-2), *rows)
    return {
        "MC predictive entropy": np.asarray(unc.aggregate_tokens(scores.predictive_entropy)),
        "MC mutual information": np.asarray(unc.aggregate_tokens(scores.mutual_information)),
        "MC mixture NLL / char": np.asarray(-unc.sequence_log_likelihood(scores.sample_log_probs, normalize=True)),
    }, scores


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.1, help="dropout rate (embeddings, attention, residual branches)")
    p.add_argument("--samples", type=int, default=32, help="MC dropout samples T")
    p.add_argument("--chunk-size", type=int, default=16, help="samples per vmap (memory: this many caches)")
    p.add_argument(
        "--prompts", type=int, default=300, help="prompts per set (in-distribution: twice, test + calibration)"
    )
    p.add_argument("--prompt-batch", type=int, default=100, help="prompts scored together")
    p.add_argument("--train-chars", type=int, default=300_000)
    p.add_argument("--heldout-chars", type=int, default=200_000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=64, help="prompt length and cache capacity")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--generate", type=int, default=32, help="characters generated in the decoding demonstration")
    args = p.parse_args(argv)
    if args.quick:
        args.train_chars, args.heldout_chars, args.steps, args.width, args.layers = 20_000, 20_000, 40, 32, 1
        args.samples, args.chunk_size, args.prompts, args.prompt_batch, args.generate = 4, 2, 12, 12, 8
        args.context = 32
    out = _common.out_dir(args)
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    text = datasets.python_source_text(args.train_chars + args.heldout_chars)
    train_tokens = datasets.encode_ascii(text[: args.train_chars])
    heldout = text[args.train_chars :]
    length = args.context
    code = prompt_windows(heldout, 2 * args.prompts, length, rng)
    code_test, code_calibration = code[0::2], code[1::2]
    ood = {
        "English prose (pydoc topics)": prompt_windows(prose_text(), args.prompts, length, rng),
        "code, lines shuffled": prompt_windows(shuffled_lines(heldout, args.seed), args.prompts, length, rng),
        "code, characters shuffled": shuffle_characters(code_test, rng),
    }

    params = train(args, train_tokens)
    # The cached step is the same network as the full-sequence forward: checked here, dropout off.
    probe = jnp.asarray(code_test[:2])
    cache = init_cache(2, layers=args.layers, heads=args.heads, width=args.width, context=args.context)
    stepped, plain_step = [], jax.jit(lambda p, c, t, k: lm_step(p, c, t, k, rate=0.0, heads=args.heads))
    for t in range(length):
        logits, cache = plain_step(params, cache, probe[:, t : t + 1], jax.random.key(0))
        stepped.append(logits[:, 0])
    full = transformer_lm.forward(params, probe, rate=0.0, key=None, heads=args.heads, deterministic=True)
    step_error = float(jnp.abs(jnp.stack(stepped, 1) - full).max())
    assert step_error < 1e-3, f"the cached step differs from the full forward pass by {step_error}"

    key = jax.random.key(args.seed + 1)
    # One step function for every call: `mc` compiles once per function and shapes.
    step = functools.partial(lm_step, rate=args.rate, heads=args.heads)
    forward = jax.jit(lambda p, tokens: transformer_lm.forward(p, tokens, rate=0.0, key=None, heads=args.heads,
                                                               deterministic=True))  # fmt: skip
    sets = {"in-distribution test (held-out code)": code_test, "in-distribution calibration": code_calibration, **ood}
    per_set, token_mi, timings = {}, {}, {}
    for name, prompts in sets.items():
        begun = time.perf_counter()
        mc, scores = mc_scores(args, step, params, prompts, key)
        per_set[name] = {**deterministic_scores(forward, params, prompts), **mc}
        timings[name] = time.perf_counter() - begun
        token_mi[name] = np.asarray(scores.mutual_information)
    methods = list(per_set[next(iter(per_set))])
    in_name = "in-distribution test (held-out code)"
    detection = {}
    for name in ood:
        detection[name] = {}
        for method in methods:
            scores_in, scores_out = per_set[in_name][method], per_set[name][method]
            detection[name][method] = {
                "auroc": float(unc.ood_auroc(scores_in, scores_out)),
                "aupr": float(unc.ood_aupr(scores_in, scores_out)),
                "fpr95": float(unc.fpr_at_tpr(scores_in, scores_out, tpr=0.95)),
            }
    threshold = float(np.quantile(per_set["in-distribution calibration"]["MC mutual information"], 0.95))
    flagged = {name: float((per_set[name]["MC mutual information"] > threshold).mean()) for name in sets}

    # MC decoding: continue a held-out code prompt from the MC-mean predictive, greedy, scoring every character.
    prompt_length = args.context - args.generate
    prompt = jnp.asarray(code_test[:1, :prompt_length])
    cache = init_cache(1, layers=args.layers, heads=args.heads, width=args.width, context=args.context)
    generation = jaxdrop.mc.decode(step, prompt, params=params, cache=cache, key=key, num_samples=args.samples,
                                   max_length=args.context, chunk_size=args.chunk_size)  # fmt: skip
    generated_mi = np.asarray(generation.scores.mutual_information[0])
    decode_text = lambda tokens: "".join(chr(int(t)) for t in tokens)
    prompt_text = decode_text(prompt[0])
    continuation = decode_text(generation.tokens[0, prompt_length:])
    mean_mi_prompt = float(generated_mi[: prompt_length - 1].mean())
    mean_mi_generated = float(generated_mi[prompt_length - 1 :].mean())

    results: dict[str, Any] = {
        "detection": detection,
        "threshold": threshold,
        "flagged": flagged,
        "mean_scores": {name: {m: float(v.mean()) for m, v in s.items()} for name, s in per_set.items()},
        "generation": {
            "prompt": prompt_text,
            "continuation": continuation,
            "mi_prompt": mean_mi_prompt,
            "mi_generated": mean_mi_generated,
        },
        "step_error": step_error,
    }
    rows = []
    for method in methods:
        cells = [method]
        for name in ood:
            d = detection[name][method]
            cells.append(f"{d['auroc']:.3f} / {d['aupr']:.3f} / {d['fpr95']:.2f}")
        rows.append(cells)
    mean_rows = [
        [name, *(f"{per_set[name][m].mean():.3f}" for m in methods), f"{100 * flagged[name]:.1f}%"] for name in sets
    ]
    elapsed = time.perf_counter() - started
    show = lambda s: s.replace("\n", "⏎").replace("|", "\\|").replace("`", "'")
    best_per_set = {name: max(methods, key=lambda m, name=name: detection[name][m]["auroc"]) for name in ood}
    report = (
        "# Out-of-distribution prompts of a character-level LM, best score per set: "
        + "; ".join(f"{name}: {m} (AUROC {detection[name][m]['auroc']:.2f})" for name, m in best_per_set.items())
        + f" (examples/lm_uncertainty.py{' --quick' if args.quick else ''})\n\n"
        f"The transformer of `examples/transformer_lm.py` ({args.layers} layers, {args.heads} heads, width "
        f"{args.width}, context {args.context}) trained with dropout {args.rate} for {args.steps} AdamW steps "
        f"(batch {args.batch_size}) on {len(train_tokens):,} characters of the standard library's source. Prompts "
        f"are {length} characters; {args.prompts} per set. MC scores: `jaxdrop.mc.score`, T = {args.samples} "
        f"samples with fixed masks (each sample one network), {args.chunk_size} per `vmap`; each prompt's score is "
        f"the mean over its {length - 1} predicted characters (`uncertainty.aggregate_tokens`). The cached decoding "
        f"step matches the full-sequence forward pass to {step_error:.1e} (dropout off).\n\n"
        "## OOD detection: AUROC / AUPR (OOD positive) / FPR at 95% TPR, against held-out code\n\n"
        + _common.markdown_table(["score (per prompt)", *ood], rows)
        + "\n\n## Mean score per set, and the share an MI threshold flags\n\n"
        f"Threshold: the 95th percentile of the mean MI of {args.prompts} other held-out code prompts "
        f"(calibration, 5% false alarms by construction) = {threshold:.4f} nats.\n\n"
        + _common.markdown_table(["set", *methods, "flagged by MI"], mean_rows)
        + "\n\n## MC decoding (`jaxdrop.mc.decode`, MC-mean predictive, greedy)\n\n"
        f"Prompt (held-out code): `{show(prompt_text)}`\n\nContinuation ({args.generate} characters): "
        f"`{show(continuation)}`\n\nMean per-character MI: {mean_mi_prompt:.4f} nats over the prompt "
        f"(teacher-forced), {mean_mi_generated:.4f} over the generated characters.\n\n"
        f"Run time {elapsed:.0f} s (scoring: "
        + ", ".join(f"{name.split(' (')[0]} {seconds:.0f} s" for name, seconds in timings.items())
        + ").\n"
    )
    print(report)
    _common.write_text(out, "lm_uncertainty.md", report)

    plt = _common.pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.5))
    prose_name = "English prose (pydoc topics)"
    examples = [
        (in_name, code_test[0], token_mi[in_name][0]),
        (prose_name, ood[prose_name][0], token_mi[prose_name][0]),
    ]
    best = max(ood, key=lambda name: detection[name]["MC mutual information"]["auroc"])
    for ax, (name, tokens, mi) in zip(axes[:2], examples, strict=True):
        ax.bar(np.arange(1, length), mi, color="C0" if name == in_name else "C3")
        ax.set_xticks(np.arange(1, length))
        ax.set_xticklabels([show(chr(int(t))) for t in tokens[1:]], fontsize=6, family="monospace")
        ax.set(ylabel="MI (nats)", title=f"{name}: mean MI {mi.mean():.4f}", ylim=(0, None))
        ax.title.set_fontsize(9)
    gen_tokens = np.asarray(generation.tokens[0])
    colors = ["C0"] * (prompt_length - 1) + ["C2"] * (len(gen_tokens) - prompt_length)
    axes[2].bar(np.arange(1, len(gen_tokens)), generated_mi, color=colors)
    axes[2].set_xticks(np.arange(1, len(gen_tokens)))
    axes[2].set_xticklabels([show(chr(int(t))) for t in gen_tokens[1:]], fontsize=6, family="monospace")
    axes[2].set(ylabel="MI (nats)", xlabel="character (the MI of predicting it)",
                title=f"mc.decode: prompt (blue, mean MI {mean_mi_prompt:.4f}) and greedy MC-mean continuation "
                f"(green, {mean_mi_generated:.4f})")  # fmt: skip
    axes[2].title.set_fontsize(9)
    auroc_mi = detection[best]["MC mutual information"]["auroc"]
    fig.suptitle(
        f"Per-character mutual information, T = {args.samples}: mean MI separates {best} from held-out code with "
        f"AUROC {auroc_mi:.2f};\nthe 5%-false-alarm MI threshold flags "
        + ", ".join(f"{100 * flagged[name]:.0f}% of {name}" for name in ood),
        fontsize=9,
    )
    _common.save_figure(fig, out, "lm_uncertainty.png")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
