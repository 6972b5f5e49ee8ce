"""Example 3: a character-level Transformer language model with attention, residual and embedding dropout.

The corpus is the Python standard library's own source code (every Python install has it; no download): the first
files in sorted order train the model, the following files validate it. A small pre-norm decoder (2 layers,
4 heads, width 64, context 64) is trained with

- no dropout,
- dropout 0.1 on the embeddings (``jaxdrop.dropout``), on the attention weights
  (``jaxdrop.dot_product_attention``, flax's signature) and on each residual branch (``jaxdrop.dropout``), and
- the same dropout with LayerDrop (``jaxdrop.layer_drop``, Fan et al. 2019, rate ``--layer-drop``): each
  transformer layer is skipped with that probability in training,

in one ``vmap`` over the three models (their rates are traced) and several seeds. Inside that ``vmap`` the
LayerDrop decisions are batched, so ``lax.cond`` runs as a select and no compute is saved here; the bench section
``recipes`` measures the saving of a single model. On the small training text the undropped model
overfits (its training loss falls far below its validation loss); dropout narrows that gap, and the figure shows
whether, within the step budget, it also lowers the validation loss, with the spread over seeds.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
from jaxdrop.cli import datasets

VOCAB = 128  # ASCII


def init_params(key, *, width, layers, context):
    keys = iter(jax.random.split(key, 4 + 4 * layers))
    normal = lambda shape, scale: jax.random.normal(next(keys), shape) * scale
    return {
        "embed": normal((VOCAB, width), 0.02),
        "position": normal((context, width), 0.02),
        "layers": [
            {
                "qkv": normal((width, 3 * width), width**-0.5),
                "out": normal((width, width), (2 * layers * width) ** -0.5),
                "up": normal((width, 4 * width), width**-0.5),
                "down": normal((4 * width, width), (2 * layers * 4 * width) ** -0.5),
                "norm1": jnp.ones(width),
                "norm2": jnp.ones(width),
            }
            for _ in range(layers)
        ],
        "norm": jnp.ones(width),
    }


def rms_norm(x, scale):
    return scale * x * jax.lax.rsqrt(jnp.mean(x**2, -1, keepdims=True) + 1e-6)


def forward(params, tokens, *, rate, key, heads, layer_rate=0.0, deterministic=False):
    """Logits for next-character prediction; dropout on embeddings, attention weights and residual branches, and
    LayerDrop (each whole layer skipped with probability ``layer_rate``)."""
    keys = (lambda *d: None) if deterministic else (lambda *d: jaxdrop.fold_in(key, *d))
    batch, length = tokens.shape
    x = params["embed"][tokens] + params["position"][:length]
    x = jaxdrop.dropout(x, rate, key=keys("embed"), deterministic=deterministic)

    def transformer_layer(x, i, layer):
        qkv = rms_norm(x, layer["norm1"]) @ layer["qkv"]
        q, k, v = jnp.split(qkv.reshape(batch, length, 3 * heads, -1), 3, axis=2)
        attended = jaxdrop.dot_product_attention(
            q, k, v, is_causal=True, dropout_rate=rate, dropout_rng=keys(i, "attention"), deterministic=deterministic
        )
        branch = attended.reshape(batch, length, -1) @ layer["out"]
        x = x + jaxdrop.dropout(branch, rate, key=keys(i, "attention_out"), deterministic=deterministic)
        branch = jax.nn.gelu(rms_norm(x, layer["norm2"]) @ layer["up"]) @ layer["down"]
        return x + jaxdrop.dropout(branch, rate, key=keys(i, "mlp_out"), deterministic=deterministic)

    layers = [functools.partial(transformer_layer, i=i, layer=layer) for i, layer in enumerate(params["layers"])]
    x = jaxdrop.layer_drop(layers, x, layer_rate, key=keys("layer_drop"), deterministic=deterministic)
    return rms_norm(x, params["norm"]) @ params["embed"].T


def sequence_loss(logits, targets):
    return optax.softmax_cross_entropy_with_integer_labels(logits.reshape(-1, VOCAB), targets.reshape(-1)).mean()


def windows(tokens: np.ndarray, context: int) -> np.ndarray:
    """Non-overlapping ``context + 1`` windows for evaluation."""
    count = (len(tokens) - 1) // context
    return np.stack([tokens[i * context : i * context + context + 1] for i in range(count)])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.1, help="embedding, attention and residual dropout rate")
    p.add_argument("--layer-drop", type=float, default=0.2, help="LayerDrop rate of the third model (Fan et al.: 0.2)")
    p.add_argument("--seeds", type=int, default=3, help="initialisations (and batch orders), all in one vmap")
    p.add_argument("--train-chars", type=int, default=100_000)
    p.add_argument("--val-chars", type=int, default=30_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    if args.quick:
        args.train_chars, args.val_chars, args.steps, args.width, args.layers = 20_000, 5_000, 60, 32, 1
        args.seeds = 2
    out = _common.out_dir(args)
    text = datasets.python_source_text(args.train_chars + args.val_chars)
    tokens = datasets.encode_ascii(text)
    train_tokens, val_tokens = tokens[: args.train_chars], tokens[args.train_chars :]
    val_windows = jnp.asarray(windows(val_tokens, args.context))
    train_windows = jnp.asarray(windows(train_tokens, args.context)[: len(val_windows)])

    # Models are (seed, model): the models of a seed share the initialisation and the batches, so the differences
    # between them are paired; the seeds measure how much of it is noise. A model is (dropout rate, LayerDrop rate).
    rates = jnp.asarray([[0.0, 0.0], [args.rate, 0.0], [args.rate, args.layer_drop]], jnp.float32)
    seeds = jnp.arange(args.seeds) + args.seed
    init = jax.vmap(
        lambda s: init_params(jax.random.key(s), width=args.width, layers=args.layers, context=args.context)
    )(seeds)
    params = jax.tree.map(lambda a: jnp.broadcast_to(a[:, None], (len(seeds), len(rates), *a.shape[1:])), init)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-3, weight_decay=0.0))
    opt_state = jax.vmap(jax.vmap(optimizer.init))(params)

    def loss_fn(p, model_rates, key, batch):
        rate, layer_rate = model_rates
        logits = forward(p, batch[:, :-1], rate=rate, key=key, heads=args.heads, layer_rate=layer_rate)
        return sequence_loss(logits, batch[:, 1:])

    one_model = _common.gradient_step(optimizer, loss_fn)
    train_array = jnp.asarray(train_tokens)

    @jax.jit
    def train_chunk(params, opt_state, steps):
        def one_seed(params, opt_state, seed, step_index):
            key = jaxdrop.fold_in(jax.random.key(seed), "batches", step_index)
            starts = jax.random.randint(key, (args.batch_size,), 0, len(train_tokens) - args.context - 1)
            batch = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(train_array, s, args.context + 1))(starts)
            return jax.vmap(one_model, in_axes=(0, 0, 0, None, None))(params, opt_state, rates, key, batch)

        def step(carry, step_index):
            return jax.vmap(one_seed, in_axes=(0, 0, 0, None))(*carry, seeds, step_index), None

        return jax.lax.scan(step, (params, opt_state), steps)[0]

    @jax.jit
    def evaluate(params):
        def loss_of(p, data):
            logits = forward(p, data[:, :-1], rate=0.0, key=None, heads=args.heads, deterministic=True)
            return sequence_loss(logits, data[:, 1:])

        every_model = lambda data: jax.vmap(jax.vmap(loss_of, in_axes=(0, None)), in_axes=(0, None))(params, data)
        return every_model(train_windows), every_model(val_windows)

    num_evals = 15
    chunk = max(1, args.steps // num_evals)
    history = []  # (step, train loss (seeds, rates), validation loss (seeds, rates))
    num_models = len(seeds) * len(rates)
    bar = _common.progress(total=chunk * num_evals, desc=f"{num_models} transformers in one vmap", quiet=args.quiet)
    for start in range(0, chunk * num_evals, chunk):
        params, opt_state = train_chunk(params, opt_state, jnp.arange(start, start + chunk))
        train_loss, val_loss = (np.asarray(v) for v in evaluate(params))
        history.append((start + chunk, train_loss, val_loss))
        bar.update(chunk)
    bar.close()
    names = ["no dropout", f"dropout {args.rate}", f"dropout {args.rate} + LayerDrop {args.layer_drop}"]
    final_train, final_val = history[-1][1], history[-1][2]
    best_val = np.min(np.stack([h[2] for h in history]), axis=0)
    results = {}
    for i, name in enumerate(names):
        results[name] = {
            "final_train_loss": float(final_train[:, i].mean()),
            "final_val_loss": float(final_val[:, i].mean()),
            "final_val_loss_se": float(_common.seed_stats(final_val[:, i])[1]),
            "gap": float((final_val[:, i] - final_train[:, i]).mean()),
            "best_val_loss": float(best_val[:, i].mean()),
        }
    word, detail = _common.compare(final_val[:, 1], final_val[:, 0])
    layer_word, layer_detail = _common.compare(final_val[:, 2], final_val[:, 1])
    rows = [
        (
            name,
            f"{r['final_train_loss']:.3f}",
            f"{r['final_val_loss']:.3f} ± {r['final_val_loss_se']:.3f}",
            f"{r['gap']:.3f}",
            f"{r['best_val_loss']:.3f}",
        )
        for name, r in results.items()
    ]
    steps_run = chunk * num_evals
    report = (
        "# Character-level Transformer on the Python standard library's source (examples/transformer_lm.py"
        f"{' --quick' if args.quick else ''})\n\n"
        f"{len(train_tokens):,} training / {len(val_tokens):,} validation characters; {args.layers} layers, "
        f"{args.heads} heads, width {args.width}, context {args.context}, batch {args.batch_size}, {steps_run} "
        f"AdamW steps; {len(seeds)} seeds (initialisation and batch order; the models of a seed share them), all "
        f"{num_models} models in one `vmap`. Losses in nats per character (dropout off for evaluation), mean over "
        "seeds (± standard error).\n\n"
        + _common.markdown_table(
            ["model", "final train loss", "final val loss", "val - train gap", "best val loss"], rows
        )
        + f"\n\nFinal validation loss, dropout minus no dropout (paired by seed): {detail} nats/char, {word}. "
        f"Adding LayerDrop {args.layer_drop} (each of the {args.layers} layers skipped with that probability in "
        f"training), minus dropout alone: {layer_detail} nats/char, {layer_word}.\n"
    )
    print(report)
    _common.write_text(out, "transformer_lm.md", report)

    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.3))
    steps = [h[0] for h in history]
    for i, name in enumerate(names):
        for column, style, label in ((1, "--", "train"), (2, "-", "validation")):
            mean, error = _common.seed_stats(np.stack([h[column][:, i] for h in history]), axis=1)
            ax.plot(steps, mean, style, color=f"C{i}", label=f"{name}: {label}")
            if len(seeds) > 1:
                ax.fill_between(steps, mean - 2 * error, mean + 2 * error, color=f"C{i}", alpha=0.2, lw=0)
    gap_none, gap_drop, _ = (results[name]["gap"] for name in names)
    ax.set(
        xlabel="training step",
        ylabel="cross-entropy (nats/char)",
        title=f"Dropout {args.rate} narrows the train/validation gap ({gap_none:.2f} -> {gap_drop:.2f} nats);\n"
        f"its validation loss after {steps_run} steps is {word} ({detail});\nLayerDrop {args.layer_drop} on top: "
        f"validation loss {layer_word} ({layer_detail}), {len(seeds)} seeds",
    )
    ax.title.set_fontsize(9)
    if len(seeds) > 1:
        ax.plot([], [], color="gray", alpha=0.4, lw=6, label="± 2 s.e. over seeds")
    ax.legend(fontsize=8)
    _common.save_figure(fig, out, "transformer_lm.png")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
