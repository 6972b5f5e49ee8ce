"""Example 4: a GRU language model with naive vs variational (locked) dropout (Gal & Ghahramani 2016).

Same corpus as the Transformer example (the Python standard library's source, character level). A GRU (embedding
32, hidden 128) is trained three times, with dropout at the same three places (the input embeddings, the
recurrent state fed back at every step, and the outputs fed to the softmax):

- no dropout;
- naive dropout: a fresh ``jaxdrop.dropout`` mask at every time step, recurrent state included;
- variational (locked) dropout: one mask per sequence, the same at every time step: ``jaxdrop.locked_dropout`` on
  the embeddings and outputs, ``jaxdrop.locked_mask`` on the recurrent state (Gal & Ghahramani 2016, "A
  Theoretically Grounded Application of Dropout in Recurrent Neural Networks").

Resampling the mask on the recurrent connection at every step corrupts the memory the GRU carries; locking it does
not, which is why variational dropout can be used on the recurrent state at all.
"""

from __future__ import annotations

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

VOCAB = 128
MODES = ("none", "naive", "locked")


def init_params(key, embed, hidden):
    k = iter(jax.random.split(key, 4))
    glorot = jax.nn.initializers.glorot_uniform()
    return {
        "embed": jax.random.normal(next(k), (VOCAB, embed)) * 0.1,
        "wx": glorot(next(k), (embed, 3 * hidden)),
        "wh": glorot(next(k), (hidden, 3 * hidden)),
        "b": jnp.zeros(3 * hidden),
        "head": glorot(next(k), (hidden, VOCAB)),
        "head_b": jnp.zeros(VOCAB),
    }


def gru_cell(params, h, x_proj):
    hidden = h.shape[-1]
    h_proj = h @ params["wh"]
    reset = jax.nn.sigmoid(x_proj[:, :hidden] + h_proj[:, :hidden])
    update = jax.nn.sigmoid(x_proj[:, hidden : 2 * hidden] + h_proj[:, hidden : 2 * hidden])
    candidate = jnp.tanh(x_proj[:, 2 * hidden :] + reset * h_proj[:, 2 * hidden :])
    return (1 - update) * h + update * candidate


def forward(params, tokens, *, mode, rate, key, deterministic=False):
    """Logits ``(batch, time, vocab)``; ``mode`` says how masks are shared over time."""
    batch, length = tokens.shape
    hidden = params["wh"].shape[0]
    off = deterministic or mode == "none"
    x = params["embed"][tokens]
    if off:
        drop_in = drop_out = lambda v, name: v
        drop_state = lambda h, t: h
    elif mode == "locked":
        drop_in = drop_out = lambda v, name: jaxdrop.locked_dropout(v, rate, key=jaxdrop.fold_in(key, name))
        state_mask = jaxdrop.locked_mask(jaxdrop.fold_in(key, "state"), rate, (batch, hidden))
        drop_state = lambda h, t: state_mask(h)
    else:  # naive: a fresh mask at every time step (the input and output calls draw per element of (b, t, f))
        drop_in = drop_out = lambda v, name: jaxdrop.dropout(v, rate, key=jaxdrop.fold_in(key, name))
        drop_state = lambda h, t: jaxdrop.dropout(h, rate, key=jaxdrop.fold_in(key, "state", t))
    x_proj = drop_in(x, "input") @ params["wx"] + params["b"]

    def step(h, inputs):
        x_t, t = inputs
        h = gru_cell(params, drop_state(h, t), x_t)
        return h, h

    _, states = jax.lax.scan(step, jnp.zeros((batch, hidden)), (jnp.swapaxes(x_proj, 0, 1), jnp.arange(length)))
    states = drop_out(jnp.swapaxes(states, 0, 1), "output")
    return states @ params["head"] + params["head_b"]


def sequence_loss(logits, targets):
    return optax.softmax_cross_entropy_with_integer_labels(logits.reshape(-1, VOCAB), targets.reshape(-1)).mean()


