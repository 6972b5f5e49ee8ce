"""Example 7: stochastic depth (drop path) in a small residual network, with the linear depth schedule.

Huang et al. (2016, "Deep Networks with Stochastic Depth") drop whole residual branches during training, keeping
the skip connection, with a drop rate that grows linearly with depth: 0 at the input, ``p_L`` at the last block
(``jaxdrop.linear_drop_path_rates``). A residual MLP (12 blocks of width 128, pre-norm) is trained on 500 of
scikit-learn's digits with

- no stochastic depth;
- the linear schedule, ``p_L = 0.5`` (the paper's choice);
- a uniform rate with the same expected number of dropped blocks.

``jaxdrop.residual_drop_path`` takes the rates as traced values, so the three networks are trained in one ``vmap``.
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
    args = p.parse_args(argv)
    if args.quick:
        args.depth, args.width, args.epochs = 6, 64, 20
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
    rates = jnp.asarray(np.stack(list(schedules.values())))
    init = init_params(jax.random.key(args.seed), inputs.shape[1], args.width, args.depth)
    params = jax.tree.map(lambda a: jnp.broadcast_to(a, (len(schedules), *a.shape)), init)
    optimizer = optax.adam(1e-3)
    opt_state = jax.vmap(optimizer.init)(params)

    def loss_fn(p, key, r, xb, yb):
        return _common.cross_entropy(forward(p, xb, r, key=key), yb)

    one_model = _common.gradient_step(optimizer, loss_fn)

    @jax.jit
    def epoch(params, opt_state, batches, epoch_index):
        def step(carry, inputs):
            batch, i = inputs
            key = jaxdrop.fold_in(jax.random.key(args.seed + 1), epoch_index, i)
            carry = jax.vmap(one_model, in_axes=(0, 0, None, 0, None, None))(
                *carry, key, rates, x_train[batch], y_train[batch]
            )
            return carry, None

        return jax.lax.scan(step, (params, opt_state), (batches, jnp.arange(len(batches))))[0]

    @jax.jit
    def evaluate(params):
        logits = jax.vmap(lambda p, r: forward(p, x_test, r, key=None, deterministic=True))(params, rates)
        train_logits = jax.vmap(lambda p, r: forward(p, x_train, r, key=None, deterministic=True))(params, rates)
        test_acc = jnp.mean(jnp.argmax(logits, -1) == y_test, axis=1)
        train_acc = jnp.mean(jnp.argmax(train_logits, -1) == y_train, axis=1)
        test_loss = jax.vmap(_common.cross_entropy, in_axes=(0, None))(logits, y_test)
        return train_acc, test_acc, test_loss

    rng = np.random.RandomState(args.seed)
    history = []
    for epoch_index in _common.progress(range(args.epochs), desc="3 residual nets in one vmap", quiet=args.quiet):
        batches = jnp.asarray(_common.minibatches(rng, len(x_train), 50))
        params, opt_state = epoch(params, opt_state, batches, epoch_index)
        if (epoch_index + 1) % max(1, args.epochs // 15) == 0 or epoch_index == args.epochs - 1:
            history.append((epoch_index + 1, *(np.asarray(v) for v in evaluate(params))))
    _, train_acc, test_acc, test_loss = history[-1]
    results = {
        name: {
            "train_acc": float(train_acc[i]),
            "test_acc": float(test_acc[i]),
            "test_loss": float(test_loss[i]),
            "expected_blocks_dropped": float(schedules[name].sum()),
        }
        for i, name in enumerate(schedules)
    }
    rows = [
        (
            n,
            f"{r['expected_blocks_dropped']:.2f}",
            f"{r['train_acc']:.1%}",
            f"{r['test_acc']:.1%}",
            f"{r['test_loss']:.3f}",
        )
        for n, r in results.items()
    ]
    text = (
        "# Stochastic depth in a residual MLP (examples/stochastic_depth.py"
        f"{' --quick' if args.quick else ''})\n\n"
        f"Digits: {len(train)} training / {len(test)} test images; {args.depth} pre-norm residual blocks of width "
        f"{args.width}, Adam, {args.epochs} epochs, the three networks trained in one `vmap`.\n\n"
        + _common.markdown_table(["schedule", "expected blocks dropped", "train acc", "test acc", "test loss"], rows)
    )
    print(text)
    _common.write_text(out, "stochastic_depth.md", text)

    plt = _common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    blocks = np.arange(1, args.depth + 1)
    for i, (name, sched) in enumerate(schedules.items()):
        left.plot(blocks, sched, "o-", color=f"C{i}", label=name)
        right.plot([h[0] for h in history], [h[3][i] for h in history], "-", color=f"C{i}", label=name)
    left.set(xlabel="residual block", ylabel="drop rate", title="Schedules (jaxdrop.linear_drop_path_rates)")
    right.set(xlabel="epoch", ylabel="test cross-entropy", title="Test loss during training")
    left.legend()
    right.legend()
    _common.save_figure(fig, out, "stochastic_depth.png")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
