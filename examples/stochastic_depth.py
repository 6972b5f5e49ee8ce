"""Example 7: stochastic depth (drop path) in a small residual network, with the linear depth schedule.

Huang et al. (2016, "Deep Networks with Stochastic Depth") drop whole residual branches during training, keeping
the skip connection, with a drop rate that grows linearly with depth: 0 at the input, ``p_L`` at the last block
(``jaxdrop.linear_drop_path_rates``). A residual MLP (12 blocks of width 128, pre-norm) is trained on 500 of
scikit-learn's digits with

- no stochastic depth;
- the linear schedule, ``p_L = 0.5`` (the paper's choice);
- a uniform rate with the same expected number of dropped blocks.

``jaxdrop.residual_drop_path`` takes the rates as traced values, so the three networks, for several seeds, are
trained in one ``vmap``.
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


def init_params(key, num_inputs, width, depth):
    keys = jax.random.split(key, 2 * depth + 2)
    he = lambda k, m, n: jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m)
    blocks = [
        {
            "w1": he(keys[2 * i], width, width),
            "b1": jnp.zeros(width),
            "w2": jnp.zeros((width, width)),
            "b2": jnp.zeros(width),
            "scale": jnp.ones(width),
        }
        for i in range(depth)
    ]  # zero-initialised second layer: every block starts as the identity
    return {"stem": he(keys[-2], num_inputs, width), "blocks": blocks, "head": he(keys[-1], width, 10) * 0.1}


def forward(params, x, rates, *, key, deterministic=False):
    h = x @ params["stem"]
    for i, block in enumerate(params["blocks"]):
        normed = block["scale"] * h * jax.lax.rsqrt(jnp.mean(h**2, -1, keepdims=True) + 1e-6)  # RMS norm
        branch = jax.nn.relu(normed @ block["w1"] + block["b1"]) @ block["w2"] + block["b2"]
        h = jaxdrop.residual_drop_path(
            h, branch, rates[i], key=None if deterministic else jaxdrop.fold_in(key, i), deterministic=deterministic
        )
    return h @ params["head"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=12, help="residual blocks")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--final-rate", type=float, default=0.5, help="p_L, the drop rate of the last block")
    p.add_argument("--train-size", type=int, default=500)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--seeds", type=int, default=3, help="initialisations, batch orders and masks (data split fixed)")
    args = p.parse_args(argv)
    if args.quick:
        args.depth, args.width, args.epochs, args.seeds = 6, 64, 20, 2
    out = _common.out_dir(args)
    images, labels = datasets.digits()
    inputs = images.reshape(len(images), -1)
    order = np.random.RandomState(args.seed).permutation(len(inputs))
    train, test = order[: args.train_size], order[args.train_size :]
    x_train, y_train = jnp.asarray(inputs[train]), jnp.asarray(labels[train])
    x_test, y_test = jnp.asarray(inputs[test]), jnp.asarray(labels[test])

    linear = np.asarray(jaxdrop.linear_drop_path_rates(args.final_rate, args.depth), np.float32)
    schedules = {
        "none": np.zeros(args.depth, np.float32),
        f"linear, p_L = {args.final_rate}": linear,
        f"uniform {linear.mean():.2f}": np.full(args.depth, linear.mean(), np.float32),
    }
    # Models are (seed, schedule); the schedules of a seed share the initialisation and the batches (paired).
    rates = jnp.asarray(np.stack(list(schedules.values())))
    seeds = jnp.arange(args.seeds) + args.seed
    init = jax.vmap(lambda s: init_params(jax.random.key(s), inputs.shape[1], args.width, args.depth))(seeds)
    params = jax.tree.map(lambda a: jnp.broadcast_to(a[:, None], (len(seeds), len(schedules), *a.shape[1:])), init)
    optimizer = optax.adam(1e-3)
    opt_state = jax.vmap(jax.vmap(optimizer.init))(params)

    def loss_fn(p, key, r, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(forward(p, xb, r, key=key), yb).mean()

    one_model = _common.gradient_step(optimizer, loss_fn)

    epoch = _common.seeded_epoch(one_model, rates, seeds, x_train, y_train, key_name="drop path")

    @jax.jit
    def evaluate(params):
        def one_model(p, r):
            logits = forward(p, x_test, r, key=None, deterministic=True)
            train_logits = forward(p, x_train, r, key=None, deterministic=True)
            test_loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_test).mean()
            return (
                jnp.mean(jnp.argmax(train_logits, -1) == y_train),
                jnp.mean(jnp.argmax(logits, -1) == y_test),
                test_loss,
            )

        return jax.vmap(jax.vmap(one_model), in_axes=(0, None))(params, rates)  # each (seeds, schedules)

    rngs = [np.random.RandomState(int(seed)) for seed in seeds]
    history = []
    num_models = len(seeds) * len(schedules)
    for epoch_index in _common.progress(
        range(args.epochs), desc=f"{num_models} residual nets in one vmap", quiet=args.quiet
    ):
        batches = np.stack([_common.minibatches(rng, len(x_train), 50) for rng in rngs])
        params, opt_state = epoch(params, opt_state, jnp.asarray(batches), epoch_index)
        if (epoch_index + 1) % max(1, args.epochs // 15) == 0 or epoch_index == args.epochs - 1:
            history.append((epoch_index + 1, *(np.asarray(v) for v in evaluate(params))))
    _, train_acc, test_acc, test_loss = history[-1]
    names = list(schedules)
    results = {
        name: {
            "train_acc": float(train_acc[:, i].mean()),
            "test_acc": float(test_acc[:, i].mean()),
            "test_loss": float(test_loss[:, i].mean()),
            "expected_blocks_dropped": float(schedules[name].sum()),
        }
        for i, name in enumerate(names)
    }
    versus = {
        (first, second): {
            metric: _common.compare(
                scale * values[:, names.index(first)], scale * values[:, names.index(second)], fmt=fmt
            )
            for metric, values, scale, fmt in (("test acc", test_acc, 100, ".2f"), ("test loss", test_loss, 1, ".3f"))
        }
        for first, second in ((names[1], names[2]), (names[1], names[0]))
    }
    rows = [
        (
            name,
            f"{schedules[name].sum():.2f}",
            f"{train_acc[:, i].mean():.1%}",
            _common.mean_se(test_acc[:, i], ".1f", 100, "%"),
            _common.mean_se(test_loss[:, i]),
        )
        for i, name in enumerate(names)
    ]
    comparison_lines = [
        f"- {first} minus {second}: "
        + ", ".join(f"{metric} {detail} ({word})" for metric, (word, detail) in by_metric.items())
        for (first, second), by_metric in versus.items()
    ]
    text = (
        "# Stochastic depth in a residual MLP (examples/stochastic_depth.py"
        f"{' --quick' if args.quick else ''})\n\n"
        f"Digits: {len(train)} training / {len(test)} test images; {args.depth} pre-norm residual blocks of width "
        f"{args.width}, Adam, {args.epochs} epochs; {len(seeds)} seeds (initialisation, batch order and masks; the "
        f"data split is fixed), all {num_models} networks trained in one `vmap`; mean ± standard error over seeds."
        "\n\n"
        + _common.markdown_table(["schedule", "expected blocks dropped", "train acc", "test acc", "test loss"], rows)
        + "\n\nPaired by seed (accuracy in points; higher or lower only beyond two standard errors):\n\n"
        + "\n".join(comparison_lines)
        + "\n"
    )
    print(text)
    _common.write_text(out, "stochastic_depth.md", text)

    plt = _common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    blocks = np.arange(1, args.depth + 1)
    epochs = [h[0] for h in history]
    for i, (name, sched) in enumerate(schedules.items()):
        left.plot(blocks, sched, "o-", color=f"C{i}", label=name)
        mean, error = _common.seed_stats(np.stack([h[3][:, i] for h in history]), axis=1)
        right.plot(epochs, mean, "-", color=f"C{i}", label=name)
        if len(seeds) > 1:
            right.fill_between(epochs, mean - 2 * error, mean + 2 * error, color=f"C{i}", alpha=0.2, lw=0)
    left.set(xlabel="residual block", ylabel="drop rate", title="Schedules (jaxdrop.linear_drop_path_rates)")
    (word_uniform, detail_uniform) = versus[(names[1], names[2])]["test loss"]
    (word_none, detail_none) = versus[(names[1], names[0])]["test loss"]
    right.set(xlabel="epoch", ylabel=f"test cross-entropy (mean ± 2 s.e., {len(seeds)} seeds)")
    right.set_title(
        f"Final test loss, linear minus uniform: {word_uniform} ({detail_uniform});\n"
        f"linear minus none: {word_none} ({detail_none})",
        fontsize=10,
    )
    left.legend()
    right.legend()
    _common.save_figure(fig, out, "stochastic_depth.png")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