def train(mode, rate, data, args):
    """One GRU per seed (initialisation, batches, masks) for this dropout ``mode``, trained in one ``vmap``.

    Every mode uses the same seeds, so the three modes see the same initialisations and batches (paired).
    """
    seeds = jnp.arange(args.seeds) + args.seed
    params = jax.vmap(lambda s: init_params(jax.random.key(s), args.embed, args.hidden))(seeds)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    opt_state = jax.vmap(optimizer.init)(params)
    train_array = jnp.asarray(data["train"])

    def loss_fn(p, key, batch):
        return sequence_loss(forward(p, batch[:, :-1], mode=mode, rate=rate, key=key), batch[:, 1:])

    update = _common.gradient_step(optimizer, loss_fn)

    @jax.jit
    def train_chunk(params, opt_state, steps):
        def one_seed(params, opt_state, seed, step_index):
            key = jaxdrop.fold_in(jax.random.key(seed), "batches", step_index)
            starts = jax.random.randint(key, (args.batch_size,), 0, len(data["train"]) - args.context - 1)
            batch = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(train_array, s, args.context + 1))(starts)
            return update(params, opt_state, jaxdrop.fold_in(key, "dropout"), batch)

        def step(carry, step_index):
            return jax.vmap(one_seed, in_axes=(0, 0, 0, None))(*carry, seeds, step_index), None

        return jax.lax.scan(step, (params, opt_state), steps)[0]

    @jax.jit
    def evaluate(params):
        def loss_of(params, windows):
            logits = forward(params, windows[:, :-1], mode=mode, rate=rate, key=None, deterministic=True)
            return sequence_loss(logits, windows[:, 1:])

        every_seed = jax.vmap(loss_of, in_axes=(0, None))
        return every_seed(params, data["train_windows"]), every_seed(params, data["val_windows"])

    num_evals = 12
    chunk = max(1, args.steps // num_evals)
    history = []  # (step, train loss per seed, validation loss per seed)
    desc = f"GRU, {mode}, {len(seeds)} seeds"
    for start in _common.progress(range(0, chunk * num_evals, chunk), desc=desc, quiet=args.quiet):
        params, opt_state = train_chunk(params, opt_state, jnp.arange(start, start + chunk))
        history.append((start + chunk, *(np.asarray(v) for v in evaluate(params))))
    return history


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.25, help="dropout rate at every place, both schemes")
    p.add_argument("--train-chars", type=int, default=100_000)
    p.add_argument("--val-chars", type=int, default=30_000)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, default=3, help="initialisations, batch orders and masks, in one vmap")
    args = p.parse_args(argv)
    if args.quick:
        args.train_chars, args.val_chars, args.steps, args.hidden, args.context = 20_000, 4_000, 36, 48, 32
        args.seeds = 1
    out = _common.out_dir(args)
    tokens = datasets.encode_ascii(datasets.python_source_text(args.train_chars + args.val_chars))
    train_tokens, val_tokens = tokens[: args.train_chars], tokens[args.train_chars :]

    def windows(t):
        count = (len(t) - 1) // args.context
        return jnp.asarray(np.stack([t[i * args.context : (i + 1) * args.context + 1] for i in range(count)]))

    val_windows = windows(val_tokens)
    data = {
        "train": train_tokens,
        "val_windows": val_windows,
        "train_windows": windows(train_tokens)[: len(val_windows)],
    }
    histories = {mode: train(mode, 0.0 if mode == "none" else args.rate, data, args) for mode in MODES}
    final = {mode: (h[-1][1], h[-1][2]) for mode, h in histories.items()}  # per seed
    best_val = {mode: np.min(np.stack([x[2] for x in h]), axis=0) for mode, h in histories.items()}
    results = {
        mode: {
            "final_train_loss": float(final[mode][0].mean()),
            "final_val_loss": float(final[mode][1].mean()),
            "best_val_loss": float(best_val[mode].mean()),
            "turn_up": float((final[mode][1] - best_val[mode]).mean()),
        }
        for mode in MODES
    }
    rows = [
        (
            mode,
            f"{results[mode]['final_train_loss']:.3f}",
            _common.mean_se(final[mode][1]),
            _common.mean_se(best_val[mode]),
            _common.mean_se(final[mode][1] - best_val[mode]),
        )
        for mode in MODES
    ]
    pairs = (("naive", "none"), ("locked", "none"), ("locked", "naive"))
    versus = {pair: _common.compare(final[pair[0]][1], final[pair[1]][1]) for pair in pairs}
    comparison_lines = [f"- {a} minus {b}: {detail} ({word})" for (a, b), (word, detail) in versus.items()]
    num_seeds = len(final["none"][1])
    report = (
        "# GRU language model: naive vs variational (locked) dropout (examples/recurrent_locked.py"
        f"{' --quick' if args.quick else ''})\n\n"
        f"Python standard library source, {len(train_tokens):,} training / {len(val_tokens):,} validation characters; "
        f"GRU embed {args.embed}, hidden {args.hidden}, context {args.context}, batch {args.batch_size}, "
        f"{histories['none'][-1][0]} Adam steps; dropout {args.rate} on embeddings, recurrent state and outputs; "
        f"{num_seeds} seeds (initialisation, batch order and masks, shared by the three modes). Losses in nats per "
        "character (dropout off for evaluation), mean ± standard error over seeds; `turn-up` is how far the final "
        "validation loss sits above its best (overfitting).\n\n"
        + _common.markdown_table(["dropout", "final train loss", "final val loss", "best val loss", "turn-up"], rows)
        + "\n\nFinal validation loss, paired by seed (higher or lower only beyond two standard errors):\n\n"
        + "\n".join(comparison_lines)
        + "\n"
    )
    print(report)
    _common.write_text(out, "recurrent_locked.md", report)

    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (mode, history) in enumerate(histories.items()):
        steps = [h[0] for h in history]
        for column, style, label in ((1, "--", "train"), (2, "-", "validation")):
            mean, error = _common.seed_stats(np.stack([h[column] for h in history]), axis=1)
            ax.plot(steps, mean, style, color=f"C{i}", label=f"{mode}: {label}")
            if num_seeds > 1:
                ax.fill_between(steps, mean - 2 * error, mean + 2 * error, color=f"C{i}", alpha=0.2, lw=0)
    word, detail = versus[("locked", "naive")]
    ax.set(xlabel="training step", ylabel="cross-entropy (nats/char)")
    ax.set_title(
        "Final val loss above its best (overfitting): "
        + ", ".join(f"{mode} {results[mode]['turn_up']:.3f}" for mode in MODES)
        + f"\nfinal val loss, locked minus naive: {word} ({detail}); {num_seeds} seed(s)",
        fontsize=9,
    )
    if num_seeds > 1:
        ax.plot([], [], color="gray", alpha=0.4, lw=6, label="± 2 s.e. over seeds")
    ax.legend(fontsize=8)
    _common.save_figure(fig, out, "recurrent_locked.png")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
